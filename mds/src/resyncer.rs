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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nacre_fabric::Selection;
use nacre_proto::bootstrap::{ClusterMap, Role, RoleKind, TargetState};
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
    tags: AtomicU64,
}

impl Resyncer {
    /// Starts rebuilding `mdt`'s stale copies over the fabric `sel` names, at most
    /// `rate` bytes per second (0: never). Nothing is copied before the first
    /// [`Resyncer::set_map`].
    pub fn start(mdt: Arc<Mdt>, sel: Selection, rate: u64) -> std::io::Result<Resyncer> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            map: Mutex::new(None),
            rate,
            stats: RebuildStats::default(),
            // Tags of their own, far from the destroyer's and the checker's.
            tags: AtomicU64::new(3 << 60),
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
}

impl Drop for Resyncer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(mdt: &Mdt, sel: &Selection, shared: &Shared) {
    if shared.rate == 0 {
        return;
    }
    let mut ep: Option<ClientEndpoint> = None;
    let mut from = 0;
    // When each file was first seen stale: it is rebuilt only on a map fetched after
    // that, one at least as new as the map that showed its OST down (an older one may
    // still show the OST up under the server that went away).
    let mut seen: HashMap<u64, Instant> = HashMap::new();
    while !shared.stop.load(Ordering::SeqCst) {
        let map = shared.map.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let files = mdt.stale_files(from, BATCH);
        if from == 0 {
            seen.retain(|ino, _| files.contains(ino) || mdt.is_stale(*ino));
        }
        match (map, files.last()) {
            (Some((map, fetched)), Some(&last)) => {
                for ino in files {
                    if shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if *seen.entry(ino).or_insert_with(Instant::now) >= fetched {
                        continue;
                    }
                    if let Err(e) = rebuild(mdt, sel, &mut ep, &map, shared, ino) {
                        // No answer: the next file starts on a fresh endpoint.
                        tracing::info!("rebuild: inode {ino}: {e} (tried again later)");
                        ep = None;
                    }
                }
                from = last.saturating_add(1);
            }
            _ => from = 0,
        }
        sleep_unless_stopped(shared, IDLE);
    }
}

/// Brings the stale copies of `ino` back in sync if every OST involved serves and no
/// handle may write it; an error is a transfer without an answer.
fn rebuild(
    mdt: &Mdt,
    sel: &Selection,
    ep: &mut Option<ClientEndpoint>,
    map: &ClusterMap,
    shared: &Shared,
    ino: u64,
) -> Result<(), ClientError> {
    let head = Head {
        creds: Creds::root(),
        epoch: mdt.epoch(),
        replay: None,
    };
    let layout = match mdt.read(&head, &Request::GetLayout { ino }) {
        Ok(Reply::Layout(l)) => l,
        // Gone, or no longer a mirrored file.
        _ => {
            mdt.forget_stale(ino);
            return Ok(());
        }
    };
    let stale: Vec<usize> = (0..layout.mirrors.len())
        .filter(|&m| layout.mirrors[m].stale)
        .collect();
    let Some(&src) = layout.in_sync().first() else {
        return Ok(());
    };
    if stale.is_empty() {
        mdt.forget_stale(ino);
        return Ok(());
    }
    // Degraded until every OST of the source and of the stale copies serves.
    let needed = |m: usize| layout.mirrors[m].stripes.objects.iter().map(|o| o.ost);
    if !stale
        .iter()
        .flat_map(|&m| needed(m))
        .chain(needed(src))
        .all(|o| serves(map, o))
    {
        return Ok(());
    }
    let size = match admin(mdt, shared, Admin::ResyncStart(ino)) {
        Some(Ok(Reply::Attr(a))) => a.size,
        // EBUSY: a handle may write it; the next pass tries again.
        _ => return Ok(()),
    };
    if ep.is_none() {
        let rpc = RpcConfig {
            timeout: TIMEOUT,
            ..RpcConfig::default()
        };
        *ep = Some(ClientEndpoint::open(sel, rpc)?);
    }
    let ep = ep.as_mut().expect("just opened");
    let provider = map.servers.first().map_or("", |s| s.provider.as_str());
    let io = IoOptions::for_provider(provider);
    let mut pace = Pace::new(shared.rate);
    for &m in &stale {
        copy(ep, map, &layout, src, m, size, io, &mut pace, shared)?;
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
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Whether OST `ost` is up in `map` with a server.
fn serves(map: &ClusterMap, ost: u32) -> bool {
    let role = Role {
        kind: RoleKind::Oss,
        index: ost,
    };
    map.target(role).is_some_and(|t| t.state == TargetState::Up) && map.server(role).is_some()
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
    let routes = |l: &StripedLayout| -> Result<Vec<OstRoute>, ClientError> {
        l.objects
            .iter()
            .map(|o| OstRoute::in_map(map, o.ost))
            .collect()
    };
    let (src_routes, dst_routes) = (routes(src)?, routes(dst)?);
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
        let got = ep.read_extents(&extents(src, &src_routes, &pieces, at), buf, io)?;
        for (p, got) in pieces.iter().zip(got) {
            let s = (p.file_offset - at) as usize;
            buf[s + got..s + p.len as usize].fill(0);
        }
        if buf.iter().any(|&b| b != 0) {
            ep.write_extents(&extents(dst, &dst_routes, &pieces, at), buf, io)?;
            shared.stats.bytes.fetch_add(len, Ordering::Relaxed);
            pace.spent(len, shared);
        }
        at += len;
    }
    truncate(ep, dst, &dst_routes, size)
}

/// The extents of copy `l` (routed by `routes`) that file `pieces` of a chunk at `at`
/// touch.
fn extents<'r>(
    l: &StripedLayout,
    routes: &'r [OstRoute],
    pieces: &[nacre_proto::layout::Piece],
    at: u64,
) -> Vec<Extent<'r>> {
    pieces
        .iter()
        .map(|p| Extent {
            route: &routes[p.stripe as usize],
            object: l.objects[p.stripe as usize].oid,
            offset: p.object_offset,
            at: (p.file_offset - at) as usize,
            len: p.len as usize,
            key: 0,
        })
        .collect()
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
    let until = Instant::now() + d;
    while !shared.stop.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
