//! Completion contexts through `nacre_proto::packed`: one encode and one decode per
//! scheme (engine route, client slot, OSS io tag, session id), as a completion's round
//! trip does. Regression guards for the per-completion cost.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nacre_proto::packed::{io_tag, route, session, slot};

fn contexts(c: &mut Criterion) {
    let mut g = c.benchmark_group("packed");
    g.throughput(Throughput::Elements(1));
    g.bench_function("route_bulk_roundtrip", |b| {
        b.iter(|| {
            let w = route::BULK
                .pack(black_box([4321, 0xdead_beef, 17]))
                .expect("fits");
            match route::KIND.get(black_box(w)) {
                route::BULK_KIND => route::BULK.unpack(w).expect("a route")[2],
                _ => 0,
            }
        })
    });
    g.bench_function("route_recv_roundtrip", |b| {
        b.iter(|| {
            let w = route::RECV.pack(black_box([12])).expect("fits");
            route::RECV.unpack(black_box(w)).expect("a route")[0]
        })
    });
    g.bench_function("slot_send_roundtrip", |b| {
        b.iter(|| {
            let w = slot::SEND.pack(black_box([7])).expect("fits");
            match slot::KIND.get(black_box(w)) {
                slot::RECV_KIND => slot::RECV.unpack(w).expect("a slot")[0],
                _ => slot::SEND.unpack(w).expect("a slot")[0],
            }
        })
    });
    g.bench_function("io_tag_roundtrip", |b| {
        b.iter(|| {
            let w = io_tag::TAG
                .pack(black_box([5, 1, 3, 99_999]))
                .expect("fits");
            io_tag::TAG.unpack(black_box(w)).expect("a tag")[3]
        })
    });
    g.bench_function("session_id_roundtrip", |b| {
        b.iter(|| {
            let w = session::ID.pack(black_box([300, 2])).expect("fits");
            session::ID.unpack(black_box(w)).expect("an id")[0]
        })
    });
    // The hot path's refusal: a word that is no route.
    g.bench_function("route_decode_bad", |b| {
        b.iter(|| route::RECV.unpack(black_box(1 << 56 | 1 << 40)).is_err())
    });
    g.finish();
}

criterion_group!(benches, contexts);
criterion_main!(benches);
