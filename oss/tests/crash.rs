//! kill -9 of a process in the middle of a write stream: every write it reported as
//! completed reads back byte-exact from a fresh store on the same target.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nacre_engine::Backend;

const CHILD_ENV: &str = "NACRE_OSS_CRASH_CHILD_DIR";

/// Write number `k`: object, offset, length. Writes to one object never overlap, and
/// offsets and lengths are unaligned (edges go through read-modify-write).
fn spec(k: u64) -> (u64, u64, usize) {
    let obj = k % 3 + 1;
    let offset = (k / 3) * 21_011 + (k % 7) * 13;
    let len = 3000 + (k * 37 % 15_000) as usize;
    (obj, offset, len)
}

/// The child's part: runs only when the parent test starts this binary with CHILD_ENV.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut h = Harness::open(std::path::Path::new(&dir), Backend::IoUring, 16);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = 0u64;
    let mut tags = std::collections::HashMap::new();
    while Instant::now() < deadline {
        while tags.len() < 4 {
            let (obj, off, len) = spec(next);
            let tag = h.submit_write(obj, off, &pattern(next, len));
            tags.insert(tag, next);
            next += 1;
        }
        let mut out = Vec::new();
        let mut io = nacre_oss::Io {
            storage: &mut h.storage,
            pool: &mut h.pool,
        };
        h.store.wait(&mut io, &mut out).unwrap();
        for c in out {
            let k = tags.remove(&c.tag).unwrap();
            assert!(c.result.is_ok(), "write {k}: {:?}", c.result);
            let _ = h.give_back(c);
            println!("ack {k}");
        }
    }
}

#[test]
fn kill_9_keeps_every_acknowledged_write() {
    let dir = target_dir("crash");
    format_target(&dir);
    let mut guard = nacre_fabric::testing::KillOnDrop::new(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = guard.child();
    let mut acked = Vec::new();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    for line in lines {
        let line = line.unwrap();
        if let Some(k) = line.strip_prefix("ack ") {
            acked.push(k.parse::<u64>().unwrap());
        }
        if acked.len() >= 300 || Instant::now() > deadline {
            break;
        }
    }
    drop(guard); // SIGKILL, mid-stream: writes are in flight
    assert!(
        acked.len() >= 300,
        "the child acknowledged only {}",
        acked.len()
    );
    let mut h = Harness::open(&dir, Backend::IoUring, 16);
    for obj in 1..=3 {
        let end = acked
            .iter()
            .map(|&k| spec(k))
            .filter(|s| s.0 == obj)
            .map(|(_, off, len)| off + len as u64)
            .max()
            .unwrap();
        let size = h.store.getattr(obj).unwrap().size;
        assert!(
            size >= end,
            "object {obj}: size {size} < acknowledged end {end}"
        );
    }
    for &k in &acked {
        let (obj, off, len) = spec(k);
        let got = h.read(obj, off, len).unwrap();
        assert!(
            got == pattern(k, len),
            "acknowledged write {k} lost or torn"
        );
    }
}
