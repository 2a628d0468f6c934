//! Challenge and response: both sides prove they hold the secret of the principal the
//! client names, over the nonces both chose and what the exchange binds (a session id,
//! a fabric name), so that no proof is worth anything in another exchange.

use crate::key::{Key, Principal, SECRET_LEN};
use crate::mac::{mac, verify};
use crate::AuthError;

/// Which side a proof comes from: a client's proof never passes for a server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// What one exchange's proofs cover.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// What the exchange is for (`"mgs"`, `"hello"`).
    pub context: &'a str,
    pub fsname: &'a str,
    pub principal: &'a Principal,
    pub client_nonce: &'a [u8],
    pub server_nonce: &'a [u8],
    /// Anything else the proof must stand for (a fabric name, a session id).
    pub binding: &'a [u8],
}

impl Exchange<'_> {
    fn parts(&self, side: Side) -> [Vec<u8>; 7] {
        let label = match side {
            Side::Client => b"nacre proof: client".to_vec(),
            Side::Server => b"nacre proof: server".to_vec(),
        };
        [
            label,
            self.context.as_bytes().to_vec(),
            self.fsname.as_bytes().to_vec(),
            self.principal.encode(),
            self.client_nonce.to_vec(),
            self.server_nonce.to_vec(),
            self.binding.to_vec(),
        ]
    }

    fn mac(&self, secret: &[u8], side: Side) -> [u8; SECRET_LEN] {
        let parts = self.parts(side);
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        mac(secret, &refs)
    }

    fn verify(&self, secret: &[u8], side: Side, tag: &[u8]) -> bool {
        let parts = self.parts(side);
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        verify(secret, &refs, tag)
    }
}

/// What a fabric HELLO's proofs cover: the client's fabric name (where answers go) and
/// nonce, and in the server's proof the session id it gives (empty in the client's).
pub fn hello<'a>(
    fsname: &'a str,
    principal: &'a Principal,
    name: &'a [u8],
    nonce: &'a [u8],
    session: &'a [u8],
) -> Exchange<'a> {
    Exchange {
        context: "hello",
        fsname,
        principal,
        client_nonce: nonce,
        server_nonce: session,
        binding: name,
    }
}

/// What the MGS bootstrap's proofs cover: both nonces, and over TLS the session's
/// exporter (`binding`; empty in the clear).
pub fn mgs<'a>(
    fsname: &'a str,
    principal: &'a Principal,
    client_nonce: &'a [u8],
    server_nonce: &'a [u8],
    binding: &'a [u8],
) -> Exchange<'a> {
    Exchange {
        context: "mgs",
        fsname,
        principal,
        client_nonce,
        server_nonce,
        binding,
    }
}

impl Key {
    /// This key's proof of the exchange, from `side`. The exchange must name this
    /// key's principal and file system (a bug otherwise: the proof would not verify).
    pub fn prove(&self, side: Side, ex: &Exchange) -> [u8; SECRET_LEN] {
        debug_assert!(ex.principal == self.principal() && ex.fsname == self.fsname());
        ex.mac(self.secret(), side)
    }

    /// Checks, with this file system key, a proof from the holder of `ex.principal`
    /// (a client's, or a server's answer to a client).
    pub fn check(&self, side: Side, ex: &Exchange, tag: &[u8]) -> Result<(), AuthError> {
        if ex.fsname != self.fsname() {
            return Err(AuthError::Refused(format!(
                "a key for file system `{}`, this is `{}`",
                ex.fsname,
                self.fsname()
            )));
        }
        let secret = self
            .secret_of(ex.principal)
            .ok_or(AuthError::NotFileSystemKey)?;
        match ex.verify(&secret, side, tag) {
            true => Ok(()),
            false => Err(AuthError::Refused(format!(
                "wrong proof for {}",
                ex.principal
            ))),
        }
    }

    /// A server's proof to the holder of `ex.principal` (made with the secret derived
    /// for it: the client checks it with [`Key::check_server`]).
    pub fn prove_to(&self, side: Side, ex: &Exchange) -> Result<[u8; SECRET_LEN], AuthError> {
        let secret = self
            .secret_of(ex.principal)
            .ok_or(AuthError::NotFileSystemKey)?;
        Ok(ex.mac(&secret, side))
    }

    /// Checks a server's answer with this (the client's own) key: the server knew it.
    pub fn check_server(&self, ex: &Exchange, tag: &[u8]) -> Result<(), AuthError> {
        match ex.verify(self.secret(), Side::Server, tag) {
            true => Ok(()),
            false => Err(AuthError::Refused(
                "the server's proof is wrong: it does not hold this file system's key".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::random_bytes;

    #[test]
    fn both_sides_prove_and_nothing_carries_over() {
        let fs = Key::generate("demo").unwrap();
        let bob = fs.issue_client("bob", None).unwrap();
        let (cn, sn) = (random_bytes::<32>().unwrap(), random_bytes::<32>().unwrap());
        let ex = Exchange {
            context: "mgs",
            fsname: "demo",
            principal: bob.principal(),
            client_nonce: &cn,
            server_nonce: &sn,
            binding: b"",
        };
        let proof = bob.prove(Side::Client, &ex);
        fs.check(Side::Client, &ex, &proof).unwrap();
        assert!(fs.check(Side::Server, &ex, &proof).is_err(), "sides differ");
        let answer = fs.prove_to(Side::Server, &ex).unwrap();
        bob.check_server(&ex, &answer).unwrap();
        let other = Exchange {
            server_nonce: &cn,
            ..ex
        };
        assert!(
            fs.check(Side::Client, &other, &proof).is_err(),
            "nonces bound"
        );
        let hello = Exchange {
            context: "hello",
            ..ex
        };
        assert!(
            fs.check(Side::Client, &hello, &proof).is_err(),
            "context bound"
        );
        let stranger = Key::generate("demo")
            .unwrap()
            .issue_client("bob", None)
            .unwrap();
        let forged = stranger.prove(Side::Client, &ex);
        assert!(fs.check(Side::Client, &ex, &forged).is_err());
        assert!(bob.check_server(&ex, &forged).is_err());
    }
}
