//! Bookkeeping for operations in flight: a fixed-size slab, allocated once.
//!
//! Each posted operation takes a slot that holds the caller's context, what kind of
//! operation it is, and a reference to the registration it uses, so the memory stays
//! registered until the completion is read. The slot index (plus one) is the context
//! libfabric hands back, so no provider needs FI_CONTEXT storage from us.

use std::rc::Rc;

use crate::endpoint::OpKind;
use crate::memory::MrInner;

pub(crate) struct Slot {
    pub(crate) context: u64,
    pub(crate) kind: OpKind,
    /// Held only to keep the registration alive while the operation is in flight.
    pub(crate) _region: Option<Rc<MrInner>>,
}

pub(crate) struct Slots {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    /// Limits per direction: transmit side (send, read, write) and receive side.
    tx_limit: usize,
    rx_limit: usize,
    tx_used: usize,
    rx_used: usize,
}

impl Slots {
    pub(crate) fn new(tx_limit: usize, rx_limit: usize) -> Slots {
        let total = tx_limit + rx_limit;
        Slots {
            slots: (0..total).map(|_| None).collect(),
            free: (0..total as u32).rev().collect(),
            tx_limit,
            rx_limit,
            tx_used: 0,
            rx_used: 0,
        }
    }

    #[inline]
    pub(crate) fn has_room(&self, kind: OpKind) -> bool {
        if kind == OpKind::Recv {
            self.rx_used < self.rx_limit
        } else {
            self.tx_used < self.tx_limit
        }
    }

    pub(crate) fn limit(&self, kind: OpKind) -> usize {
        if kind == OpKind::Recv {
            self.rx_limit
        } else {
            self.tx_limit
        }
    }

    /// Takes a slot; the returned token is never 0 (0 means "no context").
    #[inline]
    pub(crate) fn take(&mut self, slot: Slot) -> Option<usize> {
        if !self.has_room(slot.kind) {
            return None;
        }
        let index = self.free.pop()? as usize;
        self.count(slot.kind, true);
        self.slots[index] = Some(slot);
        Some(index + 1)
    }

    /// Gives the slot behind `token` back; None for a token that is not in flight.
    #[inline]
    pub(crate) fn release(&mut self, token: usize) -> Option<Slot> {
        let index = token.checked_sub(1)?;
        let slot = self.slots.get_mut(index)?.take()?;
        self.free.push(index as u32);
        self.count(slot.kind, false);
        Some(slot)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.tx_used + self.rx_used
    }

    #[inline]
    fn count(&mut self, kind: OpKind, up: bool) {
        let n = if kind == OpKind::Recv {
            &mut self.rx_used
        } else {
            &mut self.tx_used
        };
        if up {
            *n += 1
        } else {
            *n -= 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(kind: OpKind, context: u64) -> Slot {
        Slot {
            context,
            kind,
            _region: None,
        }
    }

    #[test]
    fn limits_each_direction_and_reuses_slots() {
        let mut s = Slots::new(2, 1);
        let a = s.take(slot(OpKind::Send, 1)).unwrap();
        let b = s.take(slot(OpKind::Read, 2)).unwrap();
        assert!(s.take(slot(OpKind::Write, 3)).is_none(), "tx limit");
        let r = s.take(slot(OpKind::Recv, 4)).unwrap();
        assert!(s.take(slot(OpKind::Recv, 5)).is_none(), "rx limit");
        assert_eq!(s.in_flight(), 3);
        assert_eq!(s.release(a).unwrap().context, 1);
        assert!(s.release(a).is_none(), "double release");
        assert!(s.release(0).is_none() && s.release(99).is_none());
        let c = s.take(slot(OpKind::Write, 6)).unwrap();
        assert_eq!(c, a, "freed slot is reused");
        assert_eq!(s.release(b).unwrap().kind, OpKind::Read);
        assert_eq!(s.release(r).unwrap().context, 4);
        assert_eq!(s.release(c).unwrap().context, 6);
        assert_eq!(s.in_flight(), 0);
    }
}
