//! Frame encode and decode: an OBJ_READ request with a bulk descriptor (header + body)
//! and its reply, as a client and a server core turn them into bytes and back.
//! Regression guards for the per-message cost, not end-to-end figures.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nacre_proto::object::{IoReply, ObjFlags, ObjTarget, ReadReq};
use nacre_proto::{BulkDesc, Frame, Header, Limits, Opcode};

fn request() -> ReadReq {
    ReadReq {
        target: ObjTarget {
            ost: 3,
            flags: ObjFlags::BULK,
            epoch: 7,
            object: 0x1234_5678,
            cap: None,
        },
        offset: 1 << 20,
        len: 1 << 20,
        bulk: Some(BulkDesc {
            addr: 0x7f00_0000_0000,
            len: 1 << 20,
            key: 42,
        }),
    }
}

fn frames(c: &mut Criterion) {
    let limits = Limits::default();
    let req = request();
    let mut body = [0u8; 128];
    let mut out = [0u8; 256];

    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_request", |b| {
        b.iter(|| {
            let req = black_box(&req);
            let n = req.encode(&mut body).expect("fits");
            let h = Header::request(Opcode::OBJ_READ, black_box(99), 0);
            h.encode_frame(&body[..n], &mut out).expect("fits")
        })
    });

    let n = req.encode(&mut body).expect("fits");
    let len = Header::request(Opcode::OBJ_READ, 99, 0)
        .encode_frame(&body[..n], &mut out)
        .expect("fits");
    let request_bytes = out[..len].to_vec();
    g.bench_function("decode_request", |b| {
        b.iter(|| {
            let f = Frame::decode(black_box(&request_bytes), &limits).expect("a frame");
            ReadReq::decode(f.body).expect("a read")
        })
    });

    let reply = IoReply {
        len: 1 << 20,
        crc: 0xdead_beef,
        inline: &[],
    };
    let head = Header::request(Opcode::OBJ_READ, 99, 0);
    g.bench_function("encode_reply", |b| {
        b.iter(|| {
            let n = black_box(&reply).encode(&mut body).expect("fits");
            head.reply(0, 0)
                .encode_frame(&body[..n], &mut out)
                .expect("fits")
        })
    });

    let n = reply.encode(&mut body).expect("fits");
    let len = head
        .reply(0, 0)
        .encode_frame(&body[..n], &mut out)
        .expect("fits");
    let reply_bytes = out[..len].to_vec();
    g.bench_function("decode_reply", |b| {
        b.iter(|| {
            let f = Frame::decode(black_box(&reply_bytes), &limits).expect("a frame");
            IoReply::decode(f.body).expect("a reply").len
        })
    });
    g.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
