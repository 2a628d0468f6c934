//! The etcd store with a real etcd on loopback: format, claims, leases, takeover and
//! fencing as with the embedded store, state kept across MGS restarts, and two MGS
//! processes on one etcd of which one is killed with kill -9 while clients and servers
//! carry on through the other.

mod mgs_support;

use std::time::Duration;

use mgs_support::*;
use nacre_client::mgs::{BootConfig, MgsClient};
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
    assert!(etcd.format("etcdfs", false).status.success());
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
    assert!(etcd.format("twofs", false).status.success());
    // Leases long enough to outlast the leader's etcd lease (2 s) plus an election.
    let flags = ["--heartbeat-ms", "200", "--lease-ms", "4000"];
    let mut first = Mgs::serve_etcd(&etcd.url, &flags);
    first.proc.expect("leader on", Duration::from_secs(10));
    let second = Mgs::serve_etcd(&etcd.url, &flags);
    let both = format!("{},{}", first.addr, second.addr);

    let s = server(TEST, &both, "node-s", None, false);
    s.expect("SERVING oss0 epoch 1", Duration::from_secs(20));
    // The follower answers too (it relays to the leader).
    let mut via_second = MgsClient::connect(&second.addr, BootConfig::default()).unwrap();
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
    let mut c = MgsClient::connect(&both, BootConfig::default()).unwrap();
    assert_eq!(c.fetch_map().unwrap().servers.len(), 2);
}

#[test]
fn a_paused_leader_is_deposed_and_exits_when_resumed_while_servers_carry_on() {
    let Some(etcd) = EtcdProc::start("paused") else {
        return;
    };
    assert!(etcd.format("pausefs", false).status.success());
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
    let mut c = MgsClient::connect(&second.addr, BootConfig::default()).unwrap();
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
