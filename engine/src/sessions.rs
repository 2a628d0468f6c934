//! The HELLO sessions of one core: which peers may send requests, under which ids.
//!
//! A client's first message is HELLO with its fabric name (RDM receives do not say who
//! sent them); the core puts the name in its address vector and answers a session id
//! that every later header carries. A session nobody has used for the core's idle
//! time is reaped (`Core::reap_sessions`): its slot and address-vector entry go back,
//! so a server that outlives many clients (every job, every tool run opens endpoints)
//! keeps serving new ones. An id is a slot number (low 16 bits, from 1) and the slot's
//! generation (high 16 bits), which a reaped slot advances: a client still holding a
//! reaped id is not taken for the slot's next owner. Clients say HELLO again after half
//! that idle time without a request (`RpcConfig::session_refresh`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nacre_fabric::PeerAddr;
use nacre_proto::packed::{session, PackError};

/// Sessions one core holds at most: a slot number travels in 16 bits of an id.
pub const MAX_SESSIONS: usize = u16::MAX as usize;

const _: () = assert!(MAX_SESSIONS as u64 <= session::ID.fields()[0].max());

struct Session {
    /// Its id, encoded once when the session began.
    id: u32,
    peer: PeerAddr,
    name: Vec<u8>,
    /// When a message last came on this session (the core's coarse clock).
    heard: Instant,
}

pub(crate) struct Sessions {
    slots: Vec<Option<Session>>,
    /// Each slot's generation, kept when the slot is free.
    gens: Vec<u16>,
    free: Vec<usize>,
    by_name: HashMap<Vec<u8>, usize>,
    max: usize,
}

impl Sessions {
    pub fn new(max: usize) -> Sessions {
        Sessions {
            slots: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            by_name: HashMap::new(),
            max: max.clamp(1, MAX_SESSIONS),
        }
    }

    /// The id of `slot` under its current generation (through
    /// [`nacre_proto::packed::session`]).
    fn id(&self, slot: usize) -> Result<u32, PackError> {
        let word = session::ID.pack([slot as u64 + 1, self.gens[slot].into()])?;
        // The layout is 32 bits wide: an encoding always fits.
        Ok(word as u32)
    }

    fn slot(&self, id: u32) -> Option<usize> {
        let [slot, gen] = session::ID.unpack(id.into()).ok()?;
        let slot = (slot as usize).checked_sub(1)?;
        let live = self.slots.get(slot)?.is_some();
        (live && u64::from(self.gens[slot]) == gen).then_some(slot)
    }

    /// The peer behind session `id`, if it is live.
    pub fn peer(&self, id: u32) -> Option<PeerAddr> {
        let slot = self.slot(id)?;
        self.slots[slot].as_ref().map(|s| s.peer)
    }

    /// The peer behind session `id`, noting that it was heard from at `now`.
    pub fn heard(&mut self, id: u32, now: Instant) -> Option<PeerAddr> {
        let slot = self.slot(id)?;
        let s = self.slots[slot].as_mut()?;
        s.heard = now;
        Some(s.peer)
    }

    /// The live session of the client with fabric name `name` (a repeated HELLO).
    pub fn find(&mut self, name: &[u8], now: Instant) -> Option<(u32, PeerAddr)> {
        let slot = *self.by_name.get(name)?;
        let id = self.slots[slot].as_ref()?.id;
        Some((id, self.heard(id, now)?))
    }

    /// Whether another session fits.
    pub fn full(&self) -> bool {
        self.by_name.len() >= self.max
    }

    /// A new session for `peer` (the caller checked [`Sessions::full`]). A slot whose
    /// id cannot be encoded (more slots than ids hold: a bug, as `max` is bounded) is
    /// an error, and no session begins.
    pub fn add(&mut self, peer: PeerAddr, name: &[u8], now: Instant) -> Result<u32, PackError> {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.gens.push(0);
            self.slots.len() - 1
        });
        let id = match self.id(slot) {
            Ok(id) => id,
            Err(e) => {
                self.free.push(slot);
                return Err(e);
            }
        };
        self.slots[slot] = Some(Session {
            id,
            peer,
            name: name.to_vec(),
            heard: now,
        });
        self.by_name.insert(name.to_vec(), slot);
        Ok(id)
    }

    /// Sessions not heard from for longer than `idle`, or whose peer process has exited
    /// (`gone` says so of a peer's fabric name), with their peers.
    pub fn reapable(
        &self,
        now: Instant,
        idle: Duration,
        gone: impl Fn(&[u8]) -> bool,
    ) -> Vec<(u32, PeerAddr)> {
        let reapable =
            |s: &&Session| now.saturating_duration_since(s.heard) > idle || gone(&s.name);
        self.slots
            .iter()
            .flatten()
            .filter(reapable)
            .map(|s| (s.id, s.peer))
            .collect()
    }

    /// Ends session `id`: its slot is free, under the next generation.
    pub fn remove(&mut self, id: u32) -> Option<PeerAddr> {
        let slot = self.slot(id)?;
        let s = self.slots[slot].take()?;
        self.by_name.remove(&s.name);
        self.gens[slot] = self.gens[slot].wrapping_add(1);
        self.free.push(slot);
        Some(s.peer)
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reaped_id_never_names_the_slots_next_owner() {
        let t0 = Instant::now();
        let mut s = Sessions::new(2);
        let a = s.add(PeerAddr::from_index(10), b"a", t0).unwrap();
        let b = s.add(PeerAddr::from_index(11), b"b", t0).unwrap();
        assert!(s.full());
        assert_eq!((a, b), (1, 2));
        assert_eq!(s.find(b"a", t0), Some((a, PeerAddr::from_index(10))));
        let later = t0 + Duration::from_secs(5);
        assert_eq!(s.heard(b, later), Some(PeerAddr::from_index(11)));
        assert_eq!(
            s.reapable(later, Duration::from_secs(1), |_| false),
            vec![(a, PeerAddr::from_index(10))]
        );
        assert_eq!(s.remove(a), Some(PeerAddr::from_index(10)));
        assert_eq!((s.peer(a), s.find(b"a", later), s.len()), (None, None, 1));
        let c = s.add(PeerAddr::from_index(12), b"c", later).unwrap();
        assert_eq!(c, 1 << 16 | 1, "the slot again, a new generation");
        assert_eq!(
            (s.peer(a), s.peer(c)),
            (None, Some(PeerAddr::from_index(12)))
        );
        assert_eq!(s.peer(0), None);
        assert_eq!(s.peer(3), None);
        assert_eq!(s.remove(a), None);
    }

    #[test]
    fn a_slot_past_what_an_id_holds_is_refused() {
        let t0 = Instant::now();
        let mut s = Sessions::new(MAX_SESSIONS);
        for i in 0..MAX_SESSIONS {
            let id = s.add(PeerAddr::from_index(i as u32), &i.to_le_bytes(), t0);
            assert_eq!(id, Ok(i as u32 + 1));
        }
        let over = s.add(PeerAddr::from_index(0), b"one too many", t0);
        assert!(matches!(
            over,
            Err(PackError::OutOfRange { max: 65535, .. })
        ));
        assert_eq!(s.len(), MAX_SESSIONS);
    }
}
