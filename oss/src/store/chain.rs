//! Slab chains: the slabs of one request, its data starting `head` bytes into the
//! first slab and running on through the rest.

use nacre_engine::{BufferPool, PoolBuf, ALIGN};

use super::plan::{self, BLOCK};

pub(super) fn largest_slab(pool: &BufferPool) -> usize {
    pool.usage().iter().map(|u| u.0).max().unwrap_or(ALIGN)
}

pub(super) fn put(pool: &mut BufferPool, b: PoolBuf) {
    if pool.put(b).is_err() {
        tracing::error!("a slab of another pool reached the object store");
    }
}

/// Slabs for a request of `len` bytes at `offset`, laid out as [`ObjectStore::write`]
/// takes them and reads return them (data from `offset % ALIGN` in the first slab, the
/// largest class, the last one smaller); all or none (None: back-pressure, retry later).
pub fn slabs_for(pool: &mut BufferPool, offset: u64, len: usize) -> Option<Vec<PoolBuf>> {
    let head = (offset % BLOCK) as usize;
    take_slabs(pool, &plan::slab_sizes(head + len, largest_slab(pool)))
}

/// All of `sizes` from the pool, or none (the ones taken go back).
pub(super) fn take_slabs(pool: &mut BufferPool, sizes: &[usize]) -> Option<Vec<PoolBuf>> {
    let mut got = Vec::with_capacity(sizes.len());
    for &s in sizes {
        match pool.get(s) {
            Some(b) => got.push(b),
            None => {
                for b in got {
                    put(pool, b);
                }
                return None;
            }
        }
    }
    Some(got)
}

/// Copies `data` into the slab chain starting `head` bytes into the first slab.
pub fn scatter(bufs: &mut [PoolBuf], mut head: usize, mut data: &[u8]) {
    for b in bufs {
        let bytes = b.bytes_mut();
        let n = (bytes.len() - head).min(data.len());
        bytes[head..head + n].copy_from_slice(&data[..n]);
        data = &data[n..];
        head = 0;
    }
}

/// Copies from the slab chain (starting `head` bytes in) into `out`.
pub fn gather(bufs: &[PoolBuf], mut head: usize, mut out: &mut [u8]) {
    for b in bufs {
        let bytes = b.bytes();
        let n = (bytes.len() - head).min(out.len());
        out[..n].copy_from_slice(&bytes[head..head + n]);
        out = &mut out[n..];
        head = 0;
    }
}
