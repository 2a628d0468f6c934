//! Metadata (MDS) request and reply bodies.
//!
//! The frame header's opcode says which request a body holds ([`Request::opcode`]); a
//! reply frame carries the errno in the header's status (0 or `-errno`) and, on success,
//! a [`Reply`] body whose first u32 says its shape. Every request body starts with the
//! same head: the caller's credentials and the MDS epoch the caller believes in (a stale
//! epoch is answered ESTALE so the client refetches the cluster map).
//!
//! Strings are a u32 length and that many bytes. Names are 1..=255 bytes without '/' or
//! NUL; symlink targets 1..=4096 bytes without NUL. Decoding checks every length against
//! what is left and against these limits, and refuses trailing bytes.
//!
//! Here: limits, flags, errno values and [`MetaError`]. The values bodies carry are in
//! `types`, the request in `request`, the reply in `reply`, shared encoding in `wire`.

mod grants;
pub mod hsm;
mod reply;
mod request;
mod types;
mod wire;

pub use grants::{Grants, MAX_GRANTS, SEAL_LEN};
pub use reply::Reply;
pub use request::Request;
pub use types::{
    Attr, CheckCounts, CheckReport, CheckState, Creds, DirEntry, FileKind, Head, LockDesc,
    LockRequest, MdtStatfs, ReplayKey, SetAttr,
};

use crate::body::BodyError;
use crate::layout::LayoutError;

pub const NAME_MAX: usize = 255;
pub const PATH_MAX: usize = 4096;
/// Supplementary groups a request may carry.
pub const MAX_GROUPS: usize = 32;
/// Most entries one readdir reply may hold.
pub const READDIR_MAX_ENTRIES: u32 = 1024;
/// Budget for one readdir reply body (`Reply::trim_to`), below the 64 KiB frame body.
pub const READDIR_MAX_BYTES: usize = 60 * 1024;
/// Longest line of a check finding.
pub const FINDING_MAX: usize = 1024;
/// Messages to and from an MDS: room for the largest reply (a full readdir page, or a
/// file's layout over many OSTs) with its header.
pub const MSG_SIZE: usize = 64 * 1024 + 4096;

/// Linux errno values used at the MDS edge.
pub mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const ENXIO: i32 = 6;
    pub const EBADF: i32 = 9;
    pub const EAGAIN: i32 = 11;
    pub const EACCES: i32 = 13;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const EXDEV: i32 = 18;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EMLINK: i32 = 31;
    pub const EDEADLK: i32 = 35;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ENOLCK: i32 = 37;
    pub const ENOSYS: i32 = 38;
    pub const ENOTEMPTY: i32 = 39;
    pub const ENODATA: i32 = 61;
    pub const EBADMSG: i32 = 74;
    pub const ESTALE: i32 = 116;
}

/// Create fails if the name exists (O_EXCL).
pub const CREATE_EXCL: u32 = 1;
/// Create also opens, with the open flags (O_ACCMODE | O_TRUNC) in the bits from
/// [`CREATE_OPEN_SHIFT`] up, and answers with a handle: one round trip for
/// open(O_CREAT), and the creator may open for writing a file whose new mode denies
/// it (POSIX).
pub const CREATE_OPEN: u32 = 2;
pub const CREATE_OPEN_SHIFT: u32 = 16;
/// Rename fails if the target exists (RENAME_NOREPLACE).
pub const RENAME_NOREPLACE: u32 = 1;
/// Open access modes and flags (Linux values).
pub const O_ACCMODE: u32 = 3;
pub const O_RDONLY: u32 = 0;
pub const O_WRONLY: u32 = 1;
pub const O_RDWR: u32 = 2;
pub const O_TRUNC: u32 = 0o1000;

/// Setattr mask bits: which fields of [`SetAttr`] to apply.
pub mod set {
    pub const MODE: u32 = 1;
    pub const UID: u32 = 2;
    pub const GID: u32 = 4;
    pub const SIZE: u32 = 8;
    pub const ATIME: u32 = 16;
    pub const MTIME: u32 = 32;
    pub const CTIME: u32 = 64;
    /// Set atime / mtime to the server's now (`touch` without a time: needs only write access).
    pub const ATIME_NOW: u32 = 128;
    pub const MTIME_NOW: u32 = 256;
    /// Drop setuid, and setgid when it means "group executable", as a write by an
    /// unprivileged process does on Linux: needs only write access (a mount asks it
    /// before such a writer's first write; a size change by one implies it).
    pub const KILL_PRIV: u32 = 512;
    pub const ALL: u32 = 1023;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("metadata body truncated: {0}")]
    Short(#[from] BodyError),
    #[error("bad layout: {0}")]
    Layout(#[from] LayoutError),
    #[error("name of {0} bytes is longer than {NAME_MAX}")]
    NameTooLong(usize),
    #[error("symlink target of {0} bytes is longer than {PATH_MAX}")]
    PathTooLong(usize),
    #[error("invalid name: empty, or contains '/' or NUL")]
    BadName,
    #[error("{0} supplementary groups, more than {MAX_GROUPS}")]
    TooManyGroups(u32),
    #[error("unknown {what} value {value}")]
    BadValue { what: &'static str, value: u32 },
    #[error("opcode {0} is not a metadata request")]
    NotMeta(u16),
    #[error("{0} trailing bytes after the body")]
    Trailing(usize),
}

impl MetaError {
    /// The errno a reply to such a request carries.
    pub fn errno(&self) -> i32 {
        match self {
            MetaError::NameTooLong(_) | MetaError::PathTooLong(_) => errno::ENAMETOOLONG,
            MetaError::BadName | MetaError::TooManyGroups(_) | MetaError::Layout(_) => {
                errno::EINVAL
            }
            MetaError::NotMeta(_) => errno::ENOSYS,
            _ => errno::EBADMSG,
        }
    }
}

/// Lock kinds (as `LockRequest::kind` and `LockDesc::kind`).
pub mod lock {
    use std::time::Duration;

    pub const READ: u32 = 0;
    pub const WRITE: u32 = 1;
    pub const UNLOCK: u32 = 2;
    /// Changes no lock: says the client is alive and keeps its locks (`ino`, range
    /// and owner are not used).
    pub const RENEW: u32 = 3;

    /// How long the MDS keeps the locks of a client it has not heard from: past it,
    /// another client's conflicting request takes them away (the holder died).
    pub const LEASE: Duration = Duration::from_secs(10);
    /// How often a client that holds locks renews them: four times a lease, so a
    /// renewal or two may be late.
    pub const RENEW_EVERY: Duration = Duration::from_millis(2500);
    /// How long a restarted MDS takes its clients' replays before new locks: long
    /// enough for a renewal that went to the dead MDS to time out (a renewal's tries
    /// wait [`RENEW_EVERY`] each) and reach the new one on a newer map.
    pub const RECOVERY: Duration = Duration::from_secs(15);
}

/// How long a restarted MDS waits for its clients to replay their opens before it
/// destroys the orphans nobody took back: as long as a client keeps retrying a request
/// (`ClientConfig::recovery`), so that every client still alive, however slow its way
/// back to the new MDS, has named its handles again. Orphans only wait meanwhile
/// (Lustre's recovery window is minutes); new locks wait only [`lock::RECOVERY`].
pub const OPEN_RECOVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// How long the MDS keeps the open handles of a client it does not hear from (no
/// request under its replay key, no lock request, no [`Request::Ping`]) before it
/// closes them, as Lustre evicts a client that stops pinging: a client holding files
/// open says it lives every [`lock::RENEW_EVERY`], so only a dead, paused or cut-off
/// client lapses. As long as the open recovery window: a client that lives through a
/// partition shorter than that keeps its files.
pub const OPEN_LEASE: std::time::Duration = OPEN_RECOVERY;

/// Checks a directory entry name: 1..=255 bytes, no '/' and no NUL.
pub fn validate_name(name: &[u8]) -> Result<(), MetaError> {
    if name.len() > NAME_MAX {
        return Err(MetaError::NameTooLong(name.len()));
    }
    if name.is_empty() || name.iter().any(|&b| b == b'/' || b == 0) {
        return Err(MetaError::BadName);
    }
    Ok(())
}

/// Checks a symlink target: 1..=4096 bytes, no NUL.
pub fn validate_target(target: &[u8]) -> Result<(), MetaError> {
    if target.len() > PATH_MAX {
        return Err(MetaError::PathTooLong(target.len()));
    }
    if target.is_empty() || target.contains(&0) {
        return Err(MetaError::BadName);
    }
    Ok(())
}
