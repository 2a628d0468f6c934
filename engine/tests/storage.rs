//! Storage on real files on the checkout's disk (target/tmp, not tmpfs: O_DIRECT needs a
//! real file system), through io_uring and through the pread/pwrite fallback.

use std::path::PathBuf;
use std::process::Command;

use nacre_engine::{
    Backend, BufferPool, IoCompletion, IoKind, PoolConfig, SizeClass, Storage, StorageConfig,
    StorageError,
};

fn dir(test: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(test);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pool(count: usize) -> BufferPool {
    let cfg = PoolConfig {
        classes: vec![SizeClass {
            size: 64 << 10,
            count,
        }],
        huge_pages: false,
    };
    BufferPool::new(&cfg, None).unwrap()
}

/// The backends to test here: io_uring only where the kernel lets us set it up.
fn backends() -> Vec<Backend> {
    let probe = StorageConfig {
        require_io_uring: true,
        ..Default::default()
    };
    match Storage::new(&probe, None) {
        Ok(_) => vec![Backend::IoUring, Backend::Sync],
        Err(e) => {
            nacre_fabric::testing::skip(&format!("io_uring storage tests: {e}"));
            vec![Backend::Sync]
        }
    }
}

fn storage(backend: Backend, pool: &BufferPool) -> Storage {
    let cfg = StorageConfig {
        backend: Some(backend),
        require_io_uring: backend == Backend::IoUring,
        queue_depth: 32,
        ..Default::default()
    };
    let s = Storage::new(&cfg, Some(pool)).unwrap();
    assert_eq!(s.backend(), backend);
    s
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed as usize * 31 + i * 7 + i / 4096) as u8)
        .collect()
}

fn wait_all(s: &mut Storage, n: usize) -> Vec<IoCompletion> {
    let mut out = Vec::new();
    while out.len() < n {
        s.wait(&mut out).unwrap();
    }
    out
}

#[test]
fn writes_then_reads_back_many_in_flight() {
    for backend in backends() {
        let mut pool = pool(32);
        let mut s = storage(backend, &pool);
        let path = dir("rw").join(format!("{backend:?}"));
        let f = s.open(&path, true).unwrap();
        const N: u64 = 24;
        const LEN: usize = 64 << 10;
        for i in 0..N {
            let mut b = pool.get(LEN).unwrap();
            b.copy_in(&pattern(i, LEN));
            s.write(f, b, LEN, i * LEN as u64, i)
                .map_err(|(e, _)| e)
                .unwrap();
        }
        s.flush().unwrap();
        for c in wait_all(&mut s, N as usize) {
            assert_eq!((c.kind, c.result), (IoKind::Write, Ok(LEN)), "{backend:?}");
            pool.put(c.buf.unwrap()).unwrap();
        }
        s.sync_file(f, true, 99).unwrap();
        let synced = wait_all(&mut s, 1);
        assert_eq!((synced[0].user_data, synced[0].result), (99, Ok(0)));
        for i in (0..N).rev() {
            let b = pool.get(LEN).unwrap();
            s.read(f, b, LEN, i * LEN as u64, i)
                .map_err(|(e, _)| e)
                .unwrap();
        }
        for c in wait_all(&mut s, N as usize) {
            assert_eq!(c.result, Ok(LEN));
            let b = c.buf.unwrap();
            let mut got = vec![0; LEN];
            b.copy_out(&mut got);
            assert!(
                got == pattern(c.user_data, LEN),
                "{backend:?}: block {} differs",
                c.user_data
            );
            pool.put(b).unwrap();
        }
        assert_eq!(s.in_flight(), 0);
        assert_eq!(pool.available(LEN), 32);
    }
}

#[test]
fn read_past_end_of_file_is_short_not_an_error() {
    for backend in backends() {
        let mut pool = pool(2);
        let mut s = storage(backend, &pool);
        let path = dir("eof").join(format!("{backend:?}"));
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let f = s.open(&path, false).unwrap();
        let b = pool.get(1).unwrap();
        s.read(f, b, 16384, 0, 1).map_err(|(e, _)| e).unwrap();
        let c = wait_all(&mut s, 1).pop().unwrap();
        assert_eq!(c.result, Ok(8192), "{backend:?}");
        let b = pool.get(1).unwrap();
        s.read(f, b, 4096, 1 << 20, 2).map_err(|(e, _)| e).unwrap();
        assert_eq!(
            wait_all(&mut s, 1)[0].result,
            Ok(0),
            "{backend:?}: beyond the end"
        );
    }
}

#[test]
fn bad_requests_are_refused_and_errors_are_errnos() {
    for backend in backends() {
        let mut pool = pool(2);
        let mut s = storage(backend, &pool);
        let path = dir("errors").join(format!("{backend:?}"));
        let f = s.open(&path, true).unwrap();
        let b = pool.get(1).unwrap();
        let (e, b) = s.write(f, b, 4096, 100, 0).unwrap_err();
        assert!(
            matches!(e, StorageError::Misaligned { what: "offset", .. }),
            "{e}"
        );
        let (e, b) = s.write(f, b, 1000, 0, 0).unwrap_err();
        assert!(
            matches!(e, StorageError::Misaligned { what: "length", .. }),
            "{e}"
        );
        let (e, b) = s.write(f, b, 128 << 10, 0, 0).unwrap_err();
        assert!(matches!(e, StorageError::BufferTooSmall { .. }), "{e}");
        // Past ext4's largest file (16 TiB): the kernel answers EFBIG.
        s.write(f, b, 4096, 1 << 45, 5).map_err(|(e, _)| e).unwrap();
        let c = wait_all(&mut s, 1).pop().unwrap();
        assert_eq!(c.result, Err(libc::EFBIG), "{backend:?}");
        assert!(c.buf.is_some(), "the buffer comes back with the error");
        // A file cannot be closed under an operation in flight on it.
        let b = c.buf.unwrap();
        s.read(f, b, 4096, 0, 6).map_err(|(e, _)| e).unwrap();
        s.flush().unwrap();
        if backend == Backend::IoUring {
            let busy = s.close(f).unwrap_err();
            assert!(matches!(busy, StorageError::FileBusy { .. }), "{busy}");
        }
        let c = wait_all(&mut s, 1).pop().unwrap();
        pool.put(c.buf.unwrap()).unwrap();
        s.close(f).unwrap();
        let b = pool.get(1).unwrap();
        let (e, _) = s.read(f, b, 4096, 0, 0).unwrap_err();
        assert!(matches!(e, StorageError::BadFile(_)), "{e}");
        let missing = s
            .open(&dir("errors").join("no/such/dir"), true)
            .unwrap_err();
        assert!(matches!(missing, StorageError::Open { .. }), "{missing}");
    }
}

#[test]
fn the_pool_is_registered_with_the_fabric_and_io_uring_at_once() {
    let sel = nacre_fabric::Selection::provider("tcp");
    let mut ep = match nacre_fabric::open(&sel, &Default::default()) {
        Ok(ep) => ep,
        Err(e) => {
            nacre_fabric::testing::skip(&format!("the_pool_is_registered_with_the_fabric_and_io_uring_at_once: tcp provider not available: {e}"));
            return;
        }
    };
    let cfg = PoolConfig {
        classes: vec![SizeClass {
            size: 1 << 20,
            count: 4,
        }],
        huge_pages: true,
    };
    let mut pool = BufferPool::new(&cfg, Some(&mut ep)).unwrap();
    assert!(pool.is_registered());
    let Some(&backend) = backends().first() else {
        return;
    };
    let mut s = storage(backend, &pool);
    let f = s.open(&dir("registered").join("f"), true).unwrap();
    let mut b = pool.get(1 << 20).unwrap();
    assert!(pool.is_registered());
    b.copy_in(&pattern(5, 1 << 20));
    s.write(f, b, 1 << 20, 0, 0).map_err(|(e, _)| e).unwrap();
    let b = wait_all(&mut s, 1).pop().unwrap().buf.unwrap();
    s.read(f, b, 1 << 20, 0, 0).map_err(|(e, _)| e).unwrap();
    let c = wait_all(&mut s, 1).pop().unwrap();
    let mut got = vec![0; 1 << 20];
    c.buf.unwrap().copy_out(&mut got);
    assert!(got == pattern(5, 1 << 20));
}

/// Run by `falls_back_when_io_uring_is_unavailable` in a child process, with io_uring
/// made unavailable; a no-op otherwise.
#[test]
fn fallback_child() {
    if std::env::var(nacre_engine::storage::DISABLE_ENV).is_err() {
        return;
    }
    let mut pool = pool(1);
    let s = Storage::new(&StorageConfig::default(), Some(&pool)).unwrap();
    assert_eq!(s.backend(), Backend::Sync, "fell back to pread/pwrite");
    let strict = StorageConfig {
        require_io_uring: true,
        ..Default::default()
    };
    let err = Storage::new(&strict, Some(&pool))
        .err()
        .expect("refuses to start");
    assert!(matches!(err, StorageError::IoUringUnavailable(_)), "{err}");
    let mut s = s;
    let f = s.open(&dir("fallback").join("f"), true).unwrap();
    let mut b = pool.get(1).unwrap();
    b.copy_in(&[9u8; 4096]);
    s.write(f, b, 4096, 0, 0).map_err(|(e, _)| e).unwrap();
    let c = wait_all(&mut s, 1).pop().unwrap();
    assert_eq!(c.result, Ok(4096));
    pool.put(c.buf.unwrap()).unwrap();
    println!("FALLBACK-OK");
}

#[test]
fn falls_back_when_io_uring_is_unavailable() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fallback_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(nacre_engine::storage::DISABLE_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("FALLBACK-OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reaps (without submitting anything) until `n` completions arrived or `within` passed.
fn reap_for(s: &mut Storage, n: usize, within: std::time::Duration) -> Vec<IoCompletion> {
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    while out.len() < n && start.elapsed() < within {
        s.reap(&mut out).unwrap();
        std::thread::yield_now();
    }
    out
}

/// A large transfer goes to the kernel as soon as it is queued, on its own (the block
/// layer's plug would merge a batch of sequential ones into fewer, larger requests);
/// small ones wait for the turn's flush and share one submission.
#[test]
fn large_transfers_are_submitted_alone_and_at_once() {
    if !backends().contains(&Backend::IoUring) {
        return;
    }
    let cfg = PoolConfig {
        classes: vec![
            SizeClass {
                size: 4096,
                count: 4,
            },
            SizeClass {
                size: 1 << 20,
                count: 2,
            },
        ],
        huge_pages: false,
    };
    let mut pool = BufferPool::new(&cfg, None).unwrap();
    let mut s = storage(Backend::IoUring, &pool);
    let f = s.open(&dir("alone").join("f"), true).unwrap();
    let wait = std::time::Duration::from_millis(300);
    let small = pool.get(4096).unwrap();
    s.write(f, small, 4096, 0, 1).map_err(|(e, _)| e).unwrap();
    assert!(
        reap_for(&mut s, 1, wait).is_empty(),
        "a small write waits for the flush"
    );
    let large = pool.get(1 << 20).unwrap();
    s.write(f, large, 1 << 20, 1 << 20, 2)
        .map_err(|(e, _)| e)
        .unwrap();
    let mut done: Vec<u64> = reap_for(&mut s, 2, std::time::Duration::from_secs(10))
        .iter()
        .map(|c| {
            assert!(c.result.is_ok(), "{:?}", c.result);
            c.user_data
        })
        .collect();
    done.sort();
    assert_eq!(
        done,
        [1, 2],
        "the large write, and the small one queued before it, went without a flush"
    );
}
