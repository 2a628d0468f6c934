//! Fuzz target: any bytes through the frame decoder, the body readers, the metadata
//! request and reply decoders, the object (OSS) bodies and the layout decoders.
//! Run: `cd proto/fuzz && cargo +nightly fuzz run decode -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_proto::layout::{StripeSpec, StripedLayout};
use nacre_proto::meta::{Reply, Request};
use nacre_proto::{object, BodyReader, Frame, Limits};

fuzz_target!(|data: &[u8]| {
    for limits in [Limits::default(), Limits { max_body: 16 }] {
        if let Ok(frame) = Frame::decode(data, &limits) {
            assert_eq!(frame.body.len(), frame.header.body_len as usize);
            let mut r = BodyReader::new(frame.body);
            let _ = r.bulk();
            let _ = r.u64();
            let _ = r.rest();
            // Metadata bodies: decoding a request must re-encode to the same bytes.
            if let Ok((head, req)) = Request::decode(frame.header.opcode, frame.body) {
                let mut again = Vec::new();
                req.encode(&head, &mut again);
                assert_eq!(again, frame.body);
            }
            let _ = Reply::decode(frame.body);
        }
    }
    // Metadata bodies without a frame around them: the first byte picks the opcode.
    if let Some((&pick, body)) = data.split_first() {
        let op = nacre_proto::Opcode(0x100 + u16::from(pick % 18));
        if let Ok((head, req)) = Request::decode(op, body) {
            let mut again = Vec::new();
            req.encode(&head, &mut again);
            assert_eq!(again, body);
        }
    }
    let _ = StripedLayout::decode(data);
    let _ = StripeSpec::decode(data);
    // Object (OSS) bodies: what decodes must re-encode to the same bytes.
    if let Ok(w) = object::WriteReq::decode(data) {
        let mut again = vec![0u8; data.len()];
        let n = w.encode(&mut again).expect("fits");
        assert_eq!(&again[..n], data);
    }
    if let Ok(r) = object::ReadReq::decode(data) {
        let mut again = vec![0u8; data.len()];
        let n = r.encode(&mut again).expect("fits");
        assert_eq!(&again[..n], data);
    }
    let _ = object::RangeReq::decode(data);
    let _ = object::decode_target(data);
    let _ = object::IoReply::decode(data);
    let _ = object::ObjectAttr::decode(data);
    let _ = object::OstStatfs::decode(data);
});
