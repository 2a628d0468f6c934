//! Descriptors we serve. Each is a real descriptor of the process, an `O_PATH`
//! descriptor of /dev/null that holds its number (so numbers never collide, `close`,
//! `poll` and the close-on-exec flag behave, and a call we do not know fails with
//! EBADF instead of reaching another file); the table maps it to the open [`File`].
//! Descriptors made by dup share one entry, and so one offset, as POSIX has it.
//!
//! A call we cannot serve on such a descriptor (mmap, locks, fchmod...) first turns
//! it into a kernel descriptor of the same file through the mount ("demotes" it): the
//! size is told to the MDS, the file is opened through the mount with the same
//! flags, moved to the same offset and put in place of the placeholder with dup3,
//! for every descriptor that shares the entry.

use std::ffi::{c_int, CString};
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use nacre_client::File;
use parking_lot::Mutex;

use crate::real;
use crate::state;

/// One open file description we serve.
pub struct Open {
    pub file: File,
    /// Its path through the mount, and `MOUNT/.nacre/ino/INO` (the mount opens an
    /// inode by number there, whatever its names are now): for a demotion.
    pub kpath: CString,
    pub byino: CString,
    /// `st_dev` of its mount.
    pub dev: u64,
    /// O_ACCMODE, O_APPEND, O_NONBLOCK, O_SYNC... as F_GETFL shows them.
    pub flags: AtomicI32,
    /// The offset of read, write and lseek.
    pub pos: AtomicU64,
    /// Held by read, write and lseek: each moves the offset as one step.
    pub io: Mutex<()>,
}

/// Descriptors below this are marked in a bitmap, so a call on any other descriptor
/// of the process costs one atomic load; larger ones look in the table.
const FAST: usize = 1 << 16;
static MARKS: [AtomicU64; FAST / 64] = [const { AtomicU64::new(0) }; FAST / 64];
static COUNT: AtomicUsize = AtomicUsize::new(0);
static TABLE: Mutex<Vec<(c_int, Arc<Open>)>> = Mutex::new(Vec::new());

fn mark(fd: c_int, on: bool) {
    let fd = fd as usize;
    if fd < FAST {
        let bit = 1u64 << (fd % 64);
        match on {
            true => MARKS[fd / 64].fetch_or(bit, Ordering::Release),
            false => MARKS[fd / 64].fetch_and(!bit, Ordering::Release),
        };
    }
}

/// The entry of `fd`, if we serve it.
pub fn get(fd: c_int) -> Option<Arc<Open>> {
    if fd < 0 || COUNT.load(Ordering::Acquire) == 0 || state::is_forked() {
        return None;
    }
    let u = fd as usize;
    if u < FAST && MARKS[u / 64].load(Ordering::Acquire) & (1 << (u % 64)) == 0 {
        return None;
    }
    let t = TABLE.lock();
    t.iter().find(|(f, _)| *f == fd).map(|(_, o)| o.clone())
}

pub fn insert(fd: c_int, open: Arc<Open>) {
    let mut t = TABLE.lock();
    t.retain(|(f, _)| *f != fd);
    t.push((fd, open));
    mark(fd, true);
    COUNT.store(t.len(), Ordering::Release);
}

/// Takes `fd` out of the table; returns its entry.
pub fn remove(fd: c_int) -> Option<Arc<Open>> {
    let mut t = TABLE.lock();
    let i = t.iter().position(|(f, _)| *f == fd)?;
    let (_, o) = t.swap_remove(i);
    mark(fd, false);
    COUNT.store(t.len(), Ordering::Release);
    Some(o)
}

/// Drops a descriptor's hold on `open`: the last one closes the file (not one a dup
/// still shares). None while another descriptor holds it.
pub fn release(open: Arc<Open>) -> Option<std::io::Result<()>> {
    let open = Arc::try_unwrap(open).ok()?;
    let _b = state::enter();
    Some(open.file.close())
}

/// Every descriptor and its entry.
pub fn all() -> Vec<(c_int, Arc<Open>)> {
    TABLE.lock().clone()
}

/// A placeholder descriptor: O_PATH on /dev/null, close-on-exec if asked.
pub fn placeholder(cloexec: bool) -> c_int {
    let flags = libc::O_PATH | if cloexec { libc::O_CLOEXEC } else { 0 };
    // SAFETY: a static NUL-terminated path.
    unsafe { real::open64(c"/dev/null".as_ptr(), flags, 0) }
}

/// Whether `fd` is closed on exec.
pub fn cloexec(fd: c_int) -> bool {
    // SAFETY: F_GETFD reads the descriptor's flags.
    let f = unsafe { real::fcntl(fd, libc::F_GETFD, 0) };
    f >= 0 && f & libc::FD_CLOEXEC != 0
}

/// Turns every descriptor of `open` into a kernel descriptor of its file (see the
/// module comment); `tell` says whether the MDS may be told the size (not in a fork's
/// child, whose client is gone). Returns 0 or an errno.
pub fn demote(open: &Arc<Open>, tell: bool) -> c_int {
    if tell {
        let _ = open.file.report_size();
    }
    let keep = libc::O_ACCMODE | libc::O_APPEND | libc::O_NONBLOCK | libc::O_SYNC | libc::O_DSYNC;
    let flags = open.flags.load(Ordering::Acquire) & keep;
    // By number first (never stale, and the file may have no name left), else by the
    // path it was opened by (the mount gives numbers to root and owners only).
    let mut kfd = -1;
    let mut err = libc::ESTALE;
    for path in [&open.byino, &open.kpath] {
        match reopen(path, flags, open.file.ino()) {
            Ok(fd) => {
                kfd = fd;
                break;
            }
            Err(e) => err = e,
        }
    }
    if kfd < 0 {
        return err;
    }
    // SAFETY: the descriptor is ours until dup3 moves it.
    unsafe {
        real::lseek64(kfd, open.pos.load(Ordering::Acquire) as i64, libc::SEEK_SET);
        let fds: Vec<c_int> = all()
            .into_iter()
            .filter(|(_, o)| Arc::ptr_eq(o, open))
            .map(|(f, _)| f)
            .collect();
        for fd in fds {
            let flag = if cloexec(fd) { libc::O_CLOEXEC } else { 0 };
            if real::dup3(kfd, fd, flag) >= 0 {
                remove(fd);
            }
        }
        real::close(kfd);
    }
    0
}

/// `path` opened by the kernel with `flags`, if it is inode `ino`.
fn reopen(path: &CString, flags: c_int, ino: u64) -> Result<c_int, c_int> {
    // SAFETY: a NUL-terminated path; the descriptor is closed unless returned.
    unsafe {
        let fd = real::open64(path.as_ptr(), flags | libc::O_CLOEXEC, 0);
        if fd < 0 {
            return Err(errno());
        }
        // The path may name another file by now (ours renamed or unlinked, another
        // made there): never put that one in its place.
        let mut st: libc::stat64 = std::mem::zeroed();
        if real::fstat64(fd, &mut st) != 0 || st.st_ino != ino {
            real::close(fd);
            return Err(libc::ESTALE);
        }
        Ok(fd)
    }
}

/// Demotes every descriptor that survives exec (before exec, system and popen), or
/// with `all` every one (before posix_spawn, whose file actions may dup2 any of them
/// into the child, close-on-exec or not).
pub fn demote_inherited(all_of_them: bool) {
    if COUNT.load(Ordering::Acquire) == 0 {
        return;
    }
    let tell = state::enter();
    for (fd, open) in all() {
        if (all_of_them || !cloexec(fd)) && get(fd).is_some() {
            demote(&open, tell.is_some());
        }
    }
}

pub fn errno() -> c_int {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// fork: the parent tells the MDS the sizes of what it wrote and holds the table
/// across the fork; the child, which cannot use the client, demotes every
/// descriptor, so that what it inherited keeps working through the mount.
pub extern "C" fn before_fork() {
    if let Some(_b) = state::enter() {
        for (_, o) in all() {
            if o.file.unreported() {
                let _ = o.file.report_size();
            }
        }
    }
    std::mem::forget(TABLE.lock());
}

pub extern "C" fn after_fork_parent() {
    // SAFETY: before_fork locked the table in this thread and forgot the guard.
    unsafe { TABLE.force_unlock() };
}

pub extern "C" fn after_fork_child() {
    // SAFETY: before_fork locked the table in the thread that forked, which is this
    // child's only thread.
    unsafe { TABLE.force_unlock() };
    state::forked();
    nacre_client::Client::abandon_thread_connections();
    let entries = all();
    // The files belong to the parent's client: never closed from here.
    for (_, o) in &entries {
        std::mem::forget(o.clone());
    }
    for (_, o) in &entries {
        // Some of its descriptors may be gone already (demoted with another).
        if TABLE.lock().iter().any(|(_, x)| Arc::ptr_eq(x, o)) {
            demote(o, false);
        }
    }
    TABLE.lock().clear();
    COUNT.store(0, Ordering::Release);
}
