//! `.nacre/ino/N` under the mount's root opens inode N without its path, as Lustre's
//! `.lustre/fid/FID` does: the interception library reopens through it a file it holds
//! open (docs/preload.md), whose name may have been renamed, replaced or removed since,
//! and which a name the kernel keeps for the entry timeout could show stale. The two
//! directories are the mount's own (no MDS inode), not listed, read-only; an entry
//! under `ino` is never cached by the kernel (timeout 0), and is given to root and to
//! the file's owner only (directories' search permission is what guards a path; an
//! inode number must not get around it).

use std::time::Duration;

use fuser::{FileAttr, FileType, ReplyEntry};
use nacre_client::errno;
use nacre_proto::meta::{Creds, Request};

use crate::attrs::fuse_attr;
use crate::convert::attr_of;
use crate::shared::Shared;
use crate::ATTR_TTL;

/// The inode numbers of `.nacre` and `.nacre/ino` (far above any the MDS gives).
pub const NACRE_DIR: u64 = u64::MAX - 1;
pub const INO_DIR: u64 = u64::MAX - 2;
const ROOT: u64 = 1;

pub fn is_virtual(ino: u64) -> bool {
    ino == NACRE_DIR || ino == INO_DIR
}

/// The attributes of `.nacre` and `.nacre/ino`.
pub fn dir_attr(ino: u64) -> FileAttr {
    let mut a = fuse_attr(&nacre_proto::meta::Attr {
        ino,
        kind: nacre_proto::meta::FileKind::Dir,
        mode: 0o555,
        uid: 0,
        gid: 0,
        nlink: 2,
        size: 0,
        atime: 0,
        mtime: 0,
        ctime: 0,
        rdev: 0,
    });
    a.kind = FileType::Directory;
    a
}

/// Whether a lookup of `name` in `parent` is this module's to answer.
pub fn answers(parent: u64, name: &[u8]) -> bool {
    is_virtual(parent) || (parent == ROOT && name == b".nacre")
}

/// Answers a lookup [`answers`] says is ours.
pub fn lookup(sh: &Shared, creds: &Creds, parent: u64, name: &[u8], reply: ReplyEntry) {
    match (parent, name) {
        (ROOT, _) => reply.entry(&ATTR_TTL, &dir_attr(NACRE_DIR), fuser::Generation(0)),
        (NACRE_DIR, b"ino") => reply.entry(&ATTR_TTL, &dir_attr(INO_DIR), fuser::Generation(0)),
        (INO_DIR, n) => by_ino(sh, creds, n, reply),
        _ => reply.error(fuser::Errno::ENOENT),
    }
}

fn by_ino(sh: &Shared, creds: &Creds, name: &[u8], reply: ReplyEntry) {
    let Some(ino) = std::str::from_utf8(name)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return reply.error(fuser::Errno::ENOENT);
    };
    if is_virtual(ino) {
        return reply.error(fuser::Errno::ENOENT);
    }
    match sh
        .client
        .request_as(creds, &Request::Getattr { ino })
        .and_then(attr_of)
    {
        Ok(a) if creds.uid == 0 || creds.uid == a.uid => {
            reply.entry(&Duration::ZERO, &fuse_attr(&a), fuser::Generation(0))
        }
        Ok(_) => reply.error(fuser::Errno::EACCES),
        Err(e) => reply.error(fuser::Errno::from_i32(errno(&e))),
    }
}
