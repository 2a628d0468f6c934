//! Shared by the MGS's multi-process tests: start `nacre-mgs` as a real process, start
//! test servers as real processes (this test binary re-run with one ignored test that
//! acts as a server), read their stdout line by line with deadlines.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nacre_auth::KeySource;

use nacre_mgc::{BootConfig, MgsClient};
use nacre_mgs::role::{LeaseEvent, LeaseKeeper, LeaseStatus};
use nacre_proto::bootstrap::{errno, ClaimRequest, RoleKind, TargetReport, TargetState};

/// nacre-mgs: cargo's for this package's tests, the workspace's for nacre-systest's.
pub fn mgs_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_nacre-mgs") {
        Some(p) => PathBuf::from(p),
        None => nacre_fabric::testing::workspace_bin("nacre-mgs"),
    }
}

/// A fresh directory under the target dir (ext4, not tmpfs).
pub fn tmpdir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("mgs")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub use nacre_fabric::testing::Proc;

/// The file system key of each MGS (by address) and etcd store (by URL) the tests of
/// this process made: what their clients and servers prove themselves with.
static KEYS: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

fn remember_key(at: &str, key: PathBuf) {
    let mut k = KEYS.lock().unwrap_or_else(|p| p.into_inner());
    k.get_or_insert_with(HashMap::new)
        .insert(at.to_string(), key);
}

/// The key of the MGS at `mgs` (the first of a list of addresses), or of the etcd store
/// at that URL.
pub fn key_of(mgs: &str) -> PathBuf {
    let first = mgs.split(',').next().unwrap_or(mgs);
    let k = KEYS.lock().unwrap_or_else(|p| p.into_inner());
    k.as_ref()
        .and_then(|m| m.get(first))
        .cloned()
        .unwrap_or_else(|| panic!("no key known for {mgs}"))
}

/// The one `.key` file `nacre-mgs format` wrote in `dir`.
pub fn key_in(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "key"))
}

pub fn format(dir: &std::path::Path, fsname: &str) {
    let out = Command::new(mgs_bin())
        .args(["format", "--dir"])
        .arg(dir)
        .args(["--fsname", fsname])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client of the MGS at `mgs` with its key.
pub fn client(mgs: &str, cfg: BootConfig) -> MgsClient {
    try_client(mgs, cfg).unwrap()
}

/// [`client`], or why it could not connect and authenticate.
pub fn try_client(mgs: &str, cfg: BootConfig) -> Result<MgsClient, nacre_mgc::MgsError> {
    MgsClient::connect_with(mgs, cfg, KeySource::new(Some(key_of(mgs))))
}

/// A running `nacre-mgs serve`, and the address it printed.
pub struct Mgs {
    pub proc: Proc,
    pub addr: String,
}

impl Mgs {
    /// Serves `dir` on `listen` ("127.0.0.1:0" picks a port) with `extra` flags.
    pub fn serve(dir: &std::path::Path, listen: &str, extra: &[&str]) -> Mgs {
        let store = extra
            .iter()
            .position(|a| *a == "--store")
            .map(|i| extra[i + 1]);
        if let Some(url) = store.filter(|_| !extra.contains(&"--key")) {
            // An MGS on an etcd store is given the key its format wrote.
            let mut with_key: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            with_key.extend(["--key".to_string(), key_of(url).display().to_string()]);
            let with_key: Vec<&str> = with_key.iter().map(String::as_str).collect();
            return Mgs::serve(dir, listen, &with_key);
        }
        let mut cmd = Command::new(mgs_bin());
        cmd.args(["serve", "--dir"])
            .arg(dir)
            .args(["--listen", listen])
            .args(extra);
        let proc = Proc::spawn("mgs", cmd);
        let line = proc.expect("nacre-mgs: serving", Duration::from_secs(20));
        let addr = line
            .split(" on ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .expect("an address")
            .to_string();
        let key = match store {
            Some(url) => key_of(url),
            None => key_in(dir).expect("nacre-mgs format wrote a key"),
        };
        remember_key(&addr, key);
        Mgs { proc, addr }
    }

    pub fn client(&self) -> MgsClient {
        client(&self.addr, BootConfig::default())
    }
}

pub const SHORT: [&str; 4] = ["--heartbeat-ms", "100", "--lease-ms", "500"];

/// Starts this test binary again as a test server: claims a role at `mgs` as `node`
/// (`want`: a standby for that index), keeps its lease and says what happens on stdout.
pub fn server(test: &str, mgs: &str, node: &str, want: Option<u32>, engine: bool) -> Proc {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("NACRE_T_MGS", mgs)
    .env(nacre_auth::KEY_ENV, key_of(mgs))
    .env("NACRE_T_NODE", node)
    .env("NACRE_T_ENGINE", if engine { "1" } else { "0" });
    if let Some(w) = want {
        cmd.env("NACRE_T_WANT", w.to_string());
    }
    Proc::spawn(node, cmd)
}

/// The body of the ignored test that [`server`] runs; returns at once in a normal run.
///
/// Prints `GRANTED <role> epoch <n> at_ms <t>` (t: ms since the UNIX epoch, to compare
/// across processes), `SERVING <role> epoch <n>` every heartbeat while the lease keeper
/// says it may serve, `LAPSED`, `RESTORED`, `UNREACHABLE`, and `FENCED <why>` before
/// exiting with code 3 (stepped down).
pub fn child_main() {
    let Ok(mgs) = std::env::var("NACRE_T_MGS") else {
        return;
    };
    let node = std::env::var("NACRE_T_NODE").unwrap();
    let want = std::env::var("NACRE_T_WANT")
        .ok()
        .map(|w| w.parse().unwrap());
    let engine = if std::env::var("NACRE_T_ENGINE").as_deref() == Ok("1") {
        Some(start_engine())
    } else {
        None
    };
    let cores = engine.as_ref().map_or_else(
        || vec![node.as_bytes().to_vec()],
        |e| e.cores().iter().map(|c| c.fabric_name.clone()).collect(),
    );
    let req = ClaimRequest {
        kind: RoleKind::Oss,
        want,
        node: node.clone(),
        provider: "tcp".into(),
        cores,
        empty: false,
        generation: 1,
        replication: String::new(),
    };
    let cfg = BootConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(500),
    };
    let mut c = MgsClient::new(&mgs, cfg).with_keys(KeySource::new(None));
    let until = Instant::now() + Duration::from_secs(60);
    let (grant, sent) = loop {
        let sent = Instant::now();
        match c.claim(&req) {
            Ok(g) => break (g, sent),
            Err(e) if e.errno() == Some(errno::EBUSY) && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("claim: {e}"),
        }
    };
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    println!("GRANTED {} epoch {} at_ms {at_ms}", grant.role, grant.epoch);
    let report = TargetReport {
        rebuild: Vec::new(),
        settled: Vec::new(),
        standby: String::new(),
        state: TargetState::Up,
        capacity: 1 << 30,
        free: 1 << 29,
    };
    let heartbeat = Duration::from_millis(grant.heartbeat_ms.into());
    let mut keeper = LeaseKeeper::start(&c, grant.clone(), sent, report);
    let events = keeper.events().unwrap();
    loop {
        while let Ok(ev) = events.try_recv() {
            match ev {
                LeaseEvent::Fenced(why) => {
                    println!("FENCED {why}");
                    drop(engine);
                    std::process::exit(3);
                }
                LeaseEvent::Lapsed => println!("LAPSED"),
                LeaseEvent::Restored => println!("RESTORED"),
                LeaseEvent::Unreachable(why) => println!("UNREACHABLE {why}"),
            }
        }
        match keeper.status() {
            LeaseStatus::Serving { .. } => {
                println!("SERVING {} epoch {}", grant.role, grant.epoch)
            }
            other => println!("NOT SERVING {other:?}"),
        }
        std::thread::sleep(heartbeat);
    }
}

/// One engine core on the tcp provider, answering PING (the reactor does) and ENOSYS.
fn start_engine() -> nacre_engine::Engine {
    use nacre_engine::{Core, EngineConfig, Incoming, PoolConfig, Service, SizeClass};
    struct Nothing;
    impl Service for Nothing {
        fn on_request(&mut self, core: &mut Core, req: Incoming<'_>) {
            core.reply(req.peer, &req.header, -38, &[]);
        }
    }
    let cfg = EngineConfig {
        cores: 1,
        no_pin: true,
        fabric: nacre_fabric::Selection::provider("tcp"),
        pool: PoolConfig {
            classes: vec![SizeClass {
                size: 4096,
                count: 4,
            }],
            huge_pages: false,
        },
        ..Default::default()
    };
    nacre_engine::Engine::start(&cfg, |_, _| Nothing).expect("engine starts")
}

/// Whether the tcp provider is here (else the test prints SKIP).
pub fn have_tcp(test: &str) -> bool {
    match nacre_fabric::Info::find(&nacre_fabric::Selection::provider("tcp")) {
        Ok(_) => true,
        Err(e) => {
            nacre_fabric::testing::skip(&format!("{test}: tcp provider not available: {e}"));
            false
        }
    }
}

/// Waits until `pred` holds for a map fetched from `c` (long polls, bounded).
pub fn wait_for_map(
    c: &mut MgsClient,
    within: Duration,
    pred: impl Fn(&nacre_proto::bootstrap::ClusterMap) -> bool,
) -> nacre_proto::bootstrap::ClusterMap {
    let until = Instant::now() + within;
    let mut m = c.fetch_map().unwrap();
    while !pred(&m) {
        let left = until
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("map never matched; last: {m:?}"));
        m = c
            .wait_map(m.version, left.min(Duration::from_secs(1)))
            .unwrap();
    }
    m
}

/// A free loopback port (bound, read back, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real etcd on loopback ports of its own, in a fresh data dir; None (and a SKIP
/// line) if etcd is not installed.
pub struct EtcdProc {
    pub proc: Proc,
    pub url: String,
    dir: PathBuf,
}

impl EtcdProc {
    pub fn start(name: &str) -> Option<EtcdProc> {
        if Command::new("etcd").arg("--version").output().is_err() {
            nacre_fabric::testing::skip(&format!(
                "{name}: etcd is not installed (scripts/deps installs etcd-server)"
            ));
            return None;
        }
        let dir = tmpdir(&format!("etcd-{name}"));
        let (client, peer) = (free_port(), free_port());
        let c = format!("http://127.0.0.1:{client}");
        let p = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new("etcd");
        cmd.arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--name", "default"])
            .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
            .args([
                "--listen-peer-urls",
                &p,
                "--initial-advertise-peer-urls",
                &p,
            ])
            .args(["--initial-cluster", &format!("default={p}")])
            .args(["--logger", "zap", "--log-level", "error"]);
        let proc = Proc::spawn("etcd", cmd);
        let url = format!("etcd://127.0.0.1:{client}");
        // Ready when it answers a health check: a single-member cluster accepts TCP
        // connections before it has elected itself leader, and a request that comes
        // in between fails (seen: `nacre-mgs format` right after the port opened).
        let until = Instant::now() + Duration::from_secs(20);
        let endpoint = format!("127.0.0.1:{client}");
        loop {
            let healthy = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &endpoint, "endpoint", "health"])
                .output()
                .expect("etcdctl (scripts/deps installs etcd-client)");
            if healthy.status.success() {
                break;
            }
            assert!(
                Instant::now() < until,
                "etcd did not become healthy: {}",
                String::from_utf8_lossy(&healthy.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(EtcdProc { proc, url, dir })
    }

    /// The keys under `prefix` now (etcdctl, from scripts/deps' etcd-client).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let endpoint = self.url.trim_start_matches("etcd://");
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                endpoint,
                "get",
                "--prefix",
                "--keys-only",
                prefix,
            ])
            .output()
            .expect("etcdctl (scripts/deps installs etcd-client)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Formats the file system `fsname` in this etcd; panics with the tool's stderr.
    pub fn format_ok(&self, fsname: &str) {
        let out = self.format(fsname, false);
        assert!(
            out.status.success(),
            "nacre-mgs format: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `nacre-mgs format` into this etcd (the key next to its data).
    pub fn format(&self, fsname: &str, force: bool) -> std::process::Output {
        let key = self.dir.join(format!("{fsname}.key"));
        let mut cmd = Command::new(mgs_bin());
        cmd.args(["format", "--store", &self.url, "--fsname", fsname, "--key"])
            .arg(&key);
        if force {
            cmd.arg("--force");
        }
        let out = cmd.output().unwrap();
        if out.status.success() {
            remember_key(&self.url, key);
        }
        out
    }
}

impl Mgs {
    /// `nacre-mgs serve` on the etcd store; returns once it printed where it listens.
    pub fn serve_etcd(url: &str, extra: &[&str]) -> Mgs {
        let dir = tmpdir("unused");
        let mut args = vec!["--store", url];
        args.extend_from_slice(extra);
        Mgs::serve(&dir, "127.0.0.1:0", &args)
    }
}

/// With the default lease (heartbeat 1 s, lease 5 s) on the MGS at `mgs`: an owner of
/// oss0 and a standby for it, the owner killed with kill -9; returns the time from the
/// kill to the standby's grant (clocks of two processes, so the wall clock) and to this
/// test seeing it serve. The standby is refused while the lease holds.
pub fn takeover_after_kill9(test: &str, mgs: &str) -> (Duration, Duration) {
    let mut a = server(test, mgs, "node-a", None, false);
    a.expect("GRANTED oss0 epoch 1", Duration::from_secs(20));
    a.expect("SERVING oss0", Duration::from_secs(5));
    let b = server(test, mgs, "node-b", Some(0), false);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(b.try_expect("GRANTED", Duration::ZERO).is_none());
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let killed = Instant::now();
    a.kill9();
    let line = b.expect("GRANTED oss0 epoch 2", Duration::from_secs(10));
    let granted_ms: u128 = line.rsplit(' ').next().unwrap().parse().unwrap();
    b.expect("SERVING oss0 epoch 2", Duration::from_secs(2));
    let granted = Duration::from_millis((granted_ms - killed_ms) as u64);
    (granted, killed.elapsed())
}
