//! Attribute changes by path: chmod, chown, lchown, fchmodat, fchownat, utimensat and
//! truncate, by the inode the library finds (following a symbolic link where the call
//! does: the kernel's then). Served here rather than by the kernel, whose cached names
//! would not show what the process just made, renamed or removed through the library.

use std::ffi::{c_char, c_int};

use nacre_proto::meta::{self, SetAttr};

use crate::files::{errno_of, fail};
use crate::procs::times_attr;
use crate::real;
use crate::state::{self, enter, Count};
use crate::stats::attr_of;

/// Sets `attr` on the inode at `path` (relative to `dirfd`): Some(0 or -1), None for
/// the kernel.
///
/// # Safety
/// `path` is NULL or NUL-terminated.
unsafe fn set_at(dirfd: c_int, path: *const c_char, follow: bool, attr: SetAttr) -> Option<c_int> {
    let _b = enter()?;
    // SAFETY: per this function's contract.
    let (found, _) = unsafe { attr_of(dirfd, path, follow) }?;
    let served = state::served()?;
    state::count(Count::Name);
    Some(match found {
        Err(e) => fail(e),
        Ok(_) if attr.mask == 0 => 0,
        Ok(a) => match served.client.setattr_as(&served.creds, a.ino, attr) {
            Ok(_) => 0,
            Err(e) => fail(errno_of(&e)),
        },
    })
}

fn mode_attr(mode: libc::mode_t) -> SetAttr {
    SetAttr {
        mask: meta::set::MODE,
        mode: mode & 0o7777,
        ..Default::default()
    }
}

fn owner_attr(uid: libc::uid_t, gid: libc::gid_t) -> SetAttr {
    let mut a = SetAttr::default();
    if uid != libc::uid_t::MAX {
        (a.mask, a.uid) = (a.mask | meta::set::UID, uid);
    }
    if gid != libc::gid_t::MAX {
        (a.mask, a.gid) = (a.mask | meta::set::GID, gid);
    }
    a
}

/// # Safety
/// As chmod(2).
#[no_mangle]
pub unsafe extern "C" fn chmod(path: *const c_char, mode: libc::mode_t) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        set_at(libc::AT_FDCWD, path, true, mode_attr(mode))
            .unwrap_or_else(|| real::chmod(path, mode))
    }
}

/// # Safety
/// As fchmodat(2) (AT_SYMLINK_NOFOLLOW: the kernel's).
#[no_mangle]
pub unsafe extern "C" fn fchmodat(
    dirfd: c_int,
    path: *const c_char,
    mode: libc::mode_t,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        let ours = match flags {
            0 => set_at(dirfd, path, true, mode_attr(mode)),
            _ => None,
        };
        ours.unwrap_or_else(|| real::fchmodat(dirfd, path, mode, flags))
    }
}

/// # Safety
/// As chown(2).
#[no_mangle]
pub unsafe extern "C" fn chown(path: *const c_char, uid: libc::uid_t, gid: libc::gid_t) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        set_at(libc::AT_FDCWD, path, true, owner_attr(uid, gid))
            .unwrap_or_else(|| real::chown(path, uid, gid))
    }
}

/// # Safety
/// As lchown(2).
#[no_mangle]
pub unsafe extern "C" fn lchown(path: *const c_char, uid: libc::uid_t, gid: libc::gid_t) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        set_at(libc::AT_FDCWD, path, false, owner_attr(uid, gid))
            .unwrap_or_else(|| real::lchown(path, uid, gid))
    }
}

/// # Safety
/// As fchownat(2) (AT_EMPTY_PATH: the kernel's).
#[no_mangle]
pub unsafe extern "C" fn fchownat(
    dirfd: c_int,
    path: *const c_char,
    uid: libc::uid_t,
    gid: libc::gid_t,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        let ours = match flags {
            0 => set_at(dirfd, path, true, owner_attr(uid, gid)),
            libc::AT_SYMLINK_NOFOLLOW => set_at(dirfd, path, false, owner_attr(uid, gid)),
            _ => None,
        };
        ours.unwrap_or_else(|| real::fchownat(dirfd, path, uid, gid, flags))
    }
}

/// # Safety
/// As utimensat(2) (a NULL path, or AT_EMPTY_PATH: the kernel's, or futimens for a
/// descriptor of ours).
#[no_mangle]
pub unsafe extern "C" fn utimensat(
    dirfd: c_int,
    path: *const c_char,
    times: *const libc::timespec,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        if path.is_null() {
            return crate::procs::futimens(dirfd, times);
        }
        let attr = match times_attr(times) {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        let ours = match flags {
            0 => set_at(dirfd, path, true, attr),
            libc::AT_SYMLINK_NOFOLLOW => set_at(dirfd, path, false, attr),
            _ => None,
        };
        ours.unwrap_or_else(|| real::utimensat(dirfd, path, times, flags))
    }
}

macro_rules! truncate_fn {
    ($name:ident) => {
        /// # Safety
        /// As truncate(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, len: libc::off64_t) -> c_int {
            if len < 0 {
                return fail(libc::EINVAL);
            }
            let attr = SetAttr {
                mask: meta::set::SIZE,
                size: len as u64,
                ..Default::default()
            };
            // SAFETY: the caller's arguments, as given.
            unsafe {
                set_at(libc::AT_FDCWD, path, true, attr)
                    .unwrap_or_else(|| real::truncate64(path, len))
            }
        }
    };
}
truncate_fn!(truncate);
truncate_fn!(truncate64);
