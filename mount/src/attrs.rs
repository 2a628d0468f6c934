//! nacre attributes as FUSE's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType};
use nacre_proto::meta::{Attr, FileKind};

/// How long the kernel may keep an entry or attributes before asking again. Short:
/// another mount's change (a new size, a removed name) shows within this time, and
/// data never waits on it (direct I/O goes to the servers every time). A longer TTL
/// would save MDS round trips on `ls -l` of big trees, at the price of staleness
/// between mounts (docs/mount.md).
pub const ATTR_TTL: Duration = Duration::from_secs(1);

/// Block size reported for files: one that suits striped I/O.
const BLKSIZE: u32 = 1 << 20;

fn time_of(ns: i64) -> SystemTime {
    match ns >= 0 {
        true => UNIX_EPOCH + Duration::from_nanos(ns as u64),
        false => UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs()),
    }
}

pub fn fuse_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: a.ino,
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: time_of(a.atime),
        mtime: time_of(a.mtime),
        ctime: time_of(a.ctime),
        crtime: time_of(a.ctime),
        kind: match a.kind {
            FileKind::File => FileType::RegularFile,
            FileKind::Dir => FileType::Directory,
            FileKind::Symlink => FileType::Symlink,
        },
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}
