//! The per-core buffer pool: one anonymous mapping (huge pages when the system has them)
//! carved into 4 KiB-aligned slabs of a few size classes. Registered once with libfabric
//! (when an endpoint is given) and once with io_uring by the storage layer: a byte moves
//! NIC -> slab -> disk with no copy. Get and put are O(1); an empty class returns None,
//! which callers treat as back-pressure (the request waits), never as a crash.

use std::rc::Rc;

use nacre_fabric::{Access, Endpoint, LocalSlice, Memory, MemoryRegion};

/// One size class: `count` slabs of `size` bytes (a multiple of 4 KiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeClass {
    pub size: usize,
    pub count: usize,
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub classes: Vec<SizeClass>,
    /// Try 2 MiB huge pages first (falls back to normal pages, and says so).
    pub huge_pages: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            classes: vec![
                SizeClass {
                    size: 4096,
                    count: 256,
                },
                SizeClass {
                    size: 64 << 10,
                    count: 64,
                },
                SizeClass {
                    size: 1 << 20,
                    count: 32,
                },
            ],
            huge_pages: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("size class of {0} bytes is not a positive multiple of 4096")]
    BadClass(usize),
    #[error("the pool needs at least one size class")]
    NoClasses,
    #[error("pool of {0} bytes is larger than the 1 GiB io_uring registers as one buffer")]
    TooLarge(usize),
    #[error(transparent)]
    Fabric(#[from] nacre_fabric::Error),
}

/// The memory behind the pool: registered with a fabric endpoint, or plain.
enum Arena {
    Registered(MemoryRegion),
    Plain { memory: Memory, ptr: *mut u8 },
}

impl Arena {
    fn ptr(&self) -> *mut u8 {
        match self {
            Arena::Registered(mr) => mr.as_ptr(),
            Arena::Plain { ptr, .. } => *ptr,
        }
    }

    fn len(&self) -> usize {
        match self {
            Arena::Registered(mr) => mr.len(),
            Arena::Plain { memory, .. } => memory.len(),
        }
    }
}

struct Class {
    size: usize,
    base: usize,
    free: Vec<u32>,
    count: usize,
}

/// A slab out of the pool; give it back with [`BufferPool::put`]. Holds the pool's memory
/// alive, so its bytes stay valid whatever happens to the pool.
#[must_use = "a buffer that is not put back is lost to the pool"]
pub struct PoolBuf {
    arena: Rc<Arena>,
    class: u8,
    index: u32,
    offset: usize,
    size: usize,
}

impl PoolBuf {
    /// Capacity of the slab.
    pub fn capacity(&self) -> usize {
        self.size
    }

    /// Start of the slab (4 KiB-aligned), for I/O engines.
    pub fn as_ptr(&self) -> *mut u8 {
        // SAFETY: offset + size lies within the arena (checked when the pool was built).
        unsafe { self.arena.ptr().add(self.offset) }
    }

    /// The slab as a fabric buffer, when the pool is registered with an endpoint. Only
    /// the engine's bulk transfers post on slabs: they own the slab while the NIC uses it.
    pub(crate) fn fabric_slice(&self, at: usize, len: usize) -> Option<LocalSlice<'_>> {
        if at.checked_add(len)? > self.size {
            return None;
        }
        match &*self.arena {
            Arena::Registered(mr) => mr.slice(self.offset + at, len).ok(),
            Arena::Plain { .. } => None,
        }
    }

    /// The whole slab as bytes. Holding the `PoolBuf` means no operation uses the slab
    /// (storage and bulk transfers own it while they run), so the view is the only one.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the slab is `size` bytes of mapped pool memory that stays mapped while
        // this PoolBuf lives (it holds the arena); no I/O owns it while we are borrowed.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.size) }
    }

    /// The whole slab as mutable bytes; as [`PoolBuf::bytes`], exclusively.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; the exclusive borrow makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.size) }
    }

    /// Copies `data` to the start of the slab (at most its capacity).
    pub fn copy_in(&mut self, data: &[u8]) {
        let n = data.len().min(self.size);
        // SAFETY: n bytes from the slab start stay inside the slab; we own the slab (no
        // operation holds it while the caller has it).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.as_ptr(), n) };
    }

    /// Copies the first `out.len()` bytes of the slab (at most its capacity) into `out`.
    pub fn copy_out(&self, out: &mut [u8]) {
        let n = out.len().min(self.size);
        // SAFETY: as in copy_in.
        unsafe { std::ptr::copy_nonoverlapping(self.as_ptr(), out.as_mut_ptr(), n) };
    }
}

/// A core's buffer pool.
pub struct BufferPool {
    arena: Rc<Arena>,
    classes: Vec<Class>,
    huge: bool,
}

impl BufferPool {
    /// Builds the pool, registering it with `ep` when given (for RMA and messages).
    pub fn new(cfg: &PoolConfig, ep: Option<&mut Endpoint>) -> Result<BufferPool, PoolError> {
        if cfg.classes.is_empty() {
            return Err(PoolError::NoClasses);
        }
        // Smallest first: `get` serves a size from the first class that fits.
        let mut wanted = cfg.classes.clone();
        wanted.sort_by_key(|c| c.size);
        let mut classes = Vec::with_capacity(wanted.len());
        let mut total = 0usize;
        for c in &wanted {
            if c.size == 0 || !c.size.is_multiple_of(4096) {
                return Err(PoolError::BadClass(c.size));
            }
            classes.push(Class {
                size: c.size,
                base: total,
                free: (0..c.count as u32).rev().collect(),
                count: c.count,
            });
            total += c.size * c.count;
        }
        if total > 1 << 30 {
            return Err(PoolError::TooLarge(total));
        }
        let memory = if cfg.huge_pages {
            Memory::anonymous_huge(total)
        } else {
            Memory::anonymous(total)
        }
        .map_err(PoolError::Fabric)?;
        let huge = memory.is_huge();
        tracing::info!(
            bytes = total,
            pages = ?memory.pages(),
            "buffer pool mapped ({:?} pages)",
            memory.pages()
        );
        let arena = match ep {
            Some(ep) => Arena::Registered(ep.register(memory, Access::LOCAL)?),
            None => {
                let mut memory = memory;
                let ptr = memory.as_mut_ptr();
                Arena::Plain { memory, ptr }
            }
        };
        Ok(BufferPool {
            arena: Rc::new(arena),
            classes,
            huge,
        })
    }

    /// A slab of at least `size` bytes from the smallest class that fits, or None when
    /// that class is empty right now (back-pressure) or no class is large enough.
    pub fn get(&mut self, size: usize) -> Option<PoolBuf> {
        let class = self.classes.iter().position(|c| c.size >= size)?;
        let c = &mut self.classes[class];
        let index = c.free.pop()?;
        Some(PoolBuf {
            arena: self.arena.clone(),
            class: class as u8,
            index,
            offset: c.base + index as usize * c.size,
            size: c.size,
        })
    }

    /// Gives a slab back. A slab of another pool is refused (returned).
    pub fn put(&mut self, buf: PoolBuf) -> Result<(), PoolBuf> {
        if !Rc::ptr_eq(&buf.arena, &self.arena) {
            return Err(buf);
        }
        let c = &mut self.classes[buf.class as usize];
        debug_assert!(!c.free.contains(&buf.index), "slab put back twice");
        c.free.push(buf.index);
        Ok(())
    }

    /// Whether any class holds slabs of at least `size` bytes (else `get` never will).
    pub fn serves(&self, size: usize) -> bool {
        self.classes.iter().any(|c| c.size >= size)
    }

    /// Free slabs in the class that serves `size`.
    pub fn available(&self, size: usize) -> usize {
        self.classes
            .iter()
            .find(|c| c.size >= size)
            .map_or(0, |c| c.free.len())
    }

    /// Slabs per class, for metrics: (size, free, total).
    pub fn usage(&self) -> Vec<(usize, usize, usize)> {
        self.classes
            .iter()
            .map(|c| (c.size, c.free.len(), c.count))
            .collect()
    }

    /// Start and length of the whole arena, for io_uring buffer registration.
    pub fn arena(&self) -> (*mut u8, usize) {
        (self.arena.ptr(), self.arena.len())
    }

    pub fn is_huge(&self) -> bool {
        self.huge
    }

    pub fn is_registered(&self) -> bool {
        matches!(*self.arena, Arena::Registered(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> PoolConfig {
        PoolConfig {
            classes: vec![
                SizeClass {
                    size: 4096,
                    count: 2,
                },
                SizeClass {
                    size: 1 << 20,
                    count: 1,
                },
            ],
            huge_pages: false,
        }
    }

    #[test]
    fn get_put_and_exhaustion() {
        let mut pool = BufferPool::new(&small(), None).unwrap();
        let a = pool.get(100).unwrap();
        let b = pool.get(4096).unwrap();
        assert_eq!(a.capacity(), 4096);
        // The 4 KiB class is empty: that is back-pressure, not a promotion to 1 MiB.
        assert!(pool.get(1).is_none());
        assert_eq!(pool.available(1), 0);
        let big = pool.get(5000).unwrap();
        assert_eq!(big.capacity(), 1 << 20);
        assert!(pool.get(5000).is_none(), "1 MiB class exhausted");
        assert!(pool.get(2 << 20).is_none(), "no class that large");
        assert_eq!(a.as_ptr() as usize % 4096, 0);
        assert_ne!(a.as_ptr(), b.as_ptr());
        pool.put(a).ok().unwrap();
        assert_eq!(pool.available(1), 1);
        pool.put(b).ok().unwrap();
        pool.put(big).ok().unwrap();
        assert_eq!(pool.usage(), vec![(4096, 2, 2), (1 << 20, 1, 1)]);
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad = PoolConfig {
            classes: vec![SizeClass {
                size: 1000,
                count: 1,
            }],
            huge_pages: false,
        };
        assert!(matches!(
            BufferPool::new(&bad, None),
            Err(PoolError::BadClass(1000))
        ));
        let none = PoolConfig {
            classes: vec![],
            huge_pages: false,
        };
        assert!(matches!(
            BufferPool::new(&none, None),
            Err(PoolError::NoClasses)
        ));
    }

    #[test]
    fn foreign_buffers_are_refused() {
        let mut p1 = BufferPool::new(&small(), None).unwrap();
        let mut p2 = BufferPool::new(&small(), None).unwrap();
        let b = p1.get(1).unwrap();
        let b = p2.put(b).expect_err("refused");
        p1.put(b).ok().unwrap();
    }
}
