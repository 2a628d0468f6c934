//! Inode numbers and per-OST object ids from pre-allocated ranges.
//!
//! For each id space (inode numbers; object ids of each OST) the store keeps a
//! high-water mark `hwm`: no id at or above it was ever handed out. Ids are taken from
//! an in-memory counter `next < hwm`. When fewer than [`LOW_WATER`] remain, the
//! operation that takes the id also raises `hwm` by [`RANGE`] and marks its batch as
//! needing a durable commit, which happens before any reply of that batch. So every id a
//! reply shows is below a durable `hwm`, and after a crash the counters restart at the
//! durable `hwm`: the unused tail of a range is skipped, never an id handed out twice.
//! A create therefore costs no OSS round trip and, most of the time, no extra fsync.

use super::store::{StoreError, View, WriteTables};
use nacre_proto::layout::{
    FileLayout, FirstOst, Mirror, ObjectRef, StripeCount, StripeSpec, StripedLayout,
};
use nacre_proto::meta::errno;
use std::collections::HashMap;

/// Ids reserved per refill.
pub const RANGE: u64 = 1 << 16;
/// Refill when fewer than this many ids remain (more than one batch can use per space:
/// a batch holds at most `MAX_BATCH` operations and each takes at most one id per space).
pub const LOW_WATER: u64 = RANGE / 2;
pub const FIRST_INO: u64 = 2;
pub const FIRST_OID: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdSpace {
    Inode,
    Ost(u32),
}

impl IdSpace {
    pub fn key(self) -> String {
        match self {
            IdSpace::Inode => "hwm.ino".to_string(),
            IdSpace::Ost(i) => format!("hwm.ost.{i}"),
        }
    }

    fn first(self) -> u64 {
        match self {
            IdSpace::Inode => FIRST_INO,
            IdSpace::Ost(_) => FIRST_OID,
        }
    }
}

#[derive(Debug, Default)]
struct Range {
    next: u64,
    hwm: u64,
}

/// The in-memory counters; the durable part is the `hwm.*` rows of the meta table.
#[derive(Debug, Default)]
pub struct IdRanges {
    ranges: HashMap<IdSpace, Range>,
    /// Set when a range was raised in the current batch: its commit must be durable.
    pub raised: bool,
}

impl IdRanges {
    fn range(&mut self, view: &impl View, space: IdSpace) -> Result<&mut Range, StoreError> {
        match self.ranges.entry(space) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                // First use since open: restart at the durable high-water mark.
                let hwm = view
                    .meta_value(&space.key())?
                    .unwrap_or(0)
                    .max(space.first());
                Ok(e.insert(Range { next: hwm, hwm }))
            }
        }
    }

    pub fn take(&mut self, w: &mut WriteTables<'_>, space: IdSpace) -> Result<u64, StoreError> {
        let r = self.range(&w.view, space)?;
        if r.hwm - r.next < LOW_WATER {
            r.hwm = r.next + RANGE;
            let hwm = r.hwm;
            self.raised = true;
            w.put_meta(&space.key(), hwm)?;
        }
        let r = self.ranges.get_mut(&space).expect("present");
        let id = r.next;
        r.next += 1;
        Ok(id)
    }
}

impl IdRanges {
    /// Ends the current range of each of `osts` at its mark, so that every object id
    /// handed out from now on is at or above the returned mark, and every one handed
    /// out before is below it (the consistency checker's line between objects a scan
    /// must know of and objects created while it runs).
    pub fn fence(
        &mut self,
        view: &impl View,
        osts: &[u32],
    ) -> Result<HashMap<u32, u64>, StoreError> {
        let mut marks = HashMap::new();
        for &ost in osts {
            let r = self.range(view, IdSpace::Ost(ost))?;
            r.next = r.hwm;
            marks.insert(ost, r.hwm);
        }
        Ok(marks)
    }

    /// Moves the mark of `space` above `id` (an id some file names although the mark
    /// says it was never handed out): it will not be handed out again.
    pub fn raise_above(
        &mut self,
        w: &mut WriteTables<'_>,
        space: IdSpace,
        id: u64,
    ) -> Result<(), StoreError> {
        let r = self.range(&w.view, space)?;
        if id >= r.next {
            r.next = id.saturating_add(1);
            r.hwm = r.hwm.max(r.next.saturating_add(RANGE));
            let hwm = r.hwm;
            self.raised = true;
            w.put_meta(&space.key(), hwm)?;
        }
        Ok(())
    }
}

/// Where an OST is: the failure domains a mirror's copy should not share with the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OstPlace {
    pub index: u32,
    /// The serving process (the fabric name of its first core; its node string when the
    /// map shows no server for it).
    pub server: Vec<u8>,
    /// The host part of the owner's node string (`host:dir`).
    pub host: String,
    /// Up in the map: new files are placed only on OSTs that serve.
    pub up: bool,
}

impl OstPlace {
    /// An OST of its own server and host (tests, and MDTs given bare indices).
    pub fn alone(index: u32) -> OstPlace {
        OstPlace {
            index,
            server: index.to_le_bytes().to_vec(),
            host: format!("ost{index}"),
            up: true,
        }
    }
}

/// Picks the OSTs of a new file. The OST set is the caller's (the cluster map's), kept
/// sorted; "any" first OST rotates round robin over the OSTs that serve, so consecutive
/// creates spread over all of them (a free-space-weighted choice can replace the cursor
/// later without a format change). Stripe `i` of the first mirror goes to the `i`-th OST
/// after the first in that set; each further mirror's stripe `i` to another OST, on
/// another host and server than the stripe's other copies wherever the set allows.
#[derive(Debug, Default)]
pub struct OstChooser {
    places: Vec<OstPlace>,
    cursor: usize,
}

impl OstChooser {
    pub fn new(mut places: Vec<OstPlace>) -> OstChooser {
        places.sort_unstable_by_key(|p| p.index);
        places.dedup_by_key(|p| p.index);
        OstChooser { places, cursor: 0 }
    }

    /// A chooser over `osts`, each its own server and host.
    pub fn of_indices(osts: &[u32]) -> OstChooser {
        OstChooser::new(osts.iter().map(|&i| OstPlace::alone(i)).collect())
    }

    pub fn osts(&self) -> Vec<u32> {
        self.places.iter().map(|p| p.index).collect()
    }

    /// The OSTs for `spec`, one list per mirror: a stripe count above the count of OSTs
    /// that serve is capped to it (as Lustre does). No OST serving is ENOSPC, an unknown
    /// first OST EINVAL, fewer OSTs (up or down) than mirrors ENOSPC (two copies never
    /// share an OST). The first copy goes to OSTs that serve; a further copy goes to an
    /// OST that is down only when too few serve: that copy is born stale (see
    /// [`OstChooser::is_up`]), and the rebuild fills it once its OST is back, so a
    /// persistent file system keeps creating files with all their copies while a
    /// server is away.
    pub fn choose(&mut self, spec: &StripeSpec) -> Result<Vec<Vec<u32>>, i32> {
        let up: Vec<&OstPlace> = self.places.iter().filter(|p| p.up).collect();
        let n = up.len();
        if n == 0 || (spec.mirrors as usize) > self.places.len() {
            return Err(errno::ENOSPC);
        }
        let max = (nacre_proto::layout::MAX_OBJECTS / spec.mirrors.max(1)) as usize;
        let count = match spec.count {
            StripeCount::All => n,
            StripeCount::Count(c) => (c as usize).min(n),
        }
        .min(max);
        let start = match spec.first {
            FirstOst::Index(i) => up.iter().position(|p| p.index == i).ok_or(errno::EINVAL)?,
            FirstOst::Any => {
                let s = self.cursor % n;
                self.cursor = (self.cursor + 1) % n;
                s
            }
        };
        // Further copies choose among every OST, those that serve first.
        let all: Vec<&OstPlace> = up
            .iter()
            .copied()
            .chain(self.places.iter().filter(|p| !p.up))
            .collect();
        let first: Vec<usize> = (0..count).map(|k| (start + k) % n).collect();
        let mut mirrors = vec![first];
        for m in 1..spec.mirrors as usize {
            let used: Vec<usize> = mirrors.iter().flatten().copied().collect();
            let mut this = Vec::with_capacity(count);
            for stripe in 0..count {
                let copies: Vec<&OstPlace> = mirrors.iter().map(|c| all[c[stripe]]).collect();
                let scan = (start + m * count + stripe) % n;
                let best = (0..all.len())
                    .map(|k| (scan + k) % all.len())
                    .filter(|&c| copies.iter().all(|p| p.index != all[c].index))
                    .max_by_key(|&c| {
                        let p = all[c];
                        let host = copies.iter().all(|q| q.host != p.host);
                        let server = copies.iter().all(|q| q.server != p.server);
                        let fresh = !used.contains(&c) && !this.contains(&c);
                        // Earlier in the scan wins ties (max_by_key keeps the last max).
                        let at = (c + all.len() - scan) % all.len();
                        (p.up, host, server, fresh, std::cmp::Reverse(at))
                    })
                    .ok_or(errno::ENOSPC)?;
                this.push(best);
            }
            mirrors.push(this);
        }
        Ok(mirrors
            .into_iter()
            .map(|c| c.into_iter().map(|k| all[k].index).collect())
            .collect())
    }

    /// Whether OST `ost` serves (a copy placed on one that does not is stale).
    pub fn is_up(&self, ost: u32) -> bool {
        self.places.iter().any(|p| p.index == ost && p.up)
    }
}

/// Resolves `spec` into a layout with fresh object ids.
pub fn resolve(
    w: &mut WriteTables<'_>,
    ids: &mut IdRanges,
    osts: &mut OstChooser,
    spec: &StripeSpec,
) -> Result<Result<FileLayout, i32>, StoreError> {
    let chosen = match osts.choose(spec) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let mut mirrors = Vec::with_capacity(chosen.len());
    for copy in chosen {
        let mut objects = Vec::with_capacity(copy.len());
        for ost in copy {
            objects.push(ObjectRef {
                ost,
                oid: ids.take(w, IdSpace::Ost(ost))?,
            });
        }
        // A copy with an object on an OST that is down misses every write until the
        // rebuild fills it.
        let stale = !objects.iter().all(|o| osts.is_up(o.ost));
        mirrors.push(Mirror {
            stripes: StripedLayout {
                stripe_size: spec.stripe_size,
                objects,
            },
            stale,
        });
    }
    Ok(Ok(FileLayout {
        mirrors,
        released: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_refill_before_running_out_and_restart_above_the_mark() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/mdt-unit");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("alloc.redb");
        let _ = std::fs::remove_file(&path);
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        let mut w = WriteTables::open(&tx).unwrap();
        let mut ids = IdRanges::default();
        let space = IdSpace::Ost(3);
        assert_eq!(ids.take(&mut w, space).unwrap(), FIRST_OID);
        assert!(
            std::mem::take(&mut ids.raised),
            "the first id raises the mark"
        );
        let mut last = FIRST_OID;
        for _ in 0..RANGE {
            let id = ids.take(&mut w, space).unwrap();
            assert_eq!(id, last + 1);
            last = id;
            let hwm = w.view.meta_value(&space.key()).unwrap().unwrap();
            assert!(
                hwm - id >= LOW_WATER - 1,
                "id {id} too close to the mark {hwm}"
            );
        }
        assert!(ids.raised, "crossing the low-water mark raised it again");
        // A restart (new counters) starts at the stored mark: above every id handed out.
        let mut after = IdRanges::default();
        let first = after.take(&mut w, space).unwrap();
        assert!(first > last);
        assert_eq!(
            first,
            w.view.meta_value(&space.key()).unwrap().unwrap() - RANGE
        );
    }

    #[test]
    fn chooser_rotates_caps_and_refuses() {
        let mut c = OstChooser::of_indices(&[5, 1, 3]);
        let spec = |count, first| StripeSpec {
            stripe_size: 1 << 20,
            count,
            first,
            mirrors: 1,
        };
        let one = spec(StripeCount::Count(1), FirstOst::Any);
        let firsts: Vec<_> = (0..4).map(|_| c.choose(&one).unwrap()[0][0]).collect();
        assert_eq!(firsts, vec![1, 3, 5, 1]);
        assert_eq!(
            c.choose(&spec(StripeCount::All, FirstOst::Index(3)))
                .unwrap(),
            vec![vec![3, 5, 1]]
        );
        assert_eq!(
            c.choose(&spec(StripeCount::Count(9), FirstOst::Index(5)))
                .unwrap(),
            vec![vec![5, 1, 3]]
        );
        assert_eq!(
            c.choose(&spec(StripeCount::Count(1), FirstOst::Index(2))),
            Err(errno::EINVAL)
        );
        assert_eq!(OstChooser::new(vec![]).choose(&one), Err(errno::ENOSPC));
    }

    /// Two OSSs with two OSTs each (0, 1 on server a; 2, 3 on server b), on one host.
    fn two_servers(down: &[u32]) -> OstChooser {
        let place = |index: u32, server: &str| OstPlace {
            index,
            server: server.as_bytes().to_vec(),
            host: "h".into(),
            up: !down.contains(&index),
        };
        OstChooser::new(vec![
            place(0, "a"),
            place(1, "a"),
            place(2, "b"),
            place(3, "b"),
        ])
    }

    #[test]
    fn mirrors_go_to_other_servers_and_hosts() {
        let spec = |count, mirrors| StripeSpec {
            stripe_size: 1 << 20,
            count: StripeCount::Count(count),
            first: FirstOst::Any,
            mirrors,
        };
        let mut c = two_servers(&[]);
        for _ in 0..8 {
            let m = c.choose(&spec(1, 2)).unwrap();
            assert_eq!(m.len(), 2);
            assert_ne!(m[0][0] / 2, m[1][0] / 2, "copies on one server: {m:?}");
        }
        let m = c.choose(&spec(2, 2)).unwrap();
        for stripe in 0..2 {
            assert_ne!(m[0][stripe] / 2, m[1][stripe] / 2, "{m:?}");
        }
        // Hosts weigh more than servers: with a second host, copies go there.
        let mut places = vec![OstPlace::alone(0), OstPlace::alone(1), OstPlace::alone(2)];
        places[0].host = "x".into();
        places[1].host = "x".into();
        places[2].host = "y".into();
        let m = OstChooser::new(places).choose(&spec(1, 2)).unwrap();
        assert!(m[0][0] == 2 || m[1][0] == 2, "one copy on host y: {m:?}");
        // A server down: new files go to the OSTs that serve; two copies on one server
        // rather than none (a lost OST is still survived).
        let m = two_servers(&[2, 3]).choose(&spec(1, 2)).unwrap();
        assert!(
            m.iter().flatten().all(|&o| o < 2) && m[0][0] != m[1][0],
            "{m:?}"
        );
        // Too few serve: the second copy goes to an OST that is down (born stale).
        let mut c = two_servers(&[1, 2, 3]);
        let m = c.choose(&spec(1, 2)).unwrap();
        assert_eq!(m[0], vec![0], "the first copy where it serves: {m:?}");
        assert!(!c.is_up(m[1][0]) && m[1][0] != 0, "{m:?}");
        assert_eq!(
            two_servers(&[1, 2, 3]).choose(&spec(1, 5)),
            Err(errno::ENOSPC),
            "more copies than OSTs"
        );
    }
}
