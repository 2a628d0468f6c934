//! Who may do what to an object: the capability check of every object request
//! (`nacre_auth::capability`).
//!
//! A client's request must carry the capability the MDS sealed for its object, its key's
//! principal and rights that cover the operation, before its expiry. A server's (the
//! file system key's holder: the MDS's destroyer, checker and rebuild) may omit it, as
//! may anyone for OBJ_STATFS (space figures, as `df` shows them); OBJ_LIST (object ids)
//! is a server's only. A capability that comes is always checked, a server's too.
//!
//! The seal (an HMAC) is checked once per session and capability: a verified one is
//! kept, and the same capability again costs a lookup and two comparisons.

use std::collections::HashMap;

use nacre_auth::capability::{now_secs, CapError};
use nacre_auth::{Capability, CapabilityKey, Principal, Rights};
use nacre_proto::object::ObjTarget;
use nacre_proto::Opcode;

/// Verified capabilities a core keeps at most (then it starts over).
const MAX_VERIFIED: usize = 1 << 16;

/// What a capability refused says: EACCES, or EKEYEXPIRED (renew and resend).
pub const EKEYEXPIRED: i32 = 127;

#[derive(Debug, Default)]
pub struct Access {
    /// None: the server has no key (built so by tests) and checks nothing.
    key: Option<CapabilityKey>,
    verified: HashMap<(u32, u32, u64), Capability>,
}

impl Access {
    pub fn new(key: Option<CapabilityKey>) -> Access {
        Access {
            key,
            verified: HashMap::new(),
        }
    }

    /// Whether session `session` (whose client proved `principal`) may do `op` on
    /// `t`'s object; the errno to answer otherwise.
    pub fn check(
        &mut self,
        principal: Option<&Principal>,
        session: u32,
        op: Opcode,
        t: &ObjTarget,
    ) -> Result<(), i32> {
        if self.key.is_none() || op == Opcode::OBJ_STATFS {
            return Ok(());
        }
        let principal = principal.ok_or(libc::EACCES)?;
        let need = match op {
            Opcode::OBJ_READ => Rights::READ,
            Opcode::OBJ_WRITE | Opcode::OBJ_SYNC => Rights::WRITE,
            Opcode::OBJ_PUNCH | Opcode::OBJ_TRUNCATE => Rights::TRUNCATE,
            Opcode::OBJ_DESTROY => Rights::DESTROY,
            // Sizes: any capability of the object (stat shows them anyway).
            Opcode::OBJ_GETATTR => Rights::NONE,
            _ => {
                return if principal.is_server() {
                    Ok(())
                } else {
                    Err(libc::EACCES)
                }
            }
        };
        let Some(bytes) = &t.cap else {
            return match principal.is_server() {
                true => Ok(()),
                false => Err(libc::EACCES),
            };
        };
        let cap = Capability::decode(bytes);
        let slot = (session, t.ost, t.object);
        if self.verified.get(&slot) != Some(&cap) {
            let key = self.key.as_ref().expect("checked above");
            let now = now_secs();
            key.check(
                &cap,
                t.ost,
                t.object,
                &principal.encode(),
                Rights::NONE,
                now,
            )
            .map_err(errno)?;
            if self.verified.len() >= MAX_VERIFIED {
                self.verified.clear();
            }
            self.verified.insert(slot, cap);
        }
        CapabilityKey::allows(&cap, need, now_secs()).map_err(errno)
    }
}

fn errno(e: CapError) -> i32 {
    match e {
        CapError::Expired => EKEYEXPIRED,
        CapError::Rights | CapError::Seal => libc::EACCES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_auth::Key;
    use nacre_proto::object::ObjFlags;

    fn target(cap: Option<Capability>) -> ObjTarget {
        ObjTarget {
            ost: 1,
            flags: ObjFlags::default(),
            epoch: 1,
            object: 42,
            cap: cap.map(|c| c.encode()),
        }
    }

    #[test]
    fn a_client_needs_its_objects_capability_and_the_right() {
        let fs = Key::generate("t").unwrap();
        let ck = CapabilityKey::of(&fs).unwrap();
        let mut a = Access::new(Some(ck.clone()));
        let bob = fs.issue_client("bob", None).unwrap();
        let bob = bob.principal();
        let ro = ck.seal(1, 42, Rights::READ, now_secs() + 60, bob);
        let p = Some(bob);
        assert_eq!(a.check(p, 7, Opcode::OBJ_READ, &target(Some(ro))), Ok(()));
        assert_eq!(a.check(p, 7, Opcode::OBJ_READ, &target(Some(ro))), Ok(()));
        assert_eq!(
            a.check(p, 7, Opcode::OBJ_WRITE, &target(Some(ro))),
            Err(libc::EACCES)
        );
        assert_eq!(
            a.check(p, 7, Opcode::OBJ_READ, &target(None)),
            Err(libc::EACCES)
        );
        assert_eq!(
            a.check(p, 7, Opcode::OBJ_LIST, &target(None)),
            Err(libc::EACCES)
        );
        assert_eq!(a.check(p, 7, Opcode::OBJ_STATFS, &target(None)), Ok(()));
        let mut other = target(Some(ro));
        other.object = 43;
        assert_eq!(a.check(p, 7, Opcode::OBJ_READ, &other), Err(libc::EACCES));
        let old = ck.seal(1, 42, Rights::READ, now_secs() - 1, bob);
        assert_eq!(
            a.check(p, 7, Opcode::OBJ_READ, &target(Some(old))),
            Err(EKEYEXPIRED)
        );
        let fs_p = Some(&Principal::FileSystem);
        assert_eq!(a.check(fs_p, 8, Opcode::OBJ_DESTROY, &target(None)), Ok(()));
        assert_eq!(
            a.check(fs_p, 8, Opcode::OBJ_READ, &target(Some(ro))),
            Err(libc::EACCES)
        );
        assert_eq!(
            Access::new(None).check(None, 1, Opcode::OBJ_WRITE, &target(None)),
            Ok(())
        );
    }
}
