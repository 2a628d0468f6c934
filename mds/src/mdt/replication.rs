//! The MDT's side of a standby MDS: every batch's redo record, numbered in log order,
//! goes to one subscriber (the shipper, `crate::standby`), which sends it on and reports
//! the standby's acknowledgements here.
//!
//! In sync mode a reply leaves only once its batch is on stable storage here *and*, while
//! a standby is **named** (the MGS was told it holds every acknowledged operation), once
//! the standby acknowledged it. A standby that stops acknowledging is dropped: replies
//! wait until the server has told the MGS it has no standby any more
//! ([`Replication::out_asked`], [`Replication::confirm_out`]), so the MGS never lets a
//! standby that lacks an acknowledged operation take the role over.

use super::redo::{Change, OpLog, Redo};
use super::service::{io_err, replay, MdtError, DB_FILE, LOG_FILE};
use super::store::{StoreError, WriteTables};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One batch's redo record and its number.
pub type Record = (u64, Arc<Vec<u8>>);

/// Where a standby builds the snapshot's store before it goes into place.
const SNAPSHOT_FILE: &str = "mdt.redb.standby";
/// A standby's log set aside while it is folded into the store (older than the log).
pub(super) const FOLD_FILE: &str = "mdt.log.fold";

/// How long a sync-mode reply waits for the standby's acknowledgement before the
/// standby is dropped.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Replication {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    sender: Option<SyncSender<Record>>,
    /// The last record number given out.
    seq: u64,
    /// The last record the standby holds.
    acked: u64,
    /// The MGS may be told (or was told) that the standby holds every acknowledged
    /// operation: sync-mode replies wait for its acknowledgements.
    named: bool,
    /// The standby stopped acknowledging: the MGS must hear it is out before more
    /// sync-mode replies leave.
    out_asked: bool,
}

impl Replication {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new subscriber, replacing any other; records beyond `depth` unread drop it.
    /// Also the number of the last record before it: a snapshot taken after this call
    /// holds that one and every earlier one.
    pub fn subscribe(&self, depth: usize) -> (Receiver<Record>, u64) {
        let (tx, rx) = mpsc::sync_channel(depth.max(1));
        let mut s = self.lock();
        s.sender = Some(tx);
        // Acknowledgements count from this subscriber's.
        s.acked = 0;
        (rx, s.seq)
    }

    /// The subscriber is gone (its connection failed).
    pub fn unsubscribe(&self) {
        let mut s = self.lock();
        s.sender = None;
        self.lose(&mut s);
    }

    /// Numbers one batch's record and hands it to the subscriber; its number.
    pub(super) fn publish(&self, bytes: &[u8]) -> u64 {
        let mut s = self.lock();
        s.seq += 1;
        let seq = s.seq;
        if let Some(tx) = &s.sender {
            match tx.try_send((seq, Arc::new(bytes.to_vec()))) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    // Too far behind: a standby that cannot keep up is not one.
                    tracing::warn!("standby dropped: it fell {} records behind", seq - s.acked);
                    s.sender = None;
                    self.lose(&mut s);
                }
            }
        }
        seq
    }

    /// The last record number given out.
    pub fn seq(&self) -> u64 {
        self.lock().seq
    }

    /// The standby holds every record up to `seq`.
    pub fn ack(&self, seq: u64) {
        let mut s = self.lock();
        s.acked = s.acked.max(seq);
        self.changed.notify_all();
    }

    pub fn acked(&self) -> u64 {
        self.lock().acked
    }

    /// From now on sync-mode replies wait for the standby (call before the MGS hears
    /// of it, and before the standby proved it caught up).
    pub fn name(&self) {
        let mut s = self.lock();
        if s.sender.is_some() {
            s.named = true;
        }
    }

    pub fn is_named(&self) -> bool {
        let s = self.lock();
        s.named && !s.out_asked
    }

    /// Whether the server must tell the MGS that there is no standby, then call
    /// [`Replication::confirm_out`].
    pub fn out_asked(&self) -> bool {
        self.lock().out_asked
    }

    /// The MGS acknowledged a report without the standby.
    pub fn confirm_out(&self) {
        let mut s = self.lock();
        s.named = false;
        s.out_asked = false;
        self.changed.notify_all();
    }

    fn lose(&self, s: &mut State) {
        if s.named {
            s.out_asked = true;
        }
        self.changed.notify_all();
    }

    /// Sync mode, before the replies of batches up to `seq` leave: waits until a named
    /// standby holds them, or, if it does not within [`ACK_TIMEOUT`], until the MGS has
    /// heard it is dropped.
    pub(super) fn wait_for_standby(&self, seq: u64) {
        let mut s = self.lock();
        let deadline = Instant::now() + ACK_TIMEOUT;
        loop {
            if !s.named || (!s.out_asked && s.acked >= seq) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !s.out_asked && left.is_zero() {
                tracing::warn!(
                    "standby dropped: record {seq} not acknowledged within {ACK_TIMEOUT:?}"
                );
                s.sender = None;
                self.lose(&mut s);
                continue;
            }
            let wait = match s.out_asked {
                true => Duration::from_millis(100),
                false => left,
            };
            s = self
                .changed
                .wait_timeout(s, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Every row of the snapshot `tx` as redo records of about `chunk` bytes each, given
/// to `emit` in turn: replayed onto an empty store they make the same store.
pub fn dump(
    tx: &redb::ReadTransaction,
    chunk: usize,
    mut emit: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<(), MdtError> {
    use super::store::{DENTRIES, DESTROY, DIRSEQ, INODES, META, ORPHANS, REPLIES};
    use redb::ReadableTable;
    let mut redo = Redo::default();
    let mut push = |c: Change| -> std::io::Result<()> {
        redo.push(&c);
        if redo.bytes.len() >= chunk {
            emit(&std::mem::take(&mut redo.bytes))?;
        }
        Ok(())
    };
    let io = |e: std::io::Error| MdtError::Io {
        path: "standby connection".into(),
        source: e,
    };
    macro_rules! rows {
        ($table:expr, |$k:ident, $v:ident| $change:expr) => {{
            let t = tx.open_table($table).map_err(StoreError::from)?;
            for row in t.iter().map_err(StoreError::from)? {
                let (k, v) = row.map_err(StoreError::from)?;
                let ($k, $v) = (k.value(), v.value());
                push($change).map_err(io)?;
            }
        }};
    }
    rows!(META, |k, v| Change::PutMeta(k.to_string(), v));
    rows!(INODES, |k, v| Change::PutInode(k, v.to_vec()));
    rows!(DENTRIES, |k, v| Change::PutDentry(
        k.0,
        k.1.to_vec(),
        v.to_vec()
    ));
    rows!(DIRSEQ, |k, v| Change::PutSeq(k.0, k.1, v.to_vec()));
    rows!(ORPHANS, |k, _v| Change::PutOrphan(k));
    rows!(DESTROY, |k, v| Change::PutDestroy(k, v.to_vec()));
    rows!(REPLIES, |k, v| Change::PutReply(k.0, k.1, v.to_vec()));
    if !redo.bytes.is_empty() {
        emit(&redo.bytes).map_err(io)?;
    }
    Ok(())
}

/// A standby's copy of the MDT in its directory: the snapshot in the store, then the
/// records after it in the operation log, exactly as an MDT that stopped leaves them,
/// so that [`super::Mdt::open`] serves it after a takeover (replaying the log).
///
/// The log is folded into the store now and then, so that a takeover replays little:
/// on a thread of its own, so that acknowledgements never wait for it. The log is
/// renamed `mdt.log.fold` and a fresh one started; the thread applies the old one
/// durably and removes it. An MDT that opens with a `mdt.log.fold` replays it first.
pub struct StandbyStore {
    db: Arc<redb::Database>,
    dir: PathBuf,
    log: OpLog,
    log_path: PathBuf,
    /// Log bytes since the last fold began, and how many start a fold.
    unfolded: usize,
    fold_every: usize,
    fold: Option<std::thread::JoinHandle<Result<(), MdtError>>>,
}

/// Fold the log into the store past this many bytes (keeps a takeover's replay short).
const FOLD_EVERY: usize = 64 << 20;

impl StandbyStore {
    /// Starts a fresh copy in `dir`: whatever MDT was there goes (it is older than the
    /// snapshot that follows). The store is built aside and renamed into place by
    /// [`StandbyStore::end_snapshot`], so a copy cut off mid-snapshot is no MDT.
    pub fn create(dir: &Path) -> Result<StandbyStore, MdtError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let aside = dir.join(SNAPSHOT_FILE);
        for f in [DB_FILE, LOG_FILE, FOLD_FILE, SNAPSHOT_FILE] {
            match std::fs::remove_file(dir.join(f)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err(&dir.join(f))(e))
                }
                _ => {}
            }
        }
        let db = redb::Database::create(&aside).map_err(StoreError::from)?;
        let log_path = dir.join(LOG_FILE);
        let log = OpLog::open(&log_path).map_err(io_err(&log_path))?;
        Ok(StandbyStore {
            db: Arc::new(db),
            dir: dir.to_path_buf(),
            log,
            log_path,
            unfolded: 0,
            fold_every: FOLD_EVERY,
            fold: None,
        })
    }

    /// One chunk of the snapshot (redo records of puts).
    pub fn load(&mut self, record: &[u8]) -> Result<(), MdtError> {
        let tx = self.db.begin_write().map_err(StoreError::from)?;
        {
            let mut w = WriteTables::open(&tx)?;
            let changes = Redo::decode(record).map_err(|why| MdtError::Log { index: 0, why })?;
            for c in changes {
                w.apply(c)?;
            }
        }
        tx.commit().map_err(StoreError::from)?;
        Ok(())
    }

    /// The snapshot is whole: the store goes into place, durably.
    pub fn end_snapshot(&mut self) -> Result<(), MdtError> {
        let mut tx = self.db.begin_write().map_err(StoreError::from)?;
        tx.set_durability(redb::Durability::Immediate)
            .map_err(StoreError::from)?;
        tx.commit().map_err(StoreError::from)?;
        let (from, to) = (self.dir.join(SNAPSHOT_FILE), self.dir.join(DB_FILE));
        std::fs::rename(&from, &to).map_err(io_err(&to))?;
        sync_dir(&self.dir)
    }

    /// One record after the snapshot, in the log (in the kernel's hands; see
    /// [`StandbyStore::sync`]).
    pub fn append(&mut self, record: &[u8]) -> Result<(), MdtError> {
        self.log.append(record).map_err(io_err(&self.log_path))?;
        self.unfolded += record.len();
        if self.unfolded >= self.fold_every && self.fold_done()? {
            self.start_fold()?;
            self.unfolded = 0;
        }
        Ok(())
    }

    /// Every record appended so far on stable storage (one fdatasync for a group).
    pub fn sync(&mut self) -> Result<(), MdtError> {
        self.log
            .sync_handle()
            .and_then(|f| f.sync_data())
            .map_err(io_err(&self.log_path))
    }

    /// Whether no fold runs (the last one's error, if it failed).
    fn fold_done(&mut self) -> Result<bool, MdtError> {
        match &self.fold {
            Some(t) if !t.is_finished() => Ok(false),
            Some(_) => {
                let t = self.fold.take().expect("just seen");
                t.join().unwrap_or(Err(MdtError::Stopped))?;
                Ok(true)
            }
            None => Ok(true),
        }
    }

    /// The log so far goes aside to be folded; records go on in a fresh one.
    fn start_fold(&mut self) -> Result<(), MdtError> {
        self.sync()?;
        let aside = self.dir.join(FOLD_FILE);
        std::fs::rename(&self.log_path, &aside).map_err(io_err(&aside))?;
        self.log = OpLog::open(&self.log_path).map_err(io_err(&self.log_path))?;
        sync_dir(&self.dir)?;
        let db = self.db.clone();
        let thread = std::thread::Builder::new()
            .name("mds-standby-fold".into())
            .spawn(move || fold_aside(&db, &aside))
            .map_err(io_err(&self.dir))?;
        self.fold = Some(thread);
        Ok(())
    }
}

impl Drop for StandbyStore {
    /// A takeover opens the MDT right after: the fold under way finishes first.
    fn drop(&mut self) {
        if let Some(t) = self.fold.take() {
            if let Ok(Err(e)) = t.join() {
                tracing::warn!("standby: folding the log: {e} (replayed at open)");
            }
        }
    }
}

/// Applies a log set aside (`mdt.log.fold`) to the store durably and removes it.
pub(super) fn fold_aside(db: &redb::Database, path: &Path) -> Result<(), MdtError> {
    let mut log = OpLog::open(path).map_err(io_err(path))?;
    replay(db, &mut log, path)?;
    std::fs::remove_file(path).map_err(io_err(path))
}

fn sync_dir(dir: &Path) -> Result<(), MdtError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(db: &redb::Database, key: &str) -> Option<u64> {
        use redb::ReadableDatabase;
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(super::super::store::META).unwrap();
        t.get(key).unwrap().map(|v| v.value())
    }

    fn record(key: &str, v: u64) -> Vec<u8> {
        let mut r = Redo::default();
        r.push(&Change::PutMeta(key.into(), v));
        r.bytes
    }

    #[test]
    fn a_standby_copy_folds_its_log_aside_and_keeps_what_came_after() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/mds-unit")
            .join(format!("standby-fold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut st = StandbyStore::create(&dir).unwrap();
        st.load(&record("snap", 1)).unwrap();
        st.end_snapshot().unwrap();
        assert!(dir.join(DB_FILE).exists() && !dir.join(SNAPSHOT_FILE).exists());
        st.fold_every = 1;
        st.append(&record("a", 2)).unwrap(); // set aside, folded on a thread
        st.fold_every = usize::MAX;
        st.append(&record("b", 3)).unwrap(); // in the fresh log
        st.sync().unwrap();
        drop(st); // the fold finishes
        assert!(!dir.join(FOLD_FILE).exists());
        let db = redb::Database::create(dir.join(DB_FILE)).unwrap();
        assert_eq!((meta(&db, "snap"), meta(&db, "a")), (Some(1), Some(2)));
        let mut log = OpLog::open(&dir.join(LOG_FILE)).unwrap();
        let (records, torn) = log.records().unwrap();
        assert_eq!((records.len(), torn), (1, 0), "b waits in the log");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_are_numbered_and_reach_the_subscriber() {
        let r = Replication::default();
        assert_eq!(r.publish(b"a"), 1, "numbered without a subscriber too");
        let (rx, from) = r.subscribe(4);
        assert_eq!(from, 1);
        assert_eq!(r.publish(b"b"), 2);
        let (seq, bytes) = rx.try_recv().unwrap();
        assert_eq!((seq, bytes.as_slice()), (2, &b"b"[..]));
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_dropped_and_a_named_one_must_be_declared_out() {
        let r = Replication::default();
        let (_rx, _) = r.subscribe(1);
        r.name();
        assert!(r.is_named());
        r.publish(b"a");
        r.publish(b"b"); // the channel is full: dropped
        assert!(r.out_asked());
        assert!(!r.is_named());
        r.confirm_out();
        assert!(!r.out_asked());
        // Not named any more: a reply waits for nothing.
        r.wait_for_standby(2);
    }

    #[test]
    fn a_reply_waits_for_the_named_standby() {
        let r = Arc::new(Replication::default());
        let (_rx, _) = r.subscribe(8);
        r.name();
        let seq = r.publish(b"a");
        let r2 = r.clone();
        let acker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            r2.ack(seq);
        });
        let t = Instant::now();
        r.wait_for_standby(seq);
        assert!(t.elapsed() >= Duration::from_millis(40));
        acker.join().unwrap();
    }

    #[test]
    fn a_silent_standby_holds_replies_until_the_mgs_heard_it_is_out() {
        let r = Arc::new(Replication::default());
        let (_rx, _) = r.subscribe(8);
        r.name();
        let seq = r.publish(b"a");
        let r2 = r.clone();
        let server = std::thread::spawn(move || {
            while !r2.out_asked() {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(100));
            r2.confirm_out();
        });
        let t = Instant::now();
        r.wait_for_standby(seq);
        assert!(t.elapsed() >= ACK_TIMEOUT + Duration::from_millis(90));
        assert!(!r.is_named());
        server.join().unwrap();
    }
}
