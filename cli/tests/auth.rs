//! Only who holds the key (docs/security.md), through the real servers of `nacre up`:
//! clients without the key, or with a wrong one, refused by the MGS and by every server
//! (one clear error, one log line); session ids good only from their peer; role
//! requests a client key cannot make; object capabilities bound to their object, holder,
//! rights and expiry, renewed without the application noticing; identities as the key
//! allows, and root squash.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{have, tmp, Up};
use nacre_auth::capability::now_secs;
use nacre_auth::{CapabilityKey, IdMap, Key, KeySource, Principal, Rights};
use nacre_client::objects::{IoOptions, OstRoute};
use nacre_client::{Capabilities, RpcClient, RpcConfig};
use nacre_client::{Client, ClientConfig, ClientEndpoint, ClientError, Layout, OpenOptions};
use nacre_fabric::Selection;
use nacre_mgc::{BootConfig, MgsClient};
use nacre_proto::bootstrap::{
    errno, BootHeader, BootReply, BootRequest, ClaimRequest, ClusterMap, Role, RoleKind,
    BOOT_HEADER_LEN,
};
use nacre_proto::layout::FileLayout;
use nacre_proto::meta::{set, Creds, Grants, SetAttr};
use nacre_proto::{Header, Opcode, HEADER_LEN};

const EKEYEXPIRED: i32 = 127;

/// A key file at `path`, mode 0600 (replacing one there).
fn save(key: &Key, path: &Path) -> PathBuf {
    let _ = std::fs::remove_file(path);
    key.save(path).unwrap();
    path.to_path_buf()
}

fn config(key: &Path) -> ClientConfig {
    ClientConfig {
        keys: KeySource::new(Some(key.to_path_buf())),
        ..Default::default()
    }
}

/// `nacre ARGS` against `up` with `key` (None: no key at all).
fn nacre_with(up: &Up, key: Option<&Path>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(common::nacre_bin());
    cmd.args(args)
        .env("NACRE_MGS", &up.mgs)
        .env_remove("NACRE_KEY");
    if let Some(k) = key {
        cmd.env("NACRE_KEY", k);
    }
    cmd.output().unwrap()
}

/// The one line `nacre` failed with.
fn failure(out: std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(1), "should fail");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line of error, got {err:?}");
    err
}

fn map_of(up: &Up) -> ClusterMap {
    let keys = KeySource::new(Some(up.key.clone().into()));
    MgsClient::connect_with(&up.mgs, BootConfig::default(), keys)
        .unwrap()
        .fetch_map()
        .unwrap()
}

fn rpc(key: Option<Key>, timeout: Duration) -> RpcConfig {
    RpcConfig {
        msg_size: nacre_proto::object::MSG_SIZE,
        timeout,
        key,
        ..Default::default()
    }
}

/// A fabric client of one server core (its fabric name), or why not.
fn hello(provider: &str, core: &[u8], key: Option<Key>) -> Result<RpcClient, ClientError> {
    let cfg = rpc(key, Duration::from_secs(5));
    RpcClient::connect(&Selection::provider(provider), core, cfg)
}

fn log_lines(up_dir: &Path, log: &str, what: &str) -> usize {
    std::fs::read_to_string(up_dir.join("logs").join(log))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what))
        .count()
}

/// One bootstrap request on a fresh TCP connection that never authenticated.
fn unauthenticated(mgs: &str, req: &BootRequest) -> BootReply {
    let mut s = std::net::TcpStream::connect(mgs).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&req.encode().unwrap()).unwrap();
    let mut head = [0u8; BOOT_HEADER_LEN];
    s.read_exact(&mut head).unwrap();
    let h = BootHeader::decode(&head, 1 << 22).unwrap();
    let mut body = vec![0u8; h.body_len as usize];
    s.read_exact(&mut body).unwrap();
    BootReply::decode(req.op(), h.status, &body).unwrap()
}

fn keys_sessions_and_roles(provider: &str) {
    if !have(provider, "authentication") {
        return;
    }
    let dir = tmp(&format!("auth-keys-{provider}"));
    let data = dir.join("data");
    let up = Up::start(&data, provider, &[]);
    let fs_key = Key::load(up.key.as_ref()).unwrap();
    assert!(up.key.ends_with("mgs/nacre.key"), "{}", up.key);

    // The MGS: no key, a stranger's key (the same name, another secret), no proof.
    let err = failure(nacre_with(&up, None, &["ls", "/"]));
    assert!(
        err.starts_with("nacre: authentication failed: no key for file system `nacre`"),
        "{err}"
    );
    let stranger = save(&Key::generate("nacre").unwrap(), &dir.join("stranger.key"));
    for _ in 0..3 {
        let err = failure(nacre_with(&up, Some(&stranger), &["ls", "/"]));
        assert!(
            err.starts_with("nacre: authentication failed: the MGS at")
                && err.contains("wrong proof"),
            "{err}"
        );
    }
    assert_eq!(
        log_lines(&data, "mgs.log", "authentication failed"),
        1,
        "the MGS logs a refused peer once"
    );
    match unauthenticated(&up.mgs, &BootRequest::FetchMap) {
        BootReply::Failed { errno: e, message } => {
            assert_eq!(e, errno::EACCES);
            assert!(message.contains("authentication required"), "{message}");
        }
        other => panic!("a map for nobody: {other:?}"),
    }

    // Roles: a client key claims nothing, whatever node string it names.
    let client_key = save(
        &fs_key.issue_client("node7", None).unwrap(),
        &dir.join("node7.key"),
    );
    let map = map_of(&up);
    let oss0 = Role {
        kind: RoleKind::Oss,
        index: 0,
    };
    let owner = map.server(oss0).unwrap().clone();
    let mut c = MgsClient::connect_with(
        &up.mgs,
        BootConfig::default(),
        KeySource::new(Some(client_key.clone())),
    )
    .unwrap();
    assert!(c.fetch_map().is_ok(), "a client key reads the map");
    let hijack = ClaimRequest {
        kind: RoleKind::Oss,
        want: Some(0),
        node: owner.node.clone(),
        provider: owner.provider.clone(),
        cores: vec![b"not-a-server".to_vec()],
        empty: false,
        generation: 1,
        replication: String::new(),
    };
    for refused in [
        c.claim(&hijack).map(|_| ()),
        c.release(oss0, owner.epoch),
        c.set_root_squash(Some((0, 0))),
    ] {
        assert_eq!(refused.unwrap_err().errno(), Some(errno::EACCES));
    }
    let after = map_of(&up);
    assert_eq!(
        after.server(oss0).unwrap().epoch,
        owner.epoch,
        "oss0 unmoved"
    );
    assert!(after.serves(oss0));

    // Every server core: no key, or a stranger's, is refused at HELLO.
    let stranger = Key::load(&stranger).unwrap();
    for s in &map.servers {
        for core in &s.cores {
            for key in [None, Some(stranger.clone())] {
                let named = key.is_some();
                match hello(provider, core, key) {
                    Err(ClientError::Auth(_)) => {}
                    Err(e) => panic!("{} refused {named} with {e}, not authentication", s.role),
                    Ok(_) => panic!("{} served a client without the key", s.role),
                }
            }
            let mut ok = hello(provider, core, Some(fs_key.clone())).unwrap();
            let pong = ok.request(Opcode::PING, b"hi");
            assert_eq!(
                pong.unwrap_or_else(|e| panic!("{}: {e}", s.role)).body,
                b"hi"
            );
        }
    }
    assert!(log_lines(&data, "oss0.log", "HELLO refused: authentication failed") >= 1);
    assert!(log_lines(&data, "mds.log", "HELLO refused: authentication failed") >= 1);

    // A session id is good only from the peer it was issued to.
    let core = &map.server(oss0).unwrap().cores[0];
    let mut a = hello(provider, core, Some(fs_key.clone())).unwrap();
    let cfg = rpc(Some(fs_key.clone()), Duration::from_secs(2));
    let mut b = RpcClient::connect(&Selection::provider(provider), core, cfg).unwrap();
    let ping = |session: u32, id: u64| {
        let mut frame = vec![0u8; HEADER_LEN + 4];
        let mut h = Header::request(Opcode::PING, id, 0);
        h.session = session;
        h.encode_frame(b"mine", &mut frame).unwrap();
        frame
    };
    for (i, forged) in [a.session(), a.session() ^ 0x1_0000]
        .into_iter()
        .enumerate()
    {
        let id = 9_000 + i as u64;
        b.send_raw(&ping(forged, id), Some(id)).unwrap();
        match b.next_reply() {
            Err(ClientError::Timeout(_)) | Err(ClientError::Expired { .. }) => {}
            other => panic!("a forged session {forged:#x} was answered: {other:?}"),
        }
    }
    assert_eq!(a.request(Opcode::PING, b"a").unwrap().body, b"a");
    assert_eq!(b.request(Opcode::PING, b"b").unwrap().body, b"b");
    up.stop();
}

#[test]
fn keys_sessions_and_roles_on_tcp() {
    keys_sessions_and_roles("tcp");
}

#[test]
fn keys_sessions_and_roles_on_shm() {
    keys_sessions_and_roles("shm");
}

#[test]
fn keys_sessions_and_roles_on_sockets() {
    keys_sessions_and_roles("sockets");
}

/// The layout of file `path`.
fn layout(c: &Client, path: &str) -> FileLayout {
    match c.get_layout(path).unwrap() {
        Layout::File(l) => l,
        other => panic!("{path}: {other:?}"),
    }
}

/// Capabilities for `layout`'s objects sealed by `ck` for `holder` with `rights` until
/// `expiry`: a table holding them (as the client library's is, by object).
fn table(
    ck: &CapabilityKey,
    seal_for: &FileLayout,
    put_on: &FileLayout,
    holder: &Principal,
    rights: Rights,
    expiry: u64,
) -> Arc<Capabilities> {
    let seals = seal_for
        .objects()
        .map(|o| ck.seal(o.ost, o.oid, rights, expiry, holder).tag)
        .collect();
    let caps = Arc::new(Capabilities::default());
    let g = Grants {
        ino: 1,
        expiry,
        rights: rights.0,
        seals,
    };
    caps.grant(put_on, &g);
    caps
}

fn capabilities(provider: &str) {
    if !have(provider, "capabilities") {
        return;
    }
    let dir = tmp(&format!("auth-caps-{provider}"));
    let cfg_file = dir.join("up.toml");
    std::fs::write(
        &cfg_file,
        format!(
            "[mgs]\nlisten = \"127.0.0.1:0\"\n[mds]\ncapability_lifetime = 3\n[[oss]]\nosts = [\"{0}/ost0\", \"{0}/ost1\"]\n",
            dir.display()
        ),
    )
    .unwrap();
    let up = Up::start(
        &dir.join("data"),
        provider,
        &["--config", cfg_file.to_str().unwrap()],
    );
    let fs_key = Key::load(up.key.as_ref()).unwrap();
    let admin = Client::connect(&up.mgs, config(up.key.as_ref())).unwrap();
    admin.mkdir("/caps", 0o777).unwrap();
    let node7 = fs_key.issue_client("node7", None).unwrap();
    let node7_file = save(&node7, &dir.join("node7.key"));
    let client = Client::connect(&up.mgs, config(&node7_file)).unwrap();
    let data = nacre_fabric::testing::pattern(7, 3 << 20);
    for name in ["/caps/f1", "/caps/f2"] {
        let f = client.open(name, &OpenOptions::create()).unwrap();
        f.write_at(&data, 0).unwrap();
        f.close().unwrap();
    }

    // Renewed without the application noticing: a handle held past the capabilities'
    // three seconds keeps writing and reading, the client's keeper renewing them ahead
    // of their expiry (no request met an expired one).
    let f = client.open("/caps/f1", &OpenOptions::create()).unwrap();
    f.write_at(&data[..1 << 20], 0).unwrap();
    std::thread::sleep(Duration::from_secs(7));
    f.write_at(&data, 0).unwrap();
    let mut back = vec![0u8; data.len()];
    assert_eq!(f.read_at(&mut back, 0).unwrap(), data.len());
    assert!(back == data, "bytes after the renewal");
    f.close().unwrap();
    assert_eq!(client.renewed_on_expiry(), 0, "renewed ahead of expiry");

    // Raw object requests as node7, with capabilities the test seals itself.
    let (l1, l2) = (layout(&admin, "/caps/f1"), layout(&admin, "/caps/f2"));
    let ck = CapabilityKey::of(&fs_key).unwrap();
    let map = map_of(&up);
    let o1 = *l1.objects().next().unwrap();
    let o2 = *l2.objects().next().unwrap();
    let route = |ost: u32| OstRoute::in_map(&map, ost).unwrap();
    let later = now_secs() + 600;
    let rw = Rights::READ.with(Rights::WRITE);
    let who = node7.principal();
    let opt = IoOptions::for_provider(provider);
    let read = |caps: Option<Arc<Capabilities>>, ost: u32, oid: u64| {
        let cfg = RpcConfig {
            caps,
            ..rpc(Some(node7.clone()), Duration::from_secs(5))
        };
        let mut ep = ClientEndpoint::open(&Selection::provider(provider), cfg).unwrap();
        let mut buf = vec![0u8; 4096];
        ep.obj_read(&route(ost), oid, 0, &mut buf, opt).map(|_| buf)
    };
    let status = |r: Result<Vec<u8>, ClientError>| match r {
        Err(ClientError::Status(e)) => e,
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    };
    let good = table(&ck, &l1, &l1, who, rw, later);
    assert!(read(Some(good.clone()), o1.ost, o1.oid).unwrap() == data[..4096]);
    assert_eq!(
        status(read(None, o1.ost, o1.oid)),
        libc::EACCES,
        "no capability"
    );
    let borrowed = table(&ck, &l1, &l2, who, rw, later);
    assert_eq!(
        status(read(Some(borrowed), o2.ost, o2.oid)),
        libc::EACCES,
        "one file's capability opens no other"
    );
    let expired = table(&ck, &l1, &l1, who, rw, now_secs() - 10);
    assert_eq!(status(read(Some(expired), o1.ost, o1.oid)), EKEYEXPIRED);
    let alice = fs_key.issue_client("alice", None).unwrap();
    let theirs = table(&ck, &l1, &l1, alice.principal(), rw, later);
    assert_eq!(
        status(read(Some(theirs), o1.ost, o1.oid)),
        libc::EACCES,
        "another key's capability"
    );
    let stranger = Key::generate("nacre").unwrap();
    let forged = table(
        &CapabilityKey::of(&stranger).unwrap(),
        &l1,
        &l1,
        who,
        rw,
        later,
    );
    assert_eq!(status(read(Some(forged), o1.ost, o1.oid)), libc::EACCES);
    // A read-only capability reads and does not write.
    let ro = table(&ck, &l1, &l1, who, Rights::READ, later);
    let cfg = RpcConfig {
        caps: Some(ro),
        ..rpc(Some(node7.clone()), Duration::from_secs(5))
    };
    let mut ep = ClientEndpoint::open(&Selection::provider(provider), cfg).unwrap();
    let mut buf = vec![0u8; 4096];
    ep.obj_read(&route(o1.ost), o1.oid, 0, &mut buf, opt)
        .unwrap();
    let wrote = ep.obj_write(&route(o1.ost), o1.oid, 0, &buf, opt);
    assert!(
        matches!(wrote, Err(ClientError::Status(libc::EACCES))),
        "{wrote:?}"
    );
    drop((client, admin));
    up.stop();
}

#[test]
fn capabilities_on_tcp() {
    capabilities("tcp");
}

#[test]
fn capabilities_on_shm() {
    capabilities("shm");
}

fn chown(c: &Client, path: &str, uid: u32, gid: u32) -> std::io::Result<()> {
    let attr = SetAttr {
        mask: set::UID | set::GID,
        uid,
        gid,
        ..Default::default()
    };
    c.setattr(path, attr).map(|_| ())
}

fn chmod(c: &Client, path: &str, mode: u32) {
    let attr = SetAttr {
        mask: set::MODE,
        mode,
        ..Default::default()
    };
    c.setattr(path, attr).unwrap();
}

fn errno_of(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => nacre_client::errno(&e),
    }
}

#[test]
fn identities_follow_the_key_and_root_is_squashed() {
    let provider = "tcp";
    if !have(provider, "identities") {
        return;
    }
    let dir = tmp("auth-ids");
    let up = Up::start(&dir.join("data"), provider, &[]);
    let fs_key = Key::load(up.key.as_ref()).unwrap();
    let admin = Client::connect(&up.mgs, config(up.key.as_ref())).unwrap();
    admin.mkdir("/home", 0o755).unwrap();
    admin.mkdir("/home/alice", 0o755).unwrap();
    chown(&admin, "/home/alice", 1000, 1000).unwrap();
    let secret = admin.open("/secret", &OpenOptions::create()).unwrap();
    secret.write_at(b"for 2000 only", 0).unwrap();
    secret.close().unwrap();
    chmod(&admin, "/secret", 0o600);
    chown(&admin, "/secret", 2000, 2000).unwrap();

    // A mapped key: every user of it is 1000:1000, whatever it says (here: root).
    let map = IdMap {
        uid: 1000,
        gid: 1000,
    };
    let alice_key = save(
        &fs_key.issue_client("alice", Some(map)).unwrap(),
        &dir.join("alice.key"),
    );
    let alice = Client::connect(
        &up.mgs,
        ClientConfig {
            creds: Creds::root(),
            ..config(&alice_key)
        },
    )
    .unwrap();
    alice
        .create("/home/alice/a", 0o644, None)
        .unwrap()
        .close()
        .unwrap();
    let st = admin.stat("/home/alice/a").unwrap();
    assert_eq!((st.uid, st.gid), (1000, 1000));
    assert_eq!(
        errno_of(alice.open("/secret", &OpenOptions::read())),
        libc::EACCES
    );
    assert_eq!(errno_of(chown(&alice, "/home/alice/a", 0, 0)), libc::EPERM);
    assert_eq!(
        errno_of(alice.create("/at-the-root", 0o644, None)),
        libc::EACCES
    );

    // An unmapped client key, as a non-root user: believed, and no more than that.
    let node_key = save(
        &fs_key.issue_client("node7", None).unwrap(),
        &dir.join("n.key"),
    );
    let user = Client::connect(
        &up.mgs,
        ClientConfig {
            creds: Creds::user(1000, 1000),
            ..config(&node_key)
        },
    )
    .unwrap();
    assert_eq!(errno_of(chown(&user, "/home/alice/a", 0, 0)), libc::EPERM);
    assert_eq!(
        errno_of(user.open("/secret", &OpenOptions::read())),
        libc::EACCES
    );

    // Root of that key is root until root squash says otherwise; the file system key's
    // holders are never squashed.
    let node_root = Client::connect(
        &up.mgs,
        ClientConfig {
            creds: Creds::root(),
            ..config(&node_key)
        },
    )
    .unwrap();
    node_root
        .create("/r1", 0o644, None)
        .unwrap()
        .close()
        .unwrap();
    let mgs_bin = nacre_fabric::testing::workspace_bin("nacre-mgs");
    let squash = |arg: &str| {
        let out = Command::new(&mgs_bin)
            .args(["root-squash", "--mgs", &up.mgs, "--key", &up.key, arg])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    squash("65534:65534");
    assert!(up.ok(&["status"]).contains("root squash: 65534:65534"));
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match errno_of(node_root.create("/r2", 0o644, None)) {
            libc::EACCES => break,
            0 => {
                // Not squashed yet (the MDS follows the map within a second).
                node_root.unlink("/r2").unwrap();
                assert!(Instant::now() < until, "root never squashed");
                std::thread::sleep(Duration::from_millis(200));
            }
            e => panic!("create as squashed root: errno {e}"),
        }
    }
    assert_eq!(
        errno_of(node_root.open("/secret", &OpenOptions::read())),
        libc::EACCES
    );
    admin.create("/r3", 0o644, None).unwrap().close().unwrap();
    assert_eq!(
        admin.stat("/r3").unwrap().uid,
        0,
        "the file system key is not squashed"
    );
    squash("off");
    let until = Instant::now() + Duration::from_secs(10);
    while errno_of(node_root.create("/r4", 0o644, None)) != 0 {
        assert!(Instant::now() < until, "root squash never lifted");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop((alice, user, node_root, admin));
    up.stop();
}
