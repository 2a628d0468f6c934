//! The committer thread: batches of submitted operations in one store transaction and
//! one log append, replies once the sync mode allows, and checkpoints.

use super::check::{CheckBoard, Fence};
use super::ns::{self, Ctx, Fail, Namespace};
use super::overlay::Overlay;
use super::redo::{Change, OpLog};
use super::replication::Replication;
use super::replies::{SavedReply, SWEEP_EVERY};
use super::service::{io_err, now_ns, Admin, Completion, Job, MdtError, Op, Repair, Stats};
use super::store::{StoreError, WriteTables};
use super::syncer::{Replies, Syncer};
use nacre_proto::meta::{errno, Head, ReplayKey, Reply, Request};
use redb::{Database, Durability};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub(super) struct Committer {
    /// Present in sync mode.
    pub(super) syncer: Option<Syncer>,
    /// Set when the syncer failed: the committer stops (fail-stop).
    pub(super) broken: Arc<std::sync::atomic::AtomicBool>,
    pub(super) db: Arc<Database>,
    pub(super) ns: Namespace,
    pub(super) log: OpLog,
    pub(super) log_path: PathBuf,
    pub(super) interval: Duration,
    pub(super) max_batch: usize,
    pub(super) jobs: Receiver<Job>,
    /// Commits since the last durable one.
    pub(super) dirty: bool,
    pub(super) last_checkpoint: Instant,
    pub(super) stats: Arc<Stats>,
    /// Replies saved since the last sweep of old ones.
    pub(super) saved_since_sweep: u64,
    /// What the open transaction holds, for readers.
    pub(super) overlay: Arc<RwLock<Overlay>>,
    /// Commits so far, for readers' cached tables.
    pub(super) generation: Arc<AtomicU64>,
    /// Where the consistency checker's fences go.
    pub(super) board: Arc<CheckBoard>,
    /// Where each batch's redo record goes for a standby.
    pub(super) repl: Arc<Replication>,
    /// The number of the last batch's redo record.
    pub(super) last_seq: u64,
    /// Where the namespace's notes for the data mover go.
    pub(super) hsm: super::service::HsmInbox,
    /// When each client was last heard from (the open lease).
    pub(super) heard: Arc<super::heard::Heard>,
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
    pub(super) fn run(mut self) -> Result<(), MdtError> {
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
            self.last_seq = self.repl.publish(&redo.bytes);
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
    fn dispatch(&mut self, replies: Replies) -> Result<(), MdtError> {
        if !self.ns.noted.is_empty() {
            let inbox = self.hsm.lock().unwrap_or_else(|p| p.into_inner());
            for n in self.ns.noted.drain(..) {
                if let Some(tx) = inbox.as_ref() {
                    let _ = tx.send(super::service::HsmEvent::Noted(n));
                }
            }
        }
        match &self.syncer {
            Some(s) => s
                .batches
                .send((self.last_seq, replies))
                .map_err(|_| MdtError::Stopped),
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
            Op::Admin(Admin::SetOsts(places)) => {
                self.ns.osts = super::alloc::OstChooser::new(places.clone());
                Ok(Reply::Done)
            }
            Op::Admin(admin @ (Admin::CheckStart | Admin::CheckOpens)) => {
                self.check_fence(w, admin == &Admin::CheckStart)
            }
            Op::Admin(Admin::Repair(r)) => self.repair(w, r, now),
            Op::Admin(Admin::ResyncStart(ino)) => {
                self.as_root(w, now, &Request::ResyncStart { ino: *ino })
            }
            Op::Admin(Admin::MirrorInSync { ino, mirror }) => {
                let req = Request::MirrorState {
                    ino: *ino,
                    mirror: *mirror,
                    stale: false,
                };
                self.as_root(w, now, &req)
            }
            Op::Admin(Admin::CopiesLost { ost, inos }) => {
                self.ns.copies_lost(w, *ost, inos, now).map(|_| Reply::Done)
            }
            Op::Admin(Admin::Hsm(op)) => self.ns.hsm_admin(w, now, op),
            Op::Admin(Admin::ReclaimOrphans) => self.ns.reclaim_orphans(w).map(|_| Reply::Done),
            Op::Admin(Admin::EvictSilent(lease)) => self.evict_silent(w, *lease),
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
            client: head.replay.map_or(0, |k| k.client),
        };
        self.ns.write(w, &ctx, req)
    }

    /// Notes the files open now for the checker and, at its start, fences the OSTs'
    /// object id ranges (see `check`).
    fn check_fence(&mut self, w: &mut WriteTables<'_>, start: bool) -> ns::Res<Reply> {
        let open = self.ns.opens.inos();
        if start {
            let osts = self.ns.osts.osts().to_vec();
            let marks = self.ns.ids.fence(&w.view, &osts)?;
            self.board.set_fence(Fence { marks, open });
        } else {
            self.board.set_open_now(open);
        }
        Ok(Reply::Done)
    }

    /// Closes the handles of the clients silent for `lease`, as Lustre evicts a client
    /// that stopped pinging: a killed client's opens would otherwise keep its unlinked
    /// files (and their space) until the next restart.
    fn evict_silent(&mut self, w: &mut WriteTables<'_>, lease: Duration) -> ns::Res<Reply> {
        let now = Instant::now();
        let silent: Vec<u64> = self
            .ns
            .opens
            .holders()
            .filter(|&c| self.heard.silent(c, lease, now))
            .collect();
        for client in silent {
            let closed = self.ns.evict(w, client)?;
            self.stats
                .evicted
                .fetch_add(closed as u64, Ordering::Relaxed);
            tracing::warn!(
                "client {client:#x} silent for over {lease:?}: its {closed} open file(s) closed"
            );
        }
        let holding: std::collections::HashSet<u64> = self.ns.opens.holders().collect();
        self.heard
            .forget_silent(lease, now, |c| holding.contains(&c));
        Ok(Reply::Done)
    }

    /// A request of the server itself (the rebuild), with root's rights.
    fn as_root(&mut self, w: &mut WriteTables<'_>, now: i64, req: &Request) -> ns::Res<Reply> {
        let root = nacre_proto::meta::Creds::root();
        let c = Ctx {
            creds: &root,
            now,
            client: 0,
        };
        self.ns.write(w, &c, req)
    }

    fn repair(&mut self, w: &mut WriteTables<'_>, r: &Repair, now: i64) -> ns::Res<Reply> {
        let root = nacre_proto::meta::Creds::root();
        let c = Ctx {
            creds: &root,
            now,
            client: 0,
        };
        match *r {
            Repair::SetLinks { ino, from, to } => self.ns.set_links(w, ino, from, to),
            Repair::Adopt { ino, nlink } => self.ns.adopt(w, &c, ino, nlink),
            Repair::AdoptObject { ost, oid, size } => self.ns.adopt_object(w, &c, ost, oid, size),
            Repair::RaiseMark { ost, oid } => self.ns.raise_mark(w, ost, oid),
        }
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
