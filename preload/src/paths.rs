//! Which calls are ours: a path (absolute, or relative to the working directory or to
//! a directory descriptor) that falls under a mount of the client's file system, with
//! no `..` in it (the kernel resolves those, and symbolic links on the way: a name
//! the client cannot walk is handed to it).

use std::ffi::{c_char, c_int, CString};

use parking_lot::Mutex;

use crate::real;
use crate::state::{self, bytes, Served};

/// A path in nacre.
pub struct Target {
    /// The path inside the file system ("/a/b").
    pub fs: String,
    /// The same path through the mount, for the kernel.
    pub kpath: CString,
    /// `st_dev` of its mount.
    pub dev: u64,
    /// The path ended in a slash: it must name a directory (or a link to one).
    pub dir_only: bool,
    /// Its mount's directory ("" for "/").
    pub mount_dir: &'static [u8],
}

/// The working directory, as the kernel gave it last (chdir and fchdir forget it).
static CWD: Mutex<Option<Vec<u8>>> = Mutex::new(None);

pub fn forget_cwd() {
    *CWD.lock() = None;
}

fn cwd() -> Option<Vec<u8>> {
    let mut cwd = CWD.lock();
    if cwd.is_none() {
        *cwd = std::env::current_dir()
            .ok()
            .map(|p| p.into_os_string().into_encoded_bytes());
    }
    cwd.clone()
}

/// The path a directory descriptor was opened at (from /proc/self/fd).
fn fd_path(fd: c_int) -> Option<Vec<u8>> {
    let link = format!("/proc/self/fd/{fd}");
    let p = std::fs::read_link(link)
        .ok()?
        .into_os_string()
        .into_encoded_bytes();
    (p.starts_with(b"/") && !p.ends_with(b" (deleted)")).then_some(p)
}

/// `path` without empty and `.` components; None if it has `..`.
fn normalize(path: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(path.len());
    for part in path.split(|&c| c == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return None,
            p => {
                out.push(b'/');
                out.extend_from_slice(p);
            }
        }
    }
    Some(out)
}

/// The mount `abs` (normalized) is under, the deepest if nested, and the rest of it.
fn mount_of(abs: &[u8]) -> Option<(usize, &[u8])> {
    let mut best: Option<(usize, usize)> = None;
    for (i, m) in state::mounts().iter().enumerate() {
        let d = &m.dir;
        let under = abs.starts_with(d) && (abs.len() == d.len() || abs[d.len()] == b'/');
        if under && best.is_none_or(|(_, len)| d.len() > len) {
            best = Some((i, d.len()));
        }
    }
    best.map(|(i, len)| (i, &abs[len..]))
}

/// Where `path` (relative to `dirfd`) is in nacre, if it is ours to serve.
///
/// # Safety
/// `path` is NULL or NUL-terminated.
pub unsafe fn resolve(dirfd: c_int, path: *const c_char) -> Option<(&'static Served, Target)> {
    // SAFETY: per this function's contract.
    let p = unsafe { bytes(path) }?;
    if p.is_empty() {
        return None;
    }
    // "dir/" and "dir/." name a directory; a missing one must not go to the kernel
    // (it would remember it missing for the entry timeout, hiding our mkdir).
    let dir_only = p.len() > 1 && (p.ends_with(b"/") || p.ends_with(b"/."));
    let abs = match p[0] == b'/' {
        true => normalize(p)?,
        false => {
            let mut base = match dirfd == libc::AT_FDCWD {
                true => cwd()?,
                false => fd_path(dirfd)?,
            };
            base.push(b'/');
            base.extend_from_slice(p);
            normalize(&base)?
        }
    };
    let (i, rest) = mount_of(&abs)?;
    let fs = match rest.is_empty() {
        true => "/".to_string(),
        false => String::from_utf8(rest.to_vec()).ok()?,
    };
    let served = state::served()?;
    if !served.serves[i] {
        return None;
    }
    let kpath = match abs.is_empty() {
        true => CString::new("/").ok()?,
        false => CString::new(abs).ok()?,
    };
    Some((
        served,
        Target {
            fs,
            kpath,
            dev: served.devs[i],
            dir_only,
            mount_dir: &state::mounts()[i].dir,
        },
    ))
}

/// chdir and fchdir: the working directory changes.
///
/// # Safety
/// As chdir(2).
#[no_mangle]
pub unsafe extern "C" fn chdir(path: *const c_char) -> c_int {
    // SAFETY: the caller's arguments, as given.
    let r = unsafe { real::chdir(path) };
    forget_cwd();
    r
}

/// # Safety
/// As fchdir(2).
#[no_mangle]
pub unsafe extern "C" fn fchdir(fd: c_int) -> c_int {
    // SAFETY: the caller's arguments, as given.
    let r = unsafe { real::fchdir(fd) };
    forget_cwd();
    r
}
