//! Typed errors of the fabric layer. libfabric's own text (fi_strerror, fi_cq_strerror)
//! is carried along so that an operator sees what the provider said.

use std::ffi::CStr;

use crate::endpoint::OpKind;

/// An error of the fabric layer: one pointer wide, so that `Result<()>` on the hot path
/// costs no more than a return code. [`Error::kind`] says what went wrong.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(Box<ErrorKind>);

impl Error {
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    /// The error code libfabric gave, for callers that map to errno.
    pub fn code(&self) -> Option<i32> {
        match self.kind() {
            ErrorKind::Call { code, .. } => Some(*code),
            ErrorKind::Completion(c) => Some(c.code),
            _ => None,
        }
    }
}

impl From<ErrorKind> for Error {
    #[cold]
    fn from(kind: ErrorKind) -> Self {
        Error(Box::new(kind))
    }
}

/// What went wrong in the fabric layer.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// A libfabric call returned an error code.
    #[error("{call} failed: {text} (-{code})")]
    Call {
        call: &'static str,
        code: i32,
        text: String,
    },
    /// An operation completed with an error (read from fi_cq_readerr).
    #[error(transparent)]
    Completion(Box<CompletionError>),
    /// The system libfabric could not be loaded (nacre opens it at first use).
    #[error("{0}")]
    Library(&'static str),
    /// fi_getinfo found nothing that fits the request.
    #[error("no libfabric provider matches {wanted}: {reason}")]
    NoProvider { wanted: String, reason: String },
    /// A peer address was not inserted in this endpoint's address vector.
    #[error("unknown peer address {0}: it was not inserted in this endpoint's address vector")]
    UnknownPeer(u64),
    /// The bytes given as a peer's fabric name were rejected by the address vector.
    #[error("invalid peer address ({len} bytes): fi_av_insert rejected it: {text}")]
    BadPeerName { len: usize, text: String },
    /// A local or remote range falls outside its registration.
    #[error("{what} range {offset}+{len} lies outside its registration of {size} bytes")]
    OutOfBounds {
        what: &'static str,
        offset: u64,
        len: u64,
        size: u64,
    },
    /// A memory registration was made in another domain than the endpoint's.
    #[error("memory region belongs to another domain than this endpoint (EFA rejects this)")]
    ForeignRegion,
    /// A message exceeds the provider's maximum message size.
    #[error("{len} bytes exceed the provider's max message size {max}")]
    TooLarge { len: usize, max: usize },
    /// A registration cannot be released while operations are in flight.
    #[error("{0} operations are in flight: deregister when the endpoint is quiet")]
    Busy(usize),
    /// The post would have to wait (FI_EAGAIN, or the queue is full) and the endpoint
    /// does not wait: progress, then post it again later.
    #[error("{0}: would block, try again after progress")]
    Again(&'static str),
    /// Too many operations of one kind are outstanding.
    #[error("{0} operations already outstanding on this endpoint (the queue is full)")]
    QueueFull(usize),
    /// Progress made no headway before the deadline.
    #[error("{what} made no progress for {secs:.1} s")]
    Timeout { what: &'static str, secs: f64 },
    /// A serialized remote-region descriptor was malformed.
    #[error("malformed remote region descriptor: {0}")]
    BadDescriptor(&'static str),
    /// Memory could not be mapped.
    #[error("cannot map {len} bytes of memory: {source}")]
    Map {
        len: usize,
        #[source]
        source: std::io::Error,
    },
}

/// An error completion: which operation, libfabric's error and the provider's text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?} ({}) completed with error: {text} (-{code}; provider: {provider_text} [{provider_errno}])",
    context.map_or("not one of ours".to_string(), |c| format!("context {c}")))]
pub struct CompletionError {
    /// The context of the failed operation; None when the provider reports an error that
    /// belongs to no operation we posted (seen on sockets and shm when a peer dies).
    pub context: Option<u64>,
    pub kind: OpKind,
    pub code: i32,
    pub text: String,
    pub provider_errno: i32,
    pub provider_text: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// libfabric's text for an error code (positive or negative).
pub fn strerror(code: i32) -> String {
    // SAFETY: fi_strerror returns a pointer to a static, NUL-terminated string for any value.
    let text = unsafe { CStr::from_ptr(nacre_sys::fi_strerror(code.abs())) };
    text.to_string_lossy().into_owned()
}

/// Turns a libfabric return code (0 or a negative errno) into a Result.
pub(crate) fn check(call: &'static str, rc: isize) -> Result<()> {
    if rc >= 0 {
        Ok(())
    } else {
        Err(call_error(call, rc))
    }
}

pub(crate) fn call_error(call: &'static str, rc: isize) -> Error {
    let code = i32::try_from(rc.unsigned_abs()).unwrap_or(i32::MAX);
    ErrorKind::Call {
        call,
        code,
        text: strerror(code),
    }
    .into()
}
