//! The store's public value types.

use nacre_engine::{BufferPool, PoolBuf, Storage};

use crate::Errno;

/// A core's storage queue and buffer pool, lent to the store for one call.
pub struct Io<'a> {
    pub storage: &'a mut Storage,
    pub pool: &'a mut BufferPool,
}

/// Whether a write completes only once its data and the object's size are on stable
/// storage (fdatasync through the ring) or when the O_DIRECT write completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Async,
    Sync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Write,
    Read,
    Punch,
    Truncate,
    Destroy,
    Sync,
}

/// A finished object operation.
///
/// `bufs` are the caller's to give back to the pool: a write's own slabs, or a read's
/// data. Read data starts `head` bytes into `bufs[0]` and runs on through the following
/// slabs for `result` bytes (a read at an unaligned offset lands at `offset % ALIGN`).
#[derive(Debug)]
pub struct ObjectCompletion {
    pub tag: u64,
    pub kind: OpKind,
    pub result: Result<usize, Errno>,
    pub bufs: Vec<PoolBuf>,
    pub head: usize,
}

impl ObjectCompletion {
    /// Copies the data of a read into `out` (inline replies, tests); returns the bytes
    /// copied: min(result, out.len()).
    pub fn copy_to(&self, out: &mut [u8]) -> usize {
        let len = self.result.unwrap_or(0).min(out.len());
        super::gather(&self.bufs, self.head, &mut out[..len]);
        len
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Objects kept open at most (each holds one of the Storage's fixed-file slots; keep
    /// this below `StorageConfig::max_files` if the core opens other files too).
    pub max_open: usize,
    /// Largest read or write accepted, in bytes.
    pub max_request: usize,
    /// Operations queued or running at most; more are refused with EAGAIN (the server
    /// bounds what it accepts from clients well below this).
    pub max_ops: usize,
    /// Which of a core's stores this is (0..=127): carried in the user_data of its
    /// storage operations, so a core serving several targets routes each completion.
    pub id: u8,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_open: 48,
            max_request: 16 << 20,
            max_ops: 4096,
            id: 0,
        }
    }
}

/// The target's health as its store sees it (the server reports it to the MGS as the
/// map's `TargetState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetHealth {
    Healthy,
    /// The device returned this error (EIO...): data on the target may be unreachable.
    Degraded(Errno),
}
