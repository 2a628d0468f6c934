//! The capabilities a client holds: for each object (OST, object id), the one the MDS
//! last granted with the file's layout, and the file it belongs to (to renew it). Shared
//! by every endpoint of a client (its threads' connections): the namespace call that
//! receives a layout grants, every object request attaches.
//!
//! Bounded: past [`MAX_HELD`] objects, expired ones are dropped, then (should that not
//! be enough) all; a request whose capability was dropped is refused by its OSS
//! (EACCES) and the client renews (asks the layout again) and resends.

use std::collections::HashMap;
use std::sync::RwLock;

use nacre_proto::layout::FileLayout;
use nacre_proto::meta::Grants;
use nacre_proto::object::CAP_LEN;

/// Objects whose capabilities a client keeps at most.
pub const MAX_HELD: usize = 1 << 20;
/// Seconds before their expiry that an open file's capabilities are renewed at least.
pub const RENEW_AHEAD: u64 = 10;

#[derive(Debug, Clone, Copy)]
struct Held {
    ino: u64,
    expiry: u64,
    cap: [u8; CAP_LEN],
}

#[derive(Debug, Default)]
pub struct Capabilities {
    held: RwLock<HashMap<(u32, u64), Held>>,
    /// When each file's capabilities are due for renewal: a quarter of their lifetime
    /// before they expire, and at least [`RENEW_AHEAD`] before (the keeper looks every
    /// few seconds), as the client's clock counts it.
    renew_at: RwLock<HashMap<u64, u64>>,
}

impl Capabilities {
    /// Takes the capabilities granted with `layout` (one per object, in order).
    pub fn grant(&self, layout: &FileLayout, grants: &Grants) {
        let now = nacre_auth::capability::now_secs();
        let left = grants.expiry.saturating_sub(now);
        let due = grants
            .expiry
            .saturating_sub((left / 4).max(RENEW_AHEAD))
            .max(now);
        {
            let mut renew = self.renew_at.write().unwrap_or_else(|p| p.into_inner());
            if renew.len() >= MAX_HELD {
                renew.retain(|_, at| *at > now);
            }
            renew.insert(grants.ino, due);
        }
        let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
        if held.len() + grants.seals.len() > MAX_HELD {
            let now = nacre_auth::capability::now_secs();
            held.retain(|_, h| h.expiry > now);
            if held.len() + grants.seals.len() > MAX_HELD {
                held.clear();
            }
        }
        for (o, seal) in layout.objects().zip(&grants.seals) {
            let cap = nacre_auth::Capability {
                rights: nacre_auth::Rights(grants.rights),
                expiry: grants.expiry,
                tag: *seal,
            };
            let h = Held {
                ino: grants.ino,
                expiry: grants.expiry,
                cap: cap.encode(),
            };
            held.insert((o.ost, o.oid), h);
        }
    }

    /// The capability to send with a request to object `object` of OST `ost`.
    pub fn get(&self, ost: u32, object: u64) -> Option<[u8; CAP_LEN]> {
        let held = self.held.read().unwrap_or_else(|p| p.into_inner());
        held.get(&(ost, object)).map(|h| h.cap)
    }

    /// Which of `inos` (the files open) are due for renewal at `now`.
    pub fn due(&self, inos: &[u64], now: u64) -> Vec<u64> {
        let renew = self.renew_at.read().unwrap_or_else(|p| p.into_inner());
        inos.iter()
            .copied()
            .filter(|ino| renew.get(ino).is_some_and(|&at| at <= now))
            .collect()
    }

    /// Files with a capability that expires before `before` (seconds since the epoch):
    /// what to renew.
    pub fn expiring(&self, before: u64) -> Vec<u64> {
        let held = self.held.read().unwrap_or_else(|p| p.into_inner());
        let mut inos: Vec<u64> = held
            .values()
            .filter(|h| h.expiry < before)
            .map(|h| h.ino)
            .collect();
        inos.sort_unstable();
        inos.dedup();
        inos
    }

    /// The file that object `object` of OST `ost` belongs to, if a capability for it is
    /// held.
    pub fn file_of(&self, ost: u32, object: u64) -> Option<u64> {
        let held = self.held.read().unwrap_or_else(|p| p.into_inner());
        held.get(&(ost, object)).map(|h| h.ino)
    }
}
