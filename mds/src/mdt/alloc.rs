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
use nacre_proto::layout::{FirstOst, ObjectRef, StripeCount, StripeSpec, StripedLayout};
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

/// Picks the OSTs of a new file. The OST set is the caller's (the cluster map's), kept
/// sorted; "any" first OST rotates round robin over it, so consecutive creates spread
/// over all OSTs (a free-space-weighted choice can replace the cursor later without a
/// format change). Stripe `i` goes to the `i`-th OST after the first in the sorted set.
#[derive(Debug, Default)]
pub struct OstChooser {
    osts: Vec<u32>,
    cursor: usize,
}

impl OstChooser {
    pub fn new(mut osts: Vec<u32>) -> OstChooser {
        osts.sort_unstable();
        osts.dedup();
        OstChooser { osts, cursor: 0 }
    }

    pub fn osts(&self) -> &[u32] {
        &self.osts
    }

    /// The OSTs for `spec`: a stripe count above the OST count is capped to it (as
    /// Lustre does); an empty set is ENOSPC, an unknown first OST EINVAL.
    pub fn choose(&mut self, spec: &StripeSpec) -> Result<Vec<u32>, i32> {
        let n = self.osts.len();
        if n == 0 {
            return Err(errno::ENOSPC);
        }
        let count = match spec.count {
            StripeCount::All => n,
            StripeCount::Count(c) => (c as usize).min(n),
        };
        let start = match spec.first {
            FirstOst::Index(i) => self.osts.binary_search(&i).map_err(|_| errno::EINVAL)?,
            FirstOst::Any => {
                let s = self.cursor % n;
                self.cursor = (self.cursor + 1) % n;
                s
            }
        };
        Ok((0..count).map(|k| self.osts[(start + k) % n]).collect())
    }
}

/// Resolves `spec` into a layout with fresh object ids.
pub fn resolve(
    w: &mut WriteTables<'_>,
    ids: &mut IdRanges,
    osts: &mut OstChooser,
    spec: &StripeSpec,
) -> Result<Result<StripedLayout, i32>, StoreError> {
    let chosen = match osts.choose(spec) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let mut objects = Vec::with_capacity(chosen.len());
    for ost in chosen {
        objects.push(ObjectRef {
            ost,
            oid: ids.take(w, IdSpace::Ost(ost))?,
        });
    }
    Ok(Ok(StripedLayout {
        stripe_size: spec.stripe_size,
        objects,
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
        let mut c = OstChooser::new(vec![5, 1, 3]);
        let spec = |count, first| StripeSpec {
            stripe_size: 1 << 20,
            count,
            first,
        };
        let one = spec(StripeCount::Count(1), FirstOst::Any);
        let firsts: Vec<_> = (0..4).map(|_| c.choose(&one).unwrap()[0]).collect();
        assert_eq!(firsts, vec![1, 3, 5, 1]);
        assert_eq!(
            c.choose(&spec(StripeCount::All, FirstOst::Index(3)))
                .unwrap(),
            vec![3, 5, 1]
        );
        assert_eq!(
            c.choose(&spec(StripeCount::Count(9), FirstOst::Index(5)))
                .unwrap(),
            vec![5, 1, 3]
        );
        assert_eq!(
            c.choose(&spec(StripeCount::Count(1), FirstOst::Index(2))),
            Err(errno::EINVAL)
        );
        assert_eq!(OstChooser::new(vec![]).choose(&one), Err(errno::ENOSPC));
    }
}
