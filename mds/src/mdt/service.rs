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
//!
//! Here: the MDT's configuration, errors and public types, and [`Mdt`] (open, format,
//! log replay, shutdown). Submitters and reads are in `submitter`, the committer thread
//! in `committer`, sync mode's fdatasync thread in `syncer`.

use super::check::CheckBoard;
use super::committer::Committer;
use super::locks::LockTable;
use super::ns::{root_inode, Namespace};
use super::overlay::Overlay;
use super::redo::{OpLog, Redo};
use super::replication::Replication;
use super::store::{StoreError, View, WriteTables, DESTROY};
use super::submitter::{read_now, ReadCtx};
use super::syncer::Syncer;
use nacre_proto::layout::{FileLayout, StripeSpec};
use nacre_proto::meta::{Head, Reply, Request};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{self, Sender, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use super::submitter::Submitter;

/// The files of `db` (as replayed) that have a stale copy.
fn scan_stale(db: &Database) -> Result<std::collections::BTreeSet<u64>, MdtError> {
    let tx = db.begin_read().map_err(StoreError::from)?;
    let inodes = tx
        .open_table(super::store::INODES)
        .map_err(StoreError::from)?;
    let mut out = std::collections::BTreeSet::new();
    for row in inodes.iter().map_err(StoreError::from)? {
        let (k, v) = row.map_err(StoreError::from)?;
        let i = super::inode::Inode::decode(k.value(), v.value()).map_err(StoreError::from)?;
        if i.file_layout()
            .is_some_and(|l| l.mirrors.iter().any(|m| m.stale))
        {
            out.insert(i.ino);
        }
    }
    Ok(out)
}

/// The files with an in-sync copy that has an object on OST `ost`, in inode order.
pub fn files_on_ost(tx: &redb::ReadTransaction, ost: u32) -> Result<Vec<u64>, MdtError> {
    let inodes = tx
        .open_table(super::store::INODES)
        .map_err(StoreError::from)?;
    let mut out = Vec::new();
    for row in inodes.iter().map_err(StoreError::from)? {
        let (k, v) = row.map_err(StoreError::from)?;
        let i = super::inode::Inode::decode(k.value(), v.value()).map_err(StoreError::from)?;
        let on_ost = |l: nacre_proto::layout::FileLayout| {
            l.mirrors
                .iter()
                .any(|m| !m.stale && m.stripes.objects.iter().any(|o| o.ost == ost))
        };
        if i.file_layout().is_some_and(on_ost) {
            out.push(i.ino);
        }
    }
    Ok(out)
}

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
    /// Open recovery: an MDS served this MDT before, and its clients replay their
    /// opens; orphans wait for `Admin::ReclaimOrphans`, which ends the window.
    pub recovery: bool,
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
            recovery: false,
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

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MdtError + '_ {
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
    /// The cluster map changed: new files use these OSTs (where they are, whether they
    /// serve).
    SetOsts(Vec<super::alloc::OstPlace>),
    /// After the recovery window: destroy unlinked files that nobody re-opened.
    ReclaimOrphans,
    /// Close the handles of every client not heard from for this long (the open
    /// lease, `nacre_proto::meta::OPEN_LEASE`); submitted every second by the server.
    EvictSilent(Duration),
    /// The OSTs removed these files' objects: forget them.
    ForgetDestroyed(Vec<u64>),
    /// Make everything so far durable now.
    Checkpoint,
    /// The consistency checker begins: fence the OSTs' object id ranges and note the
    /// files open (`CheckBoard::take_fence`).
    CheckStart,
    /// The checker's scan is over: note the files open now (`CheckBoard::take_open_now`).
    CheckOpens,
    /// A repair the checker found needed.
    Repair(Repair),
    /// The rebuild starts copying a file's stale copies (a resync, as root).
    ResyncStart(u64),
    /// The rebuild copied mirror `mirror` of `ino`: in sync, if nothing spoiled it.
    MirrorInSync { ino: u64, mirror: u32 },
    /// OST `ost` was replaced: the copies of these files there are lost (or old), so
    /// each in-sync copy with an object there is marked stale, but the last in sync.
    CopiesLost { ost: u32, inos: Vec<u64> },
    /// The data mover's changes (data repositories).
    Hsm(super::hsm::HsmAdmin),
}

/// The consistency checker's repairs (`mdt/repair.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Set a link count to what the names say, if it still is `from`.
    SetLinks { ino: u64, from: u32, to: u32 },
    /// Link an inode no name points at under `/lost+found`.
    Adopt { ino: u64, nlink: u32 },
    /// Make a file under `/lost+found` of an object no file names.
    AdoptObject { ost: u32, oid: u64, size: u64 },
    /// Raise an OST's id mark above an object id a file names.
    RaiseMark { ost: u32, oid: u64 },
}

pub(super) enum Op {
    Client(Head, Request),
    Admin(Admin),
    /// Sent by [`Mdt`] when it is dropped: finish the queue before it, checkpoint, exit.
    Stop,
}

pub(super) struct Job {
    pub(super) op: Op,
    pub(super) tag: u64,
    pub(super) done: Sender<Completion>,
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
    /// Handles closed because their client fell silent for the open lease.
    pub evicted: AtomicU64,
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
    /// When each client was last heard from, noted by the submitters of all cores.
    heard: Arc<super::heard::Heard>,
    /// The OSTs' space as the server last saw it in the cluster map, for statfs.
    ost_space: Arc<Mutex<OstSpace>>,
    /// What the committer's open transaction holds, for readers.
    overlay: Arc<RwLock<Overlay>>,
    /// Commits so far (grows under the overlay's lock): a reader's tables opened at
    /// the same generation are still current.
    generation: Arc<AtomicU64>,
    /// The consistency checker's runs.
    board: Arc<CheckBoard>,
    /// Files with a stale copy, for the rebuild (kept by the committer).
    stale: StaleFiles,
    /// Where each batch's redo record goes for a standby.
    repl: Arc<Replication>,
    /// What root of a client acts as (from the cluster map).
    root_squash: Arc<crate::identity::RootSquash>,
    /// Where data repository requests go (the server's data mover), once it runs.
    hsm: HsmInbox,
}

/// The data mover's queue, shared with every submitter and the committer.
pub(super) type HsmInbox = Arc<Mutex<Option<Sender<HsmEvent>>>>;

/// What reaches the data mover: clients' requests, and what the namespace noted.
#[derive(Debug)]
pub enum HsmEvent {
    Request(Box<HsmJob>),
    Noted(super::hsm::Noted),
}

/// A data repository request on its way to the server's data mover, which answers it
/// on the submitter's completion queue when it is done (a load may take a while; the
/// engine core does not wait for it).
#[derive(Debug)]
pub struct HsmJob {
    pub tag: u64,
    pub creds: nacre_proto::meta::Creds,
    pub req: nacre_proto::meta::hsm::HsmRequest,
    pub done: Sender<Completion>,
}

impl HsmJob {
    pub fn answer(self, result: Result<Reply, i32>) {
        let _ = self.done.send(Completion {
            tag: self.tag,
            result,
        });
    }
}

/// The inodes of files with a stale copy: found by a scan at open, then kept by every
/// change of a mirror's state.
pub type StaleFiles = Arc<Mutex<std::collections::BTreeSet<u64>>>;

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
        // A standby's log set aside for folding holds older records than the log.
        let fold = cfg.dir.join(super::replication::FOLD_FILE);
        if fold.exists() {
            super::replication::fold_aside(&db, &fold)?;
        }
        replay(&db, &mut log, &log_path)?;
        let (tx, rx) = mpsc::sync_channel(cfg.queue_depth.max(1));
        let stats = Arc::new(Stats::default());
        let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let repl: Arc<Replication> = Arc::default();
        let syncer = match cfg.mode {
            SyncMode::Default => None,
            SyncMode::Sync => Some(Syncer::start(
                &log,
                &log_path,
                broken.clone(),
                stats.clone(),
                repl.clone(),
            )?),
        };
        let overlay: Arc<RwLock<Overlay>> = Arc::default();
        let generation: Arc<AtomicU64> = Arc::default();
        let board: Arc<CheckBoard> = Arc::default();
        let heard: Arc<super::heard::Heard> = Arc::default();
        let stale: StaleFiles = Arc::new(Mutex::new(scan_stale(&db)?));
        let hsm: HsmInbox = Arc::default();
        let committer = Committer {
            hsm: hsm.clone(),
            board: board.clone(),
            syncer,
            broken,
            db: db.clone(),
            ns: Namespace {
                recovering: cfg.recovery,
                stale: stale.clone(),
                ..Namespace::new(cfg.osts.clone(), cfg.default_spec, cfg.epoch)
            },
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
            repl: repl.clone(),
            last_seq: 0,
            heard: heard.clone(),
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
            root_squash: Arc::default(),
            hsm,
            overlay,
            generation,
            board,
            stale,
            repl,
            heard,
        })
    }

    /// The standby's side of the MDT: records to ship, acknowledgements.
    pub fn replication(&self) -> &Arc<Replication> {
        &self.repl
    }

    /// The files with a stale copy now (at most `max`, in inode order from `from`).
    pub fn stale_files(&self, from: u64, max: usize) -> Vec<u64> {
        let set = self.stale.lock().unwrap_or_else(|p| p.into_inner());
        set.range(from..).take(max).copied().collect()
    }

    /// Whether `ino` has a stale copy now.
    pub fn is_stale(&self, ino: u64) -> bool {
        self.stale
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&ino)
    }

    /// How many files have a stale copy now.
    pub fn stale_count(&self) -> usize {
        self.stale.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// `ino` is gone or has no stale copy any more (the rebuild found out).
    pub fn forget_stale(&self, ino: u64) {
        self.stale
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ino);
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
            board: self.board.clone(),
            hsm: self.hsm.clone(),
            heard: self.heard.clone(),
        }
    }

    /// The consistency checker's runs: started by clients (MDS_CHECK), run by the
    /// server's checker thread.
    pub fn check_board(&self) -> &Arc<CheckBoard> {
        &self.board
    }

    /// A snapshot of the namespace for the checker: fences the object id ranges (the
    /// fence and the files open then go to the board), makes everything before it
    /// durable, then opens a read transaction, which sees all of it.
    pub fn check_snapshot(&self) -> Result<redb::ReadTransaction, MdtError> {
        self.snapshot_after(Some(Admin::CheckStart))
    }

    /// A read transaction that sees every operation submitted before this call (made
    /// durable first).
    pub fn snapshot(&self) -> Result<redb::ReadTransaction, MdtError> {
        self.snapshot_after(None)
    }

    /// `first` (if any) then a checkpoint, each answered, then a read transaction.
    fn snapshot_after(&self, first: Option<Admin>) -> Result<redb::ReadTransaction, MdtError> {
        let sub = self.submitter();
        for (tag, op) in first.into_iter().chain([Admin::Checkpoint]).enumerate() {
            let tag = tag as u64 + 1;
            sub.submit_admin(tag, op).map_err(|_| MdtError::Stopped)?;
            match sub.wait_for(tag, Duration::from_secs(60)) {
                Some(Completion { result: Ok(_), .. }) => {}
                _ => return Err(MdtError::Stopped),
            }
        }
        Ok(self.db.begin_read().map_err(StoreError::from)?)
    }

    /// Answers a read-only request on the calling thread.
    pub fn read(&self, head: &Head, req: &Request) -> Result<Reply, i32> {
        read_now(&self.read_ctx(), head, req)
    }

    /// What a read on the calling thread needs (no cached tables).
    fn read_ctx(&self) -> ReadCtx<'_> {
        ReadCtx {
            db: &self.db,
            overlay: &self.overlay,
            generation: &self.generation,
            cache: None,
            epoch: self.epoch,
            ost_space: &self.ost_space,
        }
    }

    /// Sends data repository requests to `inbox` (None: answered ENOSYS).
    pub fn set_hsm(&self, inbox: Option<Sender<HsmEvent>>) {
        *self.hsm.lock().unwrap_or_else(|p| p.into_inner()) = inbox;
    }

    /// Inode `ino` as the last operation left it.
    pub fn inode(&self, ino: u64) -> Result<Option<super::Inode>, i32> {
        super::submitter::read_inode(&self.read_ctx(), ino)
    }

    /// The data repository associations, as the last operation left them.
    pub fn repos(&self) -> Result<Vec<(u32, super::hsm::RepoRecord)>, MdtError> {
        // The overlay first, then the transaction (see `overlay`).
        let overlay = self.overlay.read().unwrap_or_else(|p| p.into_inner());
        let tx = self.db.begin_read().map_err(StoreError::from)?;
        let mut rows: std::collections::BTreeMap<u32, Vec<u8>> = Default::default();
        match tx.open_table(super::store::REPOS) {
            Ok(table) => {
                for row in table.iter().map_err(StoreError::from)? {
                    let (k, v) = row.map_err(StoreError::from)?;
                    rows.insert(k.value(), v.value().to_vec());
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(StoreError::from(e).into()),
        }
        for (id, row) in overlay.repos() {
            match row {
                Some(r) => drop(rows.insert(*id, r.clone())),
                None => drop(rows.remove(id)),
            }
        }
        rows.into_iter()
            .map(|(id, r)| {
                super::hsm::RepoRecord::decode(&r)
                    .map(|rec| (id, rec))
                    .map_err(|_| StoreError::CorruptRecord("repository association").into())
            })
            .collect()
    }

    /// The root squash setting requests are admitted under.
    pub fn root_squash(&self) -> &crate::identity::RootSquash {
        &self.root_squash
    }

    /// What statfs reports of the OSTs from now on (the server calls this with every
    /// cluster map it fetches).
    pub fn set_ost_space(&self, space: OstSpace) {
        *self.ost_space.lock().unwrap_or_else(|p| p.into_inner()) = space;
    }

    /// Files whose objects the OSTs should remove: (ino, layout), at most `max`.
    pub fn pending_destroys(&self, max: usize) -> Result<Vec<(u64, FileLayout)>, MdtError> {
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
            let layout =
                FileLayout::decode(&row).map_err(|_| StoreError::CorruptRecord("destroy row"))?;
            out.push((ino, layout));
        }
        Ok(out)
    }

    /// The files whose objects may be destroyed now: the `destroy` rows already durable
    /// (checkpointed to redb) and not changed since, at most `max`. An unlink that a
    /// crash could still undo (only in the operation log's last interval, or not yet
    /// committed) must not lose its file's objects. Rows of inodes above `after` only,
    /// when given (so that rows that keep failing do not hide the ones behind them).
    pub fn durable_destroys(
        &self,
        max: usize,
        after: Option<u64>,
    ) -> Result<Vec<(u64, FileLayout)>, MdtError> {
        let overlay = self.overlay.read().unwrap_or_else(|p| p.into_inner());
        let changed = overlay.destroys();
        let tx = self.db.begin_read().map_err(StoreError::from)?;
        let t = tx.open_table(DESTROY).map_err(StoreError::from)?;
        let mut out = Vec::new();
        let rows = match after {
            Some(ino) if ino < u64::MAX => t.range(ino + 1..),
            Some(_) => return Ok(out),
            None => t.range(0..),
        };
        for row in rows.map_err(StoreError::from)? {
            if out.len() == max {
                break;
            }
            let (k, v) = row.map_err(StoreError::from)?;
            if changed.contains_key(&k.value()) {
                continue;
            }
            let layout = FileLayout::decode(v.value())
                .map_err(|_| StoreError::CorruptRecord("destroy row"))?;
            out.push((k.value(), layout));
        }
        Ok(out)
    }

    /// The epoch this MDT serves under (what a request's head must carry).
    pub fn epoch(&self) -> u64 {
        self.epoch
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

pub(super) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
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
pub(super) fn replay(db: &Database, log: &mut OpLog, path: &Path) -> Result<(), MdtError> {
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
