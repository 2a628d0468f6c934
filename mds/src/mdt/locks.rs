//! POSIX advisory byte-range locks, held in the MDS's memory so that they hold across
//! clients (fcntl F_SETLK / F_SETLKW / F_GETLK and flock through a mount).
//!
//! An owner is (client id, the client's lock owner): a mount passes the kernel's lock
//! owner, which is per process for fcntl locks and per open file for flock. The rules
//! are POSIX's ([`nacre_proto::locks::LockSet`]).
//!
//! A client that holds locks renews them (a RENEW request every
//! [`lock::RENEW_EVERY`]); any lock request counts. The locks of a client not heard
//! from for [`lock::LEASE`] are taken away when another client's request conflicts
//! with one of them, as Lustre evicts a client that stops pinging: a dead mount does
//! not block everyone else forever. A live client that was silent that long (a
//! paused process, a partition) loses its locks the same way.
//!
//! Locks are not stored. An MDS that served before starts in recovery for
//! [`lock::RECOVERY`]:
//! a client's renewal finds its locks unknown (ENOLCK) and the client takes them
//! again (`replay`), while new locks wait (EAGAIN) until the window closes, as
//! Lustre's clients replay their locks in its recovery window. A replay after the
//! window is refused (ENOLCK): that lock was lost, and the client is told.
//!
//! Deadlocks: an owner that waits (F_SETLKW) asks again after each EAGAIN with the
//! `wait` flag, and the table remembers whom it waits for (for [`WAIT_FRESH`] after
//! its last try). A waiter whose lock is held by an owner that waits, through any
//! chain of waiters, for the asker itself gets EDEADLK instead of waiting forever, as
//! Linux's own POSIX lock deadlock detection answers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nacre_proto::locks::{Held, LockSet};
use nacre_proto::meta::{errno, lock, LockDesc, LockRequest, Reply};

/// An owner: (client, the client's lock owner).
type Owner = (u64, u64);

/// How long a waiter's last try says it still waits.
pub const WAIT_FRESH: Duration = Duration::from_secs(2);

/// Longest chain of waiters followed when looking for a deadlock.
const WAIT_CHAIN_MAX: usize = 64;

#[derive(Debug)]
pub struct LockTable {
    locks: LockSet,
    /// Whom each waiting owner waits for, as of its last try.
    waits: HashMap<Owner, (Owner, Instant)>,
    /// When each client was last heard from.
    seen: HashMap<u64, Instant>,
    lease: Duration,
    /// Until when replays are taken and new locks wait (after a restart).
    recovering_until: Option<Instant>,
}

impl Default for LockTable {
    fn default() -> LockTable {
        LockTable::with_lease(lock::LEASE, None)
    }
}

/// Clients remembered before those holding no lock are forgotten.
const SEEN_MAX: usize = 4096;

impl LockTable {
    /// A table whose clients keep their locks for `lease` without renewing; with
    /// `recovery`, a window for clients' replays (new locks wait until it closes).
    pub fn with_lease(lease: Duration, recovery: Option<Duration>) -> LockTable {
        LockTable {
            locks: LockSet::default(),
            waits: HashMap::new(),
            seen: HashMap::new(),
            lease,
            recovering_until: recovery.map(|r| Instant::now() + r),
        }
    }

    /// Applies a lock request: Done, EAGAIN on a conflict (or for a new lock during
    /// recovery), ENOLCK for a renewal of locks this MDS does not hold or a replay
    /// after recovery, or for a test the first conflicting lock (kind UNLOCK if none).
    pub fn apply(&mut self, r: &LockRequest) -> Result<Reply, i32> {
        self.apply_at(r, Instant::now())
    }

    fn apply_at(&mut self, r: &LockRequest, now: Instant) -> Result<Reply, i32> {
        self.heard_from(r.client, now);
        let recovering = self.recovering_until.is_some_and(|t| now < t);
        if !recovering {
            self.recovering_until = None;
        }
        if r.kind == lock::RENEW {
            return match self.locks.holds_any(r.client) {
                true => Ok(Reply::Done),
                false => Err(errno::ENOLCK),
            };
        }
        let acquire = r.kind == lock::READ || r.kind == lock::WRITE;
        match (r.replay, recovering) {
            (true, false) => return Err(errno::ENOLCK),
            (false, true) if acquire && !r.test => return Err(errno::EAGAIN),
            _ => {}
        }
        let conflict = loop {
            match self.locks.conflict(r) {
                Some(h) if self.lapsed(h.client, now) => self.evict(h.client),
                other => break other,
            }
        };
        if r.test {
            return Ok(Reply::Lock(describe(conflict)));
        }
        let me = (r.client, r.owner);
        if let Some(h) = conflict {
            if !r.wait {
                return Err(errno::EAGAIN);
            }
            if self.waits_for(h.client, h.owner, me, now) {
                self.waits.remove(&me);
                return Err(errno::EDEADLK);
            }
            self.waits.insert(me, ((h.client, h.owner), now));
            return Err(errno::EAGAIN);
        }
        self.waits.remove(&me);
        self.locks.set(r);
        Ok(Reply::Done)
    }

    /// Whether owner `owner` of `client` waits, through a chain of fresh waits, for
    /// `target` (or is `target`).
    fn waits_for(&mut self, client: u64, owner: u64, target: Owner, now: Instant) -> bool {
        self.waits
            .retain(|_, (_, at)| now.saturating_duration_since(*at) <= WAIT_FRESH);
        let mut at = (client, owner);
        for _ in 0..WAIT_CHAIN_MAX {
            if at == target {
                return true;
            }
            match self.waits.get(&at) {
                Some((next, _)) => at = *next,
                None => return false,
            }
        }
        false
    }

    fn heard_from(&mut self, client: u64, now: Instant) {
        self.seen.insert(client, now);
        if self.seen.len() > SEEN_MAX {
            let holders: std::collections::HashSet<u64> =
                self.locks.iter().map(|(_, h)| h.client).collect();
            self.seen.retain(|c, _| holders.contains(c) || *c == client);
        }
    }

    fn lapsed(&self, client: u64, now: Instant) -> bool {
        self.seen
            .get(&client)
            .is_none_or(|at| now.saturating_duration_since(*at) > self.lease)
    }

    /// Takes every lock of `client` away: it has not been heard from for a lease.
    fn evict(&mut self, client: u64) {
        let taken = self.locks.remove_client(client);
        self.seen.remove(&client);
        self.waits.retain(|(c, _), _| *c != client);
        tracing::warn!(
            "client {client:#x} silent for over {:?}: its {taken} lock(s) taken away",
            self.lease
        );
    }
}

/// F_GETLK's answer: the conflicting lock, or kind UNLOCK.
fn describe(conflict: Option<Held>) -> LockDesc {
    conflict.map_or(
        LockDesc {
            kind: lock::UNLOCK,
            ..Default::default()
        },
        |h| LockDesc {
            kind: h.kind,
            start: h.start,
            end: h.end,
            pid: h.pid,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(owner: u64, start: u64, end: u64, kind: u32) -> LockRequest {
        LockRequest {
            ino: 5,
            client: 1,
            owner,
            start,
            end,
            kind,
            pid: owner as u32,
            test: false,
            replay: false,
            wait: false,
        }
    }

    fn test(t: &mut LockTable, owner: u64, start: u64, end: u64, kind: u32) -> LockDesc {
        match t.apply(&LockRequest {
            test: true,
            ..req(owner, start, end, kind)
        }) {
            Ok(Reply::Lock(d)) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn posix_rules() {
        let mut t = LockTable::default();
        t.apply(&req(1, 0, 99, lock::READ)).unwrap();
        // Readers share; a writer waits for them.
        t.apply(&req(2, 50, 149, lock::READ)).unwrap();
        assert_eq!(t.apply(&req(3, 0, 0, lock::WRITE)), Err(errno::EAGAIN));
        assert_eq!(test(&mut t, 3, 120, 200, lock::WRITE).pid, 2);
        // Another client's owner with the same number is another owner.
        let other = LockRequest {
            client: 2,
            ..req(1, 0, 0, lock::WRITE)
        };
        assert_eq!(t.apply(&other), Err(errno::EAGAIN));
        // Owner 1 upgrades its own range where nobody else holds it.
        t.apply(&req(1, 0, 49, lock::WRITE)).unwrap();
        assert_eq!(test(&mut t, 2, 0, 10, lock::READ).kind, lock::WRITE);
        // Unlocking the middle of a range splits it.
        t.apply(&req(2, 0, u64::MAX, lock::UNLOCK)).unwrap();
        t.apply(&req(1, 20, 29, lock::UNLOCK)).unwrap();
        assert_eq!(test(&mut t, 3, 20, 29, lock::WRITE).kind, lock::UNLOCK);
        assert_eq!(test(&mut t, 3, 19, 19, lock::READ).kind, lock::WRITE);
        assert_eq!(test(&mut t, 3, 30, 30, lock::READ).kind, lock::WRITE);
        assert_eq!(test(&mut t, 3, 60, 60, lock::WRITE).kind, lock::READ);
        // To the end of the file, whatever its length.
        t.apply(&req(1, 0, u64::MAX, lock::UNLOCK)).unwrap();
        assert!(t.locks.is_empty(), "nothing left behind");
        t.apply(&req(4, 1000, u64::MAX, lock::WRITE)).unwrap();
        assert_eq!(
            t.apply(&req(5, u64::MAX - 1, u64::MAX, lock::READ)),
            Err(errno::EAGAIN)
        );
        t.apply(&req(5, 0, 999, lock::WRITE)).unwrap();
    }

    #[test]
    fn a_silent_clients_locks_go_when_another_needs_them() {
        let lease = Duration::from_secs(10);
        let mut t = LockTable::with_lease(lease, None);
        let t0 = Instant::now();
        let of = |client: u64, r: LockRequest| LockRequest { client, ..r };
        t.apply_at(&of(1, req(1, 0, 9, lock::WRITE)), t0).unwrap();
        t.apply_at(
            &of(
                1,
                LockRequest {
                    ino: 6,
                    ..req(1, 0, 9, lock::READ)
                },
            ),
            t0,
        )
        .unwrap();
        // Renewed, client 1 keeps its locks past the first lease.
        let renew = of(1, req(0, 0, 0, lock::RENEW));
        t.apply_at(&renew, t0 + lease / 2).unwrap();
        let want = of(2, req(7, 0, 0, lock::WRITE));
        assert_eq!(t.apply_at(&want, t0 + lease), Err(errno::EAGAIN));
        // Silent past a lease since its last renewal: its locks go, on every inode.
        assert_eq!(
            t.apply_at(&want, t0 + lease * 3 / 2 + lease / 10),
            Ok(Reply::Done)
        );
        let other_ino = of(
            2,
            LockRequest {
                ino: 6,
                ..req(7, 0, 0, lock::WRITE)
            },
        );
        assert_eq!(t.apply_at(&other_ino, t0 + lease * 2), Ok(Reply::Done));
        // Client 1, back, waits for client 2, which it now conflicts with.
        let back = of(1, req(1, 0, 0, lock::WRITE));
        assert_eq!(t.apply_at(&back, t0 + lease * 2), Err(errno::EAGAIN));
    }

    #[test]
    fn after_a_restart_clients_replay_their_locks_before_new_ones() {
        let lease = Duration::from_secs(10);
        let mut t = LockTable::with_lease(lease, Some(lease));
        let t0 = Instant::now();
        let of = |client: u64, r: LockRequest| LockRequest { client, ..r };
        // Client 1's renewal finds its locks unknown; it replays them.
        let renew = of(1, req(0, 0, 0, lock::RENEW));
        assert_eq!(t.apply_at(&renew, t0), Err(errno::ENOLCK));
        let mine = of(1, req(1, 0, 9, lock::WRITE));
        let replay = LockRequest {
            replay: true,
            ..mine
        };
        // A new lock waits for the replays, even one that conflicts with nothing yet.
        let theirs = of(2, req(7, 0, 0, lock::WRITE));
        assert_eq!(t.apply_at(&theirs, t0), Err(errno::EAGAIN));
        assert_eq!(t.apply_at(&replay, t0 + lease / 10), Ok(Reply::Done));
        assert_eq!(t.apply_at(&renew, t0 + lease / 5), Ok(Reply::Done));
        // After the window the replayed lock holds; a late replay is refused.
        assert_eq!(t.apply_at(&theirs, t0 + lease), Err(errno::EAGAIN));
        let late = LockRequest {
            replay: true,
            ..of(3, req(9, 50, 59, lock::READ))
        };
        assert_eq!(t.apply_at(&late, t0 + lease), Err(errno::ENOLCK));
        assert_eq!(
            t.apply_at(&of(2, req(7, 20, 29, lock::WRITE)), t0 + lease),
            Ok(Reply::Done)
        );
    }

    #[test]
    fn two_owners_waiting_for_each_other_is_a_deadlock() {
        let mut t = LockTable::default();
        let now = Instant::now();
        let waiting = |r: LockRequest| LockRequest { wait: true, ..r };
        let (one, two) = (req(1, 0, 0, lock::WRITE), req(2, 10, 10, lock::WRITE));
        t.apply_at(&one, now).unwrap();
        t.apply_at(&two, now).unwrap();
        // Owner 1 waits for byte 10 (owner 2's), trying again and again.
        let one_waits = waiting(req(1, 10, 10, lock::WRITE));
        assert_eq!(t.apply_at(&one_waits, now), Err(errno::EAGAIN));
        // Owner 3 waiting for owner 1 is no deadlock.
        let three_waits = waiting(req(3, 0, 0, lock::READ));
        assert_eq!(t.apply_at(&three_waits, now), Err(errno::EAGAIN));
        // Owner 2 waiting for byte 0 (owner 1's) closes the circle.
        let two_waits = waiting(req(2, 0, 0, lock::WRITE));
        assert_eq!(t.apply_at(&two_waits, now), Err(errno::EDEADLK));
        // Without the wait flag (F_SETLK) it is only busy.
        assert_eq!(
            t.apply_at(&req(2, 0, 0, lock::WRITE), now),
            Err(errno::EAGAIN)
        );
        // A waiter that stopped asking is no longer waiting.
        let later = now + WAIT_FRESH * 2;
        assert_eq!(t.apply_at(&two_waits, later), Err(errno::EAGAIN));
        // Owner 2 gives byte 10 up: owner 1's next try gets it.
        t.apply_at(&req(2, 10, 10, lock::UNLOCK), later).unwrap();
        assert_eq!(t.apply_at(&one_waits, later), Ok(Reply::Done));
    }
}
