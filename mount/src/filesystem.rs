//! The FUSE operations: namespace requests on the session threads, data and anything
//! that touches the OSTs on the workers.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    BsdFileFlags, Errno, FileHandle, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, TimeOrNow, WriteFlags,
};
use nacre_client::{errno, File};
use nacre_proto::meta::{self, Attr, Creds, FileKind, LockRequest, Reply, Request, SetAttr};

use crate::byino;
use crate::convert::{
    kernel_offsets, kind_of, lock_kind, lock_request, name_of, new_mode, time_ns, unlock_all,
};
use crate::shared::Shared;
use crate::{fuse_attr, lock, xattr, NacreFs, ATTR_TTL, MAX_IO, READDIR_BATCH};

impl fuser::Filesystem for NacreFs {
    fn init(&mut self, _req: &fuser::Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Large requests, so big reads and writes reach the striped path whole.
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO);
        let _ = config.add_capabilities(InitFlags::FUSE_BIG_WRITES);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // fcntl and flock locks come to us and go to the MDS, so they hold across
        // mounts (the kernel would otherwise keep them per mount).
        let _ = config.add_capabilities(InitFlags::FUSE_POSIX_LOCKS);
        let _ = config.add_capabilities(InitFlags::FUSE_FLOCK_LOCKS);
        // Listings carry attributes (readdirplus), when the kernel judges it pays.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        let _ = config.add_capabilities(InitFlags::FUSE_READDIRPLUS_AUTO);
        self.no_opendir = config
            .add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
            .is_ok();
        // Files are opened with direct I/O (no page cache between two mounts); this
        // lets the kernel map them shared all the same (Linux 6.6): a mapping's pages
        // are read and written back through us, and written through the same mount
        // they stay coherent with read(2) and write(2). Older kernels refuse (ENODEV).
        if config
            .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_err()
        {
            tracing::info!(
                "this kernel cannot map direct-I/O files shared: mmap(MAP_SHARED) is refused"
            );
        }
        Ok(())
    }

    fn lookup(&self, req: &fuser::Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let parent = parent.0;
        if byino::answers(parent, name.as_bytes()) {
            // Answered here (the one MDS request, a getattr, is short).
            return byino::lookup(&self.sh, &self.creds(req), parent, name.as_bytes(), reply);
        }
        let r = Request::Lookup {
            parent,
            name: name_of(name),
        };
        self.inline(req, |sh, creds| match sh.client.request_as(creds, &r) {
            // A negative entry: the kernel remembers the name is missing for ATTR_TTL
            // (as it remembers attributes), so a search along PATH, an import path or
            // a build's probes ask the MDS once per name, not once per call. A create
            // through this mount replaces it at once; another mount's shows within
            // ATTR_TTL.
            Err(e) if errno(&e) == libc::ENOENT => {
                let mut none = fuse_attr(&negative());
                none.ino = INodeNo(0);
                reply.entry(&ATTR_TTL, &none, Generation(0))
            }
            r => sh.entry(reply, r),
        });
    }

    /// nacre keeps no state for an open directory (readdir goes by cookie): with
    /// FUSE_NO_OPENDIR_SUPPORT the kernel stops asking after this first ENOSYS, which
    /// saves a round trip per `ls`, `find` step or `opendir(3)`.
    fn opendir(&self, _req: &fuser::Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.no_opendir {
            true => reply.error(Errno::ENOSYS),
            false => reply.opened(FileHandle(0), FopenFlags::empty()),
        }
    }

    fn getattr(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        _fh: Option<FileHandle>,
        reply: ReplyAttr,
    ) {
        let ino = ino.0;
        if byino::is_virtual(ino) {
            return reply.attr(&ATTR_TTL, &byino::dir_attr(ino));
        }
        // A directory's attributes may come from this mount's cache (`DirAttrs`).
        self.inline(req, |sh, creds| match sh.dirs.get(ino) {
            Some(a) => reply.attr(&ATTR_TTL, &fuse_attr(&a)),
            None => sh.reply_attr(reply, sh.attr(creds, ino)),
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ino = ino.0;
        let fh = fh.map(|f| f.0);
        let mut s = SetAttr::default();
        match (mode, size) {
            // A mode with a size is the kernel dropping setuid/setgid for a truncate
            // (a chmod never comes with a size): the MDS does that itself, for anyone
            // who may write, where a mode change needs the owner.
            (Some(_), Some(_)) => s.mask |= meta::set::KILL_PRIV,
            (Some(m), None) => {
                s.mask |= meta::set::MODE;
                s.mode = m & 0o7777;
            }
            _ => {}
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

    fn readlink(&self, req: &fuser::Request, ino: INodeNo, reply: ReplyData) {
        let ino = ino.0;
        self.inline(req, |sh, creds| {
            match sh.client.request_as(creds, &Request::Readlink { ino }) {
                Ok(Reply::Target(t)) => reply.data(&t),
                Ok(_) => reply.error(Errno::EIO),
                Err(e) => reply.error(Errno::from_i32(errno(&e))),
            }
        });
    }

    fn mkdir(
        &self,
        req: &fuser::Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let parent = parent.0;
        let r = Request::Mkdir {
            parent,
            name: name_of(name),
            mode: new_mode(mode, umask),
        };
        self.inline(req, |sh, creds| {
            sh.new_entry(reply, parent, sh.client.request_as(creds, &r))
        });
    }

    fn unlink(&self, req: &fuser::Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let parent = parent.0;
        let r = Request::Unlink {
            parent,
            name: name_of(name),
        };
        self.inline(req, |sh, creds| {
            sh.dirs.forget(parent);
            sh.done(reply, sh.client.request_as(creds, &r))
        });
    }

    fn rmdir(&self, req: &fuser::Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let parent = parent.0;
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
        &self,
        req: &fuser::Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let parent = parent.0;
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
        &self,
        req: &fuser::Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let parent = parent.0;
        let newparent = newparent.0;
        let flags = flags.bits();
        // RENAME_NOREPLACE is the MDS's; RENAME_EXCHANGE and WHITEOUT are not offered.
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return reply.error(Errno::EINVAL);
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
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let ino = ino.0;
        let newparent = newparent.0;
        let r = Request::Link {
            ino,
            new_parent: newparent,
            new_name: name_of(newname),
        };
        self.inline(req, |sh, creds| {
            sh.new_entry(reply, newparent, sh.client.request_as(creds, &r))
        });
    }

    fn open(&self, req: &fuser::Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let ino = ino.0;
        let flags = flags.0;
        let op = move |sh: &Shared, creds: &Creds| match sh.client.open_ino_as(
            creds,
            ino,
            kernel_offsets(flags),
        ) {
            Ok(f) => reply.opened(
                FileHandle(sh.add_file(f, creds)),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(Errno::from_i32(errno(&e))),
        };
        // O_TRUNC empties the objects on the OSTs.
        self.inline_unless_osts(req, flags & libc::O_TRUNC != 0, op);
    }

    fn create(
        &self,
        req: &fuser::Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let parent = parent.0;
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
                    let fh = sh.add_file(f, creds);
                    reply.created(
                        &ATTR_TTL,
                        &attr,
                        Generation(0),
                        FileHandle(fh),
                        FopenFlags::FOPEN_DIRECT_IO,
                    )
                }
                Err(e) => reply.error(Errno::from_i32(errno(&e))),
            }
        };
        // O_TRUNC of an existing file empties its objects on the OSTs.
        self.inline_unless_osts(req, flags & libc::O_TRUNC != 0, op);
    }

    /// A regular file made without opening it (mknod(2), and what some tools use for
    /// an empty file), or a FIFO, socket or device node: inodes only, which the kernel
    /// opens itself (a FIFO's pipe lives in the kernel of the host that opens it).
    fn mknod(
        &self,
        req: &fuser::Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let parent = parent.0;
        let r = match mode & libc::S_IFMT {
            0 | libc::S_IFREG => Request::Create {
                parent,
                name: name_of(name),
                mode: new_mode(mode, umask),
                flags: meta::CREATE_EXCL,
                layout: None,
            },
            _ => match FileKind::special_from_mode(mode) {
                Some(kind) => Request::Mknod {
                    parent,
                    name: name_of(name),
                    kind,
                    mode: new_mode(mode, umask),
                    rdev: rdev.into(),
                },
                None => return reply.error(Errno::EINVAL),
            },
        };
        self.inline(req, |sh, creds| {
            sh.new_entry(reply, parent, sh.client.request_as(creds, &r))
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _req: &fuser::Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fh = fh.0;
        let file = match self.sh.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(Errno::from_i32(e)),
        };
        let sh = self.sh.clone();
        self.offload(move || {
            let mut buf = sh.bufs.take(size as usize);
            match file.read_at(&mut buf, offset) {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => reply.error(Errno::from_i32(errno(&e))),
            }
            sh.bufs.give(buf);
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        _req: &fuser::Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let ino = ino.0;
        let fh = fh.0;
        let file = match self.sh.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(Errno::from_i32(e)),
        };
        // The kernel's buffer lives for this call only: copied into a pooled one.
        let mut buf = self.sh.bufs.take(data.len());
        buf.copy_from_slice(data);
        let sh = self.sh.clone();
        self.offload(move || {
            match sh
                .before_write(fh, ino)
                .and_then(|_| file.write_at(&buf, offset))
            {
                Ok(n) => reply.written(n as u32),
                Err(e) => reply.error(Errno::from_i32(errno(&e))),
            }
            sh.bufs.give(buf);
        });
    }

    fn flush(
        &self,
        _req: &fuser::Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let ino = ino.0;
        let fh = fh.0;
        let lock_owner = lock_owner.0;
        // close(2) of a descriptor: its size becomes visible to other clients, and
        // the closing owner's POSIX locks on the file go (POSIX: any close drops them).
        let file = match self.sh.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(Errno::from_i32(e)),
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
                Err(e) => reply.error(Errno::from_i32(errno(&e))),
            }
        });
    }

    /// fsync(2): every write of the handle durable on the OSTs and its size at the MDS,
    /// so that other mounts and clients see both once it returns.
    fn fsync(
        &self,
        _req: &fuser::Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fh = fh.0;
        let file = match self.sh.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(Errno::from_i32(e)),
        };
        self.offload(move || match file.fsync() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(Errno::from_i32(errno(&e))),
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn getlk(
        &self,
        _req: &fuser::Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let ino = ino.0;
        let lock_owner = lock_owner.0;
        let Some(kind) = lock_kind(typ) else {
            return reply.error(Errno::EINVAL);
        };
        let test = LockRequest {
            test: true,
            ..lock_request(ino, lock_owner, start, end, kind, pid)
        };
        match self.sh.client.lock(test) {
            Ok(Reply::Lock(d)) => reply.locked(d.start, d.end, d.kind as i32, d.pid),
            Ok(_) => reply.error(Errno::EIO),
            Err(e) => reply.error(Errno::from_i32(errno(&e))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setlk(
        &self,
        _req: &fuser::Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let ino = ino.0;
        let lock_owner = lock_owner.0;
        let Some(kind) = lock_kind(typ) else {
            return reply.error(Errno::EINVAL);
        };
        let l = lock_request(ino, lock_owner, start, end, kind, pid);
        lock(&self.sh.locked).insert(ino);
        if !sleep {
            return match self.sh.client.lock(l) {
                Ok(_) => reply.ok(),
                Err(e) => reply.error(Errno::from_i32(errno(&e))),
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
                                return reply.error(Errno::EINTR);
                            }
                            std::thread::sleep(pause);
                            pause = (pause * 2).min(Duration::from_millis(50));
                        }
                        Err(e) => return reply.error(Errno::from_i32(errno(&e))),
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("starting a lock waiter: {e}");
        }
    }

    fn release(
        &self,
        _req: &fuser::Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let ino = ino.0;
        let fh = fh.0;
        let lock_owner = lock_owner.map(|o| o.0);
        let Some(file) = self.sh.forget_file(fh) else {
            return reply.error(Errno::EBADF);
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
            Some(Err(e)) => reply.error(Errno::from_i32(errno(&e))),
            _ => reply.ok(),
        }
    }

    fn readdir(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let ino = ino.0;
        if byino::is_virtual(ino) {
            return reply.ok(); // not listed
        }
        let creds = self.creds(req);
        let dots = match self.dots(&creds, ino, offset) {
            Ok(d) => d,
            Err(e) => return reply.error(Errno::from_i32(e)),
        };
        for (dino, off, name) in dots {
            if reply.add(INodeNo(dino), off, fuser::FileType::Directory, name) {
                return reply.ok();
            }
        }
        // Past the dots, FUSE offsets are nacre's readdir cookies plus DOTS: each entry
        // carries the cookie that resumes after it, stable while entries come and go.
        let mut cookie = offset.saturating_sub(DOTS);
        loop {
            let r = Request::Readdir {
                dir: ino,
                cookie,
                max: READDIR_BATCH,
            };
            let (entries, eof) = match self.sh.client.request_as(&creds, &r) {
                Ok(Reply::Dir { entries, eof, .. }) => (entries, eof),
                Ok(_) => return reply.error(Errno::EIO),
                Err(e) => return reply.error(Errno::from_i32(errno(&e))),
            };
            for e in &entries {
                let name = OsStr::from_bytes(&e.name);
                if reply.add(INodeNo(e.ino), e.cookie + DOTS, kind_of(e.kind), name) {
                    return reply.ok();
                }
                cookie = e.cookie;
            }
            if eof || entries.is_empty() {
                return reply.ok();
            }
        }
    }

    /// readdir with attributes (the kernel asks for it when a listing is followed by
    /// lookups, as `ls -l` and `find` do): one MDS page gives the entries and their
    /// attributes, which the kernel caches for ATTR_TTL as a lookup's, so the stats
    /// that follow cost no request.
    fn readdirplus(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ino = ino.0;
        if byino::is_virtual(ino) {
            return reply.ok(); // not listed
        }
        let creds = self.creds(req);
        tracing::debug!(ino, offset, "readdirplus");
        let dots = match self.dots(&creds, ino, offset) {
            Ok(d) => d,
            Err(e) => return reply.error(Errno::from_i32(e)),
        };
        for (dino, off, name) in dots {
            // The kernel links no entry for the dots: their attributes go unused.
            let attr = fuse_attr(&Attr {
                ino: dino,
                kind: FileKind::Dir,
                ..negative()
            });
            if reply.add(INodeNo(dino), off, name, &ATTR_TTL, &attr, Generation(0)) {
                return reply.ok();
            }
        }
        let mut cookie = offset.saturating_sub(DOTS);
        loop {
            let r = Request::ReaddirPlus {
                dir: ino,
                cookie,
                max: READDIR_BATCH,
            };
            let (entries, eof) = match self.sh.client.request_as(&creds, &r) {
                Ok(Reply::DirPlus { entries, eof, .. }) => (entries, eof),
                Ok(_) => return reply.error(Errno::EIO),
                Err(e) => return reply.error(Errno::from_i32(errno(&e))),
            };
            let (done, local) = (eof || entries.is_empty(), self.sh.local_sizes());
            for (e, mut a) in entries {
                self.sh.dirs.fetched(&a);
                if let Some(&size) = local.get(&a.ino) {
                    a.size = a.size.max(size);
                }
                let name = OsStr::from_bytes(&e.name);
                let attr = fuse_attr(&a);
                if reply.add(
                    INodeNo(e.ino),
                    e.cookie + DOTS,
                    name,
                    &ATTR_TTL,
                    &attr,
                    Generation(0),
                ) {
                    return reply.ok();
                }
                cookie = e.cookie;
            }
            if done {
                return reply.ok();
            }
        }
    }

    fn statfs(&self, _req: &fuser::Request, _ino: INodeNo, reply: ReplyStatfs) {
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
            Err(e) => reply.error(Errno::from_i32(errno(&e))),
        }
    }

    fn getxattr(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        let ino = ino.0;
        match xattr::get(&self.sh.client, &self.creds(req), ino, name.as_bytes()) {
            Ok(value) => xattr::answer(reply, size, &value),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    fn setxattr(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let ino = ino.0;
        self.sh.dirs.forget(ino);
        match xattr::set(
            &self.sh.client,
            &self.creds(req),
            ino,
            name.as_bytes(),
            value,
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    fn listxattr(&self, _req: &fuser::Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr::answer(reply, size, xattr::LIST)
    }

    fn removexattr(&self, _req: &fuser::Request, _ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply.error(
            match name.as_bytes() == xattr::LAYOUT || name.as_bytes() == xattr::HSM {
                true => Errno::EPERM,
                false => Errno::ENODATA,
            },
        )
    }
}

/// The attributes a negative entry carries (the kernel reads only its inode number, 0).
/// FUSE offsets 1 and 2 are "." and ".." (listed first, as ext4 lists them); the
/// MDS's readdir cookies follow, shifted by this.
const DOTS: u64 = 2;

impl NacreFs {
    /// The dots a listing from FUSE `offset` starts with: (ino, offset after, name).
    /// ".." costs one lookup, made only when a listing starts.
    fn dots(
        &self,
        creds: &Creds,
        ino: u64,
        offset: u64,
    ) -> Result<Vec<(u64, u64, &'static str)>, i32> {
        if offset >= DOTS {
            return Ok(Vec::new());
        }
        let up = Request::Lookup {
            parent: ino,
            name: b"..".to_vec(),
        };
        let parent = match self.sh.client.request_as(creds, &up) {
            Ok(Reply::Attr(a)) => a.ino,
            Ok(_) => return Err(libc::EIO),
            Err(e) => return Err(errno(&e)),
        };
        let all = [(ino, 1, "."), (parent, 2, "..")];
        Ok(all[offset as usize..].to_vec())
    }
}

fn negative() -> nacre_proto::meta::Attr {
    nacre_proto::meta::Attr {
        ino: 0,
        kind: FileKind::File,
        mode: 0,
        uid: 0,
        gid: 0,
        nlink: 0,
        size: 0,
        atime: 0,
        mtime: 0,
        ctime: 0,
        rdev: 0,
    }
}
