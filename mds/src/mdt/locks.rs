//! POSIX advisory byte-range locks, held in the MDS's memory so that they hold across
//! clients (fcntl F_SETLK / F_SETLKW / F_GETLK and flock through a mount).
//!
//! An owner is (client id, the client's lock owner): a mount passes the kernel's lock
//! owner, which is per process for fcntl locks and per open file for flock. Rules are
//! POSIX's: a read lock conflicts with another owner's write lock on an overlapping
//! range, a write lock with any other owner's lock; an owner's new lock replaces its
//! own locks on the range (splitting them), and unlocking a range trims them.
//! Locks are not stored: an MDS restart frees them all (clients are not told; Lustre
//! replays its locks in recovery, nacre does not yet).
//!
//! A client that holds locks renews them (a RENEW request every
//! [`lock::RENEW_EVERY`]); any lock request counts. The locks of a client not heard
//! from for [`lock::LEASE`] are taken away when another client's request conflicts
//! with one of them, as Lustre evicts a client that stops pinging: a dead mount does
//! not block everyone else forever. A live client that was silent that long (a
//! paused process, a partition) loses its locks the same way.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nacre_proto::meta::{errno, lock, LockDesc, LockRequest, Reply};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    client: u64,
    owner: u64,
    start: u64,
    end: u64,
    kind: u32,
    pid: u32,
}

impl Held {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }
}

#[derive(Debug)]
pub struct LockTable {
    by_ino: HashMap<u64, Vec<Held>>,
    /// When each client was last heard from.
    seen: HashMap<u64, Instant>,
    lease: Duration,
}

impl Default for LockTable {
    fn default() -> LockTable {
        LockTable::with_lease(lock::LEASE)
    }
}

/// Clients remembered before those holding no lock are forgotten.
const SEEN_MAX: usize = 4096;

impl LockTable {
    pub fn with_lease(lease: Duration) -> LockTable {
        LockTable {
            by_ino: HashMap::new(),
            seen: HashMap::new(),
            lease,
        }
    }

    /// Applies a lock request: Done, EAGAIN on a conflict, or for a test the first
    /// conflicting lock (kind UNLOCK if none).
    pub fn apply(&mut self, r: &LockRequest) -> Result<Reply, i32> {
        self.apply_at(r, Instant::now())
    }

    fn apply_at(&mut self, r: &LockRequest, now: Instant) -> Result<Reply, i32> {
        self.heard_from(r.client, now);
        if r.kind == lock::RENEW {
            return Ok(Reply::Done);
        }
        let conflict = loop {
            match self.conflict(r) {
                Some(h) if self.lapsed(h.client, now) => self.evict(h.client),
                other => break other,
            }
        };
        if r.test {
            let desc = conflict.map_or(
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
            );
            return Ok(Reply::Lock(desc));
        }
        if r.kind != lock::UNLOCK && conflict.is_some() {
            return Err(errno::EAGAIN);
        }
        let held = self.by_ino.entry(r.ino).or_default();
        let mut kept = Vec::with_capacity(held.len() + 2);
        for h in held.drain(..) {
            if (h.client, h.owner) != (r.client, r.owner) || !h.overlaps(r.start, r.end) {
                kept.push(h);
                continue;
            }
            if h.start < r.start {
                kept.push(Held {
                    end: r.start - 1,
                    ..h
                });
            }
            if h.end > r.end {
                kept.push(Held {
                    start: r.end + 1,
                    ..h
                });
            }
        }
        if r.kind != lock::UNLOCK {
            kept.push(Held {
                client: r.client,
                owner: r.owner,
                start: r.start,
                end: r.end,
                kind: r.kind,
                pid: r.pid,
            });
        }
        match kept.is_empty() {
            true => drop(self.by_ino.remove(&r.ino)),
            false => *held = kept,
        }
        Ok(Reply::Done)
    }

    fn heard_from(&mut self, client: u64, now: Instant) {
        self.seen.insert(client, now);
        if self.seen.len() > SEEN_MAX {
            let holders: std::collections::HashSet<u64> =
                self.by_ino.values().flatten().map(|h| h.client).collect();
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
        let mut taken = 0;
        self.by_ino.retain(|_, held| {
            let before = held.len();
            held.retain(|h| h.client != client);
            taken += before - held.len();
            !held.is_empty()
        });
        self.seen.remove(&client);
        tracing::warn!(
            "client {client:#x} silent for over {:?}: its {taken} lock(s) taken away",
            self.lease
        );
    }

    fn conflict(&self, r: &LockRequest) -> Option<Held> {
        if r.kind == lock::UNLOCK || r.kind == lock::RENEW {
            return None;
        }
        self.by_ino.get(&r.ino)?.iter().copied().find(|h| {
            (h.client, h.owner) != (r.client, r.owner)
                && h.overlaps(r.start, r.end)
                && (r.kind == lock::WRITE || h.kind == lock::WRITE)
        })
    }
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
        assert!(t.by_ino.is_empty(), "nothing left behind");
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
        let mut t = LockTable::with_lease(lease);
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
}
