//! Cost of the bulk checksum: crc32c over pool slabs (`nacre_oss::crc32c_bufs`) for a few
//! request sizes, in GB/s. Run with `cargo run --release -p nacre-oss --example crc_speed`.

use std::time::Instant;

use nacre_engine::{BufferPool, PoolConfig, SizeClass};
use nacre_oss::{crc32c_bufs, scatter};

fn main() {
    let mut pool = BufferPool::new(
        &PoolConfig {
            classes: vec![SizeClass {
                size: 1 << 20,
                count: 16,
            }],
            huge_pages: true,
        },
        None,
    )
    .expect("pool");
    for size in [4096usize, 64 << 10, 1 << 20, 16 << 20] {
        let n = size.div_ceil(1 << 20);
        let mut bufs: Vec<_> = (0..n).map(|_| pool.get(1 << 20).expect("slab")).collect();
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        scatter(&mut bufs, 0, &data);
        assert_eq!(crc32c_bufs(&bufs, 0, size), crc32c::crc32c(&data));
        // About 2 GB of checksumming per size.
        let rounds = (2usize << 30) / size;
        let start = Instant::now();
        let mut acc = 0u32;
        for _ in 0..rounds {
            acc = acc.wrapping_add(crc32c_bufs(std::hint::black_box(&bufs), 0, size));
        }
        let secs = start.elapsed().as_secs_f64();
        let gbs = (rounds * size) as f64 / secs / 1e9;
        println!(
            "crc32c over {:>8} B in {n} slab(s): {gbs:6.2} GB/s ({:.2} us per request) [{acc:08x}]",
            size,
            secs / rounds as f64 * 1e6
        );
        for b in bufs {
            pool.put(b).expect("same pool");
        }
    }
}
