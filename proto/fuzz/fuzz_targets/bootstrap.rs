//! Fuzz target: any bytes through the bootstrap (MGS) frame, request, reply and map
//! decoders. Run: `cd proto/fuzz && cargo +nightly fuzz run bootstrap -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_proto::bootstrap::{
    BootHeader, BootReply, BootRequest, ClusterMap, BOOT_HEADER_LEN, MAX_REPLY_BODY,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = BootHeader::decode(data, MAX_REPLY_BODY) {
        let body = &data[BOOT_HEADER_LEN.min(data.len())..];
        if let Ok(req) = BootRequest::decode(h.op, body) {
            // What decodes re-encodes to the same frame.
            let frame = req.encode().expect("a decoded request is within limits");
            assert_eq!(&frame[BOOT_HEADER_LEN..], body);
        }
        if let Ok(BootReply::Map(m)) = BootReply::decode(h.op, h.status, body) {
            assert_eq!(ClusterMap::decode(&m.encode()), Ok(m));
        }
    }
    let _ = ClusterMap::decode(data);
});
