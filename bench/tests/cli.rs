//! nacre-bench as a user runs it: server and client processes on 127.0.0.1, on each
//! provider, printing fi_pingpong's columns with every message acknowledged.

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nacre_fabric::testing::KillOnDrop;

const BIN: &str = env!("CARGO_BIN_EXE_nacre-bench");

fn provider_available(provider: &str) -> bool {
    match nacre_fabric::Info::find(&nacre_fabric::Selection::provider(provider)) {
        Ok(_) => true,
        Err(e) => {
            nacre_fabric::testing::skip(&format!(
                "nacre-bench on provider {provider}: not available on this machine: {e}"
            ));
            false
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs server and client with `args`; returns the client's output (both must succeed
/// within a minute: a hang is a failure, not a stuck test run).
fn run_pair(sub: &str, args: &[&str]) -> Output {
    let port = free_port().to_string();
    // Guards: a failure half-way kills both (no server left polling).
    let server = KillOnDrop::new(
        Command::new(BIN)
            .arg(sub)
            .args(args)
            .args(["-B", &port])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let client = KillOnDrop::new(
        Command::new(BIN)
            .arg(sub)
            .args(args)
            .args(["-P", &port, "127.0.0.1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let client = finish_within(client, "client");
    let server = finish_within(server, "server");
    for (who, out) in [("server", &server), ("client", &client)] {
        assert!(
            out.status.success(),
            "{who} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    client
}

fn finish_within(mut child: KillOnDrop, who: &str) -> Output {
    let start = Instant::now();
    while child.child().try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let mut child = child.into_inner();
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("{who} hung: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.into_inner().wait_with_output().unwrap()
}

fn rows(out: &Output) -> Vec<Vec<String>> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("bytes"))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn pingpong_prints_fi_pingpong_rows() {
    for provider in ["tcp", "sockets", "shm"] {
        if !provider_available(provider) {
            continue;
        }
        let out = run_pair(
            "pingpong",
            &[
                "-p",
                provider,
                "-e",
                "rdm",
                "-I",
                "50",
                "-S",
                "0,64,4096,1048576",
                "-c",
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("bytes   #sent   #ack     total"), "{text}");
        let rows = rows(&out);
        assert_eq!(rows.len(), 4, "{text}");
        for (row, size) in rows.iter().zip(["0", "64", "4k", "1m"]) {
            assert_eq!(row.len(), 8, "{text}");
            assert_eq!(row[0], size);
            assert_eq!(row[2], "=50", "every ping acknowledged: {text}");
        }
        println!("{provider}:\n{text}");
    }
}

#[test]
fn rma_prints_bandwidth_rows() {
    for provider in ["tcp", "sockets", "shm"] {
        if !provider_available(provider) {
            continue;
        }
        for op in ["read", "write"] {
            let out = run_pair(
                "rma",
                &["-p", provider, "--op", op, "-I", "64", "-S", "4096,1048576"],
            );
            let rows = rows(&out);
            assert_eq!(rows.len(), 2);
            for row in &rows {
                assert_eq!(row[2], "=64");
                let mbs: f64 = row[5].parse().unwrap();
                assert!(mbs > 0.0);
            }
        }
    }
}

#[test]
fn bad_arguments_fail_with_one_clear_line() {
    let out = Command::new(BIN)
        .args(["pingpong", "-e", "msg", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("endpoint type `msg` is not supported"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["pingpong", "-S", "12x", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Error parsing \"12x\""), "{err}");

    // A provider that does not exist: both sides say so and exit, neither hangs.
    let port = free_port().to_string();
    let server = KillOnDrop::new(
        Command::new(BIN)
            .args(["pingpong", "-p", "no-such-provider", "-B", &port])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let client = Command::new(BIN)
        .args([
            "pingpong",
            "-p",
            "no-such-provider",
            "-P",
            &port,
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    let server = finish_within(server, "server");
    for out in [&server, &client] {
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no libfabric provider matches"), "{err}");
    }
}

/// mdtest on a local directory: every phase prints its line, and the files are gone.
#[test]
fn mdtest_runs_its_phases_on_a_local_directory() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mdtest-local");
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(BIN)
        .args([
            "mdtest",
            "--local",
            "-n",
            "50",
            "-t",
            "2",
            "--unique-dir",
            "-d",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for phase in ["create", "stat", "readdir", "remove"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("phase={phase} ops_per_s=")))
            .unwrap_or_else(|| panic!("no {phase} line in {text}"));
        let rate: f64 = line.rsplit('=').next().unwrap().parse().unwrap();
        assert!(rate > 0.0, "{line}");
    }
    for t in 0..2 {
        assert_eq!(
            std::fs::read_dir(dir.join(format!("task{t}")))
                .unwrap()
                .count(),
            0
        );
    }
    // Creating over existing files is an error, said in one line.
    std::fs::write(dir.join("task0").join("f.0.0"), b"").unwrap();
    let out = Command::new(BIN)
        .args([
            "mdtest",
            "--local",
            "-n",
            "5",
            "-t",
            "2",
            "--unique-dir",
            "-d",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("create"));
}

/// fuse-floor serves a namespace a create workload can use, and ends when unmounted.
#[test]
fn fuse_floor_serves_creates_until_unmounted() {
    let has = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !std::path::Path::new("/dev/fuse").exists() || !has("fusermount3") {
        eprintln!("SKIP fuse-floor: no /dev/fuse or fusermount3 (scripts/deps installs fuse3)");
        return;
    }
    let mnt = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuse-floor");
    let _ = Command::new("fusermount3").arg("-u").arg(&mnt).output();
    let _ = std::fs::remove_dir_all(&mnt);
    std::fs::create_dir_all(&mnt).unwrap();
    let child = KillOnDrop::new(
        Command::new(BIN)
            .arg("fuse-floor")
            .arg(&mnt)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mounted = || {
        let m = std::fs::read_to_string("/proc/mounts").unwrap();
        m.contains(&format!(" {} ", mnt.display()))
    };
    let start = Instant::now();
    while !mounted() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(mounted(), "fuse-floor did not mount");
    let d = mnt.join("d");
    std::fs::create_dir(&d).unwrap();
    for i in 0..50 {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(d.join(format!("f{i}")))
            .unwrap();
    }
    let again = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(d.join("f7"));
    assert_eq!(again.unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 50);
    std::fs::remove_file(d.join("f7")).unwrap();
    assert!(!d.join("f7").exists());
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    finish_within(child, "fuse-floor");
}

/// `nacre-bench failover` on a file system of its own: kill -9 of an OSS, then of the
/// MDS, under the checked workload; nothing acknowledged is lost, no read is wrong,
/// and the last line has the four figures. (Its pause target is a benchmark's: the
/// figures are printed, not timed here.)
#[test]
fn failover_loses_nothing() {
    if !provider_available("shm") {
        return;
    }
    for victim in ["oss", "mds"] {
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("failover");
        let child = Command::new(BIN)
            .args(["failover", "--provider", "shm", "--kill", victim])
            .args([
                "--files",
                "4",
                "--file-mib",
                "1",
                "--before",
                "1",
                "--after",
                "1",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = finish_within(KillOnDrop::new(child), "nacre-bench failover");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "failover --kill {victim}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let last = text.lines().last().unwrap_or_default();
        eprintln!("failover --kill {victim}: {last}");
        let field = |k: &str| -> f64 {
            last.split_whitespace()
                .find_map(|f| f.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
                .unwrap_or_else(|| panic!("no {k} in {last:?}"))
        };
        assert_eq!(field("lost_ops"), 0.0, "{last}");
        assert_eq!(field("corrupt"), 0.0, "{last}");
        assert!(
            field("pause_ms") > 0.0 && field("rebuild_s") >= 0.0,
            "{last}"
        );
    }
}
