//! Attributes: stat, lstat, fstatat, statx and access on paths we serve, and the
//! nacre attributes as `struct stat` and `struct statx` (as the mount shows them).

use std::ffi::{c_char, c_int, c_uint};

use nacre_proto::meta::{Attr, Creds, FileKind};

use crate::fds;
use crate::files::{errno_of, fail, for_kernel, fstat_ours, kernel};
use crate::paths::resolve;
use crate::real;
use crate::state::{self, bytes, enter, Count};

/// The block size the mount reports: one that suits striped I/O.
const BLKSIZE: i64 = 1 << 20;

fn type_bits(k: FileKind) -> u32 {
    match k {
        FileKind::File => libc::S_IFREG,
        FileKind::Dir => libc::S_IFDIR,
        FileKind::Symlink => libc::S_IFLNK,
        FileKind::Fifo => libc::S_IFIFO,
        FileKind::Socket => libc::S_IFSOCK,
        FileKind::CharDevice => libc::S_IFCHR,
        FileKind::BlockDevice => libc::S_IFBLK,
    }
}

fn split_ns(t: i64) -> (i64, i64) {
    (t.div_euclid(1_000_000_000), t.rem_euclid(1_000_000_000))
}

pub fn fill_stat(a: &Attr, dev: u64, st: &mut libc::stat64) {
    // SAFETY: all-zero is a valid stat64 (plain integers).
    *st = unsafe { std::mem::zeroed() };
    st.st_dev = dev;
    st.st_ino = a.ino;
    st.st_mode = type_bits(a.kind) | (a.mode & 0o7777);
    st.st_nlink = a.nlink.into();
    st.st_uid = a.uid;
    st.st_gid = a.gid;
    st.st_rdev = a.rdev;
    st.st_size = a.size as i64;
    st.st_blksize = BLKSIZE;
    st.st_blocks = a.size.div_ceil(512) as i64;
    (st.st_atime, st.st_atime_nsec) = split_ns(a.atime);
    (st.st_mtime, st.st_mtime_nsec) = split_ns(a.mtime);
    (st.st_ctime, st.st_ctime_nsec) = split_ns(a.ctime);
}

fn fill_statx(a: &Attr, dev: u64, stx: &mut libc::statx) {
    // SAFETY: all-zero is a valid statx (plain integers).
    *stx = unsafe { std::mem::zeroed() };
    stx.stx_mask = libc::STATX_BASIC_STATS;
    stx.stx_blksize = BLKSIZE as u32;
    stx.stx_nlink = a.nlink;
    stx.stx_uid = a.uid;
    stx.stx_gid = a.gid;
    stx.stx_mode = (type_bits(a.kind) | (a.mode & 0o7777)) as u16;
    stx.stx_ino = a.ino;
    stx.stx_size = a.size;
    stx.stx_blocks = a.size.div_ceil(512);
    for (to, t) in [
        (&mut stx.stx_atime, a.atime),
        (&mut stx.stx_mtime, a.mtime),
        (&mut stx.stx_ctime, a.ctime),
    ] {
        let (s, ns) = split_ns(t);
        to.tv_sec = s;
        to.tv_nsec = ns as u32;
    }
    stx.stx_rdev_major = libc::major(a.rdev);
    stx.stx_rdev_minor = libc::minor(a.rdev);
    stx.stx_dev_major = libc::major(dev);
    stx.stx_dev_minor = libc::minor(dev);
}

/// The attributes of `path` (relative to `dirfd`) if ours: Some(Ok) or Some(Err(errno)),
/// None for the kernel (not ours, or a symbolic link to follow).
///
/// # Safety
/// `path` is NULL or NUL-terminated.
pub unsafe fn attr_of(
    dirfd: c_int,
    path: *const c_char,
    follow: bool,
) -> Option<(Result<Attr, c_int>, u64)> {
    // SAFETY: per this function's contract.
    let (served, t) = unsafe { resolve(dirfd, path) }?;
    state::count(Count::Stat);
    match served.client.stat(&t.fs) {
        Ok(a) if (follow || t.dir_only) && a.kind == FileKind::Symlink => kernel(),
        Ok(a) if t.dir_only && a.kind != FileKind::Dir => Some((Err(libc::ENOTDIR), t.dev)),
        Ok(a) => Some((Ok(a), t.dev)),
        Err(e) if for_kernel(errno_of(&e)) => kernel(),
        Err(e) => Some((Err(errno_of(&e)), t.dev)),
    }
}

/// stat of a path: 0, -1, or None for the kernel.
///
/// # Safety
/// `path` is NULL or NUL-terminated; `st` NULL or writable.
unsafe fn stat_ours(
    dirfd: c_int,
    path: *const c_char,
    st: *mut libc::stat64,
    follow: bool,
) -> Option<c_int> {
    let _b = enter()?;
    // SAFETY: per this function's contract.
    let (attr, dev) = unsafe { attr_of(dirfd, path, follow) }?;
    Some(match (attr, st.is_null()) {
        (_, true) => fail(libc::EFAULT),
        (Ok(a), false) => {
            // SAFETY: non-NULL and writable per this function's contract.
            fill_stat(&a, dev, unsafe { &mut *st });
            0
        }
        (Err(e), false) => fail(e),
    })
}

macro_rules! stat_fn {
    ($name:ident, $real:ident, $follow:expr) => {
        /// # Safety
        /// As stat(2) / lstat(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, st: *mut libc::stat64) -> c_int {
            // SAFETY: the caller's arguments, as given.
            unsafe {
                match stat_ours(libc::AT_FDCWD, path, st, $follow) {
                    Some(r) => r,
                    None => real::$real(path, st),
                }
            }
        }
    };
}
stat_fn!(stat, stat64, true);
stat_fn!(stat64, stat64, true);
stat_fn!(lstat, lstat64, false);
stat_fn!(lstat64, lstat64, false);

/// Whether `path` is empty (AT_EMPTY_PATH: the call is about `dirfd` itself).
///
/// # Safety
/// `path` is NULL or NUL-terminated.
unsafe fn empty(path: *const c_char) -> bool {
    // SAFETY: per this function's contract.
    unsafe { bytes(path) }.is_some_and(|b| b.is_empty())
}

macro_rules! fstatat_fn {
    ($name:ident) => {
        /// # Safety
        /// As fstatat(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            dirfd: c_int,
            path: *const c_char,
            st: *mut libc::stat64,
            flags: c_int,
        ) -> c_int {
            // SAFETY: the caller's arguments, as given.
            unsafe {
                if flags & libc::AT_EMPTY_PATH != 0 && empty(path) {
                    if let (Some(o), Some(_b)) = (fds::get(dirfd), enter()) {
                        return fstat_ours(&o, st);
                    }
                    return real::fstatat64(dirfd, path, st, flags);
                }
                let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
                match stat_ours(dirfd, path, st, follow) {
                    Some(r) => r,
                    None => real::fstatat64(dirfd, path, st, flags),
                }
            }
        }
    };
}
fstatat_fn!(fstatat);
fstatat_fn!(fstatat64);

/// # Safety
/// As statx(2).
#[no_mangle]
pub unsafe extern "C" fn statx(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: c_uint,
    stx: *mut libc::statx,
) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        let Some(_b) = enter() else {
            return real::statx(dirfd, path, flags, mask, stx);
        };
        let got = match flags & libc::AT_EMPTY_PATH != 0 && empty(path) {
            true => fds::get(dirfd).map(|o| (o.file.stat().map_err(|e| errno_of(&e)), o.dev)),
            false => attr_of(dirfd, path, flags & libc::AT_SYMLINK_NOFOLLOW == 0),
        };
        match got {
            None => real::statx(dirfd, path, flags, mask, stx),
            Some(_) if stx.is_null() => fail(libc::EFAULT),
            Some((Ok(a), dev)) => {
                fill_statx(&a, dev, &mut *stx);
                0
            }
            Some((Err(e), _)) => fail(e),
        }
    }
}

/// Whether `creds` may access a file of `a` as `mode` (R_OK, W_OK, X_OK) asks, as
/// the kernel's generic permission check decides it.
fn may(a: &Attr, c: &Creds, mode: c_int) -> bool {
    let want = (mode & 7) as u32;
    if c.uid == 0 {
        // Root reads and writes anything, and executes what someone may execute.
        return want & 1 == 0 || a.kind == FileKind::Dir || a.mode & 0o111 != 0;
    }
    let bits = match () {
        _ if c.uid == a.uid => a.mode >> 6,
        _ if c.gid == a.gid || c.groups.contains(&a.gid) => a.mode >> 3,
        _ => a.mode,
    } & 7;
    bits & want == want
}

/// access of a path: 0, -1, or None for the kernel.
///
/// # Safety
/// `path` is NULL or NUL-terminated.
unsafe fn access_ours(
    dirfd: c_int,
    path: *const c_char,
    mode: c_int,
    flags: c_int,
) -> Option<c_int> {
    let _b = enter()?;
    let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
    // SAFETY: per this function's contract.
    let (attr, _) = unsafe { attr_of(dirfd, path, follow) }?;
    let creds = &state::served()?.creds;
    Some(match attr {
        Err(e) => fail(e),
        Ok(_) if mode & !7 != 0 => fail(libc::EINVAL),
        Ok(a) if mode == libc::F_OK || may(&a, creds, mode) => 0,
        Ok(_) => fail(libc::EACCES),
    })
}

/// # Safety
/// As access(2).
#[no_mangle]
pub unsafe extern "C" fn access(path: *const c_char, mode: c_int) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        match access_ours(libc::AT_FDCWD, path, mode, 0) {
            Some(r) => r,
            None => real::access(path, mode),
        }
    }
}

/// # Safety
/// As faccessat(2).
#[no_mangle]
pub unsafe extern "C" fn faccessat(
    dirfd: c_int,
    path: *const c_char,
    mode: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        match access_ours(dirfd, path, mode, flags) {
            Some(r) => r,
            None => real::faccessat(dirfd, path, mode, flags),
        }
    }
}

/// Extended attributes other than nacre's own (`nacre.layout`, `nacre.hsm`, which the
/// mount serves): nacre keeps none, so a file that exists has no such attribute
/// (ENODATA), as the mount answers. `ls -l` asks two per file (an ACL, a security
/// label); answering here saves a trip through FUSE each, and leaves no entry in the
/// kernel's cache to go stale.
///
/// # Safety
/// `path` and `name` are NULL or NUL-terminated.
unsafe fn getxattr_ours(
    path: *const c_char,
    name: *const c_char,
    follow: bool,
) -> Option<libc::ssize_t> {
    // SAFETY: per this function's contract.
    if unsafe { bytes(name) }.is_none_or(|n| n.starts_with(b"nacre.")) {
        return None;
    }
    let _b = enter()?;
    // SAFETY: per this function's contract.
    let (attr, _) = unsafe { attr_of(libc::AT_FDCWD, path, follow) }?;
    Some(match attr {
        Ok(_) => fail(libc::ENODATA),
        Err(e) => fail(e),
    })
}

/// # Safety
/// As getxattr(2).
#[no_mangle]
pub unsafe extern "C" fn getxattr(
    path: *const c_char,
    name: *const c_char,
    value: *mut std::ffi::c_void,
    size: libc::size_t,
) -> libc::ssize_t {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        getxattr_ours(path, name, true).unwrap_or_else(|| real::getxattr(path, name, value, size))
    }
}

/// # Safety
/// As lgetxattr(2).
#[no_mangle]
pub unsafe extern "C" fn lgetxattr(
    path: *const c_char,
    name: *const c_char,
    value: *mut std::ffi::c_void,
    size: libc::size_t,
) -> libc::ssize_t {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        getxattr_ours(path, name, false).unwrap_or_else(|| real::lgetxattr(path, name, value, size))
    }
}
