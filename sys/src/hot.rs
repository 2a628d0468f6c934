//! The data-path calls as Rust inline functions: the same one-line dispatch through the
//! provider's ops table that libfabric's `static inline` functions do, minus the call
//! into the compiled C wrapper (a call and return per operation, on every poll spin).
//! The wrappers stay the reference; `hot_paths_match_the_wrappers` checks they agree.

use std::os::raw::c_void;

use crate::{fi_addr_t, fid_cq, fid_ep};

/// `fi_cq_read`.
///
/// # Safety
/// As for `fi_cq_read`: `cq` is an open completion queue and `buf` has room for `count`
/// entries of the queue's format.
#[inline(always)]
pub unsafe fn cq_read(cq: *mut fid_cq, buf: *mut c_void, count: usize) -> isize {
    // SAFETY: the caller's promise; an open CQ's ops table and its `read` are set by the
    // provider (libfabric's own inline function calls it unchecked too).
    unsafe { ((*(*cq).ops).read.unwrap_unchecked())(cq, buf, count) }
}

/// `fi_cq_readfrom`: as [`cq_read`], and each entry's source address in `src` (with
/// FI_SOURCE; `FI_ADDR_NOTAVAIL` for a peer not in the address vector).
///
/// # Safety
/// As for `fi_cq_readfrom`: as [`cq_read`], and `src` has room for `count` addresses.
#[inline(always)]
pub unsafe fn cq_readfrom(
    cq: *mut fid_cq,
    buf: *mut c_void,
    count: usize,
    src: *mut fi_addr_t,
) -> isize {
    // SAFETY: the caller's promise; as in cq_read.
    unsafe { ((*(*cq).ops).readfrom.unwrap_unchecked())(cq, buf, count, src) }
}

/// `fi_recv`.
///
/// # Safety
/// As for `fi_recv`: `ep` is an enabled endpoint; `buf`/`len` stay valid and `desc`
/// describes them until the completion is read.
#[inline(always)]
pub unsafe fn recv(
    ep: *mut fid_ep,
    buf: *mut c_void,
    len: usize,
    desc: *mut c_void,
    src: fi_addr_t,
    context: *mut c_void,
) -> isize {
    // SAFETY: the caller's promise; as in cq_read.
    unsafe { ((*(*ep).msg).recv.unwrap_unchecked())(ep, buf, len, desc, src, context) }
}

/// `fi_send`.
///
/// # Safety
/// As for `fi_send`, with the same buffer promise as [`recv`].
#[inline(always)]
pub unsafe fn send(
    ep: *mut fid_ep,
    buf: *const c_void,
    len: usize,
    desc: *mut c_void,
    dest: fi_addr_t,
    context: *mut c_void,
) -> isize {
    // SAFETY: the caller's promise; as in cq_read.
    unsafe { ((*(*ep).msg).send.unwrap_unchecked())(ep, buf, len, desc, dest, context) }
}

/// `fi_inject`.
///
/// # Safety
/// As for `fi_inject`: `ep` is an enabled endpoint and `buf` holds `len` readable bytes
/// (copied before the call returns).
#[inline(always)]
pub unsafe fn inject(ep: *mut fid_ep, buf: *const c_void, len: usize, dest: fi_addr_t) -> isize {
    // SAFETY: the caller's promise; as in cq_read.
    unsafe { ((*(*ep).msg).inject.unwrap_unchecked())(ep, buf, len, dest) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr;

    /// A fake CQ whose read returns its count: both paths must reach the same function.
    #[test]
    fn hot_paths_match_the_wrappers() {
        unsafe extern "C" fn read(_: *mut fid_cq, _: *mut c_void, count: usize) -> isize {
            count as isize * 10
        }
        unsafe extern "C" fn readfrom(
            _: *mut fid_cq,
            _: *mut c_void,
            count: usize,
            _: *mut fi_addr_t,
        ) -> isize {
            count as isize * 7
        }
        let mut ops = crate::fi_ops_cq {
            read: Some(read),
            readfrom: Some(readfrom),
            ..Default::default()
        };
        let mut cq = fid_cq {
            ops: &mut ops,
            ..Default::default()
        };
        // SAFETY: cq is a well-formed fid_cq whose read ignores its buffer.
        let (a, b) = unsafe {
            (
                cq_read(&mut cq, ptr::null_mut(), 3),
                crate::fi_cq_read(&mut cq, ptr::null_mut(), 3),
            )
        };
        assert_eq!((a, b), (30, 30));
        // SAFETY: as above; readfrom ignores its address array too.
        let (c, d) = unsafe {
            (
                cq_readfrom(&mut cq, ptr::null_mut(), 3, ptr::null_mut()),
                crate::fi_cq_readfrom(&mut cq, ptr::null_mut(), 3, ptr::null_mut()),
            )
        };
        assert_eq!((c, d), (21, 21));
    }
}
