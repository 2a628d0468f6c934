//! nacre-client: what a process that talks to nacre servers links.
//!
//! For now the RPC layer: a session with one engine core (HELLO, then requests with
//! inline bodies and bulk descriptors, replies matched by request id), over nacre-fabric.
//! The bootstrap half (`mgs`): the cluster map, role claims and leases, over TCP.
//! It must never depend on the server engine.

pub mod mgs;
mod rpc;

pub use rpc::{ClientError, Reply, RpcClient, RpcConfig};
