//! The HELLO exchange's bodies: a client's first message to a server core, and the
//! answer that gives it a session.
//!
//! Request (little-endian):
//!
//! | size | field                                                     |
//! |------|-----------------------------------------------------------|
//! | 2    | fabric name length N                                      |
//! | N    | the client's fabric name (where replies go)               |
//! | 1    | principal length P (0: no key)                            |
//! | P    | the principal (`nacre_auth::Principal::encode`)           |
//! | 32   | the client's nonce                                        |
//! | 32   | its proof over the file system, principal, name and nonce |
//!
//! Reply: the session id (u32), then the server's proof (32 bytes, zero from a server
//! without a key) over the same and the session id: the client knows the session came
//! from a holder of the file system key, and the id is bound to the proof.

/// Why a HELLO body does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("HELLO body too short")]
    Short,
    #[error("HELLO {0} too long")]
    TooLong(&'static str),
    #[error("HELLO body has trailing bytes")]
    Trailing,
}

pub const NONCE_LEN: usize = 32;
pub const PROOF_LEN: usize = 32;
/// Longest fabric name a HELLO carries.
pub const MAX_NAME_LEN: usize = 1024;

/// A HELLO request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloReq<'a> {
    pub name: &'a [u8],
    /// Empty: the client has no key (a server with one refuses it).
    pub principal: &'a [u8],
    pub nonce: [u8; NONCE_LEN],
    pub proof: [u8; PROOF_LEN],
}

impl<'a> HelloReq<'a> {
    pub fn encode(&self) -> Result<Vec<u8>, HelloError> {
        if self.name.len() > MAX_NAME_LEN || self.principal.len() > u8::MAX as usize {
            return Err(HelloError::TooLong("name or principal"));
        }
        let mut out = Vec::with_capacity(3 + self.name.len() + self.principal.len() + 64);
        out.extend_from_slice(&(self.name.len() as u16).to_le_bytes());
        out.extend_from_slice(self.name);
        out.push(self.principal.len() as u8);
        out.extend_from_slice(self.principal);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.proof);
        Ok(out)
    }

    pub fn decode(b: &'a [u8]) -> Result<HelloReq<'a>, HelloError> {
        let short = || HelloError::Short;
        let n = u16::from_le_bytes(b.get(..2).ok_or_else(short)?.try_into().unwrap()) as usize;
        if n > MAX_NAME_LEN {
            return Err(HelloError::TooLong("name"));
        }
        let name = b.get(2..2 + n).ok_or_else(short)?;
        let p = *b.get(2 + n).ok_or_else(short)? as usize;
        let at = 3 + n;
        let principal = b.get(at..at + p).ok_or_else(short)?;
        let at = at + p;
        let rest = b.get(at..).ok_or_else(short)?;
        if rest.len() != NONCE_LEN + PROOF_LEN {
            return Err(match rest.len() < NONCE_LEN + PROOF_LEN {
                true => short(),
                false => HelloError::Trailing,
            });
        }
        Ok(HelloReq {
            name,
            principal,
            nonce: rest[..NONCE_LEN].try_into().unwrap(),
            proof: rest[NONCE_LEN..].try_into().unwrap(),
        })
    }
}

/// A HELLO reply body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloReply {
    pub session: u32,
    pub proof: [u8; PROOF_LEN],
}

impl HelloReply {
    pub const LEN: usize = 4 + PROOF_LEN;

    pub fn encode(&self) -> [u8; HelloReply::LEN] {
        let mut out = [0u8; HelloReply::LEN];
        out[..4].copy_from_slice(&self.session.to_le_bytes());
        out[4..].copy_from_slice(&self.proof);
        out
    }

    pub fn decode(b: &[u8]) -> Result<HelloReply, HelloError> {
        let b: &[u8; HelloReply::LEN] = b.try_into().map_err(|_| HelloError::Short)?;
        Ok(HelloReply {
            session: u32::from_le_bytes(b[..4].try_into().unwrap()),
            proof: b[4..].try_into().unwrap(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_bodies_round_trip_and_refuse_bad_lengths() {
        let req = HelloReq {
            name: b"fabric-name",
            principal: &[2, 3, b'b', b'o', b'b', 0],
            nonce: [7; NONCE_LEN],
            proof: [9; PROOF_LEN],
        };
        let bytes = req.encode().unwrap();
        assert_eq!(HelloReq::decode(&bytes).unwrap(), req);
        for cut in 0..bytes.len() {
            assert!(HelloReq::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(HelloReq::decode(&long).is_err());
        let reply = HelloReply {
            session: 0xdead_beef,
            proof: [1; PROOF_LEN],
        };
        assert_eq!(HelloReply::decode(&reply.encode()).unwrap(), reply);
        assert!(HelloReply::decode(&reply.encode()[..5]).is_err());
    }
}
