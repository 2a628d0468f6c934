//! Who a metadata request acts as: what its client says (uid, gid, groups) only as far
//! as the client's key allows (Lustre's nodemap and root squash).
//!
//! - The file system key: as said (servers and administrators' tools).
//! - A client key with an identity map: always the mapped uid and gid, no other group,
//!   whatever the client says (every user of that key is one user here).
//! - A client key without a map: as said, but root acts as the file system's root
//!   squash identity when one is set (`nacre-mgs format --root-squash`, `nacre-mgs
//!   root-squash`), with no other group. A mapped identity of root is squashed too.

use std::sync::atomic::{AtomicU64, Ordering};

use nacre_auth::Principal;
use nacre_proto::meta::Creds;

/// The root squash setting, read on every request by the cores and set from the
/// cluster map by the server's loop.
#[derive(Debug)]
pub struct RootSquash(AtomicU64);

/// No squash: an identity no setting can name (uid and gid u32::MAX).
const OFF: u64 = u64::MAX;

impl Default for RootSquash {
    fn default() -> Self {
        RootSquash(AtomicU64::new(OFF))
    }
}

impl RootSquash {
    pub fn set(&self, squash: Option<(u32, u32)>) {
        let v = squash.map_or(OFF, |(u, g)| u64::from(u) << 32 | u64::from(g));
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> Option<(u32, u32)> {
        match self.0.load(Ordering::Relaxed) {
            OFF => None,
            v => Some(((v >> 32) as u32, v as u32)),
        }
    }
}

/// The identity a request from `principal` that says `said` acts as.
pub fn effective(principal: &Principal, said: Creds, squash: Option<(u32, u32)>) -> Creds {
    let creds = match principal {
        Principal::FileSystem => return said,
        Principal::Client { map: Some(m), .. } => Creds::user(m.uid, m.gid),
        Principal::Client { map: None, .. } => said,
    };
    match squash {
        Some((uid, gid)) if creds.uid == 0 => Creds::user(uid, gid),
        _ => creds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_auth::IdMap;

    #[test]
    fn a_key_decides_what_its_users_may_claim() {
        let root = Creds {
            uid: 0,
            gid: 0,
            groups: vec![0, 10],
        };
        let sq = Some((65534, 65534));
        assert_eq!(effective(&Principal::FileSystem, root.clone(), sq), root);
        let free = Principal::Client {
            name: "n".into(),
            map: None,
        };
        assert_eq!(effective(&free, root.clone(), None), root);
        assert_eq!(
            effective(&free, root.clone(), sq),
            Creds::user(65534, 65534)
        );
        let bob = Creds::user(1000, 100);
        assert_eq!(effective(&free, bob.clone(), sq), bob);
        let mapped = Principal::Client {
            name: "m".into(),
            map: Some(IdMap {
                uid: 2000,
                gid: 200,
            }),
        };
        assert_eq!(effective(&mapped, root.clone(), sq), Creds::user(2000, 200));
        assert_eq!(effective(&mapped, bob, None), Creds::user(2000, 200));
        let to_root = Principal::Client {
            name: "r".into(),
            map: Some(IdMap { uid: 0, gid: 0 }),
        };
        assert_eq!(effective(&to_root, root, sq), Creds::user(65534, 65534));
        let s = RootSquash::default();
        assert_eq!(s.get(), None);
        s.set(Some((0, 7)));
        assert_eq!(s.get(), Some((0, 7)));
        s.set(None);
        assert_eq!(s.get(), None);
    }
}
