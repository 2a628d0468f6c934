//! `nacre-bench fuse-floor MOUNTPOINT`: the fastest a FUSE file system can create files
//! on this machine. It mounts a file system that keeps its namespace in memory and
//! answers every request on the session thread at once, with the options a nacre mount
//! uses (`default_permissions`, `allow_other`), and serves until it is unmounted
//! (`fusermount3 -u MOUNTPOINT`). A create workload run on it pays the kernel's FUSE
//! round trips (getattr of the directory, lookup, create, flush, release) and nothing
//! else: `bench/compare-mount` runs the same workload on it beside the nacre mount, so
//! the mount's create rate can be read against FUSE's own ceiling.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Args;

use crate::BenchError;
use fuser::{
    FileAttr, FileType, MountOption, ReplyAttr, ReplyCreate, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, Request,
};

#[derive(Args)]
pub struct FuseFloorArgs {
    /// Where to mount (an empty directory).
    pub mountpoint: PathBuf,
}

/// As long as a nacre mount keeps attributes.
const TTL: Duration = Duration::from_secs(1);

/// Directories and empty files, by inode (the root is 1).
struct MemFs {
    attrs: HashMap<u64, FileAttr>,
    names: HashMap<(u64, OsString), u64>,
    next: u64,
}

impl MemFs {
    fn new() -> MemFs {
        let mut fs = MemFs {
            attrs: HashMap::new(),
            names: HashMap::new(),
            next: 2,
        };
        fs.attrs
            .insert(1, attr(1, FileType::Directory, 0o777, 0, 0));
        fs
    }

    /// Adds `name` under `parent`; EEXIST if it is there.
    fn add(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        kind: FileType,
        mode: u32,
    ) -> Result<FileAttr, i32> {
        if self.names.contains_key(&(parent, name.to_owned())) {
            return Err(libc::EEXIST);
        }
        let a = attr(self.next, kind, mode, req.uid(), req.gid());
        self.next += 1;
        self.names.insert((parent, name.to_owned()), a.ino);
        self.attrs.insert(a.ino, a);
        if let Some(p) = self.attrs.get_mut(&parent) {
            (p.mtime, p.ctime) = (a.ctime, a.ctime);
        }
        Ok(a)
    }
}

fn attr(ino: u64, kind: FileType, mode: u32, uid: u32, gid: u32) -> FileAttr {
    let now = SystemTime::now();
    FileAttr {
        ino,
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
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self.names.get(&(parent, name.to_owned())) {
            Some(ino) => reply.entry(&TTL, &self.attrs[ino], 0),
            None => reply.error(libc::ENOENT),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.attrs.get(&ino) {
            Some(a) => reply.attr(&TTL, a),
            None => reply.error(libc::ENOENT),
        }
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.add(req, parent, name, FileType::Directory, mode & !umask) {
            Ok(a) => reply.entry(&TTL, &a, 0),
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.add(req, parent, name, FileType::RegularFile, mode & !umask) {
            Ok(a) => reply.created(&TTL, &a, 0, 0, fuser::consts::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn open(&mut self, _req: &Request<'_>, _ino: u64, _flags: i32, reply: ReplyOpen) {
        reply.opened(0, fuser::consts::FOPEN_DIRECT_IO)
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _owner: u64, reply: ReplyEmpty) {
        reply.ok()
    }

    #[allow(clippy::too_many_arguments)]
    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _flags: i32,
        _owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        match self.names.remove(&(parent, name.to_owned())) {
            Some(ino) => {
                self.attrs.remove(&ino);
                reply.ok()
            }
            None => reply.error(libc::ENOENT),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let children = self.names.iter().filter(|((p, _), _)| *p == ino);
        for (i, ((_, name), child)) in children.enumerate().skip(offset as usize) {
            if reply.add(*child, i as i64 + 1, self.attrs[child].kind, name) {
                break;
            }
        }
        reply.ok()
    }
}

pub fn run(args: &FuseFloorArgs) -> Result<(), BenchError> {
    let options = [
        MountOption::FSName("nacre-fuse-floor".into()),
        MountOption::DefaultPermissions,
        MountOption::AllowOther,
        MountOption::RW,
    ];
    // Serves until the file system is unmounted.
    fuser::mount2(MemFs::new(), &args.mountpoint, &options)?;
    Ok(())
}
