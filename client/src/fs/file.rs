//! An open [`File`]: striped reads and writes straight from and into the caller's
//! buffers (or through its cache), size reports, fsync and close.

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use nacre_proto::layout::FileLayout;
use nacre_proto::meta::{self, Attr, FileKind, Reply, Request, SetAttr};

use super::errors::{attr_of, failure, protocol};
use super::mirrors::MirrorSet;
use super::{Client, O_BUFFERED};
use crate::cache::{Backing, Cache};
use crate::objects::{Extent, IoOptions, KeyBlock};
use crate::rpc::ClientError;

/// An open file. Reads and writes take `&self`: many threads may use one `File`.
pub struct File {
    client: Client,
    ino: u64,
    handle: u64,
    layout: Option<MirrorSet>,
    flags: i32,
    /// The attributes the MDS gave at open.
    opened: Attr,
    /// Whether the open made the file (its objects are new and empty).
    created: bool,
    /// The largest size this handle knows of (from the MDS, or its own writes).
    size: AtomicU64,
    /// The end of this handle's writes, and what of it the MDS was told.
    written_end: AtomicU64,
    reported: AtomicU64,
    closed: AtomicBool,
    /// The file's data is in its repository: reads ask the MDS to load their range
    /// first (until it answers that all of the file is in).
    released: AtomicBool,
    /// Write-behind and read-ahead, on a handle opened with [`O_BUFFERED`].
    cache: Option<Box<Mutex<Cache>>>,
    /// The first write must drop setuid and setgid first: the file has them and this
    /// client is not root (Linux drops them at a write by a process without
    /// CAP_FSETID; the MDS does it for a KILL_PRIV setattr).
    kill_priv: AtomicBool,
}

impl Client {
    /// The `File` of an MDS open handle (`opened`, an Opened reply); O_TRUNC empties
    /// the objects of a file that was there before.
    pub(super) fn file_from(&self, ino: u64, flags: i32, opened: Reply) -> io::Result<File> {
        let (attr, layout, handle, created) = match opened {
            Reply::Opened {
                attr,
                layout,
                handle,
                created,
            } => (attr, layout, handle, created),
            other => return Err(protocol(format!("expected an open handle, got {other:?}"))),
        };
        let released = layout.as_ref().is_some_and(|l| l.released);
        let writer = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let sgid_exec = libc::S_ISGID | 0o010;
        let privileged = attr.mode & libc::S_ISUID != 0 || attr.mode & sgid_exec == sgid_exec;
        let kill_priv =
            writer && privileged && attr.kind == FileKind::File && self.creds().uid != 0;
        let file = File {
            client: self.clone(),
            ino,
            handle,
            layout: layout.map(|l| MirrorSet::new(l, &self.map())),
            flags,
            opened: attr,
            created,
            size: AtomicU64::new(attr.size),
            written_end: AtomicU64::new(0),
            reported: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            released: AtomicBool::new(released),
            cache: (flags & O_BUFFERED != 0).then(Box::default),
            kill_priv: AtomicBool::new(kill_priv),
        };
        if handle != 0 {
            self.held_opens().opened(handle, ino);
            self.keep();
        }
        // The MDS emptied the file for any O_TRUNC (it checked write permission); a
        // file it just made has new objects with nothing in them (no request to every
        // OST a wide stripe spans, as `open(O_CREAT|O_TRUNC)` of a new file would cost).
        if flags & libc::O_TRUNC != 0 && !created {
            if let Some(set) = &file.layout {
                self.truncate_objects(ino, set, 0)?;
            }
        }
        Ok(file)
    }
}

impl File {
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// The file's objects (None for a file without a layout yet), as of the open.
    pub fn layout(&self) -> Option<&FileLayout> {
        self.layout.as_ref().map(MirrorSet::layout)
    }

    fn layout_or_einval(&self) -> io::Result<&MirrorSet> {
        self.layout
            .as_ref()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
    }

    fn may(&self, write: bool) -> io::Result<()> {
        let acc = self.flags & libc::O_ACCMODE;
        let ok = match write {
            true => acc == libc::O_WRONLY || acc == libc::O_RDWR,
            false => acc == libc::O_RDONLY || acc == libc::O_RDWR,
        };
        match ok && !self.closed.load(Ordering::Acquire) {
            true => Ok(()),
            false => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    /// Writes all of `data` at `offset` (pwrite); with O_APPEND, at the end of the file
    /// as the MDS knows it plus this handle's own writes. Returns `data.len()`. On a
    /// buffered handle ([`O_BUFFERED`]) small writes in order are gathered first.
    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<usize> {
        self.may(true)?;
        let offset = match self.flags & libc::O_APPEND != 0 {
            true => self.current_size()?,
            false => offset,
        };
        if data.is_empty() {
            return Ok(0);
        }
        self.layout_or_einval()?;
        if self.kill_priv.swap(false, Ordering::AcqRel) {
            let attr = SetAttr {
                mask: meta::set::KILL_PRIV,
                ..Default::default()
            };
            if let Err(e) = self.client.setattr_ino(self.ino, attr) {
                self.kill_priv.store(true, Ordering::Release);
                return Err(e);
            }
        }
        match &self.cache {
            Some(cache) => guard(cache).write(self, data, offset)?,
            None => self.write_direct(data, offset)?,
        }
        let end = offset + data.len() as u64;
        self.written_end.fetch_max(end, Ordering::AcqRel);
        self.size.fetch_max(end, Ordering::AcqRel);
        Ok(data.len())
    }

    /// Reads at `offset` into `buf` (pread): short only at the end of the file; holes
    /// read as zeros. On a buffered handle, reads in order are served from a window
    /// read ahead.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.may(false)?;
        match &self.cache {
            Some(cache) => guard(cache).read(self, buf, offset),
            None => self.read_direct(buf, offset),
        }
    }

    /// Sends what a buffered handle gathered.
    fn flush(&self) -> io::Result<()> {
        match &self.cache {
            Some(cache) => guard(cache).flush(self),
            None => Ok(()),
        }
    }

    /// Whether the open that made this handle created the file.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The attributes as of the open, with the size this handle knows now (no
    /// request: [`File::stat`] asks the MDS).
    pub fn attr(&self) -> Attr {
        Attr {
            size: self.size.load(Ordering::Acquire),
            ..self.opened
        }
    }

    /// The file's size now: the MDS's, or this handle's own writes if further.
    fn current_size(&self) -> io::Result<u64> {
        let attr = attr_of(
            self.client
                .meta(true, &Request::Getattr { ino: self.ino })?,
        )?;
        let size = self
            .size
            .fetch_max(attr.size, Ordering::AcqRel)
            .max(attr.size);
        Ok(size.max(self.written_end.load(Ordering::Acquire)))
    }

    /// The file's attributes (the size includes this handle's unreported writes).
    pub fn stat(&self) -> io::Result<Attr> {
        let mut attr = attr_of(
            self.client
                .meta(true, &Request::Getattr { ino: self.ino })?,
        )?;
        attr.size = attr.size.max(self.written_end.load(Ordering::Acquire));
        Ok(attr)
    }

    /// Makes every write of this handle durable and its size known to the MDS; a
    /// buffered handle then reads what other clients synced before it.
    pub fn fsync(&self) -> io::Result<()> {
        if let Some(cache) = &self.cache {
            let mut cache = guard(cache);
            cache.flush(self)?;
            cache.forget_reads();
        }
        if let Some(set) = &self.layout {
            self.client.with_conn(true, |c| {
                // A mirror that cannot be synced may not hold the writes: stale.
                c.each_mirror(self.ino, set, |c, _, stripes| {
                    for o in &stripes.objects {
                        let route = c.route(o.ost)?;
                        match c.ns.ep.obj_sync(&route, o.oid) {
                            // Never written: nothing of it to make durable.
                            Err(ClientError::Status(libc::ENOENT)) => {}
                            other => other?,
                        }
                    }
                    Ok(())
                })
            })?;
        }
        self.report_size()
    }

    /// Changes the attributes `attr.mask` names but the size (fchmod, fchown,
    /// futimens: [`File::set_len`] changes the size); the MDS checks the client's
    /// permission, as for a path.
    pub fn setattr(&self, attr: SetAttr) -> io::Result<Attr> {
        if attr.mask & meta::set::SIZE != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.client.setattr_ino(self.ino, attr)
    }

    /// Sets the file's size (ftruncate).
    pub fn set_len(&self, size: u64) -> io::Result<()> {
        self.may(true)?;
        let attr = SetAttr {
            mask: meta::set::SIZE,
            size,
            ..Default::default()
        };
        self.client.setattr_ino(self.ino, attr)?;
        self.resized(size);
        Ok(())
    }

    /// Another handle (or a truncate by inode) set the file's size to `size`: this
    /// handle forgets the larger size its own writes had shown it.
    pub fn resized(&self, size: u64) {
        if let Some(cache) = &self.cache {
            guard(cache).truncated(size);
        }
        self.size.store(size, Ordering::Release);
        self.written_end.store(size, Ordering::Release);
        self.reported.store(size, Ordering::Release);
    }

    /// Whether this handle wrote past the size the MDS was last told.
    pub fn unreported(&self) -> bool {
        self.written_end.load(Ordering::Acquire) > self.reported.load(Ordering::Acquire)
    }

    /// Tells the MDS where this handle's writes end (it keeps the larger size), so
    /// that other clients see it: what close and fsync do, without the sync.
    pub fn report_size(&self) -> io::Result<()> {
        self.flush()?;
        let end = self.written_end.load(Ordering::Acquire);
        if end > self.reported.load(Ordering::Acquire) {
            let req = Request::ReportSize {
                ino: self.ino,
                size: end,
            };
            // Under a replay key: a retry whose first try was applied is answered from
            // the MDS's reply cache, not applied after a later truncate.
            self.client.modify(|c| c.ns.call(&req))?;
            self.reported.fetch_max(end, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Closes the handle at the MDS, telling it the size this handle's writes reached
    /// in the same request.
    pub fn close(self) -> io::Result<()> {
        self.close_inner()
    }

    fn close_inner(&self) -> io::Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let flushed = self.flush();
        let end = self.written_end.load(Ordering::Acquire);
        let unreported = end > self.reported.load(Ordering::Acquire);
        self.client.held_opens().closing(self.handle);
        // The size rides on the close when there is one to tell: one MDS exchange.
        let req = match unreported {
            true => Request::CloseSized {
                ino: self.ino,
                handle: self.handle,
                size: end,
            },
            false => Request::Close {
                ino: self.ino,
                handle: self.handle,
            },
        };
        // Under a replay key: a retry whose first try was applied is answered from the
        // reply cache. A handle of an earlier MDS run that the restarted MDS did not
        // take back (its replay missed the recovery window) gets EBADF: nothing is
        // left to close, but the size is still told.
        let closed = match self.client.modify(|c| c.ns.call(&req)) {
            Ok(_) => {
                self.reported.fetch_max(end, Ordering::AcqRel);
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EBADF) && unreported => self.report_size(),
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => Ok(()),
            Err(e) => Err(e),
        };
        flushed.and(closed)
    }
}

impl Drop for File {
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::warn!("closing inode {}: {e}", self.ino);
        }
    }
}

/// A handle's transfers at the servers, under its cache.
impl Backing for File {
    /// Writes to every mirror in sync at once; a mirror with a down OST is marked stale
    /// and the write goes on to the others (under the same keys: a piece a server
    /// already applied is answered, not applied again).
    fn write_ranges(&self, window: &[u8], base: u64, ranges: &[Range<usize>]) -> io::Result<()> {
        let set = self.layout_or_einval()?;
        let mut pieces = Vec::new();
        for r in ranges {
            let at = base + r.start as u64;
            pieces.extend(
                set.geometry()
                    .pieces(at, r.len() as u64)
                    .map_err(|e| failure(libc::EINVAL, e.to_string()))?,
            );
        }
        let per = KeyBlock::needed(pieces.iter().map(|p| p.len as usize));
        let count = per * set.mirrors() as u64;
        self.client.change_objects(count, |c, keys| loop {
            let mut routes = Vec::new();
            let mut down = None;
            for m in set.in_sync() {
                match c.routes(set.stripes(m)) {
                    Ok(r) => routes.push((m, r)),
                    Err(e) => {
                        down = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = down {
                c.drop_mirror(self.ino, set, e)?;
                continue;
            }
            let mut all = Vec::new();
            for (m, r) in &routes {
                let key = *m as u64 * per;
                all.extend(Extent::of_pieces(set.stripes(*m), r, &pieces, base, key));
            }
            let io = IoOptions {
                keys: Some(*keys),
                ..c.io
            };
            match c.ns.ep.write_extents(&all, window, io) {
                Err(e @ ClientError::TargetDown(_)) => c.drop_mirror(self.ino, set, e)?,
                other => return other,
            }
        })
    }

    fn read_direct(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let want = offset.saturating_add(buf.len() as u64);
        let mut size = self.size.load(Ordering::Acquire);
        if want > size {
            // Past what this handle knows: another client may have written since.
            size = self.current_size()?;
        }
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let n = (size - offset).min(buf.len() as u64) as usize;
        if self.released.load(Ordering::Acquire) && self.client.load(self.ino, offset, n as u64)? {
            self.released.store(false, Ordering::Release);
        }
        let Some(set) = self.layout.as_ref() else {
            buf[..n].fill(0);
            return Ok(n);
        };
        let pieces = set
            .geometry()
            .pieces(offset, n as u64)
            .map_err(|e| failure(libc::EINVAL, e.to_string()))?;
        let buf = &mut buf[..n];
        let got = self.client.with_conn(true, |c| {
            c.read_mirror(self.ino, set, |c, stripes| {
                let routes = c.routes(stripes)?;
                let extents = Extent::of_pieces(stripes, &routes, &pieces, offset, 0);
                let io = c.io;
                c.ns.ep.read_extents(&extents, buf, io)
            })
        })?;
        // Below the file's size, what an object does not hold is a hole: zeros.
        for (p, got) in pieces.iter().zip(got) {
            let at = (p.file_offset - offset) as usize;
            buf[at + got..at + p.len as usize].fill(0);
        }
        Ok(n)
    }
}

/// A handle's cache, taken even after a thread panicked holding it: its state is
/// valid between any two of its statements (at worst a gathered write is lost, and
/// the panic was reported).
fn guard(cache: &Mutex<Cache>) -> std::sync::MutexGuard<'_, Cache> {
    cache.lock().unwrap_or_else(|e| e.into_inner())
}
