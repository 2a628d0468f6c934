//! The reply cache (Lustre's reply reconstruction): the answer to the last changing
//! request of each (client, tag), stored in the same transaction as the change it
//! answers. A client whose answer was lost (a timeout, a dead MDS, a new epoch) sends
//! the request again with the same key; the MDS finds the key's xid in the cache and
//! answers from it instead of applying the change a second time. The cache survives
//! a restart, since its rows go through the store and the operation log like any
//! other change.
//!
//! A client reuses a tag only once the answer of its last request came, so one row
//! per (client, tag) is enough: the next request overwrites it. Rows of clients that
//! went away are dropped once older than [`REPLY_TTL`], far longer than a client
//! keeps retrying.

use std::time::Duration;

use nacre_proto::meta::Reply;
use nacre_proto::BodyReader;

/// How long a saved reply outlives its request: a client retries for about a minute.
pub const REPLY_TTL: Duration = Duration::from_secs(600);

/// Saved replies between two sweeps for rows older than [`REPLY_TTL`].
pub const SWEEP_EVERY: u64 = 4096;

/// One saved answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedReply {
    pub xid: u64,
    /// When it was saved (ns since the epoch), for the sweep.
    pub at: i64,
    pub result: Result<Reply, i32>,
}

impl SavedReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&self.xid.to_le_bytes());
        out.extend_from_slice(&self.at.to_le_bytes());
        match &self.result {
            Ok(reply) => {
                out.extend_from_slice(&0i32.to_le_bytes());
                reply.encode(&mut out);
            }
            Err(errno) => out.extend_from_slice(&errno.to_le_bytes()),
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<SavedReply> {
        let mut r = BodyReader::new(bytes);
        let xid = r.u64().ok()?;
        let at = r.u64().ok()? as i64;
        let status = r.u32().ok()? as i32;
        let rest = &bytes[20..];
        let result = match status {
            0 => Ok(Reply::decode(rest).ok()?),
            e if rest.is_empty() => Err(e),
            _ => return None,
        };
        Some(SavedReply { xid, at, result })
    }

    /// When a row saved at `at` is due for the sweep.
    pub fn expired(at: i64, now: i64) -> bool {
        now.saturating_sub(at) > REPLY_TTL.as_nanos() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_proto::meta::{Attr, FileKind};

    #[test]
    fn saved_replies_round_trip_and_refuse_garbage() {
        let attr = Attr {
            ino: 7,
            kind: FileKind::Dir,
            mode: 0o755,
            uid: 1,
            gid: 2,
            nlink: 2,
            size: 0,
            atime: 3,
            mtime: 4,
            ctime: 5,
            rdev: 0,
        };
        for result in [Ok(Reply::Attr(attr)), Ok(Reply::Done), Err(17)] {
            let s = SavedReply {
                xid: 42,
                at: 1_000,
                result,
            };
            assert_eq!(SavedReply::decode(&s.encode()), Some(s));
        }
        assert_eq!(SavedReply::decode(&[1, 2, 3]), None);
        let mut errno = SavedReply {
            xid: 1,
            at: 0,
            result: Err(2),
        }
        .encode();
        errno.push(0);
        assert_eq!(
            SavedReply::decode(&errno),
            None,
            "trailing bytes after an errno"
        );
        assert!(SavedReply::expired(0, REPLY_TTL.as_nanos() as i64 + 1));
        assert!(!SavedReply::expired(0, 5));
    }
}
