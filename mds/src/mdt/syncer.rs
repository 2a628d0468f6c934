//! Sync mode's group commit: a thread that fdatasyncs the operation log and sends the
//! replies of the batches each fdatasync covered.

use super::redo::OpLog;
use super::replication::Replication;
use super::service::{io_err, Completion, MdtError, Stats};
use nacre_proto::meta::errno;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Replies of one batch, sent once the log holding the batch is on stable storage.
pub(super) type Replies = Vec<(Sender<Completion>, Completion)>;

/// Sync mode's group commit, pipelined: the committer appends batch k+1 to the log while
/// this thread fdatasyncs batches up to k; one fdatasync covers every batch appended
/// before it started, and their replies go out after it.
pub(super) struct Syncer {
    /// Each batch's replies with the number of its redo record.
    pub(super) batches: SyncSender<(u64, Replies)>,
    pub(super) thread: JoinHandle<()>,
}

impl Syncer {
    pub(super) fn start(
        log: &OpLog,
        path: &Path,
        broken: Arc<std::sync::atomic::AtomicBool>,
        stats: Arc<Stats>,
        repl: Arc<Replication>,
    ) -> Result<Syncer, MdtError> {
        let file = log.sync_handle().map_err(io_err(path))?;
        let (batches, rx) = mpsc::sync_channel::<(u64, Replies)>(64);
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
                    // And on the standby's disk, if one is named.
                    let seq = all.iter().map(|(seq, _)| *seq).max().unwrap_or(0);
                    repl.wait_for_standby(seq);
                    for (done, mut c) in all.into_iter().flat_map(|(_, r)| r) {
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
