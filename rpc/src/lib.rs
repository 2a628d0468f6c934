//! nacre-rpc: the client side of the engine's RPC, shared by every process that sends
//! requests to engine cores (Lustre's ptlrpc with its OSC).
//!
//! - [`rpc`]: one fabric endpoint per thread with sessions to many server cores
//!   (HELLO, request ids, reply matching, replies in pieces, timeouts), and a
//!   registration cache for the caller's bulk buffers;
//! - `meta`: one metadata request to an MDS core and its typed reply
//!   ([`ClientEndpoint::meta`]);
//! - [`objects`]: the object calls on OSS cores (read, write, punch, truncate, destroy,
//!   getattr, statfs), bulk data by RMA straight from and into the caller's buffer.
//!
//! The file client (nacre-client) builds on it, and so does the MDS, which destroys the
//! objects of unlinked files. It never depends on the server engine.

pub mod caps;
mod meta;
pub mod objects;
mod pieces;
pub mod regcache;
pub mod rpc;

pub use caps::Capabilities;
pub use regcache::{RegCache, RegCacheConfig, RegCacheMode, RegCacheStats};
pub use rpc::{
    ClientEndpoint, ClientError, RpcClient, RpcConfig, RpcReply, SessionId, Watchdog, WATCH_EVERY,
};
