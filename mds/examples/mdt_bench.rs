//! Creates/s and stats/s through the MDT core API, in process (no network).
//!
//! `cargo run --release -p nacre-mds --example mdt_bench -- [creates per run] [stats]`
//! Each submitter thread does one operation at a time (submit, wait), as a client
//! would; a run with N submitters shows how group commit shares one fdatasync.

use nacre_mds::mdt::{Mdt, MdtConfig, SyncMode, ROOT_INO};
use nacre_proto::meta::{Creds, Head, Reply, Request};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/mdt-bench")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn open(name: &str, mode: SyncMode) -> Mdt {
    let mut cfg = MdtConfig::new(dir(name));
    cfg.osts = (0..8).collect();
    cfg.mode = mode;
    Mdt::open(cfg).expect("open MDT")
}

fn head() -> Head {
    Head {
        creds: Creds::root(),
        epoch: 1,
        replay: None,
    }
}

/// `threads` submitters create `total` files in one directory; returns creates/s.
fn creates(mdt: &Mdt, threads: usize, total: usize) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let sub = mdt.submitter();
            s.spawn(move || {
                for i in 0..total / threads {
                    let name = format!("t{t}-{i}");
                    let req = Request::Create {
                        parent: ROOT_INO,
                        name: name.into(),
                        mode: 0o644,
                        flags: 0,
                        layout: None,
                    };
                    sub.call(&head(), req).expect("create");
                }
            });
        }
    });
    total as f64 / start.elapsed().as_secs_f64()
}

/// Pipelined creates: one submitter keeps `depth` in flight (an engine core's pattern).
fn pipelined_creates(mdt: &Mdt, depth: u64, total: u64) -> f64 {
    let sub = mdt.submitter();
    let start = Instant::now();
    let (mut sent, mut done) = (0, 0);
    while done < total {
        while sent < total && sent - done < depth {
            let req = Request::Create {
                parent: ROOT_INO,
                name: format!("p{sent}").into(),
                mode: 0o644,
                flags: 0,
                layout: None,
            };
            sub.submit(sent, head(), req).expect("submit");
            sent += 1;
        }
        let c = sub.wait(Duration::from_secs(30)).expect("completion");
        assert!(c.result.is_ok());
        done += 1;
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// `threads` readers getattr files by inode number for `secs`; returns stats/s.
fn stats(mdt: &Mdt, threads: usize, inos: &[u64], secs: f64) -> f64 {
    let start = Instant::now();
    let n: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut n = 0u64;
                    while start.elapsed().as_secs_f64() < secs {
                        for k in 0..256 {
                            let ino = inos[(t * 7919 + n as usize + k) % inos.len()];
                            assert!(matches!(
                                mdt.read(&head(), &Request::Getattr { ino }),
                                Ok(Reply::Attr(_))
                            ));
                        }
                        n += 256;
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let total = args.first().copied().unwrap_or(20_000);
    let sync_total = args.get(1).copied().unwrap_or(2_000);
    println!("MDT core, in process; {total} creates per default run, {sync_total} per sync run");
    for (mode, label, n) in [
        (SyncMode::Default, "default", total),
        (SyncMode::Sync, "sync", sync_total),
    ] {
        for threads in [1, 16] {
            let mdt = open(&format!("{label}-{threads}"), mode);
            let rate = creates(&mdt, threads, n);
            let st = mdt.stats();
            let (b, o) = (
                st.batches.load(Ordering::Relaxed),
                st.ops.load(Ordering::Relaxed),
            );
            println!(
                "creates  {label:7} {threads:2} submitters: {rate:>9.0}/s  ({:.1} ops/batch, {} log fdatasyncs)",
                o as f64 / b.max(1) as f64,
                st.log_syncs.load(Ordering::Relaxed)
            );
        }
        for depth in [1, 16, 64] {
            let mdt = open(&format!("{label}-pipe{depth}"), mode);
            let rate = pipelined_creates(&mdt, depth, n as u64);
            let st = mdt.stats();
            println!(
                "creates  {label:7} 1 submitter, {depth:2} in flight: {rate:>9.0}/s  ({} log fdatasyncs)",
                st.log_syncs.load(Ordering::Relaxed)
            );
        }
    }
    let mdt = open("stat", SyncMode::Default);
    let sub = mdt.submitter();
    let inos: Vec<u64> = (0..20_000)
        .map(|i| {
            let req = Request::Create {
                parent: ROOT_INO,
                name: format!("s{i}").into(),
                mode: 0o644,
                flags: 0,
                layout: None,
            };
            match sub.call(&head(), req) {
                Ok(Reply::Opened { attr, .. }) => attr.ino,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    for threads in [1, 2] {
        println!(
            "stats    {threads} threads (getattr): {:>9.0}/s",
            stats(&mdt, threads, &inos, 2.0)
        );
    }
}
