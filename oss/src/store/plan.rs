//! Pure arithmetic of object I/O: which storage operations a request becomes. Data sits
//! in a chain of slabs whose first byte lands at `offset % ALIGN` in the first slab, so
//! every slab starts at a block-aligned file offset and is written with one O_DIRECT
//! operation from its start; only the partial blocks at the two ends need the old bytes
//! of the block (read-modify-write).

use std::ops::Range;

use nacre_engine::ALIGN;

pub const BLOCK: u64 = ALIGN as u64;

pub fn align_down(x: u64) -> u64 {
    x - x % BLOCK
}

pub fn align_up(x: u64) -> u64 {
    x.div_ceil(BLOCK) * BLOCK
}

/// One storage operation: `len` bytes (a block multiple) from the start of slab `buf`
/// at file offset `file_off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub buf: usize,
    pub file_off: u64,
    pub len: usize,
}

/// A partially written block: the bytes of the block at `block` (file offset) that the
/// request does not cover (`keep`, offsets within the block) come from the old contents;
/// the block sits at `pos` in slab `buf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub block: u64,
    pub buf: usize,
    pub pos: usize,
    pub keep: Vec<Range<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub pieces: Vec<Piece>,
    pub edges: Vec<Edge>,
    /// Blocks touched, for the range lock.
    pub blocks: Range<u64>,
}

/// Splits `len` bytes at `offset` over slabs of capacities `caps` (block multiples), the
/// first byte at `offset % BLOCK` in slab 0. None if the slabs are too small.
pub fn plan(offset: u64, len: usize, caps: &[usize]) -> Option<Plan> {
    let end = offset.checked_add(len as u64)?;
    let start = align_down(offset);
    let head = (offset - start) as usize;
    if head + len > caps.iter().sum::<usize>() {
        return None;
    }
    if len == 0 {
        return Some(Plan::default());
    }
    let mut pieces = Vec::new();
    let mut at = start;
    for (i, &cap) in caps.iter().enumerate() {
        if at >= end {
            break;
        }
        let n = align_up(end.min(at + cap as u64)) - at;
        pieces.push(Piece {
            buf: i,
            file_off: at,
            len: n as usize,
        });
        at += cap as u64;
    }
    let locate = |block: u64| {
        let p = pieces
            .iter()
            .find(|p| (p.file_off..p.file_off + p.len as u64).contains(&block))
            .expect("an edge block lies in some piece");
        (p.buf, (block - p.file_off) as usize)
    };
    let mut edges: Vec<Edge> = Vec::new();
    if head > 0 {
        let (buf, pos) = locate(start);
        edges.push(Edge {
            block: start,
            buf,
            pos,
            keep: std::iter::once(0..head).collect(),
        });
    }
    let tail = (end % BLOCK) as usize;
    if tail > 0 {
        let block = align_down(end);
        match edges.last_mut() {
            Some(e) if e.block == block => e.keep.push(tail..ALIGN),
            _ => {
                let (buf, pos) = locate(block);
                edges.push(Edge {
                    block,
                    buf,
                    pos,
                    keep: std::iter::once(tail..ALIGN).collect(),
                });
            }
        }
    }
    Some(Plan {
        pieces,
        edges,
        blocks: start / BLOCK..align_up(end) / BLOCK,
    })
}

/// Slab sizes to hold `head + len` bytes: slabs of `slab` bytes and a last, smaller one
/// rounded up to a block.
pub fn slab_sizes(total: usize, slab: usize) -> Vec<usize> {
    let mut sizes = vec![slab; total / slab];
    let rest = total % slab;
    if rest > 0 {
        sizes.push(rest.div_ceil(ALIGN) * ALIGN);
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn aligned_write_has_no_edges() {
        let p = plan(8192, 3 * 4096, &[1 << 20]).unwrap();
        assert!(p.edges.is_empty());
        assert_eq!(
            p.pieces,
            vec![Piece {
                buf: 0,
                file_off: 8192,
                len: 3 * 4096
            }]
        );
        assert_eq!(p.blocks, 2..5);
    }

    #[test]
    fn small_write_inside_one_block_is_one_edge() {
        let p = plan(4096 + 10, 20, &[4096]).unwrap();
        assert_eq!(p.edges.len(), 1);
        assert_eq!(p.edges[0].keep, vec![0..10, 30..4096]);
        assert_eq!(p.blocks, 1..2);
        assert!(plan(4096 + 10, 4096, &[4096]).is_none(), "slab too small");
    }

    #[test]
    fn split_over_slabs() {
        let p = plan(100, 8192, &[4096, 4096, 4096]).unwrap();
        assert_eq!(p.pieces.len(), 3);
        assert_eq!(p.edges.len(), 2);
        assert_eq!((p.edges[1].buf, p.edges[1].pos), (2, 0));
        assert_eq!(slab_sizes(100 + 8192, 4096), vec![4096, 4096, 4096]);
        assert_eq!(slab_sizes(5000, 1 << 20), vec![8192]);
    }

    proptest! {
        /// The pieces cover exactly the touched blocks, once each, in order; the edges are
        /// the partial blocks and keep exactly the bytes the request does not cover.
        #[test]
        fn plan_covers_blocks(offset in 0u64..40_000, len in 0usize..40_000, slab_blocks in 1usize..4) {
            let slab = slab_blocks * 4096;
            let head = (offset % BLOCK) as usize;
            let caps = slab_sizes(head + len, slab);
            let p = plan(offset, len, &caps).unwrap();
            if len == 0 { return Ok(()); }
            let mut at = align_down(offset);
            for piece in &p.pieces {
                prop_assert_eq!(piece.file_off, at);
                prop_assert!(piece.len <= caps[piece.buf] && piece.len % ALIGN == 0);
                at += piece.len as u64;
            }
            prop_assert_eq!(at, align_up(offset + len as u64));
            for e in &p.edges {
                for r in &e.keep {
                    for b in [r.start, r.end - 1] {
                        let f = e.block + b as u64;
                        prop_assert!(f < offset || f >= offset + len as u64);
                    }
                }
            }
        }
    }
}
