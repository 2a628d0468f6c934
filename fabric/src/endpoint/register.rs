//! Memory registration through an endpoint, obeying the provider's mr_mode.

use std::ffi::c_void;
use std::ptr;
use std::rc::Rc;

use nacre_sys as sys;

use super::Endpoint;
use crate::error::{call_error, check, ErrorKind, Result};
use crate::info::mr_mode_names;
use crate::memory::{Access, ExternalRegion, Memory, MemoryRegion, MrInner};

/// Registrations tried with a fresh random key when the provider says the key is taken.
const KEY_TRIES: usize = 8;

impl Endpoint {
    /// Registers `memory` for local use and, with `Access::ALL`, for peers' RMA. Obeys the
    /// provider's mr_mode: its key with FI_MR_PROV_KEY (else a unique one of ours), virtual
    /// addresses with FI_MR_VIRT_ADDR (else offsets), binding with FI_MR_ENDPOINT.
    /// The registration lives as long as the endpoint (register at start-up, as the
    /// engine's pool does): an operation in flight can never outlive its memory.
    pub fn register(&mut self, mut memory: Memory, access: Access) -> Result<MemoryRegion> {
        let (ptr, len) = (memory.as_mut_ptr(), memory.len());
        let inner = self.register_range(ptr, len, Some(memory), access)?;
        Ok(MemoryRegion { inner })
    }

    /// Registers memory the caller owns (a client's buffer) for data calls and peers'
    /// RMA. Released with [`Endpoint::deregister_external`] or when the endpoint closes.
    ///
    /// # Safety
    /// `[ptr, ptr+len)` must stay mapped, and not be used for anything else by a
    /// provider's access, while any operation posted on the region is in flight and
    /// while any peer holds a descriptor of it that it may still use: post on it, and
    /// hand out its descriptors, only while the caller holds the memory, and deregister
    /// it (closing the key) before the memory goes if a peer might still reach it.
    pub unsafe fn register_external(
        &mut self,
        ptr: *mut u8,
        len: usize,
        access: Access,
    ) -> Result<ExternalRegion> {
        let inner = self.register_range(ptr, len, None, access)?;
        Ok(ExternalRegion { inner })
    }

    /// Gives up an external registration; refused while an operation uses it. Once the
    /// last handle goes, the registration closes and its key stops working for peers.
    pub fn deregister_external(&mut self, region: ExternalRegion) -> Result<()> {
        let busy = region.busy();
        if busy > 0 {
            return Err(ErrorKind::Busy(busy as usize).into());
        }
        self.registrations.retain(|r| !Rc::ptr_eq(r, &region.inner));
        Ok(())
    }

    fn register_range(
        &mut self,
        ptr: *mut u8,
        len: usize,
        memory: Option<Memory>,
        access: Access,
    ) -> Result<Rc<MrInner>> {
        let mode = self.domain.mr_mode;
        let mut mr: *mut sys::fid_mr = ptr::null_mut();
        // Where we choose keys (no FI_MR_PROV_KEY), random ones: a peer that learned one
        // registration's key cannot guess the next (counting keys from 1 let it).
        let mut requested_key = 0;
        for tries in 1.. {
            requested_key = random_key() & self.domain.key_mask;
            // SAFETY: ptr/len describe memory that `memory` owns (and the registration
            // will outlive), or the caller's memory under register_external's contract;
            // the domain is open; mr receives the new registration.
            let rc = unsafe {
                sys::fi_mr_reg(
                    self.domain.domain,
                    ptr as *const c_void,
                    len,
                    access.0,
                    0,
                    requested_key,
                    0,
                    &mut mr,
                    ptr::null_mut(),
                )
            };
            if rc == -(sys::FI_ENOKEY as i32) && tries < KEY_TRIES {
                continue; // the key is in use: draw another
            }
            check("fi_mr_reg", rc as isize)?;
            break;
        }
        if mode & sys::FI_MR_ENDPOINT != 0 {
            // Bound and enabled before its key and descriptor are read: a provider may
            // only know them once the registration is enabled.
            // SAFETY: both objects are live; the MR is not used before this.
            let bound = unsafe {
                check(
                    "fi_mr_bind",
                    sys::fi_mr_bind(mr, self.ep as *mut sys::fid, 0) as isize,
                )
                .and_then(|_| check("fi_mr_enable", sys::fi_mr_enable(mr) as isize))
            };
            if let Err(e) = bound {
                // SAFETY: mr is live and never used again.
                unsafe { sys::fi_close(mr as *mut sys::fid) };
                return Err(e);
            }
        }
        let key = if mode & sys::FI_MR_PROV_KEY != 0 {
            // SAFETY: mr is a live, enabled registration.
            unsafe { sys::fi_mr_key(mr) }
        } else {
            requested_key
        };
        if key == sys::FI_KEY_NOTAVAIL {
            // SAFETY: as above.
            unsafe { sys::fi_close(mr as *mut sys::fid) };
            return Err(call_error("fi_mr_key", -(sys::FI_ENOKEY as isize)));
        }
        let inner = MrInner::new(
            mr,
            key,
            mode & sys::FI_MR_VIRT_ADDR != 0,
            ptr,
            len,
            memory,
            access,
            self.domain.clone(),
        );
        tracing::debug!(
            len = inner.len,
            key,
            mr_mode = %mr_mode_names(mode),
            "registered memory"
        );
        let inner = Rc::new(inner);
        self.registrations.push(inner.clone());
        Ok(inner)
    }

    /// Gives up this endpoint's hold on a registration (it closes when the last
    /// `MemoryRegion` handle goes). Refused while an operation posted on that
    /// registration has not completed; operations on other registrations (posted
    /// receives, say) do not matter.
    pub fn deregister(&mut self, region: &MemoryRegion) -> Result<()> {
        let busy = region.busy();
        if busy > 0 {
            return Err(ErrorKind::Busy(busy as usize).into());
        }
        self.registrations.retain(|r| !Rc::ptr_eq(r, &region.inner));
        Ok(())
    }
}

/// A key from the OS's random generator (a clock-derived one should it fail), drawn a
/// batch at a time: one system call per 64 registrations, not one each (a client
/// registers a buffer per request).
fn random_key() -> u64 {
    thread_local! {
        static BATCH: std::cell::RefCell<(Vec<u64>, usize)> = const {
            std::cell::RefCell::new((Vec::new(), 0))
        };
    }
    // A thread whose thread-locals are gone (one in its exit handlers) draws one.
    let one = || {
        let mut bytes = [0u8; 8];
        match getrandom::fill(&mut bytes) {
            Ok(()) => u64::from_le_bytes(bytes),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
        }
    };
    let drawn = BATCH.try_with(|b| {
        let mut b = b.borrow_mut();
        if b.1 >= b.0.len() {
            let mut bytes = [0u8; 64 * 8];
            let keys: Vec<u64> = match getrandom::fill(&mut bytes) {
                Ok(()) => bytes
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
                Err(_) => vec![std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)],
            };
            *b = (keys, 0);
        }
        let at = b.1;
        b.1 += 1;
        b.0[at]
    });
    drawn.unwrap_or_else(|_| one())
}
