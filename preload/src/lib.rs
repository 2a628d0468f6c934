//! libnacre_preload.so: the interception library. Loaded with LD_PRELOAD (`nacre run
//! -- CMD` sets it up), it serves the POSIX calls of an unmodified program on paths
//! under a nacre mount from the client library inside the process, the way DAOS's
//! libpil4dfs serves a dfuse mount: a create or a stat is one MDS request, a read or
//! a write goes straight between the program's buffer and the OSS, and nothing
//! crosses FUSE. Everything else, and whatever it cannot serve, goes to the kernel
//! and through it to the mount, so the program sees one file system either way.
//!
//! Served: open/openat/creat, read/write/pread/pwrite/readv/writev, lseek,
//! stat/lstat/fstat/fstatat/statx, close, fsync/fdatasync, ftruncate, access/
//! faccessat, unlink/unlinkat, mkdir/mkdirat, rmdir, rename/renameat/renameat2, and
//! opendir/readdir/closedir with telldir, seekdir, rewinddir and dirfd. The rules
//! (descriptors, fork, exec, dup, what goes to the kernel) are in docs/preload.md.
//!
//! Every exported function has the contract of the C library's function of its name,
//! and this whole crate is an FFI seam: each unsafe block says why it holds.
#![allow(clippy::missing_safety_doc)]

mod dirs;
mod fds;
mod files;
mod inner;
mod names;
mod paths;
mod procs;
mod real;
mod setattrs;
mod state;
mod stats;
mod stdio;
mod temps;

/// Runs when the library loads: finds the nacre mounts; with none, every call goes
/// straight to the C library.
extern "C" fn init() {
    state::load_mounts();
    if state::mounts().is_empty() {
        return;
    }
    inner::init();
    // SAFETY: registers handlers that are plain functions of this library, which
    // stays loaded for the life of the process.
    unsafe {
        libc::pthread_atfork(
            Some(fds::before_fork),
            Some(fds::after_fork_parent),
            Some(fds::after_fork_child),
        );
        libc::atexit(files::close_all);
    }
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;
