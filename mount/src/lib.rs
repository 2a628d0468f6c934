//! nacre-mount: the POSIX mount of nacre through FUSE (`nacre mount`), so that
//! unmodified programs, shells and benchmarks run on it.
//!
//! FUSE inode numbers are nacre's (the root is 1 in both). Namespace operations go to
//! the MDS by inode, as the calling user (uid, gid and supplementary groups of the
//! calling process), so the MDS applies POSIX permissions and new files belong to
//! their creator; the kernel checks them too (`default_permissions`), and the mount
//! is open to every user (`allow_other`), as a shared file system must be. Namespace
//! requests and closes, one MDS request each, run on the FUSE session threads. Data
//! goes through the client library's striped parallel path: reads, writes, fsyncs and
//! whatever else touches the OSTs run on a pool of worker threads, and files are
//! opened with direct I/O, so no page cache sits between two mounts (see
//! docs/mount.md for the threads and the caching trade-offs).

mod attrs;
mod byino;
mod convert;
mod filesystem;
mod shared;
mod xattr;

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use fuser::MountOption;
use nacre_client::Client;
use nacre_proto::meta::{self, Creds};

use shared::{BufPool, Shared};

pub use attrs::{fuse_attr, DirAttrs, ATTR_TTL};

/// Largest read or write the kernel sends in one request (FUSE's ceiling is 1 MiB
/// with 256 pages of 4 KiB).
pub const MAX_IO: u32 = 1 << 20;

/// Jobs waiting for a worker, at most.
pub const JOB_QUEUE: usize = 256;

/// Worker threads for reads, writes and fsyncs.
pub const WORKERS: usize = 4;

/// Entries asked of the MDS per readdir request.
const READDIR_BATCH: u32 = 256;

type Job = Box<dyn FnOnce() + Send>;

/// The file system a mount serves. FUSE calls it on its session threads, which serve
/// namespace requests themselves (one MDS request each) and hand data and anything
/// that touches the OSTs to a pool of workers, so that the I/O of many processes runs
/// side by side.
pub struct NacreFs {
    sh: Arc<Shared>,
    /// Supplementary groups by caller pid, read from /proc at most once per
    /// [`ATTR_TTL`] (a read of /proc/PID/status per request costs more than the
    /// request's own work in the daemon).
    groups: Mutex<HashMap<u32, (std::time::Instant, Vec<u32>)>>,
    jobs: Sender<Job>,
    workers: Vec<std::thread::JoinHandle<()>>,
    /// The kernel took FUSE_NO_OPENDIR_SUPPORT (see `opendir`).
    no_opendir: bool,
}

impl NacreFs {
    pub fn new(client: Client) -> NacreFs {
        // Bounded: when the workers are this far behind, the session thread waits to
        // hand over the next job, so the kernel's requests wait in the kernel.
        let (jobs, rx) = crossbeam_channel::bounded::<Job>(JOB_QUEUE);
        let workers = (0..WORKERS).map(|i| spawn_worker(i, rx.clone())).collect();
        let sh = Arc::new(Shared {
            client,
            bufs: BufPool::default(),
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            locked: Mutex::new(HashSet::new()),
            kill_privs: Mutex::new(HashMap::new()),
            dirs: DirAttrs::default(),
        });
        NacreFs {
            sh,
            groups: Default::default(),
            jobs,
            workers,
            no_opendir: false,
        }
    }

    /// Runs `job` on a worker.
    fn offload(&self, job: impl FnOnce() + Send + 'static) {
        if let Err(e) = self.jobs.send(Box::new(job)) {
            // Workers are gone only while the session ends: run it here.
            (e.into_inner())();
        }
    }

    /// The caller's credentials: uid and gid from FUSE, supplementary groups from
    /// /proc/PID/status (cached by pid for [`ATTR_TTL`]; none if the process is gone).
    fn creds(&self, req: &fuser::Request) -> Creds {
        let mut cache = lock(&self.groups);
        let fresh = |at: &std::time::Instant| at.elapsed() < ATTR_TTL;
        let groups = match cache.get(&req.pid()) {
            Some((at, g)) if fresh(at) => g.clone(),
            _ => {
                if cache.len() >= 4096 {
                    cache.retain(|_, (at, _)| fresh(at));
                }
                let g = groups_of(req.pid());
                cache.insert(req.pid(), (std::time::Instant::now(), g.clone()));
                g
            }
        };
        Creds {
            uid: req.uid(),
            gid: req.gid(),
            groups,
        }
    }

    /// Runs `op` on a worker with the shared state and the caller's credentials.
    fn run(&self, req: &fuser::Request, op: impl FnOnce(&Shared, &Creds) + Send + 'static) {
        let (sh, creds) = (self.sh.clone(), self.creds(req));
        self.offload(move || op(&sh, &creds));
    }

    /// Runs `op` here, on the session thread: for one MDS request, a hand-off to a
    /// worker (a futex wake and a switch each way) costs more than the request, and
    /// the MDS serves one request at a time anyway (docs/mount.md, "Threads").
    fn inline(&self, req: &fuser::Request, op: impl FnOnce(&Shared, &Creds)) {
        op(&self.sh, &self.creds(req))
    }

    /// Runs namespace request `op` on the session thread, or on a worker when it also
    /// changes objects on the OSTs (a truncate), as data does.
    fn inline_unless_osts(
        &self,
        req: &fuser::Request,
        touches_osts: bool,
        op: impl FnOnce(&Shared, &Creds) + Send + 'static,
    ) {
        match touches_osts {
            false => self.inline(req, op),
            true => self.run(req, op),
        }
    }
}

impl Drop for NacreFs {
    fn drop(&mut self) {
        let (closed, _) = crossbeam_channel::bounded(0);
        self.jobs = closed;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn spawn_worker(i: usize, rx: Receiver<Job>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("nacre-fuse-{i}"))
        .spawn(move || {
            for job in rx {
                job();
            }
        })
        .expect("starting a FUSE worker thread")
}

/// A process's supplementary groups (empty if it is gone).
fn groups_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .take(meta::MAX_GROUPS)
                    .collect()
            })
        })
        .unwrap_or_default()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a mount is set up.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// The file system's name in /proc/mounts (`nacre:<fsname>`).
    pub fsname: String,
    /// Extra `-o` options, passed to FUSE as they are.
    pub options: Vec<String>,
    /// FUSE session threads ([`session_threads`] is the default `nacre mount` takes).
    pub threads: usize,
}

/// The FUSE options of a nacre mount.
pub fn mount_options(cfg: &MountConfig) -> Vec<MountOption> {
    let mut o = vec![
        MountOption::FSName(cfg.fsname.clone()),
        MountOption::Subtype("nacre".into()),
        MountOption::DefaultPermissions,
        MountOption::RW,
    ];
    o.extend(cfg.options.iter().map(|s| MountOption::CUSTOM(s.clone())));
    o
}

/// Mounts `client`'s file system at `mountpoint` until the returned session drops:
/// open to every user (`allow_other`), served by `cfg.threads` session threads, each
/// reading its own clone of the FUSE device.
pub fn mount(
    client: Client,
    mountpoint: &Path,
    cfg: &MountConfig,
) -> io::Result<fuser::BackgroundSession> {
    let mut config = fuser::Config::default();
    config.mount_options = mount_options(cfg);
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(cfg.threads.max(1));
    config.clone_fd = cfg.threads > 1;
    fuser::spawn_mount(NacreFs::new(client), mountpoint, &config)
}

/// FUSE session threads: one per two CPUs, 1 to 4. Namespace requests run on them
/// (each waits for its MDS answer), so several processes' creates, lookups and stats
/// are in flight at once; data goes on to the workers. Not one per CPU: the threads
/// spin on the MDS's answers beside the application's own processes, and on this
/// project's 2-CPU machines a second thread made mdtest through the mount slower
/// (creates 4.0-5.1k/s against 5.4-6.7k/s with one; docs/performance.md).
pub fn session_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, 4))
}

/// Serves until `stop` (a signal) or until the mount goes away (`nacre umount`). On
/// a stop it unmounts and waits for the session to end, which closes every open file
/// (their sizes reach the MDS). A mount still in use refuses to go (EBUSY): it then
/// says so and keeps serving, trying again every second, until its files are closed
/// (or it is unmounted from outside).
pub fn serve_until(session: fuser::BackgroundSession, stop: &AtomicBool, mountpoint: &Path) {
    while !stop.load(Ordering::Relaxed) && !session.guard.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut said = false;
    while !session.guard.is_finished() && !unmount(mountpoint) {
        if !said {
            eprintln!(
                "nacre mount: {} is busy: still serving; close its files, then nacre umount {0}",
                mountpoint.display()
            );
            said = true;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // Unmounted: the session threads see the device go and end (join panics only if
    // the session ended in an error, which was logged already).
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.join()));
}

/// `fusermount3 -u`: works for root and for the user who mounted; false while busy.
fn unmount(mountpoint: &Path) -> bool {
    std::process::Command::new("fusermount3")
        .arg("-uq")
        .arg(mountpoint)
        .status()
        .is_ok_and(|s| s.success())
}
