//! nacre-auth: who may talk to a nacre file system, and what they may do.
//!
//! - [`key`]: the file system key (`nacre-mgs format` makes it) and client keys issued
//!   from it, each naming the identity map its users are taken for; where a process
//!   finds its key (`--key`, `NACRE_KEY`, `/etc/nacre/FSNAME.key`).
//! - [`proof`]: HMAC-SHA256 challenge and response, used on the MGS's TCP bootstrap and
//!   on the fabric HELLO.
//! - [`capability`]: what the MDS hands a client with a layout, sealed for the OSSs.
//!
//! No I/O but reading and writing key files; no dependency on the rest of nacre.

pub mod capability;
pub mod key;
mod mac;
pub mod proof;

use std::path::PathBuf;

pub use capability::{Capability, CapabilityKey, Rights};
pub use key::{IdMap, Key, KeySource, Principal, KEY_ENV};
pub use mac::{random_bytes, random_u64};
pub use proof::{Exchange, Side};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("key file {0} may be read by others (mode {1:o}): make it 0600")]
    Exposed(PathBuf, u32),
    #[error("malformed key or proof: {0}")]
    Malformed(String),
    #[error(
        "no key for file system `{0}`: give --key FILE, set NACRE_KEY=FILE, or install /etc/nacre/{0}.key"
    )]
    NoKey(String),
    #[error("the key from {from} is for file system `{has}`, not `{want}`")]
    WrongFileSystem {
        from: String,
        has: String,
        want: String,
    },
    #[error("this is a client key: only the file system key can do that")]
    NotFileSystemKey,
    #[error("{0}")]
    Refused(String),
    #[error("no random bytes from the OS: {0}")]
    Random(String),
}
