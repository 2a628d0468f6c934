//! nacre-capi: the C interface of the nacre client (`include/nacre.h`), built as
//! `libnacre.so` and `libnacre.a` for MPI jobs and other C programs.
//!
//! Every function returns a count or 0, or a negative errno. This file is the FFI
//! seam: raw pointers from C are checked for NULL and turned into references here,
//! and no panic unwinds into C (each call runs under `catch_unwind`; a panic becomes
//! -EIO). Handles are `Box`es of thread-safe Rust values: a `nacre_fs` holds a
//! [`Client`], a `nacre_file` a [`File`]; both are shared by reference between the
//! caller's threads.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};

use nacre_client::{errno, Client, ClientConfig, File, Layout, OpenOptions};
use nacre_proto::layout::{FirstOst, StripeCount, StripeSpec};
use nacre_proto::meta::{Attr, FileKind};

/// The connection handle of nacre.h.
pub struct NacreFs(Client);
/// The open-file handle of nacre.h.
pub struct NacreFile(File);

/// `struct nacre_stat` of nacre.h.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct NacreStat {
    pub ino: u64,
    pub kind: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub pad: u32,
    pub size: u64,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub rdev: u64,
}

/// `struct nacre_statfs` of nacre.h.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct NacreStatfs {
    pub bytes_total: u64,
    pub bytes_free: u64,
    pub files_total: u64,
    pub files_free: u64,
    pub name_max: u32,
    pub pad: u32,
}

/// The most bytes one nacre_pread / nacre_pwrite moves (Linux's limit for read/write).
const MAX_IO: usize = 0x7fff_f000;

/// The most OSTs `nacre_layout.osts` reports.
pub const LAYOUT_OSTS: usize = 64;

/// `struct nacre_layout` of nacre.h.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NacreLayout {
    pub stripe_count: i32,
    pub stripe_size: u32,
    pub first_ost: i32,
    pub osts: [u32; LAYOUT_OSTS],
}

/// `struct nacre_dirent` of nacre.h.
#[repr(C)]
pub struct NacreDirent {
    pub name: *const c_char,
    pub ino: u64,
    pub kind: u32,
}

pub type ReaddirCb = Option<extern "C" fn(*const NacreDirent, *mut c_void) -> c_int>;

/// Runs `f`, turning its error into -errno and a panic into -EIO.
fn guard(f: impl FnOnce() -> io::Result<i64>) -> i64 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => -(errno(&e) as i64),
        Err(_) => {
            tracing::error!("nacre C API: a panic was caught at the interface");
            -(libc::EIO as i64)
        }
    }
}

fn guard_int(f: impl FnOnce() -> io::Result<i64>) -> c_int {
    guard(f) as c_int
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// A C string argument as &str (EINVAL for NULL, EILSEQ for invalid UTF-8).
///
/// SAFETY (callers): `p` is NULL or points to a NUL-terminated string that lives for
/// the call, as nacre.h requires.
unsafe fn text<'a>(p: *const c_char) -> io::Result<&'a str> {
    if p.is_null() {
        return Err(einval());
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|_| io::Error::from_raw_os_error(libc::EILSEQ))
}

/// SAFETY (callers): `p` is NULL or a pointer nacre_connect returned and that has not
/// been passed to nacre_disconnect.
unsafe fn fs_ref<'a>(p: *const NacreFs) -> io::Result<&'a Client> {
    // SAFETY: per the caller's contract, a live Box<NacreFs> or NULL.
    unsafe { p.as_ref() }
        .map(|f| &f.0)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
}

/// SAFETY (callers): `p` is NULL or a pointer nacre_open returned and that has not
/// been passed to nacre_close.
unsafe fn file_ref<'a>(p: *const NacreFile) -> io::Result<&'a File> {
    // SAFETY: per the caller's contract, a live Box<NacreFile> or NULL.
    unsafe { p.as_ref() }
        .map(|f| &f.0)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
}

fn stat_of(a: &Attr) -> NacreStat {
    NacreStat {
        ino: a.ino,
        kind: a.kind as u32,
        mode: a.mode,
        uid: a.uid,
        gid: a.gid,
        nlink: a.nlink,
        pad: 0,
        size: a.size,
        atime_ns: a.atime,
        mtime_ns: a.mtime,
        ctime_ns: a.ctime,
        rdev: a.rdev,
    }
}

/// The template `l` asks for, with the file system's mirror count (the C layout has
/// no field for it).
fn spec_of(client: &Client, l: &NacreLayout) -> io::Result<StripeSpec> {
    let count = StripeCount::from_lfs(l.stripe_count.into()).ok_or_else(einval)?;
    let first = FirstOst::from_lfs(l.first_ost.into()).ok_or_else(einval)?;
    let spec = StripeSpec {
        stripe_size: l.stripe_size,
        count,
        first,
        mirrors: client.map().layout.mirror_count,
    };
    spec.validate()
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(spec)
}

fn layout_of(l: &Layout) -> NacreLayout {
    let mut out = NacreLayout {
        stripe_count: 0,
        stripe_size: 0,
        first_ost: -1,
        osts: [0; LAYOUT_OSTS],
    };
    match l {
        Layout::File(f) => {
            // The first mirror's: every mirror has that geometry.
            let f = f.geometry();
            out.stripe_count = f.objects.len() as i32;
            out.stripe_size = f.stripe_size;
            out.first_ost = f.objects.first().map_or(-1, |o| o.ost as i32);
            for (slot, o) in out.osts.iter_mut().zip(&f.objects) {
                *slot = o.ost;
            }
        }
        Layout::Dir(s) => {
            out.stripe_count = s.count.lfs() as i32;
            out.stripe_size = s.stripe_size;
            out.first_ost = s.first.lfs() as i32;
        }
    }
    out
}

/// # Safety
/// `mgs` is NULL or a NUL-terminated string; `out` points to writable storage for a
/// pointer.
#[no_mangle]
pub unsafe extern "C" fn nacre_connect(mgs: *const c_char, out: *mut *mut NacreFs) -> c_int {
    guard_int(|| {
        if out.is_null() {
            return Err(einval());
        }
        let addr = match mgs.is_null() {
            // SAFETY: non-NULL, NUL-terminated per this function's contract.
            false => Some(unsafe { text(mgs) }?.to_string()),
            true => None,
        };
        let addr = nacre_mgc::mgs_address(addr)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let client = Client::connect(&addr, ClientConfig::default())?;
        // SAFETY: `out` is non-NULL and writable per this function's contract.
        unsafe { *out = Box::into_raw(Box::new(NacreFs(client))) };
        Ok(0)
    })
}

/// # Safety
/// `fs` is NULL or a handle from nacre_connect, not used after this call.
#[no_mangle]
pub unsafe extern "C" fn nacre_disconnect(fs: *mut NacreFs) {
    if !fs.is_null() {
        // SAFETY: a Box from nacre_connect, given back exactly once.
        let fs = unsafe { Box::from_raw(fs) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(fs)));
    }
}

/// # Safety
/// `fs` is a live handle; `path` a NUL-terminated string; `layout` NULL or valid;
/// `out` writable.
#[no_mangle]
pub unsafe extern "C" fn nacre_open(
    fs: *const NacreFs,
    path: *const c_char,
    flags: c_int,
    mode: libc::mode_t,
    layout: *const NacreLayout,
    out: *mut *mut NacreFile,
) -> c_int {
    guard_int(|| {
        // SAFETY: per this function's contract.
        let (client, path) = unsafe { (fs_ref(fs)?, text(path)?) };
        if out.is_null() {
            return Err(einval());
        }
        let mut opt = OpenOptions::read().flags(flags).mode(mode);
        // SAFETY: NULL or a valid nacre_layout per this function's contract.
        if let Some(l) = unsafe { layout.as_ref() } {
            opt = opt.layout(spec_of(client, l)?);
        }
        let file = client.open(path, &opt)?;
        // SAFETY: `out` is non-NULL and writable per this function's contract.
        unsafe { *out = Box::into_raw(Box::new(NacreFile(file))) };
        Ok(0)
    })
}

/// # Safety
/// `file` is NULL or a handle from nacre_open, not used after this call.
#[no_mangle]
pub unsafe extern "C" fn nacre_close(file: *mut NacreFile) -> c_int {
    if file.is_null() {
        return -libc::EBADF;
    }
    // SAFETY: a Box from nacre_open, given back exactly once.
    let file = unsafe { Box::from_raw(file) };
    guard_int(move || file.0.close().map(|_| 0))
}

/// The checks pread and pwrite share: a live handle, and the byte count to move (at
/// most [`MAX_IO`], as Linux's read and write: a slice may not exceed isize::MAX and
/// the count must come back as a non-negative ssize_t); None for nothing to move.
///
/// SAFETY (callers): `file` is NULL or a live handle from nacre_open.
unsafe fn io_args<'a>(
    file: *const NacreFile,
    buf_null: bool,
    count: usize,
) -> io::Result<Option<(&'a File, usize)>> {
    // SAFETY: per the caller's contract.
    let file = unsafe { file_ref(file)? };
    if count == 0 {
        return Ok(None);
    }
    if buf_null {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    Ok(Some((file, count.min(MAX_IO))))
}

/// # Safety
/// `file` is a live handle; `buf` has room for `count` bytes.
#[no_mangle]
pub unsafe extern "C" fn nacre_pread(
    file: *const NacreFile,
    buf: *mut c_void,
    count: usize,
    offset: u64,
) -> isize {
    guard(|| {
        // SAFETY: per this function's contract.
        let Some((file, count)) = (unsafe { io_args(file, buf.is_null(), count)? }) else {
            return Ok(0);
        };
        // SAFETY: `buf` is non-NULL with room for `count` bytes, per the contract.
        let buf = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), count) };
        file.read_at(buf, offset).map(|n| n as i64)
    }) as isize
}

/// # Safety
/// `file` is a live handle; `buf` holds `count` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn nacre_pwrite(
    file: *const NacreFile,
    buf: *const c_void,
    count: usize,
    offset: u64,
) -> isize {
    guard(|| {
        // SAFETY: per this function's contract.
        let Some((file, count)) = (unsafe { io_args(file, buf.is_null(), count)? }) else {
            return Ok(0);
        };
        // SAFETY: `buf` is non-NULL with `count` readable bytes, per the contract.
        let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), count) };
        file.write_at(data, offset).map(|n| n as i64)
    }) as isize
}

/// # Safety
/// `file` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn nacre_fsync(file: *const NacreFile) -> c_int {
    // SAFETY: per this function's contract.
    guard_int(|| unsafe { file_ref(file)? }.fsync().map(|_| 0))
}

/// # Safety
/// `file` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn nacre_ftruncate(file: *const NacreFile, size: u64) -> c_int {
    // SAFETY: per this function's contract.
    guard_int(|| unsafe { file_ref(file)? }.set_len(size).map(|_| 0))
}

/// # Safety
/// `file` is a live handle; `st` writable.
#[no_mangle]
pub unsafe extern "C" fn nacre_fstat(file: *const NacreFile, st: *mut NacreStat) -> c_int {
    guard_int(|| {
        // SAFETY: per this function's contract.
        let file = unsafe { file_ref(file)? };
        let attr = file.stat()?;
        // SAFETY: `st` is NULL or writable per this function's contract.
        let st = unsafe { st.as_mut() }.ok_or_else(einval)?;
        *st = stat_of(&attr);
        Ok(0)
    })
}

/// # Safety
/// `fs` is a live handle; `st` writable.
#[no_mangle]
pub unsafe extern "C" fn nacre_statfs(fs: *const NacreFs, st: *mut NacreStatfs) -> c_int {
    guard_int(|| {
        // SAFETY: per this function's contract.
        let s = unsafe { fs_ref(fs)? }.statfs()?;
        // SAFETY: `st` is NULL or writable per this function's contract.
        let st = unsafe { st.as_mut() }.ok_or_else(einval)?;
        *st = NacreStatfs {
            bytes_total: s.bytes_total,
            bytes_free: s.bytes_free,
            files_total: s.files_total,
            files_free: s.files_free,
            name_max: s.name_max,
            pad: 0,
        };
        Ok(0)
    })
}

/// # Safety
/// `fs` is a live handle; `path` a NUL-terminated string; `st` writable.
#[no_mangle]
pub unsafe extern "C" fn nacre_stat(
    fs: *const NacreFs,
    path: *const c_char,
    st: *mut NacreStat,
) -> c_int {
    guard_int(|| {
        // SAFETY: per this function's contract.
        let (client, path) = unsafe { (fs_ref(fs)?, text(path)?) };
        let attr = client.stat(path)?;
        // SAFETY: `st` is NULL or writable per this function's contract.
        let st = unsafe { st.as_mut() }.ok_or_else(einval)?;
        *st = stat_of(&attr);
        Ok(0)
    })
}

/// Runs `op` on the client and a path: the shape of mkdir, rmdir, unlink.
///
/// SAFETY (callers): `fs` is a live handle, `path` a NUL-terminated string.
unsafe fn on_path(
    fs: *const NacreFs,
    path: *const c_char,
    op: impl FnOnce(&Client, &str) -> io::Result<()>,
) -> c_int {
    guard_int(|| {
        // SAFETY: per the caller's contract.
        let (client, path) = unsafe { (fs_ref(fs)?, text(path)?) };
        op(client, path).map(|_| 0)
    })
}

/// # Safety
/// `fs` is a live handle; `path` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nacre_mkdir(
    fs: *const NacreFs,
    path: *const c_char,
    mode: libc::mode_t,
) -> c_int {
    // SAFETY: per this function's contract.
    unsafe { on_path(fs, path, |c, p| c.mkdir(p, mode).map(|_| ())) }
}

/// # Safety
/// `fs` is a live handle; `path` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nacre_rmdir(fs: *const NacreFs, path: *const c_char) -> c_int {
    // SAFETY: per this function's contract.
    unsafe { on_path(fs, path, |c, p| c.rmdir(p)) }
}

/// # Safety
/// `fs` is a live handle; `path` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nacre_unlink(fs: *const NacreFs, path: *const c_char) -> c_int {
    // SAFETY: per this function's contract.
    unsafe { on_path(fs, path, |c, p| c.unlink(p)) }
}

/// # Safety
/// `fs` is a live handle; `from` and `to` NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn nacre_rename(
    fs: *const NacreFs,
    from: *const c_char,
    to: *const c_char,
) -> c_int {
    guard_int(|| {
        // SAFETY: per this function's contract.
        let (client, from, to) = unsafe { (fs_ref(fs)?, text(from)?, text(to)?) };
        client.rename(from, to).map(|_| 0)
    })
}

/// # Safety
/// `fs` is a live handle; `path` a NUL-terminated string; `cb` NULL or a function
/// that may be called with `arg`.
#[no_mangle]
pub unsafe extern "C" fn nacre_readdir(
    fs: *const NacreFs,
    path: *const c_char,
    cb: ReaddirCb,
    arg: *mut c_void,
) -> c_int {
    guard_int(|| {
        // SAFETY: per this function's contract.
        let (client, path) = unsafe { (fs_ref(fs)?, text(path)?) };
        let mut n = 0;
        for e in client.readdir(path)? {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            n += 1;
            let Some(cb) = cb else { continue };
            // Names never hold NUL (the MDS refuses them); skip one that would.
            let Ok(name) = CString::new(e.name) else {
                continue;
            };
            let entry = NacreDirent {
                name: name.as_ptr(),
                ino: e.ino,
                kind: kind_of(e.kind),
            };
            if cb(&entry, arg) != 0 {
                break;
            }
        }
        Ok(n)
    })
}

fn kind_of(k: FileKind) -> u32 {
    k as u32
}

/// # Safety
/// `fs` is a live handle; `path` a NUL-terminated string; `layout` valid.
#[no_mangle]
pub unsafe extern "C" fn nacre_set_layout(
    fs: *const NacreFs,
    path: *const c_char,
    layout: *const NacreLayout,
) -> c_int {
    guard_int(|| {
        // SAFETY: per this function's contract.
        let (client, path) = unsafe { (fs_ref(fs)?, text(path)?) };
        // SAFETY: NULL or a valid nacre_layout per this function's contract.
        let l = unsafe { layout.as_ref() }.ok_or_else(einval)?;
        client.set_layout(path, spec_of(client, l)?).map(|_| 0)
    })
}

/// # Safety
/// `fs` is a live handle; `path` a NUL-terminated string; `layout` writable.
#[no_mangle]
pub unsafe extern "C" fn nacre_get_layout(
    fs: *const NacreFs,
    path: *const c_char,
    layout: *mut NacreLayout,
) -> c_int {
    guard_int(|| {
        // SAFETY: per this function's contract.
        let (client, path) = unsafe { (fs_ref(fs)?, text(path)?) };
        let got = client.get_layout(path)?;
        // SAFETY: NULL or writable per this function's contract.
        let out = unsafe { layout.as_mut() }.ok_or_else(einval)?;
        *out = layout_of(&got);
        Ok(0)
    })
}
