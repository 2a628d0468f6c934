//! What the session thread and the workers share: the client, the open files, the
//! data buffers, and the answers to FUSE built from the MDS's replies.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fuser::{ReplyAttr, ReplyEmpty, ReplyEntry};
use nacre_client::{errno, Client, File};
use nacre_proto::meta::{self, Attr, Creds, FileKind, Reply, Request, SetAttr};

use crate::convert::attr_of;
use crate::{fuse_attr, lock, DirAttrs, ATTR_TTL, MAX_IO, WORKERS};

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;

/// What the workers share.
pub struct Shared {
    pub client: Client,
    pub bufs: BufPool,
    pub files: Mutex<HashMap<u64, Arc<File>>>,
    pub next_fh: AtomicU64,
    /// Inodes this mount has taken locks on: only their closes need an unlock sent.
    pub locked: Mutex<HashSet<u64>>,
    /// Handles whose first write must drop setuid/setgid first, with their opener's
    /// credentials: FUSE sends direct writes without killing privileges itself, and
    /// Linux drops them at a write by a process without CAP_FSETID.
    pub kill_privs: Mutex<HashMap<u64, Creds>>,
    pub dirs: DirAttrs,
}

/// Data buffers reused from one request to the next: a buffer keeps its address, so
/// the client's registration cache finds it registered already (a fresh allocation
/// per request would cost a memory registration per request).
#[derive(Default)]
pub struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufPool {
    /// A buffer of `len` bytes (contents unspecified).
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut b = lock(&self.free).pop().unwrap_or_default();
        b.resize(len, 0);
        b
    }

    pub fn give(&self, b: Vec<u8>) {
        let mut free = lock(&self.free);
        if free.len() < WORKERS * 2 && b.capacity() <= MAX_IO as usize {
            free.push(b);
        }
    }
}

impl Shared {
    pub fn file(&self, fh: u64) -> Result<Arc<File>, i32> {
        lock(&self.files).get(&fh).cloned().ok_or(libc::EBADF)
    }

    pub fn add_file(&self, f: File, creds: &Creds) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let a = f.attr();
        let privileged = a.mode & S_ISUID != 0 || a.mode & (S_ISGID | 0o010) == S_ISGID | 0o010;
        if privileged && creds.uid != 0 && a.kind == FileKind::File {
            lock(&self.kill_privs).insert(fh, creds.clone());
        }
        lock(&self.files).insert(fh, Arc::new(f));
        fh
    }

    pub fn forget_file(&self, fh: u64) -> Option<Arc<File>> {
        lock(&self.kill_privs).remove(&fh);
        lock(&self.files).remove(&fh)
    }

    /// Before the first write through `fh`: drops setuid/setgid if its opener is not
    /// root (see [`Shared::kill_privs`]).
    pub fn before_write(&self, fh: u64, ino: u64) -> io::Result<()> {
        let Some(creds) = lock(&self.kill_privs).remove(&fh) else {
            return Ok(());
        };
        let s = SetAttr {
            mask: meta::set::KILL_PRIV,
            ..SetAttr::default()
        };
        self.client
            .request_as(&creds, &Request::Setattr { ino, attr: s })
            .map(|_| ())
    }

    pub fn is_locked(&self, ino: u64) -> bool {
        lock(&self.locked).contains(&ino)
    }

    /// Every open handle of `ino` forgets sizes past `size` (a truncate).
    pub fn resized(&self, ino: u64, size: u64) {
        lock(&self.files)
            .values()
            .filter(|f| f.ino() == ino)
            .for_each(|f| f.resized(size));
    }

    pub fn entry(&self, reply: ReplyEntry, r: io::Result<Reply>) {
        match r.and_then(attr_of) {
            Ok(mut a) => {
                self.dirs.fetched(&a);
                if let Some(size) = self.local_size(a.ino) {
                    a.size = a.size.max(size);
                }
                reply.entry(&ATTR_TTL, &fuse_attr(&a), fuser::Generation(0))
            }
            Err(e) => reply.error(fuser::Errno::from_i32(errno(&e))),
        }
    }

    /// The answer to a request that added an entry to `parent`.
    pub fn new_entry(&self, reply: ReplyEntry, parent: u64, r: io::Result<Reply>) {
        match r.and_then(attr_of) {
            Ok(a) => {
                self.dirs.entry_added(parent, &a);
                self.entry(reply, Ok(Reply::Attr(a)))
            }
            Err(e) => reply.error(fuser::Errno::from_i32(errno(&e))),
        }
    }

    pub fn done(&self, reply: ReplyEmpty, r: io::Result<Reply>) {
        match r {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(fuser::Errno::from_i32(errno(&e))),
        }
    }

    /// The size this mount's open handles know for `ino` beyond the MDS's (writes
    /// not yet reported), so the kernel is never told a file shrank under its writer.
    pub fn local_size(&self, ino: u64) -> Option<u64> {
        lock(&self.files)
            .values()
            .filter(|f| f.ino() == ino)
            .map(|f| f.attr().size)
            .max()
    }

    /// [`Shared::local_size`] of every inode open here, in one pass (for a listing,
    /// whose entries would each walk the open files).
    pub fn local_sizes(&self) -> HashMap<u64, u64> {
        let mut sizes = HashMap::new();
        for f in lock(&self.files).values() {
            let size = sizes.entry(f.ino()).or_insert(0);
            *size = f.attr().size.max(*size);
        }
        sizes
    }

    pub fn attr(&self, creds: &Creds, ino: u64) -> io::Result<Attr> {
        let mut a = attr_of(self.client.request_as(creds, &Request::Getattr { ino })?)?;
        self.dirs.fetched(&a);
        if let Some(size) = self.local_size(ino) {
            a.size = a.size.max(size);
        }
        Ok(a)
    }

    pub fn reply_attr(&self, reply: ReplyAttr, r: io::Result<Attr>) {
        match r {
            Ok(a) => reply.attr(&ATTR_TTL, &fuse_attr(&a)),
            Err(e) => reply.error(fuser::Errno::from_i32(errno(&e))),
        }
    }

    /// setattr: through the handle for ftruncate on a descriptor open for writing
    /// (POSIX needs no permission beyond the open's), else as the caller.
    pub fn setattr(
        &self,
        creds: &Creds,
        ino: u64,
        s: SetAttr,
        fh: Option<u64>,
    ) -> io::Result<Attr> {
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
