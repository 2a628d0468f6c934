//! HMAC-SHA256 over length-prefixed parts, and random bytes from the OS.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::key::SECRET_LEN;
use crate::AuthError;

type HmacSha256 = Hmac<Sha256>;

fn keyed(secret: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    Keyed::new(secret).with(parts)
}

/// An HMAC-SHA256 key with its key schedule done once: what a key used for every
/// capability seals and checks from (the two compressions of the keyed pads are not
/// paid per seal).
#[derive(Clone)]
pub(crate) struct Keyed(HmacSha256);

impl Keyed {
    pub fn new(secret: &[u8]) -> Keyed {
        Keyed(HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length"))
    }

    fn with(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut m = self.0.clone();
        // Each part behind its length: ("ab", "c") and ("a", "bc") must not prove alike.
        for p in parts {
            m.update(&(p.len() as u32).to_le_bytes());
            m.update(p);
        }
        m
    }

    pub fn mac(&self, parts: &[&[u8]]) -> [u8; SECRET_LEN] {
        self.with(parts).finalize().into_bytes().into()
    }

    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        tag.len() >= 16 && self.with(parts).verify_truncated_left(tag).is_ok()
    }
}

/// HMAC-SHA256 of `parts` under `secret`.
pub fn mac(secret: &[u8], parts: &[&[u8]]) -> [u8; SECRET_LEN] {
    keyed(secret, parts).finalize().into_bytes().into()
}

/// Whether `tag` is `parts`' HMAC under `secret` (or its first `tag.len()` bytes, at
/// least 16), compared in constant time.
pub fn verify(secret: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    tag.len() >= 16 && keyed(secret, parts).verify_truncated_left(tag).is_ok()
}

/// `N` bytes from the operating system's generator.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(out)
}

/// A random u64 (keys of memory registrations, tags of session ids).
pub fn random_u64() -> u64 {
    // The OS generator does not fail on Linux once booted; should it, a clock-derived
    // value still differs per call, and nothing but guessability depends on it.
    random_bytes::<8>()
        .map(u64::from_le_bytes)
        .unwrap_or_else(|_| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32
        })
}
