//! The MDS on an engine core, over tcp;ofi_rxm and shm: namespace operations from real
//! clients with their errors as errno values, concurrent creates of one name (exactly
//! one wins), a stale epoch refused, and malformed requests answered while the core
//! keeps serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nacre_client::{ClientEndpoint, ClientError, RpcConfig};
use nacre_engine::{Engine, EngineConfig, ReactorConfig};
use nacre_fabric::Selection;
use nacre_mds::mdt::engine_service::MdsService;
use nacre_mds::mdt::{Mdt, MdtConfig, ROOT_INO};
use nacre_proto::meta::{Creds, Head, Reply, Request};
use nacre_proto::Opcode;

const EPOCH: u64 = 4;

fn start(provider: &str, name: &str) -> Option<(Engine, Arc<Mdt>)> {
    let fabric = Selection::provider(provider);
    if let Err(e) = nacre_fabric::Info::find(&fabric) {
        nacre_fabric::testing::skip(&format!("MDS engine tests on {provider}: {e}"));
        return None;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("mds-engine-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = MdtConfig::new(&dir);
    cfg.epoch = EPOCH;
    let mdt = Arc::new(Mdt::open(cfg).expect("MDT"));
    let ecfg = EngineConfig {
        cores: 1,
        no_pin: true,
        fabric,
        reactor: ReactorConfig {
            msg_size: nacre_proto::meta::MSG_SIZE,
            ..Default::default()
        },
        ..Default::default()
    };
    let m = mdt.clone();
    let engine = Engine::start(&ecfg, move |_, _| MdsService::new(&m)).expect("engine");
    Some((engine, mdt))
}

fn client(provider: &str, engine: &Engine) -> (ClientEndpoint, nacre_client::SessionId) {
    let cfg = RpcConfig {
        msg_size: nacre_proto::meta::MSG_SIZE,
        timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let mut c = ClientEndpoint::open(&Selection::provider(provider), cfg).unwrap();
    let sid = c.connect(&engine.cores()[0].fabric_name).unwrap();
    (c, sid)
}

fn head(uid: u32) -> Head {
    Head {
        creds: Creds {
            uid,
            gid: uid,
            groups: Vec::new(),
        },
        epoch: EPOCH,
        replay: None,
    }
}

fn errno(r: Result<Reply, ClientError>) -> i32 {
    match r {
        Err(ClientError::Status(e)) => e,
        other => panic!("expected an errno, got {other:?}"),
    }
}

fn namespace_over(provider: &str) {
    let Some((engine, _mdt)) = start(provider, provider) else {
        return;
    };
    let (mut c, s) = client(provider, &engine);
    let root = head(0);
    let mkdir = Request::Mkdir {
        parent: ROOT_INO,
        name: b"d".to_vec(),
        mode: 0o755,
    };
    let Reply::Attr(d) = c.meta(s, &root, &mkdir).unwrap() else {
        panic!("mkdir answers attributes")
    };
    assert_eq!(errno(c.meta(s, &root, &mkdir)), libc::EEXIST);
    for i in 0..50 {
        let create = Request::Create {
            parent: d.ino,
            name: format!("f{i}").into_bytes(),
            mode: 0o644,
            flags: 0,
            layout: None,
        };
        assert!(matches!(
            c.meta(s, &root, &create).unwrap(),
            Reply::Opened { .. }
        ));
    }
    // Readdir in pages of 7 sees every entry exactly once.
    let (mut cookie, mut names) = (0, Vec::new());
    loop {
        let req = Request::Readdir {
            dir: d.ino,
            cookie,
            max: if cookie == 0 {
                7
            } else {
                nacre_proto::meta::READDIR_MAX_ENTRIES
            },
        };
        let Reply::Dir {
            entries,
            next_cookie,
            eof,
        } = c.meta(s, &root, &req).unwrap()
        else {
            panic!("readdir answers a page")
        };
        names.extend(entries.into_iter().map(|e| e.name));
        cookie = next_cookie;
        if eof {
            break;
        }
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 50);
    // Errors as a shell user meets them.
    let lookup = |name: &[u8]| Request::Lookup {
        parent: d.ino,
        name: name.to_vec(),
    };
    assert_eq!(errno(c.meta(s, &root, &lookup(b"nope"))), libc::ENOENT);
    let rmdir = Request::Rmdir {
        parent: ROOT_INO,
        name: b"d".to_vec(),
    };
    assert_eq!(errno(c.meta(s, &root, &rmdir)), libc::ENOTEMPTY);
    let other = head(1000);
    let create = Request::Create {
        parent: d.ino,
        name: b"theirs".to_vec(),
        mode: 0o644,
        flags: 0,
        layout: None,
    };
    assert_eq!(errno(c.meta(s, &other, &create)), libc::EACCES);
    assert_eq!(
        errno(c.meta(s, &root, &lookup(&[b'x'; 256]))),
        libc::ENAMETOOLONG
    );
    // A stale epoch is refused.
    let stale = Head {
        epoch: EPOCH - 1,
        replay: None,
        ..head(0)
    };
    assert_eq!(errno(c.meta(s, &stale, &lookup(b"f1"))), libc::ESTALE);
    // Malformed bodies get an errno; the core goes on.
    let r = c.request(s, Opcode::MDS_CREATE, &[1, 2, 3]).unwrap();
    assert!(r.header.status < 0);
    assert!(matches!(
        c.meta(s, &root, &lookup(b"f1")).unwrap(),
        Reply::Attr(_)
    ));
    engine.stop();
}

#[test]
fn namespace_through_an_engine_core_on_tcp() {
    namespace_over("tcp");
}

#[test]
fn namespace_through_an_engine_core_on_shm() {
    namespace_over("shm");
}

/// Several clients create the same names at once: each name is won exactly once.
#[test]
fn concurrent_creates_of_one_name_have_one_winner() {
    let Some((engine, _mdt)) = start("tcp", "race") else {
        return;
    };
    let name = engine.cores()[0].fabric_name.clone();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let name = name.clone();
            std::thread::spawn(move || {
                let cfg = RpcConfig {
                    msg_size: nacre_proto::meta::MSG_SIZE,
                    timeout: Duration::from_secs(20),
                    ..Default::default()
                };
                let mut c = ClientEndpoint::open(&Selection::provider("tcp"), cfg).unwrap();
                let s = c.connect(&name).unwrap();
                let mut won = 0;
                for i in 0..40 {
                    let create = Request::Create {
                        parent: ROOT_INO,
                        name: format!("n{i}").into_bytes(),
                        mode: 0o644,
                        flags: nacre_proto::meta::CREATE_EXCL,
                        layout: None,
                    };
                    match c.meta(s, &head(0), &create) {
                        Ok(_) => won += 1,
                        Err(ClientError::Status(libc::EEXIST)) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                won
            })
        })
        .collect();
    let won: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(won, 40, "every name created exactly once");
    engine.stop();
}

/// The path layer of the client against a real MDS core: names resolved through the
/// dentry cache, every operation by path, errors as errno values.
#[test]
fn paths_through_the_client_namespace() {
    use nacre_client::namespace::Namespace;
    use nacre_proto::bootstrap::{ClusterMap, Role, RoleKind, ServerEntry};
    let Some((engine, _mdt)) = start("tcp", "paths") else {
        return;
    };
    let map = ClusterMap {
        servers: vec![ServerEntry {
            role: Role {
                kind: RoleKind::Mds,
                index: 0,
            },
            node: "test".into(),
            epoch: EPOCH,
            provider: "tcp".into(),
            cores: vec![engine.cores()[0].fabric_name.clone()],
        }],
        ..Default::default()
    };
    let cfg = RpcConfig {
        msg_size: nacre_proto::meta::MSG_SIZE,
        timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let ep = ClientEndpoint::open(&Selection::provider("tcp"), cfg).unwrap();
    let mut ns = Namespace::connect(ep, &map, Creds::root()).unwrap();
    fn status<T>(r: Result<T, ClientError>) -> i32 {
        match r {
            Err(ClientError::Status(e)) => e,
            Err(e) => panic!("{e}"),
            Ok(_) => 0,
        }
    }
    ns.mkdir("/a", 0o755).unwrap();
    ns.mkdir("/a/b", 0o755).unwrap();
    let f = ns.create("/a/b/f", 0o644).unwrap();
    assert_eq!(ns.stat("/a/b/f").unwrap().ino, f.ino);
    assert_eq!(status(ns.create("/a/b/f", 0o644)), libc::EEXIST);
    assert_eq!(status(ns.stat("/a/nope/f")), libc::ENOENT);
    assert_eq!(status(ns.stat("relative")), libc::EINVAL);
    let names: Vec<Vec<u8>> = ns
        .readdir("/a/b")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec![b"f".to_vec()]);
    ns.rename("/a/b/f", "/a/g", 0).unwrap();
    assert_eq!(
        status(ns.stat("/a/b/f")),
        libc::ENOENT,
        "the cache forgot the old name"
    );
    assert_eq!(ns.stat("/a/g").unwrap().ino, f.ino);
    assert_eq!(status(ns.rmdir("/a")), libc::ENOTEMPTY);
    ns.unlink("/a/g").unwrap();
    ns.rmdir("/a/b").unwrap();
    ns.rmdir("/a").unwrap();
    assert_eq!(status(ns.stat("/a")), libc::ENOENT);
    assert_eq!(ns.stat("/").unwrap().ino, ROOT_INO);
    engine.stop();
}
