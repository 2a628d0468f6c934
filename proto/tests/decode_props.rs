//! Property tests of the decoder, run in CI (the fuzz target in proto/fuzz digs deeper).

use nacre_proto::{BodyReader, Flags, Frame, Header, Limits, Opcode, HEADER_LEN};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the decoder, and whatever decodes is self-consistent.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(f) = Frame::decode(&bytes, &Limits::default()) {
            prop_assert_eq!(f.body.len(), f.header.body_len as usize);
            prop_assert_eq!(bytes.len(), HEADER_LEN + f.body.len());
        }
        let mut r = BodyReader::new(&bytes);
        let _ = (r.u32(), r.bulk(), r.u64());
    }

    /// Encode then decode gives back the same frame.
    #[test]
    fn round_trip(op in any::<u16>(), reply in any::<bool>(), status in any::<i32>(),
                  id in any::<u64>(), body in proptest::collection::vec(any::<u8>(), 0..512),
                  fragment in any::<u16>(), more in any::<bool>()) {
        let mut h = Header::request(Opcode(op), id, 0);
        if reply {
            h.flags = Flags::REPLY;
            h.fragment = fragment;
            if more { h.flags = h.flags.with(Flags::MORE); }
        }
        h.status = status;
        let mut out = vec![0; HEADER_LEN + body.len()];
        let n = h.encode_frame(&body, &mut out).unwrap();
        let f = Frame::decode(&out[..n], &Limits::default()).unwrap();
        prop_assert_eq!(f.header.opcode, Opcode(op));
        prop_assert_eq!(f.header.flags, h.flags);
        prop_assert_eq!(f.header.fragment, h.fragment);
        prop_assert_eq!((f.header.status, f.header.request_id), (status, id));
        prop_assert_eq!(f.body, &body[..]);
    }

    /// A valid frame with any single byte changed, cut or extended decodes to a frame or
    /// to an error, never a panic; a cut one is always an error.
    #[test]
    fn mutated_frames_are_handled(body in proptest::collection::vec(any::<u8>(), 0..64),
                                  at in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
        let mut out = vec![0; HEADER_LEN + body.len()];
        let n = Header::request(Opcode::PING, 1, 0).encode_frame(&body, &mut out).unwrap();
        let mut m = out.clone();
        let i = at % n;
        m[i] = byte;
        let _ = Frame::decode(&m, &Limits::default());
        let c = cut % n;
        prop_assert!(Frame::decode(&out[..c], &Limits::default()).is_err());
        let limits = Limits { max_body: (body.len() as u32).saturating_sub(1) };
        if !body.is_empty() {
            prop_assert!(Frame::decode(&out, &limits).is_err());
        }
    }
}
