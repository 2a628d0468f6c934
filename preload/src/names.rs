//! Names: unlink, mkdir, rmdir and rename on paths we serve.

use std::ffi::{c_char, c_int, c_uint};
use std::io;

use crate::files::{errno_of, fail, for_kernel, kernel};
use crate::paths::{resolve, Target};
use crate::real;
use crate::state::{self, enter, Count, Served};

/// Runs `op` on the path if it is ours: Some(0 or -1), None for the kernel.
///
/// # Safety
/// `path` is NULL or NUL-terminated.
unsafe fn on_path(
    dirfd: c_int,
    path: *const c_char,
    op: impl FnOnce(&Served, &Target) -> io::Result<()>,
) -> Option<c_int> {
    let _b = enter()?;
    // SAFETY: per this function's contract.
    let (served, t) = unsafe { resolve(dirfd, path) }?;
    state::count(Count::Name);
    match op(served, &t) {
        Ok(()) => Some(0),
        Err(e) if for_kernel(errno_of(&e)) => kernel(),
        Err(e) => Some(fail(errno_of(&e))),
    }
}

fn unlink_op(s: &Served, t: &Target) -> io::Result<()> {
    match t.dir_only {
        // "name/": the kernel's EISDIR or ENOTDIR.
        true => Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        false => s.client.unlink(&t.fs),
    }
}

fn rmdir_op(s: &Served, t: &Target) -> io::Result<()> {
    s.client.rmdir(&t.fs)
}

fn mkdir_op(mode: libc::mode_t) -> impl FnOnce(&Served, &Target) -> io::Result<()> {
    move |s, t| {
        s.client
            .mkdir(&t.fs, mode & 0o7777 & !state::umask())
            .map(drop)
    }
}

/// # Safety
/// As unlink(2).
#[no_mangle]
pub unsafe extern "C" fn unlink(path: *const c_char) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe { on_path(libc::AT_FDCWD, path, unlink_op).unwrap_or_else(|| real::unlink(path)) }
}

/// # Safety
/// As unlinkat(2).
#[no_mangle]
pub unsafe extern "C" fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        let r = match flags {
            0 => on_path(dirfd, path, unlink_op),
            libc::AT_REMOVEDIR => on_path(dirfd, path, rmdir_op),
            _ => None,
        };
        r.unwrap_or_else(|| real::unlinkat(dirfd, path, flags))
    }
}

/// # Safety
/// As rmdir(2).
#[no_mangle]
pub unsafe extern "C" fn rmdir(path: *const c_char) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe { on_path(libc::AT_FDCWD, path, rmdir_op).unwrap_or_else(|| real::rmdir(path)) }
}

/// mkdir of a path of ours (mkdtemp's too): Some(0 or -1), None for the kernel.
///
/// # Safety
/// `path` is NULL or NUL-terminated.
pub unsafe fn mkdir_ours(path: *const c_char, mode: libc::mode_t) -> Option<c_int> {
    // SAFETY: per this function's contract.
    unsafe { on_path(libc::AT_FDCWD, path, mkdir_op(mode)) }
}

/// # Safety
/// As mkdir(2).
#[no_mangle]
pub unsafe extern "C" fn mkdir(path: *const c_char, mode: libc::mode_t) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        on_path(libc::AT_FDCWD, path, mkdir_op(mode)).unwrap_or_else(|| real::mkdir(path, mode))
    }
}

/// # Safety
/// As mkdirat(2).
#[no_mangle]
pub unsafe extern "C" fn mkdirat(dirfd: c_int, path: *const c_char, mode: libc::mode_t) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        on_path(dirfd, path, mkdir_op(mode)).unwrap_or_else(|| real::mkdirat(dirfd, path, mode))
    }
}

/// A rename within one mount we serve: Some(0 or -1), None for the kernel (across
/// mounts it answers EXDEV itself; RENAME_EXCHANGE and whiteouts are its too).
///
/// # Safety
/// Both paths are NULL or NUL-terminated.
unsafe fn rename_ours(
    fd1: c_int,
    from: *const c_char,
    fd2: c_int,
    to: *const c_char,
    flags: c_uint,
) -> Option<c_int> {
    if flags & !libc::RENAME_NOREPLACE != 0 {
        return None;
    }
    let _b = enter()?;
    // SAFETY: per this function's contract.
    let (served, a) = unsafe { resolve(fd1, from) }?;
    // SAFETY: as above.
    let (_, b) = unsafe { resolve(fd2, to) }?;
    if a.dev != b.dev || a.dir_only || b.dir_only {
        return None;
    }
    state::count(Count::Name);
    let r = match flags {
        0 => served.client.rename(&a.fs, &b.fs),
        _ => served.client.rename_noreplace(&a.fs, &b.fs),
    };
    match r {
        Ok(()) => Some(0),
        Err(e) if for_kernel(errno_of(&e)) => kernel(),
        Err(e) => Some(fail(errno_of(&e))),
    }
}

/// # Safety
/// As rename(2).
#[no_mangle]
pub unsafe extern "C" fn rename(from: *const c_char, to: *const c_char) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        rename_ours(libc::AT_FDCWD, from, libc::AT_FDCWD, to, 0)
            .unwrap_or_else(|| real::rename(from, to))
    }
}

/// # Safety
/// As renameat(2).
#[no_mangle]
pub unsafe extern "C" fn renameat(
    fd1: c_int,
    from: *const c_char,
    fd2: c_int,
    to: *const c_char,
) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        rename_ours(fd1, from, fd2, to, 0).unwrap_or_else(|| real::renameat(fd1, from, fd2, to))
    }
}

/// # Safety
/// As renameat2(2).
#[no_mangle]
pub unsafe extern "C" fn renameat2(
    fd1: c_int,
    from: *const c_char,
    fd2: c_int,
    to: *const c_char,
    flags: c_uint,
) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        rename_ours(fd1, from, fd2, to, flags)
            .unwrap_or_else(|| real::renameat2(fd1, from, fd2, to, flags))
    }
}

/// readlink of a path of ours: Some(count or -1), None for the kernel.
///
/// # Safety
/// `path` is NULL or NUL-terminated; `buf` holds `size` bytes.
unsafe fn readlink_ours(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    size: libc::size_t,
) -> Option<libc::ssize_t> {
    let _b = enter()?;
    // SAFETY: per this function's contract.
    let (served, t) = unsafe { resolve(dirfd, path) }?;
    if t.dir_only {
        return None;
    }
    state::count(Count::Stat);
    match served.client.readlink(&t.fs) {
        Ok(target) => {
            let n = target.len().min(size);
            // SAFETY: `buf` holds `size` bytes, and n <= size.
            unsafe { std::ptr::copy_nonoverlapping(target.as_ptr(), buf.cast::<u8>(), n) };
            Some(n as libc::ssize_t)
        }
        Err(e) if for_kernel(errno_of(&e)) => kernel(),
        Err(e) => Some(fail(errno_of(&e))),
    }
}

/// # Safety
/// As readlink(2).
#[no_mangle]
pub unsafe extern "C" fn readlink(
    path: *const c_char,
    buf: *mut c_char,
    size: libc::size_t,
) -> libc::ssize_t {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        readlink_ours(libc::AT_FDCWD, path, buf, size)
            .unwrap_or_else(|| real::readlink(path, buf, size))
    }
}

/// # Safety
/// As readlinkat(2).
#[no_mangle]
pub unsafe extern "C" fn readlinkat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    size: libc::size_t,
) -> libc::ssize_t {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        readlink_ours(dirfd, path, buf, size)
            .unwrap_or_else(|| real::readlinkat(dirfd, path, buf, size))
    }
}

fn symlink_op(target: String) -> impl FnOnce(&Served, &Target) -> io::Result<()> {
    move |s, t| s.client.symlink(&target, &t.fs).map(drop)
}

/// # Safety
/// As symlinkat(2).
#[no_mangle]
pub unsafe extern "C" fn symlinkat(
    target: *const c_char,
    dirfd: c_int,
    path: *const c_char,
) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        let text = crate::state::bytes(target).and_then(|b| String::from_utf8(b.to_vec()).ok());
        let ours = match text {
            Some(text) if !text.is_empty() => on_path(dirfd, path, symlink_op(text)),
            _ => None,
        };
        ours.unwrap_or_else(|| real::symlinkat(target, dirfd, path))
    }
}

/// # Safety
/// As symlink(2).
#[no_mangle]
pub unsafe extern "C" fn symlink(target: *const c_char, path: *const c_char) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe { symlinkat(target, libc::AT_FDCWD, path) }
}

/// # Safety
/// As linkat(2) (AT_SYMLINK_FOLLOW and AT_EMPTY_PATH: the kernel's).
#[no_mangle]
pub unsafe extern "C" fn linkat(
    fd1: c_int,
    from: *const c_char,
    fd2: c_int,
    to: *const c_char,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe {
        let ours = || -> Option<c_int> {
            if flags != 0 {
                return None;
            }
            let _b = enter()?;
            let (served, a) = resolve(fd1, from)?;
            let (_, b) = resolve(fd2, to)?;
            if a.dev != b.dev || a.dir_only || b.dir_only {
                return None;
            }
            state::count(Count::Name);
            match served.client.link(&a.fs, &b.fs) {
                Ok(_) => Some(0),
                Err(e) if for_kernel(errno_of(&e)) => kernel(),
                Err(e) => Some(fail(errno_of(&e))),
            }
        };
        ours().unwrap_or_else(|| real::linkat(fd1, from, fd2, to, flags))
    }
}

/// # Safety
/// As link(2).
#[no_mangle]
pub unsafe extern "C" fn link(from: *const c_char, to: *const c_char) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe { linkat(libc::AT_FDCWD, from, libc::AT_FDCWD, to, 0) }
}
