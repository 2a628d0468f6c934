//! Registered memory: the only memory the data calls accept.
//!
//! Every data call takes a [`LocalSlice`] of a [`MemoryRegion`], so a descriptor is
//! always passed and the buffer always lies inside a live registration (EFA's
//! FI_MR_LOCAL rule holds by construction). Remote ranges come as [`BulkDesc`]s (the
//! wire protocol's descriptor): what a peer's registration produced, checked for bounds
//! before any RMA is posted.

use std::cell::Cell;
use std::ffi::c_void;
use std::rc::Rc;

use nacre_proto::BulkDesc;

use memmap2::{MmapMut, MmapOptions};

use crate::endpoint::Domain;
use crate::error::{ErrorKind, Result};

/// Page-aligned anonymous memory to be registered (FI_MR_ALLOCATED: it is backed).
pub struct Memory {
    map: MmapMut,
    huge: Pages,
}

/// What backs a [`Memory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pages {
    Normal,
    /// Reserved huge pages (hugetlbfs, MAP_HUGETLB).
    HugeTlb,
    /// Transparent huge pages, asked for with madvise(MADV_HUGEPAGE).
    Transparent,
}

/// THP is usable unless the administrator set it to `never`.
fn thp_enabled() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| !s.contains("[never]"))
}

impl Memory {
    /// `len` bytes of prefaulted, zeroed, page-aligned memory.
    pub fn anonymous(len: usize) -> Result<Memory> {
        let map = MmapOptions::new()
            .len(len.max(1))
            .populate()
            .map_anon()
            .map_err(|source| ErrorKind::Map { len, source })?;
        Ok(Memory {
            map,
            huge: Pages::Normal,
        })
    }

    /// Like [`Memory::anonymous`], on 2 MiB huge pages: hugetlbfs pages when the system
    /// reserved some (`vm.nr_hugepages`), else transparent huge pages asked for with
    /// madvise, else normal pages. [`Memory::pages`] says which. Huge pages matter: the
    /// kernel maps a registered buffer for DMA in far fewer pieces.
    pub fn anonymous_huge(len: usize) -> Result<Memory> {
        const HUGE: usize = 2 << 20;
        let rounded = len.max(1).div_ceil(HUGE) * HUGE;
        if let Ok(map) = MmapOptions::new()
            .len(rounded)
            .huge(Some(21))
            .populate()
            .map_anon()
        {
            return Ok(Memory {
                map,
                huge: Pages::HugeTlb,
            });
        }
        let mut map = MmapOptions::new()
            .len(rounded)
            .map_anon()
            .map_err(|source| ErrorKind::Map { len, source })?;
        let thp = map.advise(memmap2::Advice::HugePage).is_ok();
        // Fault every page in now (after the advice, so they come as huge pages): the
        // data path must never take a page fault.
        for page in map.chunks_mut(4096) {
            page[0] = 0;
        }
        let huge = if thp && thp_enabled() {
            Pages::Transparent
        } else {
            Pages::Normal
        };
        Ok(Memory { map, huge })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// True on huge pages of either kind.
    pub fn is_huge(&self) -> bool {
        self.huge != Pages::Normal
    }

    pub fn pages(&self) -> Pages {
        self.huge
    }

    /// The bytes, for a caller that uses the memory without registering it.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    /// Start of the mapping; stays valid while the Memory (or the registration that owns
    /// it) lives, wherever the value is moved.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.map.as_mut_ptr()
    }
}

/// How a registration may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access(pub(crate) u64);

impl Access {
    /// Local send/recv, local RMA source/target, and remote read and write by peers.
    pub const ALL: Access = Access(
        nacre_sys::FI_SEND
            | nacre_sys::FI_RECV
            | nacre_sys::FI_READ
            | nacre_sys::FI_WRITE
            | nacre_sys::FI_REMOTE_READ
            | nacre_sys::FI_REMOTE_WRITE,
    );
    /// Local use only (messages and RMA initiated here); peers cannot touch it.
    pub const LOCAL: Access =
        Access(nacre_sys::FI_SEND | nacre_sys::FI_RECV | nacre_sys::FI_READ | nacre_sys::FI_WRITE);
    /// Local use, and peers may read it (never write): what a write's data is lent as.
    pub const PEER_READ: Access = Access(Access::LOCAL.0 | nacre_sys::FI_REMOTE_READ);
    /// Local use, and peers may write it (never read): what a read's destination is
    /// lent as.
    pub const PEER_WRITE: Access = Access(Access::LOCAL.0 | nacre_sys::FI_REMOTE_WRITE);

    /// Whether a registration made with `self` allows everything `other` does.
    pub fn covers(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }
}

pub(crate) struct MrInner {
    pub(crate) mr: *mut nacre_sys::fid_mr,
    pub(crate) desc: *mut c_void,
    pub(crate) key: u64,
    /// Base that peers add offsets to: the virtual address with FI_MR_VIRT_ADDR, else 0.
    pub(crate) remote_base: u64,
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
    pub(crate) access: Access,
    /// Operations posted on this registration and not completed yet.
    pub(crate) busy: Cell<u32>,
    // Dropped after `mr` is closed (see Drop): the registration never outlives them.
    // None for memory the caller owns (`ExternalRegion`).
    _memory: Option<Memory>,
    pub(crate) domain: Rc<Domain>,
}

impl MrInner {
    /// `ptr`/`len` is the registered range: `memory`'s mapping, or the caller's memory.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        mr: *mut nacre_sys::fid_mr,
        key: u64,
        virt_addr: bool,
        ptr: *mut u8,
        len: usize,
        memory: Option<Memory>,
        access: Access,
        domain: Rc<Domain>,
    ) -> MrInner {
        // SAFETY: mr is a live registration returned by fi_mr_reg.
        let desc = unsafe { nacre_sys::fi_mr_desc(mr) };
        MrInner {
            mr,
            desc,
            key,
            remote_base: if virt_addr { ptr as u64 } else { 0 },
            ptr,
            len,
            access,
            busy: Cell::new(0),
            _memory: memory,
            domain,
        }
    }

    fn check(&self, what: &'static str, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(ErrorKind::OutOfBounds {
                what,
                offset: offset as u64,
                len: len as u64,
                size: self.len as u64,
            }
            .into()),
        }
    }

    fn remote(&self, offset: usize, len: usize) -> Result<BulkDesc> {
        self.check("remote", offset, len)?;
        if self.access.0 & (nacre_sys::FI_REMOTE_READ | nacre_sys::FI_REMOTE_WRITE) == 0 {
            return Err(
                ErrorKind::BadDescriptor("registration was made without remote access").into(),
            );
        }
        Ok(BulkDesc {
            addr: self.remote_base + offset as u64,
            len: len as u64,
            key: self.key,
        })
    }
}

impl Drop for MrInner {
    fn drop(&mut self) {
        // SAFETY: mr is live and closed exactly once; no operation can still use it: the
        // endpoint retains every registration made through it until it has been closed,
        // so the last reference goes only after the endpoint.
        let rc = unsafe { nacre_sys::fi_close(self.mr as *mut nacre_sys::fid) };
        if rc != 0 {
            tracing::warn!("fi_close(mr) failed: {}", crate::error::strerror(rc));
        }
    }
}

/// A registered buffer. Cheap to clone (shared); lives while any clone or any operation
/// posted on it lives.
#[derive(Clone)]
pub struct MemoryRegion {
    pub(crate) inner: Rc<MrInner>,
}

impl MemoryRegion {
    pub fn len(&self) -> usize {
        self.inner.len
    }

    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// The key peers use for RMA on this registration (the provider's with FI_MR_PROV_KEY).
    pub fn key(&self) -> u64 {
        self.inner.key
    }

    /// Operations posted on this registration that have not completed yet.
    pub fn busy(&self) -> u32 {
        self.inner.busy.get()
    }

    /// Start of the registered memory, for I/O engines (io_uring) that share the buffer.
    /// Writing through it while the fabric transfers into the same bytes is a data race.
    pub fn as_ptr(&self) -> *mut u8 {
        self.inner.ptr
    }

    /// The descriptor to hand a peer so it can read or write `[offset, offset+len)`.
    pub fn remote(&self, offset: usize, len: usize) -> Result<BulkDesc> {
        self.inner.remote(offset, len)
    }

    /// The whole registration as a remote descriptor.
    pub fn remote_all(&self) -> Result<BulkDesc> {
        self.remote(0, self.len())
    }

    /// `[offset, offset+len)` of this registration, for a data call.
    pub fn slice(&self, offset: usize, len: usize) -> Result<LocalSlice<'_>> {
        self.check("local", offset, len)?;
        Ok(LocalSlice {
            inner: &self.inner,
            offset,
            len,
        })
    }

    /// Copies `data` into the registration at `offset`.
    pub fn copy_in(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check("local", offset, data.len())?;
        // SAFETY: the range is inside the mapping (checked); src and dst cannot overlap
        // because `data` is a Rust slice and the mapping is only reached through raw ptrs.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.inner.ptr.add(offset), data.len())
        };
        Ok(())
    }

    /// Copies `[offset, offset+out.len())` of the registration into `out`.
    pub fn copy_out(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.check("local", offset, out.len())?;
        // SAFETY: as in copy_in, with the direction reversed.
        unsafe {
            std::ptr::copy_nonoverlapping(self.inner.ptr.add(offset), out.as_mut_ptr(), out.len())
        };
        Ok(())
    }

    /// Sets `[offset, offset+len)` to `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<()> {
        self.check("local", offset, len)?;
        // SAFETY: the range is inside the mapping (checked).
        unsafe { std::ptr::write_bytes(self.inner.ptr.add(offset), byte, len) };
        Ok(())
    }

    fn check(&self, what: &'static str, offset: usize, len: usize) -> Result<()> {
        self.inner.check(what, offset, len)
    }
}

/// Memory the caller owns, registered for data calls and peers' RMA (a client's
/// buffers, held by a registration cache). Unlike a [`MemoryRegion`] it offers no way to
/// read or write the bytes: only slices for data calls and descriptors for peers, which
/// [`crate::Endpoint::register_external`]'s contract keeps within the memory's life.
pub struct ExternalRegion {
    pub(crate) inner: Rc<MrInner>,
}

impl ExternalRegion {
    pub fn access(&self) -> Access {
        self.inner.access
    }

    /// Start of the registered range (the caller's address).
    pub fn addr(&self) -> usize {
        self.inner.ptr as usize
    }

    pub fn len(&self) -> usize {
        self.inner.len
    }

    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// Operations posted on this registration that have not completed yet.
    pub fn busy(&self) -> u32 {
        self.inner.busy.get()
    }

    /// `[offset, offset+len)` for a data call.
    pub fn slice(&self, offset: usize, len: usize) -> Result<LocalSlice<'_>> {
        self.inner.check("local", offset, len)?;
        Ok(LocalSlice {
            inner: &self.inner,
            offset,
            len,
        })
    }

    /// The descriptor to hand a peer so it can read or write `[offset, offset+len)`.
    pub fn remote(&self, offset: usize, len: usize) -> Result<BulkDesc> {
        self.inner.remote(offset, len)
    }
}

/// A range of a local registration, ready for a data call.
#[derive(Clone, Copy)]
pub struct LocalSlice<'a> {
    pub(crate) inner: &'a Rc<MrInner>,
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

impl LocalSlice<'_> {
    pub(crate) fn ptr(&self) -> *mut c_void {
        // SAFETY: offset <= len of the mapping (checked when the slice was made).
        unsafe { self.inner.ptr.add(self.offset) as *mut c_void }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The address of `[offset, offset+len)` of a peer's region, after a bounds check.
pub(crate) fn remote_target(region: &BulkDesc, offset: u64, len: usize) -> Result<u64> {
    match region.sub(offset, len as u64) {
        Some(sub) => Ok(sub.addr),
        None => Err(ErrorKind::OutOfBounds {
            what: "remote",
            offset,
            len: len as u64,
            size: region.len,
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_target_is_bounds_checked() {
        let r = BulkDesc {
            addr: 4096,
            len: 8192,
            key: 1,
        };
        assert_eq!(remote_target(&r, 0, 8192).unwrap(), 4096);
        assert_eq!(remote_target(&r, 4096, 4096).unwrap(), 8192);
        assert!(remote_target(&r, 4097, 4096).is_err());
        assert!(remote_target(&r, u64::MAX, 1).is_err());
    }

    #[test]
    fn huge_falls_back_to_normal_pages() {
        let m = Memory::anonymous_huge(4096).unwrap();
        assert!(m.len() >= 4096);
    }
}
