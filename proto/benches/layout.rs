//! Layout arithmetic: the stripe of a file offset, its place in the object, and a file
//! extent cut at stripe edges (pieces) or gathered per object (object extents), over a
//! 1 MiB x 8-stripe layout. Regression guards, not end-to-end figures.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nacre_proto::layout::{ObjectRef, StripedLayout};

fn layout() -> StripedLayout {
    StripedLayout {
        stripe_size: 1 << 20,
        objects: (0..8)
            .map(|i| ObjectRef {
                ost: i,
                oid: 1000 + u64::from(i),
            })
            .collect(),
    }
}

fn arithmetic(c: &mut Criterion) {
    let l = layout();
    let mut g = c.benchmark_group("layout");
    g.throughput(Throughput::Elements(1));
    // Offsets spread over the file, so no division is the same twice in a row.
    let mut at = 0u64;
    g.bench_function("stripe_lookup", |b| {
        b.iter(|| {
            at = at
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // Up to 16 TiB into the file.
            let o = black_box(at >> 20);
            (l.stripe_of(o), l.object_offset(o))
        })
    });
    // A 4 MiB write at an unaligned offset: 5 pieces over 5 stripes.
    g.bench_function("pieces_4MiB", |b| {
        b.iter(|| {
            l.pieces(black_box((3 << 20) + 4096), black_box(4 << 20))
                .expect("in range")
                .len()
        })
    });
    // A 16 MiB read: two rounds over all 8 stripes.
    g.bench_function("object_extents_16MiB", |b| {
        b.iter(|| {
            l.object_extents(black_box(4096), black_box(16 << 20))
                .expect("in range")
                .len()
        })
    });
    g.finish();
}

criterion_group!(benches, arithmetic);
criterion_main!(benches);
