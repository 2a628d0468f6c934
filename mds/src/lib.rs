//! nacre-mds: the metadata server (MDS).
//!
//! The MDS owns the namespace on a metadata target (MDT): inodes, directories, layouts,
//! object ids, and the operation log that makes them durable with group commit. It
//! frees the space of gone files on the OSTs ([`destroyer`]), checks the namespace
//! against the OSTs when asked ([`checker`]), moves file data to and from the data
//! repositories linked to directories ([`hsm`]), claims its role at the MGS
//! (`nacre_mgs::role`), serves on engine cores (it must never block one), and ships
//! its redo log to a standby MDS ([`standby`]).
mod background;
pub mod checker;
pub mod destroyer;
pub mod grants;
pub mod hsm;
pub mod identity;
pub mod mds_serve;
pub mod mdt;
pub mod reach;
pub mod resyncer;
pub mod standby;
