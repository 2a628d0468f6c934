//! Submitting operations from an engine core without blocking, and answering reads on
//! the caller's thread from the last commit and the committer's overlay.

use super::check::{CheckBoard, CheckOptions};
use super::locks::LockTable;
use super::ns::{self, Ctx, Fail};
use super::overlay::{Layered, Overlay};
use super::service::{now_ns, Admin, Completion, HsmEvent, Job, Op, OstSpace, SubmitError};
use super::store::{ReadTables, StoreError};
use nacre_proto::meta::{errno, Head, MdtStatfs, Reply, Request};
use redb::{Database, ReadableDatabase};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Submits operations and collects their completions without blocking.
pub struct Submitter {
    pub(super) jobs: SyncSender<Job>,
    pub(super) done: Sender<Completion>,
    pub(super) completions: Receiver<Completion>,
    pub(super) db: Arc<Database>,
    pub(super) epoch: u64,
    pub(super) locks: Arc<Mutex<LockTable>>,
    pub(super) ost_space: Arc<Mutex<OstSpace>>,
    pub(super) overlay: Arc<RwLock<Overlay>>,
    pub(super) generation: Arc<AtomicU64>,
    pub(super) cache: TablesCache,
    pub(super) board: Arc<CheckBoard>,
    pub(super) hsm: super::service::HsmInbox,
    pub(super) heard: Arc<super::heard::Heard>,
}

impl Submitter {
    /// Queues `req`; its completion (with `tag`) arrives on this submitter's queue once
    /// it is durable per the sync mode. Read-only requests are answered at once from a
    /// read transaction (readers never wait for the writer in redb).
    pub fn submit(&self, tag: u64, head: Head, req: Request) -> Result<(), SubmitError> {
        self.heard.note_request(&head, &req);
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
        if let Request::Check {
            start,
            fix,
            keep_orphans,
            from,
        } = req
        {
            // The checker's board: answered at once (the run is the server's thread's).
            let opts = CheckOptions { fix, keep_orphans };
            let result = match head.epoch == self.epoch {
                true => self.board.answer(&head.creds, start, opts, from),
                false => Err(errno::ESTALE),
            };
            let _ = self.done.send(Completion { tag, result });
            return Ok(());
        }
        if let Request::Hsm(h) = req {
            // The data mover's: answered when it is done, on this queue.
            let job = super::service::HsmJob {
                tag,
                creds: head.creds,
                req: h,
                done: self.done.clone(),
            };
            let inbox = self.hsm.lock().unwrap_or_else(|p| p.into_inner());
            match inbox
                .as_ref()
                .map(|tx| tx.send(HsmEvent::Request(Box::new(job))))
            {
                Some(Ok(())) => {}
                Some(Err(mpsc::SendError(HsmEvent::Request(job)))) => {
                    job.answer(Err(errno::ENOSYS))
                }
                Some(Err(_)) => {}
                None => {
                    let _ = self.done.send(Completion {
                        tag,
                        result: Err(errno::ENOSYS),
                    });
                }
            }
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

    /// Waits up to `timeout` for the completion tagged `tag`, dropping others (answers
    /// to earlier calls that came late): for a caller with one call in flight at a time.
    pub fn wait_for(&self, tag: u64, timeout: Duration) -> Option<Completion> {
        let until = std::time::Instant::now() + timeout;
        loop {
            let left = until.checked_duration_since(std::time::Instant::now())?;
            match self.wait(left)? {
                c if c.tag == tag => return Some(c),
                _ => continue,
            }
        }
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

/// A core's read tables and the generation they were opened at, reused until the next
/// commit: opening a read transaction and its four tables costs about as much as the
/// lookup a stat needs.
pub(super) type TablesCache = std::cell::RefCell<Option<(u64, Arc<ReadTables>)>>;

/// What a read needs.
pub(super) struct ReadCtx<'a> {
    pub(super) db: &'a Database,
    pub(super) overlay: &'a RwLock<Overlay>,
    pub(super) generation: &'a AtomicU64,
    pub(super) cache: Option<&'a TablesCache>,
    pub(super) epoch: u64,
    pub(super) ost_space: &'a Mutex<OstSpace>,
}

pub(super) fn read_now(r: &ReadCtx<'_>, head: &Head, req: &Request) -> Result<Reply, i32> {
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
                client: 0,
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
            Reply::Statfs(MdtStatfs {
                bytes_total: o.total,
                bytes_free: o.free,
                osts: o.osts,
                ..s
            })
        }
        other => other,
    })
}

/// Inode `ino` as the last operation left it (the overlay, then the last commit).
pub(super) fn read_inode(r: &ReadCtx<'_>, ino: u64) -> Result<Option<super::inode::Inode>, i32> {
    use super::store::View;
    let overlay = r.overlay.read().unwrap_or_else(|p| p.into_inner());
    let tables = read_tables(r).map_err(|e| {
        tracing::error!("MDT read: {e}");
        errno::EIO
    })?;
    let view = Layered {
        overlay: &overlay,
        base: &*tables,
    };
    view.inode(ino).map_err(|e| {
        tracing::error!("MDT read: {e}");
        errno::EIO
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
