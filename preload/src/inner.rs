//! The client library's own descriptors and threads. Programs pick descriptor numbers
//! themselves: a shell's `exec 3>file` dup2s onto 3 whatever is there (saving and then
//! closing what it found), so a socket or eventfd of the library that had landed on 3
//! would be replaced under it. Every descriptor the library makes therefore moves up,
//! above half the descriptor limit (at most 4096), where programs do not dup2 to; and
//! the threads the library starts are the library's for life: their calls are never
//! served, and their descriptors move up too.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::fds;
use crate::real;
use crate::state;

/// Where the library's descriptors go: the lowest free one from here.
static HIGH: AtomicI32 = AtomicI32::new(0);

/// At load: half the soft descriptor limit, at most 4096; none below 20.
pub fn init() {
    // SAFETY: getrlimit fills the struct given.
    let soft = unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        match libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) {
            0 => r.rlim_cur,
            _ => 0,
        }
    };
    let high = (soft / 2).min(4096) as c_int;
    HIGH.store(if high >= 10 { high } else { 0 }, Ordering::Relaxed);
}

/// `fd`, moved up if the library made it (see the module comment).
pub fn lift(fd: c_int) -> c_int {
    let high = HIGH.load(Ordering::Relaxed);
    if fd < 0 || high == 0 || fd >= high || !state::busy() {
        return fd;
    }
    let cmd = match fds::cloexec(fd) {
        true => libc::F_DUPFD_CLOEXEC,
        false => libc::F_DUPFD,
    };
    // SAFETY: duplicates and closes a descriptor the library just made, before it
    // could have kept its number anywhere.
    unsafe {
        let up = real::fcntl(fd, cmd, high as libc::c_ulong);
        if up < 0 {
            return fd; // no room up there: it stays
        }
        real::close(fd);
        up
    }
}

/// Both descriptors of a pipe or socket pair, moved up.
///
/// # Safety
/// `fds` points to two descriptors.
unsafe fn lift_pair(r: c_int, fds: *mut c_int) -> c_int {
    if r == 0 && !fds.is_null() {
        // SAFETY: per this function's contract.
        unsafe {
            *fds = lift(*fds);
            *fds.add(1) = lift(*fds.add(1));
        }
    }
    r
}

macro_rules! lifted {
    ($name:ident ( $($a:ident : $t:ty),* )) => {
        /// # Safety
        /// As the C library's function of this name.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> c_int {
            // SAFETY: the caller's arguments, as given.
            lift(unsafe { real::$name($($a),*) })
        }
    };
}
lifted!(socket(domain: c_int, kind: c_int, protocol: c_int));
lifted!(accept(fd: c_int, addr: *mut libc::sockaddr, len: *mut libc::socklen_t));
lifted!(accept4(fd: c_int, addr: *mut libc::sockaddr, len: *mut libc::socklen_t, flags: c_int));
lifted!(eventfd(init: c_uint, flags: c_int));
lifted!(epoll_create(size: c_int));
lifted!(epoll_create1(flags: c_int));
lifted!(timerfd_create(clock: c_int, flags: c_int));
lifted!(memfd_create(name: *const c_char, flags: c_uint));
lifted!(inotify_init1(flags: c_int));

/// # Safety
/// As socketpair(2).
#[no_mangle]
pub unsafe extern "C" fn socketpair(
    domain: c_int,
    kind: c_int,
    protocol: c_int,
    sv: *mut c_int,
) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe { lift_pair(real::socketpair(domain, kind, protocol, sv), sv) }
}

/// # Safety
/// As pipe(2).
#[no_mangle]
pub unsafe extern "C" fn pipe(fds: *mut c_int) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe { lift_pair(real::pipe(fds), fds) }
}

/// # Safety
/// As pipe2(2).
#[no_mangle]
pub unsafe extern "C" fn pipe2(fds: *mut c_int, flags: c_int) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe { lift_pair(real::pipe2(fds, flags), fds) }
}

/// What a thread the library starts runs first: it marks itself the library's.
struct Start {
    start: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
}

extern "C" fn library_thread(p: *mut c_void) -> *mut c_void {
    // SAFETY: the Box pthread_create below made for this thread, taken once.
    let s = unsafe { Box::from_raw(p.cast::<Start>()) };
    state::mark_library_thread();
    (s.start)(s.arg)
}

/// # Safety
/// As pthread_create(3).
#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    t: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
) -> c_int {
    if !state::busy() {
        // SAFETY: the caller's arguments, as given.
        return unsafe { real::pthread_create(t, attr, start, arg) };
    }
    let s = Box::into_raw(Box::new(Start { start, arg }));
    // SAFETY: the caller's thread and attributes; our start routine and its Box.
    let r = unsafe { real::pthread_create(t, attr, library_thread, s.cast()) };
    if r != 0 {
        // SAFETY: the thread did not start: the Box is still ours.
        drop(unsafe { Box::from_raw(s) });
    }
    r
}
