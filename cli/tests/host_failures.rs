//! Servers failing on other hosts while a client works: four hosts made of network
//! namespaces on a bridge, over tcp;ofi_rxm. A (10.201.0.1) runs the MGS of a
//! persistent file system and an OSS with two OSTs, B (.2) a second OSS, C (.3) the
//! client, D (.4) the MDS. On C, `nacre-bench failover --mgs` writes and reads whole
//! files in turn, each read checked against the last acknowledged write, while the
//! test fails B's OSS and then D's MDS every way a server fails: kill -9, SIGSTOP past
//! the lease and SIGCONT, and the host cut off the network for longer than the lease
//! (its bridge port down: packets dropped, nobody told). `nacre up` on each host starts
//! a dead or fenced server again. Last, a standby MDS on host E (.5) follows D's, and
//! D is cut off past the lease: E takes mds0 over, and D's MDS, back, follows E. No
//! call of the workload fails, nothing acknowledged is lost, no read returns other
//! bytes, the MDS rebuilds B's stale copies, and every target ends up.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::hosts::{write_config, Hosts, MGS};
use common::{bench_bin, shown_targets, tmp, Shown, Up};
use nacre_fabric::testing::{send_signal, Proc};

/// The MGS's default lease.
const LEASE: Duration = Duration::from_secs(5);
/// What a call's pause may exceed the lease by on a lost OSS: the target is
/// 1 s (measured by `nacre-bench failover`); the test allows for two vCPUs shared by
/// four servers and the workload.
const SLACK: Duration = Duration::from_secs(3);

/// Every target in `nacre status` from host C.
fn targets(hosts: &Hosts) -> (Vec<Shown>, String) {
    let out = hosts.nacre(2, &["status"]);
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    (shown_targets(&status), status)
}

/// Waits until every target (the MDT and four OSTs) is `up` or, when `rebuilt` is
/// false, at least serving again (`rebuilding N%`), those owned from directory `dir`
/// at an epoch above `above` (a server that came back, not the map from before).
fn serving(hosts: &Hosts, rebuilt: bool, dir: &str, above: u64, within: Duration) -> String {
    let until = Instant::now() + within;
    loop {
        let (shown, status) = targets(hosts);
        let ok = |t: &Shown| {
            (t.state == "up" || (!rebuilt && t.state == "rebuilding"))
                && (!t.owner.contains(dir) || t.epoch > above)
        };
        if shown.len() == 5 && shown.iter().all(ok) {
            return status;
        }
        assert!(
            Instant::now() < until,
            "targets not serving within {within:?}:\n{status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Seconds into the minute, UTC: to read beside the servers' logs.
fn clock() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("[:{:06.3}]", t.as_secs_f64() % 60.0)
}

/// `nacre-bench failover --mgs` on host C: whole files written and read in turn, each
/// read checked, until SIGTERM (ten minutes at most).
struct Workload(Proc);

impl Workload {
    fn start(hosts: &Hosts) -> Workload {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &hosts.hosts[2]])
            .arg(bench_bin())
            .args(["failover", "--mgs", MGS, "--files", "6", "--file-mib", "2"])
            .args(["--before", "600", "--after", "0"])
            .env("NACRE_KEY", hosts.key())
            .env("NACRE_LOG", "warn");
        let w = Workload(Proc::spawn("failover", cmd));
        eprintln!("{} workload started", clock());
        std::thread::sleep(Duration::from_secs(2));
        w
    }

    /// Stops the workload; it must have lost nothing, read nothing wrong and seen no
    /// call fail. Returns its longest call.
    fn finish(mut self) -> Duration {
        self.0.signal("TERM");
        let counts = self.0.expect("kill=outside", Duration::from_secs(180));
        let last = self.0.expect("pause_ms=", Duration::from_secs(10));
        eprintln!("workload: {counts}\nworkload: {last}");
        assert_eq!(
            self.0.wait_exit(Duration::from_secs(30)),
            Some(0),
            "{counts} {last}"
        );
        let figure = |key: &str| -> u64 {
            last.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{key} in {last:?}")) as u64
        };
        assert_eq!(figure("lost_ops="), 0, "{last}");
        assert_eq!(figure("corrupt="), 0, "{last}");
        assert!(counts.contains(" errors=0 "), "{counts}");
        Duration::from_millis(figure("pause_ms="))
    }
}

/// One failure of server `name` of `up` (on host `host`, its targets under directory
/// `dir`), then the wait until it is started again and serves.
fn fail(hosts: &Hosts, up: &mut Up, host: usize, dir: &str, name: &str, how: &str) {
    let (before, _) = targets(hosts);
    let epoch = before
        .iter()
        .filter(|t| t.owner.contains(dir))
        .map(|t| t.epoch)
        .max()
        .expect("the server's targets in the map");
    let pid = up.pid_of(name);
    let t = Instant::now();
    eprintln!("{} {how} of {name} (pid {pid}) on host {host}", clock());
    match how {
        "kill" => send_signal(pid, "KILL").expect("kill -9"),
        "stop" => {
            send_signal(pid, "STOP").expect("SIGSTOP");
            std::thread::sleep(LEASE + Duration::from_secs(2));
            send_signal(pid, "CONT").expect("SIGCONT");
        }
        "cut" => {
            hosts.link(host, false);
            std::thread::sleep(LEASE + Duration::from_secs(2));
            hosts.link(host, true);
        }
        _ => unreachable!(),
    }
    // Killed, or fenced once it could hear the MGS again: either way it exits and
    // `nacre up` starts it again at a new epoch.
    up.wait_for(
        &format!("nacre up: {name} restarted"),
        Duration::from_secs(60),
    );
    serving(hosts, false, dir, epoch, Duration::from_secs(60));
    eprintln!(
        "{name} on host {host}: {how}; serving again {:?} later",
        t.elapsed()
    );
    // The workload's calls of this failure end before the next one starts.
    std::thread::sleep(Duration::from_secs(3));
}

#[test]
fn servers_fail_on_other_hosts_and_nothing_is_lost() {
    let provider = "tcp;ofi_rxm";
    if !common::have(provider, "servers failing on other hosts") {
        return;
    }
    let hosts = match Hosts::named("fail", &["a", "b", "c", "d", "e"]) {
        Ok(h) => h,
        Err(e) => {
            nacre_fabric::testing::skip(&format!("five hosts: {e}"));
            return;
        }
    };
    let dir = tmp("host-failures");
    let d = dir.display();
    let cfg = |name: &str, text: String| write_config(&dir.join(name), &text);
    let a_cfg = cfg(
        "a.toml",
        format!(
            "[mgs]\nlisten = \"{MGS}\"\ndeployment = \"persistent\"\n\
             [[oss]]\nosts = [\"{d}/a/ost0\", \"{d}/a/ost1\"]\n"
        ),
    );
    let start = |host: usize, name: &str, cfg: &str| {
        Up::start_via(
            &hosts.prefix(host),
            &dir.join(name),
            provider,
            &["--config", cfg],
        )
    };
    let a = start(0, "a", &a_cfg);
    // The other hosts are given the key A's MGS made.
    hosts.set_key(&a.key);
    let key = &a.key;
    let b_cfg = cfg(
        "b.toml",
        format!(
            "mgs_address = \"{MGS}\"\nkey = \"{key}\"\n\
             [[oss]]\nosts = [\"{d}/b/ost0\", \"{d}/b/ost1\"]\n"
        ),
    );
    let d_cfg = cfg(
        "d.toml",
        format!("mgs_address = \"{MGS}\"\nkey = \"{key}\"\n[mds]\ndir = \"{d}/d/mdt\"\n"),
    );
    let mut b = start(1, "b", &b_cfg);
    let mut dh = start(3, "d", &d_cfg);
    serving(&hosts, true, "", 0, Duration::from_secs(60));

    // B's OSS fails each way under one workload, then D's MDS under another: a call
    // waits out an OSS's lease, and an MDS's absence (no standby takes over yet).
    let (b_dir, d_dir) = (format!("{d}/b/"), format!("{d}/d/"));
    let work = Workload::start(&hosts);
    for how in ["kill", "stop", "cut"] {
        fail(&hosts, &mut b, 1, &b_dir, "oss0", how);
    }
    let pause = work.finish();
    assert!(
        pause <= LEASE + SLACK,
        "a call paused {pause:?} on a lost OSS"
    );
    let work = Workload::start(&hosts);
    for how in ["kill", "stop", "cut"] {
        fail(&hosts, &mut dh, 3, &d_dir, "mds", how);
    }
    let pause = work.finish();
    assert!(pause <= LEASE * 4, "a call paused {pause:?} on a lost MDS");

    // A standby on E follows D's MDS; D is cut off past the lease: E takes over.
    let e_cfg = cfg(
        "e.toml",
        format!(
            "mgs_address = \"{MGS}\"\nkey = \"{key}\"\n[mds]\ndir = \"{d}/e/mdt\"\nstandby = true\n"
        ),
    );
    let eh = start(4, "e", &e_cfg);
    let d_log = dir.join("d/logs/mds.log");
    let until = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&d_log).is_ok_and(|l| l.contains("/e/mdt in sync")) {
        assert!(
            Instant::now() < until,
            "E's standby never in sync with D's MDS"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // D's next heartbeat names E.
    std::thread::sleep(Duration::from_secs(2));
    let work = Workload::start(&hosts);
    fail(&hosts, &mut dh, 3, &d_dir, "mds", "cut");
    let (shown, status) = targets(&hosts);
    let mdt = shown
        .iter()
        .find(|t| t.name.contains("MDT"))
        .expect("the MDT");
    assert!(mdt.owner.contains("/e/mdt"), "E serves mds0:\n{status}");
    let pause = work.finish();
    eprintln!("the active MDS's host cut off, the standby took over: longest call {pause:?}");
    assert!(
        pause <= LEASE * 4,
        "a call paused {pause:?} on a lost MDS with a standby"
    );
    // The MDS rebuilt every stale copy on B: every target up.
    serving(&hosts, true, "", 0, Duration::from_secs(120));
    dh.stop();
    eh.stop();
    b.stop();
    a.stop();
}
