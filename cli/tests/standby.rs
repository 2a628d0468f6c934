//! A standby MDS: the MGS and an OSS under `nacre up`, an MDS on directory A, a
//! `nacre-mds serve --standby` on directory B that follows it. A client keeps creating
//! and writing files; A is killed with SIGKILL; B takes mds0 over once A's lease
//! lapsed, the client goes on after a pause, and every file it was told exists (in
//! sync mode: to the last one; in default mode: all but those of the documented
//! window), with its bytes. A started again on its directory finds mds0 held by B and
//! follows it as B's standby.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{tmp, Up};
use nacre_client::{Client, OpenOptions};
use nacre_fabric::testing::{pattern, workspace_bin, Proc};

/// The MGS's default lease.
const LEASE: Duration = Duration::from_secs(5);

fn mds(name: &str, mgs: &str, dir: &Path, provider: &str, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(workspace_bin("nacre-mds"));
    cmd.args(["serve", "--no-pin", "--mgs", mgs, "--provider", provider])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .env("NACRE_KEY", common::key_of(mgs));
    Proc::spawn(name, cmd)
}

/// `nacre up` with the MGS and one OSS, no MDS: the test starts those.
fn mgs_and_oss(dir: &Path, provider: &str) -> Up {
    let cfg = dir.join("up.toml");
    std::fs::write(
        &cfg,
        format!(
            "[mgs]\nlisten = \"127.0.0.1:0\"\n[[oss]]\nosts = [\"{}/ost0\"]\n",
            dir.display()
        ),
    )
    .unwrap();
    Up::start(
        &dir.join("up"),
        provider,
        &["--config", cfg.to_str().unwrap()],
    )
}

/// Files made by the workload: (name, seed, when acknowledged) of each the client was
/// told exists.
type Made = Arc<Mutex<Vec<(String, u64, Instant)>>>;

/// Default mode ships records as they are logged, not before the reply: what the
/// standby may lack is what was acknowledged in the last moments before the crash.
const WINDOW: Duration = Duration::from_millis(200);

fn standby_takes_over(provider: &str, sync: bool) {
    if !common::have(provider, "a standby MDS") {
        return;
    }
    let mode = if sync { "sync" } else { "default" };
    let dir = tmp(&format!(
        "standby-{mode}-{}",
        provider.split(';').next().unwrap()
    ));
    let up = mgs_and_oss(&dir, provider);
    let sync_flag: &[&str] = if sync { &["--sync"] } else { &[] };
    let mut a = mds("mds-a", &up.mgs, &dir.join("a"), provider, sync_flag);
    a.expect("nacre-mds: ready", Duration::from_secs(60));
    let standby: Vec<&str> = [&["--standby"][..], sync_flag].concat();
    let b = mds("mds-b", &up.mgs, &dir.join("b"), provider, &standby);
    b.expect("snapshot loaded", Duration::from_secs(60));
    a.expect("in sync", Duration::from_secs(30));
    // The next heartbeat names B to the MGS.
    std::thread::sleep(Duration::from_millis(1500));

    let client = Client::connect(&up.mgs, common::client_config(&up.mgs)).unwrap();
    client.mkdir("/d", 0o755).unwrap();
    let made: Made = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let longest = Arc::new(Mutex::new(Duration::ZERO));
    let worker = {
        let (client, made, stop, longest) =
            (client.clone(), made.clone(), stop.clone(), longest.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("/d/f{i}");
                let t = Instant::now();
                let f = client.open(&name, &OpenOptions::create()).unwrap();
                f.write_at(&pattern(i, 64 << 10), 0).unwrap();
                f.close().unwrap();
                let took = t.elapsed();
                let mut l = longest.lock().unwrap();
                *l = (*l).max(took);
                made.lock().unwrap().push((name, i, Instant::now()));
                i += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let before = made.lock().unwrap().len();
    a.kill9();
    let killed = Instant::now();
    b.expect("took mds0 over", LEASE * 4);
    eprintln!(
        "{provider} {mode}: B took over {:?} after the kill",
        killed.elapsed()
    );
    // Work after the takeover too.
    let until = Instant::now() + Duration::from_secs(60);
    while made.lock().unwrap().len() < before + 200 {
        assert!(
            Instant::now() < until,
            "the client made no progress after the takeover"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    worker.join().unwrap();
    let longest = *longest.lock().unwrap();
    eprintln!("{provider} {mode}: longest create+write+close {longest:?}");
    assert!(longest <= LEASE * 4, "the client paused {longest:?}");

    // Every file the client was told exists, with its bytes.
    let made = made.lock().unwrap().clone();
    let mut missing = Vec::new();
    for (name, seed, acked) in &made {
        match client.open(name, &OpenOptions::read()) {
            Err(_) if !sync && *acked + WINDOW >= killed && *acked <= killed => {
                eprintln!(
                    "{name}: acknowledged {:?} before the kill, lost",
                    killed - *acked
                );
            }
            Ok(f) => {
                let mut got = vec![0u8; 64 << 10];
                assert_eq!(f.read_at(&mut got, 0).unwrap(), got.len(), "{name}");
                assert!(got == pattern(*seed, 64 << 10), "{name}: its bytes");
            }
            Err(e) => missing.push(format!("{name}: {e}")),
        }
    }
    eprintln!(
        "{provider} {mode}: {} files acknowledged, {} missing after the takeover",
        made.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged files lost: {missing:?}");

    // A back on its directory: mds0 is B's now; A follows B.
    let a2 = mds("mds-a2", &up.mgs, &dir.join("a"), provider, sync_flag);
    a2.expect("following it as a standby", Duration::from_secs(30));
    a2.expect("snapshot loaded", Duration::from_secs(60));
    drop(a2);
    drop(b);
    up.stop();
}

#[test]
fn a_standby_takes_over_in_sync_mode_on_tcp() {
    standby_takes_over("tcp;ofi_rxm", true);
}

#[test]
fn a_standby_takes_over_in_default_mode_on_shm() {
    standby_takes_over("shm", false);
}

/// Sync mode with a standby that stops answering (SIGSTOP: its connection stays up):
/// the MDS's replies wait for it at most a second and then for the MGS to hear it has
/// no standby; the client goes on. A new standby then follows the same MDS.
#[test]
fn a_lost_standby_is_dropped_in_sync_mode_and_io_goes_on() {
    let provider = "tcp;ofi_rxm";
    if !common::have(provider, "a standby MDS") {
        return;
    }
    let dir = tmp("standby-lost");
    let up = mgs_and_oss(&dir, provider);
    let a = mds("mds-a", &up.mgs, &dir.join("a"), provider, &["--sync"]);
    a.expect("nacre-mds: ready", Duration::from_secs(60));
    let mut b = mds(
        "mds-b",
        &up.mgs,
        &dir.join("b"),
        provider,
        &["--standby", "--sync"],
    );
    a.expect("in sync", Duration::from_secs(30));
    let client = Client::connect(&up.mgs, common::client_config(&up.mgs)).unwrap();
    let mut longest = Duration::ZERO;
    let mut lost_at = None;
    for i in 0..400u64 {
        if i == 100 {
            b.signal("STOP");
            lost_at = Some(Instant::now());
        }
        let t = Instant::now();
        client.mkdir(&format!("/m{i}"), 0o755).unwrap();
        longest = longest.max(t.elapsed());
    }
    a.expect("knows the standby is out of sync", Duration::from_secs(10));
    eprintln!(
        "standby lost: longest mkdir {longest:?}, 300 more in {:?}",
        lost_at.unwrap().elapsed()
    );
    assert!(
        longest < Duration::from_secs(4),
        "a mkdir waited {longest:?}"
    );
    b.kill9();
    let c = mds(
        "mds-c",
        &up.mgs,
        &dir.join("c"),
        provider,
        &["--standby", "--sync"],
    );
    a.expect("in sync", Duration::from_secs(30));
    c.expect("snapshot loaded", Duration::from_secs(5));
    drop(c);
    drop(a);
    up.stop();
}
