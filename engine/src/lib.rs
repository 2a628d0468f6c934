//! nacre-engine: the data path's runtime pieces. A registered buffer pool that is at
//! once the libfabric memory registration and the io_uring fixed-buffer table, and
//! storage I/O through io_uring (O_DIRECT, fixed buffers and files, batched submission)
//! with a pread/pwrite fallback.
//!
//! It knows nothing of files as a file system does (objects, layouts): it moves bytes
//! between the fabric, buffers and block-aligned file offsets. Nothing here may block or
//! allocate per request on the hot path.

pub mod bulk;
mod core;
pub mod engine;
pub mod metrics;
pub mod pool;
pub mod reactor;
mod sessions;
pub mod storage;
pub mod topology;

pub use crate::core::Core;
pub use bulk::{Bufs, BulkDir, BulkDone, BulkError, MAX_CHUNKS};
pub use engine::{CoreHandle, Engine, EngineConfig, EngineError};
pub use metrics::CoreMetrics;
pub use pool::{BufferPool, PoolBuf, PoolConfig, PoolError, SizeClass};
pub use reactor::{CoreMsg, IdlePolicy, Incoming, Reactor, ReactorConfig, Service};
pub use sessions::MAX_SESSIONS;
pub use storage::{
    Backend, FileId, IoCompletion, IoKind, Storage, StorageConfig, StorageError, ALIGN, DISABLE_ENV,
};
