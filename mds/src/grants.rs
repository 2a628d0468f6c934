//! The capabilities an MDS hands with a layout (`nacre_auth::capability`): for each
//! object of the file, sealed for the principal of the client's key, with the rights
//! the client's identity has on the file (read; write and truncate), until an expiry.
//! The creator of a new file gets both, whatever its mode says (as it opens it). A
//! client renews them by asking the layout again before they expire.

use std::time::Duration;

use nacre_auth::capability::now_secs;
use nacre_auth::{CapabilityKey, Principal, Rights};
use nacre_proto::layout::FileLayout;
use nacre_proto::meta::{Attr, Creds, Grants};

use crate::mdt::perm::{may_attr, R, W};

/// How long a capability holds by default: renewed well before by its client.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// Seals capabilities with the key the OSSs share.
#[derive(Debug, Clone)]
pub struct Sealer {
    key: CapabilityKey,
    lifetime: Duration,
}

impl Sealer {
    pub fn new(key: CapabilityKey, lifetime: Duration) -> Sealer {
        Sealer { key, lifetime }
    }

    /// The grants for `layout` of the file `attr` describes, to `holder` acting as
    /// `creds` (`created`: it made the file).
    pub fn grants(
        &self,
        holder: &Principal,
        creds: &Creds,
        attr: &Attr,
        created: bool,
        layout: &FileLayout,
    ) -> Grants {
        let rights = rights_for(creds, attr, created);
        let expiry = now_secs() + self.lifetime.as_secs().max(1);
        let holder = holder.encode();
        let seals = layout
            .objects()
            .map(|o| self.key.seal_for(o.ost, o.oid, rights, expiry, &holder).tag)
            .collect();
        Grants {
            ino: attr.ino,
            expiry,
            rights: rights.0,
            seals,
        }
    }
}

/// What `c` may do with the objects of the file `a` describes.
pub fn rights_for(c: &Creds, a: &Attr, created: bool) -> Rights {
    let mut rights = Rights::NONE;
    if created || may_attr(c, a, R) {
        rights = rights.with(Rights::READ);
    }
    if created || may_attr(c, a, W) {
        rights = rights.with(Rights::WRITE).with(Rights::TRUNCATE);
    }
    rights
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_proto::meta::FileKind;

    #[test]
    fn rights_follow_the_mode_but_for_the_creator() {
        let a = Attr {
            ino: 5,
            kind: FileKind::File,
            mode: 0o640,
            uid: 1000,
            gid: 100,
            nlink: 1,
            size: 0,
            atime: 0,
            mtime: 0,
            ctime: 0,
            rdev: 0,
        };
        let rw = Rights::READ.with(Rights::WRITE).with(Rights::TRUNCATE);
        assert_eq!(rights_for(&Creds::user(1000, 1), &a, false), rw);
        assert_eq!(rights_for(&Creds::user(2000, 100), &a, false), Rights::READ);
        assert_eq!(rights_for(&Creds::user(2000, 200), &a, false), Rights::NONE);
        assert_eq!(rights_for(&Creds::user(2000, 200), &a, true), rw);
        assert_eq!(rights_for(&Creds::root(), &a, false), rw);
    }
}
