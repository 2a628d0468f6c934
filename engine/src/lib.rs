//! nacre-engine: the data path's runtime pieces. A registered buffer pool that is at
//! once the libfabric memory registration and the io_uring fixed-buffer table, and
//! storage I/O through io_uring (O_DIRECT, fixed buffers and files, batched submission)
//! with a pread/pwrite fallback.
//!
//! It knows nothing of files as a file system does (objects, layouts): it moves bytes
//! between the fabric, buffers and block-aligned file offsets. Nothing here may block or
//! allocate per request on the hot path.

pub mod engine;
pub mod pool;
pub mod reactor;
pub mod storage;
pub mod topology;

pub use engine::{CoreHandle, Engine, EngineConfig, EngineError};
pub use pool::{BufferPool, PoolBuf, PoolConfig, PoolError, SizeClass};
pub use reactor::{
    Core, CoreMetrics, CoreMsg, IdlePolicy, Reactor, ReactorConfig, Request, Service, INTERNAL,
};
pub use storage::{
    Backend, FileId, IoCompletion, IoKind, Storage, StorageConfig, StorageError, ALIGN, DISABLE_ENV,
};
