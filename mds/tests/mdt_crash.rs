//! Kill -9 of a process streaming creates: every acknowledged create is there after
//! reopening, in both durability modes. The child is this test binary re-executed.

mod common;
use common::*;
use nacre_mds::mdt::SyncMode;
use nacre_proto::meta::{Creds, Head, Reply};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "NACRE_MDT_CRASH_CHILD";
/// Creates the child keeps in flight (so batches hold several).
const IN_FLIGHT: u64 = 32;

/// The child: creates f0, f1, ... forever, printing `ACK <i> <ino>` once each is
/// acknowledged. Run only by the tests below (ignored otherwise).
#[test]
#[ignore]
fn child_create_stream() {
    let spec = std::env::var(CHILD_ENV).expect("run by the crash tests");
    let (dir, mode) = spec.split_once('|').expect("dir|mode");
    let mode = if mode == "sync" {
        SyncMode::Sync
    } else {
        SyncMode::Default
    };
    let mut cfg = config(&dir.into(), mode);
    cfg.commit_interval = Duration::from_millis(100);
    let t = T::open(cfg);
    let head = Head {
        creds: Creds::root(),
        epoch: EPOCH,
        replay: None,
    };
    let mut out = std::io::stdout().lock();
    let (mut next, mut in_flight) = (0u64, 0u64);
    loop {
        while in_flight < IN_FLIGHT {
            t.sub
                .submit(next, head.clone(), create(ROOT, &format!("f{next}"), 0o644))
                .unwrap();
            next += 1;
            in_flight += 1;
        }
        let c = t.sub.wait(Duration::from_secs(10)).expect("completion");
        in_flight -= 1;
        let Ok(Reply::Opened { attr, .. }) = c.result else {
            panic!("{c:?}")
        };
        writeln!(out, "ACK {} {}", c.tag, attr.ino).unwrap();
        out.flush().unwrap();
    }
}

fn kill_during_create_stream(name: &str, mode: &str) {
    let dir = fresh_dir(name);
    let mut guard = nacre_fabric::testing::KillOnDrop::new(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_create_stream",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{}|{mode}", dir.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = guard.child();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Run long enough to cross several checkpoints (100 ms interval), then kill.
    let start = Instant::now();
    let mut acked = Vec::new();
    while start.elapsed() < Duration::from_millis(700) || acked.len() < 500 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "child too slow: {} acks",
            acked.len()
        );
        let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) else {
            break;
        };
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (i, ino) = rest.split_once(' ').unwrap();
            acked.push((i.parse::<u64>().unwrap(), ino.parse::<u64>().unwrap()));
        }
    }
    drop(guard); // SIGKILL
    assert!(
        acked.len() >= 500,
        "only {} creates acknowledged",
        acked.len()
    );
    let t = T::open(config(&dir, SyncMode::Default));
    for (i, ino) in &acked {
        assert_eq!(
            t.lookup(ROOT, &format!("f{i}")).map(|a| a.ino),
            Ok(*ino),
            "acknowledged create f{i} lost"
        );
    }
    eprintln!(
        "{mode}: {} acknowledged creates all present after kill -9",
        acked.len()
    );
}

#[test]
fn default_mode_acknowledged_creates_survive_kill_9() {
    kill_during_create_stream("crash-default", "default");
}

#[test]
fn sync_mode_acknowledged_creates_survive_kill_9() {
    kill_during_create_stream("crash-sync", "sync");
}
