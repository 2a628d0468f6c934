//! The rebuild: copies that went stale (one of their OSTs was down during a write) are
//! copied back in sync in the background, once every OST they and their source need
//! serves again, at a bounded rate so that clients keep most of the bandwidth.
//!
//! The [`Resyncer`] thread walks the MDT's set of files with a stale copy. For each it
//! reads the layout, registers a resync (`Admin::ResyncStart`: refused while a handle
//! may write the file, which is then tried again later), copies the first copy in sync
//! over each stale one (objects emptied first so that holes stay holes, then every
//! chunk that is not all zeros, then each object's size), and asks for the copy to be
//! marked in sync (`Admin::MirrorInSync`). The MDT refuses that mark if a write open,
//! a replayed open or a size change came during the copy; the file stays in the set
//! and is copied again on a later pass. This is what `nacre mirror resync` does from a
//! client, run by the server for every file.
//!
//! A replaced OST (the map shows its `generation` above its `settled`: a server on an
//! empty directory took its role, or its own came back with data of a generation that
//! was replaced meanwhile) holds none of its copies, or old ones. Before each walk the
//! thread settles it: every in-sync copy with an object there is marked stale (not the
//! last copy in sync of a file: that data is lost), over a snapshot taken after the
//! MDT learned that the OST is down, so files made later are born stale there. The
//! MDS's heartbeats then report the OST settled; the MGS lets it serve again, and the
//! walk rebuilds its copies as any stale ones.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nacre_proto::bootstrap::{ClusterMap, RebuildProgress, Role, RoleKind, Settled, TargetKind};
use nacre_proto::layout::{FileLayout, StripedLayout};
use nacre_proto::meta::{Creds, Head, Reply, Request};
use nacre_rpc::objects::{Extent, IoOptions, OstRoute};
use nacre_rpc::{ClientEndpoint, ClientError, RpcConfig};

use crate::mdt::{Admin, Mdt};

/// Files looked at in one pass.
const BATCH: usize = 64;
/// Pause between passes.
const IDLE: Duration = Duration::from_millis(500);
/// Bytes copied per step.
const CHUNK: u64 = 4 << 20;
/// One request, and one commit of the rebuild, may take this long.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The rebuild's figures so far.
#[derive(Debug, Default)]
pub struct RebuildStats {
    /// Copies brought back in sync.
    pub resynced: AtomicU64,
    /// Bytes copied (chunks that were all zeros are not).
    pub bytes: AtomicU64,
}

/// The rebuild thread; stops when dropped.
pub struct Resyncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    stop: AtomicBool,
    /// The newest map and when it was fetched.
    map: Mutex<Option<(ClusterMap, Instant)>>,
    /// Bytes per second at most (0: the rebuild is off).
    rate: u64,
    stats: RebuildStats,
    progress: Mutex<Progress>,
    tags: AtomicU64,
    /// Replaced OSTs settled in this run, with the generation they were settled for.
    settled: Mutex<BTreeMap<u32, u64>>,
}

impl Shared {
    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Resyncer {
    /// Starts rebuilding `mdt`'s stale copies over the fabric `sel` names, at most
    /// `rate` bytes per second (0: never). Nothing is copied before the first
    /// [`Resyncer::set_map`].
    pub fn start(mdt: Arc<Mdt>, sel: crate::reach::Reach, rate: u64) -> std::io::Result<Resyncer> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            map: Mutex::new(None),
            rate,
            stats: RebuildStats::default(),
            progress: Mutex::default(),
            // Tags of their own, far from the destroyer's and the checker's.
            tags: AtomicU64::new(3 << 60),
            settled: Mutex::default(),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("mds-rebuild".into())
                .spawn(move || run(&mdt, &sel, &shared))?
        };
        Ok(Resyncer {
            shared,
            thread: Some(thread),
        })
    }

    /// The cluster map to route copies by (the newest the server fetched).
    pub fn set_map(&self, map: ClusterMap) {
        *self.shared.map.lock().unwrap_or_else(|p| p.into_inner()) = Some((map, Instant::now()));
    }

    pub fn stats(&self) -> &RebuildStats {
        &self.shared.stats
    }

    /// Per OST with stale copies: bytes left to copy, out of how many (what `nacre
    /// status` shows as `rebuilding N%`, through the MDS's heartbeats).
    pub fn progress(&self) -> Vec<RebuildProgress> {
        self.shared.progress().report()
    }

    /// The replaced OSTs this MDS has settled (their lost copies marked stale), for
    /// its heartbeats.
    pub fn settled(&self) -> Vec<Settled> {
        let done = self
            .shared
            .settled
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        done.iter()
            .map(|(&ost, &generation)| Settled { ost, generation })
            .collect()
    }
}

impl Drop for Resyncer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(mdt: &Mdt, sel: &crate::reach::Reach, shared: &Shared) {
    if shared.rate == 0 {
        // No rebuild, but a replaced OST must still be settled to serve again.
        while !shared.stop.load(Ordering::SeqCst) {
            settle_replaced(mdt, shared);
            sleep_unless_stopped(shared, IDLE);
        }
        return;
    }
    let mut ep: Option<ClientEndpoint> = None;
    let mut from = 0;
    // When each file was first seen stale: it is rebuilt only on a map fetched after
    // that, one at least as new as the map that showed its OST down (an older one may
    // still show the OST up under the server that went away).
    let mut seen: HashMap<u64, Instant> = HashMap::new();
    // What this walk over the set found still stale, per OST.
    let mut census: BTreeMap<u32, u64> = BTreeMap::new();
    while !shared.stop.load(Ordering::SeqCst) {
        if from == 0 {
            settle_replaced(mdt, shared);
        }
        let files = mdt.stale_files(from, BATCH);
        if from == 0 {
            seen.retain(|ino, _| files.contains(ino) || mdt.is_stale(*ino));
        }
        let Some(&last) = files.last() else {
            // A walk ends: what it counted is what is left.
            shared.progress().walked(std::mem::take(&mut census));
            from = 0;
            sleep_unless_stopped(shared, IDLE);
            continue;
        };
        from = last.saturating_add(1);
        for ino in files {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            let Some(file) = survey(mdt, ino) else {
                continue;
            };
            let first_seen = *seen.entry(ino).or_insert_with(Instant::now);
            // The newest map for each file: a server may have come back elsewhere
            // while the last one was copied.
            let map = shared.map.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let rebuilt = match &map {
                Some((map, fetched)) if first_seen < *fetched => {
                    match rebuild(mdt, sel, &mut ep, map, shared, ino, &file) {
                        Ok(done) => done,
                        Err(e) => {
                            // No answer: an OST is gone, though the map does not say
                            // so yet. The next pass starts from this file again, on
                            // a fresh endpoint and a newer map, rather than waiting
                            // out the same silence file after file.
                            tracing::info!("rebuild: inode {ino}: {e} (tried again later)");
                            ep = None;
                            from = ino;
                            break;
                        }
                    }
                }
                _ => false,
            };
            if rebuilt {
                shared.progress().rebuilt(&file);
            } else {
                for (ost, bytes) in file.per_ost() {
                    *census.entry(ost).or_default() += bytes;
                }
            }
        }
        sleep_unless_stopped(shared, IDLE);
    }
}

/// Settles every replaced OST of the newest map not settled yet in this run.
fn settle_replaced(mdt: &Mdt, shared: &Shared) {
    let Some((map, _)) = shared.map.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
        return;
    };
    for t in &map.targets {
        if t.kind != TargetKind::Ost || t.settled >= t.generation {
            continue;
        }
        let done = shared.settled.lock().unwrap_or_else(|p| p.into_inner());
        if done.get(&t.index).is_some_and(|&g| g >= t.generation) {
            continue;
        }
        drop(done);
        match settle(mdt, shared, t.index) {
            Ok(marked) => {
                tracing::warn!(
                    "OST{:04x} replaced (generation {}): {marked} files had a copy in sync \
                     there, marked stale for the rebuild",
                    t.index,
                    t.generation
                );
                let mut done = shared.settled.lock().unwrap_or_else(|p| p.into_inner());
                done.insert(t.index, t.generation);
            }
            Err(e) => tracing::warn!("settling the replaced OST{:04x}: {e}", t.index),
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
    }
}

/// Marks stale the in-sync copies with an object on `ost`; of how many files.
fn settle(mdt: &Mdt, shared: &Shared, ost: u32) -> Result<usize, String> {
    // The server submits the map's OST states to the MDT before handing the map over:
    // the snapshot sees every file placed while the MDT thought the OST served.
    let tx = mdt.snapshot().map_err(|e| e.to_string())?;
    let inos = crate::mdt::files_on_ost(&tx, ost).map_err(|e| e.to_string())?;
    drop(tx);
    let mut marked = 0;
    for chunk in inos.chunks(BATCH) {
        let op = Admin::CopiesLost {
            ost,
            inos: chunk.to_vec(),
        };
        match admin(mdt, shared, op) {
            Some(Ok(_)) => marked += chunk.len(),
            other => return Err(format!("marking copies stale: {other:?}")),
        }
    }
    Ok(marked)
}

/// A file with stale copies, as a walk finds it.
struct StaleFile {
    layout: FileLayout,
    size: u64,
}

impl StaleFile {
    /// The bytes each OST of a stale copy is to receive.
    fn per_ost(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.layout
            .mirrors
            .iter()
            .filter(|m| m.stale)
            .flat_map(move |m| {
                let s = &m.stripes;
                s.objects
                    .iter()
                    .enumerate()
                    .map(move |(k, o)| (o.ost, s.object_size_for_file(k as u32, self.size)))
            })
    }
}

/// `ino`'s layout and size if it still has a stale copy (else it leaves the set).
fn survey(mdt: &Mdt, ino: u64) -> Option<StaleFile> {
    let head = Head {
        creds: Creds::root(),
        epoch: mdt.epoch(),
        replay: None,
    };
    let (Ok(Reply::Layout(layout)), Ok(Reply::Attr(attr))) = (
        mdt.read(&head, &Request::GetLayout { ino }),
        mdt.read(&head, &Request::Getattr { ino }),
    ) else {
        // Gone, or no longer a mirrored file.
        mdt.forget_stale(ino);
        return None;
    };
    if !layout.mirrors.iter().any(|m| m.stale) {
        mdt.forget_stale(ino);
        return None;
    }
    Some(StaleFile {
        layout,
        size: attr.size,
    })
}

/// The rebuild's progress per OST, as the MDS's heartbeats report it.
#[derive(Debug, Default)]
struct Progress {
    /// Per OST: bytes of stale copies left, and the total since it last had none.
    osts: BTreeMap<u32, (u64, u64)>,
}

impl Progress {
    /// A walk counted `census` still stale: more than was left is new work, less was
    /// done otherwise (a client's resync, a file removed).
    fn walked(&mut self, census: BTreeMap<u32, u64>) {
        let old = std::mem::take(&mut self.osts);
        for (ost, left) in census {
            let (was, total) = old.get(&ost).copied().unwrap_or((0, 0));
            self.osts
                .insert(ost, (left, total + left.saturating_sub(was)));
        }
    }

    /// `file`'s stale copies were brought in sync.
    fn rebuilt(&mut self, file: &StaleFile) {
        for (ost, bytes) in file.per_ost() {
            if let Some((left, _)) = self.osts.get_mut(&ost) {
                *left = left.saturating_sub(bytes);
            }
        }
    }

    fn report(&self) -> Vec<RebuildProgress> {
        self.osts
            .iter()
            .filter(|(_, &(left, _))| left > 0)
            .map(|(&ost, &(left, total))| RebuildProgress {
                ost,
                left,
                total: total.max(left),
            })
            .collect()
    }
}

/// Brings the stale copies of `file` (inode `ino`) back in sync if every OST involved
/// serves and no handle may write it: whether they all are now. An error is a transfer
/// without an answer.
#[allow(clippy::too_many_arguments)]
fn rebuild(
    mdt: &Mdt,
    sel: &crate::reach::Reach,
    ep: &mut Option<ClientEndpoint>,
    map: &ClusterMap,
    shared: &Shared,
    ino: u64,
    file: &StaleFile,
) -> Result<bool, ClientError> {
    let layout = &file.layout;
    let stale: Vec<usize> = (0..layout.mirrors.len())
        .filter(|&m| layout.mirrors[m].stale)
        .collect();
    let Some(&src) = layout.in_sync().first() else {
        return Ok(false);
    };
    // Degraded until every OST of the source and of the stale copies serves.
    let needed = |m: usize| layout.mirrors[m].stripes.objects.iter().map(|o| o.ost);
    if !stale
        .iter()
        .flat_map(|&m| needed(m))
        .chain(needed(src))
        .all(|o| serves(map, o))
    {
        return Ok(false);
    }
    let size = match admin(mdt, shared, Admin::ResyncStart(ino)) {
        Some(Ok(Reply::Attr(a))) => a.size,
        // EBUSY: a handle may write it; the next pass tries again.
        _ => return Ok(false),
    };
    if ep.is_none() {
        let rpc = RpcConfig {
            timeout: TIMEOUT,
            ..RpcConfig::default()
        };
        *ep = Some(sel.open(rpc)?);
    }
    let ep = ep.as_mut().expect("just opened");
    let provider = map.servers.first().map_or("", |s| s.provider.as_str());
    let io = IoOptions::for_provider(provider);
    let mut pace = Pace::new(shared.rate);
    for &m in &stale {
        copy(ep, map, layout, src, m, size, io, &mut pace, shared)?;
    }
    for &m in &stale {
        let done = admin(
            mdt,
            shared,
            Admin::MirrorInSync {
                ino,
                mirror: m as u32,
            },
        );
        match done {
            Some(Ok(_)) => {
                shared.stats.resynced.fetch_add(1, Ordering::Relaxed);
                tracing::info!("rebuild: inode {ino} mirror {m} in sync ({size} bytes)");
            }
            // Written or truncated during the copy: copied again on a later pass.
            other => {
                tracing::debug!("rebuild: inode {ino} mirror {m}: {other:?}");
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Whether OST `ost` is up in `map` with a server.
fn serves(map: &ClusterMap, ost: u32) -> bool {
    map.serves(Role {
        kind: RoleKind::Oss,
        index: ost,
    })
}

/// Submits `op` and waits for its answer (None: no answer in time).
fn admin(mdt: &Mdt, shared: &Shared, op: Admin) -> Option<Result<Reply, i32>> {
    let submitter = mdt.submitter();
    let tag = shared.tags.fetch_add(1, Ordering::Relaxed);
    submitter.submit_admin(tag, op).ok()?;
    submitter.wait_for(tag, TIMEOUT).map(|c| c.result)
}

/// Makes mirror `to` of `layout` hold what mirror `from` holds of a file of `size`
/// bytes.
#[allow(clippy::too_many_arguments)]
fn copy(
    ep: &mut ClientEndpoint,
    map: &ClusterMap,
    layout: &FileLayout,
    from: usize,
    to: usize,
    size: u64,
    io: IoOptions,
    pace: &mut Pace,
    shared: &Shared,
) -> Result<(), ClientError> {
    let (src, dst) = (&layout.mirrors[from].stripes, &layout.mirrors[to].stripes);
    let src_routes = OstRoute::each_in_map(map, src)?;
    let dst_routes = OstRoute::each_in_map(map, dst)?;
    truncate(ep, dst, &dst_routes, 0)?;
    let mut buf = vec![0u8; CHUNK.min(size) as usize];
    let mut at = 0;
    while at < size {
        if shared.stop.load(Ordering::SeqCst) {
            return Err(ClientError::Protocol("stopping".into()));
        }
        let len = (size - at).min(CHUNK);
        let buf = &mut buf[..len as usize];
        let pieces = src
            .pieces(at, len)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let got = ep.read_extents(
            &Extent::of_pieces(src, &src_routes, &pieces, at, 0),
            buf,
            io,
        )?;
        for (p, got) in pieces.iter().zip(got) {
            let s = (p.file_offset - at) as usize;
            buf[s + got..s + p.len as usize].fill(0);
        }
        if buf.iter().any(|&b| b != 0) {
            ep.write_extents(
                &Extent::of_pieces(dst, &dst_routes, &pieces, at, 0),
                buf,
                io,
            )?;
            shared.stats.bytes.fetch_add(len, Ordering::Relaxed);
            pace.spent(len, shared);
        }
        at += len;
    }
    truncate(ep, dst, &dst_routes, size)
}

/// Sets each object of `l` to its size for a file of `size` bytes.
fn truncate(
    ep: &mut ClientEndpoint,
    l: &StripedLayout,
    routes: &[OstRoute],
    size: u64,
) -> Result<(), ClientError> {
    for (k, o) in l.objects.iter().enumerate() {
        let osize = l.object_size_for_file(k as u32, size);
        match ep.obj_truncate(&routes[k], o.oid, osize, None) {
            Err(ClientError::Status(libc::ENOENT)) => {}
            other => other?,
        }
    }
    Ok(())
}

/// Keeps the copy at or below a rate: after each chunk, sleeps until the bytes so far
/// fit the time so far.
struct Pace {
    rate: u64,
    start: Instant,
    bytes: u64,
}

impl Pace {
    fn new(rate: u64) -> Pace {
        Pace {
            rate,
            start: Instant::now(),
            bytes: 0,
        }
    }

    fn spent(&mut self, n: u64, shared: &Shared) {
        self.bytes += n;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        if let Some(wait) = due.checked_sub(self.start.elapsed()) {
            sleep_unless_stopped(shared, wait);
        }
    }
}

fn sleep_unless_stopped(shared: &Shared, d: Duration) {
    crate::background::sleep_unless(&shared.stop, d);
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_proto::layout::{Mirror, ObjectRef};

    /// A file of `size` bytes striped 1 MiB over `osts`, with a stale copy there and an
    /// in-sync one on OST 9.
    fn stale_file(size: u64, osts: &[u32]) -> StaleFile {
        let stripes = |osts: &[u32], stale| Mirror {
            stripes: StripedLayout {
                stripe_size: 1 << 20,
                objects: osts.iter().map(|&ost| ObjectRef { ost, oid: 1 }).collect(),
            },
            stale,
        };
        StaleFile {
            layout: FileLayout {
                mirrors: vec![stripes(&[9], false), stripes(osts, true)],
                released: false,
            },
            size,
        }
    }

    #[test]
    fn progress_counts_what_is_left_of_what_there_was() {
        let mut p = Progress::default();
        let a = stale_file(3 << 20, &[0, 1]);
        let b = stale_file(1 << 20, &[0]);
        let census = |files: &[&StaleFile]| {
            let mut c = BTreeMap::new();
            for f in files {
                for (ost, n) in f.per_ost() {
                    *c.entry(ost).or_default() += n;
                }
            }
            c
        };
        // OST 0 holds 2 MiB of a and 1 MiB of b; OST 1 1 MiB of a.
        p.walked(census(&[&a, &b]));
        let r = p.report();
        assert_eq!((r[0].ost, r[0].left, r[0].total), (0, 3 << 20, 3 << 20));
        assert_eq!((r[1].ost, r[1].left), (1, 1 << 20));
        // b rebuilt: a third of OST 0 done at once, OST 1 untouched.
        p.rebuilt(&b);
        assert_eq!(p.report()[0].percent(), 33);
        assert_eq!(p.report()[1].percent(), 0);
        // The next walk finds a grown (new work) and b gone: the total grows too.
        let a2 = stale_file(5 << 20, &[0, 1]);
        p.walked(census(&[&a2]));
        let r = p.report();
        assert_eq!((r[0].left, r[0].total), (3 << 20, 4 << 20));
        // Everything rebuilt: nothing reported, and a later outage starts from zero.
        p.rebuilt(&a2);
        assert!(p.report().is_empty());
        p.walked(BTreeMap::new());
        p.walked(census(&[&b]));
        assert_eq!(p.report()[0].percent(), 0);
    }
}
