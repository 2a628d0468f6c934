//! Fuzz target: any bytes through the frame decoder and the body readers.
//! Run: `cd proto/fuzz && cargo +nightly fuzz run decode -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_proto::{BodyReader, Frame, Limits};

fuzz_target!(|data: &[u8]| {
    for limits in [Limits::default(), Limits { max_body: 16 }] {
        if let Ok(frame) = Frame::decode(data, &limits) {
            assert_eq!(frame.body.len(), frame.header.body_len as usize);
            let mut r = BodyReader::new(frame.body);
            let _ = r.bulk();
            let _ = r.u64();
            let _ = r.rest();
        }
    }
});
