//! Starting `nacre up` (real MGS, MDS and OSS processes) and running the `nacre`
//! command against it, for the CLI and client tests.
#![allow(dead_code)]

pub mod hosts;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nacre_fabric::testing::{skip, Proc};
use nacre_fabric::Selection;

/// The `nacre` binary: cargo's for the CLI's own tests; for other crates' tests (this
/// module is shared with capi/tests), the one `cargo test --workspace` built beside them.
pub fn nacre_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_nacre") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("nacre");
    assert!(
        bin.exists(),
        "{} is not built: run the suite with `cargo test --workspace` (scripts/test)",
        bin.display()
    );
    bin
}

/// A target as `nacre status` shows it: its name (`OST0002`), the first word of its
/// state (`up`, `degraded`, `rebuilding`...), its epoch and its owner.
#[allow(dead_code)]
pub struct Shown {
    pub name: String,
    pub state: String,
    pub epoch: u64,
    pub owner: String,
}

/// Every target in the output of `nacre status`.
#[allow(dead_code)]
pub fn shown_targets(status: &str) -> Vec<Shown> {
    status
        .lines()
        .filter(|l| l.starts_with("MDT") || l.starts_with("OST"))
        .map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            // `rebuilding N%` is two words.
            let at = if t[2] == "rebuilding" { 4 } else { 3 };
            Shown {
                name: t[0].to_string(),
                state: t[2].to_string(),
                epoch: t[at].parse().unwrap(),
                owner: t.last().unwrap().to_string(),
            }
        })
        .collect()
}

/// The `nacre-bench` binary of this build (built by `cargo test --workspace`).
#[allow(dead_code)]
pub fn bench_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("nacre-bench");
    assert!(
        bin.exists(),
        "{} is not built: run the suite with `cargo test --workspace` (scripts/test)",
        bin.display()
    );
    bin
}

/// A fresh directory on the target disk (ext4: O_DIRECT works there, not on tmpfs).
pub fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Whether every one of `tools` is on PATH; says which is missing (printed, never
/// silent) when one is not.
pub fn have_tools(what: &str, tools: &[&str]) -> bool {
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            skip(&format!(
                "{what}: {tool} missing (scripts/deps installs it)"
            ));
            return false;
        }
    }
    true
}

/// Whether `provider` works here; says why not (printed, never silent) when it does not.
pub fn have(provider: &str, what: &str) -> bool {
    match nacre_fabric::Info::find(&Selection::provider(provider)) {
        Ok(_) => true,
        Err(e) => {
            skip(&format!("{what} on {provider}: {e}"));
            false
        }
    }
}

/// The file system key of each MGS (by address) that a `nacre up` of this test process
/// printed: what `nacre` and the other clients run against it prove themselves with.
static KEYS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// The key of the file system whose MGS is at `mgs`.
pub fn key_of(mgs: &str) -> String {
    known_key(mgs).unwrap_or_else(|| panic!("no key known for the MGS at {mgs}"))
}

fn known_key(mgs: &str) -> Option<String> {
    let keys = KEYS.lock().unwrap_or_else(|p| p.into_inner());
    keys.iter()
        .rev()
        .find(|(m, _)| m == mgs)
        .map(|(_, k)| k.clone())
}

/// Notes that the file system at `mgs` has the key `key` (a file).
pub fn remember_key(mgs: &str, key: &str) {
    let mut keys = KEYS.lock().unwrap_or_else(|p| p.into_inner());
    keys.push((mgs.to_string(), key.to_string()));
}

/// A library client's configuration against the file system whose MGS is at `mgs`
/// (its key).
#[allow(dead_code)]
pub fn client_config(mgs: &str) -> nacre_client::ClientConfig {
    nacre_client::ClientConfig {
        keys: nacre_auth::KeySource::new(Some(key_of(mgs).into())),
        ..Default::default()
    }
}

/// The `NACRE_KEY` of a `nacre up --config` run by a test: the key of the MGS its
/// `mgs_address` names, when it names one this process knows.
fn config_key(extra: &[&str]) -> Option<String> {
    let at = extra.iter().position(|a| *a == "--config")?;
    let text = std::fs::read_to_string(extra.get(at + 1)?).ok()?;
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("mgs_address"))?;
    let mgs = line.split('"').nth(1)?;
    let keys = KEYS.lock().unwrap_or_else(|p| p.into_inner());
    keys.iter()
        .rev()
        .find(|(m, _)| m == mgs)
        .map(|(_, k)| k.clone())
}

/// A running `nacre up`, stopped (SIGTERM) by [`Up::stop`] or killed on drop.
pub struct Up {
    pub proc: Proc,
    pub mgs: String,
    /// The file system key it printed (`NACRE_KEY=`).
    pub key: String,
    /// (server name, pid) as `nacre up` printed them.
    pub servers: Vec<(String, u32)>,
}

impl Up {
    /// `nacre up --dir DIR --provider P --listen 127.0.0.1:0` plus `extra`.
    pub fn start(dir: &Path, provider: &str, extra: &[&str]) -> Up {
        let mut cmd = Command::new(nacre_bin());
        cmd.args(up_args(dir, provider, extra));
        if let Some(key) = config_key(extra) {
            cmd.env("NACRE_KEY", key);
        }
        Up::spawn(cmd)
    }

    /// As [`Up::start`], run through `prefix` (such as `ip netns exec NS`).
    pub fn start_via(prefix: &[&str], dir: &Path, provider: &str, extra: &[&str]) -> Up {
        let mut cmd = Command::new(prefix[0]);
        cmd.args(&prefix[1..]).arg(nacre_bin());
        cmd.args(up_args(dir, provider, extra));
        if let Some(key) = config_key(extra) {
            cmd.env("NACRE_KEY", key);
        }
        Up::spawn(cmd)
    }

    /// As [`Up::start`], inside a network namespace of its own that has only loopback
    /// (for programs such as mpirun that listen on every address).
    pub fn start_in_netns(dir: &Path, provider: &str) -> Up {
        let mut cmd = Command::new("unshare");
        cmd.args(["-n", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""]);
        cmd.arg(nacre_bin()).args(up_args(dir, provider, &[]));
        Up::spawn(cmd)
    }

    fn spawn(cmd: Command) -> Up {
        let proc = Proc::spawn("nacre-up", cmd);
        let until = Instant::now() + Duration::from_secs(120);
        let mut servers = Vec::new();
        loop {
            let left = until
                .checked_duration_since(Instant::now())
                .expect("nacre up: no NACRE_MGS= line within 120 s");
            let line = proc
                .lines
                .recv_timeout(left)
                .expect("nacre up: ended or silent before NACRE_MGS=");
            if let Some(addr) = line.strip_prefix("NACRE_MGS=") {
                // The key comes on the next line.
                let next = proc
                    .lines
                    .recv_timeout(Duration::from_secs(10))
                    .expect("nacre up: no line after NACRE_MGS=");
                let key = next
                    .strip_prefix("NACRE_KEY=")
                    .unwrap_or_else(|| {
                        panic!("nacre up: {next:?} after NACRE_MGS=, not NACRE_KEY=")
                    })
                    .trim()
                    .to_string();
                let mgs = addr.trim().to_string();
                remember_key(&mgs, &key);
                return Up {
                    mgs,
                    key,
                    proc,
                    servers,
                };
            }
            if let Some((name, pid)) = server_line(&line) {
                servers.push((name, pid));
            }
        }
    }

    /// Waits up to `timeout` for a line of `nacre up` that contains `what`, noting the
    /// servers it starts again on the way (so they are stopped with the others).
    #[allow(dead_code)]
    pub fn wait_for(&mut self, what: &str, timeout: Duration) -> String {
        let until = Instant::now() + timeout;
        loop {
            let left = until
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("nacre up: no {what:?} within {timeout:?}"));
            let line = self
                .proc
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("nacre up: ended or silent before {what:?}"));
            if let Some((name, pid)) = server_line(&line) {
                self.servers.retain(|(n, _)| *n != name);
                self.servers.push((name, pid));
            }
            if line.contains(what) {
                return line;
            }
        }
    }

    pub fn pid_of(&self, name: &str) -> u32 {
        self.servers
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("nacre up started no {name}: {:?}", self.servers))
            .1
    }

    /// SIGTERM, as Ctrl-C would: every server stops cleanly and `nacre up` exits 0.
    pub fn stop(mut self) {
        self.proc.signal("TERM");
        self.proc
            .expect("nacre up: stopped", Duration::from_secs(90));
        assert_eq!(self.proc.wait_exit(Duration::from_secs(10)), Some(0));
        for (name, pid) in &self.servers {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists() || zombie(*pid),
                "{name} (pid {pid}) still runs after nacre up stopped"
            );
        }
    }

    /// The `nacre` command against this file system.
    pub fn nacre(&self, args: &[&str]) -> Output {
        nacre(&self.mgs, args)
    }

    /// `nacre ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.nacre(args);
        assert!(
            out.status.success(),
            "nacre {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `nacre ARGS`, which must fail with one line on stderr; that line.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.nacre(args);
        assert_eq!(out.status.code(), Some(1), "nacre {args:?} should fail");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "one line of error, got {err:?}");
        assert!(err.starts_with("nacre: "), "{err:?}");
        err
    }
}

impl Drop for Up {
    /// A test that failed half-way must not leave servers behind: kill what still runs
    /// (by pid, checking it is still ours).
    fn drop(&mut self) {
        for (_, pid) in &self.servers {
            let ours = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .map(|c| c.contains("nacre-"))
                .unwrap_or(false);
            if ours && !zombie(*pid) {
                let _ = nacre_fabric::testing::send_signal(*pid, "KILL");
            }
        }
    }
}

fn up_args(dir: &Path, provider: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["up".to_string(), "--dir".into(), dir.display().to_string()];
    args.extend(["--provider".into(), provider.to_string()]);
    if !extra.contains(&"--config") {
        args.extend(["--listen".into(), "127.0.0.1:0".into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}

/// "nacre up: oss0 (pid 123) logs to ..." -> ("oss0", 123).
fn server_line(line: &str) -> Option<(String, u32)> {
    let rest = line.strip_prefix("nacre up: ")?;
    let (name, rest) = rest.split_once(" (pid ")?;
    let (pid, _) = rest.split_once(')')?;
    Some((name.to_string(), pid.parse().ok()?))
}

pub fn nacre(mgs: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(nacre_bin());
    cmd.args(args).env("NACRE_MGS", mgs);
    // No key for an MGS nobody started (a test of an unreachable address).
    if let Some(key) = known_key(mgs) {
        cmd.env("NACRE_KEY", key);
    }
    cmd.output().expect("running nacre")
}

/// A mount made by `nacre mount` (the daemon), unmounted on drop.
pub struct Mount {
    pub dir: PathBuf,
    pub pid: u32,
}

impl Mount {
    pub fn new(up: &Up, dir: PathBuf) -> Mount {
        std::fs::create_dir_all(&dir).unwrap();
        let out = up.ok(&["mount", dir.to_str().unwrap()]);
        Mount::made(dir, &out)
    }

    /// The mount on `dir` that `nacre mount` made, as its output `out` tells.
    pub fn made(dir: PathBuf, out: &str) -> Mount {
        let pid = out
            .split("daemon pid ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no daemon pid in {out:?}"));
        Mount { dir, pid }
    }

    pub fn path(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new(nacre_bin())
            .arg("umount")
            .arg(&self.dir)
            .output();
    }
}

/// Object files on every OST under `data` (`ossN/targetM/O/hh/<id>`).
pub fn objects(data: &Path) -> usize {
    let mut n = 0;
    let dirs = |p: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(p)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let is_oss = |p: &std::path::PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("oss"))
    };
    for oss in dirs(data).into_iter().filter(is_oss) {
        for target in dirs(&oss) {
            for hh in dirs(&target.join("O")) {
                n += dirs(&hh).len();
            }
        }
    }
    n
}

pub fn wait_for_objects(data: &Path, want: usize, what: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let n = objects(data);
        if n == want {
            return;
        }
        assert!(
            Instant::now() < until,
            "{what}: {n} objects on the OSTs after 10 s, want {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
