//! The table of per-operation slots: each operation in flight holds one, and its
//! address is the context libfabric hands back with the completion.

use std::ffi::c_void;
use std::rc::Rc;

use nacre_sys as sys;

use super::OpKind;
use crate::memory::MrInner;

/// Per-operation state, one slot per operation in flight: the caller's context, the
/// kind of operation, and the registration it uses (held until the completion is read,
/// so a registration is never released under an operation). `ctx` comes first: its
/// address is the context libfabric carries, and it is the FI_CONTEXT / FI_CONTEXT2
/// storage that providers asking for those modes write into.
#[repr(C)]
struct OpSlot {
    ctx: sys::fi_context2,
    context: u64,
    kind: OpKind,
    region: Option<Rc<MrInner>>,
}

/// A bounded table of [`OpSlot`]s, allocated once: pointers into it stay valid for the
/// endpoint's life. Sized for every transmit and receive the endpoint admits, so a post
/// that passed the queue checks always finds a slot.
pub(super) struct OpSlots {
    slots: Box<[OpSlot]>,
    free: Vec<u32>,
}

impl OpSlots {
    pub(super) fn new(count: usize) -> OpSlots {
        let slots = (0..count)
            .map(|_| OpSlot {
                ctx: sys::fi_context2::default(),
                context: 0,
                kind: OpKind::Send,
                region: None,
            })
            .collect();
        OpSlots {
            slots,
            free: (0..count as u32).rev().collect(),
        }
    }

    /// Takes a slot for an operation; its address is the libfabric context.
    #[inline]
    pub(super) fn take(&mut self, context: u64, kind: OpKind, region: &Rc<MrInner>) -> Option<u32> {
        let i = self.free.pop()?;
        let slot = &mut self.slots[i as usize];
        slot.context = context;
        slot.kind = kind;
        region.busy.set(region.busy.get() + 1);
        slot.region = Some(region.clone());
        Some(i)
    }

    #[inline]
    pub(super) fn pointer(&mut self, i: u32) -> *mut c_void {
        &mut self.slots[i as usize] as *mut OpSlot as *mut c_void
    }

    /// The slot a context pointer names, if it is one of ours.
    #[inline]
    pub(super) fn index_of(&self, raw: *mut c_void) -> Option<u32> {
        let base = self.slots.as_ptr() as usize;
        let size = std::mem::size_of::<OpSlot>();
        let off = (raw as usize).checked_sub(base)?;
        (off % size == 0 && off / size < self.slots.len()).then_some((off / size) as u32)
    }

    /// Frees slot `i` (the operation is done): returns its context and kind, and lets go
    /// of its registration.
    #[inline]
    pub(super) fn release(&mut self, i: u32) -> (u64, OpKind) {
        let slot = &mut self.slots[i as usize];
        if let Some(r) = slot.region.take() {
            r.busy.set(r.busy.get().saturating_sub(1));
        }
        self.free.push(i);
        (slot.context, slot.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr;

    #[test]
    fn op_slots_name_only_their_own_addresses() {
        let slots = OpSlots::new(4);
        let base = slots.slots.as_ptr() as usize;
        let size = std::mem::size_of::<OpSlot>();
        assert_eq!(slots.index_of(base as *mut c_void), Some(0));
        assert_eq!(slots.index_of((base + 3 * size) as *mut c_void), Some(3));
        assert_eq!(slots.index_of((base + 4 * size) as *mut c_void), None);
        assert_eq!(slots.index_of((base + 1) as *mut c_void), None);
        assert_eq!(slots.index_of(ptr::null_mut()), None);
        assert_eq!(slots.index_of((base - size) as *mut c_void), None);
    }
}
