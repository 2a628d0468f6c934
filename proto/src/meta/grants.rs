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
        if r.rest().is_empty() {
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
