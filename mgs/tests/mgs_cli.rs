//! `nacre-mgs` as an operator runs it: format (and refusing to format over), serve,
//! config file under flags, roles and epochs kept across kill -9 and restart, and the
//! map long poll.

mod mgs_support;

use std::process::Command;
use std::time::{Duration, Instant};

use mgs_support::*;
use nacre_mgc::BootConfig;
use nacre_proto::bootstrap::{errno, ClaimRequest, RoleKind, TargetReport, TargetState};

fn claim(kind: RoleKind, node: &str) -> ClaimRequest {
    ClaimRequest {
        kind,
        want: None,
        node: node.into(),
        provider: "tcp".into(),
        cores: vec![vec![7; 40], vec![8; 40]],
        empty: false,
        generation: 1,
        replication: String::new(),
    }
}

#[test]
fn format_refuses_an_existing_target_without_force() {
    let dir = tmpdir("format");
    let run = |args: &[&str]| {
        Command::new(mgs_bin())
            .arg("format")
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .output()
            .unwrap()
    };
    let first = run(&["--fsname", "alpha"]);
    assert!(first.status.success());
    let again = run(&["--fsname", "beta"]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("exists already (fsname alpha)") && err.contains("--force"),
        "{err}"
    );
    let forced = run(&["--fsname", "beta", "--force"]);
    assert!(forced.status.success());
    let (a, b) = (
        String::from_utf8_lossy(&first.stdout).to_string(),
        String::from_utf8_lossy(&forced.stdout).to_string(),
    );
    assert!(b.contains("formatted beta"), "{b}");
    assert_ne!(
        a.split("fsid").nth(1),
        b.split("fsid").nth(1),
        "a fresh fsid"
    );
    // Serving a directory never formatted says so.
    let empty = tmpdir("format-empty");
    let out = Command::new(mgs_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nacre-mgs format"));
}

#[test]
fn roles_and_epochs_survive_kill9_and_restart_and_flags_override_the_config() {
    let dir = tmpdir("restart");
    format(&dir, "persist");
    let conf = dir.join("mgs.toml");
    std::fs::write(&conf, "heartbeat_ms = 100\nlease_ms = 9000\n").unwrap();
    let conf_s = conf.to_str().unwrap().to_string();
    let flags = ["--config", &conf_s, "--lease-ms", "700"];
    let mut mgs = Mgs::serve(&dir, "127.0.0.1:0", &flags);
    let mut c = mgs.client();
    let o0 = c.claim(&claim(RoleKind::Oss, "a")).unwrap();
    let o1 = c.claim(&claim(RoleKind::Oss, "b")).unwrap();
    let m0 = c.claim(&claim(RoleKind::Mds, "c")).unwrap();
    // The flag beat the file; the file beat the default.
    assert_eq!((o0.heartbeat_ms, o0.lease_ms), (100, 700));
    let again = c.claim(&claim(RoleKind::Oss, "b")).unwrap();
    assert_eq!((again.role, again.epoch, again.fresh), (o1.role, 2, false));
    let before = c.fetch_map().unwrap();
    assert_eq!(before.fsname, "persist");

    mgs.proc.kill9();
    let mgs = Mgs::serve(&dir, "127.0.0.1:0", &flags);
    let mut c = mgs.client();
    let after = c.fetch_map().unwrap();
    assert_eq!(
        (after.fsname.as_str(), after.fsid),
        ("persist", before.fsid)
    );
    assert_eq!(after.servers, before.servers);
    assert!(after.version >= before.version);
    // The owners renew with the epochs they hold; the stale one is refused.
    let up = TargetReport {
        rebuild: Vec::new(),
        settled: Vec::new(),
        standby: String::new(),
        state: TargetState::Up,
        capacity: 100,
        free: 50,
    };
    c.renew(o0.role, o0.epoch, up.clone()).unwrap();
    c.renew(m0.role, m0.epoch, up.clone()).unwrap();
    let stale = c.renew(o1.role, o1.epoch, up.clone()).unwrap_err();
    assert_eq!(stale.errno(), Some(errno::ESTALE));
    // A restarted MGS gives roles that were up a grace lease: no takeover at once.
    let mut standby = claim(RoleKind::Oss, "z");
    standby.want = Some(1);
    assert_eq!(c.claim(&standby).unwrap_err().errno(), Some(errno::EBUSY));
    // oss1's owner is silent: after the lease, "z" may take it over.
    let until = Instant::now() + Duration::from_secs(5);
    let g = loop {
        match c.claim(&standby) {
            Ok(g) => break g,
            Err(_) if Instant::now() < until => {
                c.renew(o0.role, o0.epoch, up.clone()).unwrap();
                c.renew(m0.role, m0.epoch, up.clone()).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!((g.role, g.epoch), (o1.role, 3));
}

#[test]
fn a_long_poll_wakes_on_a_change_and_returns_at_its_deadline_otherwise() {
    let dir = tmpdir("longpoll");
    format(&dir, "poll");
    let mgs = Mgs::serve(&dir, "127.0.0.1:0", &SHORT);
    let mut c = mgs.client();
    let v = c.fetch_map().unwrap().version;
    let t = Instant::now();
    let same = c.wait_map(v, Duration::from_millis(300)).unwrap();
    assert_eq!(same.version, v);
    assert!(t.elapsed() >= Duration::from_millis(290));

    let addr = mgs.addr.clone();
    let waiter = std::thread::spawn(move || {
        let mut w = client(&addr, BootConfig::default());
        let t = Instant::now();
        let m = w.wait_map(v, Duration::from_secs(10)).unwrap();
        (m, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    let g = c.claim(&claim(RoleKind::Oss, "a")).unwrap();
    let (m, took) = waiter.join().unwrap();
    assert!(m.version > v && m.is_current(g.role, g.epoch));
    assert!(took < Duration::from_secs(2), "woke after {took:?}");
    // The lapse of the silent owner is a change too.
    let m = c.wait_map(m.version, Duration::from_secs(3)).unwrap();
    assert_eq!(m.target(g.role).unwrap().state, TargetState::Down);
}

/// Started as a script starts a background job (SIGINT ignored, which exec keeps), the
/// MGS still stops cleanly on SIGINT, and on SIGTERM; and its roles outlive the stop.
#[test]
fn stops_cleanly_on_sigint_and_sigterm_even_with_sigint_ignored() {
    let dir = tmpdir("signals");
    format(&dir, "sig");
    for sig in ["INT", "TERM"] {
        let mut cmd = Command::new(mgs_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--dir"])
            .arg(&dir);
        let mut proc = Proc::spawn("mgs", nacre_fabric::testing::with_sigint_ignored(&cmd));
        proc.expect("nacre-mgs: serving", Duration::from_secs(20));
        proc.signal(sig);
        proc.expect("nacre-mgs: stopped", Duration::from_secs(10));
        assert_eq!(proc.wait_exit(Duration::from_secs(10)), Some(0), "SIG{sig}");
    }
}
