//! The FUSE operations: namespace requests on the session thread, data and anything
//! that touches the OSTs on the workers.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    KernelConfig, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, TimeOrNow,
};
use nacre_client::{errno, File};
use nacre_proto::meta::{self, Creds, FileKind, LockRequest, Reply, Request, SetAttr};

use crate::convert::{
    kernel_offsets, kind_of, lock_kind, lock_request, name_of, new_mode, time_ns, unlock_all,
};
use crate::shared::Shared;
use crate::{fuse_attr, lock, xattr, NacreFs, ATTR_TTL, MAX_IO, READDIR_BATCH};

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
            Ok(f) => reply.opened(sh.add_file(f, creds), fuser::consts::FOPEN_DIRECT_IO),
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
                    let fh = sh.add_file(f, creds);
                    reply.created(&ATTR_TTL, &attr, 0, fh, fuser::consts::FOPEN_DIRECT_IO)
                }
                Err(e) => reply.error(errno(&e)),
            }
        };
        // O_TRUNC of an existing file empties its objects on the OSTs.
        self.inline_unless_osts(req, flags & libc::O_TRUNC != 0, op);
    }

    /// A regular file made without opening it (mknod(2), and what some tools use for
    /// an empty file), or a FIFO, socket or device node: inodes only, which the kernel
    /// opens itself (a FIFO's pipe lives in the kernel of the host that opens it).
    fn mknod(
        &mut self,
        req: &fuser::Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
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
                None => return reply.error(libc::EINVAL),
            },
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
        ino: u64,
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
            match sh
                .before_write(fh, ino)
                .and_then(|_| file.write_at(&buf, offset.max(0) as u64))
            {
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

    /// fsync(2): every write of the handle durable on the OSTs and its size at the MDS,
    /// so that other mounts and clients see both once it returns.
    fn fsync(
        &mut self,
        _req: &fuser::Request<'_>,
        _ino: u64,
        fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let file = match self.sh.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        self.offload(move || match file.fsync() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
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
        let Some(file) = self.sh.forget_file(fh) else {
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
        reply.error(
            match name.as_bytes() == xattr::LAYOUT || name.as_bytes() == xattr::HSM {
                true => libc::EPERM,
                false => libc::ENODATA,
            },
        )
    }
}
