//! A real `nacre-mgs` and `nacre-oss serve` as child processes, and clients of them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nacre_client::objects::OstRoute;
use nacre_client::{ClientEndpoint, RpcConfig};
use nacre_fabric::testing::{workspace_bin, Proc};
use nacre_fabric::Selection;
use nacre_mgc::{BootConfig, MgsClient};
use nacre_proto::bootstrap::{ClusterMap, Role, RoleKind, TargetKind};

pub fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("oss-serve-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Where a child test process finds its parent's key (see [`key`]).
pub const CHILD_KEY: &str = "NACRE_TEST_KEY";

/// The file system key every MGS of this test process is formatted with (all are
/// `ossfs`): its servers and clients prove themselves with it.
pub fn key() -> &'static (PathBuf, nacre_auth::Key) {
    static KEY: std::sync::OnceLock<(PathBuf, nacre_auth::Key)> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        // A child this test process started (a reader to kill, say) uses its parent's.
        if let Some(path) = std::env::var_os(CHILD_KEY).map(PathBuf::from) {
            let key = nacre_auth::Key::load(&path).unwrap();
            return (path, key);
        }
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("ossfs-{}.key", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let key = nacre_auth::Key::generate("ossfs").unwrap();
        key.save(&path).unwrap();
        (path, key)
    })
}

pub fn mgs(bin: &Path, dir: &Path) -> (Proc, String) {
    let out = Command::new(bin)
        .args(["format", "--dir"])
        .arg(dir)
        .args(["--fsname", "ossfs", "--key"])
        .arg(&key().0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = Command::new(bin);
    cmd.env(nacre_auth::KEY_ENV, &key().0);
    cmd.args(["serve", "--dir"]).arg(dir).args([
        "--listen",
        "127.0.0.1:0",
        // A lease well above the heartbeat: under a loaded CI machine (loop-mounted
        // ext4 being filled and failed beside), an MGS answer was once late by more
        // than 100 ms twice over, a 1 s lease lapsed and the OSS stopped serving
        // mid-test (ESTALE). No test here waits for a lease to lapse.
        "--heartbeat-ms",
        "200",
        "--lease-ms",
        "4000",
    ]);
    let p = Proc::spawn("mgs", cmd);
    let line = p.expect("nacre-mgs: serving", Duration::from_secs(20));
    let addr = line
        .split(" on ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    (p, addr.to_string())
}

pub fn oss(provider: &str, mgs: &str, osts: &[PathBuf]) -> Proc {
    oss_with(provider, mgs, osts, &[])
}

/// [`oss`] with more `serve` flags.
pub fn oss_with(provider: &str, mgs: &str, osts: &[PathBuf], flags: &[&str]) -> Proc {
    let p = Proc::spawn("oss", oss_command(provider, mgs, osts, flags));
    p.expect("nacre-oss: ready", Duration::from_secs(30));
    p
}

/// The `nacre-oss serve` command line of [`oss_with`].
pub fn oss_command(provider: &str, mgs: &str, osts: &[PathBuf], flags: &[&str]) -> Command {
    let mut cmd = Command::new(workspace_bin("nacre-oss"));
    cmd.args([
        "serve",
        "--mgs",
        mgs,
        "--provider",
        provider,
        "--cores",
        "2",
        "--no-pin",
    ]);
    if !flags.contains(&"--identity") {
        cmd.args(["--identity", "test-oss"]);
    }
    for d in osts {
        cmd.arg("--ost").arg(d);
    }
    cmd.args(flags);
    cmd.env("RUST_LOG", "warn");
    cmd.env(nacre_auth::KEY_ENV, &key().0);
    cmd
}

/// The route to OST `index` as `map` gives it.
pub fn route(map: &ClusterMap, index: u32) -> OstRoute {
    let role = Role {
        kind: RoleKind::Oss,
        index,
    };
    let t = map.target(role).expect("target in the map");
    assert_eq!(t.kind, TargetKind::Ost);
    OstRoute::in_map(map, index).expect("server in the map")
}

/// The map once both OSTs are served with an epoch newer than `after`.
pub fn map_with_osts(addr: &str, after: u64) -> ClusterMap {
    wait_map(addr, "both OSTs served", |m| {
        (0..2).all(|index| {
            let role = Role {
                kind: RoleKind::Oss,
                index,
            };
            m.server(role).is_some_and(|s| s.epoch > after)
        })
    })
}

/// The first map that satisfies `ready`, fetched every 50 ms for at most 20 s.
pub fn wait_map(addr: &str, what: &str, ready: impl Fn(&ClusterMap) -> bool) -> ClusterMap {
    let keys = nacre_auth::KeySource::key(key().1.clone());
    let mut c = MgsClient::connect_with(addr, BootConfig::default(), keys).unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let m = c.fetch_map().unwrap();
        if ready(&m) {
            return m;
        }
        assert!(Instant::now() < until, "never saw {what}: {m:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fresh MGS for a test that runs servers as processes, with its directory and
/// address; None (after saying why) when `provider` is absent.
pub fn cluster(provider: &str, name: &str) -> Option<(PathBuf, Proc, String)> {
    let bin = workspace_bin("nacre-mgs");
    if let Err(e) = nacre_fabric::Info::find(&Selection::provider(provider)) {
        nacre_fabric::testing::skip(&format!("{name} on {provider}: {e}"));
        return None;
    }
    let dir = tmp(name);
    let (mgs, addr) = mgs(&bin, &dir.join("mgs"));
    Some((dir, mgs, addr))
}

pub fn client(provider: &str) -> ClientEndpoint {
    let cfg = RpcConfig {
        msg_size: nacre_oss::server::MSG_SIZE,
        timeout: Duration::from_secs(5),
        key: Some(key().1.clone()),
        ..Default::default()
    };
    ClientEndpoint::open(&Selection::provider(provider), cfg).unwrap()
}

/// An MGS and one `nacre-oss serve` of two OSTs (`first`, else `DIR/ost-a`, then
/// `DIR/ost-b`), with the map once both are served. Dropping it stops both processes.
pub struct TwoOsts {
    pub addr: String,
    pub map: ClusterMap,
    _server: Proc,
    _mgs: Proc,
}

/// [`TwoOsts`] for test `name`, or None after saying why it skips.
pub fn two_osts(provider: &str, name: &str, first: Option<&Path>) -> Option<TwoOsts> {
    let (dir, mgs, addr) = cluster(provider, name)?;
    let first = first.map_or_else(|| dir.join("ost-a"), Path::to_path_buf);
    let server = oss(provider, &addr, &[first, dir.join("ost-b")]);
    let map = map_with_osts(&addr, 0);
    Some(TwoOsts {
        addr,
        map,
        _server: server,
        _mgs: mgs,
    })
}
