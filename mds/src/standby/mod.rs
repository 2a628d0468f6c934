//! The standby MDS: an MDS ships its MDT's redo log to one standby over TCP
//! ([`ship`]); the standby keeps a copy in its own directory and takes the role over
//! when the active MDS's lease lapses ([`follow`]). See docs/mds.md, "Standby MDS".

mod auth;
pub mod follow;
pub mod ship;
pub mod wire;
