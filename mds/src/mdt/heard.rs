//! When each client was last heard from, for the open lease ([`OPEN_LEASE`]): noted by
//! every submitter (any engine core) from what a request says of its sender, read by
//! the committer when it evicts silent clients' handles.
//!
//! [`OPEN_LEASE`]: nacre_proto::meta::OPEN_LEASE

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nacre_proto::meta::{Head, Request};

#[derive(Debug, Default)]
pub struct Heard {
    at: Mutex<HashMap<u64, Instant>>,
}

impl Heard {
    /// Notes the sender of `req`, if it says who it is: its replay key's client, a
    /// lock request's, a ping's or an open replay's.
    pub fn note_request(&self, head: &Head, req: &Request) {
        let client = match req {
            Request::Ping { client } | Request::Reopen { client, .. } => *client,
            Request::Lock(l) => l.client,
            _ => head.replay.map_or(0, |k| k.client),
        };
        if client != 0 {
            self.note(client, Instant::now());
        }
    }

    pub fn note(&self, client: u64, now: Instant) {
        self.map().insert(client, now);
    }

    /// Whether `client` has not been heard from for `lease` (or at all).
    pub fn silent(&self, client: u64, lease: Duration, now: Instant) -> bool {
        self.map()
            .get(&client)
            .is_none_or(|at| now.saturating_duration_since(*at) > lease)
    }

    /// Forgets the clients silent for `lease` that `holds` says hold nothing: the map
    /// stays as large as the clients of one lease.
    pub fn forget_silent(&self, lease: Duration, now: Instant, holds: impl Fn(u64) -> bool) {
        self.map()
            .retain(|c, at| now.saturating_duration_since(*at) <= lease || holds(*c));
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        self.at.lock().unwrap_or_else(|p| p.into_inner())
    }
}
