//! nacre-mds: the management service (MGS) and the metadata server (MDS).
//!
//! The MGS keeps who serves what (roles, leases, epochs, the cluster map) and answers
//! bootstrap requests over TCP; it is never on the data path. The MDS owns the namespace
//! on a metadata target (MDT). Neither may block an engine core.
pub mod mds_serve;
pub mod mdt;
pub mod mgs;
