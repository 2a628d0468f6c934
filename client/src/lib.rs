//! nacre-client: what a process that talks to nacre servers links.
//!
//! For now the RPC layer: a session with one engine core (HELLO, then requests with
//! inline bodies and bulk descriptors, replies matched by request id), over nacre-fabric.
//! The bootstrap half (`mgs`): the cluster map, role claims and leases, over TCP.
//! It must never depend on the server engine.

mod meta;
pub mod mgs;
pub mod namespace;
pub mod objects;
mod regcache;
mod rpc;

pub use regcache::{RegCache, RegCacheConfig, RegCacheMode, RegCacheStats};
pub use rpc::{ClientEndpoint, ClientError, Reply, RpcClient, RpcConfig, SessionId};
