//! Open files: open, read, write, seek, stat, sync, truncate and close of the
//! descriptors we serve (fds.rs), each straight to the client library.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use libc::{iovec, off64_t, size_t, ssize_t};
use nacre_client::OpenOptions;
use nacre_proto::meta::FileKind;

use crate::fds::{self, Open};
use crate::inner;
use crate::paths::{resolve, Target};
use crate::real;
use crate::state::{self, enter, Count, Served};
use crate::stats::fill_stat;

/// The most bytes one read or write moves (Linux's limit).
const MAX_IO: usize = 0x7fff_f000;

pub fn set_errno(e: c_int) {
    // SAFETY: the calling thread's errno.
    unsafe { *libc::__errno_location() = e };
}

/// -1 with errno `e`.
pub fn fail<T: From<i8>>(e: c_int) -> T {
    set_errno(e);
    T::from(-1)
}

pub fn errno_of(e: &std::io::Error) -> c_int {
    nacre_client::errno(e)
}

/// A call on our path handed to the kernel (counted for the report).
pub fn kernel<T>() -> Option<T> {
    state::count(Count::Kernel);
    None
}

/// Errors on which the kernel is asked instead: names the client cannot walk (a
/// symbolic link on the way), kinds it does not open (FIFOs and devices).
pub fn for_kernel(e: c_int) -> bool {
    matches!(
        e,
        libc::ENOTDIR | libc::ELOOP | libc::ENXIO | libc::EOPNOTSUPP | libc::ENOSYS
    )
}

/// The open of `path` (relative to `dirfd`) if it is ours: Some(descriptor or -1),
/// None for the kernel.
///
/// # Safety
/// `path` is NULL or NUL-terminated.
pub unsafe fn open_ours(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> Option<c_int> {
    let _b = enter()?;
    // SAFETY: per this function's contract.
    let (served, t) = unsafe { resolve(dirfd, path) }?;
    // Directories, O_PATH and O_TMPFILE (which has O_DIRECTORY's bit) are the kernel's.
    if flags & (libc::O_DIRECTORY | libc::O_PATH) != 0 || t.dir_only {
        let dir = if t.dir_only { libc::O_DIRECTORY } else { 0 };
        return probe(served, &t, flags | dir);
    }
    // The number first: 0, 1 and 2 are the standard streams, which stdio writes and
    // reads through the C library's internal calls, never ours: the kernel's.
    let fd = fds::placeholder(flags & libc::O_CLOEXEC != 0);
    if fd < 0 {
        return Some(fail(fds::errno()));
    }
    if fd <= 2 {
        // SAFETY: the placeholder just made.
        unsafe { real::close(fd) };
        return kernel();
    }
    let keep = libc::O_ACCMODE | libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_APPEND;
    let opt = OpenOptions {
        flags: flags & keep,
        mode: mode & 0o7777 & !state::umask(),
        layout: None,
    };
    let drop_fd = || {
        // SAFETY: the placeholder just made, not handed out.
        unsafe { real::close(fd) };
    };
    let file = match served.client.open(&t.fs, &opt) {
        Ok(f) => f,
        // EINVAL: the MDS opens no symbolic link; the kernel follows it (or says
        // EINVAL itself for flags that are wrong).
        Err(e) if for_kernel(errno_of(&e)) || errno_of(&e) == libc::EINVAL => {
            drop_fd();
            return kernel();
        }
        Err(e) => {
            drop_fd();
            return Some(fail(errno_of(&e)));
        }
    };
    if file.attr().kind != FileKind::File {
        drop_fd();
        return kernel(); // a directory, or a link to follow (the File closes)
    }
    state::count(Count::Open);
    let shown =
        flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY | libc::O_CLOEXEC);
    let mut byino = t.mount_dir.to_vec();
    byino.extend_from_slice(format!("/.nacre/ino/{}", file.ino()).as_bytes());
    let open = Open {
        byino: std::ffi::CString::new(byino).unwrap_or_default(),
        file,
        kpath: t.kpath,
        dev: t.dev,
        flags: shown.into(),
        pos: 0.into(),
        io: Default::default(),
    };
    fds::insert(fd, Arc::new(open));
    Some(fd)
}

/// An open the kernel makes (O_DIRECTORY, O_PATH), of a name the library sees as
/// missing or as no directory: answered here. The kernel would otherwise remember the
/// missing name for the mount's entry timeout, and hide from every kernel path for
/// that long the file the program creates through the library next (as `cp` does
/// after probing whether its target is a directory).
fn probe(served: &Served, t: &Target, flags: c_int) -> Option<c_int> {
    state::count(Count::Stat);
    match served.client.stat(&t.fs) {
        Err(e) if errno_of(&e) == libc::ENOENT && flags & libc::O_CREAT == 0 => {
            Some(fail(libc::ENOENT))
        }
        Ok(a)
            if flags & libc::O_DIRECTORY != 0
                && a.kind != FileKind::Dir
                && a.kind != FileKind::Symlink =>
        {
            Some(fail(libc::ENOTDIR))
        }
        _ => kernel(),
    }
}

macro_rules! open_fn {
    ($name:ident) => {
        /// # Safety
        /// As open(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
            // SAFETY: the caller's arguments, as given.
            unsafe {
                match open_ours(libc::AT_FDCWD, path, flags, mode) {
                    Some(r) => r,
                    None => inner::lift(real::open64(path, flags, mode)),
                }
            }
        }
    };
}
open_fn!(open);
open_fn!(open64);

macro_rules! openat_fn {
    ($name:ident) => {
        /// # Safety
        /// As openat(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            dirfd: c_int,
            path: *const c_char,
            flags: c_int,
            mode: c_uint,
        ) -> c_int {
            // SAFETY: the caller's arguments, as given.
            unsafe {
                match open_ours(dirfd, path, flags, mode) {
                    Some(r) => r,
                    None => inner::lift(real::openat64(dirfd, path, flags, mode)),
                }
            }
        }
    };
}
openat_fn!(openat);
openat_fn!(openat64);

/// The fortified opens (`_FORTIFY_SOURCE`): no mode, as no O_CREAT.
///
/// # Safety
/// As open(2).
#[no_mangle]
pub unsafe extern "C" fn __open_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe { open64(path, flags, 0) }
}

/// # Safety
/// As open(2).
#[no_mangle]
pub unsafe extern "C" fn __open64_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe { open64(path, flags, 0) }
}

/// # Safety
/// As openat(2).
#[no_mangle]
pub unsafe extern "C" fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe { openat64(dirfd, path, flags, 0) }
}

/// # Safety
/// As openat(2).
#[no_mangle]
pub unsafe extern "C" fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: the caller's arguments, as given.
    unsafe { openat64(dirfd, path, flags, 0) }
}

macro_rules! creat_fn {
    ($name:ident) => {
        /// # Safety
        /// As creat(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, mode: c_uint) -> c_int {
            let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
            // SAFETY: the caller's arguments, as given.
            unsafe { open64(path, flags, mode) }
        }
    };
}
creat_fn!(creat);
creat_fn!(creat64);

/// The entry of `fd` and our code entered, or None for the kernel.
fn ours(fd: c_int) -> Option<(Arc<Open>, state::Busy)> {
    let o = fds::get(fd)?;
    Some((o, enter()?))
}

/// Reads at `off` into `buf`.
///
/// # Safety
/// `buf` is valid for writes of `n` bytes.
unsafe fn read_at(o: &Open, buf: *mut c_void, n: size_t, off: u64) -> Result<usize, c_int> {
    state::count(Count::Read);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: per this function's contract.
    let b = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), n.min(MAX_IO)) };
    o.file.read_at(b, off).map_err(|e| errno_of(&e))
}

/// Writes `buf` at `off` (at the end with O_APPEND); returns the count and where the
/// write ended.
///
/// # Safety
/// `buf` is valid for reads of `n` bytes.
unsafe fn write_at(
    o: &Open,
    buf: *const c_void,
    n: size_t,
    off: u64,
) -> Result<(usize, u64), c_int> {
    // SAFETY: per this function's contract.
    let b: &[u8] = match n {
        0 => &[],
        _ => unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), n.min(MAX_IO)) },
    };
    state::count(Count::Write);
    let flags = o.flags.load(Ordering::Acquire);
    let k = o.file.write_at(b, off).map_err(|e| errno_of(&e))?;
    if flags & (libc::O_SYNC | libc::O_DSYNC) != 0 && k > 0 {
        o.file.fsync().map_err(|e| errno_of(&e))?;
    }
    let end = match flags & libc::O_APPEND != 0 {
        true => o.file.attr().size,
        false => off + k as u64,
    };
    Ok((k, end))
}

fn count(r: Result<usize, c_int>) -> ssize_t {
    match r {
        Ok(k) => k as ssize_t,
        Err(e) => fail(e),
    }
}

/// # Safety
/// As read(2).
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    let Some((o, _b)) = ours(fd) else {
        // SAFETY: the caller's arguments, as given.
        return unsafe { real::read(fd, buf, n) };
    };
    let _io = o.io.lock();
    let pos = o.pos.load(Ordering::Acquire);
    // SAFETY: the caller's buffer, as given.
    let r = unsafe { read_at(&o, buf, n, pos) };
    if let Ok(k) = r {
        o.pos.store(pos + k as u64, Ordering::Release);
    }
    count(r)
}

/// # Safety
/// As read(2), with the buffer's length.
#[no_mangle]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
) -> ssize_t {
    if n > buflen {
        // SAFETY: what the C library does on an overflow: abort.
        unsafe { libc::abort() };
    }
    // SAFETY: the caller's arguments, as given.
    unsafe { read(fd, buf, n) }
}

/// # Safety
/// As write(2).
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    let Some((o, _b)) = ours(fd) else {
        // SAFETY: the caller's arguments, as given.
        return unsafe { real::write(fd, buf, n) };
    };
    let _io = o.io.lock();
    let pos = o.pos.load(Ordering::Acquire);
    // SAFETY: the caller's buffer, as given.
    let r = unsafe { write_at(&o, buf, n, pos) };
    count(r.map(|(k, end)| {
        o.pos.store(end, Ordering::Release);
        k
    }))
}

macro_rules! pread_fn {
    ($name:ident) => {
        /// # Safety
        /// As pread(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            fd: c_int,
            buf: *mut c_void,
            n: size_t,
            off: off64_t,
        ) -> ssize_t {
            let Some((o, _b)) = ours(fd) else {
                // SAFETY: the caller's arguments, as given.
                return unsafe { real::pread64(fd, buf, n, off) };
            };
            if off < 0 {
                return fail(libc::EINVAL);
            }
            // SAFETY: the caller's buffer, as given.
            count(unsafe { read_at(&o, buf, n, off as u64) })
        }
    };
}
pread_fn!(pread);
pread_fn!(pread64);

/// # Safety
/// As pread(2), with the buffer's length.
#[no_mangle]
pub unsafe extern "C" fn __pread64_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    off: off64_t,
    buflen: size_t,
) -> ssize_t {
    if n > buflen {
        // SAFETY: what the C library does on an overflow: abort.
        unsafe { libc::abort() };
    }
    // SAFETY: the caller's arguments, as given.
    unsafe { pread64(fd, buf, n, off) }
}

/// # Safety
/// As pread(2), with the buffer's length.
#[no_mangle]
pub unsafe extern "C" fn __pread_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    off: off64_t,
    buflen: size_t,
) -> ssize_t {
    // SAFETY: the caller's arguments, as given.
    unsafe { __pread64_chk(fd, buf, n, off, buflen) }
}

macro_rules! pwrite_fn {
    ($name:ident) => {
        /// # Safety
        /// As pwrite(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            fd: c_int,
            buf: *const c_void,
            n: size_t,
            off: off64_t,
        ) -> ssize_t {
            let Some((o, _b)) = ours(fd) else {
                // SAFETY: the caller's arguments, as given.
                return unsafe { real::pwrite64(fd, buf, n, off) };
            };
            if off < 0 {
                return fail(libc::EINVAL);
            }
            // SAFETY: the caller's buffer, as given.
            count(unsafe { write_at(&o, buf, n, off as u64) }.map(|(k, _)| k))
        }
    };
}
pwrite_fn!(pwrite);
pwrite_fn!(pwrite64);

/// The caller's iovecs.
///
/// # Safety
/// `iov` points to `n` iovecs (n >= 0).
unsafe fn iovecs<'a>(iov: *const iovec, n: c_int) -> Result<&'a [iovec], c_int> {
    if !(0..=libc::UIO_MAXIOV).contains(&n) {
        return Err(libc::EINVAL);
    }
    match n {
        0 => Ok(&[]),
        // SAFETY: per this function's contract.
        _ => Ok(unsafe { std::slice::from_raw_parts(iov, n as usize) }),
    }
}

/// # Safety
/// As readv(2).
#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    let Some((o, _b)) = ours(fd) else {
        // SAFETY: the caller's arguments, as given.
        return unsafe { real::readv(fd, iov, n) };
    };
    // SAFETY: the caller's iovecs, as given.
    let v = match unsafe { iovecs(iov, n) } {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let _io = o.io.lock();
    let start = o.pos.load(Ordering::Acquire);
    let mut done = 0u64;
    for b in v {
        // SAFETY: each iovec is a buffer of the caller's.
        match unsafe { read_at(&o, b.iov_base, b.iov_len, start + done) } {
            Ok(k) => {
                done += k as u64;
                if k < b.iov_len {
                    break;
                }
            }
            Err(e) if done == 0 => return fail(e),
            Err(_) => break,
        }
    }
    o.pos.store(start + done, Ordering::Release);
    done as ssize_t
}

/// # Safety
/// As writev(2).
#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    let Some((o, _b)) = ours(fd) else {
        // SAFETY: the caller's arguments, as given.
        return unsafe { real::writev(fd, iov, n) };
    };
    // SAFETY: the caller's iovecs, as given.
    let v = match unsafe { iovecs(iov, n) } {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let _io = o.io.lock();
    let mut pos = o.pos.load(Ordering::Acquire);
    let mut done = 0usize;
    for b in v {
        // SAFETY: each iovec is a buffer of the caller's.
        match unsafe { write_at(&o, b.iov_base, b.iov_len, pos) } {
            Ok((k, end)) => {
                done += k;
                pos = end;
            }
            Err(e) if done == 0 => return fail(e),
            Err(_) => break,
        }
    }
    o.pos.store(pos, Ordering::Release);
    done as ssize_t
}

macro_rules! lseek_fn {
    ($name:ident) => {
        /// # Safety
        /// As lseek(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, off: off64_t, whence: c_int) -> off64_t {
            let Some((o, _b)) = ours(fd) else {
                // SAFETY: the caller's arguments, as given.
                return unsafe { real::lseek64(fd, off, whence) };
            };
            let _io = o.io.lock();
            match seek(&o, off, whence) {
                Ok(p) => {
                    o.pos.store(p, Ordering::Release);
                    p as off64_t
                }
                Err(e) => fail(e),
            }
        }
    };
}
lseek_fn!(lseek);
lseek_fn!(lseek64);

/// Where lseek lands: SEEK_DATA and SEEK_HOLE see one extent of data up to the size.
fn seek(o: &Open, off: i64, whence: c_int) -> Result<u64, c_int> {
    let size = || {
        o.file
            .stat()
            .map(|a| a.size as i64)
            .map_err(|e| errno_of(&e))
    };
    let to = match whence {
        libc::SEEK_SET => off,
        libc::SEEK_CUR => (o.pos.load(Ordering::Acquire) as i64)
            .checked_add(off)
            .ok_or(libc::EOVERFLOW)?,
        libc::SEEK_END => size()?.checked_add(off).ok_or(libc::EOVERFLOW)?,
        libc::SEEK_DATA => match off < size()? {
            true => off,
            false => return Err(libc::ENXIO),
        },
        libc::SEEK_HOLE => {
            let s = size()?;
            match off < s {
                true => s,
                false => return Err(libc::ENXIO),
            }
        }
        _ => return Err(libc::EINVAL),
    };
    match to < 0 {
        true => Err(libc::EINVAL),
        false => Ok(to as u64),
    }
}

/// fstat of one of ours.
pub fn fstat_ours(o: &Open, st: *mut libc::stat64) -> c_int {
    state::count(Count::Stat);
    if st.is_null() {
        return fail(libc::EFAULT);
    }
    match o.file.stat() {
        // SAFETY: non-NULL, the caller's stat buffer.
        Ok(a) => unsafe {
            fill_stat(&a, o.dev, &mut *st);
            0
        },
        Err(e) => fail(errno_of(&e)),
    }
}

macro_rules! fstat_fn {
    ($name:ident) => {
        /// # Safety
        /// As fstat(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, st: *mut libc::stat64) -> c_int {
            match ours(fd) {
                Some((o, _b)) => fstat_ours(&o, st),
                // SAFETY: the caller's arguments, as given.
                None => unsafe { real::fstat64(fd, st) },
            }
        }
    };
}
fstat_fn!(fstat);
fstat_fn!(fstat64);

/// # Safety
/// As close(2).
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if fds::get(fd).is_none() {
        // SAFETY: the caller's arguments, as given.
        return unsafe { real::close(fd) };
    }
    let Some(o) = fds::remove(fd) else {
        // SAFETY: as above.
        return unsafe { real::close(fd) };
    };
    // SAFETY: the placeholder descriptor, ours to close.
    unsafe { real::close(fd) };
    match fds::release(o) {
        Some(Err(e)) => fail(errno_of(&e)),
        _ => 0,
    }
}

fn synced(fd: c_int, real_fn: unsafe fn(c_int) -> c_int) -> c_int {
    match ours(fd) {
        Some((o, _b)) => match o.file.fsync() {
            Ok(()) => 0,
            Err(e) => fail(errno_of(&e)),
        },
        // SAFETY: the caller's descriptor, as given.
        None => unsafe { real_fn(fd) },
    }
}

/// # Safety
/// As fsync(2).
#[no_mangle]
pub unsafe extern "C" fn fsync(fd: c_int) -> c_int {
    synced(fd, real::fsync)
}

/// # Safety
/// As fdatasync(2).
#[no_mangle]
pub unsafe extern "C" fn fdatasync(fd: c_int) -> c_int {
    synced(fd, real::fdatasync)
}

macro_rules! ftruncate_fn {
    ($name:ident) => {
        /// # Safety
        /// As ftruncate(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, len: off64_t) -> c_int {
            let Some((o, _b)) = ours(fd) else {
                // SAFETY: the caller's arguments, as given.
                return unsafe { real::ftruncate64(fd, len) };
            };
            if len < 0 {
                return fail(libc::EINVAL);
            }
            match o.file.set_len(len as u64) {
                Ok(()) => 0,
                Err(e) if e.raw_os_error() == Some(libc::EBADF) => fail(libc::EINVAL),
                Err(e) => fail(errno_of(&e)),
            }
        }
    };
}
ftruncate_fn!(ftruncate);
ftruncate_fn!(ftruncate64);

/// At exit: the streams of ours are flushed and the files the program left open are
/// closed (their sizes told). On a thread of its own: the exiting thread's
/// thread-locals (its connections among them) may be gone already, as the C library
/// destroys them before it runs exit handlers.
pub extern "C" fn close_all() {
    if state::is_forked() {
        return;
    }
    state::report();
    if fds::all().is_empty() {
        return; // every stream of ours has a descriptor of ours: none either
    }
    let closer = std::thread::Builder::new().spawn(|| {
        // stdio flushes its streams after the exit handlers: ours first, while their
        // descriptors still write.
        crate::stdio::flush_ours();
        let mut left = Vec::new();
        for (fd, _) in fds::all() {
            if let Some(o) = fds::remove(fd) {
                left.push(o);
            }
        }
        for o in left {
            let _ = fds::release(o);
        }
    });
    if let Ok(t) = closer {
        let _ = t.join();
    }
}
