//! `nacre-oss serve` as a real process beside a real `nacre-mgs`: the OSS claims a role
//! per OST, the client finds the cores and epochs in the cluster map and does object I/O
//! over tcp;ofi_rxm and shm; kill -9 of the OSS in the middle of a write stream, then a
//! restart on the same directories: every acknowledged write reads back, under the new
//! epoch, and a client holding the old map is refused (ESTALE) until it refetches.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nacre_client::mgs::{BootConfig, MgsClient};
use nacre_client::objects::{IoOptions, OstRoute};
use nacre_client::{ClientEndpoint, ClientError, RpcConfig};
use nacre_fabric::testing::Proc;
use nacre_fabric::Selection;
use nacre_proto::bootstrap::{ClusterMap, Role, RoleKind, TargetKind};

const OSS_BIN: &str = env!("CARGO_BIN_EXE_nacre-oss");

/// nacre-mgs, built beside this test by `cargo test --workspace` (scripts/test).
fn mgs_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("nacre-mgs");
    bin.exists().then_some(bin)
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("oss-serve-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mgs(bin: &Path, dir: &Path) -> (Proc, String) {
    let out = Command::new(bin)
        .args(["format", "--dir"])
        .arg(dir)
        .args(["--fsname", "ossfs"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--dir"]).arg(dir).args([
        "--listen",
        "127.0.0.1:0",
        "--heartbeat-ms",
        "100",
        "--lease-ms",
        "1000",
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

fn oss(provider: &str, mgs: &str, osts: &[PathBuf]) -> Proc {
    let mut cmd = Command::new(OSS_BIN);
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
    cmd.args(["--identity", "test-oss"]);
    for d in osts {
        cmd.arg("--ost").arg(d);
    }
    cmd.env("RUST_LOG", "warn");
    let p = Proc::spawn("oss", cmd);
    p.expect("nacre-oss: ready", Duration::from_secs(30));
    p
}

/// The route to OST `index` as `map` gives it.
fn route(map: &ClusterMap, index: u32) -> OstRoute {
    let role = Role {
        kind: RoleKind::Oss,
        index,
    };
    let t = map.target(role).expect("target in the map");
    assert_eq!(t.kind, TargetKind::Ost);
    let s = map.server(role).expect("server in the map");
    OstRoute {
        ost: index,
        epoch: s.epoch,
        cores: s.cores.clone(),
    }
}

/// The map once both OSTs are served with an epoch newer than `after`.
fn map_with_osts(addr: &str, after: u64) -> ClusterMap {
    let mut c = MgsClient::connect(addr, BootConfig::default()).unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let m = c.fetch_map().unwrap();
        let ready = (0..2).all(|i| {
            let role = Role {
                kind: RoleKind::Oss,
                index: i,
            };
            m.server(role).is_some_and(|s| s.epoch > after)
        });
        if ready {
            return m;
        }
        assert!(Instant::now() < until, "OSTs never appeared: {m:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn client(provider: &str) -> ClientEndpoint {
    let cfg = RpcConfig {
        msg_size: nacre_oss::server::MSG_SIZE,
        timeout: Duration::from_secs(5),
        ..Default::default()
    };
    ClientEndpoint::open(&Selection::provider(provider), cfg).unwrap()
}

fn block(i: u64) -> Vec<u8> {
    (0..65_536u64 + 123)
        .map(|j| (i * 7 + j * 13 + j / 4096) as u8)
        .collect()
}

fn kill9_mid_stream(provider: &str) {
    let Some(bin) = mgs_bin() else {
        nacre_fabric::testing::skip(
            "OSS process test: nacre-mgs not built (cargo test --workspace builds it)",
        );
        return;
    };
    if let Err(e) = nacre_fabric::Info::find(&Selection::provider(provider)) {
        nacre_fabric::testing::skip(&format!("OSS process test on {provider}: {e}"));
        return;
    }
    let dir = tmp(provider.split(';').next().unwrap());
    let (_mgs, addr) = mgs(&bin, &dir.join("mgs"));
    let osts = [dir.join("ost-a"), dir.join("ost-b")];
    let mut server = oss(provider, &addr, &osts);
    let map = map_with_osts(&addr, 0);
    let routes = [route(&map, 0), route(&map, 1)];
    // A stream of writes, each acknowledged before the next; the server is killed
    // somewhere in the middle by another thread.
    let killed = Arc::new(AtomicBool::new(false));
    let pid = server.pid();
    let mut killer = None;
    let mut c = client(provider);
    let opt = IoOptions::default();
    let mut acked = Vec::new();
    for i in 0..100_000u64 {
        if i == 40 {
            // Killed from another thread while writes are in flight.
            let k = killed.clone();
            killer = Some(std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                k.store(true, Ordering::SeqCst);
            }));
        }
        let r = &routes[(i % 2) as usize];
        // Unaligned offsets, several objects, both cores.
        let (obj, off) = (1 + i % 5, (i / 5) * 70_001);
        match c.obj_write(r, obj, off, &block(i), opt) {
            Ok(_) => acked.push((i, obj, off)),
            Err(_) if killed.load(Ordering::SeqCst) => break,
            Err(e) => panic!("write {i} failed before the kill: {e}"),
        }
    }
    killer.expect("started").join().unwrap();
    server.kill9();
    assert!(acked.len() >= 40, "the stream ran before the kill");
    // Restart on the same directories: the same roles, new epochs.
    let _server = oss(provider, &addr, &osts);
    let old = routes[0].epoch;
    let map = map_with_osts(&addr, old);
    let fresh = [route(&map, 0), route(&map, 1)];
    let mut c = client(provider);
    let mut back = vec![0u8; 65_536 + 123];
    // The old epoch (a map from before the restart) is refused by the new server.
    let stale = OstRoute {
        epoch: routes[0].epoch,
        ..fresh[0].clone()
    };
    let err = c.obj_read(&stale, 1, 0, &mut back, opt).unwrap_err();
    assert!(matches!(err, ClientError::Status(libc::ESTALE)), "{err}");
    for &(i, obj, off) in &acked {
        let r = &fresh[(i % 2) as usize];
        let n = c.obj_read(r, obj, off, &mut back, opt).unwrap();
        assert_eq!(n, back.len(), "write {i} is whole");
        assert!(back == block(i), "write {i} reads back");
    }
    println!(
        "{provider}: {} acknowledged writes survived kill -9",
        acked.len()
    );
}

#[test]
fn acknowledged_writes_survive_kill9_of_the_oss_on_tcp() {
    kill9_mid_stream("tcp");
}

#[test]
fn acknowledged_writes_survive_kill9_of_the_oss_on_shm() {
    kill9_mid_stream("shm");
}
