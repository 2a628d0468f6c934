//! Frames between an MDS and its standby, over one TCP connection:
//! `[u8 kind][u64 number][u32 length][length bytes]`, little-endian.
//!
//! The standby says who it is (`Hello`), the MDS challenges it (`Challenge`: a nonce),
//! the standby proves it holds the file system key (`Proof`: its nonce and its proof
//! over both nonces and its node), the MDS proves the same (`Welcome`), and only then
//! does the snapshot start: the MDT goes to no one without the key (docs/security.md).
//! Between servers built without a key (tests), the exchange is skipped by both.

use std::io::{Read, Write};

/// Longest payload: a redo record of one batch, or a snapshot chunk.
pub const MAX_PAYLOAD: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Standby to MDS, first: who follows (its node identity, as the MGS knows it).
    Hello { node: String },
    /// MDS to standby: the MDS's nonce.
    Challenge { nonce: [u8; 32] },
    /// Standby to MDS: its nonce and its proof.
    Proof { nonce: [u8; 32], proof: [u8; 32] },
    /// MDS to standby: the MDS's proof; the snapshot follows.
    Welcome { proof: [u8; 32] },
    /// MDS to standby: a chunk of the snapshot (redo records of puts).
    Snap(Vec<u8>),
    /// The snapshot is whole; records follow. `sync`: put each on stable storage
    /// before acknowledging it.
    SnapEnd { sync: bool },
    /// One batch's redo record.
    Rec { seq: u64, bytes: Vec<u8> },
    /// Nothing new: every record up to `seq` was sent.
    Beat { seq: u64 },
    /// Standby to MDS: every record up to `seq` is held.
    Ack { seq: u64 },
}

const HELLO: u8 = 1;
const SNAP: u8 = 2;
const SNAP_END: u8 = 3;
const REC: u8 = 4;
const BEAT: u8 = 5;
const ACK: u8 = 6;
const CHALLENGE: u8 = 7;
const PROOF: u8 = 8;
const WELCOME: u8 = 9;

fn write_frame(w: &mut impl Write, kind: u8, n: u64, payload: &[u8]) -> std::io::Result<()> {
    let mut head = [0u8; 13];
    head[0] = kind;
    head[1..9].copy_from_slice(&n.to_le_bytes());
    head[9..].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    w.write_all(&head)?;
    w.write_all(payload)
}

impl Frame {
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let both: [u8; 64];
        let (kind, n, payload): (u8, u64, &[u8]) = match self {
            Frame::Hello { node } => (HELLO, 0, node.as_bytes()),
            Frame::Challenge { nonce } => (CHALLENGE, 0, nonce),
            Frame::Proof { nonce, proof } => {
                let mut b = [0u8; 64];
                b[..32].copy_from_slice(nonce);
                b[32..].copy_from_slice(proof);
                both = b;
                (PROOF, 0, &both)
            }
            Frame::Welcome { proof } => (WELCOME, 0, proof),
            Frame::Snap(b) => (SNAP, 0, b),
            Frame::SnapEnd { sync } => (SNAP_END, *sync as u64, &[]),
            Frame::Rec { seq, bytes } => (REC, *seq, bytes),
            Frame::Beat { seq } => (BEAT, *seq, &[]),
            Frame::Ack { seq } => (ACK, *seq, &[]),
        };
        write_frame(w, kind, n, payload)
    }

    /// A `Rec` frame straight from the committer's shared record (no copy).
    pub fn write_record(w: &mut impl Write, seq: u64, bytes: &[u8]) -> std::io::Result<()> {
        write_frame(w, REC, seq, bytes)
    }

    pub fn read_from(r: &mut impl Read) -> std::io::Result<Frame> {
        let mut head = [0u8; 13];
        r.read_exact(&mut head)?;
        let n = u64::from_le_bytes(head[1..9].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(head[9..].try_into().expect("4 bytes")) as usize;
        let bad = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
        if len > MAX_PAYLOAD {
            return Err(bad(format!(
                "a frame of {len} bytes (at most {MAX_PAYLOAD})"
            )));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        Ok(match head[0] {
            HELLO => Frame::Hello {
                node: String::from_utf8(payload)
                    .map_err(|_| bad("a node name not in UTF-8".into()))?,
            },
            CHALLENGE => Frame::Challenge {
                nonce: fixed(&payload)?,
            },
            PROOF if payload.len() == 64 => Frame::Proof {
                nonce: fixed(&payload[..32])?,
                proof: fixed(&payload[32..])?,
            },
            WELCOME => Frame::Welcome {
                proof: fixed(&payload)?,
            },
            SNAP => Frame::Snap(payload),
            SNAP_END => Frame::SnapEnd { sync: n != 0 },
            REC => Frame::Rec {
                seq: n,
                bytes: payload,
            },
            BEAT => Frame::Beat { seq: n },
            ACK => Frame::Ack { seq: n },
            k => return Err(bad(format!("unknown frame kind {k}"))),
        })
    }
}

fn fixed(b: &[u8]) -> std::io::Result<[u8; 32]> {
    b.try_into().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a nonce or proof of {} bytes, not 32", b.len()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_errors() {
        let all = [
            Frame::Hello {
                node: "h:/d".into(),
            },
            Frame::Snap(vec![1, 2, 3]),
            Frame::SnapEnd { sync: true },
            Frame::Rec {
                seq: 9,
                bytes: vec![7; 100],
            },
            Frame::Beat { seq: 10 },
            Frame::Ack { seq: 11 },
            Frame::Challenge { nonce: [3; 32] },
            Frame::Proof {
                nonce: [4; 32],
                proof: [5; 32],
            },
            Frame::Welcome { proof: [6; 32] },
        ];
        let mut buf = Vec::new();
        for f in &all {
            f.write_to(&mut buf).unwrap();
        }
        let mut r = buf.as_slice();
        for f in &all {
            assert_eq!(&Frame::read_from(&mut r).unwrap(), f);
        }
        let mut bad = vec![99u8];
        bad.extend_from_slice(&[0; 12]);
        assert!(Frame::read_from(&mut bad.as_slice()).is_err());
        let mut huge = vec![REC];
        huge.extend_from_slice(&0u64.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Frame::read_from(&mut huge.as_slice()).is_err());
        assert!(Frame::read_from(&mut &buf[..5]).is_err(), "torn");
    }
}
