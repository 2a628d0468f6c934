//! Descriptors across dup, fcntl, fork, exec and spawn; fchmod, fchown and futimens
//! by inode; and the calls we do not serve on a descriptor of ours: those turn it into
//! a kernel descriptor of the same file first (fds.rs, "demotes" it), so they act on
//! the file through the mount.

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void};
use std::sync::atomic::Ordering;

use libc::{off64_t, size_t, ssize_t};
use nacre_proto::meta::{self, SetAttr};

use crate::fds;
use crate::files::{errno_of, fail, set_errno};
use crate::real;
use crate::state::{self, enter};

/// Demotes `fd` if it is ours (its size told to the MDS first when we can).
fn kernel_fd(fd: c_int) {
    if let Some(o) = fds::get(fd) {
        state::count(state::Count::Kernel);
        let tell = enter();
        fds::demote(&o, tell.is_some());
    }
}

/// A new descriptor `nfd` (from dup of `fd`) shares `fd`'s entry.
fn shared(fd: c_int, nfd: c_int) -> c_int {
    if nfd >= 0 {
        if let Some(o) = fds::get(fd) {
            fds::insert(nfd, o);
        }
    }
    nfd
}

/// # Safety
/// As dup(2).
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: the caller's arguments, as given.
    let nfd = unsafe { real::dup(fd) };
    if (0..=2).contains(&nfd) && fds::get(fd).is_some() {
        // A standard stream (see dup_to): the kernel's, and so the file.
        // SAFETY: the descriptor just made.
        unsafe { real::close(nfd) };
        kernel_fd(fd);
        // SAFETY: the caller's arguments, as given.
        return unsafe { real::dup(fd) };
    }
    shared(fd, nfd)
}

/// dup2 and dup3: a descriptor of ours that `to` named is closed first (its file
/// closed if it was the last), as the kernel does.
///
/// # Safety
/// As dup3(2).
unsafe fn dup_to(fd: c_int, to: c_int, flags: Option<c_int>) -> c_int {
    if fd == to {
        // SAFETY: the caller's arguments, as given.
        return unsafe {
            match flags {
                None => real::dup2(fd, to),
                Some(f) => real::dup3(fd, to, f),
            }
        };
    }
    // The standard streams are written and read by stdio through the C library's
    // internal calls, which never reach us: a file of ours going there goes to the
    // kernel first (a shell's `echo >&3`).
    if to <= 2 {
        kernel_fd(fd);
    }
    if fds::get(to).is_some() {
        if let Some(o) = fds::remove(to) {
            let _ = fds::release(o);
        }
    }
    // SAFETY: the caller's arguments, as given.
    let nfd = unsafe {
        match flags {
            None => real::dup2(fd, to),
            Some(f) => real::dup3(fd, to, f),
        }
    };
    shared(fd, nfd)
}

/// # Safety
/// As dup2(2).
#[no_mangle]
pub unsafe extern "C" fn dup2(fd: c_int, to: c_int) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe { dup_to(fd, to, None) }
}

/// # Safety
/// As dup3(2).
#[no_mangle]
pub unsafe extern "C" fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe { dup_to(fd, to, Some(flags)) }
}

/// The open flags F_SETFL may change.
const SETFL: c_int =
    libc::O_APPEND | libc::O_NONBLOCK | libc::O_ASYNC | libc::O_DIRECT | libc::O_NOATIME;

/// fcntl takes a third argument of a type the command names: an int, a pointer or
/// nothing. All travel in the same register of the C calling convention, so one
/// `unsigned long` carries any of them through.
///
/// # Safety
/// As fcntl(2).
unsafe fn fcntl_any(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    let Some(o) = fds::get(fd) else {
        // SAFETY: the caller's arguments, as given.
        return unsafe { real::fcntl(fd, cmd, arg) };
    };
    match cmd {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC if arg <= 2 => {
            // It may land on a standard stream (see dup_to).
            kernel_fd(fd);
            // SAFETY: the caller's arguments, as given.
            unsafe { real::fcntl(fd, cmd, arg) }
        }
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            // SAFETY: the caller's arguments, as given.
            shared(fd, unsafe { real::fcntl(fd, cmd, arg) })
        }
        libc::F_GETFL => o.flags.load(Ordering::Acquire) | libc::O_LARGEFILE,
        libc::F_SETFL => {
            let f = o.flags.load(Ordering::Acquire);
            o.flags
                .store((f & !SETFL) | (arg as c_int & SETFL), Ordering::Release);
            0
        }
        // SAFETY: the caller's arguments, as given (the placeholder keeps these).
        libc::F_GETFD | libc::F_SETFD => unsafe { real::fcntl(fd, cmd, arg) },
        _ => {
            // Locks, leases, seals, pipe sizes...: the kernel's, on the file itself.
            kernel_fd(fd);
            // SAFETY: the caller's arguments, as given.
            unsafe { real::fcntl(fd, cmd, arg) }
        }
    }
}

/// # Safety
/// As fcntl(2).
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe { fcntl_any(fd, cmd, arg) }
}

/// # Safety
/// As fcntl(2).
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe { fcntl_any(fd, cmd, arg) }
}

const FICLONE: c_ulong = 0x4004_9409;
const FICLONERANGE: c_ulong = 0x4020_940d;
const FIDEDUPERANGE: c_ulong = 0xc018_9436;

/// # Safety
/// As ioctl(2) (its third argument, when there is one, as one pointer-sized value).
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, req: c_ulong, arg: *mut c_void) -> c_int {
    if fds::get(fd).is_none() {
        // SAFETY: the caller's arguments, as given.
        return unsafe { real::ioctl(fd, req, arg) };
    }
    match req {
        // SAFETY: the close-on-exec flag of the placeholder, which exec honours.
        libc::FIOCLEX => unsafe { real::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC as c_ulong) },
        // SAFETY: as above.
        libc::FIONCLEX => unsafe { real::fcntl(fd, libc::F_SETFD, 0) },
        // No shared extents in nacre: cp falls back to copying.
        FICLONE | FICLONERANGE | FIDEDUPERANGE => fail(libc::EOPNOTSUPP),
        libc::TCGETS => fail(libc::ENOTTY),
        _ => {
            kernel_fd(fd);
            // SAFETY: the caller's arguments, as given.
            unsafe { real::ioctl(fd, req, arg) }
        }
    }
}

/// # Safety
/// As isatty(3).
#[no_mangle]
pub unsafe extern "C" fn isatty(fd: c_int) -> c_int {
    match fds::get(fd) {
        Some(_) => {
            set_errno(libc::ENOTTY);
            0
        }
        // SAFETY: the caller's arguments, as given.
        None => unsafe { real::isatty(fd) },
    }
}

macro_rules! mmap_fn {
    ($name:ident) => {
        /// A mapping of a file of ours maps it through the mount.
        ///
        /// # Safety
        /// As mmap(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            addr: *mut c_void,
            len: size_t,
            prot: c_int,
            flags: c_int,
            fd: c_int,
            off: off64_t,
        ) -> *mut c_void {
            if flags & libc::MAP_ANONYMOUS == 0 {
                kernel_fd(fd);
            }
            // SAFETY: the caller's arguments, as given.
            unsafe { real::mmap64(addr, len, prot, flags, fd, off) }
        }
    };
}
mmap_fn!(mmap);
mmap_fn!(mmap64);

/// Calls we do not serve on a descriptor: the kernel's, on the file through the mount.
macro_rules! kernel_fn {
    ($name:ident => $real:ident ( $fd:ident : c_int $(, $a:ident : $t:ty)* ) -> $r:ty) => {
        /// # Safety
        /// As the C library's function of this name.
        #[no_mangle]
        pub unsafe extern "C" fn $name($fd: c_int $(, $a: $t)*) -> $r {
            kernel_fd($fd);
            // SAFETY: the caller's arguments, as given.
            unsafe { real::$real($fd $(, $a)*) }
        }
    };
}
kernel_fn!(flock => flock(fd: c_int, op: c_int) -> c_int);
kernel_fn!(fallocate => fallocate64(fd: c_int, mode: c_int, off: off64_t, len: off64_t) -> c_int);
kernel_fn!(fallocate64 => fallocate64(fd: c_int, mode: c_int, off: off64_t, len: off64_t) -> c_int);
kernel_fn!(posix_fallocate => posix_fallocate64(fd: c_int, off: off64_t, len: off64_t) -> c_int);
kernel_fn!(posix_fallocate64 => posix_fallocate64(fd: c_int, off: off64_t, len: off64_t) -> c_int);
kernel_fn!(fstatfs => fstatfs64(fd: c_int, buf: *mut libc::statfs64) -> c_int);
kernel_fn!(fstatfs64 => fstatfs64(fd: c_int, buf: *mut libc::statfs64) -> c_int);
kernel_fn!(fstatvfs => fstatvfs64(fd: c_int, buf: *mut libc::statvfs64) -> c_int);
kernel_fn!(fstatvfs64 => fstatvfs64(fd: c_int, buf: *mut libc::statvfs64) -> c_int);
kernel_fn!(fsetxattr => fsetxattr(fd: c_int, name: *const c_char, value: *const c_void, size: size_t, flags: c_int) -> c_int);
kernel_fn!(flistxattr => flistxattr(fd: c_int, list: *mut c_char, size: size_t) -> ssize_t);
kernel_fn!(fremovexattr => fremovexattr(fd: c_int, name: *const c_char) -> c_int);
kernel_fn!(fdopen => fdopen(fd: c_int, mode: *const c_char) -> *mut libc::FILE);

/// fgetxattr: nacre's own attributes through the mount; no other (ENODATA, as the
/// mount answers), without a trip through it.
///
/// # Safety
/// As fgetxattr(2).
#[no_mangle]
pub unsafe extern "C" fn fgetxattr(
    fd: c_int,
    name: *const c_char,
    value: *mut c_void,
    size: size_t,
) -> ssize_t {
    if fds::get(fd).is_some() {
        // SAFETY: the caller's name, NULL or NUL-terminated.
        let theirs = unsafe { state::bytes(name) }.is_some_and(|n| !n.starts_with(b"nacre."));
        if theirs {
            return fail(libc::ENODATA);
        }
        kernel_fd(fd);
    }
    // SAFETY: the caller's arguments, as given.
    unsafe { real::fgetxattr(fd, name, value, size) }
}

/// # Safety
/// As sendfile(2).
#[no_mangle]
pub unsafe extern "C" fn sendfile(out: c_int, inp: c_int, off: *mut off64_t, n: size_t) -> ssize_t {
    kernel_fd(out);
    kernel_fd(inp);
    // SAFETY: the caller's arguments, as given.
    unsafe { real::sendfile64(out, inp, off, n) }
}

/// # Safety
/// As sendfile(2).
#[no_mangle]
pub unsafe extern "C" fn sendfile64(
    out: c_int,
    inp: c_int,
    off: *mut off64_t,
    n: size_t,
) -> ssize_t {
    // SAFETY: the caller's arguments, as given.
    unsafe { sendfile(out, inp, off, n) }
}

/// Between files of ours there is no copy offload; callers (cp) fall back to read
/// and write on EXDEV, as between file systems.
///
/// # Safety
/// As copy_file_range(2).
#[no_mangle]
pub unsafe extern "C" fn copy_file_range(
    fd_in: c_int,
    off_in: *mut off64_t,
    fd_out: c_int,
    off_out: *mut off64_t,
    n: size_t,
    flags: c_uint,
) -> ssize_t {
    if fds::get(fd_in).is_some() || fds::get(fd_out).is_some() {
        return fail(libc::EXDEV);
    }
    // SAFETY: the caller's arguments, as given.
    unsafe { real::copy_file_range(fd_in, off_in, fd_out, off_out, n, flags) }
}

/// Advice on a file of ours is taken and has no effect (there is no page cache).
///
/// # Safety
/// As posix_fadvise(2).
#[no_mangle]
pub unsafe extern "C" fn posix_fadvise(
    fd: c_int,
    off: off64_t,
    len: off64_t,
    advice: c_int,
) -> c_int {
    match fds::get(fd) {
        Some(_) => 0,
        // SAFETY: the caller's arguments, as given.
        None => unsafe { real::posix_fadvise64(fd, off, len, advice) },
    }
}

/// # Safety
/// As posix_fadvise(2).
#[no_mangle]
pub unsafe extern "C" fn posix_fadvise64(
    fd: c_int,
    off: off64_t,
    len: off64_t,
    advice: c_int,
) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe { posix_fadvise(fd, off, len, advice) }
}

/// # Safety
/// As umask(2).
#[no_mangle]
pub unsafe extern "C" fn umask(mask: libc::mode_t) -> libc::mode_t {
    // SAFETY: the caller's arguments, as given.
    let old = unsafe { real::umask(mask) };
    state::set_umask(mask);
    old
}

/// vfork's child shares the parent's memory and must not return through our frame:
/// it is a fork (whose handlers give the child kernel descriptors), as POSIX allows.
///
/// # Safety
/// As vfork(2), with fork's semantics.
#[no_mangle]
pub unsafe extern "C" fn vfork() -> libc::pid_t {
    // SAFETY: fork with the process's atfork handlers.
    unsafe { real::fork() }
}

macro_rules! exec_fn {
    ($all:expr, $name:ident ( $($a:ident : $t:ty),* ) -> $r:ty) => {
        /// What survives exec is a kernel descriptor: the new program may not be ours.
        ///
        /// # Safety
        /// As the C library's function of this name.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $r {
            fds::demote_inherited($all);
            // SAFETY: the caller's arguments, as given.
            unsafe { real::$name($($a),*) }
        }
    };
}
exec_fn!(false, execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int);
exec_fn!(false, execv(path: *const c_char, argv: *const *const c_char) -> c_int);
exec_fn!(false, execvp(file: *const c_char, argv: *const *const c_char) -> c_int);
exec_fn!(false, execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int);
exec_fn!(false, fexecve(fd: c_int, argv: *const *const c_char, envp: *const *const c_char) -> c_int);
exec_fn!(true, posix_spawn(pid: *mut libc::pid_t, path: *const c_char, acts: *const libc::posix_spawn_file_actions_t, attr: *const libc::posix_spawnattr_t, argv: *const *mut c_char, envp: *const *mut c_char) -> c_int);
exec_fn!(true, posix_spawnp(pid: *mut libc::pid_t, file: *const c_char, acts: *const libc::posix_spawn_file_actions_t, attr: *const libc::posix_spawnattr_t, argv: *const *mut c_char, envp: *const *mut c_char) -> c_int);
exec_fn!(false, system(cmd: *const c_char) -> c_int);
exec_fn!(false, popen(cmd: *const c_char, mode: *const c_char) -> *mut libc::FILE);

/// Closes the files of ours among descriptors `first..=last` (close_range and
/// closefrom close descriptors without close(3), and a number we still listed could
/// be given to another file later).
fn forget_range(first: c_uint, last: c_uint) {
    for (fd, _) in fds::all() {
        if (first..=last).contains(&(fd as c_uint)) {
            if let Some(o) = fds::remove(fd) {
                let _ = fds::release(o);
            }
        }
    }
}

/// # Safety
/// As close_range(2).
#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    // CLOSE_RANGE_CLOEXEC only marks them; the files stay open.
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 && first <= last {
        forget_range(first, last);
    }
    // SAFETY: the caller's arguments, as given.
    unsafe { real::close_range(first, last, flags) }
}

/// # Safety
/// As closefrom(3).
#[no_mangle]
pub unsafe extern "C" fn closefrom(first: c_int) {
    forget_range(first.max(0) as c_uint, c_uint::MAX);
    // SAFETY: the caller's arguments, as given.
    unsafe { real::closefrom(first) }
}

/// A setattr on one of ours, by its inode (fchmod, fchown, futimens: tar and cp -p
/// make one per file): Some(0 or -1), None if `fd` is not ours.
fn setattr_ours(fd: c_int, attr: SetAttr) -> Option<c_int> {
    let o = fds::get(fd)?;
    let _b = enter()?;
    state::count(state::Count::Stat);
    if attr.mask == 0 {
        return Some(0);
    }
    Some(match o.file.setattr(attr) {
        Ok(_) => 0,
        Err(e) => fail(errno_of(&e)),
    })
}

/// # Safety
/// As fchmod(2).
#[no_mangle]
pub unsafe extern "C" fn fchmod(fd: c_int, mode: libc::mode_t) -> c_int {
    let attr = SetAttr {
        mask: meta::set::MODE,
        mode: mode & 0o7777,
        ..Default::default()
    };
    // SAFETY: the caller's arguments, as given.
    setattr_ours(fd, attr).unwrap_or_else(|| unsafe { real::fchmod(fd, mode) })
}

/// # Safety
/// As fchown(2): -1 leaves an id as it is.
#[no_mangle]
pub unsafe extern "C" fn fchown(fd: c_int, uid: libc::uid_t, gid: libc::gid_t) -> c_int {
    let mut attr = SetAttr::default();
    if uid != libc::uid_t::MAX {
        (attr.mask, attr.uid) = (attr.mask | meta::set::UID, uid);
    }
    if gid != libc::gid_t::MAX {
        (attr.mask, attr.gid) = (attr.mask | meta::set::GID, gid);
    }
    // SAFETY: the caller's arguments, as given.
    setattr_ours(fd, attr).unwrap_or_else(|| unsafe { real::fchown(fd, uid, gid) })
}

/// One time of futimens: its mask bits, and nanoseconds since the epoch.
fn time_of(t: &libc::timespec, set: u32, now: u32) -> Result<(u32, i64), c_int> {
    match t.tv_nsec {
        libc::UTIME_OMIT => Ok((0, 0)),
        libc::UTIME_NOW => Ok((now, 0)),
        ns if (0..1_000_000_000).contains(&ns) => Ok((set, t.tv_sec * 1_000_000_000 + ns)),
        _ => Err(libc::EINVAL),
    }
}

/// The setattr of futimens and utimensat times (NULL: both now); EINVAL for a bad one.
///
/// # Safety
/// `times` is NULL or points to two timespecs.
pub unsafe fn times_attr(times: *const libc::timespec) -> Result<SetAttr, c_int> {
    let now = [libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_NOW,
    }; 2];
    let t: &[libc::timespec] = match times.is_null() {
        true => &now,
        // SAFETY: per this function's contract.
        false => unsafe { std::slice::from_raw_parts(times, 2) },
    };
    let a = time_of(&t[0], meta::set::ATIME, meta::set::ATIME_NOW)?;
    let m = time_of(&t[1], meta::set::MTIME, meta::set::MTIME_NOW)?;
    Ok(SetAttr {
        mask: a.0 | m.0,
        atime: a.1,
        mtime: m.1,
        ..Default::default()
    })
}

/// # Safety
/// As futimens(3): NULL sets both times to now.
#[no_mangle]
pub unsafe extern "C" fn futimens(fd: c_int, times: *const libc::timespec) -> c_int {
    if fds::get(fd).is_none() {
        // SAFETY: the caller's arguments, as given.
        return unsafe { real::futimens(fd, times) };
    }
    // SAFETY: the caller's times, NULL or two.
    let attr = match unsafe { times_attr(times) } {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    // SAFETY: the caller's arguments, as given.
    setattr_ours(fd, attr).unwrap_or_else(|| unsafe { real::futimens(fd, times) })
}
