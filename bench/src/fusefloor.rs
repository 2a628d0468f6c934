//! `nacre-bench fuse-floor MOUNTPOINT`: the fastest a FUSE file system can create files
//! on this machine. It mounts a file system that keeps its namespace in memory and
//! answers every request at once, with the options a nacre mount uses
//! (`default_permissions`, `allow_other`) on one session thread (`--threads` for more:
//! one is the floor of a FUSE file system as most run, and the reference issue 27's
//! target names), and serves until it is unmounted
//! (`fusermount3 -u MOUNTPOINT`). A create workload run on it pays the kernel's FUSE
//! round trips (getattr of the directory, lookup, create, flush, release) and nothing
//! else: `bench/compare-mount` runs the same workload on it beside the nacre mount, so
//! the mount's create rate can be read against FUSE's own ceiling.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use clap::Args;

use crate::BenchError;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, LockOwner, MountOption,
    OpenFlags, ReplyAttr, ReplyCreate, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, Request,
};

#[derive(Args)]
pub struct FuseFloorArgs {
    /// Where to mount (an empty directory).
    pub mountpoint: PathBuf,
    /// FUSE session threads (a nacre mount runs one per two CPUs, 1 to 4).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// As long as a nacre mount keeps attributes.
const TTL: Duration = Duration::from_secs(1);

/// Directories and empty files, by inode (the root is 1).
struct Tree {
    attrs: HashMap<u64, FileAttr>,
    names: HashMap<(u64, OsString), u64>,
    next: u64,
}

/// The tree behind one lock: the session threads take turns.
struct MemFs(Mutex<Tree>);

impl MemFs {
    fn new() -> MemFs {
        let mut t = Tree {
            attrs: HashMap::new(),
            names: HashMap::new(),
            next: 2,
        };
        t.attrs.insert(1, attr(1, FileType::Directory, 0o777, 0, 0));
        MemFs(Mutex::new(t))
    }

    fn tree(&self) -> MutexGuard<'_, Tree> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `name` under `parent`; EEXIST if it is there.
    fn add(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        kind: FileType,
        mode: u32,
    ) -> Result<FileAttr, Errno> {
        let mut t = self.tree();
        if t.names.contains_key(&(parent, name.to_owned())) {
            return Err(Errno::EEXIST);
        }
        let a = attr(t.next, kind, mode, req.uid(), req.gid());
        t.next += 1;
        t.names.insert((parent, name.to_owned()), a.ino.0);
        t.attrs.insert(a.ino.0, a);
        if let Some(p) = t.attrs.get_mut(&parent) {
            (p.mtime, p.ctime) = (a.ctime, a.ctime);
        }
        Ok(a)
    }
}

fn attr(ino: u64, kind: FileType, mode: u32, uid: u32, gid: u32) -> FileAttr {
    let now = SystemTime::now();
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind,
        perm: (mode & 0o7777) as u16,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid,
        gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl fuser::Filesystem for MemFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let t = self.tree();
        match t.names.get(&(parent.0, name.to_owned())) {
            Some(ino) => reply.entry(&TTL, &t.attrs[ino], Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree().attrs.get(&ino.0) {
            Some(a) => reply.attr(&TTL, a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.add(req, parent.0, name, FileType::Directory, mode & !umask) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.add(req, parent.0, name, FileType::RegularFile, mode & !umask) {
            Ok(a) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO)
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    #[allow(clippy::too_many_arguments)]
    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut t = self.tree();
        match t.names.remove(&(parent.0, name.to_owned())) {
            Some(ino) => {
                t.attrs.remove(&ino);
                reply.ok()
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let t = self.tree();
        let children = t.names.iter().filter(|((p, _), _)| *p == ino.0);
        for (i, ((_, name), child)) in children.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*child), i as u64 + 1, t.attrs[child].kind, name) {
                break;
            }
        }
        reply.ok()
    }
}

pub fn run(args: &FuseFloorArgs) -> Result<(), BenchError> {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("nacre-fuse-floor".into()),
        MountOption::DefaultPermissions,
        MountOption::RW,
    ];
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(args.threads.max(1));
    config.clone_fd = args.threads > 1;
    // Serves until the file system is unmounted.
    fuser::mount(MemFs::new(), &args.mountpoint, &config)?;
    Ok(())
}
