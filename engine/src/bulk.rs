//! Bulk transfers as an engine primitive: the two moves every server makes with a
//! client's registered memory. A *pull* reads a client's region into pool slabs
//! (fi_read; the write path), a *push* writes slabs to a client's region (fi_write with
//! delivery-complete; the read path).
//!
//! The operation owns its slabs from post to completion: the service hands them over
//! (push) or receives them (pull) only in a [`BulkDone`], so safe code cannot give a slab
//! back to the pool, or write into it, while the NIC still uses it. A region larger
//! than one slab is split into slab-sized chunks, each its own RMA, and reassembled:
//! the service sees one completion with every slab in order.
//!
//! One exception, for pushes only: a push that outlives the bulk timeout is given up
//! (its peer is evicted, see `Core::expire_pushes`) and its slabs go back to the pool
//! without the provider's completion. That is safe for the server because a push only
//! reads its slabs: whatever the provider might still do with them cannot change data
//! the server keeps. A pull writes into its slabs and is never given up this way.
//!
//! This module is the bookkeeping (which op, which chunk, what is done); the core posts
//! the chunks and feeds their completions back in. Each op carries a generation that
//! travels in its chunks' contexts, so a late completion of an op that was given up
//! never counts for a later op in the same table entry.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nacre_fabric::PeerAddr;
use nacre_proto::BulkDesc;
use smallvec::SmallVec;

use crate::pool::PoolBuf;

/// The slabs of one bulk transfer, in region order. Inline up to four (4 MiB with 1 MiB
/// slabs): no allocation for the common sizes.
pub type Bufs = SmallVec<[PoolBuf; 4]>;

/// Chunks one transfer may have at most.
pub const MAX_CHUNKS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkDir {
    /// Client memory -> slabs (fi_read).
    Pull,
    /// Slabs -> client memory (fi_write, delivery-complete).
    Push,
}

/// A finished transfer. On success `bufs` holds the slabs (filled, for a pull; as given,
/// for a push) and the service owns them again. On failure the engine has already put
/// the slabs back in the pool and `bufs` is empty; `result` holds the errno.
#[derive(Debug)]
pub struct BulkDone {
    pub tag: u64,
    pub dir: BulkDir,
    pub peer: PeerAddr,
    pub result: Result<usize, i32>,
    pub bufs: Bufs,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BulkError {
    #[error("a transfer of {len} bytes needs {chunks} slabs of {chunk} bytes; at most {max} fit")]
    TooLarge {
        len: usize,
        chunk: usize,
        chunks: usize,
        max: usize,
    },
    #[error("range {offset}+{len} lies outside the peer's region of {size} bytes")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("push of {len} bytes from slabs that hold {have}")]
    ShortBufs { len: usize, have: usize },
    #[error("an empty transfer")]
    Empty,
    #[error("{0} bulk transfers are in flight already")]
    Full(usize),
    #[error(
        "the peer was evicted (a push to it outlived the bulk timeout) and has not spoken since"
    )]
    Evicted,
}

impl BulkError {
    /// The errno a server answers with.
    pub fn errno(&self) -> i32 {
        match self {
            BulkError::TooLarge { .. } => libc::EMSGSIZE,
            BulkError::OutOfRange { .. } | BulkError::ShortBufs { .. } | BulkError::Empty => {
                libc::EINVAL
            }
            BulkError::Full(_) => libc::EAGAIN,
            BulkError::Evicted => libc::ETIMEDOUT,
        }
    }
}

/// One transfer in flight (or waiting for slabs, for a pull).
pub(crate) struct BulkOp {
    pub tag: u64,
    pub dir: BulkDir,
    pub peer: PeerAddr,
    /// The client's range (already narrowed to what moves).
    pub region: BulkDesc,
    pub len: usize,
    pub bufs: Bufs,
    /// Where the data starts in the first slab (the rest follow from their start).
    pub head: usize,
    pub chunks: u16,
    pub done: u16,
    pub error: Option<i32>,
    /// The op's generation, set by [`BulkTable::insert`].
    pub gen: u32,
    /// When the op was made (a push's age is measured from here).
    pub started: Instant,
}

impl BulkOp {
    /// Chunk `i`: (offset in the region, offset in its slab, length). The first slab
    /// carries data from `head` on, the others from their start; all but the last full.
    pub fn chunk(&self, i: usize) -> (u64, usize, usize) {
        let caps = self.bufs.iter().map(PoolBuf::capacity);
        let before: usize = caps.take(i).sum();
        let (remote, local) = match i {
            0 => (0, self.head),
            _ => (before - self.head, 0),
        };
        let len = (self.bufs[i].capacity() - local).min(self.len - remote);
        (remote as u64, local, len)
    }
}

/// Slabs of `caps` capacities needed to carry `len` bytes starting `head` bytes into
/// the first; None when they cannot.
pub(crate) fn slabs_needed(
    caps: impl Iterator<Item = usize>,
    head: usize,
    len: usize,
) -> Option<usize> {
    let mut room = 0usize;
    for (i, cap) in caps.enumerate() {
        room += if i == 0 { cap.checked_sub(head)? } else { cap };
        if room >= len {
            return Some(i + 1);
        }
    }
    None
}

/// Every transfer of one core: a bounded table (sized at start) and the FIFO of pulls
/// waiting for slabs. FIFO, all slabs at once: no two pulls each hold half of what the
/// other needs, and a large pull is not starved by small ones behind it.
pub(crate) struct BulkTable {
    ops: Vec<Option<BulkOp>>,
    free: Vec<u32>,
    pub waiting: VecDeque<u32>,
    next_gen: u32,
}

/// Entries a table holds at most: an op's index travels in 16 bits of its context.
pub const MAX_BULK_OPS: usize = 1 << 16;

impl BulkTable {
    pub fn new(capacity: usize) -> BulkTable {
        let capacity = capacity.min(MAX_BULK_OPS);
        BulkTable {
            ops: (0..capacity).map(|_| None).collect(),
            free: (0..capacity as u32).rev().collect(),
            waiting: VecDeque::with_capacity(capacity),
            next_gen: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.ops.len()
    }

    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Stores `op` under a fresh generation.
    pub fn insert(&mut self, mut op: BulkOp) -> Result<u32, BulkError> {
        let id = self.free.pop().ok_or(BulkError::Full(self.ops.len()))?;
        op.gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1);
        self.ops[id as usize] = Some(op);
        Ok(id)
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut BulkOp> {
        self.ops.get_mut(id as usize)?.as_mut()
    }

    pub fn remove(&mut self, id: u32) -> Option<BulkOp> {
        let op = self.ops.get_mut(id as usize)?.take()?;
        self.free.push(id);
        Some(op)
    }

    /// Records that a chunk of op `id`, generation `gen`, finished (with `errno` on
    /// failure); returns the op once all of its chunks have, so that no slab is released
    /// under a live chunk. A chunk of an op no longer in the table (its entry empty, or
    /// reused under another generation) is ignored.
    pub fn chunk_done(&mut self, id: u32, gen: u32, errno: Option<i32>) -> Option<BulkOp> {
        let op = self.get_mut(id).filter(|op| op.gen == gen)?;
        op.done += 1;
        if op.error.is_none() {
            op.error = errno;
        }
        if op.done < op.chunks {
            return None;
        }
        self.remove(id)
    }

    /// Peers with a push in the table for longer than `timeout`.
    pub fn late_push_peers(&self, now: Instant, timeout: Duration) -> Vec<PeerAddr> {
        let mut late = Vec::new();
        for op in self.ops.iter().flatten() {
            let old = now.saturating_duration_since(op.started) > timeout;
            if op.dir == BulkDir::Push && old && !late.contains(&op.peer) {
                late.push(op.peer);
            }
        }
        late
    }

    /// Whether entry `id` holds a push to `peer`.
    pub fn is_push_to(&self, id: u32, peer: PeerAddr) -> bool {
        let op = self.ops.get(id as usize).and_then(Option::as_ref);
        op.is_some_and(|op| op.dir == BulkDir::Push && op.peer == peer)
    }

    /// Whether any transfer in the table is with `peer`.
    pub fn involves(&self, peer: PeerAddr) -> bool {
        self.ops.iter().flatten().any(|op| op.peer == peer)
    }

    /// The entries of every push to `peer`.
    pub fn pushes_to(&self, peer: PeerAddr) -> Vec<u32> {
        (0..self.ops.len() as u32)
            .filter(|&i| self.is_push_to(i, peer))
            .collect()
    }
}

/// How many chunks of at most `chunk` bytes carry `len` bytes.
pub(crate) fn chunks_for(len: usize, chunk: usize) -> usize {
    len.div_ceil(chunk.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{BufferPool, PoolConfig, SizeClass};

    fn pool() -> BufferPool {
        let cfg = PoolConfig {
            classes: vec![SizeClass {
                size: 8192,
                count: 4,
            }],
            huge_pages: false,
        };
        BufferPool::new(&cfg, None).unwrap()
    }

    fn op(pool: &mut BufferPool, len: usize) -> BulkOp {
        let n = chunks_for(len, 8192);
        BulkOp {
            tag: 7,
            dir: BulkDir::Pull,
            peer: PeerAddr::from_index(0),
            region: BulkDesc {
                addr: 0,
                len: len as u64,
                key: 1,
            },
            len,
            bufs: (0..n).map(|_| pool.get(8192).unwrap()).collect(),
            head: 0,
            chunks: n as u16,
            done: 0,
            error: None,
            gen: 0,
            started: Instant::now(),
        }
    }

    #[test]
    fn chunks_cover_the_range_in_order() {
        let mut p = pool();
        let o = op(&mut p, 20_000);
        assert_eq!(o.chunks, 3);
        assert_eq!(o.chunk(0), (0, 0, 8192));
        assert_eq!(o.chunk(1), (8192, 0, 8192));
        assert_eq!(o.chunk(2), (16384, 0, 20_000 - 16384));
    }

    #[test]
    fn a_head_offset_shifts_the_first_chunk_only() {
        let mut p = pool();
        let mut o = op(&mut p, 8192 + 100);
        o.head = 4000;
        o.len = 8192 - 4000 + 8192;
        o.chunks = 2;
        assert_eq!(o.chunk(0), (0, 4000, 8192 - 4000));
        assert_eq!(o.chunk(1), (8192 - 4000, 0, 8192));
        assert_eq!(slabs_needed([8192, 8192].into_iter(), 4000, o.len), Some(2));
        assert_eq!(
            slabs_needed([8192, 8192].into_iter(), 4000, o.len + 1),
            None
        );
        assert_eq!(slabs_needed([8192].into_iter(), 9000, 1), None);
        assert_eq!(slabs_needed([8192, 8192].into_iter(), 0, 10), Some(1));
    }

    #[test]
    fn an_op_finishes_after_its_last_chunk_and_keeps_the_first_error() {
        let mut p = pool();
        let mut t = BulkTable::new(2);
        let id = t.insert(op(&mut p, 20_000)).unwrap();
        let gen = t.get_mut(id).unwrap().gen;
        assert!(t.chunk_done(id, gen, None).is_none());
        assert!(t.chunk_done(id, gen, Some(5)).is_none());
        let done = t.chunk_done(id, gen, Some(104)).expect("all chunks done");
        assert_eq!(done.error, Some(5));
        assert_eq!(t.free(), 2);
        assert!(
            t.chunk_done(id, gen, None).is_none(),
            "a stale chunk is ignored"
        );
    }

    #[test]
    fn a_late_chunk_of_a_removed_op_does_not_count_for_the_next_in_its_entry() {
        let mut p = pool();
        let mut t = BulkTable::new(1);
        let old = t.insert(op(&mut p, 20_000)).unwrap();
        let old_gen = t.get_mut(old).unwrap().gen;
        t.remove(old).unwrap(); // given up, its chunks still posted
        let new = t.insert(op(&mut p, 1)).unwrap();
        assert_eq!(new, old, "the entry is reused");
        assert!(t.chunk_done(old, old_gen, None).is_none());
        assert_eq!(
            t.get_mut(new).unwrap().done,
            0,
            "the late chunk was not counted"
        );
        let gen = t.get_mut(new).unwrap().gen;
        assert!(t.chunk_done(new, gen, None).is_some());
    }

    #[test]
    fn late_pushes_are_found_by_peer_and_pulls_never() {
        let mut p = pool();
        let mut t = BulkTable::new(4);
        let (a, b) = (PeerAddr::from_index(1), PeerAddr::from_index(2));
        let mut mk = |dir, peer| {
            let mut o = op(&mut p, 1);
            (o.dir, o.peer) = (dir, peer);
            o
        };
        let pa = t.insert(mk(BulkDir::Push, a)).unwrap();
        t.insert(mk(BulkDir::Pull, b)).unwrap();
        let pa2 = t.insert(mk(BulkDir::Push, a)).unwrap();
        let now = Instant::now();
        let timeout = Duration::from_secs(1);
        assert!(t.late_push_peers(now, timeout).is_empty());
        let later = now + Duration::from_secs(2);
        assert_eq!(t.late_push_peers(later, timeout), vec![a]);
        assert_eq!(t.pushes_to(a), vec![pa, pa2]);
        assert!(t.pushes_to(b).is_empty(), "a pull is never given up");
    }

    #[test]
    fn the_table_is_bounded() {
        let mut p = pool();
        let mut t = BulkTable::new(1);
        t.insert(op(&mut p, 1)).unwrap();
        assert_eq!(t.insert(op(&mut p, 1)).unwrap_err(), BulkError::Full(1));
    }
}
