//! Keyed object changes applied at most once (the OSS's half of reply reconstruction).
//!
//! A client that got no answer to a write, punch or truncate sends it again, on a new
//! session, with the same [`IoKey`]. Without a memory of keys the first copy, still on
//! its way or queued behind a stalled disk, could land after the resend was answered
//! and after another client wrote the same range: old bytes over new ones. Each core
//! therefore keeps, per client, the answers of the keyed requests at or above the
//! client's floor (every xid below it was answered or given up by the client):
//!
//! - an xid below the floor is a copy from the past: refused, never applied;
//! - an xid whose answer is saved is answered from it, not applied again;
//! - an xid still running is answered "in progress", and the client asks again shortly;
//! - a new xid runs, and its answer is saved when it completes.
//!
//! A request that failed before it could change anything (its data could not be
//! pulled, its checksum was wrong, its role's lease lapsed) leaves no answer behind, so
//! the resend runs. The memory is per OSS run: after a restart the role's epoch is new
//! and every request sent under the old one is refused as stale, copies included.
//!
//! Bounds: a client's saved answers are those at or above its floor, which its own
//! requests in flight bound; past [`MAX_PER_CLIENT`] the oldest are dropped and the
//! floor raised over them (a copy of one is then refused, the safe side). Clients idle
//! for [`IDLE`] are forgotten, and past [`MAX_CLIENTS`] clients or [`MAX_SAVED`]
//! answers the longest idle one is.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use nacre_proto::object::IoKey;

/// Saved answers a client may have at one core.
pub const MAX_PER_CLIENT: usize = 4096;

/// Clients a core remembers.
pub const MAX_CLIENTS: usize = 16384;

/// Saved answers a core holds over all its clients (about 50 bytes each).
pub const MAX_SAVED: usize = 1 << 18;

/// How long a client that sends nothing is remembered: far beyond the minute a client
/// keeps retrying one request.
pub const IDLE: Duration = Duration::from_secs(600);

/// Admissions between two sweeps for idle clients.
const SWEEP_EVERY: u64 = 4096;

/// The answer a keyed request got: its status (0 or a negative errno) and, for a
/// write, the bytes written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: i32,
    pub len: u64,
}

/// What to do with a keyed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// New: apply it, then [`Replays::finish`].
    Run,
    /// Applied before: answer this, change nothing.
    Answer(Answer),
    /// The first copy is still running: answer "in progress".
    Running,
    /// A copy from before the client's floor: refuse it.
    Past,
}

#[derive(Debug)]
enum Saved {
    Running,
    Done(Answer),
}

#[derive(Debug)]
struct ClientKeys {
    floor: u64,
    saved: BTreeMap<u64, Saved>,
    seen: Instant,
}

/// One core's memory of keyed requests.
#[derive(Debug, Default)]
pub struct Replays {
    clients: HashMap<u64, ClientKeys>,
    /// Answers saved or running over all clients.
    saved: usize,
    admitted: u64,
}

impl Replays {
    /// Decides what to do with a request under `key`, received at `now`.
    pub fn admit(&mut self, key: &IoKey, now: Instant) -> Admit {
        self.admitted += 1;
        if self.admitted.is_multiple_of(SWEEP_EVERY) {
            self.sweep(now);
        }
        let known = self.clients.contains_key(&key.client);
        if (!known && self.clients.len() >= MAX_CLIENTS) || self.saved >= MAX_SAVED {
            self.forget_longest_idle();
        }
        let c = self.clients.entry(key.client).or_insert(ClientKeys {
            floor: 0,
            saved: BTreeMap::new(),
            seen: now,
        });
        c.seen = now;
        if key.floor > c.floor {
            c.floor = key.floor;
            let before = c.saved.len();
            c.saved = c.saved.split_off(&key.floor);
            self.saved -= before - c.saved.len();
        }
        if key.xid < c.floor {
            return Admit::Past;
        }
        match c.saved.get(&key.xid) {
            Some(Saved::Done(a)) => return Admit::Answer(*a),
            Some(Saved::Running) => return Admit::Running,
            None => {}
        }
        if c.saved.len() >= MAX_PER_CLIENT {
            if let Some((oldest, _)) = c.saved.pop_first() {
                c.floor = c.floor.max(oldest + 1);
                self.saved -= 1;
            }
            if key.xid < c.floor {
                return Admit::Past;
            }
        }
        c.saved.insert(key.xid, Saved::Running);
        self.saved += 1;
        Admit::Run
    }

    /// The request under `key` completed with `answer`, or (None) failed before it
    /// changed anything: a resend of it runs again.
    pub fn finish(&mut self, key: &IoKey, answer: Option<Answer>) {
        let Some(c) = self.clients.get_mut(&key.client) else {
            return;
        };
        match answer {
            Some(a) => {
                if let Some(s) = c.saved.get_mut(&key.xid) {
                    *s = Saved::Done(a);
                }
            }
            None => {
                if c.saved.remove(&key.xid).is_some() {
                    self.saved -= 1;
                }
            }
        }
    }

    /// Clients remembered, and answers saved or running over all of them.
    pub fn held(&self) -> (usize, usize) {
        (self.clients.len(), self.saved)
    }

    fn sweep(&mut self, now: Instant) {
        let saved = &mut self.saved;
        self.clients.retain(|_, c| {
            let keep = now.saturating_duration_since(c.seen) < IDLE;
            if !keep {
                *saved -= c.saved.len();
            }
            keep
        });
    }

    fn forget_longest_idle(&mut self) {
        let idle = self
            .clients
            .iter()
            .min_by_key(|(_, c)| c.seen)
            .map(|(k, _)| *k);
        if let Some(c) = idle.and_then(|k| self.clients.remove(&k)) {
            self.saved -= c.saved.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(client: u64, xid: u64, floor: u64) -> IoKey {
        IoKey { client, xid, floor }
    }

    const WROTE: Answer = Answer { status: 0, len: 5 };

    #[test]
    fn a_resend_is_answered_and_a_past_copy_refused() {
        let mut r = Replays::default();
        let now = Instant::now();
        assert_eq!(r.admit(&key(1, 10, 10), now), Admit::Run);
        // The resend while the first copy runs, then after it completed.
        assert_eq!(r.admit(&key(1, 10, 10), now), Admit::Running);
        r.finish(&key(1, 10, 10), Some(WROTE));
        assert_eq!(r.admit(&key(1, 10, 10), now), Admit::Answer(WROTE));
        // Another client's xid 10 is its own.
        assert_eq!(r.admit(&key(2, 10, 1), now), Admit::Run);
        // The client moved on (floor 11): a copy of 10 arriving now is from the past,
        // and the saved answer is gone.
        assert_eq!(r.admit(&key(1, 11, 11), now), Admit::Run);
        assert_eq!(r.admit(&key(1, 10, 10), now), Admit::Past);
        assert_eq!(r.held(), (2, 2));
    }

    #[test]
    fn a_request_that_changed_nothing_runs_again() {
        let mut r = Replays::default();
        let now = Instant::now();
        assert_eq!(r.admit(&key(1, 3, 1), now), Admit::Run);
        r.finish(&key(1, 3, 1), None);
        assert_eq!(r.admit(&key(1, 3, 1), now), Admit::Run);
        let failed = Answer {
            status: -libc::ENOSPC,
            len: 0,
        };
        r.finish(&key(1, 3, 1), Some(failed));
        assert_eq!(r.admit(&key(1, 3, 1), now), Admit::Answer(failed));
    }

    #[test]
    fn memory_is_bounded() {
        let mut r = Replays::default();
        let now = Instant::now();
        // A client that never raises its floor: the oldest answers go, and copies of
        // them are refused rather than applied again.
        for xid in 1..=(MAX_PER_CLIENT as u64 + 10) {
            assert_eq!(r.admit(&key(1, xid, 1), now), Admit::Run);
            r.finish(&key(1, xid, 1), Some(WROTE));
        }
        assert_eq!(r.held(), (1, MAX_PER_CLIENT));
        assert_eq!(r.admit(&key(1, 5, 1), now), Admit::Past);
        // Idle clients are swept; past the limit the longest idle is forgotten.
        let later = now + IDLE + Duration::from_secs(1);
        r.sweep(later);
        assert_eq!(r.held(), (0, 0));
        for c in 1..=(MAX_CLIENTS as u64 + 1) {
            r.admit(&key(c, 1, 1), now + Duration::from_nanos(c));
        }
        assert_eq!(r.held(), (MAX_CLIENTS, MAX_CLIENTS));
        assert!(!r.clients.contains_key(&1));
        // Past MAX_SAVED answers over all clients, the longest idle client goes.
        let mut r = Replays::default();
        let per = MAX_PER_CLIENT as u64;
        let clients = (MAX_SAVED as u64).div_ceil(per) + 1;
        for c in 1..=clients {
            for xid in 1..=per {
                r.admit(&key(c, xid, 1), now + Duration::from_nanos(c));
            }
        }
        assert!(r.held().1 <= MAX_SAVED + MAX_PER_CLIENT, "{:?}", r.held());
        assert!(!r.clients.contains_key(&1));
        let counted: usize = r.clients.values().map(|c| c.saved.len()).sum();
        assert_eq!(counted, r.held().1);
    }
}
