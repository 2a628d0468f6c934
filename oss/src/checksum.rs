//! crc32c (Castagnoli, hardware-accelerated where the CPU has it) over a request's data
//! as it sits in pool slabs: the checksum of the concatenation, without copying.

use nacre_engine::PoolBuf;

/// crc32c of `len` bytes starting `head` bytes into the first buffer and running on
/// through the following ones (the layout [`crate::ObjectStore`] uses for bulk data).
/// Stops early if the buffers hold fewer bytes.
pub fn crc32c_bufs(bufs: &[PoolBuf], head: usize, len: usize) -> u32 {
    let mut crc = 0;
    let mut left = len;
    let mut skip = head;
    for b in bufs {
        if left == 0 {
            break;
        }
        let start = skip.min(b.capacity());
        skip -= start;
        let n = (b.capacity() - start).min(left);
        crc = crc32c::crc32c_append(crc, &b.bytes()[start..start + n]);
        left -= n;
    }
    crc
}

/// crc32c of a list of byte slices taken as one stream.
pub fn crc32c_slices(parts: &[&[u8]]) -> u32 {
    parts.iter().fold(0, |crc, p| crc32c::crc32c_append(crc, p))
}
