//! The HELLO sessions of one core: which peers may send requests, under which ids.
//!
//! A client's first message is HELLO with its fabric name (RDM receives do not say who
//! sent them); the core puts the name in its address vector and answers a session id
//! that every later header carries. A session nobody has used for the core's idle
//! time is reaped (`Core::reap_sessions`): its slot and address-vector entry go back,
//! so a server that outlives many clients (every job, every tool run opens endpoints)
//! keeps serving new ones. An id is a slot number (low 16 bits, from 1) and a random tag
//! (high 16 bits), drawn anew each time the slot is given (never the tag it had): a
//! client still holding a reaped id is not taken for the slot's next owner, and ids
//! cannot be counted through. An id is only good from the peer it was issued to: every
//! message's source address (FI_SOURCE) must be the session's peer. Clients say HELLO
//! again after half that idle time without a request (`RpcConfig::session_refresh`).
//! A client whose endpoint closes says BYE: its session is reaped at the next look, not
//! at the idle time (providers other than shm cannot tell that a peer process exited).
//!
//! A session also keeps who its client proved to be (the principal of its key): the
//! services ask for it (the MDS maps identities with it, the OSS binds capabilities).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nacre_auth::Principal;
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
    principal: Principal,
    /// Its client said BYE: reaped at the next look.
    leaving: bool,
}

pub(crate) struct Sessions {
    slots: Vec<Option<Session>>,
    /// Each slot's tag (the high half of its id), kept when the slot is free.
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

    /// The peer behind session `id`, noting that it was heard from at `now`, if the
    /// message came from that peer (`source`, None where the provider could not say:
    /// never so for a peer in the address vector).
    pub fn heard(&mut self, id: u32, source: Option<PeerAddr>, now: Instant) -> Option<PeerAddr> {
        let slot = self.slot(id)?;
        let s = self.slots[slot].as_mut()?;
        if source != Some(s.peer) {
            return None;
        }
        s.heard = now;
        Some(s.peer)
    }

    /// Who the client of session `id` proved to be.
    pub fn principal(&self, id: u32) -> Option<&Principal> {
        let slot = self.slot(id)?;
        self.slots[slot].as_ref().map(|s| &s.principal)
    }

    /// The live session of the client with fabric name `name` (a repeated HELLO),
    /// which now belongs to `principal` (the one that just proved itself).
    pub fn find(
        &mut self,
        name: &[u8],
        principal: &Principal,
        now: Instant,
    ) -> Option<(u32, PeerAddr)> {
        let slot = *self.by_name.get(name)?;
        let s = self.slots[slot].as_mut()?;
        s.heard = now;
        s.leaving = false;
        if s.principal != *principal {
            s.principal = principal.clone();
        }
        Some((s.id, s.peer))
    }

    /// Whether a live session has the fabric name `name`.
    pub fn has_name(&self, name: &[u8]) -> bool {
        self.by_name.contains_key(name)
    }

    /// Whether another session fits.
    pub fn full(&self) -> bool {
        self.by_name.len() >= self.max
    }

    /// A new session for `peer` (the caller checked [`Sessions::full`]). A slot whose
    /// id cannot be encoded (more slots than ids hold: a bug, as `max` is bounded) is
    /// an error, and no session begins.
    pub fn add(
        &mut self,
        peer: PeerAddr,
        name: &[u8],
        principal: Principal,
        now: Instant,
    ) -> Result<u32, PackError> {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.gens.push(0);
            self.slots.len() - 1
        });
        self.gens[slot] = fresh_tag(self.gens[slot]);
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
            principal,
            leaving: false,
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
        let reapable = |s: &&Session| {
            s.leaving || now.saturating_duration_since(s.heard) > idle || gone(&s.name)
        };
        self.slots
            .iter()
            .flatten()
            .filter(reapable)
            .map(|s| (s.id, s.peer))
            .collect()
    }

    /// Session `id`'s client said BYE (the caller checked the message's source): it is
    /// reaped at the next look, once nothing of the core's is under way towards it.
    pub fn leave(&mut self, id: u32) {
        if let Some(slot) = self.slot(id) {
            if let Some(s) = self.slots[slot].as_mut() {
                s.leaving = true;
            }
        }
    }

    /// Ends session `id`: its slot is free, under the next generation.
    pub fn remove(&mut self, id: u32) -> Option<PeerAddr> {
        let slot = self.slot(id)?;
        let s = self.slots[slot].take()?;
        self.by_name.remove(&s.name);
        self.free.push(slot);
        Some(s.peer)
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }
}

/// A random tag other than `old`.
fn fresh_tag(old: u16) -> u16 {
    let t = nacre_auth::random_u64() as u16;
    match t == old {
        true => t.wrapping_add(1),
        false => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FS: Principal = Principal::FileSystem;

    #[test]
    fn a_reaped_id_never_names_the_slots_next_owner() {
        let t0 = Instant::now();
        let mut s = Sessions::new(2);
        let (pa, pb, pc) = (
            PeerAddr::from_index(10),
            PeerAddr::from_index(11),
            PeerAddr::from_index(12),
        );
        let a = s.add(pa, b"a", FS, t0).unwrap();
        let b = s.add(pb, b"b", FS, t0).unwrap();
        assert!(s.full());
        assert_eq!(
            (a & 0xffff, b & 0xffff),
            (1, 2),
            "slots from 1, random tags"
        );
        assert_eq!(s.find(b"a", &FS, t0), Some((a, pa)));
        let later = t0 + Duration::from_secs(5);
        assert_eq!(s.heard(b, Some(pb), later), Some(pb));
        assert_eq!(
            s.reapable(later, Duration::from_secs(1), |_| false),
            vec![(a, pa)]
        );
        assert_eq!(s.remove(a), Some(pa));
        assert_eq!(
            (s.peer(a), s.find(b"a", &FS, later), s.len()),
            (None, None, 1)
        );
        let c = s.add(pc, b"c", FS, later).unwrap();
        assert_eq!(c & 0xffff, 1, "the slot again");
        assert_ne!(c, a, "under another tag");
        assert_eq!((s.peer(a), s.peer(c)), (None, Some(pc)));
        assert_eq!(s.peer(0), None);
        assert_eq!(s.peer(3), None);
        assert_eq!(s.remove(a), None);
    }

    #[test]
    fn an_id_is_good_only_from_its_peer_and_says_who_its_client_is() {
        let t0 = Instant::now();
        let mut s = Sessions::new(4);
        let bob = Principal::Client {
            name: "bob".into(),
            map: None,
        };
        let id = s
            .add(PeerAddr::from_index(3), b"n", bob.clone(), t0)
            .unwrap();
        assert_eq!(
            s.heard(id, Some(PeerAddr::from_index(4)), t0),
            None,
            "forged"
        );
        assert_eq!(s.heard(id, None, t0), None, "from an unknown address");
        assert_eq!(
            s.heard(id ^ 0x1_0000, Some(PeerAddr::from_index(3)), t0),
            None
        );
        assert_eq!(
            s.heard(id, Some(PeerAddr::from_index(3)), t0),
            Some(PeerAddr::from_index(3))
        );
        assert_eq!(s.principal(id), Some(&bob));
        assert_eq!(s.find(b"n", &FS, t0).map(|f| f.0), Some(id));
        assert_eq!(s.principal(id), Some(&FS), "the last to prove itself");
    }

    #[test]
    fn a_slot_past_what_an_id_holds_is_refused() {
        let t0 = Instant::now();
        let mut s = Sessions::new(MAX_SESSIONS);
        for i in 0..MAX_SESSIONS {
            let id = s.add(PeerAddr::from_index(i as u32), &i.to_le_bytes(), FS, t0);
            assert_eq!(id.map(|id| id & 0xffff), Ok(i as u32 + 1));
        }
        let over = s.add(PeerAddr::from_index(0), b"one too many", FS, t0);
        assert!(matches!(
            over,
            Err(PackError::OutOfRange { max: 65535, .. })
        ));
        assert_eq!(s.len(), MAX_SESSIONS);
    }
}
