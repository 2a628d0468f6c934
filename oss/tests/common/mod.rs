//! A core's storage, pool and object store on a fresh target, driven to completion.
#![allow(dead_code)]

pub mod loopfs;

use std::path::{Path, PathBuf};

use nacre_engine::{Backend, BufferPool, PoolConfig, SizeClass, Storage, StorageConfig};
use nacre_oss::superblock::{format, FormatRequest};
use nacre_oss::{
    scatter, slabs_for, Errno, Io, ObjectCompletion, ObjectStore, StoreConfig, WriteMode,
};

pub const SLAB: usize = 1 << 20;

pub fn target_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("oss-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub fn pool_config(big: usize) -> PoolConfig {
    PoolConfig {
        classes: vec![
            SizeClass {
                size: 4096,
                count: 64,
            },
            SizeClass {
                size: 64 << 10,
                count: 64,
            },
            SizeClass {
                size: SLAB,
                count: big,
            },
        ],
        huge_pages: false,
    }
}

pub struct Harness {
    // Drop order: store, storage (waits for I/O), then the pool.
    pub store: ObjectStore,
    pub storage: Storage,
    pub pool: BufferPool,
    pub dir: PathBuf,
    next_tag: u64,
}

pub fn format_target(dir: &Path) {
    format(
        dir,
        &FormatRequest {
            fsname: "test".into(),
            index: 0,
            label: None,
            generation: 1,
            force: false,
        },
    )
    .unwrap();
}

impl Harness {
    pub fn new(name: &str, backend: Backend) -> Harness {
        let dir = target_dir(name);
        format_target(&dir);
        Harness::open(&dir, backend, 16)
    }

    pub fn open(dir: &Path, backend: Backend, big_slabs: usize) -> Harness {
        let pool = BufferPool::new(&pool_config(big_slabs), None).unwrap();
        let cfg = StorageConfig {
            backend: Some(backend),
            require_io_uring: backend == Backend::IoUring,
            ..StorageConfig::default()
        };
        let storage = Storage::new(&cfg, Some(&pool)).unwrap();
        assert_eq!(storage.backend(), backend);
        let store = ObjectStore::open(dir, StoreConfig::default()).unwrap();
        Harness {
            store,
            storage,
            pool,
            dir: dir.to_path_buf(),
            next_tag: 1,
        }
    }

    pub fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// Slabs holding `data` laid out for a write at `offset` (what the bulk pull does).
    pub fn bulk(&mut self, offset: u64, data: &[u8]) -> Vec<nacre_engine::PoolBuf> {
        let head = (offset % 4096) as usize;
        let mut bufs = slabs_for(&mut self.pool, offset, data.len()).expect("pool large enough");
        scatter(&mut bufs, head, data);
        bufs
    }

    pub fn submit_write(&mut self, obj: u64, offset: u64, data: &[u8]) -> u64 {
        let tag = self.tag();
        let bufs = self.bulk(offset, data);
        self.store
            .write(obj, offset, data.len(), bufs, WriteMode::Async, tag);
        tag
    }

    /// Drives the store until every operation submitted so far finished.
    pub fn drain(&mut self) -> Vec<ObjectCompletion> {
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.store.pending() > 0 {
            assert!(std::time::Instant::now() < deadline, "object store stuck");
            let mut io = Io {
                storage: &mut self.storage,
                pool: &mut self.pool,
            };
            let n = self.store.wait(&mut io, &mut out).unwrap();
            if n == 0 && self.store.pending() > 0 {
                // Waiting on slabs the test holds: none here, so it is a bug.
                let mut io = Io {
                    storage: &mut self.storage,
                    pool: &mut self.pool,
                };
                assert!(self.store.progress(&mut io), "no progress with ops pending");
            }
        }
        out
    }

    /// Runs what is queued and returns the one completion (slabs given back).
    pub fn one(&mut self) -> Result<usize, Errno> {
        let mut done = self.drain();
        assert_eq!(done.len(), 1);
        let c = done.pop().unwrap();
        self.give_back(c).0
    }

    pub fn give_back(&mut self, c: ObjectCompletion) -> (Result<usize, Errno>, Vec<u8>) {
        let mut data = vec![0; c.result.unwrap_or(0)];
        c.copy_to(&mut data);
        for b in c.bufs {
            self.pool.put(b).expect("our pool");
        }
        (c.result, data)
    }

    pub fn write(&mut self, obj: u64, offset: u64, data: &[u8]) -> Result<usize, Errno> {
        self.submit_write(obj, offset, data);
        self.one()
    }

    pub fn write_sync(&mut self, obj: u64, offset: u64, data: &[u8]) -> Result<usize, Errno> {
        let tag = self.tag();
        let bufs = self.bulk(offset, data);
        self.store
            .write(obj, offset, data.len(), bufs, WriteMode::Sync, tag);
        self.one()
    }

    pub fn read(&mut self, obj: u64, offset: u64, len: usize) -> Result<Vec<u8>, Errno> {
        let tag = self.tag();
        self.store.read(obj, offset, len, tag);
        let mut done = self.drain();
        assert_eq!(done.len(), 1);
        let (r, data) = self.give_back(done.pop().unwrap());
        r.map(|_| data)
    }

    pub fn punch(&mut self, obj: u64, offset: u64, len: u64) -> Result<usize, Errno> {
        let tag = self.tag();
        self.store.punch(obj, offset, len, tag);
        self.one()
    }

    pub fn truncate(&mut self, obj: u64, size: u64) -> Result<usize, Errno> {
        let tag = self.tag();
        self.store.truncate(obj, size, tag);
        self.one()
    }

    pub fn sync(&mut self, obj: u64) -> Result<usize, Errno> {
        let tag = self.tag();
        self.store.sync(obj, true, tag);
        self.one()
    }

    pub fn destroy(&mut self, obj: u64) -> Result<usize, Errno> {
        let tag = self.tag();
        self.store.destroy(obj, tag);
        self.one()
    }

    /// All slabs are back in the pool.
    pub fn assert_pool_full(&self) {
        for (size, free, total) in self.pool.usage() {
            assert_eq!(free, total, "slabs of {size} B missing from the pool");
        }
    }
}

/// Deterministic bytes for (seed, position).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// xorshift for randomized tests (seeded, reproducible).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The in-memory model of an object's bytes.
#[derive(Default, Clone)]
pub struct Model(pub Vec<u8>);

impl Model {
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let end = offset as usize + data.len();
        if data.is_empty() {
            return;
        }
        if self.0.len() < end {
            self.0.resize(end, 0);
        }
        self.0[offset as usize..end].copy_from_slice(data);
    }
    pub fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let start = (offset as usize).min(self.0.len());
        let end = (offset as usize).saturating_add(len).min(self.0.len());
        self.0[start..end].to_vec()
    }
    pub fn truncate(&mut self, size: u64) {
        self.0.resize(size as usize, 0);
    }
    pub fn punch(&mut self, offset: u64, len: u64) {
        let start = (offset as usize).min(self.0.len());
        let end = (offset.saturating_add(len) as usize).min(self.0.len());
        self.0[start..end].fill(0);
    }
}

pub const BACKENDS: [Backend; 2] = [Backend::IoUring, Backend::Sync];
