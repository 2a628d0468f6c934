//! Leases and fencing with real processes: an owner paused with SIGSTOP past its lease
//! loses its role to a successor and, once resumed, is refused and steps down; the
//! takeover after kill -9 of an owner, timed end to end.

mod mgs_support;

use std::time::Duration;

use mgs_support::*;
use nacre_proto::bootstrap::{errno, Role, RoleKind, TargetReport, TargetState};

const TEST: &str = "child_server";

/// Not a test: the body of the server processes the tests below start.
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
fn a_paused_owner_is_fenced_by_its_successor_and_steps_down() {
    let dir = tmpdir("sigstop");
    format(&dir, "fence");
    let mgs = Mgs::serve(&dir, "127.0.0.1:0", &SHORT);
    let a = server(TEST, &mgs.addr, "node-a", None, false);
    a.expect("GRANTED oss0 epoch 1", Duration::from_secs(20));
    a.expect("SERVING oss0 epoch 1", Duration::from_secs(5));

    // Pause the owner until the MGS sees its lease lapse.
    a.signal("STOP");
    let mut c = mgs.client();
    let m = wait_for_map(&mut c, Duration::from_secs(5), |m| {
        m.target(oss0()).unwrap().state == TargetState::Down
    });
    assert_eq!(m.target(oss0()).unwrap().owner, "node-a");

    // A successor takes the same role over, with the next epoch.
    let b = server(TEST, &mgs.addr, "node-b", None, false);
    b.expect("GRANTED oss0 epoch 2", Duration::from_secs(20));
    let m = wait_for_map(&mut c, Duration::from_secs(5), |m| m.is_current(oss0(), 2));
    assert_eq!(m.server(oss0()).unwrap().node, "node-b");
    assert_eq!(m.target(oss0()).unwrap().state, TargetState::Up);

    // Resume the old owner: it stops serving on its own clock, its renewal is refused,
    // it steps down.
    // What it printed before it was stopped is not of interest.
    let _: Vec<String> = a.lines.try_iter().collect();
    a.signal("CONT");
    let mut a = a;
    assert_eq!(a.wait_exit(Duration::from_secs(5)), Some(3), "stepped down");
    // Everything it printed after the resume (the reader ends at its exit).
    let mut after = Vec::new();
    while let Ok(l) = a.lines.recv_timeout(Duration::from_secs(5)) {
        after.push(l);
    }
    let fenced = after
        .iter()
        .find(|l| l.starts_with("FENCED"))
        .unwrap_or_else(|| panic!("no FENCED line: {after:?}"));
    assert!(fenced.contains("epoch 1 is stale"), "{fenced}");
    assert!(fenced.contains("node-b at epoch 2"), "{fenced}");
    // Never once after the resume did it serve epoch 1 beside the successor.
    assert!(
        after.iter().all(|l| !l.starts_with("SERVING")),
        "old owner served after resume: {after:?}"
    );
    // Its epoch is refused to anyone who presents it, and the successor serves on.
    let err = c
        .renew(
            oss0(),
            1,
            TargetReport {
                rebuild: Vec::new(),
                settled: Vec::new(),
                standby: String::new(),
                state: TargetState::Up,
                capacity: 0,
                free: 0,
            },
        )
        .unwrap_err();
    assert_eq!(err.errno(), Some(errno::ESTALE));
    b.expect("SERVING oss0 epoch 2", Duration::from_secs(2));
    assert!(c.fetch_map().unwrap().is_current(oss0(), 2));
}

/// The first line of a paused process's output after SIGCONT must not be SERVING: the
/// server checks its own lease clock before it serves, so it never needs the MGS's
/// refusal to stop.
#[test]
fn a_resumed_owner_stops_serving_before_it_hears_from_the_mgs() {
    let dir = tmpdir("selffence");
    format(&dir, "fence");
    let mut mgs = Mgs::serve(&dir, "127.0.0.1:0", &SHORT);
    let a = server(TEST, &mgs.addr, "node-a", None, false);
    a.expect("SERVING oss0 epoch 1", Duration::from_secs(20));
    a.signal("STOP");
    // Take the MGS away too, so no refusal can arrive: only the own clock decides.
    mgs.proc.kill9();
    std::thread::sleep(Duration::from_millis(800));
    while a.lines.try_recv().is_ok() {}
    a.signal("CONT");
    let first = a
        .lines
        .recv_timeout(Duration::from_secs(5))
        .expect("a line after resume");
    assert!(
        first.starts_with("NOT SERVING") || first == "LAPSED" || first.starts_with("UNREACHABLE"),
        "first line after resume: {first}"
    );
    let _ = a.expect("NOT SERVING", Duration::from_secs(2));
}

#[test]
fn takeover_after_kill9_of_the_owner_takes_at_most_lease_plus_one_second() {
    let dir = tmpdir("takeover");
    format(&dir, "takeover");
    // The defaults: heartbeat 1 s, lease 5 s.
    let mgs = Mgs::serve(&dir, "127.0.0.1:0", &[]);
    let (takeover, serving) = takeover_after_kill9(TEST, &mgs.addr);
    println!("takeover after kill -9: granted {takeover:?}, serving seen {serving:?} (lease 5 s)");
    assert!(
        takeover <= Duration::from_secs(6),
        "takeover took {takeover:?}"
    );
    assert!(
        takeover >= Duration::from_millis(4000),
        "taken before the lease could lapse: {takeover:?}"
    );
}
