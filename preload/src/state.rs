//! What this process knows: the nacre mounts (`nacre:NAME` in /proc/mounts, read when the library
//! loads), the client (connected on the first call under one of them), the umask, and
//! whether this is a child of a fork (which never uses the client: its threads did
//! not come along).

use std::cell::Cell;
use std::ffi::{c_char, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

use nacre_client::{Client, ClientConfig};

use crate::real;

/// One nacre FUSE mount.
pub struct Mount {
    /// Its directory, absolute, without a trailing slash ("" for "/").
    pub dir: Vec<u8>,
    /// The file system's name (`nacre:NAME` in /proc/mounts).
    pub fsname: String,
}

/// The client and which mounts it serves (those of its file system).
pub struct Served {
    pub client: Client,
    /// Who the process is (its effective ids), as the client acts.
    pub creds: nacre_proto::meta::Creds,
    pub serves: Vec<bool>,
    /// `st_dev` of each mount, as the kernel shows it.
    pub devs: Vec<u64>,
}

static MOUNTS: OnceLock<Vec<Mount>> = OnceLock::new();
static SERVED: OnceLock<Option<Served>> = OnceLock::new();
/// Set in the child of a fork: every call goes to the kernel from then on.
static FORKED: AtomicBool = AtomicBool::new(false);
static UMASK: AtomicU32 = AtomicU32::new(0o022);

/// What the library did, by kind of call, for NACRE_PRELOAD_REPORT (as DAOS's
/// D_IL_REPORT): served opens, reads, writes, attribute calls, directory streams,
/// namespace changes, and calls on our paths or descriptors handed to the kernel.
#[derive(Clone, Copy)]
pub enum Count {
    Open,
    Read,
    Write,
    Stat,
    Dir,
    Name,
    Kernel,
}

const COUNTS: usize = 7;
const NAMES: [&str; COUNTS] = [
    "opens", "reads", "writes", "stats", "dirs", "names", "kernel",
];
static COUNTERS: [AtomicU64; COUNTS] = [const { AtomicU64::new(0) }; COUNTS];

pub fn count(c: Count) {
    COUNTERS[c as usize].fetch_add(1, Ordering::Relaxed);
}

/// With NACRE_PRELOAD_REPORT set (not "0"), one line on stderr at exit of a process
/// that touched a nacre path:
/// `nacre preload: pid=N opens=N reads=N writes=N stats=N dirs=N names=N kernel=N`.
pub fn report() {
    let fd = REPORT_FD.load(Ordering::Relaxed);
    // A process that never touched a nacre path has nothing to say.
    let touched = COUNTERS.iter().any(|c| c.load(Ordering::Relaxed) > 0);
    if fd >= 0 && touched {
        let mut line = format!("nacre preload: pid={}", std::process::id());
        for (name, c) in NAMES.iter().zip(&COUNTERS) {
            line += &format!(" {name}={}", c.load(Ordering::Relaxed));
        }
        line.push('\n');
        // SAFETY: writes a buffer of ours to our own descriptor.
        unsafe { real::write(fd, line.as_ptr().cast(), line.len()) };
    }
}

/// Where the report goes: a copy of stderr taken at load, as programs (coreutils)
/// close stderr in their own exit handlers, which run before ours.
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);

fn keep_stderr_for_report() {
    if std::env::var("NACRE_PRELOAD_REPORT").is_ok_and(|v| !v.is_empty() && v != "0") {
        // SAFETY: duplicates stderr (close-on-exec) to a descriptor of our own, high
        // (under the usual limit of 1024) where programs rarely dup2 to.
        let fd = unsafe { real::fcntl(2, libc::F_DUPFD_CLOEXEC, 1000) };
        REPORT_FD.store(fd, Ordering::Relaxed);
    }
}

thread_local! {
    /// Set while this thread runs our code: the calls the client library itself
    /// makes go straight to the C library.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread busy in our code until dropped.
pub struct Busy(());

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = BUSY.try_with(|b| b.set(false));
    }
}

/// Enters our code, unless this thread is in it already (a call the client library
/// makes), exiting, or a fork's child, or no nacre mount was there at load.
pub fn enter() -> Option<Busy> {
    if FORKED.load(Ordering::Relaxed) || MOUNTS.get().is_none_or(|m| m.is_empty()) {
        return None;
    }
    match BUSY.try_with(|b| b.replace(true)) {
        Ok(false) => Some(Busy(())),
        Ok(true) => None,
        Err(_) => None,
    }
}

/// Whether this thread is in our code, or is one of the library's threads.
pub fn busy() -> bool {
    BUSY.try_with(|b| b.get()).unwrap_or(true)
}

/// This thread is one the client library started: it never leaves our code.
pub fn mark_library_thread() {
    let _ = BUSY.try_with(|b| b.set(true));
}

pub fn forked() {
    FORKED.store(true, Ordering::Relaxed);
}

pub fn is_forked() -> bool {
    FORKED.load(Ordering::Relaxed)
}

/// Reads the nacre mounts (source `nacre:NAME`, type fuse) from /proc/mounts; with
/// NACRE_PRELOAD_MOUNT set, only that one. Runs when the library loads.
pub fn load_mounts() {
    let text = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let only = std::env::var("NACRE_PRELOAD_MOUNT").ok();
    let mut mounts = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        // fuse.nacre, or plain fuse when the mount could not set its subtype.
        if f.len() < 3 || !f[0].starts_with("nacre:") || !f[2].starts_with("fuse") {
            continue;
        }
        let dir = unescape(f[1]);
        if let Some(o) = &only {
            if o.trim_end_matches('/').as_bytes() != dir.as_slice() {
                continue;
            }
        }
        let fsname = f[0]["nacre:".len()..].to_string();
        let dir = match dir.as_slice() {
            b"/" => Vec::new(),
            _ => dir,
        };
        mounts.push(Mount { dir, fsname });
    }
    if !mounts.is_empty() {
        keep_stderr_for_report();
    }
    let _ = MOUNTS.set(mounts);
    // SAFETY: umask(2) only swaps the process's mask; it is put back at once.
    let mask = unsafe {
        let m = real::umask(0o022);
        real::umask(m);
        m
    };
    UMASK.store(mask, Ordering::Relaxed);
}

/// /proc/mounts escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

pub fn mounts() -> &'static [Mount] {
    MOUNTS.get().map_or(&[], |m| m.as_slice())
}

pub fn umask() -> u32 {
    UMASK.load(Ordering::Relaxed)
}

pub fn set_umask(m: u32) {
    UMASK.store(m & 0o777, Ordering::Relaxed);
}

/// The client, connected on first use to the MGS of NACRE_MGS; None (and every call
/// to the kernel) if there is none or it cannot be reached, said once on stderr.
pub fn served() -> Option<&'static Served> {
    SERVED.get_or_init(connect).as_ref()
}

fn connect() -> Option<Served> {
    let Some(mgs) = nacre_mgc::mgs_address(None) else {
        eprintln!("nacre preload: NACRE_MGS is not set; calls go through the mount");
        return None;
    };
    let client = match Client::connect(&mgs, ClientConfig::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nacre preload: connecting to {mgs}: {e}; calls go through the mount");
            return None;
        }
    };
    let fsname = client.map().fsname.clone();
    let serves: Vec<bool> = mounts().iter().map(|m| m.fsname == fsname).collect();
    let devs = mounts().iter().map(|m| dev_of(&m.dir)).collect();
    Some(Served {
        client,
        creds: nacre_client::fs::process_creds(),
        serves,
        devs,
    })
}

fn dev_of(dir: &[u8]) -> u64 {
    let path = match dir.is_empty() {
        true => CString::new("/").expect("no NUL"),
        false => match CString::new(dir) {
            Ok(p) => p,
            Err(_) => return 0,
        },
    };
    // SAFETY: a zeroed stat64 is a valid value to fill; the path is NUL-terminated.
    unsafe {
        let mut st: libc::stat64 = std::mem::zeroed();
        match real::stat64(path.as_ptr(), &mut st) {
            0 => st.st_dev,
            _ => 0,
        }
    }
}

/// The bytes of a C string argument (None for NULL).
///
/// # Safety
/// `p` is NULL or NUL-terminated and lives as long as the result is used.
pub unsafe fn bytes<'a>(p: *const c_char) -> Option<&'a [u8]> {
    match p.is_null() {
        true => None,
        // SAFETY: per this function's contract.
        false => Some(unsafe { CStr::from_ptr(p) }.to_bytes()),
    }
}
