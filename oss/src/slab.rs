//! Byte access to pool slabs. The engine's `PoolBuf` exposes a pointer and whole-slab
//! copies; merging edge blocks, zero-filling holes and checksumming need the bytes as a
//! slice. This is the crate's only unsafe code.

use nacre_engine::PoolBuf;

/// The whole slab as bytes.
pub fn bytes(buf: &PoolBuf) -> &[u8] {
    // SAFETY: the slab is `capacity()` bytes of mapped pool memory that stays mapped while
    // any PoolBuf lives (it holds the arena). Holding the PoolBuf means no I/O owns it
    // (Storage takes the PoolBuf by value for the duration of an operation), so nothing
    // writes it while this shared borrow of the PoolBuf lasts.
    unsafe { std::slice::from_raw_parts(buf.as_ptr(), buf.capacity()) }
}

/// The whole slab as mutable bytes.
pub fn bytes_mut(buf: &mut PoolBuf) -> &mut [u8] {
    // SAFETY: as in `bytes`; the exclusive borrow of the PoolBuf makes this the only view.
    unsafe { std::slice::from_raw_parts_mut(buf.as_ptr(), buf.capacity()) }
}
