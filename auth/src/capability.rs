//! Object capabilities: with a layout the MDS hands a client, for each object, the
//! rights it may use there until an expiry, sealed with a key only servers derive (from
//! the file system key). An OSS checks the seal on every object request (once per
//! session and capability: the check is cached), so a client reaches exactly the
//! objects of files the MDS let it open, in the ways it let it.
//!
//! A capability is bound to its object (OST and object id) and to the principal of the
//! key the client authenticated with: another file's objects, or another key's holder,
//! get nothing from it.

use crate::key::{Key, Principal};
use crate::mac::Keyed;

/// What a capability allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rights(pub u32);

impl Rights {
    pub const NONE: Rights = Rights(0);
    /// Read data and attributes.
    pub const READ: Rights = Rights(1);
    /// Write data, sync.
    pub const WRITE: Rights = Rights(2);
    /// Truncate and punch.
    pub const TRUNCATE: Rights = Rights(4);
    /// Destroy the object (servers only in practice).
    pub const DESTROY: Rights = Rights(8);
    const KNOWN: u32 = 15;

    pub fn with(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    pub fn has(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_known(self) -> bool {
        self.0 & !Rights::KNOWN == 0
    }
}

/// Bytes of a capability on the wire.
pub const CAPABILITY_LEN: usize = 32;
/// Bytes of the seal (a truncated HMAC-SHA256: 128 bits).
const TAG_LEN: usize = 16;

/// One object's capability: rights, expiry (seconds since the epoch, the MDS's clock)
/// and the seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capability {
    pub rights: Rights,
    pub expiry: u64,
    pub tag: [u8; TAG_LEN],
}

impl Capability {
    /// Wire form: expiry u64, rights u32, 4 zero bytes, tag.
    pub fn encode(&self) -> [u8; CAPABILITY_LEN] {
        let mut out = [0u8; CAPABILITY_LEN];
        out[..8].copy_from_slice(&self.expiry.to_le_bytes());
        out[8..12].copy_from_slice(&self.rights.0.to_le_bytes());
        out[16..].copy_from_slice(&self.tag);
        out
    }

    pub fn decode(b: &[u8; CAPABILITY_LEN]) -> Capability {
        Capability {
            expiry: u64::from_le_bytes(b[..8].try_into().unwrap()),
            rights: Rights(u32::from_le_bytes(b[8..12].try_into().unwrap())),
            tag: b[16..].try_into().unwrap(),
        }
    }
}

/// Why a capability does not let a request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    #[error("capability expired")]
    Expired,
    #[error("capability does not allow this operation")]
    Rights,
    #[error("capability seal is wrong (another object, holder or key)")]
    Seal,
}

/// The key capabilities are sealed with: derived from the file system key, so the MDS
/// and every OSS have it and no client does.
#[derive(Clone)]
pub struct CapabilityKey(Keyed);

impl std::fmt::Debug for CapabilityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CapabilityKey(..)")
    }
}

impl CapabilityKey {
    /// From the file system key (None from a client key: it cannot derive it).
    pub fn of(key: &Key) -> Option<CapabilityKey> {
        key.principal()
            .is_server()
            .then(|| CapabilityKey(Keyed::new(&key.derive("capability"))))
    }

    fn parts<'a>(
        ost: &'a [u8; 4],
        object: &'a [u8; 8],
        rights: &'a [u8; 4],
        expiry: &'a [u8; 8],
        holder: &'a [u8],
    ) -> [&'a [u8]; 6] {
        [b"nacre capability", ost, object, rights, expiry, holder]
    }

    /// The capability for `holder` on object `object` of OST `ost`.
    pub fn seal(
        &self,
        ost: u32,
        object: u64,
        rights: Rights,
        expiry: u64,
        holder: &Principal,
    ) -> Capability {
        self.seal_for(ost, object, rights, expiry, &holder.encode())
    }

    /// [`CapabilityKey::seal`] for a holder already encoded (`Principal::encode`):
    /// the MDS seals every object of a layout for one holder.
    pub fn seal_for(
        &self,
        ost: u32,
        object: u64,
        rights: Rights,
        expiry: u64,
        holder: &[u8],
    ) -> Capability {
        let (o, id, r, e) = (
            ost.to_le_bytes(),
            object.to_le_bytes(),
            rights.0.to_le_bytes(),
            expiry.to_le_bytes(),
        );
        let full = self.0.mac(&Self::parts(&o, &id, &r, &e, holder));
        Capability {
            rights,
            expiry,
            tag: full[..TAG_LEN].try_into().unwrap(),
        }
    }

    /// Whether `cap` lets `holder` do what needs `need` on the object at `now`.
    pub fn check(
        &self,
        cap: &Capability,
        ost: u32,
        object: u64,
        holder: &[u8],
        need: Rights,
        now: u64,
    ) -> Result<(), CapError> {
        let (o, id, r, e) = (
            ost.to_le_bytes(),
            object.to_le_bytes(),
            cap.rights.0.to_le_bytes(),
            cap.expiry.to_le_bytes(),
        );
        if !self
            .0
            .verify(&Self::parts(&o, &id, &r, &e, holder), &cap.tag)
        {
            return Err(CapError::Seal);
        }
        Self::allows(cap, need, now)
    }

    /// The checks that stay once a seal was verified (and cached): expiry and rights.
    pub fn allows(cap: &Capability, need: Rights, now: u64) -> Result<(), CapError> {
        if now > cap.expiry {
            return Err(CapError::Expired);
        }
        match cap.rights.has(need) {
            true => Ok(()),
            false => Err(CapError::Rights),
        }
    }
}

/// Seconds since the epoch, as capabilities count them.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capability_opens_its_object_for_its_holder_until_it_expires() {
        let fs = Key::generate("demo").unwrap();
        let ck = CapabilityKey::of(&fs).unwrap();
        let bob = fs.issue_client("bob", None).unwrap();
        let who = bob.principal().encode();
        let rw = Rights::READ.with(Rights::WRITE);
        let cap = ck.seal(3, 77, rw, 1000, bob.principal());
        assert_eq!(Capability::decode(&cap.encode()), cap);
        assert_eq!(ck.check(&cap, 3, 77, &who, Rights::WRITE, 999), Ok(()));
        let err = |ost, obj, need, now| ck.check(&cap, ost, obj, &who, need, now).unwrap_err();
        assert_eq!(err(3, 77, Rights::TRUNCATE, 999), CapError::Rights);
        assert_eq!(err(3, 77, Rights::READ, 1001), CapError::Expired);
        assert_eq!(err(3, 78, Rights::READ, 999), CapError::Seal);
        assert_eq!(err(4, 77, Rights::READ, 999), CapError::Seal);
        let eve = fs.issue_client("eve", None).unwrap().principal().encode();
        assert_eq!(
            ck.check(&cap, 3, 77, &eve, Rights::READ, 999),
            Err(CapError::Seal)
        );
        let raised = Capability {
            rights: Rights(15),
            ..cap
        };
        assert_eq!(
            ck.check(&raised, 3, 77, &who, Rights::READ, 999),
            Err(CapError::Seal)
        );
        assert!(CapabilityKey::of(&bob).is_none());
    }
}
