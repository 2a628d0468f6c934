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
mod keeper;
mod locks;
pub mod namespace;
mod opens;
use nacre_rpc::rpc;
pub use nacre_rpc::{objects, regcache};

pub use fs::{
    errno, Client, ClientConfig, File, FsStat, Layout, OpenOptions, TargetUsage, O_BUFFERED,
};
pub use nacre_rpc::{
    Capabilities, ClientEndpoint, ClientError, RegCache, RegCacheConfig, RegCacheMode,
    RegCacheStats, RpcClient, RpcConfig, RpcReply, SessionId,
};
