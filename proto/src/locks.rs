//! POSIX advisory byte-range locks as a set, under POSIX's rules: a read lock
//! conflicts with another owner's write lock on an overlapping range, a write lock with
//! any other owner's lock; an owner's new lock replaces its own locks on the range
//! (splitting them), and unlocking a range trims them. The MDS keeps every client's
//! locks in one; a client keeps its own in another, to take them again after an MDS
//! restart.

use std::collections::HashMap;

use crate::meta::{lock, LockRequest};

/// One lock: `owner` of `client` holds `kind` on bytes `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub client: u64,
    pub owner: u64,
    pub start: u64,
    pub end: u64,
    pub kind: u32,
    pub pid: u32,
}

impl Held {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }
}

/// Locks by inode.
#[derive(Debug, Default)]
pub struct LockSet {
    by_ino: HashMap<u64, Vec<Held>>,
}

impl LockSet {
    pub fn is_empty(&self) -> bool {
        self.by_ino.is_empty()
    }

    /// The first lock of another owner that `r` (a READ or WRITE) conflicts with.
    pub fn conflict(&self, r: &LockRequest) -> Option<Held> {
        if r.kind != lock::READ && r.kind != lock::WRITE {
            return None;
        }
        self.by_ino.get(&r.ino)?.iter().copied().find(|h| {
            (h.client, h.owner) != (r.client, r.owner)
                && h.overlaps(r.start, r.end)
                && (r.kind == lock::WRITE || h.kind == lock::WRITE)
        })
    }

    /// Applies READ, WRITE or UNLOCK `r` to its owner's locks, without a conflict
    /// check (the caller made it).
    pub fn set(&mut self, r: &LockRequest) {
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
        if r.kind == lock::READ || r.kind == lock::WRITE {
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
    }

    /// Drops every lock of `client`; returns how many.
    pub fn remove_client(&mut self, client: u64) -> usize {
        let mut taken = 0;
        self.by_ino.retain(|_, held| {
            let before = held.len();
            held.retain(|h| h.client != client);
            taken += before - held.len();
            !held.is_empty()
        });
        taken
    }

    /// Whether `client` holds any lock.
    pub fn holds_any(&self, client: u64) -> bool {
        self.iter().any(|(_, h)| h.client == client)
    }

    /// Every lock, with its inode.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Held)> {
        self.by_ino
            .iter()
            .flat_map(|(ino, held)| held.iter().map(move |h| (*ino, h)))
    }

    /// The request that takes `h` on `ino` again.
    pub fn request_for(ino: u64, h: &Held) -> LockRequest {
        LockRequest {
            ino,
            client: h.client,
            owner: h.owner,
            start: h.start,
            end: h.end,
            kind: h.kind,
            pid: h.pid,
            test: false,
            replay: false,
            wait: false,
        }
    }
}
