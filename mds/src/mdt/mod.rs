//! The metadata target (MDT): the namespace of one MDS shard, stored in redb in the MDT
//! directory, with an operation log for durability and group commit.
//!
//! Pure library code: no network, no engine. [`Mdt`] is a value (one per MDT; several
//! may live in one process); writes go through [`Submitter::submit`] and complete on the
//! submitter's own queue, so an engine core never blocks on a commit.
//!
//! - `inode`: the inode and directory-entry records;
//! - `store`: the redb tables and typed access that records redo;
//! - `overlay`: changes acknowledged but not yet committed to redb, seen by readers;
//! - `redo`: redo records and the operation log file;
//! - `replies`: the reply cache that answers a retried changing request;
//! - `alloc`: inode numbers and per-OST object ids from pre-allocated ranges, OST choice;
//! - `perm`: POSIX permission rules;
//! - `ns`: the namespace operations;
//! - `locks`: POSIX advisory locks, in memory;
//! - `heard`: when each client was last heard from (the open lease);
//! - `service`: the [`Mdt`] itself: opening, formatting, log replay, durability modes;
//! - `submitter`: submit and complete, and reads answered from the last commit;
//! - `committer`: the committer thread (group commit); `syncer`: sync mode's fdatasyncs;
//! - `engine_service`: the MDS on engine cores (an engine `Service` over a submitter).

mod alloc;
pub mod check;
mod committer;
mod heard;
pub mod hsm;
mod inode;
mod locks;
mod ns;
mod overlay;
pub mod perm;
mod redo;
mod repair;
mod replies;
mod service;
mod store;
mod submitter;
mod syncer;

pub mod engine_service;

pub use alloc::{OstPlace, LOW_WATER, RANGE};
pub use inode::Inode;
pub use ns::{LINK_MAX, ROOT_INO};
pub use repair::LOST_FOUND;
pub use service::files_on_ost;
pub mod replication;
pub use service::{
    Admin, Completion, HsmEvent, HsmJob, Mdt, MdtConfig, MdtError, OstSpace, Repair, Stats,
    SubmitError, Submitter, SyncMode, DB_FILE, FORMAT_VERSION, LOG_FILE,
};
pub use store::StoreError;
