//! mkstemp and its kin, and mkdtemp, in directories of ours: the C library makes their
//! files and directories through its internal calls, which would go to the kernel and
//! through the mount, where a directory the program just made through the library may
//! not show yet (the mount's entry timeout). Here they are made by our open and mkdir.

use std::ffi::{c_char, c_int};

use crate::files::{fail, open_ours};
use crate::names::mkdir_ours;
use crate::real;
use crate::state::bytes;

const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Names tried before EEXIST is given up on, as glibc does.
const TRIES: usize = 62 * 62 * 62;

/// Fills the six X before `suffix` bytes at the end of `template` with random letters.
///
/// # Safety
/// `template` is NUL-terminated and writable.
unsafe fn fill(template: *mut c_char, suffix: usize, seed: &mut u64) -> bool {
    // SAFETY: per this function's contract.
    let Some(b) = (unsafe { bytes(template) }) else {
        return false;
    };
    let len = b.len();
    if len < 6 + suffix || &b[len - suffix - 6..len - suffix] != b"XXXXXX" {
        return false;
    }
    for i in 0..6 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let c = LETTERS[(*seed >> 33) as usize % LETTERS.len()];
        // SAFETY: inside the template's bytes, per the length checked above.
        unsafe { *template.add(len - suffix - 6 + i) = c as c_char };
    }
    true
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom fills the buffer given (or fails, then the clock seeds).
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), 8, 0) };
    match got {
        8 => u64::from_le_bytes(bytes),
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

/// mkostemps in a directory of ours: Some(descriptor or -1), None for the C library.
///
/// # Safety
/// `template` is NUL-terminated and writable.
unsafe fn mkostemps_ours(template: *mut c_char, suffix: c_int, flags: c_int) -> Option<c_int> {
    let suffix = usize::try_from(suffix).ok()?;
    let mut seed = seed();
    let flags = (flags & !libc::O_ACCMODE) | libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
    for _ in 0..TRIES {
        // SAFETY: per this function's contract.
        if !unsafe { fill(template, suffix, &mut seed) } {
            return Some(fail(libc::EINVAL));
        }
        // SAFETY: the template, NUL-terminated.
        match unsafe { open_ours(libc::AT_FDCWD, template, flags, 0o600) } {
            None => return None,
            Some(-1) if crate::fds::errno() == libc::EEXIST => continue,
            Some(r) => return Some(r),
        }
    }
    Some(fail(libc::EEXIST))
}

macro_rules! mkostemps_fn {
    ($name:ident, $real:ident, $suffix:expr, $flags:expr, ($($a:ident : $t:ty),*)) => {
        /// # Safety
        /// As the C library's function of this name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(template: *mut c_char $(, $a: $t)*) -> c_int {
            // SAFETY: the caller's arguments, as given.
            unsafe {
                mkostemps_ours(template, $suffix, $flags)
                    .unwrap_or_else(|| real::$real(template, $suffix, $flags))
            }
        }
    };
}
mkostemps_fn!(mkstemp, mkostemps64, 0, 0, ());
mkostemps_fn!(mkstemp64, mkostemps64, 0, 0, ());
mkostemps_fn!(mkostemp, mkostemps64, 0, flags, (flags: c_int));
mkostemps_fn!(mkostemp64, mkostemps64, 0, flags, (flags: c_int));
mkostemps_fn!(mkstemps, mkostemps64, suffix, 0, (suffix: c_int));
mkostemps_fn!(mkstemps64, mkostemps64, suffix, 0, (suffix: c_int));
mkostemps_fn!(mkostemps, mkostemps64, suffix, flags, (suffix: c_int, flags: c_int));
mkostemps_fn!(mkostemps64, mkostemps64, suffix, flags, (suffix: c_int, flags: c_int));

/// # Safety
/// As mkdtemp(3).
#[no_mangle]
pub unsafe extern "C" fn mkdtemp(template: *mut c_char) -> *mut c_char {
    let mut seed = seed();
    for _ in 0..TRIES {
        // SAFETY: the caller's template, NUL-terminated and writable.
        if !unsafe { fill(template, 0, &mut seed) } {
            break;
        }
        // SAFETY: the template, NUL-terminated.
        match unsafe { mkdir_ours(template, 0o700) } {
            None => break,
            Some(0) => return template,
            Some(_) if crate::fds::errno() == libc::EEXIST => continue,
            Some(_) => return std::ptr::null_mut(),
        }
    }
    // SAFETY: the caller's template (X filled or not, the C library starts over).
    unsafe { real::mkdtemp(template) }
}
