//! `nacre-mds serve` as a real process beside a real `nacre-mgs`, over tcp;ofi_rxm and
//! shm: the client finds the MDS core in the cluster map, creates files in a stream;
//! kill -9 of the MDS in the middle, restart on the same directory: every acknowledged
//! create is there, under the new epoch, and the old epoch is refused.

#[path = "../../mgs/tests/mgs_support/mod.rs"]
mod mgs_support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mgs_support::*;
use nacre_client::{ClientEndpoint, ClientError, RpcConfig, SessionId};
use nacre_fabric::Selection;
use nacre_mds::mdt::ROOT_INO;
use nacre_proto::bootstrap::{Role, RoleKind};
use nacre_proto::meta::{Creds, Head, Reply, Request};

fn mds(provider: &str, mgs: &str, dir: &std::path::Path) -> Proc {
    let mut cmd = Command::new(nacre_fabric::testing::workspace_bin("nacre-mds"));
    cmd.args(["serve", "--mgs", mgs, "--provider", provider, "--no-pin"])
        .args(["--identity", "test-mds", "--dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .env(nacre_auth::KEY_ENV, key_of(mgs));
    let p = Proc::spawn("mds", cmd);
    p.expect("nacre-mds: ready", Duration::from_secs(30));
    p
}

/// The MDS's epoch and core once the map shows one newer than `after`.
fn mds_in_map(mgs: &Mgs, after: u64) -> (u64, Vec<u8>) {
    let role = Role {
        kind: RoleKind::Mds,
        index: 0,
    };
    let mut c = mgs.client();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = c.fetch_map().unwrap().server(role) {
            if s.epoch > after {
                return (s.epoch, s.cores[0].clone());
            }
        }
        assert!(Instant::now() < until, "the MDS never appeared in the map");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn client(provider: &str, mgs: &Mgs, core: &[u8]) -> (ClientEndpoint, SessionId) {
    let cfg = RpcConfig {
        msg_size: nacre_proto::meta::MSG_SIZE,
        timeout: Duration::from_secs(5),
        key: Some(nacre_auth::Key::load(&key_of(&mgs.addr)).unwrap()),
        ..Default::default()
    };
    let mut c = ClientEndpoint::open(&Selection::provider(provider), cfg).unwrap();
    let s = c.connect(core).unwrap();
    (c, s)
}

fn head(epoch: u64) -> Head {
    Head {
        creds: Creds::root(),
        epoch,
        replay: None,
    }
}

fn creates_survive_kill9(provider: &str) {
    if nacre_fabric::Info::find(&Selection::provider(provider)).is_err() {
        nacre_fabric::testing::skip(&format!("MDS process test: {provider} not available"));
        return;
    }
    let dir = tmpdir(&format!("mds-{provider}"));
    format(&dir.join("mgs"), "mdsfs");
    let mgs = Mgs::serve(&dir.join("mgs"), "127.0.0.1:0", &SHORT);
    let mdt = dir.join("mdt");
    let mut server = mds(provider, &mgs.addr, &mdt);
    let (epoch, core) = mds_in_map(&mgs, 0);
    let (mut c, s) = client(provider, &mgs, &core);
    let killed = Arc::new(AtomicBool::new(false));
    let (pid, mut killer, mut acked) = (server.pid(), None, Vec::new());
    for i in 0..1_000_000u32 {
        if i == 200 {
            let k = killed.clone();
            killer = Some(std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                let _ = nacre_fabric::testing::send_signal(pid, "KILL");
                k.store(true, Ordering::SeqCst);
            }));
        }
        let name = format!("file{i}").into_bytes();
        let create = Request::Create {
            parent: ROOT_INO,
            name: name.clone(),
            mode: 0o644,
            flags: 0,
            layout: None,
        };
        match c.meta(s, &head(epoch), &create) {
            Ok(_) => acked.push(name),
            Err(_) if killed.load(Ordering::SeqCst) => break,
            Err(e) => panic!("create {i} failed before the kill: {e}"),
        }
    }
    killer.expect("started").join().unwrap();
    server.kill9();
    let _server = mds(provider, &mgs.addr, &mdt);
    let (fresh, core) = mds_in_map(&mgs, epoch);
    let (mut c, s) = client(provider, &mgs, &core);
    let lookup = |name: &[u8]| Request::Lookup {
        parent: ROOT_INO,
        name: name.to_vec(),
    };
    let err = c.meta(s, &head(epoch), &lookup(&acked[0])).unwrap_err();
    assert!(matches!(err, ClientError::Status(libc::ESTALE)), "{err}");
    for name in &acked {
        let r = c.meta(s, &head(fresh), &lookup(name)).unwrap();
        assert!(
            matches!(r, Reply::Attr(_)),
            "{}",
            String::from_utf8_lossy(name)
        );
    }
    println!(
        "{provider}: {} acknowledged creates survived kill -9",
        acked.len()
    );
}

#[test]
fn acknowledged_creates_survive_kill9_of_the_mds_on_tcp() {
    creates_survive_kill9("tcp");
}

#[test]
fn acknowledged_creates_survive_kill9_of_the_mds_on_shm() {
    creates_survive_kill9("shm");
}
