//! crc32c as the OSS computes it (`nacre_oss::crc32c_slices`, `crc32c_bufs`: the crc32c
//! crate, hardware-accelerated where the CPU has it) over the sizes the data path
//! moves: 4 KiB, 64 KiB, 1 MiB, and 1 MiB spread over 16 pool slabs of 64 KiB.
//! Regression guards, not end-to-end figures.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nacre_engine::{BufferPool, PoolConfig, SizeClass};
use nacre_oss::{crc32c_bufs, crc32c_slices};

fn crc(c: &mut Criterion) {
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut g = c.benchmark_group("crc32c");
    for (name, len) in [("4KiB", 4096), ("64KiB", 64 << 10), ("1MiB", 1 << 20)] {
        g.throughput(Throughput::Bytes(len as u64));
        let part = &data[..len];
        g.bench_function(format!("slice_{name}"), |b| {
            b.iter(|| crc32c_slices(&[black_box(part)]))
        });
    }

    let cfg = PoolConfig {
        classes: vec![SizeClass {
            size: 64 << 10,
            count: 16,
        }],
        huge_pages: false,
    };
    let mut pool = BufferPool::new(&cfg, None).expect("a pool");
    let bufs: Vec<_> = data
        .chunks(64 << 10)
        .map(|chunk| {
            let mut b = pool.get(64 << 10).expect("a slab");
            b.copy_in(chunk);
            b
        })
        .collect();
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("bufs_16x64KiB", |b| {
        b.iter(|| crc32c_bufs(black_box(&bufs), 0, 1 << 20))
    });
    g.finish();
    for b in bufs {
        pool.put(b).map_err(drop).expect("ours");
    }
}

criterion_group!(benches, crc);
criterion_main!(benches);
