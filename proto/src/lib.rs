//! nacre-proto: the RPC framing every nacre server and client speaks, the file layouts
//! ([`layout`]) and the metadata request and reply bodies ([`meta`]).
//!
//! Pure code: bytes in, typed frames out, and the reverse; no I/O, no clock of its own
//! (callers pass the time). Every decode is bounds-checked against explicit limits; a
//! malformed, truncated or oversized message is an error value, never a panic.
//! It must stay free of fabric, engine and file-system dependencies so the client can
//! use it without the server engine.
//!
//! [`packed`] encodes and decodes the u64 values handed out and returned later
//! (completion contexts, storage tags, session ids), refusing what does not fit.
//!
//! [`bootstrap`] is the other protocol: what servers and clients say to the management
//! service (MGS) over TCP, and the cluster map type every client and server decodes.

mod body;
pub mod bootstrap;
mod frame;
pub mod hello;
pub mod layout;
pub mod locks;
pub mod meta;
pub mod object;
mod outstanding;
pub mod packed;

pub use body::{BodyError, BodyReader, BodyWriter, BulkDesc};
pub use frame::{DecodeError, Flags, Frame, Header, Limits, Opcode, HEADER_LEN, MAGIC, VERSION};
pub use outstanding::{Outstanding, OutstandingError};

/// A client that has sent nothing on a session for this long says HELLO again before
/// its next request: a server core reaps sessions unused for twice as long (its
/// default), and HELLO gives back the same session while it lives, a new one after.
pub const SESSION_REFRESH: std::time::Duration = std::time::Duration::from_secs(300);
