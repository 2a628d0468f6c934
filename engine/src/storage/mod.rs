//! Storage I/O for one core: O_DIRECT reads and writes of pool buffers at 4 KiB-aligned
//! offsets, fsync/fdatasync, completions polled by the core's loop.
//!
//! Two backends with one API: io_uring (fixed files, the pool registered as fixed
//! buffers, every queued operation submitted by one `io_uring_enter` per loop turn) and,
//! when io_uring cannot be set up (kernel, sysctl or seccomp), pread/pwrite. Short reads
//! and writes are completed, EINTR/EAGAIN retried, errors reported as errno values.

mod sync;
mod uring;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::pool::{BufferPool, PoolBuf};

/// Alignment of buffer addresses, lengths and offsets: O_DIRECT-safe on 4Kn disks too.
pub const ALIGN: usize = 4096;

/// A file opened through [`Storage::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId(pub(crate) u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    Read,
    Write,
    Fsync,
    Fdatasync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    IoUring,
    /// pread/pwrite on the calling thread.
    Sync,
}

/// A finished operation: the caller's tag, bytes moved or an errno, and the buffer back.
#[derive(Debug)]
pub struct IoCompletion {
    pub user_data: u64,
    pub kind: IoKind,
    pub result: Result<usize, i32>,
    pub buf: Option<PoolBuf>,
}

impl std::fmt::Debug for PoolBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PoolBuf({:p}, {} B)", self.as_ptr(), self.capacity())
    }
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// None: io_uring, falling back to pread/pwrite if it cannot be set up.
    pub backend: Option<Backend>,
    /// Refuse to start without io_uring instead of falling back.
    pub require_io_uring: bool,
    /// Operations in flight at most (also the ring's size).
    pub queue_depth: u32,
    /// Files open at once (the fixed-file table's size).
    pub max_files: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: None,
            require_io_uring: false,
            queue_depth: 128,
            max_files: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("io_uring is required but cannot be set up: {0}")]
    IoUringUnavailable(io::Error),
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} {value} is not a multiple of {ALIGN} (O_DIRECT)")]
    Misaligned { what: &'static str, value: u64 },
    #[error("length {len} exceeds the buffer's {capacity} bytes")]
    BufferTooSmall { len: usize, capacity: usize },
    #[error("{0} operations already in flight")]
    QueueFull(usize),
    #[error("file id {0} is not open")]
    BadFile(u32),
    #[error("file id {file} has {in_flight} operations in flight: close it when they finish")]
    FileBusy { file: u32, in_flight: usize },
    #[error("all {0} file slots are in use")]
    TooManyFiles(u32),
    #[error("io_uring: {0}")]
    Ring(io::Error),
}

/// One core's storage queue.
pub struct Storage {
    inner: Inner,
}

enum Inner {
    Uring(Box<uring::UringStorage>),
    Sync(sync::SyncStorage),
}

/// A read or write as the backends take it.
pub(crate) struct Op {
    pub(crate) kind: IoKind,
    pub(crate) file: u32,
    pub(crate) buf: Option<PoolBuf>,
    pub(crate) len: usize,
    pub(crate) offset: u64,
    pub(crate) done: usize,
    pub(crate) user_data: u64,
}

/// Set to 1 to behave as if io_uring were unavailable (kernels or sandboxes that block it
/// are not always at hand to test the fallback on).
pub const DISABLE_ENV: &str = "NACRE_DISABLE_IO_URING";

impl Storage {
    /// Sets up the backend; with io_uring, registers the pool's arena as fixed buffer 0.
    pub fn new(cfg: &StorageConfig, pool: Option<&BufferPool>) -> Result<Storage, StorageError> {
        let want = cfg.backend.unwrap_or(Backend::IoUring);
        if want == Backend::Sync {
            tracing::info!("storage backend: pread/pwrite (configured)");
            return Ok(Storage::sync(cfg));
        }
        let ring = if std::env::var(DISABLE_ENV).is_ok_and(|v| v == "1") {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("disabled by {DISABLE_ENV}=1"),
            ))
        } else {
            uring::UringStorage::new(cfg, pool)
        };
        match ring {
            Ok(u) => {
                tracing::info!(
                    depth = cfg.queue_depth,
                    fixed_buffers = pool.is_some(),
                    "storage backend: io_uring"
                );
                Ok(Storage {
                    inner: Inner::Uring(Box::new(u)),
                })
            }
            Err(e) if cfg.require_io_uring => Err(StorageError::IoUringUnavailable(e)),
            Err(e) => {
                tracing::warn!("io_uring unavailable ({e}): storage falls back to pread/pwrite");
                Ok(Storage::sync(cfg))
            }
        }
    }

    fn sync(cfg: &StorageConfig) -> Storage {
        Storage {
            inner: Inner::Sync(sync::SyncStorage::new(cfg)),
        }
    }

    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Uring(_) => Backend::IoUring,
            Inner::Sync(_) => Backend::Sync,
        }
    }

    /// Opens (or creates) `path` for O_DIRECT reads and writes.
    pub fn open(&mut self, path: &Path, create: bool) -> Result<FileId, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .map_err(|source| StorageError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        match &mut self.inner {
            Inner::Uring(u) => u.add_file(file),
            Inner::Sync(s) => s.add_file(file),
        }
    }

    /// Closes a file; operations still in flight on it fail or finish first (the kernel
    /// keeps it open until they do).
    pub fn close(&mut self, file: FileId) -> Result<(), StorageError> {
        match &mut self.inner {
            Inner::Uring(u) => u.remove_file(file.0),
            Inner::Sync(s) => s.remove_file(file.0),
        }
    }

    /// The open file behind `file`, e.g. for fallocate or size queries.
    pub fn file(&self, file: FileId) -> Option<&File> {
        match &self.inner {
            Inner::Uring(u) => u.file(file.0),
            Inner::Sync(s) => s.file(file.0),
        }
    }

    /// Reads `len` bytes at `offset` into `buf`; the buffer comes back in the completion
    /// (or with the error, when the request is refused).
    pub fn read(
        &mut self,
        file: FileId,
        buf: PoolBuf,
        len: usize,
        offset: u64,
        user_data: u64,
    ) -> Result<(), (StorageError, PoolBuf)> {
        self.submit(IoKind::Read, file, buf, len, offset, user_data)
    }

    /// Writes the first `len` bytes of `buf` at `offset`.
    pub fn write(
        &mut self,
        file: FileId,
        buf: PoolBuf,
        len: usize,
        offset: u64,
        user_data: u64,
    ) -> Result<(), (StorageError, PoolBuf)> {
        self.submit(IoKind::Write, file, buf, len, offset, user_data)
    }

    /// Makes everything written to `file` durable (`datasync`: data and size only).
    pub fn sync_file(
        &mut self,
        file: FileId,
        datasync: bool,
        user_data: u64,
    ) -> Result<(), StorageError> {
        let kind = if datasync {
            IoKind::Fdatasync
        } else {
            IoKind::Fsync
        };
        let op = Op {
            kind,
            file: file.0,
            buf: None,
            len: 0,
            offset: 0,
            done: 0,
            user_data,
        };
        self.push(op).map_err(|(e, _)| e)
    }

    fn submit(
        &mut self,
        kind: IoKind,
        file: FileId,
        buf: PoolBuf,
        len: usize,
        offset: u64,
        user_data: u64,
    ) -> Result<(), (StorageError, PoolBuf)> {
        if let Err(e) = check_io(&buf, len, offset) {
            return Err((e, buf));
        }
        let op = Op {
            kind,
            file: file.0,
            buf: Some(buf),
            len,
            offset,
            done: 0,
            user_data,
        };
        self.push(op)
            .map_err(|(e, op)| (e, op.buf.expect("reads and writes carry a buffer")))
    }

    fn push(&mut self, op: Op) -> Result<(), (StorageError, Op)> {
        match &mut self.inner {
            Inner::Uring(u) => u.push(op),
            Inner::Sync(s) => s.push(op),
        }
    }

    /// Hands every queued operation to the kernel: one `io_uring_enter` for all of them.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        match &mut self.inner {
            Inner::Uring(u) => u.flush(),
            Inner::Sync(_) => Ok(()),
        }
    }

    /// Moves finished operations into `out` (without blocking); returns how many.
    pub fn reap(&mut self, out: &mut Vec<IoCompletion>) -> Result<usize, StorageError> {
        match &mut self.inner {
            Inner::Uring(u) => u.reap(out),
            Inner::Sync(s) => Ok(s.reap(out)),
        }
    }

    /// Flushes, then blocks until at least one operation finishes (benches and tests; the
    /// engine's loop polls with [`Storage::reap`] instead).
    pub fn wait(&mut self, out: &mut Vec<IoCompletion>) -> Result<usize, StorageError> {
        match &mut self.inner {
            Inner::Uring(u) => u.wait(out),
            Inner::Sync(s) => Ok(s.reap(out)),
        }
    }

    pub fn in_flight(&self) -> usize {
        match &self.inner {
            Inner::Uring(u) => u.in_flight(),
            Inner::Sync(s) => s.in_flight(),
        }
    }
}

fn check_io(buf: &PoolBuf, len: usize, offset: u64) -> Result<(), StorageError> {
    if len > buf.capacity() {
        return Err(StorageError::BufferTooSmall {
            len,
            capacity: buf.capacity(),
        });
    }
    if !len.is_multiple_of(ALIGN) {
        return Err(StorageError::Misaligned {
            what: "length",
            value: len as u64,
        });
    }
    if !offset.is_multiple_of(ALIGN as u64) {
        return Err(StorageError::Misaligned {
            what: "offset",
            value: offset,
        });
    }
    Ok(())
}

/// The file slots both backends keep: index = FileId.
pub(crate) struct Files {
    files: Vec<Option<File>>,
    max: u32,
}

impl Files {
    pub(crate) fn new(max: u32) -> Files {
        Files {
            files: Vec::new(),
            max,
        }
    }

    pub(crate) fn add(&mut self, file: File) -> Result<u32, StorageError> {
        if let Some(i) = self.files.iter().position(Option::is_none) {
            self.files[i] = Some(file);
            return Ok(i as u32);
        }
        if self.files.len() as u32 >= self.max {
            return Err(StorageError::TooManyFiles(self.max));
        }
        self.files.push(Some(file));
        Ok(self.files.len() as u32 - 1)
    }

    pub(crate) fn get(&self, id: u32) -> Option<&File> {
        self.files.get(id as usize)?.as_ref()
    }

    pub(crate) fn remove(&mut self, id: u32) -> Result<File, StorageError> {
        self.files
            .get_mut(id as usize)
            .and_then(Option::take)
            .ok_or(StorageError::BadFile(id))
    }
}
