//! The fixed frame header and the frame codec.
//!
//! Layout (little-endian, 32 bytes), followed by `body_len` bytes of body:
//!
//! | off | size | field                                   |
//! |-----|------|-----------------------------------------|
//! | 0   | 4    | magic `NCR1`                            |
//! | 4   | 2    | version (1)                             |
//! | 6   | 2    | opcode                                  |
//! | 8   | 2    | flags (REPLY, BULK, MORE)               |
//! | 10  | 2    | fragment: a reply's piece index, else 0 |
//! | 12  | 4    | status: 0 or a negative errno (replies) |
//! | 16  | 8    | request id                              |
//! | 24  | 4    | body length                             |
//! | 28  | 4    | session: the id HELLO gave the sender   |
//!
//! One fabric message carries exactly one frame: trailing bytes are an error.
//!
//! A reply may come in pieces, each a frame of its own: where the transport delivers
//! only small messages safely (shm: its inject size), the server cuts a long reply body
//! into fragments numbered from 0, every one but the last flagged MORE, and the client
//! puts the body back together by number (pieces may arrive in any order). Requests are
//! never cut: a request with MORE or a fragment number does not decode.

/// `NCR1` as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"NCR1");
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 32;

/// An operation code. Unknown codes decode fine; the dispatcher answers them ENOSYS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Opcode(pub u16);

impl Opcode {
    /// Liveness and latency probe: the reply echoes the body.
    pub const PING: Opcode = Opcode(1);
    /// Store the bulk buffer the client describes (the server pulls it with RMA read).
    pub const BULK_WRITE: Opcode = Opcode(2);
    /// Fill the bulk buffer the client describes (the server pushes it with RMA write).
    pub const BULK_READ: Opcode = Opcode(3);
    /// First message of a client to a server core: the body is the client's fabric
    /// name; the reply's body is the session id (u32) to put in every later header.
    pub const HELLO: Opcode = Opcode(4);
    /// A client's endpoint closes (its process exits, or its thread): the server core
    /// may end the session at once instead of at its idle time. No reply.
    pub const BYE: Opcode = Opcode(5);
}

/// The metadata (MDS) opcodes, 0x100..=0x11b: bodies in [`crate::meta`].
impl Opcode {
    pub const MDS_LOOKUP: Opcode = Opcode(0x100);
    pub const MDS_CREATE: Opcode = Opcode(0x101);
    pub const MDS_OPEN: Opcode = Opcode(0x102);
    pub const MDS_CLOSE: Opcode = Opcode(0x103);
    pub const MDS_GETATTR: Opcode = Opcode(0x104);
    pub const MDS_SETATTR: Opcode = Opcode(0x105);
    pub const MDS_MKDIR: Opcode = Opcode(0x106);
    pub const MDS_RMDIR: Opcode = Opcode(0x107);
    pub const MDS_READDIR: Opcode = Opcode(0x108);
    pub const MDS_UNLINK: Opcode = Opcode(0x109);
    pub const MDS_RENAME: Opcode = Opcode(0x10a);
    pub const MDS_SYMLINK: Opcode = Opcode(0x10b);
    pub const MDS_READLINK: Opcode = Opcode(0x10c);
    pub const MDS_LINK: Opcode = Opcode(0x10d);
    pub const MDS_STATFS: Opcode = Opcode(0x10e);
    pub const MDS_GET_LAYOUT: Opcode = Opcode(0x10f);
    pub const MDS_SET_LAYOUT: Opcode = Opcode(0x110);
    pub const MDS_REPORT_SIZE: Opcode = Opcode(0x111);
    pub const MDS_LOCK: Opcode = Opcode(0x112);
    pub const MDS_CHECK: Opcode = Opcode(0x113);
    pub const MDS_REOPEN: Opcode = Opcode(0x114);
    pub const MDS_MIRROR_STATE: Opcode = Opcode(0x115);
    pub const MDS_RESYNC_START: Opcode = Opcode(0x116);
    pub const MDS_HSM: Opcode = Opcode(0x117);
    pub const MDS_MKNOD: Opcode = Opcode(0x118);
    pub const MDS_READDIR_PLUS: Opcode = Opcode(0x119);
    pub const MDS_CLOSE_SIZED: Opcode = Opcode(0x11a);
    pub const MDS_PING: Opcode = Opcode(0x11b);

    /// Whether the opcode is in the metadata block.
    pub fn is_meta(self) -> bool {
        (0x100..=0x11b).contains(&self.0)
    }
}

/// Frame flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u16);

impl Flags {
    /// The frame answers a request with the same id.
    pub const REPLY: Flags = Flags(1);
    /// The body starts with a bulk descriptor (see [`crate::BulkDesc`]).
    pub const BULK: Flags = Flags(2);
    /// The frame is a piece of a reply and more pieces follow (see the module docs).
    pub const MORE: Flags = Flags(4);
    const KNOWN: u16 = 0b111;

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub opcode: Opcode,
    pub flags: Flags,
    /// 0, or a negative errno in a reply.
    pub status: i32,
    pub request_id: u64,
    pub body_len: u32,
    /// Who sends: 0 before HELLO, then the id the server core assigned.
    pub session: u32,
    /// A reply's piece number when it comes in pieces (see the module docs), else 0.
    pub fragment: u16,
}

/// Size limits a receiver enforces before it looks at a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest inline body; bulk data never travels inline.
    pub max_body: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 64 * 1024,
        }
    }
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated frame: {have} bytes, need {need}")]
    Truncated { have: usize, need: usize },
    #[error("bad magic {0:#010x}: not a nacre frame")]
    BadMagic(u32),
    #[error("unsupported protocol version {0} (this build speaks {VERSION})")]
    UnsupportedVersion(u16),
    #[error("body of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u32, max: u32 },
    #[error("{0} trailing bytes after the frame")]
    Trailing(usize),
    #[error("a request carries reply fragment fields")]
    Reserved,
    #[error("unknown flags {0:#06x}")]
    UnknownFlags(u16),
}

impl DecodeError {
    /// A small number per kind of error (0..=6), e.g. for counting or logging by kind.
    pub fn kind_index(&self) -> u32 {
        match self {
            DecodeError::Truncated { .. } => 0,
            DecodeError::BadMagic(_) => 1,
            DecodeError::UnsupportedVersion(_) => 2,
            DecodeError::TooLarge { .. } => 3,
            DecodeError::Trailing(_) => 4,
            DecodeError::Reserved => 5,
            DecodeError::UnknownFlags(_) => 6,
        }
    }

    /// The errno a reply to such a message carries.
    pub fn errno(&self) -> i32 {
        match self {
            DecodeError::UnsupportedVersion(_) => 95, // EOPNOTSUPP
            DecodeError::TooLarge { .. } => 90,       // EMSGSIZE
            _ => 74,                                  // EBADMSG
        }
    }
}

/// A frame borrowed from a receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub header: Header,
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Decodes exactly one frame from `bytes`.
    pub fn decode(bytes: &'a [u8], limits: &Limits) -> Result<Frame<'a>, DecodeError> {
        let header = Header::decode(bytes, limits)?;
        let end = HEADER_LEN + header.body_len as usize;
        if bytes.len() < end {
            return Err(DecodeError::Truncated {
                have: bytes.len(),
                need: end,
            });
        }
        if bytes.len() > end {
            return Err(DecodeError::Trailing(bytes.len() - end));
        }
        Ok(Frame {
            header,
            body: &bytes[HEADER_LEN..end],
        })
    }
}

impl Header {
    pub fn request(opcode: Opcode, request_id: u64, body_len: u32) -> Header {
        Header {
            opcode,
            flags: Flags::default(),
            status: 0,
            request_id,
            body_len,
            session: 0,
            fragment: 0,
        }
    }

    /// The reply header to `self` with `status` (0 or a negative errno).
    pub fn reply(&self, status: i32, body_len: u32) -> Header {
        Header {
            opcode: self.opcode,
            flags: Flags::REPLY,
            status,
            request_id: self.request_id,
            body_len,
            session: self.session,
            fragment: 0,
        }
    }

    /// Decodes and validates the header at the start of `bytes` (body not checked).
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Header, DecodeError> {
        let Some(h) = bytes.get(..HEADER_LEN) else {
            return Err(DecodeError::Truncated {
                have: bytes.len(),
                need: HEADER_LEN,
            });
        };
        let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let magic = u32_at(0);
        if magic != MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        let version = u16_at(4);
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let flags = u16_at(8);
        if flags & !Flags::KNOWN != 0 {
            return Err(DecodeError::UnknownFlags(flags));
        }
        let fragment = u16_at(10);
        let piece = fragment != 0 || flags & Flags::MORE.0 != 0;
        if piece && flags & Flags::REPLY.0 == 0 {
            return Err(DecodeError::Reserved);
        }
        let body_len = u32_at(24);
        if body_len > limits.max_body {
            return Err(DecodeError::TooLarge {
                len: body_len,
                max: limits.max_body,
            });
        }
        Ok(Header {
            opcode: Opcode(u16_at(6)),
            flags: Flags(flags),
            status: u32_at(12) as i32,
            request_id: u64::from_le_bytes(h[16..24].try_into().expect("8 bytes")),
            body_len,
            session: u32_at(28),
            fragment,
        })
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4..6].copy_from_slice(&VERSION.to_le_bytes());
        out[6..8].copy_from_slice(&self.opcode.0.to_le_bytes());
        out[8..10].copy_from_slice(&self.flags.0.to_le_bytes());
        out[10..12].copy_from_slice(&self.fragment.to_le_bytes());
        out[12..16].copy_from_slice(&self.status.to_le_bytes());
        out[16..24].copy_from_slice(&self.request_id.to_le_bytes());
        out[24..28].copy_from_slice(&self.body_len.to_le_bytes());
        out[28..32].copy_from_slice(&self.session.to_le_bytes());
    }

    /// Encodes header and body into `out`; returns the frame length, or None if `out` is
    /// too small. `body_len` is taken from `body`.
    pub fn encode_frame(&self, body: &[u8], out: &mut [u8]) -> Option<usize> {
        let len = HEADER_LEN.checked_add(body.len())?;
        let out = out.get_mut(..len)?;
        let mut h = *self;
        h.body_len = u32::try_from(body.len()).ok()?;
        let (head, rest) = out.split_at_mut(HEADER_LEN);
        h.encode(head.try_into().expect("HEADER_LEN bytes"));
        rest.copy_from_slice(body);
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = vec![0; HEADER_LEN + body.len()];
        let h = Header::request(Opcode::PING, 7, 0);
        assert_eq!(h.encode_frame(body, &mut out), Some(out.len()));
        out
    }

    #[test]
    fn round_trip() {
        let bytes = frame(b"hello");
        let f = Frame::decode(&bytes, &Limits::default()).unwrap();
        assert_eq!(f.header.opcode, Opcode::PING);
        assert_eq!(f.header.request_id, 7);
        assert_eq!(f.body, b"hello");
        let r = f.header.reply(-5, 0);
        assert!(r.flags.contains(Flags::REPLY));
        assert_eq!((r.request_id, r.status), (7, -5));
    }

    #[test]
    fn reply_pieces_carry_their_number_and_more() {
        let mut h = Header::request(Opcode::PING, 9, 0).reply(0, 0);
        h.fragment = 3;
        h.flags = h.flags.with(Flags::MORE);
        let mut out = vec![0; HEADER_LEN + 2];
        let n = h.encode_frame(b"ab", &mut out).unwrap();
        let f = Frame::decode(&out[..n], &Limits::default()).unwrap();
        assert_eq!(f.header.fragment, 3);
        assert!(f.header.flags.contains(Flags::MORE) && f.header.flags.contains(Flags::REPLY));
        assert_eq!(f.body, b"ab");
    }

    #[test]
    fn every_kind_of_bad_frame_is_an_error() {
        let limits = Limits::default();
        let good = frame(b"abc");
        for cut in 0..good.len() {
            assert!(matches!(
                Frame::decode(&good[..cut], &limits),
                Err(DecodeError::Truncated { .. })
            ));
        }
        let mut bad = good.clone();
        bad[0] ^= 1;
        assert!(matches!(
            Frame::decode(&bad, &limits),
            Err(DecodeError::BadMagic(_))
        ));
        let mut bad = good.clone();
        bad[4] = 9;
        assert_eq!(
            Frame::decode(&bad, &limits),
            Err(DecodeError::UnsupportedVersion(9))
        );
        let mut bad = good.clone();
        bad[10] = 1;
        assert_eq!(Frame::decode(&bad, &limits), Err(DecodeError::Reserved));
        let mut bad = good.clone();
        bad[8] = Flags::MORE.0 as u8;
        assert_eq!(Frame::decode(&bad, &limits), Err(DecodeError::Reserved));
        let mut bad = good.clone();
        bad[9] = 0x80;
        assert!(matches!(
            Frame::decode(&bad, &limits),
            Err(DecodeError::UnknownFlags(_))
        ));
        let mut long = good.clone();
        long.push(0);
        assert_eq!(Frame::decode(&long, &limits), Err(DecodeError::Trailing(1)));
        let mut huge = good.clone();
        huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Frame::decode(&huge, &limits),
            Err(DecodeError::TooLarge { .. })
        ));
        assert_eq!(DecodeError::TooLarge { len: 1, max: 0 }.errno(), 90);
    }

    #[test]
    fn encode_refuses_a_short_buffer() {
        let h = Header::request(Opcode::PING, 1, 0);
        let mut out = [0u8; HEADER_LEN + 2];
        assert_eq!(h.encode_frame(b"abc", &mut out), None);
        assert_eq!(h.encode_frame(b"ab", &mut out), Some(HEADER_LEN + 2));
    }
}
