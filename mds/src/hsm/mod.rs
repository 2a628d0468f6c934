//! The data mover: the MDS's threads that move file data between the OSTs and the
//! data repositories linked to directories (FSx for Lustre's data repository
//! associations, Lustre's HSM coordinator and copytool in one). See
//! docs/repositories.md.
//!
//! Data repository requests reach it from the submitters ([`HsmJob`]); it answers each
//! on the asking core's completion queue when done, so an engine core never waits on
//! S3. One inbox thread takes the requests: status and listings are answered at once,
//! loads are scheduled chunk by chunk, and the rest (link, export, release) queued for
//! the mover threads, which also load chunks and run imports. Each mover has its own
//! fabric endpoint to the OSSs, as the destroyer and the rebuild do, proving the file
//! system key (no capabilities needed).
//!
//! - `restore`: loading released files, chunk by chunk, readers first;
//! - `requests`: link, unlink, export, release, status, listing;
//! - `import`: listing passes that make and update released files;
//! - `transfer`: file ranges to and from the OSTs;
//! - `work`: the movers' queue and the task list.

mod import;
mod requests;
mod restore;
mod transfer;
mod work;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nacre_proto::bootstrap::ClusterMap;
use nacre_proto::meta::hsm::{policy, HsmRequest};
use nacre_proto::meta::{Creds, Reply};
use nacre_repo::{Access, RepoError, Repository};
use nacre_rpc::ClientEndpoint;

use crate::mdt::hsm::Noted;
use crate::mdt::hsm::{HsmAdmin, RepoRecord};
use crate::mdt::{Admin, HsmEvent, Mdt};
use crate::reach::Reach;
use work::{Tasks, Work, WorkQueue};

/// Mover threads: loads of one file go this many chunks at a time.
const MOVERS: usize = 4;
/// An answer from the MDT's committer takes at most this long.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Automatic imports' default interval between listings.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// A linked repository, opened.
pub(crate) struct Linked {
    pub id: u32,
    pub repo: Repository,
    pub auto_import: u32,
    pub auto_export: u32,
    pub interval: Duration,
    /// The last error the repository gave, for `nacre repo list`.
    pub error: Mutex<String>,
}

impl Linked {
    fn open(id: u32, rec: &RepoRecord) -> Result<Linked, RepoError> {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let access = Access {
            endpoint: some(&rec.endpoint),
            region: some(&rec.region),
            access_key_id: some(&rec.access_key_id),
            secret_access_key: some(&rec.secret_access_key),
        };
        Ok(Linked {
            id,
            repo: Repository::open(&rec.url, &access)?,
            auto_import: rec.auto_import,
            auto_export: rec.auto_export,
            interval: match rec.interval_secs {
                0 => DEFAULT_INTERVAL,
                s => Duration::from_secs(s.into()),
            },
            error: Mutex::default(),
        })
    }

    pub fn note_error(&self, e: &RepoError) {
        tracing::warn!("repository {}: {e}", self.repo.url());
        *lock(&self.error) = e.to_string();
    }
}

pub(crate) struct Shared {
    pub mdt: Arc<Mdt>,
    pub reach: Reach,
    pub stop: AtomicBool,
    pub map: Mutex<Option<ClusterMap>>,
    pub repos: Mutex<HashMap<u32, Arc<Linked>>>,
    /// Files being loaded.
    pub loads: Mutex<HashMap<u64, Arc<restore::Load>>>,
    /// Associations with an import pass queued or running.
    pub importing: Mutex<HashSet<u32>>,
    /// Passes that failed, and when to resume them.
    pub retries: Mutex<HashMap<u32, Instant>>,
    /// The task entry of each pass under way.
    pub import_tasks: Mutex<HashMap<u32, work::Task>>,
    /// The listing of each pass under way, between its pages.
    pub listers: Mutex<HashMap<u32, nacre_repo::Lister>>,
    pub queue: WorkQueue,
    pub tasks: Tasks,
    tags: AtomicU64,
}

impl Shared {
    pub fn linked(&self, id: u32) -> Option<Arc<Linked>> {
        lock(&self.repos).get(&id).cloned()
    }

    pub fn map(&self) -> Option<ClusterMap> {
        lock(&self.map).clone()
    }

    /// Submits `op` to the MDT and waits for its answer.
    pub fn admin(&self, op: HsmAdmin) -> Result<Reply, i32> {
        let submitter = self.mdt.submitter();
        let tag = self.tags.fetch_add(1, Ordering::Relaxed);
        submitter
            .submit_admin(tag, Admin::Hsm(op))
            .map_err(|_| libc::EIO)?;
        submitter
            .wait_for(tag, ADMIN_TIMEOUT)
            .map_or(Err(libc::EIO), |c| c.result)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The data mover; stops (and answers nothing more) when dropped.
pub struct Hsm {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Hsm {
    /// Opens the associations `mdt` holds, resumes the imports a restart cut short,
    /// and starts taking `mdt`'s data repository requests. Nothing moves before the
    /// first [`Hsm::set_map`].
    pub fn start(mdt: Arc<Mdt>, reach: Reach) -> std::io::Result<Hsm> {
        let shared = Arc::new(Shared {
            mdt: mdt.clone(),
            reach,
            stop: AtomicBool::new(false),
            map: Mutex::new(None),
            repos: Mutex::default(),
            loads: Mutex::default(),
            importing: Mutex::default(),
            retries: Mutex::default(),
            import_tasks: Mutex::default(),
            listers: Mutex::default(),
            queue: WorkQueue::default(),
            tasks: Tasks::default(),
            tags: AtomicU64::new(1),
        });
        let records = mdt
            .repos()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        for (id, rec) in records {
            match Linked::open(id, &rec) {
                Ok(l) => {
                    lock(&shared.repos).insert(id, Arc::new(l));
                    if rec.importing {
                        import::queue(&shared, id);
                    }
                }
                Err(e) => tracing::error!("repository association {id} ({}): {e}", rec.url),
            }
        }
        let (tx, rx) = mpsc::channel();
        let mut threads = Vec::new();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name).spawn(f)
        };
        let s = shared.clone();
        threads.push(spawn("hsm-inbox".into(), Box::new(move || inbox(&s, rx)))?);
        for n in 0..MOVERS {
            let s = shared.clone();
            threads.push(spawn(
                format!("hsm-mover-{n}"),
                Box::new(move || mover(&s)),
            )?);
        }
        let s = shared.clone();
        threads.push(spawn("hsm-auto".into(), Box::new(move || auto(&s)))?);
        mdt.set_hsm(Some(tx));
        Ok(Hsm { shared, threads })
    }

    /// The cluster map to reach the OSTs by (the newest the server fetched).
    pub fn set_map(&self, map: ClusterMap) {
        *lock(&self.shared.map) = Some(map);
    }
}

impl Drop for Hsm {
    fn drop(&mut self) {
        self.shared.mdt.set_hsm(None);
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.queue.wake_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Takes the requests: quick ones answered here, the rest handed on.
fn inbox(shared: &Arc<Shared>, rx: Receiver<HsmEvent>) {
    while !shared.stopping() {
        let job = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(HsmEvent::Request(job)) => *job,
            Ok(HsmEvent::Noted(n)) => {
                noted(shared, n);
                continue;
            }
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        match job.req {
            HsmRequest::List => {
                let r = requests::list(shared);
                job.answer(r);
            }
            HsmRequest::State { ino } => {
                let r = requests::state(shared, ino);
                job.answer(r);
            }
            HsmRequest::Restore { ino, offset, len } => restore::ask(shared, job, ino, offset, len),
            _ => shared.queue.push_back(Work::Request(job)),
        }
    }
}

/// Automatic export: a dirty file's last close, a deleted file's repository copy,
/// as the association's policy says (checked by the mover).
fn noted(shared: &Shared, n: Noted) {
    match n {
        Noted::Closed(ino) => shared.queue.push_back(Work::AutoExport(ino)),
        Noted::Deleted { repo, key, etag } => {
            let wanted = shared
                .linked(repo)
                .is_some_and(|l| l.auto_export & policy::DELETED != 0);
            if wanted {
                shared.queue.push_back(Work::Delete(repo, key, etag));
            }
        }
    }
}

/// One mover: chunks to load first, then requests and imports, in order.
fn mover(shared: &Arc<Shared>) {
    let mut ep: Option<ClientEndpoint> = None;
    while let Some(work) = shared.queue.pop(&shared.stop) {
        match work {
            Work::Chunk(load, chunk) => restore::load_chunk(shared, &mut ep, &load, chunk),
            Work::Request(job) => requests::run(shared, &mut ep, job),
            Work::Import(id) => import::pass(shared, id),
            Work::AutoExport(ino) => {
                let root = Creds::default();
                match requests::export(shared, &mut ep, &root, ino, true) {
                    Ok(()) | Err(libc::ENOENT) | Err(libc::EINVAL) => {}
                    Err(e) => tracing::warn!("automatic export of inode {ino}: errno {e}"),
                }
            }
            Work::Delete(repo, key, etag) => {
                if let Some(l) = shared.linked(repo) {
                    delete_copy(&l, &key, &etag);
                }
            }
        }
    }
}

/// Deletes the repository's object at `key` if it is still the copy tagged `etag`.
pub(crate) fn delete_copy(l: &Linked, key: &str, etag: &str) {
    let result = match l.repo.head(key) {
        Ok(Some(o)) if o.etag == etag => l.repo.delete(key),
        Ok(_) => {
            tracing::debug!("{key}: not the deleted file's copy any more, kept");
            Ok(())
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => tracing::debug!("{key} deleted from {}", l.repo.url()),
        Err(e) => l.note_error(&e),
    }
}

/// Starts the automatic imports' passes when their interval comes round.
fn auto(shared: &Arc<Shared>) {
    let mut last: HashMap<u32, Instant> = HashMap::new();
    while !shared.stopping() {
        std::thread::sleep(Duration::from_millis(250));
        import::retry_due(shared);
        let linked: Vec<Arc<Linked>> = lock(&shared.repos).values().cloned().collect();
        for l in linked.iter().filter(|l| l.auto_import != 0) {
            let due = last.get(&l.id).is_none_or(|t| t.elapsed() >= l.interval);
            if due && lock(&shared.map).is_some() {
                last.insert(l.id, Instant::now());
                import::start_pass(shared, l.id);
            }
        }
        last.retain(|id, _| linked.iter().any(|l| l.id == *id));
    }
}
