//! The errors this library returns: `io::Error`s that carry an errno, and what a
//! client error stands for.

use std::io;

use nacre_proto::meta::{Attr, Reply};

use crate::rpc::ClientError;
use nacre_mgc::MgsError;

pub(super) fn attr_of(reply: Reply) -> io::Result<Attr> {
    match reply {
        Reply::Attr(a) | Reply::Opened { attr: a, .. } => Ok(a),
        other => Err(protocol(format!("expected attributes, got {other:?}"))),
    }
}

pub(super) fn protocol(msg: String) -> io::Error {
    failure(libc::EPROTO, msg)
}

/// The errno a client error stands for.
pub fn errno_of(e: &ClientError) -> i32 {
    match e {
        ClientError::Status(e) => *e,
        ClientError::Expired { .. } | ClientError::Timeout(_) | ClientError::ServerGone => {
            libc::ETIMEDOUT
        }
        ClientError::TargetDown(_) => libc::EIO,
        ClientError::Decode(_) | ClientError::Protocol(_) => libc::EPROTO,
        ClientError::UnknownSession(_) => libc::EBADF,
        ClientError::Fabric(_) => libc::EIO,
        ClientError::Auth(_) => libc::EACCES,
    }
}

/// An error with its errno and what happened, for errors that are more than an errno.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub errno: i32,
    pub message: String,
}

pub(super) fn failure(errno: i32, message: String) -> io::Error {
    let kind = io::Error::from_raw_os_error(errno).kind();
    io::Error::new(kind, Failure { errno, message })
}

/// The errno an `io::Error` of this library stands for (EIO if it has none).
pub fn errno(e: &io::Error) -> i32 {
    e.raw_os_error()
        .or_else(|| e.get_ref()?.downcast_ref::<Failure>().map(|f| f.errno))
        .unwrap_or(libc::EIO)
}

pub(super) fn to_io(e: ClientError) -> io::Error {
    match e {
        ClientError::Status(errno) => io::Error::from_raw_os_error(errno),
        other => failure(errno_of(&other), other.to_string()),
    }
}

pub(super) fn mgs_err(e: MgsError) -> io::Error {
    failure(e.errno().unwrap_or(libc::EHOSTUNREACH), e.to_string())
}
