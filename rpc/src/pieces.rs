//! Replies that come in pieces (proto frame.rs): a server whose transport delivers only
//! small messages safely (shm) cuts a long reply body into numbered fragments. They are
//! kept here per request until all have come, in whatever order, then joined.

use std::collections::{BTreeMap, HashMap};

use nacre_proto::{Flags, Header};

/// The pieces received so far of one reply.
#[derive(Debug, Default)]
struct Pieces {
    parts: BTreeMap<u16, Vec<u8>>,
    /// The number of the piece without MORE, once it came.
    last: Option<u16>,
    bytes: usize,
}

/// Why a piece was refused: the reply it belongs to is given up (its request expires).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPiece {
    /// A number seen before, a second last piece, or a number past the last.
    Inconsistent,
    /// The pieces add up to more than one reply body may hold.
    TooLarge,
}

/// Pieces of the replies in progress, by request id.
#[derive(Debug, Default)]
pub struct Assembly {
    replies: HashMap<u64, Pieces>,
}

impl Assembly {
    /// Whether `h` is a piece of a reply rather than a whole one.
    pub fn is_piece(h: &Header) -> bool {
        h.fragment != 0 || h.flags.contains(Flags::MORE)
    }

    /// Adds a piece; returns the whole body once every piece of its reply has come.
    /// `max_body` bounds the joined body. A bad piece drops what its reply had.
    pub fn add(
        &mut self,
        h: &Header,
        body: &[u8],
        max_body: usize,
    ) -> Result<Option<Vec<u8>>, BadPiece> {
        let id = h.request_id;
        let p = self.replies.entry(id).or_default();
        let last = (!h.flags.contains(Flags::MORE)).then_some(h.fragment);
        let bad = if p.parts.contains_key(&h.fragment) || (last.is_some() && p.last.is_some()) {
            Some(BadPiece::Inconsistent)
        } else if p.bytes + body.len() > max_body {
            Some(BadPiece::TooLarge)
        } else {
            None
        };
        if let Some(e) = bad {
            self.replies.remove(&id);
            return Err(e);
        }
        p.parts.insert(h.fragment, body.to_vec());
        p.bytes += body.len();
        p.last = p.last.or(last);
        let Some(last) = p.last else {
            return Ok(None);
        };
        let highest = *p.parts.keys().next_back().expect("a piece was just added");
        if highest > last {
            self.replies.remove(&id);
            return Err(BadPiece::Inconsistent);
        }
        if p.parts.len() < usize::from(last) + 1 {
            return Ok(None);
        }
        let p = self.replies.remove(&id).expect("present");
        let mut whole = Vec::with_capacity(p.bytes);
        for part in p.parts.into_values() {
            whole.extend_from_slice(&part);
        }
        Ok(Some(whole))
    }

    /// Forgets the pieces of a request that expired.
    pub fn forget(&mut self, id: u64) {
        self.replies.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_proto::Opcode;

    fn piece(id: u64, n: u16, more: bool) -> Header {
        let mut h = Header::request(Opcode::PING, id, 0).reply(0, 0);
        h.fragment = n;
        if more {
            h.flags = h.flags.with(Flags::MORE);
        }
        h
    }

    #[test]
    fn pieces_join_in_order_whatever_order_they_come_in() {
        let mut a = Assembly::default();
        assert_eq!(a.add(&piece(1, 2, false), b"ef", 100), Ok(None));
        assert_eq!(a.add(&piece(2, 0, true), b"xy", 100), Ok(None));
        assert_eq!(a.add(&piece(1, 0, true), b"ab", 100), Ok(None));
        assert_eq!(
            a.add(&piece(1, 1, true), b"cd", 100),
            Ok(Some(b"abcdef".to_vec()))
        );
        assert_eq!(a.replies.len(), 1);
        a.forget(2);
        assert_eq!(a.replies.len(), 0);
    }

    #[test]
    fn bad_pieces_give_the_reply_up() {
        let mut a = Assembly::default();
        a.add(&piece(1, 0, true), b"ab", 100).unwrap();
        assert_eq!(
            a.add(&piece(1, 0, true), b"ab", 100),
            Err(BadPiece::Inconsistent)
        );
        assert_eq!(a.replies.len(), 0);
        a.add(&piece(1, 3, true), b"ab", 100).unwrap();
        assert_eq!(
            a.add(&piece(1, 1, false), b"ab", 100),
            Err(BadPiece::Inconsistent)
        );
        a.add(&piece(1, 1, false), b"ab", 100).unwrap();
        assert_eq!(
            a.add(&piece(1, 2, false), b"ab", 100),
            Err(BadPiece::Inconsistent)
        );
        a.add(&piece(1, 0, true), &[0; 60], 100).unwrap();
        assert_eq!(
            a.add(&piece(1, 1, false), &[0; 60], 100),
            Err(BadPiece::TooLarge)
        );
        assert_eq!(a.replies.len(), 0);
    }
}
