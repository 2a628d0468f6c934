//! nacre attributes as FUSE's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::FileAttr;
use nacre_proto::meta::{Attr, FileKind};

use crate::convert::kind_of;

use crate::lock;

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
        ino: fuser::INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: time_of(a.atime),
        mtime: time_of(a.mtime),
        ctime: time_of(a.ctime),
        crtime: time_of(a.ctime),
        kind: kind_of(a.kind),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        // FUSE carries the kernel's 32-bit encoding, the low half of the stat one for
        // every major below 4096 and minor below 2^20.
        rdev: a.rdev as u32,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// Attributes of directories as the MDS last gave them to this mount, kept for
/// [`ATTR_TTL`] from when they came. Every create in a directory makes the kernel
/// forget the directory's attributes, and its next permission check on the way to the
/// following name asks for them again (`default_permissions`): a create stream would
/// pay an MDS request per file for them. A change this mount makes updates the entry
/// exactly where the MDS's answer says how the directory changed (a new entry: its
/// times become the new inode's ctime, as the MDS sets them in the same transaction)
/// and drops it otherwise. Another mount's change shows within [`ATTR_TTL`], as with
/// the kernel's own cache.
#[derive(Default)]
pub struct DirAttrs {
    dirs: Mutex<HashMap<u64, (Instant, Attr)>>,
}

/// Directories kept at most (a cache of recently used ones; a full cache is pruned of
/// stale entries, then emptied).
const MAX_DIRS: usize = 4096;

impl DirAttrs {
    /// The attributes of directory `ino`, if fresh.
    pub fn get(&self, ino: u64) -> Option<Attr> {
        let dirs = lock(&self.dirs);
        let (at, a) = dirs.get(&ino)?;
        (at.elapsed() < ATTR_TTL).then_some(*a)
    }

    /// Remembers `a` as the MDS gave it just now (directories only).
    pub fn fetched(&self, a: &Attr) {
        if a.kind != FileKind::Dir {
            return;
        }
        let mut dirs = lock(&self.dirs);
        if dirs.len() >= MAX_DIRS {
            dirs.retain(|_, (at, _)| at.elapsed() < ATTR_TTL);
            if dirs.len() >= MAX_DIRS {
                dirs.clear();
            }
        }
        dirs.insert(a.ino, (Instant::now(), *a));
    }

    /// `child` was just added to directory `parent` by this mount (a create, mkdir,
    /// symlink or link answered with the child's attributes).
    pub fn entry_added(&self, parent: u64, child: &Attr) {
        if let Some((_, p)) = lock(&self.dirs).get_mut(&parent) {
            p.mtime = child.ctime;
            p.ctime = child.ctime;
            if child.kind == FileKind::Dir {
                p.nlink += 1;
            }
        }
    }

    /// `ino` changed in a way this mount cannot tell from the answer.
    pub fn forget(&self, ino: u64) {
        lock(&self.dirs).remove(&ino);
    }

    /// Directories not named by the request changed (a rename, an rmdir).
    pub fn forget_all(&self) {
        lock(&self.dirs).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(ino: u64, t: i64) -> Attr {
        Attr {
            ino,
            kind: FileKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            nlink: 2,
            size: 0,
            atime: t,
            mtime: t,
            ctime: t,
            rdev: 0,
        }
    }

    #[test]
    fn a_new_entry_moves_the_directory_times_and_links() {
        let c = DirAttrs::default();
        c.fetched(&dir(7, 100));
        let file = Attr {
            kind: FileKind::File,
            nlink: 1,
            ..dir(9, 250)
        };
        c.entry_added(7, &file);
        let a = c.get(7).unwrap();
        assert_eq!((a.mtime, a.ctime, a.atime, a.nlink), (250, 250, 100, 2));
        c.entry_added(7, &dir(10, 300));
        assert_eq!(c.get(7).unwrap().nlink, 3);
        // Files are not kept; a change the mount cannot follow drops the entry.
        c.fetched(&file);
        assert!(c.get(9).is_none());
        c.forget(7);
        assert!(c.get(7).is_none());
        // An entry added to a directory not in the cache adds nothing.
        c.entry_added(8, &file);
        assert!(c.get(8).is_none());
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let c = DirAttrs::default();
        c.fetched(&dir(3, 1));
        lock(&c.dirs).get_mut(&3).unwrap().0 -= ATTR_TTL;
        assert!(c.get(3).is_none());
    }
}
