//! nacre-client: what a process that talks to nacre servers links.
//!
//! From the top: [`Client`] and [`File`] (`fs`), the file system as applications see it
//! (paths, open files, striped parallel I/O, recovery on a newer cluster map); below it
//! the namespace (`namespace`: paths against the MDS), object I/O (`objects`: requests
//! to OSS cores, bulk data by RMA straight from and into the caller's buffer) and the
//! RPC layer (`rpc`: sessions with engine cores over nacre-fabric). The cluster map comes
//! from the MGS through `nacre_mgc`. It never depends on the server engine, nor on any
//! server crate.

mod cache;
pub mod fs;
mod locks;
mod meta;
pub mod namespace;
pub mod objects;
mod pieces;
mod regcache;
mod rpc;

pub use fs::{
    errno, Client, ClientConfig, File, FsStat, Layout, OpenOptions, TargetUsage, O_BUFFERED,
};
pub use regcache::{RegCache, RegCacheConfig, RegCacheMode, RegCacheStats};
pub use rpc::{ClientEndpoint, ClientError, RpcClient, RpcConfig, RpcReply, SessionId};
