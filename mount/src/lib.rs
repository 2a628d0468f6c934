//! nacre-mount: the POSIX mount of nacre through FUSE (`nacre mount`), so that
//! unmodified programs, shells and benchmarks run on it.
//!
//! FUSE inode numbers are nacre's (the root is 1 in both). Namespace operations go to
//! the MDS by inode, as the calling user (uid, gid and supplementary groups of the
//! calling process), so the MDS applies POSIX permissions and new files belong to
//! their creator; the kernel checks them too (`default_permissions`), and the mount
//! is open to every user (`allow_other`), as a shared file system must be. Namespace
//! requests and closes, one MDS request each, run on the FUSE session thread. Data
//! goes through the client library's striped parallel path: reads, writes, fsyncs and
//! whatever else touches the OSTs run on a pool of worker threads, and files are
//! opened with direct I/O, so no page cache sits between two mounts (see
//! docs/mount.md for the threads and the caching trade-offs).

mod attrs;
mod xattr;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use fuser::{
    FileType, KernelConfig, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, TimeOrNow,
};
use nacre_client::{errno, Client, File};
use nacre_proto::meta::{self, Attr, Creds, FileKind, LockRequest, Reply, Request, SetAttr};

pub use attrs::{fuse_attr, DirAttrs, ATTR_TTL};

/// Largest read or write the kernel sends in one request (FUSE's ceiling is 1 MiB
/// with 256 pages of 4 KiB).
pub const MAX_IO: u32 = 1 << 20;

/// Worker threads for reads, writes and fsyncs.
pub const WORKERS: usize = 4;

/// Entries asked of the MDS per readdir request.
const READDIR_BATCH: u32 = 256;

type Job = Box<dyn FnOnce() + Send>;

/// The file system a mount serves. FUSE calls it on one session thread, which serves
/// namespace requests itself (the MDS answers them one at a time anyway) and hands
/// data and anything that touches the OSTs to a pool of workers, so that the I/O of
/// many processes runs side by side.
pub struct NacreFs {
    sh: Arc<Shared>,
    /// Supplementary groups by caller pid, read from /proc at most once per
    /// [`ATTR_TTL`] (a read of /proc/PID/status per request costs more than the
    /// request's own work in the daemon).
    groups: std::cell::RefCell<HashMap<u32, (std::time::Instant, Vec<u32>)>>,
    jobs: Sender<Job>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

/// What the workers share.
struct Shared {
    client: Client,
    bufs: BufPool,
    files: Mutex<HashMap<u64, Arc<File>>>,
    next_fh: AtomicU64,
    /// Inodes this mount has taken locks on: only their closes need an unlock sent.
    locked: Mutex<HashSet<u64>>,
    dirs: DirAttrs,
}

impl NacreFs {
    pub fn new(client: Client) -> NacreFs {
        let (jobs, rx) = crossbeam_channel::unbounded::<Job>();
        let workers = (0..WORKERS).map(|i| spawn_worker(i, rx.clone())).collect();
        let sh = Arc::new(Shared {
            client,
            bufs: BufPool::default(),
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            locked: Mutex::new(HashSet::new()),
            dirs: DirAttrs::default(),
        });
        NacreFs {
            sh,
            groups: Default::default(),
            jobs,
            workers,
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
    fn creds(&self, req: &fuser::Request<'_>) -> Creds {
        let mut cache = self.groups.borrow_mut();
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
    fn run(&self, req: &fuser::Request<'_>, op: impl FnOnce(&Shared, &Creds) + Send + 'static) {
        let (sh, creds) = (self.sh.clone(), self.creds(req));
        self.offload(move || op(&sh, &creds));
    }

    /// Runs `op` here, on the session thread: for one MDS request, a hand-off to a
    /// worker (a futex wake and a switch each way) costs more than the request, and
    /// the MDS serves one request at a time anyway (docs/mount.md, "Threads").
    fn inline(&self, req: &fuser::Request<'_>, op: impl FnOnce(&Shared, &Creds)) {
        op(&self.sh, &self.creds(req))
    }

    /// Runs namespace request `op` on the session thread, or on a worker when it also
    /// changes objects on the OSTs (a truncate), as data does.
    fn inline_unless_osts(
        &self,
        req: &fuser::Request<'_>,
        touches_osts: bool,
        op: impl FnOnce(&Shared, &Creds) + Send + 'static,
    ) {
        match touches_osts {
            false => self.inline(req, op),
            true => self.run(req, op),
        }
    }
}

/// Data buffers reused from one request to the next: a buffer keeps its address, so
/// the client's registration cache finds it registered already (a fresh allocation
/// per request would cost a memory registration per request).
#[derive(Default)]
struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufPool {
    /// A buffer of `len` bytes (contents unspecified).
    fn take(&self, len: usize) -> Vec<u8> {
        let mut b = lock(&self.free).pop().unwrap_or_default();
        b.resize(len, 0);
        b
    }

    fn give(&self, b: Vec<u8>) {
        let mut free = lock(&self.free);
        if free.len() < WORKERS * 2 && b.capacity() <= MAX_IO as usize {
            free.push(b);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn file(&self, fh: u64) -> Result<Arc<File>, i32> {
        lock(&self.files).get(&fh).cloned().ok_or(libc::EBADF)
    }

    fn add_file(&self, f: File) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.files).insert(fh, Arc::new(f));
        fh
    }

    fn is_locked(&self, ino: u64) -> bool {
        lock(&self.locked).contains(&ino)
    }

    /// Every open handle of `ino` forgets sizes past `size` (a truncate).
    fn resized(&self, ino: u64, size: u64) {
        lock(&self.files)
            .values()
            .filter(|f| f.ino() == ino)
            .for_each(|f| f.resized(size));
    }

    fn entry(&self, reply: ReplyEntry, r: io::Result<Reply>) {
        match r.and_then(attr_of) {
            Ok(mut a) => {
                self.dirs.fetched(&a);
                if let Some(size) = self.local_size(a.ino) {
                    a.size = a.size.max(size);
                }
                reply.entry(&ATTR_TTL, &fuse_attr(&a), 0)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// The answer to a request that added an entry to `parent`.
    fn new_entry(&self, reply: ReplyEntry, parent: u64, r: io::Result<Reply>) {
        match r.and_then(attr_of) {
            Ok(a) => {
                self.dirs.entry_added(parent, &a);
                self.entry(reply, Ok(Reply::Attr(a)))
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn done(&self, reply: ReplyEmpty, r: io::Result<Reply>) {
        match r {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// The size this mount's open handles know for `ino` beyond the MDS's (writes
    /// not yet reported), so the kernel is never told a file shrank under its writer.
    fn local_size(&self, ino: u64) -> Option<u64> {
        lock(&self.files)
            .values()
            .filter(|f| f.ino() == ino)
            .map(|f| f.attr().size)
            .max()
    }

    fn attr(&self, creds: &Creds, ino: u64) -> io::Result<Attr> {
        let mut a = attr_of(self.client.request_as(creds, &Request::Getattr { ino })?)?;
        self.dirs.fetched(&a);
        if let Some(size) = self.local_size(ino) {
            a.size = a.size.max(size);
        }
        Ok(a)
    }

    fn reply_attr(&self, reply: ReplyAttr, r: io::Result<Attr>) {
        match r {
            Ok(a) => reply.attr(&ATTR_TTL, &fuse_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// setattr: through the handle for ftruncate on a descriptor open for writing
    /// (POSIX needs no permission beyond the open's), else as the caller.
    fn setattr(&self, creds: &Creds, ino: u64, s: SetAttr, fh: Option<u64>) -> io::Result<Attr> {
        let size_only = s.mask == meta::set::SIZE;
        if let (true, Some(file)) = (size_only, fh.and_then(|fh| self.file(fh).ok())) {
            if file.set_len(s.size).is_ok() {
                self.resized(ino, s.size);
                return self.attr(creds, ino);
            }
        }
        self.dirs.forget(ino);
        let a = self.client.setattr_as(creds, ino, s)?;
        self.dirs.fetched(&a);
        if s.mask & meta::set::SIZE != 0 {
            self.resized(ino, s.size);
        }
        Ok(a)
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

fn attr_of(r: Reply) -> io::Result<Attr> {
    match r {
        Reply::Attr(a) | Reply::Opened { attr: a, .. } => Ok(a),
        other => Err(io::Error::other(format!(
            "expected attributes, got {other:?}"
        ))),
    }
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

/// Open flags for a handle the kernel writes through: without O_APPEND, since the
/// kernel gives every write its offset (the end of the file for an O_APPEND
/// descriptor, serialised under the inode's lock), which the daemon must not redo from
/// a size that other handles may not have reported yet.
fn kernel_offsets(flags: i32) -> i32 {
    flags & !libc::O_APPEND
}

fn lock_kind(typ: i32) -> Option<u32> {
    match typ {
        libc::F_RDLCK => Some(meta::lock::READ),
        libc::F_WRLCK => Some(meta::lock::WRITE),
        libc::F_UNLCK => Some(meta::lock::UNLOCK),
        _ => None,
    }
}

/// A lock request of the kernel's `owner` on `ino` (the client fills in its id).
fn lock_request(ino: u64, owner: u64, start: u64, end: u64, kind: u32, pid: u32) -> LockRequest {
    LockRequest {
        ino,
        client: 0,
        owner,
        start,
        end,
        kind,
        pid,
        test: false,
        replay: false,
        wait: false,
    }
}

/// Releases every lock `owner` holds on `ino` (a close, the end of an open file).
fn unlock_all(ino: u64, owner: u64) -> LockRequest {
    lock_request(ino, owner, 0, u64::MAX, meta::lock::UNLOCK, 0)
}

/// The permission bits of a new file or directory: the caller's mode less its umask
/// (the file type bits are the request's, not the mode's).
fn new_mode(mode: u32, umask: u32) -> u32 {
    mode & !umask & 0o7777
}

fn name_of(name: &OsStr) -> Vec<u8> {
    name.as_bytes().to_vec()
}

fn kind_of(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
    }
}

fn time_ns(t: TimeOrNow) -> Option<i64> {
    match t {
        TimeOrNow::Now => None,
        TimeOrNow::SpecificTime(t) => Some(match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i64,
            Err(e) => -(e.duration().as_nanos() as i64),
        }),
    }
}

impl fuser::Filesystem for NacreFs {
    fn init(&mut self, _req: &fuser::Request<'_>, config: &mut KernelConfig) -> Result<(), i32> {
        // Large requests, so big reads and writes reach the striped path whole.
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO);
        let _ = config.add_capabilities(fuser::consts::FUSE_BIG_WRITES);
        let _ = config.add_capabilities(fuser::consts::FUSE_PARALLEL_DIROPS);
        // fcntl and flock locks come to us and go to the MDS, so they hold across
        // mounts (the kernel would otherwise keep them per mount).
        let _ = config.add_capabilities(fuser::consts::FUSE_POSIX_LOCKS);
        let _ = config.add_capabilities(fuser::consts::FUSE_FLOCK_LOCKS);
        Ok(())
    }

    fn lookup(&mut self, req: &fuser::Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let r = Request::Lookup {
            parent,
            name: name_of(name),
        };
        self.inline(req, |sh, creds| {
            sh.entry(reply, sh.client.request_as(creds, &r))
        });
    }

    fn getattr(&mut self, req: &fuser::Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        // A directory's attributes may come from this mount's cache (`DirAttrs`).
        self.inline(req, |sh, creds| match sh.dirs.get(ino) {
            Some(a) => reply.attr(&ATTR_TTL, &fuse_attr(&a)),
            None => sh.reply_attr(reply, sh.attr(creds, ino)),
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &mut self,
        req: &fuser::Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<u64>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut s = SetAttr::default();
        if let Some(m) = mode {
            s.mask |= meta::set::MODE;
            s.mode = m & 0o7777;
        }
        if let Some(u) = uid {
            s.mask |= meta::set::UID;
            s.uid = u;
        }
        if let Some(g) = gid {
            s.mask |= meta::set::GID;
            s.gid = g;
        }
        if let Some(z) = size {
            s.mask |= meta::set::SIZE;
            s.size = z;
        }
        match atime.map(time_ns) {
            Some(Some(t)) => (s.mask, s.atime) = (s.mask | meta::set::ATIME, t),
            Some(None) => s.mask |= meta::set::ATIME_NOW,
            None => {}
        }
        match mtime.map(time_ns) {
            Some(Some(t)) => (s.mask, s.mtime) = (s.mask | meta::set::MTIME, t),
            Some(None) => s.mask |= meta::set::MTIME_NOW,
            None => {}
        }
        let op =
            move |sh: &Shared, creds: &Creds| sh.reply_attr(reply, sh.setattr(creds, ino, s, fh));
        // A new size trims or extends objects on the OSTs.
        self.inline_unless_osts(req, s.mask & meta::set::SIZE != 0, op);
    }

    fn readlink(&mut self, req: &fuser::Request<'_>, ino: u64, reply: ReplyData) {
        self.inline(req, |sh, creds| {
            match sh.client.request_as(creds, &Request::Readlink { ino }) {
                Ok(Reply::Target(t)) => reply.data(&t),
                Ok(_) => reply.error(libc::EIO),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn mkdir(
        &mut self,
        req: &fuser::Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = Request::Mkdir {
            parent,
            name: name_of(name),
            mode: new_mode(mode, umask),
        };
        self.inline(req, |sh, creds| {
            sh.new_entry(reply, parent, sh.client.request_as(creds, &r))
        });
    }

    fn unlink(&mut self, req: &fuser::Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let r = Request::Unlink {
            parent,
            name: name_of(name),
        };
        self.inline(req, |sh, creds| {
            sh.dirs.forget(parent);
            sh.done(reply, sh.client.request_as(creds, &r))
        });
    }

    fn rmdir(&mut self, req: &fuser::Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let r = Request::Rmdir {
            parent,
            name: name_of(name),
        };
        self.inline(req, |sh, creds| {
            // The parent and the removed directory both change.
            sh.dirs.forget_all();
            sh.done(reply, sh.client.request_as(creds, &r))
        });
    }

    fn symlink(
        &mut self,
        req: &fuser::Request<'_>,
        parent: u64,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = Request::Symlink {
            parent,
            name: name_of(link_name),
            target: target.as_os_str().as_bytes().to_vec(),
        };
        self.inline(req, |sh, creds| {
            sh.new_entry(reply, parent, sh.client.request_as(creds, &r))
        });
    }

    fn rename(
        &mut self,
        req: &fuser::Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        // RENAME_NOREPLACE is the MDS's; RENAME_EXCHANGE and WHITEOUT are not offered.
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return reply.error(libc::EINVAL);
        }
        let r = Request::Rename {
            parent,
            name: name_of(name),
            new_parent: newparent,
            new_name: name_of(newname),
            flags: match flags & libc::RENAME_NOREPLACE {
                0 => 0,
                _ => meta::RENAME_NOREPLACE,
            },
        };
        self.inline(req, |sh, creds| {
            // Both parents change, and a directory moved (its ctime, its "..").
            sh.dirs.forget_all();
            sh.done(reply, sh.client.request_as(creds, &r))
        });
    }

    fn link(
        &mut self,
        req: &fuser::Request<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = Request::Link {
            ino,
            new_parent: newparent,
            new_name: name_of(newname),
        };
        self.inline(req, |sh, creds| {
            sh.new_entry(reply, newparent, sh.client.request_as(creds, &r))
        });
    }

    fn open(&mut self, req: &fuser::Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let op = move |sh: &Shared, creds: &Creds| match sh.client.open_ino_as(
            creds,
            ino,
            kernel_offsets(flags),
        ) {
            Ok(f) => reply.opened(sh.add_file(f), fuser::consts::FOPEN_DIRECT_IO),
            Err(e) => reply.error(errno(&e)),
        };
        // O_TRUNC empties the objects on the OSTs.
        self.inline_unless_osts(req, flags & libc::O_TRUNC != 0, op);
    }

    fn create(
        &mut self,
        req: &fuser::Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = name_of(name);
        let (mode, flags) = (new_mode(mode, umask), kernel_offsets(flags));
        let op = move |sh: &Shared, creds: &Creds| {
            match sh
                .client
                .create_open(creds, parent, &name, mode, flags, None)
            {
                Ok(f) => {
                    // A create that found the file there changed nothing in `parent`.
                    if f.created() {
                        sh.dirs.entry_added(parent, &f.attr());
                    }
                    let attr = fuse_attr(&f.attr());
                    let fh = sh.add_file(f);
                    reply.created(&ATTR_TTL, &attr, 0, fh, fuser::consts::FOPEN_DIRECT_IO)
                }
                Err(e) => reply.error(errno(&e)),
            }
        };
        // O_TRUNC of an existing file empties its objects on the OSTs.
        self.inline_unless_osts(req, flags & libc::O_TRUNC != 0, op);
    }

    /// A regular file made without opening it (mknod(2), and what some tools use
    /// for an empty file); nacre has no device, FIFO or socket files: EPERM, as
    /// Linux answers on a file system that does not support them.
    fn mknod(
        &mut self,
        req: &fuser::Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return reply.error(libc::EPERM);
        }
        let r = Request::Create {
            parent,
            name: name_of(name),
            mode: new_mode(mode, umask),
            flags: meta::CREATE_EXCL,
            layout: None,
        };
        self.inline(req, |sh, creds| {
            sh.new_entry(reply, parent, sh.client.request_as(creds, &r))
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &mut self,
        _req: &fuser::Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let file = match self.sh.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let sh = self.sh.clone();
        self.offload(move || {
            let mut buf = sh.bufs.take(size as usize);
            match file.read_at(&mut buf, offset.max(0) as u64) {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => reply.error(errno(&e)),
            }
            sh.bufs.give(buf);
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        _req: &fuser::Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let file = match self.sh.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        // The kernel's buffer lives for this call only: copied into a pooled one.
        let mut buf = self.sh.bufs.take(data.len());
        buf.copy_from_slice(data);
        let sh = self.sh.clone();
        self.offload(move || {
            match file.write_at(&buf, offset.max(0) as u64) {
                Ok(n) => reply.written(n as u32),
                Err(e) => reply.error(errno(&e)),
            }
            sh.bufs.give(buf);
        });
    }

    fn flush(
        &mut self,
        _req: &fuser::Request<'_>,
        ino: u64,
        fh: u64,
        lock_owner: u64,
        reply: ReplyEmpty,
    ) {
        // close(2) of a descriptor: its size becomes visible to other clients, and
        // the closing owner's POSIX locks on the file go (POSIX: any close drops them).
        let file = match self.sh.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let client = self.sh.is_locked(ino).then(|| self.sh.client.clone());
        if client.is_none() && !file.unreported() {
            // Nothing to tell anyone (the usual close of a file only read or created):
            // answered here, without a trip through the workers.
            return reply.ok();
        }
        self.offload(move || {
            let unlock = unlock_all(ino, lock_owner);
            let unlocked = || match &client {
                Some(c) => c.lock(unlock).map(|_| ()),
                None => Ok(()),
            };
            match file.report_size().and_then(|_| unlocked()) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn getlk(
        &mut self,
        _req: &fuser::Request<'_>,
        ino: u64,
        _fh: u64,
        lock_owner: u64,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let Some(kind) = lock_kind(typ) else {
            return reply.error(libc::EINVAL);
        };
        let test = LockRequest {
            test: true,
            ..lock_request(ino, lock_owner, start, end, kind, pid)
        };
        match self.sh.client.lock(test) {
            Ok(Reply::Lock(d)) => reply.locked(d.start, d.end, d.kind as i32, d.pid),
            Ok(_) => reply.error(libc::EIO),
            Err(e) => reply.error(errno(&e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setlk(
        &mut self,
        _req: &fuser::Request<'_>,
        ino: u64,
        _fh: u64,
        lock_owner: u64,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let Some(kind) = lock_kind(typ) else {
            return reply.error(libc::EINVAL);
        };
        let l = lock_request(ino, lock_owner, start, end, kind, pid);
        lock(&self.sh.locked).insert(ino);
        if !sleep {
            return match self.sh.client.lock(l) {
                Ok(_) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            };
        }
        // F_SETLKW: wait on a thread of its own (never on the data workers, which the
        // holder's close needs), asking again with a pause that grows to 50 ms (the MDS
        // does not call back), as a waiter, so that the MDS answers EDEADLK to one that
        // closes a circle of waiters. FUSE interrupts do not reach us: a waiter whose
        // process is gone gives up (EINTR) instead of waiting forever.
        let l = LockRequest { wait: true, ..l };
        let client = self.sh.client.clone();
        let spawned = std::thread::Builder::new()
            .name("nacre-fuse-lockwait".into())
            .spawn(move || {
                let mut pause = Duration::from_millis(1);
                loop {
                    match client.lock(l) {
                        Ok(_) => return reply.ok(),
                        Err(e) if errno(&e) == libc::EAGAIN => {
                            if pid != 0 && !Path::new(&format!("/proc/{pid}")).exists() {
                                return reply.error(libc::EINTR);
                            }
                            std::thread::sleep(pause);
                            pause = (pause * 2).min(Duration::from_millis(50));
                        }
                        Err(e) => return reply.error(errno(&e)),
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("starting a lock waiter: {e}");
        }
    }

    fn release(
        &mut self,
        _req: &fuser::Request<'_>,
        ino: u64,
        fh: u64,
        _flags: i32,
        lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let Some(file) = lock(&self.sh.files).remove(&fh) else {
            return reply.error(libc::EBADF);
        };
        // Here on the session thread, as namespace requests are (the kernel does not
        // wait for a release). The last reference closes the MDS handle (a worker may
        // still hold one for a moment; its drop closes then). With a lock owner, the
        // open file's flock goes with it.
        if let Some(owner) = lock_owner.filter(|_| self.sh.is_locked(ino)) {
            if let Err(e) = self.sh.client.lock(unlock_all(ino, owner)) {
                tracing::warn!("releasing the flock of inode {ino}: {e}");
            }
        }
        match Arc::into_inner(file).map(File::close) {
            Some(Err(e)) => reply.error(errno(&e)),
            _ => reply.ok(),
        }
    }

    fn readdir(
        &mut self,
        req: &fuser::Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        // FUSE offsets are nacre's readdir cookies: each entry carries the cookie that
        // resumes after it, stable while entries come and go.
        let mut cookie = offset as u64;
        let creds = self.creds(req);
        loop {
            let r = Request::Readdir {
                dir: ino,
                cookie,
                max: READDIR_BATCH,
            };
            let (entries, eof) = match self.sh.client.request_as(&creds, &r) {
                Ok(Reply::Dir { entries, eof, .. }) => (entries, eof),
                Ok(_) => return reply.error(libc::EIO),
                Err(e) => return reply.error(errno(&e)),
            };
            for e in &entries {
                let name = OsStr::from_bytes(&e.name);
                if reply.add(e.ino, e.cookie as i64, kind_of(e.kind), name) {
                    return reply.ok();
                }
                cookie = e.cookie;
            }
            if eof || entries.is_empty() {
                return reply.ok();
            }
        }
    }

    fn statfs(&mut self, _req: &fuser::Request<'_>, _ino: u64, reply: ReplyStatfs) {
        const BSIZE: u64 = 4096;
        match self.sh.client.statfs() {
            Ok(s) => reply.statfs(
                s.bytes_total / BSIZE,
                s.bytes_free / BSIZE,
                s.bytes_free / BSIZE,
                s.files_total,
                s.files_free,
                BSIZE as u32,
                s.name_max,
                BSIZE as u32,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getxattr(
        &mut self,
        req: &fuser::Request<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        match xattr::get(&self.sh.client, &self.creds(req), ino, name.as_bytes()) {
            Ok(value) => xattr::answer(reply, size, &value),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &mut self,
        req: &fuser::Request<'_>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.sh.dirs.forget(ino);
        match xattr::set(
            &self.sh.client,
            &self.creds(req),
            ino,
            name.as_bytes(),
            value,
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&mut self, _req: &fuser::Request<'_>, _ino: u64, size: u32, reply: ReplyXattr) {
        xattr::answer(reply, size, xattr::LIST)
    }

    fn removexattr(
        &mut self,
        _req: &fuser::Request<'_>,
        _ino: u64,
        name: &OsStr,
        reply: ReplyEmpty,
    ) {
        reply.error(match name.as_bytes() == xattr::LAYOUT {
            true => libc::EPERM,
            false => libc::ENODATA,
        })
    }
}

/// How a mount is set up.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// The file system's name in /proc/mounts (`nacre:<fsname>`).
    pub fsname: String,
    /// Extra `-o` options, passed to FUSE as they are.
    pub options: Vec<String>,
}

/// The FUSE options of a nacre mount.
pub fn mount_options(cfg: &MountConfig) -> Vec<MountOption> {
    let mut o = vec![
        MountOption::FSName(cfg.fsname.clone()),
        MountOption::Subtype("nacre".into()),
        MountOption::DefaultPermissions,
        MountOption::AllowOther,
        MountOption::RW,
    ];
    o.extend(cfg.options.iter().map(|s| MountOption::CUSTOM(s.clone())));
    o
}

/// Mounts `client`'s file system at `mountpoint` until the returned session drops.
pub fn mount(
    client: Client,
    mountpoint: &Path,
    cfg: &MountConfig,
) -> io::Result<fuser::BackgroundSession> {
    fuser::spawn_mount2(NacreFs::new(client), mountpoint, &mount_options(cfg))
}

/// Serves until `stop` (a signal) or until the mount goes away (`nacre umount`). On
/// a stop it unmounts and waits for the session to end, which closes every open file
/// (their sizes reach the MDS). A mount still in use refuses to go (EBUSY): it then
/// says so and keeps serving until its files are closed and it is unmounted.
pub fn serve_until(session: fuser::BackgroundSession, stop: &AtomicBool, mountpoint: &Path) {
    while !stop.load(Ordering::Relaxed) && !session.guard.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (done, ended) = crossbeam_channel::bounded::<()>(1);
    std::thread::spawn(move || {
        // join() unmounts, then waits for the session thread (it panics if the session
        // ended in an error, which was logged already).
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.join()));
        let _ = done.send(());
    });
    if ended.recv_timeout(Duration::from_secs(5)).is_err() {
        eprintln!(
            "nacre mount: {} is busy: still serving; close its files, then nacre umount {0}",
            mountpoint.display()
        );
        let _ = ended.recv();
    }
}
