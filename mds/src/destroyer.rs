//! Freeing the space of files that are gone (Lustre's OSP draining the unlink llog).
//!
//! Unlinking a file's last link, renaming over it, and the last close of a file unlinked
//! while open put its layout in the MDT's durable `destroy` table, in the same
//! transaction as the namespace change. The [`Destroyer`] thread drains that table: for
//! each row that is durable (an unlink a crash could still undo keeps its objects) it
//! sends OBJ_DESTROY for every object to the OSS core that owns it, as the cluster map
//! names the server and its epoch, and once every object of the file is gone (ENOENT
//! counts: a destroy resent after a lost reply, or an object never written) it submits
//! `Admin::ForgetDestroyed`. An OSS that is down, a stale epoch or a timeout leaves the
//! row for the next pass, so destroys survive a restart of either side. Nothing here is
//! on the request path: an unlink is answered once the MDT has it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nacre_proto::bootstrap::ClusterMap;
use nacre_proto::layout::FileLayout;
use nacre_rpc::objects::OstRoute;
use nacre_rpc::{ClientEndpoint, ClientError, RpcConfig};

use crate::mdt::{Admin, Mdt};

/// Files looked at in one pass.
const BATCH: usize = 256;
/// Pause between passes that found nothing (or could not finish).
const IDLE: Duration = Duration::from_millis(200);
/// One destroy, and the commit that forgets a batch, may take this long.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The thread that destroys the objects of gone files; stops when dropped.
pub struct Destroyer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    stop: AtomicBool,
    map: Mutex<Option<ClusterMap>>,
    /// Objects destroyed so far.
    objects: AtomicU64,
    /// Tags of the ForgetDestroyed batches submitted.
    batches: AtomicU64,
}

impl Destroyer {
    /// Starts draining `mdt`'s destroy table over the fabric `sel` names (the provider
    /// the OSSs serve on). Nothing is sent before the first [`Destroyer::set_map`].
    pub fn start(mdt: Arc<Mdt>, sel: crate::reach::Reach) -> std::io::Result<Destroyer> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            map: Mutex::new(None),
            objects: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("mds-destroyer".into())
                .spawn(move || run(&mdt, &sel, &shared))?
        };
        Ok(Destroyer {
            shared,
            thread: Some(thread),
        })
    }

    /// The cluster map to route destroys by (the newest the server fetched).
    pub fn set_map(&self, map: ClusterMap) {
        *self.shared.map.lock().unwrap_or_else(|p| p.into_inner()) = Some(map);
    }

    /// Objects destroyed so far.
    pub fn destroyed(&self) -> u64 {
        self.shared.objects.load(Ordering::Relaxed)
    }
}

impl Drop for Destroyer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(mdt: &Mdt, sel: &crate::reach::Reach, shared: &Shared) {
    let submitter = mdt.submitter();
    let mut ep: Option<ClientEndpoint> = None;
    // Where the next pass starts: after the last file of a full batch, so that files
    // whose destroys keep failing (an OST down for long) do not starve the rest.
    let mut after = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let map = shared.map.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(map) = map else {
            sleep_unless_stopped(shared, IDLE);
            continue;
        };
        after = pass(mdt, &submitter, sel, &mut ep, &map, shared, after);
        if after.is_none() {
            sleep_unless_stopped(shared, IDLE);
        }
    }
}

/// One pass over at most [`BATCH`] files after `after`; the last inode of a full
/// batch (go on from there at once), or None (start over after a pause).
fn pass(
    mdt: &Mdt,
    submitter: &crate::mdt::Submitter,
    sel: &crate::reach::Reach,
    slot: &mut Option<ClientEndpoint>,
    map: &ClusterMap,
    shared: &Shared,
    after: Option<u64>,
) -> Option<u64> {
    let files = match mdt.durable_destroys(BATCH, after) {
        Ok(files) if files.is_empty() => return None,
        Ok(files) => files,
        Err(e) => {
            tracing::warn!("destroyer: reading the destroy log: {e}");
            return None;
        }
    };
    if slot.is_none() {
        match sel.open(rpc_config(TIMEOUT)) {
            Ok(opened) => *slot = Some(opened),
            Err(e) => {
                tracing::warn!("destroyer: opening an endpoint: {e}");
                return None;
            }
        }
    }
    let ep = slot.as_mut()?;
    let gone = match destroy_files(ep, map, &files) {
        Ok((gone, n)) => {
            shared.objects.fetch_add(n, Ordering::Relaxed);
            gone
        }
        Err(e) => {
            // No answer: start the next pass on a fresh endpoint and sessions.
            tracing::info!("destroyer: {e}: retrying on a fresh endpoint");
            *slot = None;
            return None;
        }
    };
    forget(submitter, gone, shared);
    match files.len() == BATCH {
        true => files.last().map(|(ino, _)| *ino),
        false => None,
    }
}

/// Destroys every object of `files`, all in flight together (up to the endpoint's
/// depth): the files whose objects are all gone now, and how many objects were there.
/// A file with an object the map cannot route or an OSS refused stays for a later
/// pass; an error without an answer is returned (the caller starts over).
fn destroy_files(
    ep: &mut ClientEndpoint,
    map: &ClusterMap,
    files: &[(u64, FileLayout)],
) -> Result<(Vec<u64>, u64), ClientError> {
    let mut routes = std::collections::HashMap::new();
    let mut routable = Vec::new();
    for (_, layout) in files {
        let ok = layout.objects().all(|o| {
            let route = routes
                .entry(o.ost)
                .or_insert_with(|| OstRoute::in_map(map, o.ost).ok());
            route.is_some()
        });
        routable.push(ok);
    }
    let objects: Vec<(&OstRoute, u64)> = files
        .iter()
        .zip(&routable)
        .filter(|(_, &ok)| ok)
        .flat_map(|((_, layout), _)| layout.objects())
        .map(|o| (routes[&o.ost].as_ref().expect("routable"), o.oid))
        .collect();
    let mut answers = ep.obj_destroy_all(&objects)?.into_iter();
    let (mut gone, mut n) = (Vec::new(), 0);
    for ((ino, layout), ok) in files.iter().zip(routable) {
        if !ok {
            continue;
        }
        let mut all = true;
        for _ in layout.objects() {
            match answers.next().expect("one answer per object") {
                Ok(was) => n += u64::from(was),
                Err(e) => {
                    tracing::debug!("destroyer: inode {ino}: {e} (retried later)");
                    all = false;
                }
            }
        }
        if all {
            gone.push(*ino);
        }
    }
    Ok((gone, n))
}

/// Destroys one object on the OSS core that owns it; whether it was there (ENOENT:
/// already gone, or never written).
pub(crate) fn destroy_object(
    ep: &mut ClientEndpoint,
    map: &ClusterMap,
    ost: u32,
    oid: u64,
) -> Result<bool, ClientError> {
    let route = OstRoute::in_map(map, ost)?;
    match ep.obj_destroy(&route, oid) {
        Ok(()) => Ok(true),
        Err(ClientError::Status(libc::ENOENT)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Tells the MDT that these files' objects are gone. Should that fail, the files are
/// offered again, and ENOENT answers their destroys.
fn forget(submitter: &crate::mdt::Submitter, inos: Vec<u64>, shared: &Shared) {
    let n = inos.len();
    if n == 0 {
        return;
    }
    // A tag of its own, so that the answer to an earlier batch that came late is not
    // taken for this one's.
    let tag = shared.batches.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = submitter.submit_admin(tag, Admin::ForgetDestroyed(inos)) {
        tracing::warn!("destroyer: forgetting {n} destroyed files: {e} (retried later)");
        return;
    }
    match submitter.wait_for(tag, TIMEOUT).map(|c| c.result) {
        Some(Ok(_)) => {}
        Some(Err(errno)) => {
            tracing::warn!("destroyer: forgetting {n} destroyed files: errno {errno}")
        }
        None => {
            tracing::warn!("destroyer: forgetting {n} destroyed files: no answer in {TIMEOUT:?}")
        }
    }
}

/// What the MDS's own requests to the OSSs (destroys, the checker's listing) use.
pub(crate) fn rpc_config(timeout: Duration) -> RpcConfig {
    RpcConfig {
        msg_size: nacre_proto::object::MSG_SIZE,
        timeout,
        ..Default::default()
    }
}

fn sleep_unless_stopped(shared: &Shared, total: Duration) {
    crate::background::sleep_unless(&shared.stop, total);
}
