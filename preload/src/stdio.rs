//! stdio streams on files we serve. `fopen` opens the file here, as `open` does, and
//! makes the stream with `fopencookie`, whose reads, writes, seeks and close call ours:
//! stdio inside the C library reads and writes through its internal calls, which would
//! reach the kernel with our placeholder descriptor, and a stream through the mount
//! would not see what this process wrote through the library a moment before (the
//! mount's entry timeout). `fileno` of such a stream is its descriptor of ours.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{off64_t, size_t, ssize_t, FILE};
use parking_lot::Mutex;

use crate::files;
use crate::real;
use crate::state::bytes;

/// `cookie_io_functions_t`.
#[repr(C)]
struct CookieFns {
    read: extern "C" fn(*mut c_void, *mut c_char, size_t) -> ssize_t,
    write: extern "C" fn(*mut c_void, *const c_char, size_t) -> ssize_t,
    seek: extern "C" fn(*mut c_void, *mut off64_t, c_int) -> c_int,
    close: extern "C" fn(*mut c_void) -> c_int,
}

extern "C" {
    fn fopencookie(cookie: *mut c_void, mode: *const c_char, fns: CookieFns) -> *mut FILE;
}

/// Our streams and their descriptors.
static STREAMS: Mutex<Vec<(usize, c_int)>> = Mutex::new(Vec::new());
static COUNT: AtomicUsize = AtomicUsize::new(0);

fn fd_of(cookie: *mut c_void) -> c_int {
    cookie as usize as c_int
}

extern "C" fn cookie_read(cookie: *mut c_void, buf: *mut c_char, n: size_t) -> ssize_t {
    // SAFETY: stdio's buffer of `n` bytes.
    unsafe { files::read(fd_of(cookie), buf.cast(), n) }
}

extern "C" fn cookie_write(cookie: *mut c_void, buf: *const c_char, n: size_t) -> ssize_t {
    // SAFETY: stdio's buffer of `n` bytes.
    unsafe { files::write(fd_of(cookie), buf.cast(), n) }
}

extern "C" fn cookie_seek(cookie: *mut c_void, off: *mut off64_t, whence: c_int) -> c_int {
    // SAFETY: stdio's offset, read and written back.
    unsafe {
        let to = files::lseek64(fd_of(cookie), *off, whence);
        if to < 0 {
            return -1;
        }
        *off = to;
    }
    0
}

extern "C" fn cookie_close(cookie: *mut c_void) -> c_int {
    let fd = fd_of(cookie);
    let mut s = STREAMS.lock();
    s.retain(|&(_, f)| f != fd);
    COUNT.store(s.len(), Ordering::Release);
    drop(s);
    // SAFETY: the descriptor this stream owned.
    unsafe { files::close(fd) }
}

/// Open flags of an fopen mode ("r", "w+", "ab", "re", "wx"...).
fn flags_of(mode: &[u8]) -> Option<c_int> {
    let mut flags = match mode.first()? {
        b'r' => libc::O_RDONLY,
        b'w' => libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        b'a' => libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        _ => return None,
    };
    for &c in mode[1..].iter().take_while(|&&c| c != b',') {
        match c {
            b'+' => flags = (flags & !libc::O_ACCMODE) | libc::O_RDWR,
            b'x' => flags |= libc::O_EXCL,
            b'e' => flags |= libc::O_CLOEXEC,
            _ => {}
        }
    }
    Some(flags)
}

macro_rules! fopen_fn {
    ($name:ident) => {
        /// # Safety
        /// As fopen(3).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, mode: *const c_char) -> *mut FILE {
            // SAFETY: the caller's arguments, as given.
            unsafe {
                let Some(flags) = bytes(mode).and_then(flags_of) else {
                    return real::fopen64(path, mode);
                };
                let fd = match files::open_ours(libc::AT_FDCWD, path, flags, 0o666) {
                    None => return real::fopen64(path, mode),
                    Some(fd) if fd < 0 => return std::ptr::null_mut(),
                    Some(fd) => fd,
                };
                let fns = CookieFns {
                    read: cookie_read,
                    write: cookie_write,
                    seek: cookie_seek,
                    close: cookie_close,
                };
                let f = fopencookie(fd as usize as *mut c_void, mode, fns);
                if f.is_null() {
                    let e = crate::fds::errno();
                    files::close(fd);
                    files::set_errno(e);
                    return f;
                }
                let mut s = STREAMS.lock();
                s.push((f as usize, fd));
                COUNT.store(s.len(), Ordering::Release);
                f
            }
        }
    };
}
fopen_fn!(fopen);
fopen_fn!(fopen64);

/// # Safety
/// As fileno(3).
#[no_mangle]
pub unsafe extern "C" fn fileno(f: *mut FILE) -> c_int {
    if COUNT.load(Ordering::Acquire) > 0 {
        if let Some(&(_, fd)) = STREAMS.lock().iter().find(|&&(p, _)| p == f as usize) {
            return fd;
        }
    }
    // SAFETY: the caller's stream, the C library's.
    unsafe { real::fileno(f) }
}

/// # Safety
/// As fileno_unlocked(3).
#[no_mangle]
pub unsafe extern "C" fn fileno_unlocked(f: *mut FILE) -> c_int {
    // SAFETY: the caller's stream.
    unsafe { fileno(f) }
}

/// Flushes our streams (at exit, before their files close).
pub fn flush_ours() {
    let streams: Vec<usize> = STREAMS.lock().iter().map(|&(p, _)| p).collect();
    for p in streams {
        // SAFETY: a stream fopencookie made and nobody closed (it is listed).
        unsafe { libc::fflush(p as *mut FILE) };
    }
}
