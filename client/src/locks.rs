//! The POSIX locks this client holds at the MDS, kept here as well: renewed while
//! any is held (the MDS takes away the locks of a client it has not heard from for a
//! lease; the renewals run on the client's keeper, `crate::keeper`), and taken again
//! after an MDS restart, whose memory of them is gone (the MDS answers the renewal
//! with ENOLCK and waits a lease for the replays).

use std::sync::Mutex;

use nacre_proto::locks::LockSet;
use nacre_proto::meta::{errno, lock, LockRequest, Reply, Request};

use crate::fs::{errno as errno_of, Client};

/// This client's locks as the MDS granted them.
#[derive(Default)]
pub struct HeldLocks {
    set: Mutex<LockSet>,
}

impl HeldLocks {
    fn set(&self) -> std::sync::MutexGuard<'_, LockSet> {
        self.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a lock request the MDS granted.
    pub fn granted(&self, r: &LockRequest) {
        if r.test || !matches!(r.kind, lock::READ | lock::WRITE | lock::UNLOCK) {
            return;
        }
        self.set().set(r);
    }

    pub fn is_empty(&self) -> bool {
        self.set().is_empty()
    }
}

/// Renews the client's locks (a no-op with none held).
pub fn renew(client: &Client) {
    let held = client.held_locks();
    if held.set().is_empty() {
        return;
    }
    let renewal = LockRequest {
        ino: 0,
        client: client.client_id(),
        owner: 0,
        start: 0,
        end: 0,
        kind: lock::RENEW,
        pid: 0,
        test: false,
        replay: false,
        wait: false,
    };
    match client.call_within(&Request::Lock(renewal), lock::RENEW_EVERY) {
        Ok(_) => {}
        Err(e) if errno_of(&e) == errno::ENOLCK => replay(client, held),
        Err(e) => tracing::warn!("renewing this client's locks: {e}"),
    }
}

/// Takes every held lock again: the MDS no longer knows them (it restarted, or took
/// them away). One it refuses is lost: dropped here, and said.
fn replay(client: &Client, held: &HeldLocks) {
    let locks: Vec<LockRequest> = held
        .set()
        .iter()
        .map(|(ino, h)| LockRequest {
            replay: true,
            ..LockSet::request_for(ino, h)
        })
        .collect();
    tracing::info!(
        "the MDS lost this client's locks: replaying {}",
        locks.len()
    );
    for r in locks {
        match client.call_within(&Request::Lock(r), lock::RENEW_EVERY) {
            Ok(Reply::Done) => {}
            other => {
                tracing::error!(
                    "lock on inode {} bytes {}..={} (owner {:#x}) lost: {other:?}",
                    r.ino,
                    r.start,
                    r.end,
                    r.owner
                );
                held.set().set(&LockRequest {
                    kind: lock::UNLOCK,
                    replay: false,
                    ..r
                });
            }
        }
    }
}
