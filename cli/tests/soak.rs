//! A short `nacre-bench soak` against `nacre up`, on tcp and on shm: clients that come
//! and go (some killed with SIGKILL) under mixed metadata and I/O, every byte checked;
//! its last line must be `ops=N lost_replies=0 timeouts=0 corrupt=0`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use nacre_fabric::testing::{workspace_bin, KillOnDrop};

fn soak(provider: &str) {
    if !have(provider, "soak") {
        return;
    }
    let dir = tmp(&format!("soak-{provider}"));
    let up = Up::start(&dir.join("data"), provider, &[]);
    let mut cmd = Command::new(workspace_bin("nacre-bench"));
    cmd.args([
        "soak",
        "--mgs",
        &up.mgs,
        "--clients",
        "3",
        "--minutes",
        "0.4",
    ])
    .args(["--kill-every", "3", "--seed", "12345"])
    .env("NACRE_KEY", &up.key);
    let mut run = KillOnDrop::new(cmd.stdout(std::process::Stdio::piped()).spawn().unwrap());
    let mut pipe = run.child().stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut s);
        s
    });
    // Bounded: a soak that hangs fails here, and the guard kills it.
    let until = std::time::Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(st) = run.child().try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < until,
            "the soak did not end in 240 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = reader.join().unwrap();
    let last = stdout.lines().last().unwrap_or("");
    println!("{stdout}");
    assert!(status.success(), "soak failed: {stdout}");
    let ops: u64 = last
        .strip_prefix("ops=")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ops= in {last:?}"));
    assert!(ops > 1000, "{last}");
    assert!(
        last.ends_with(" lost_replies=0 timeouts=0 corrupt=0"),
        "{last}"
    );
    assert!(stdout.contains("killed="), "{stdout}");
    up.stop();
}

#[test]
fn soak_on_tcp() {
    soak("tcp");
}

#[test]
fn soak_on_shm() {
    soak("shm");
}
