//! Object store throughput on this machine's disk, io_uring backend, one core:
//! aligned and unaligned 1 MiB writes (8 in flight, to 8 objects), 1 MiB reads, small
//! unaligned appends one at a time (edge read + write + size xattr each), and for
//! comparison the cost of keeping the size with ftruncate instead (the rejected design).
//! `cargo run --release -p nacre-oss --example object_speed [DIR]` (default: under
//! target/). Page cache is bypassed (O_DIRECT); numbers depend on the disk.

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Instant;

use nacre_engine::{BufferPool, PoolConfig, SizeClass, Storage, StorageConfig};
use nacre_oss::superblock::{format, FormatRequest};
use nacre_oss::{Io, ObjectStore, StoreConfig, WriteMode};

const MIB: usize = 1 << 20;

#[repr(align(4096))]
struct AlignedBlock([u8; 4096]);

struct Bench {
    store: ObjectStore,
    storage: Storage,
    pool: BufferPool,
}

impl Bench {
    /// Runs `n` requests with at most `depth` in flight; `submit(i)` queues request i.
    fn run(&mut self, n: usize, depth: usize, mut submit: impl FnMut(&mut Self, usize)) -> f64 {
        let start = Instant::now();
        let (mut sent, mut done) = (0, 0);
        let mut out = Vec::new();
        while done < n {
            while sent < n && sent - done < depth {
                submit(self, sent);
                sent += 1;
            }
            let mut io = Io {
                storage: &mut self.storage,
                pool: &mut self.pool,
            };
            self.store.wait(&mut io, &mut out).expect("storage");
            for c in out.drain(..) {
                c.result.expect("object I/O");
                for b in c.bufs {
                    self.pool.put(b).expect("our pool");
                }
                done += 1;
            }
        }
        start.elapsed().as_secs_f64()
    }

    fn slabs(&mut self, head: usize, len: usize) -> Vec<nacre_engine::PoolBuf> {
        nacre_oss::store::plan::slab_sizes(head + len, MIB)
            .into_iter()
            .map(|s| self.pool.get(s).expect("pool sized for the depth"))
            .collect()
    }
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/oss-speed"));
    let _ = std::fs::remove_dir_all(&dir);
    format(
        &dir,
        &FormatRequest {
            fsname: "bench".into(),
            index: 0,
            label: None,
            generation: 1,
            force: false,
        },
    )
    .expect("format");
    let pool = BufferPool::new(
        &PoolConfig {
            classes: vec![
                SizeClass {
                    size: 4096,
                    count: 64,
                },
                SizeClass {
                    size: 8192,
                    count: 16,
                },
                SizeClass {
                    size: MIB,
                    count: 40,
                },
            ],
            huge_pages: true,
        },
        None,
    )
    .expect("pool");
    let storage = Storage::new(&StorageConfig::default(), Some(&pool)).expect("storage");
    println!("backend {:?}, target {}", storage.backend(), dir.display());
    let store = ObjectStore::open(&dir, StoreConfig::default()).expect("target");
    let mut b = Bench {
        store,
        storage,
        pool,
    };
    let n = 512;
    let gbs = |secs: f64, bytes: usize| bytes as f64 / secs / 1e9;

    let t = b.run(n, 8, |b, i| {
        let bufs = b.slabs(0, MIB);
        let (obj, off) = ((i % 8) as u64 + 1, (i / 8 * MIB) as u64);
        b.store
            .write(obj, off, MIB, bufs, WriteMode::Async, i as u64);
    });
    println!(
        "write 1 MiB aligned, qd 8:       {:5.2} GB/s",
        gbs(t, n * MIB)
    );

    let t = b.run(n, 8, |b, i| {
        let bufs = b.slabs(100, MIB);
        let (obj, off) = ((i % 8) as u64 + 11, (i / 8 * MIB) as u64 + 100);
        b.store
            .write(obj, off, MIB, bufs, WriteMode::Async, i as u64);
    });
    println!(
        "write 1 MiB at +100 B, qd 8:     {:5.2} GB/s (two edge blocks each)",
        gbs(t, n * MIB)
    );

    let t = b.run(n, 8, |b, i| {
        let (obj, off) = ((i % 8) as u64 + 1, (i / 8 * MIB) as u64);
        b.store.read(obj, off, MIB, i as u64);
    });
    println!(
        "read 1 MiB aligned, qd 8:        {:5.2} GB/s",
        gbs(t, n * MIB)
    );

    let appends = 2000;
    let t = b.run(appends, 1, |b, i| {
        let mut bufs = b.slabs(i * 100 % 4096, 100);
        nacre_oss::scatter(&mut bufs, i * 100 % 4096, &[i as u8; 100]);
        b.store
            .write(99, (i * 100) as u64, 100, bufs, WriteMode::Async, i as u64);
    });
    println!(
        "append 100 B, qd 1:              {:5.1} us each (edge read + write + size xattr)",
        t / appends as f64 * 1e6
    );

    // The rejected design: the same appends through O_DIRECT, each followed by an
    // ftruncate to the logical end (which zeroes the block's tail through the page
    // cache, so the next O_DIRECT read of that block first writes the page back).
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .custom_flags(libc::O_DIRECT)
        .open(dir.join("ftruncate-probe"))
        .expect("probe file");
    let mut block = AlignedBlock([0; 4096]);
    let start = Instant::now();
    for i in 0..appends as u64 {
        let (off, at) = (i * 100, i * 100 / 4096 * 4096);
        f.read_at(&mut block.0, at).expect("read");
        let pos = (off - at) as usize;
        let n = 100.min(4096 - pos);
        block.0[pos..pos + n].fill(i as u8);
        f.write_at(&block.0, at).expect("write");
        f.set_len(off + n as u64).expect("ftruncate");
    }
    println!(
        "same with ftruncate, pread/pwrite: {:5.1} us each",
        start.elapsed().as_secs_f64() / appends as f64 * 1e6
    );
    let start = Instant::now();
    for i in 0..appends as u64 {
        let (off, at) = (i * 100, i * 100 / 4096 * 4096);
        f.read_at(&mut block.0, at).expect("read");
        f.write_at(&block.0, at).expect("write");
        let _ = off;
    }
    println!(
        "same without ftruncate:           {:5.1} us each",
        start.elapsed().as_secs_f64() / appends as f64 * 1e6
    );
    let start = Instant::now();
    for i in 0..20_000u64 {
        rustix::fs::fsetxattr(
            &f,
            "user.nacre.size",
            &i.to_le_bytes(),
            rustix::fs::XattrFlags::empty(),
        )
        .expect("xattr");
    }
    println!(
        "fsetxattr alone:                  {:5.2} us each",
        start.elapsed().as_secs_f64() / 20_000.0 * 1e6
    );
    b.store.close_idle(&mut b.storage);
    let _ = std::fs::remove_dir_all(&dir);
}
