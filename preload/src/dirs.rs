//! Directory streams: opendir, readdir, telldir, seekdir, rewinddir, dirfd and
//! closedir of directories we serve, listed by the client in one go (the MDS pages
//! it). A `DIR *` we hand out points to a [`Dir`] of ours; the others are the C
//! library's and go back to it.

use std::ffi::{c_char, c_int, c_long, CString};
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{dirent64, DIR};
use nacre_proto::meta::FileKind;
use parking_lot::Mutex;

use crate::files::{errno_of, for_kernel, kernel, set_errno};
use crate::paths::resolve;
use crate::real;
use crate::state::{self, enter, Count, Served};

struct Entry {
    name: Vec<u8>,
    ino: u64,
    kind: FileKind,
}

pub struct Dir {
    fs: String,
    kpath: CString,
    served: &'static Served,
    entries: Vec<Entry>,
    pos: usize,
    /// What readdir returned last (the caller reads it until its next call).
    ent: dirent64,
    /// A kernel descriptor of the directory, opened if dirfd asks for one.
    kfd: c_int,
}

static OURS: Mutex<Vec<usize>> = Mutex::new(Vec::new());
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Our Dir behind `d`, if it is one.
fn ours(d: *mut DIR) -> Option<&'static mut Dir> {
    if COUNT.load(Ordering::Acquire) == 0 || d.is_null() {
        return None;
    }
    let known = OURS.lock().contains(&(d as usize));
    // SAFETY: a pointer we made from a Box<Dir> and have not freed (it is listed);
    // a stream is used by one thread at a time, as POSIX asks of its callers.
    known.then(|| unsafe { &mut *(d.cast::<Dir>()) })
}

fn dtype(k: FileKind) -> u8 {
    match k {
        FileKind::File => libc::DT_REG,
        FileKind::Dir => libc::DT_DIR,
        FileKind::Symlink => libc::DT_LNK,
        FileKind::Fifo => libc::DT_FIFO,
        FileKind::Socket => libc::DT_SOCK,
        FileKind::CharDevice => libc::DT_CHR,
        FileKind::BlockDevice => libc::DT_BLK,
    }
}

/// The listing of `fs`, with "." and ".." first as the kernel gives them.
fn list(served: &Served, fs: &str) -> std::io::Result<Vec<Entry>> {
    let me = served.client.stat(fs)?;
    if me.kind != FileKind::Dir {
        return Err(std::io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    let parent = match fs.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((p, _)) => p,
    };
    let up = match fs == "/" {
        true => me.ino,
        false => served.client.stat(parent)?.ino,
    };
    let mut v = vec![
        Entry {
            name: b".".to_vec(),
            ino: me.ino,
            kind: FileKind::Dir,
        },
        Entry {
            name: b"..".to_vec(),
            ino: up,
            kind: FileKind::Dir,
        },
    ];
    let listed = served.client.readdir(fs)?;
    v.extend(listed.into_iter().map(|e| Entry {
        name: e.name,
        ino: e.ino,
        kind: e.kind,
    }));
    Ok(v)
}

/// # Safety
/// As opendir(3).
#[no_mangle]
pub unsafe extern "C" fn opendir(path: *const c_char) -> *mut DIR {
    // SAFETY: the caller's arguments, as given.
    unsafe { opendir_ours(path).unwrap_or_else(|| real::opendir(path)) }
}

/// # Safety
/// `path` is NULL or NUL-terminated.
unsafe fn opendir_ours(path: *const c_char) -> Option<*mut DIR> {
    let _b = enter()?;
    // SAFETY: per this function's contract.
    let (served, t) = unsafe { resolve(libc::AT_FDCWD, path) }?;
    state::count(Count::Dir);
    let entries = match list(served, &t.fs) {
        Ok(v) => v,
        Err(e) if for_kernel(errno_of(&e)) => return kernel(),
        Err(e) => {
            set_errno(errno_of(&e));
            return Some(std::ptr::null_mut());
        }
    };
    let dir = Box::new(Dir {
        fs: t.fs,
        kpath: t.kpath,
        served,
        entries,
        pos: 0,
        // SAFETY: all-zero is a valid dirent64 (integers and a byte array).
        ent: unsafe { std::mem::zeroed() },
        kfd: -1,
    });
    let p = Box::into_raw(dir) as usize;
    let mut ours = OURS.lock();
    ours.push(p);
    COUNT.store(ours.len(), Ordering::Release);
    Some(p as *mut DIR)
}

macro_rules! readdir_fn {
    ($name:ident) => {
        /// # Safety
        /// As readdir(3).
        #[no_mangle]
        pub unsafe extern "C" fn $name(d: *mut DIR) -> *mut dirent64 {
            let Some(dir) = ours(d) else {
                // SAFETY: the caller's stream, the C library's.
                return unsafe { real::readdir64(d) };
            };
            let Some(e) = dir.entries.get(dir.pos) else {
                return std::ptr::null_mut();
            };
            dir.pos += 1;
            let ent = &mut dir.ent;
            ent.d_ino = e.ino;
            ent.d_off = dir.pos as i64;
            ent.d_reclen = std::mem::size_of::<dirent64>() as u16;
            ent.d_type = dtype(e.kind);
            let n = e.name.len().min(ent.d_name.len() - 1);
            for (to, &from) in ent.d_name.iter_mut().zip(&e.name[..n]) {
                *to = from as c_char;
            }
            ent.d_name[n] = 0;
            ent
        }
    };
}
readdir_fn!(readdir);
readdir_fn!(readdir64);

/// # Safety
/// As closedir(3).
#[no_mangle]
pub unsafe extern "C" fn closedir(d: *mut DIR) -> c_int {
    if ours(d).is_none() {
        // SAFETY: the caller's stream, the C library's.
        return unsafe { real::closedir(d) };
    }
    let mut list = OURS.lock();
    list.retain(|&p| p != d as usize);
    COUNT.store(list.len(), Ordering::Release);
    drop(list);
    // SAFETY: made by Box::into_raw in opendir, now unlisted: freed exactly once.
    let dir = unsafe { Box::from_raw(d.cast::<Dir>()) };
    if dir.kfd >= 0 {
        // SAFETY: the descriptor dirfd opened for this stream.
        unsafe { real::close(dir.kfd) };
    }
    0
}

/// # Safety
/// As dirfd(3).
#[no_mangle]
pub unsafe extern "C" fn dirfd(d: *mut DIR) -> c_int {
    let Some(dir) = ours(d) else {
        // SAFETY: the caller's stream, the C library's.
        return unsafe { real::dirfd(d) };
    };
    if dir.kfd < 0 {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: a NUL-terminated path.
        dir.kfd = unsafe { real::open64(dir.kpath.as_ptr(), flags, 0) };
    }
    dir.kfd
}

/// # Safety
/// As rewinddir(3).
#[no_mangle]
pub unsafe extern "C" fn rewinddir(d: *mut DIR) {
    let Some(dir) = ours(d) else {
        // SAFETY: the caller's stream, the C library's.
        return unsafe { real::rewinddir(d) };
    };
    // POSIX: a rewound stream shows the directory as it is now.
    if let Some(_b) = enter() {
        if let Ok(v) = list(dir.served, &dir.fs) {
            dir.entries = v;
        }
    }
    dir.pos = 0;
}

/// # Safety
/// As telldir(3).
#[no_mangle]
pub unsafe extern "C" fn telldir(d: *mut DIR) -> c_long {
    match ours(d) {
        Some(dir) => dir.pos as c_long,
        // SAFETY: the caller's stream, the C library's.
        None => unsafe { real::telldir(d) },
    }
}

/// # Safety
/// As seekdir(3).
#[no_mangle]
pub unsafe extern "C" fn seekdir(d: *mut DIR, pos: c_long) {
    match ours(d) {
        Some(dir) => dir.pos = pos.max(0) as usize,
        // SAFETY: the caller's stream, the C library's.
        None => unsafe { real::seekdir(d, pos) },
    }
}
