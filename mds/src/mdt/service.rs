//! The MDT service: one committer thread per MDT that batches submitted operations into
//! one store transaction and one log append (and, in sync mode, one fdatasync), and
//! per-caller completion queues so an engine core submits without blocking and polls
//! for results.
//!
//! Durability (see docs/mds.md): redb rolls back to its last durable commit when the
//! process dies, so batches are committed to redb without fsync and their redo record is
//! appended to the operation log with write(2) before any reply (survives kill -9);
//! every commit interval a durable redb commit checkpoints and the log is truncated
//! (survives machine loss within the interval). In sync mode the log is fdatasync'd
//! before the replies of each batch.

use super::locks::LockTable;
use super::ns::{self, root_inode, Ctx, Fail, Namespace};
use super::overlay::{Layered, Overlay};
use super::redo::{Change, OpLog, Redo};
use super::replies::{SavedReply, SWEEP_EVERY};
use super::store::{ReadTables, StoreError, View, WriteTables, DESTROY};
use nacre_proto::layout::{StripeSpec, StripedLayout};
use nacre_proto::meta::{errno, Head, ReplayKey, Reply, Request, Statfs};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The on-disk format version in the `meta` table.
pub const FORMAT_VERSION: u64 = 1;
pub const DB_FILE: &str = "mdt.redb";
pub const LOG_FILE: &str = "mdt.log";

/// When a reply may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// After the operation is in the kernel's hands (log written, not fsync'd): survives
    /// the MDS process dying; a machine loss loses at most one commit interval.
    Default,
    /// After the log record is on stable storage (group commit: one fdatasync per batch).
    Sync,
}

#[derive(Debug, Clone)]
pub struct MdtConfig {
    /// The MDT directory (holds `mdt.redb` and `mdt.log`).
    pub dir: PathBuf,
    /// The epoch this MDS serves under; requests carrying another get ESTALE.
    pub epoch: u64,
    /// OST indices of the cluster map that new files may use.
    pub osts: Vec<u32>,
    /// Striping of new files where no directory sets one.
    pub default_spec: StripeSpec,
    pub mode: SyncMode,
    /// Most time between durable store commits (default mode's loss window).
    pub commit_interval: Duration,
    /// Most operations in one transaction.
    pub max_batch: usize,
    /// Bound of the submission queue (submit answers Busy beyond it).
    pub queue_depth: usize,
}

impl MdtConfig {
    pub fn new(dir: impl Into<PathBuf>) -> MdtConfig {
        MdtConfig {
            dir: dir.into(),
            epoch: 1,
            osts: vec![0],
            default_spec: StripeSpec::default(),
            mode: SyncMode::Default,
            commit_interval: Duration::from_secs(1),
            max_batch: 1024,
            queue_depth: 8192,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MdtError {
    #[error("MDT I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("MDT format version {0} is not supported (this build reads {FORMAT_VERSION})")]
    Format(u64),
    #[error("operation log record {index} is corrupt: {why}")]
    Log { index: usize, why: &'static str },
    #[error("the committer stopped")]
    Stopped,
}

impl From<redb::DatabaseError> for MdtError {
    fn from(e: redb::DatabaseError) -> Self {
        MdtError::Store(e.into())
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MdtError + '_ {
    move |source| MdtError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The result of one submitted operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The caller's tag from submit.
    pub tag: u64,
    /// The reply, or a positive errno.
    pub result: Result<Reply, i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the MDT submission queue is full")]
    Busy,
    #[error("the MDT committer has stopped")]
    Closed,
}

/// Operations that come from the server itself rather than from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    /// The cluster map changed: new files use these OSTs.
    SetOsts(Vec<u32>),
    /// After the recovery window: destroy unlinked files that nobody re-opened.
    ReclaimOrphans,
    /// The OSTs removed these files' objects: forget them.
    ForgetDestroyed(Vec<u64>),
    /// Make everything so far durable now.
    Checkpoint,
}

enum Op {
    Client(Head, Request),
    Admin(Admin),
    /// Sent by [`Mdt`] when it is dropped: finish the queue before it, checkpoint, exit.
    Stop,
}

struct Job {
    op: Op,
    tag: u64,
    done: Sender<Completion>,
}

/// Counters of the committer.
#[derive(Debug, Default)]
pub struct Stats {
    pub batches: AtomicU64,
    pub ops: AtomicU64,
    pub log_syncs: AtomicU64,
    /// Time spent in those fdatasyncs, and waiting for a batch between them (ns).
    pub log_sync_ns: AtomicU64,
    pub log_wait_ns: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Retried requests answered from the reply cache instead of applied again.
    pub reconstructed: AtomicU64,
}

/// An open MDT: reads from any thread, writes through [`Submitter`]s.
pub struct Mdt {
    db: Arc<Database>,
    epoch: u64,
    jobs: Option<SyncSender<Job>>,
    committer: Option<JoinHandle<Result<(), MdtError>>>,
    stats: Arc<Stats>,
    /// POSIX advisory locks of every client, shared by the submitters of all cores.
    locks: Arc<Mutex<LockTable>>,
    /// The OSTs' space as the server last saw it in the cluster map, for statfs.
    ost_space: Arc<Mutex<OstSpace>>,
    /// What the committer's open transaction holds, for readers.
    overlay: Arc<RwLock<Overlay>>,
    /// Commits so far (grows under the overlay's lock): a reader's tables opened at
    /// the same generation are still current.
    generation: Arc<AtomicU64>,
}

/// A core's read tables and the generation they were opened at, reused until the next
/// commit: opening a read transaction and its four tables costs about as much as the
/// lookup a stat needs.
type TablesCache = std::cell::RefCell<Option<(u64, Arc<ReadTables>)>>;

/// What a read needs.
struct ReadCtx<'a> {
    db: &'a Database,
    overlay: &'a RwLock<Overlay>,
    generation: &'a AtomicU64,
    cache: Option<&'a TablesCache>,
    epoch: u64,
    ost_space: &'a Mutex<OstSpace>,
}

/// Bytes over the OSTs that are up or degraded, as their servers last reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OstSpace {
    pub total: u64,
    pub free: u64,
    pub osts: u32,
}

impl Mdt {
    /// Opens (formatting if new) the MDT in `cfg.dir`, replays its operation log, and
    /// starts the committer thread.
    pub fn open(cfg: MdtConfig) -> Result<Mdt, MdtError> {
        std::fs::create_dir_all(&cfg.dir).map_err(io_err(&cfg.dir))?;
        let db = Arc::new(Database::create(cfg.dir.join(DB_FILE))?);
        format_if_new(&db, &cfg.default_spec)?;
        let log_path = cfg.dir.join(LOG_FILE);
        let mut log = OpLog::open(&log_path).map_err(io_err(&log_path))?;
        replay(&db, &mut log, &log_path)?;
        let (tx, rx) = mpsc::sync_channel(cfg.queue_depth.max(1));
        let stats = Arc::new(Stats::default());
        let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let syncer = match cfg.mode {
            SyncMode::Default => None,
            SyncMode::Sync => Some(Syncer::start(
                &log,
                &log_path,
                broken.clone(),
                stats.clone(),
            )?),
        };
        let overlay: Arc<RwLock<Overlay>> = Arc::default();
        let generation: Arc<AtomicU64> = Arc::default();
        let committer = Committer {
            syncer,
            broken,
            db: db.clone(),
            ns: Namespace::new(cfg.osts.clone(), cfg.default_spec),
            log,
            log_path,
            interval: cfg.commit_interval,
            max_batch: cfg.max_batch.max(1),
            jobs: rx,
            dirty: false,
            last_checkpoint: Instant::now(),
            stats: stats.clone(),
            saved_since_sweep: 0,
            overlay: overlay.clone(),
            generation: generation.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("mdt-committer".into())
            .spawn(move || committer.run())
            .map_err(io_err(&cfg.dir))?;
        tracing::info!(dir = %cfg.dir.display(), mode = ?cfg.mode, "MDT open");
        Ok(Mdt {
            db,
            epoch: cfg.epoch,
            jobs: Some(tx),
            committer: Some(handle),
            stats,
            // A later epoch: an MDS served this MDT before and its clients may hold
            // locks it no longer knows of; they replay them in a recovery window.
            locks: Arc::new(Mutex::new(LockTable::with_lease(
                nacre_proto::meta::lock::LEASE,
                (cfg.epoch > 1).then_some(nacre_proto::meta::lock::RECOVERY),
            ))),
            ost_space: Arc::default(),
            overlay,
            generation,
        })
    }

    /// A submitter with its own completion queue (one per engine core or caller).
    pub fn submitter(&self) -> Submitter {
        let (done, completions) = mpsc::channel();
        Submitter {
            jobs: self.jobs.clone().expect("present until shutdown"),
            done,
            completions,
            db: self.db.clone(),
            epoch: self.epoch,
            locks: self.locks.clone(),
            ost_space: self.ost_space.clone(),
            overlay: self.overlay.clone(),
            generation: self.generation.clone(),
            cache: Default::default(),
        }
    }

    /// Answers a read-only request on the calling thread.
    pub fn read(&self, head: &Head, req: &Request) -> Result<Reply, i32> {
        let ctx = ReadCtx {
            db: &self.db,
            overlay: &self.overlay,
            generation: &self.generation,
            cache: None,
            epoch: self.epoch,
            ost_space: &self.ost_space,
        };
        read_now(&ctx, head, req)
    }

    /// What statfs reports of the OSTs from now on (the server calls this with every
    /// cluster map it fetches).
    pub fn set_ost_space(&self, space: OstSpace) {
        *self.ost_space.lock().unwrap_or_else(|p| p.into_inner()) = space;
    }

    /// Files whose objects the OSTs should remove: (ino, layout), at most `max`.
    pub fn pending_destroys(&self, max: usize) -> Result<Vec<(u64, StripedLayout)>, MdtError> {
        let overlay = self.overlay.read().unwrap_or_else(|p| p.into_inner());
        let tx = self.db.begin_read().map_err(StoreError::from)?;
        let t = tx.open_table(DESTROY).map_err(StoreError::from)?;
        // The committed rows, as the open transaction has changed them so far.
        let mut rows = std::collections::BTreeMap::new();
        let changed = overlay.destroys();
        for row in t.iter().map_err(StoreError::from)? {
            if rows.len() == max + changed.len() {
                break;
            }
            let (k, v) = row.map_err(StoreError::from)?;
            rows.insert(k.value(), v.value().to_vec());
        }
        for (ino, row) in changed {
            match row {
                Some(r) => drop(rows.insert(*ino, r.clone())),
                None => drop(rows.remove(ino)),
            }
        }
        let mut out = Vec::new();
        for (ino, row) in rows.into_iter().take(max) {
            let layout = StripedLayout::decode(&row)
                .map_err(|_| StoreError::CorruptRecord("destroy row"))?;
            out.push((ino, layout));
        }
        Ok(out)
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stops the committer after a final checkpoint.
    pub fn shutdown(mut self) -> Result<(), MdtError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), MdtError> {
        if let Some(jobs) = self.jobs.take() {
            // Submitters may outlive the MDT: tell the committer to stop explicitly.
            let (done, _) = mpsc::channel();
            let _ = jobs.send(Job {
                op: Op::Stop,
                tag: 0,
                done,
            });
        }
        match self.committer.take() {
            Some(h) => h.join().map_err(|_| MdtError::Stopped)?,
            None => Ok(()),
        }
    }
}

impl Drop for Mdt {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!("MDT committer: {e}");
        }
    }
}

/// Submits operations and collects their completions without blocking.
pub struct Submitter {
    jobs: SyncSender<Job>,
    done: Sender<Completion>,
    completions: Receiver<Completion>,
    db: Arc<Database>,
    epoch: u64,
    locks: Arc<Mutex<LockTable>>,
    ost_space: Arc<Mutex<OstSpace>>,
    overlay: Arc<RwLock<Overlay>>,
    generation: Arc<AtomicU64>,
    cache: TablesCache,
}

impl Submitter {
    /// Queues `req`; its completion (with `tag`) arrives on this submitter's queue once
    /// it is durable per the sync mode. Read-only requests are answered at once from a
    /// read transaction (readers never wait for the writer in redb).
    pub fn submit(&self, tag: u64, head: Head, req: Request) -> Result<(), SubmitError> {
        if let Err(e) = ns::validate(&req) {
            let _ = self.done.send(Completion {
                tag,
                result: Err(e),
            });
            return Ok(());
        }
        if head.epoch != self.epoch || req.is_read_only() {
            let ctx = ReadCtx {
                db: &self.db,
                overlay: &self.overlay,
                generation: &self.generation,
                cache: Some(&self.cache),
                epoch: self.epoch,
                ost_space: &self.ost_space,
            };
            let result = read_now(&ctx, &head, &req);
            let _ = self.done.send(Completion { tag, result });
            return Ok(());
        }
        if let Request::Lock(l) = &req {
            // Locks live in memory, never in the store: answered at once.
            let result = self
                .locks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .apply(l);
            let _ = self.done.send(Completion { tag, result });
            return Ok(());
        }
        self.send(Job {
            op: Op::Client(head, req),
            tag,
            done: self.done.clone(),
        })
    }

    pub fn submit_admin(&self, tag: u64, op: Admin) -> Result<(), SubmitError> {
        self.send(Job {
            op: Op::Admin(op),
            tag,
            done: self.done.clone(),
        })
    }

    fn send(&self, job: Job) -> Result<(), SubmitError> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => SubmitError::Busy,
            TrySendError::Disconnected(_) => SubmitError::Closed,
        })
    }

    /// A completion if one is ready.
    pub fn poll(&self) -> Option<Completion> {
        self.drop_stale_tables();
        self.completions.try_recv().ok()
    }

    /// Lets go of cached read tables once a commit made them stale: they hold a redb
    /// read transaction, which keeps the pages of its snapshot from being reused while
    /// the committer writes on.
    fn drop_stale_tables(&self) {
        let now = self.generation.load(Ordering::Relaxed);
        let mut cache = self.cache.borrow_mut();
        if cache.as_ref().is_some_and(|(g, _)| *g != now) {
            *cache = None;
        }
    }

    /// Waits up to `timeout` for a completion.
    pub fn wait(&self, timeout: Duration) -> Option<Completion> {
        self.completions.recv_timeout(timeout).ok()
    }

    /// Submits and waits for the result (blocking: for tools and tests, not engine cores;
    /// use it on a submitter with nothing else in flight, or it may return another
    /// request's completion).
    pub fn call(&self, head: &Head, req: Request) -> Result<Reply, i32> {
        self.submit(0, head.clone(), req).map_err(|_| errno::EIO)?;
        self.wait(Duration::from_secs(60))
            .map_or(Err(errno::EIO), |c| c.result)
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn read_now(r: &ReadCtx<'_>, head: &Head, req: &Request) -> Result<Reply, i32> {
    if head.epoch != r.epoch {
        return Err(errno::ESTALE);
    }
    ns::validate(req)?;
    let run = || -> Result<Reply, Fail> {
        // The overlay first, then the transaction: see `overlay`.
        let overlay = r.overlay.read().unwrap_or_else(|p| p.into_inner());
        let tables = read_tables(r)?;
        let view = Layered {
            overlay: &overlay,
            base: &*tables,
        };
        ns::read(
            &view,
            &Ctx {
                creds: &head.creds,
                now: now_ns(),
            },
            req,
        )
    };
    let reply = run().map_err(|f| match f {
        Fail::Errno(e) => e,
        Fail::Store(e) => {
            tracing::error!("MDT read: {e}");
            errno::EIO
        }
    })?;
    Ok(match reply {
        Reply::Statfs(s) => {
            let o = *r.ost_space.lock().unwrap_or_else(|p| p.into_inner());
            Reply::Statfs(Statfs {
                bytes_total: o.total,
                bytes_free: o.free,
                osts: o.osts,
                ..s
            })
        }
        other => other,
    })
}

/// Read tables as of the last commit (called with the overlay's lock held, so that no
/// commit happens meanwhile): the core's cached ones if no commit happened since they
/// were opened, else fresh ones (cached for the next read).
fn read_tables(r: &ReadCtx<'_>) -> Result<Arc<ReadTables>, StoreError> {
    let generation = r.generation.load(Ordering::Acquire);
    if let Some(cache) = r.cache {
        if let Some((g, t)) = cache.borrow().as_ref() {
            if *g == generation {
                return Ok(t.clone());
            }
        }
    }
    let tx = r.db.begin_read()?;
    let tables = Arc::new(ReadTables::open(&tx)?);
    if let Some(cache) = r.cache {
        *cache.borrow_mut() = Some((generation, tables.clone()));
    }
    Ok(tables)
}

/// Creates the tables and the root inode of a new MDT; checks the format of an old one.
fn format_if_new(db: &Database, spec: &StripeSpec) -> Result<(), MdtError> {
    let mut tx = db.begin_write().map_err(StoreError::from)?;
    tx.set_durability(Durability::Immediate)
        .map_err(StoreError::from)?;
    {
        let mut w = WriteTables::open(&tx)?;
        match w.view.meta_value("format")? {
            Some(FORMAT_VERSION) => {}
            Some(v) => return Err(MdtError::Format(v)),
            None => {
                w.put_inode(&root_inode(now_ns(), spec))?;
                w.put_meta("inodes", 1)?;
                w.put_meta("format", FORMAT_VERSION)?;
            }
        }
    }
    tx.commit().map_err(StoreError::from)?;
    Ok(())
}

/// Applies the log's records to the store, commits durably, empties the log.
fn replay(db: &Database, log: &mut OpLog, path: &Path) -> Result<(), MdtError> {
    let (records, torn) = log.records().map_err(io_err(path))?;
    if torn > 0 {
        tracing::warn!(
            bytes = torn,
            "MDT log: torn tail ignored (never acknowledged as durable)"
        );
    }
    if !records.is_empty() {
        let mut tx = db.begin_write().map_err(StoreError::from)?;
        tx.set_durability(Durability::Immediate)
            .map_err(StoreError::from)?;
        {
            let mut w = WriteTables::open(&tx)?;
            for (index, rec) in records.iter().enumerate() {
                for change in Redo::decode(rec).map_err(|why| MdtError::Log { index, why })? {
                    w.apply(change)?;
                }
            }
        }
        tx.commit().map_err(StoreError::from)?;
        tracing::info!(records = records.len(), "MDT log replayed");
    }
    log.truncate().map_err(io_err(path))
}

/// Replies of one batch, sent once the log holding the batch is on stable storage.
type Replies = Vec<(Sender<Completion>, Completion)>;

/// Sync mode's group commit, pipelined: the committer appends batch k+1 to the log while
/// this thread fdatasyncs batches up to k; one fdatasync covers every batch appended
/// before it started, and their replies go out after it.
struct Syncer {
    batches: SyncSender<Replies>,
    thread: JoinHandle<()>,
}

impl Syncer {
    fn start(
        log: &OpLog,
        path: &Path,
        broken: Arc<std::sync::atomic::AtomicBool>,
        stats: Arc<Stats>,
    ) -> Result<Syncer, MdtError> {
        let file = log.sync_handle().map_err(io_err(path))?;
        let (batches, rx) = mpsc::sync_channel::<Replies>(64);
        let thread = std::thread::Builder::new()
            .name("mdt-syncer".into())
            .spawn(move || {
                let mut waited = Instant::now();
                while let Ok(first) = rx.recv() {
                    let started = Instant::now();
                    let mut all = vec![first];
                    all.extend(rx.try_iter());
                    let synced = file.sync_data();
                    let ns = |d: Duration| d.as_nanos() as u64;
                    stats.log_syncs.fetch_add(1, Ordering::Relaxed);
                    stats
                        .log_sync_ns
                        .fetch_add(ns(started.elapsed()), Ordering::Relaxed);
                    stats
                        .log_wait_ns
                        .fetch_add(ns(started - waited), Ordering::Relaxed);
                    waited = Instant::now();
                    if let Err(e) = &synced {
                        tracing::error!("MDT log fdatasync: {e}");
                        broken.store(true, Ordering::SeqCst);
                    }
                    for (done, mut c) in all.into_iter().flatten() {
                        if synced.is_err() {
                            c.result = Err(errno::EIO);
                        }
                        let _ = done.send(c);
                    }
                }
            })
            .map_err(io_err(path))?;
        Ok(Syncer { batches, thread })
    }
}

struct Committer {
    /// Present in sync mode.
    syncer: Option<Syncer>,
    /// Set when the syncer failed: the committer stops (fail-stop).
    broken: Arc<std::sync::atomic::AtomicBool>,
    db: Arc<Database>,
    ns: Namespace,
    log: OpLog,
    log_path: PathBuf,
    interval: Duration,
    max_batch: usize,
    jobs: Receiver<Job>,
    /// Commits since the last durable one.
    dirty: bool,
    last_checkpoint: Instant,
    stats: Arc<Stats>,
    /// Replies saved since the last sweep of old ones.
    saved_since_sweep: u64,
    /// What the open transaction holds, for readers.
    overlay: Arc<RwLock<Overlay>>,
    /// Commits so far, for readers' cached tables.
    generation: Arc<AtomicU64>,
}

/// How long one write transaction stays open for more batches, at most.
const COMMIT_AFTER: Duration = Duration::from_millis(5);
/// How many operations one write transaction holds, at most.
const COMMIT_OPS: usize = 4096;

/// How long an idle committer polls its queue before it sleeps on it (while a
/// transaction is open): a dozen inter-arrival times of a busy stream of operations.
/// Alternating mdtest runs (2 tasks, shm, creates/s): sleeping at once 22.6-27.5k,
/// 30 us 20.8-38.1k, 100 us 27.4-60.6k, 400 us 29.5-68.2k (median 44.7k), 1 ms and
/// 5 ms no better than 400 us.
const POLL_FOR: Duration = Duration::from_micros(400);

impl Committer {
    fn run(mut self) -> Result<(), MdtError> {
        let result = self.serve();
        if let Some(s) = self.syncer.take() {
            drop(s.batches);
            let _ = s.thread.join();
        }
        result
    }

    fn serve(&mut self) -> Result<(), MdtError> {
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            let wait = self.interval.saturating_sub(self.last_checkpoint.elapsed());
            match self.jobs.recv_timeout(wait) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout) => {
                    self.checkpoint()?;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return self.checkpoint(),
            }
            let stop = self.run_transaction(&mut batch)?;
            if stop {
                return self.checkpoint_now();
            }
            if self.last_checkpoint.elapsed() >= self.interval {
                self.checkpoint()?;
            }
        }
    }

    /// One redb write transaction, starting with `batch`: every batch that arrives
    /// within [`COMMIT_AFTER`] (up to [`COMMIT_OPS`] operations) rides in it. Each
    /// batch is answered once it is in the log, its changes already in the overlay for
    /// readers; the transaction commits after the last one (durably, before a batch that
    /// raised an id range is answered). Returns whether a stop was asked.
    fn run_transaction(&mut self, batch: &mut Vec<Job>) -> Result<bool, MdtError> {
        let opened = Instant::now();
        let mut tx = self.db.begin_write().map_err(StoreError::from)?;
        tx.set_durability(Durability::None)
            .map_err(StoreError::from)?;
        let (mut ops, mut held) = (0, None);
        let mut stop;
        {
            let mut w = WriteTables::open(&tx)?;
            loop {
                // Group commit: everything queued meanwhile rides in the same batch.
                while batch.len() < self.max_batch {
                    match self.jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                if self.broken.load(Ordering::SeqCst) {
                    return Err(MdtError::Stopped);
                }
                stop = matches!(batch.last(), Some(Job { op: Op::Stop, .. }));
                if stop {
                    batch.pop();
                }
                ops += batch.len();
                let replies = match self.run_batch(&mut w, batch) {
                    Ok(r) => r,
                    Err(e) => {
                        // Fail-stop: the replies say EIO; the log holds every batch
                        // answered before, which a restart recovers.
                        tracing::error!("MDT batch failed, committer stops: {e}");
                        for job in batch.drain(..) {
                            let _ = job.done.send(Completion {
                                tag: job.tag,
                                result: Err(errno::EIO),
                            });
                        }
                        return Err(e);
                    }
                };
                // A raised id range must be durable before any id from it is shown.
                if std::mem::take(&mut self.ns.ids.raised) {
                    held = Some(replies);
                    break;
                }
                self.dispatch(replies)?;
                let left = COMMIT_AFTER.saturating_sub(opened.elapsed());
                if stop || ops >= COMMIT_OPS || left.is_zero() {
                    break;
                }
                match self.next_job(opened + COMMIT_AFTER) {
                    Ok(job) => batch.push(job),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        stop = true;
                        break;
                    }
                }
            }
        }
        let durable = held.is_some();
        if durable {
            tx.set_durability(Durability::Immediate)
                .map_err(StoreError::from)?;
        }
        {
            let mut overlay = self.overlay.write().unwrap_or_else(|p| p.into_inner());
            tx.commit().map_err(StoreError::from)?;
            overlay.clear();
            self.generation.fetch_add(1, Ordering::Release);
        }
        if durable {
            self.log.truncate().map_err(io_err(&self.log_path))?;
            self.dirty = false;
        }
        if let Some(replies) = held {
            self.dispatch(replies)?;
        }
        Ok(stop)
    }

    /// The next job before `until`: polled for [`POLL_FOR`], with the CPU offered to
    /// others between tries, then waited for asleep. A sleeping committer must be
    /// woken by the core that queues the job (a futex wake on the core's thread, then
    /// a scheduling delay), which costs more than a few polls while operations keep
    /// coming; but a committer that polled until the transaction's end burned up to a
    /// CPU for a trickle of operations, the CPU a FUSE daemon or the clients needed.
    fn next_job(&self, until: Instant) -> Result<Job, RecvTimeoutError> {
        let poll_until = until.min(Instant::now() + POLL_FOR);
        loop {
            match self.jobs.try_recv() {
                Ok(job) => return Ok(job),
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(RecvTimeoutError::Disconnected)
                }
                Err(mpsc::TryRecvError::Empty) if Instant::now() >= poll_until => {
                    return self
                        .jobs
                        .recv_timeout(until.saturating_duration_since(Instant::now()));
                }
                Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
            }
        }
    }

    /// Runs one batch in the open transaction: its changes go to the log and to the
    /// readers' overlay; returns its replies, to be sent once that may be.
    fn run_batch(
        &mut self,
        w: &mut WriteTables<'_>,
        batch: &mut Vec<Job>,
    ) -> Result<Replies, MdtError> {
        let now = now_ns();
        let mut results = Vec::with_capacity(batch.len());
        for job in batch.iter() {
            results.push(self.execute(w, job, now)?);
        }
        let redo = std::mem::take(&mut w.redo);
        let applied = std::mem::take(&mut w.applied);
        if !redo.is_empty() {
            self.log
                .append(&redo.bytes)
                .map_err(io_err(&self.log_path))?;
            self.dirty = true;
            let mut overlay = self.overlay.write().unwrap_or_else(|p| p.into_inner());
            for c in applied {
                overlay.record(c);
            }
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .ops
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(batch
            .drain(..)
            .zip(results)
            .map(|(job, result)| {
                (
                    job.done,
                    Completion {
                        tag: job.tag,
                        result,
                    },
                )
            })
            .collect())
    }

    /// Sends a batch's replies: at once in default mode (the batch is in the log, in
    /// the kernel's hands); in sync mode after an fdatasync that started after it was
    /// appended (a durable store commit also covers it; one more is harmless).
    fn dispatch(&self, replies: Replies) -> Result<(), MdtError> {
        match &self.syncer {
            Some(s) => s.batches.send(replies).map_err(|_| MdtError::Stopped),
            None => {
                for (done, c) in replies {
                    let _ = done.send(c);
                }
                Ok(())
            }
        }
    }

    /// One operation; an errno is its result, a store error fails the batch.
    fn execute(
        &mut self,
        w: &mut WriteTables<'_>,
        job: &Job,
        now: i64,
    ) -> Result<Result<Reply, i32>, MdtError> {
        let outcome = match &job.op {
            Op::Client(head, req) => match head.replay {
                Some(key) if !req.is_read_only() => self.write_once(w, head, key, req, now),
                _ => self.write(w, head, req, now),
            },
            Op::Admin(Admin::SetOsts(osts)) => {
                self.ns.osts = super::alloc::OstChooser::new(osts.clone());
                Ok(Reply::Done)
            }
            Op::Admin(Admin::ReclaimOrphans) => self.ns.reclaim_orphans(w).map(|_| Reply::Done),
            Op::Admin(Admin::ForgetDestroyed(inos)) => {
                let mut r = Ok(Reply::Done);
                for ino in inos {
                    if let Err(e) = w.apply(super::redo::Change::DelDestroy(*ino)) {
                        r = Err(Fail::Store(e));
                        break;
                    }
                }
                r
            }
            Op::Stop => Ok(Reply::Done),
            Op::Admin(Admin::Checkpoint) => {
                self.ns.ids.raised = true; // makes this batch's commit durable
                Ok(Reply::Done)
            }
        };
        match outcome {
            Ok(reply) => Ok(Ok(reply)),
            Err(Fail::Errno(e)) => Ok(Err(e)),
            Err(Fail::Store(e)) => Err(e.into()),
        }
    }

    fn write(
        &mut self,
        w: &mut WriteTables<'_>,
        head: &Head,
        req: &Request,
        now: i64,
    ) -> ns::Res<Reply> {
        let ctx = Ctx {
            creds: &head.creds,
            now,
        };
        self.ns.write(w, &ctx, req)
    }

    /// A changing request with a replay key: answered from the reply cache if it is a
    /// retry of the key's last request, else applied and its answer saved with it.
    fn write_once(
        &mut self,
        w: &mut WriteTables<'_>,
        head: &Head,
        key: ReplayKey,
        req: &Request,
        now: i64,
    ) -> ns::Res<Reply> {
        if let Some(row) = w.saved_reply(key.client, key.tag)? {
            let saved = SavedReply::decode(&row).ok_or(StoreError::CorruptRecord("saved reply"))?;
            if saved.xid == key.xid {
                self.stats.reconstructed.fetch_add(1, Ordering::Relaxed);
                return saved.result.map_err(Fail::Errno);
            }
        }
        let outcome = self.write(w, head, req, now);
        let result = match &outcome {
            Ok(reply) => Ok(reply.clone()),
            Err(Fail::Errno(e)) => Err(*e),
            Err(Fail::Store(_)) => return outcome,
        };
        let row = SavedReply {
            xid: key.xid,
            at: now,
            result,
        };
        w.apply(Change::PutReply(key.client, key.tag, row.encode()))?;
        self.saved_since_sweep += 1;
        if self.saved_since_sweep >= SWEEP_EVERY {
            self.saved_since_sweep = 0;
            self.sweep_replies(w, now)?;
        }
        outcome
    }

    /// Drops saved replies of clients that stopped asking long ago.
    fn sweep_replies(&mut self, w: &mut WriteTables<'_>, now: i64) -> Result<(), StoreError> {
        let old = w.old_replies(|row| {
            SavedReply::decode(row).is_none_or(|r| SavedReply::expired(r.at, now))
        })?;
        for (client, tag) in old {
            w.apply(Change::DelReply(client, tag))?;
        }
        Ok(())
    }

    fn checkpoint_now(&mut self) -> Result<(), MdtError> {
        self.dirty = true;
        self.checkpoint()
    }

    fn checkpoint(&mut self) -> Result<(), MdtError> {
        if self.dirty {
            let mut tx = self.db.begin_write().map_err(StoreError::from)?;
            tx.set_durability(Durability::Immediate)
                .map_err(StoreError::from)?;
            tx.commit().map_err(StoreError::from)?;
            self.log.truncate().map_err(io_err(&self.log_path))?;
            self.dirty = false;
            self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        }
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}
