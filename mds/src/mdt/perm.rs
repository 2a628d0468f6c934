//! POSIX permission checks, as Linux does them for a caller without capabilities except
//! uid 0, which bypasses read and write checks and needs one execute bit for files.

use super::inode::Inode;
use nacre_proto::meta::{Attr, Creds, FileKind};

pub const R: u32 = 4;
pub const W: u32 = 2;
pub const X: u32 = 1;
pub const S_ISUID: u32 = 0o4000;
pub const S_ISGID: u32 = 0o2000;
pub const S_ISVTX: u32 = 0o1000;

/// Whether `c` may access `i` for `want` (a mix of R, W, X).
pub fn may(c: &Creds, i: &Inode, want: u32) -> bool {
    may_mode(c, i.uid, i.gid, i.mode, i.is_dir(), want)
}

/// [`may`] on a file's attributes (as a reply carries them).
pub fn may_attr(c: &Creds, a: &Attr, want: u32) -> bool {
    may_mode(c, a.uid, a.gid, a.mode, a.kind == FileKind::Dir, want)
}

fn may_mode(c: &Creds, uid: u32, gid: u32, mode: u32, dir: bool, want: u32) -> bool {
    if c.uid == 0 {
        return want & X == 0 || dir || mode & 0o111 != 0;
    }
    let bits = if c.uid == uid {
        mode >> 6
    } else if c.in_group(gid) {
        mode >> 3
    } else {
        mode
    };
    bits & want == want
}

/// The sticky-bit rule: in a sticky directory only the owner of the entry, the owner of
/// the directory or root may remove or rename the entry.
pub fn sticky_allows(c: &Creds, dir: &Inode, victim: &Inode) -> bool {
    dir.mode & S_ISVTX == 0 || c.uid == 0 || c.uid == dir.uid || c.uid == victim.uid
}

/// Owner or root: who may chmod, set explicit times, set a layout.
pub fn is_owner(c: &Creds, i: &Inode) -> bool {
    c.uid == 0 || c.uid == i.uid
}
