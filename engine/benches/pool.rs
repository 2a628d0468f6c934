//! The registered buffer pool's take and give back (`BufferPool::get` + `put`), per
//! size class. The pool is built as its unit tests build it: without an endpoint, so
//! unregistered; registration happens once at start and does not touch get/put, which
//! are the same O(1) stack operations either way. Regression guards, not end-to-end
//! figures.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nacre_engine::{BufferPool, PoolConfig};

fn pool() -> BufferPool {
    // Unregistered, on normal pages: get and put do not depend on either.
    let cfg = PoolConfig {
        huge_pages: false,
        ..PoolConfig::default()
    };
    BufferPool::new(&cfg, None).expect("a pool")
}

fn take_give(c: &mut Criterion) {
    let mut pool = pool();
    let mut g = c.benchmark_group("pool");
    g.throughput(Throughput::Elements(1));
    for (name, size) in [("4KiB", 4096), ("64KiB", 64 << 10), ("1MiB", 1 << 20)] {
        g.bench_function(format!("get_put_{name}"), |b| {
            b.iter(|| {
                let buf = pool.get(black_box(size)).expect("a free slab");
                pool.put(black_box(buf)).map_err(drop).expect("ours");
            })
        });
    }
    // A request's worth: 16 slabs of 64 KiB taken, then all given back.
    let mut bufs = Vec::with_capacity(16);
    g.throughput(Throughput::Elements(16));
    g.bench_function("get_put_16x64KiB", |b| {
        b.iter(|| {
            for _ in 0..16 {
                bufs.push(pool.get(black_box(64 << 10)).expect("a free slab"));
            }
            for buf in bufs.drain(..) {
                pool.put(buf).map_err(drop).expect("ours");
            }
        })
    });
    g.finish();
}

criterion_group!(benches, take_give);
criterion_main!(benches);
