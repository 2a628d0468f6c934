//! FUSE's values turned into nacre's and back: attributes, open flags, lock kinds and
//! requests, modes, names, file types and times.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;

use fuser::{FileType, TimeOrNow};
use nacre_proto::meta::{self, Attr, FileKind, LockRequest, Reply};

pub fn attr_of(r: Reply) -> io::Result<Attr> {
    match r {
        Reply::Attr(a) | Reply::Opened { attr: a, .. } => Ok(a),
        other => Err(io::Error::other(format!(
            "expected attributes, got {other:?}"
        ))),
    }
}

/// Open flags for a handle the kernel writes through: without O_APPEND, since the
/// kernel gives every write its offset (the end of the file for an O_APPEND
/// descriptor, serialised under the inode's lock), which the daemon must not redo from
/// a size that other handles may not have reported yet.
pub fn kernel_offsets(flags: i32) -> i32 {
    flags & !libc::O_APPEND
}

pub fn lock_kind(typ: i32) -> Option<u32> {
    match typ {
        libc::F_RDLCK => Some(meta::lock::READ),
        libc::F_WRLCK => Some(meta::lock::WRITE),
        libc::F_UNLCK => Some(meta::lock::UNLOCK),
        _ => None,
    }
}

/// A lock request of the kernel's `owner` on `ino` (the client fills in its id).
pub fn lock_request(
    ino: u64,
    owner: u64,
    start: u64,
    end: u64,
    kind: u32,
    pid: u32,
) -> LockRequest {
    LockRequest {
        ino,
        client: 0,
        owner,
        start,
        end,
        kind,
        pid,
        test: false,
        replay: false,
        wait: false,
    }
}

/// Releases every lock `owner` holds on `ino` (a close, the end of an open file).
pub fn unlock_all(ino: u64, owner: u64) -> LockRequest {
    lock_request(ino, owner, 0, u64::MAX, meta::lock::UNLOCK, 0)
}

/// The permission bits of a new file or directory: the caller's mode less its umask
/// (the file type bits are the request's, not the mode's).
pub fn new_mode(mode: u32, umask: u32) -> u32 {
    mode & !umask & 0o7777
}

pub fn name_of(name: &OsStr) -> Vec<u8> {
    name.as_bytes().to_vec()
}

pub fn kind_of(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

pub fn time_ns(t: TimeOrNow) -> Option<i64> {
    match t {
        TimeOrNow::Now => None,
        TimeOrNow::SpecificTime(t) => Some(match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i64,
            Err(e) => -(e.duration().as_nanos() as i64),
        }),
    }
}
