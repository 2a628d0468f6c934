//! Capabilities with a layout: after a reply that carries a file's layout (open, create,
//! get-layout...), the MDS adds one capability per object of the layout, in
//! [`FileLayout::objects`](crate::layout::FileLayout::objects) order, all with the same
//! rights and expiry (`nacre_auth::capability` says what they are and how an OSS checks
//! them). Only the seal differs per object.
//!
//! Wire (after the reply body): the tag `GRNT`, the inode, the expiry (seconds since the
//! epoch), the rights, the count, then each object's 16-byte seal.

use super::wire::{put_u32, put_u64};
use super::MetaError;
use crate::body::BodyReader;

const R_GRANTS: u32 = u32::from_le_bytes(*b"GRNT");
/// Bytes of one object's seal.
pub const SEAL_LEN: usize = 16;
/// Objects one grant names at most (every object of the largest layout).
pub const MAX_GRANTS: usize = 4096;

/// The capabilities of one file's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    pub ino: u64,
    pub expiry: u64,
    pub rights: u32,
    pub seals: Vec<[u8; SEAL_LEN]>,
}

impl Grants {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, R_GRANTS);
        put_u64(out, self.ino);
        put_u64(out, self.expiry);
        put_u32(out, self.rights);
        put_u32(out, self.seals.len() as u32);
        for s in &self.seals {
            out.extend_from_slice(s);
        }
    }

    /// The grants at `r`'s position, if any follow.
    pub(super) fn read(r: &mut BodyReader<'_>) -> Result<Option<Grants>, MetaError> {
        if r.left().is_empty() {
            return Ok(None);
        }
        match r.u32()? {
            R_GRANTS => {}
            value => {
                return Err(MetaError::BadValue {
                    what: "trailer",
                    value,
                })
            }
        }
        let (ino, expiry, rights, n) = (r.u64()?, r.u64()?, r.u32()?, r.u32()?);
        if n as usize > MAX_GRANTS {
            return Err(MetaError::BadValue {
                what: "grant count",
                value: n,
            });
        }
        let seals = (0..n)
            .map(|_| Ok(r.bytes(SEAL_LEN)?.try_into().expect("SEAL_LEN bytes")))
            .collect::<Result<_, MetaError>>()?;
        Ok(Some(Grants {
            ino,
            expiry,
            rights,
            seals,
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::layout::{FileLayout, ObjectRef, StripedLayout};
    use crate::meta::{Attr, FileKind, Grants, Reply};

    #[test]
    fn grants_follow_a_layout_reply_and_nothing_else() {
        let layout = FileLayout::from(StripedLayout {
            stripe_size: 1 << 20,
            objects: vec![ObjectRef { ost: 0, oid: 7 }, ObjectRef { ost: 1, oid: 9 }],
        });
        let g = Grants {
            ino: 5,
            expiry: 99,
            rights: 3,
            seals: vec![[1; 16], [2; 16]],
        };
        let reply = Reply::Layout(layout.clone());
        let mut body = Vec::new();
        reply.encode(&mut body);
        assert_eq!(Reply::decode_granted(&body).unwrap(), (reply.clone(), None));
        g.encode(&mut body);
        assert_eq!(
            Reply::decode_granted(&body).unwrap(),
            (reply, Some(g.clone()))
        );
        assert!(
            Reply::decode(&body).is_err(),
            "a plain decode takes no trailer"
        );
        for cut in 1..g.seals.len() * 16 + 28 {
            let short = &body[..body.len() - cut];
            let ok = Reply::decode_granted(short).is_ok();
            assert_eq!(ok, cut == g.seals.len() * 16 + 28, "cut {cut}");
        }
        let attr = Attr {
            ino: 5,
            kind: FileKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            nlink: 1,
            size: 0,
            atime: 0,
            mtime: 0,
            ctime: 0,
            rdev: 0,
        };
        let mut done = Vec::new();
        Reply::Attr(attr).encode(&mut done);
        g.encode(&mut done);
        assert!(
            Reply::decode_granted(&done).is_err(),
            "only layouts take grants"
        );
    }
}
