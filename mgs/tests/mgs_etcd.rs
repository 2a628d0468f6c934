//! The etcd store with a real etcd on loopback: format, claims, leases, takeover and
//! fencing as with the embedded store, takeover time after kill -9 with the default
//! lease, role leases kept as etcd leases (alive while the owner renews, gone when the
//! role lapses, and read by a new leader after an outage), state kept across MGS
//! restarts, and two MGS processes on one etcd of which one is killed with kill -9 while
//! clients and servers carry on through the other.

mod mgs_support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mgs_support::*;
use nacre_mgc::{BootConfig, MgsClient};
use nacre_proto::bootstrap::{errno, Role, RoleKind, TargetReport, TargetState};

const TEST: &str = "child_server";

#[test]
#[ignore]
fn child_server() {
    child_main();
}

fn oss0() -> Role {
    Role {
        kind: RoleKind::Oss,
        index: 0,
    }
}

#[test]
fn claims_leases_takeover_and_fencing_on_etcd() {
    let Some(etcd) = EtcdProc::start("fencing") else {
        return;
    };
    etcd.format_ok("etcdfs");
    let again = etcd.format("other", false);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already (fsname etcdfs)"));

    let mut mgs = Mgs::serve_etcd(&etcd.url, &SHORT);
    mgs.proc.expect("leader on", Duration::from_secs(10));
    let a = server(TEST, &mgs.addr, "node-a", None, false);
    a.expect("SERVING oss0 epoch 1", Duration::from_secs(20));
    a.signal("STOP");
    let mut c = mgs.client();
    wait_for_map(&mut c, Duration::from_secs(5), |m| {
        m.target(oss0()).unwrap().state == TargetState::Down
    });
    let b = server(TEST, &mgs.addr, "node-b", None, false);
    b.expect("GRANTED oss0 epoch 2", Duration::from_secs(20));
    a.signal("CONT");
    let fenced = a.expect("FENCED", Duration::from_secs(5));
    assert!(fenced.contains("node-b at epoch 2"), "{fenced}");

    // A new MGS process on the same etcd has it all: roles, epochs, fsname.
    mgs.proc.kill9();
    let mgs = Mgs::serve_etcd(&etcd.url, &SHORT);
    mgs.proc.expect("leader on", Duration::from_secs(10));
    let mut c = mgs.client();
    let m = c.fetch_map().unwrap();
    assert_eq!(m.fsname, "etcdfs");
    assert!(m.is_current(oss0(), 2), "{m:?}");
    let up = TargetReport {
        rebuild: Vec::new(),
        settled: Vec::new(),
        standby: String::new(),
        state: TargetState::Up,
        capacity: 1,
        free: 1,
    };
    assert_eq!(
        c.renew(oss0(), 1, up).unwrap_err().errno(),
        Some(errno::ESTALE)
    );
    b.expect("SERVING oss0 epoch 2", Duration::from_secs(5));
}

#[test]
fn two_mgs_on_one_etcd_and_one_killed_clients_and_servers_carry_on() {
    let Some(etcd) = EtcdProc::start("two") else {
        return;
    };
    etcd.format_ok("twofs");
    // Leases long enough to outlast the leader's etcd lease (2 s) plus an election.
    let flags = ["--heartbeat-ms", "200", "--lease-ms", "4000"];
    let mut first = Mgs::serve_etcd(&etcd.url, &flags);
    first.proc.expect("leader on", Duration::from_secs(10));
    let second = Mgs::serve_etcd(&etcd.url, &flags);
    let both = format!("{},{}", first.addr, second.addr);

    let s = server(TEST, &both, "node-s", None, false);
    s.expect("SERVING oss0 epoch 1", Duration::from_secs(20));
    // The follower answers too (it relays to the leader), once it has learned who
    // leads (it watches the election key: under load that takes a moment).
    let until = Instant::now() + Duration::from_secs(10);
    let mut via_second = loop {
        match MgsClient::connect_with(
            &second.addr,
            BootConfig::default(),
            nacre_auth::KeySource::new(Some(key_of(&second.addr))),
        ) {
            Ok(c) => break c,
            Err(e) if Instant::now() < until => {
                eprintln!("follower not ready yet: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("the follower never relayed: {e}"),
        }
    };
    assert!(via_second.fetch_map().unwrap().is_current(oss0(), 1));

    first.proc.kill9();
    second.proc.expect("leader on", Duration::from_secs(10));
    // The server never lost its role and renews through the survivor.
    let m = wait_for_map(&mut via_second, Duration::from_secs(5), |m| {
        m.is_current(oss0(), 1) && m.target(oss0()).unwrap().state == TargetState::Up
    });
    assert_eq!(m.fsname, "twofs");
    let _ = s.try_expect("RESTORED", Duration::from_secs(3));
    s.expect("SERVING oss0 epoch 1", Duration::from_secs(2));
    assert!(s.try_expect("FENCED", Duration::ZERO).is_none());
    // New servers and clients given both addresses use the one that is there.
    let t = server(TEST, &both, "node-t", None, false);
    t.expect("GRANTED oss1 epoch 1", Duration::from_secs(20));
    let mut c = client(&both, BootConfig::default());
    assert_eq!(c.fetch_map().unwrap().servers.len(), 2);
}

/// A leader stopped by SIGTERM resigns: the `leader` key no longer names it once it
/// has exited (without resigning it would for the rest of its etcd lease), and the
/// follower is elected.
#[test]
fn a_leader_stopped_cleanly_resigns_and_the_follower_takes_over() {
    let Some(etcd) = EtcdProc::start("resign") else {
        return;
    };
    etcd.format_ok("resignfs");
    let mut first = Mgs::serve_etcd(&etcd.url, &[]);
    first.proc.expect("leader on", Duration::from_secs(10));
    let second = Mgs::serve_etcd(&etcd.url, &[]);
    first.proc.signal("TERM");
    first
        .proc
        .expect("nacre-mgs: stopped", Duration::from_secs(10));
    assert_eq!(first.proc.wait_exit(Duration::from_secs(10)), Some(0));
    let store = nacre_mgs::etcd::Etcd::connect(&etcd.url).unwrap();
    assert_ne!(store.leader().unwrap(), Some(first.addr.clone()));
    second.proc.expect("leader on", Duration::from_secs(10));
}

#[test]
fn a_paused_leader_is_deposed_and_exits_when_resumed_while_servers_carry_on() {
    let Some(etcd) = EtcdProc::start("paused") else {
        return;
    };
    etcd.format_ok("pausefs");
    let flags = ["--heartbeat-ms", "200", "--lease-ms", "4000"];
    let mut first = Mgs::serve_etcd(&etcd.url, &flags);
    first.proc.expect("leader on", Duration::from_secs(10));
    let second = Mgs::serve_etcd(&etcd.url, &flags);
    let both = format!("{},{}", first.addr, second.addr);
    let s = server(TEST, &both, "node-s", None, false);
    s.expect("SERVING oss0 epoch 1", Duration::from_secs(20));

    // The leader's kernel still accepts connections while it is stopped: clients must
    // move on to the other address.
    first.proc.signal("STOP");
    let stopped = std::time::Instant::now();
    second.proc.expect("leader on", Duration::from_secs(10));
    let mut c = client(&second.addr, BootConfig::default());
    wait_for_map(&mut c, Duration::from_secs(5), |m| {
        m.is_current(oss0(), 1) && m.target(oss0()).unwrap().state == TargetState::Up
    });
    first.proc.signal("CONT");
    // Resumed, it sees its etcd lease ran out and leaves; it never wrote after that.
    assert_eq!(first.proc.wait_exit(Duration::from_secs(5)), Some(2));
    // Past the lease the server held when the leader stopped, it still serves: its
    // renewals reached the new leader, and it never stopped on the way.
    let past = Duration::from_millis(4500);
    if let Some(left) = past.checked_sub(stopped.elapsed()) {
        std::thread::sleep(left);
    }
    let lines: Vec<String> = s.lines.try_iter().collect();
    assert!(
        lines
            .iter()
            .all(|l| !l.starts_with("NOT SERVING") && !l.starts_with("FENCED")),
        "{lines:?}"
    );
    s.expect("SERVING oss0 epoch 1", Duration::from_secs(1));
}

const LEASES: &str = "/nacre/mgs/lease/";

/// While its owner renews, a role's etcd lease lives past its TTL (2 s for a 500 ms
/// lease); when the MGS lapses the role, the key goes with it.
#[test]
fn role_leases_live_in_etcd_while_their_owners_renew() {
    let Some(etcd) = EtcdProc::start("role-leases") else {
        return;
    };
    etcd.format_ok("leasefs");
    let mgs = Mgs::serve_etcd(&etcd.url, &SHORT);
    mgs.proc.expect("leader on", Duration::from_secs(10));
    let a = server(TEST, &mgs.addr, "node-a", None, false);
    a.expect("SERVING oss0 epoch 1", Duration::from_secs(20));
    let b = server(TEST, &mgs.addr, "node-b", None, false);
    b.expect("SERVING oss1 epoch 1", Duration::from_secs(20));
    let both = vec![format!("{LEASES}2/0"), format!("{LEASES}2/1")];
    assert_eq!(etcd.keys(LEASES), both);
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(etcd.keys(LEASES), both, "kept alive past the TTL");
    a.signal("STOP");
    let mut c = mgs.client();
    wait_for_map(&mut c, Duration::from_secs(5), |m| {
        m.target(oss0()).unwrap().state == TargetState::Down
    });
    assert_eq!(
        etcd.keys(LEASES),
        vec![format!("{LEASES}2/1")],
        "oss0's is gone"
    );
    b.expect("SERVING oss1 epoch 1", Duration::from_secs(2));
}

/// All MGS processes gone for longer than a role's etcd lease: the new leader finds the
/// silent owner's lease gone and frees its role at once (no grace), while the owner that
/// lived through the outage renews and gets its role back under the same epoch.
#[test]
fn after_an_outage_a_silent_owners_role_is_free_at_once() {
    let Some(etcd) = EtcdProc::start("outage") else {
        return;
    };
    etcd.format_ok("outagefs");
    // Lease 3 s: role leases of 5 s in etcd.
    let flags = ["--heartbeat-ms", "200", "--lease-ms", "3000"];
    let mut mgs = Mgs::serve_etcd(&etcd.url, &flags);
    mgs.proc.expect("leader on", Duration::from_secs(10));
    let mut a = server(TEST, &mgs.addr, "node-a", None, false);
    a.expect("SERVING oss0 epoch 1", Duration::from_secs(20));
    // One address for the MGS across its restart: the one it had.
    let addr = mgs.addr.clone();
    let b = server(TEST, &addr, "node-b", None, false);
    b.expect("SERVING oss1 epoch 1", Duration::from_secs(20));
    a.kill9();
    mgs.proc.kill9();
    std::thread::sleep(Duration::from_millis(5500));
    assert!(etcd.keys(LEASES).is_empty(), "no MGS kept any role lease");
    let dir = tmpdir("outage-mgs");
    let mut args = vec!["--store", etcd.url.as_str()];
    args.extend_from_slice(&flags);
    let mgs = Mgs::serve(&dir, &addr, &args);
    mgs.proc.expect("leader on", Duration::from_secs(10));
    let led = Instant::now();
    let mut c = mgs.client();
    let m = c.fetch_map().unwrap();
    assert_eq!(m.target(oss0()).unwrap().state, TargetState::Down, "{m:?}");
    let led_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let standby = server(TEST, &mgs.addr, "node-c", Some(0), false);
    let line = standby.expect("GRANTED oss0 epoch 2", Duration::from_secs(10));
    let granted_ms: u128 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let took = Duration::from_millis(granted_ms.saturating_sub(led_ms) as u64);
    println!("oss0 taken over {took:?} after the new leader started (lease 3 s)");
    assert!(
        took < Duration::from_millis(2000),
        "waited for a grace lease: {took:?}"
    );
    // The live owner renews and is back, under the epoch it had.
    wait_for_map(&mut c, Duration::from_secs(10), |m| {
        let t = m.target(Role {
            kind: RoleKind::Oss,
            index: 1,
        });
        t.is_some_and(|t| t.state == TargetState::Up && t.epoch == 1)
    });
    b.expect("SERVING oss1 epoch 1", Duration::from_secs(5));
    assert!(led.elapsed() < Duration::from_secs(15));
    assert_eq!(etcd.keys(LEASES).len(), 2);
}

/// As `takeover_after_kill9...` on the embedded store (mgs_fencing.rs), on etcd: with
/// the defaults (heartbeat 1 s, lease 5 s), kill -9 of the owner to its standby holding
/// the role takes at most lease + 1 s, and no less than the lease.
#[test]
fn takeover_after_kill9_on_etcd_takes_at_most_lease_plus_one_second() {
    let Some(etcd) = EtcdProc::start("takeover") else {
        return;
    };
    etcd.format_ok("takeoverfs");
    let mgs = Mgs::serve_etcd(&etcd.url, &[]);
    mgs.proc.expect("leader on", Duration::from_secs(10));
    let (takeover, _) = takeover_after_kill9(TEST, &mgs.addr);
    println!("etcd: takeover after kill -9: {takeover:?} (lease 5 s)");
    assert!(takeover <= Duration::from_secs(6), "took {takeover:?}");
    assert!(
        takeover >= Duration::from_millis(4000),
        "too early: {takeover:?}"
    );
}
