//! nacre-oss: the object storage server's storage half. An object storage target (OST)
//! is a local directory with a versioned superblock and one file per object under hashed
//! directories ([`superblock`], [`layout`]). [`ObjectStore`] runs object I/O for one
//! engine core as a non-blocking state machine over the core's [`nacre_engine::Storage`]
//! (io_uring, O_DIRECT) and [`nacre_engine::BufferPool`]: bulk data goes from the slab the
//! network filled straight to disk, unaligned edges by read-modify-write under a
//! per-object block-range lock ([`rangelock`]). See docs/oss.md.

pub mod access;
pub mod checksum;
pub mod config;
pub mod errno;
pub mod layout;
pub mod rangelock;
pub mod replay;
pub mod serve;
pub mod server;
pub mod service;
pub mod store;
pub mod superblock;

pub use checksum::{crc32c_bufs, crc32c_slices};
pub use errno::Errno;
pub use layout::ObjectId;
pub use store::{
    gather, scatter, slabs_for, Io, ObjectCompletion, ObjectStore, OpKind, StoreConfig,
    TargetHealth, WriteMode, IO_TAG,
};
pub use superblock::{FormatRequest, Formatted, Superblock, TargetError, FORMAT_VERSION};
