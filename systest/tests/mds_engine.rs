//! The MDS on an engine core, over tcp;ofi_rxm and shm: namespace operations from real
//! clients with their errors as errno values, concurrent creates of one name (exactly
//! one wins), rename races, readdir while others create and remove, a stale epoch
//! refused, malformed requests answered while the core keeps serving, long replies
//! whole over both providers, and a client killed before taking long replies over shm.

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
    own_client(provider, &engine.cores()[0].fabric_name)
}

/// A client of its own (endpoint and session) on the MDS core, for a test thread.
fn own_client(provider: &str, core: &[u8]) -> (ClientEndpoint, nacre_client::SessionId) {
    let cfg = RpcConfig {
        msg_size: nacre_proto::meta::MSG_SIZE,
        timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let mut c = ClientEndpoint::open(&Selection::provider(provider), cfg).unwrap();
    let s = c.connect(core).unwrap();
    (c, s)
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
                let (mut c, s) = own_client("tcp", &name);
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
    use nacre_client::namespace::NamespaceClient;
    use nacre_proto::bootstrap::{ClusterMap, Role, RoleKind, ServerEntry};
    let Some((engine, _mdt)) = start("tcp", "paths") else {
        return;
    };
    let map = ClusterMap {
        rebuild: Vec::new(),
        servers: vec![ServerEntry {
            role: Role {
                kind: RoleKind::Mds,
                index: 0,
            },
            node: "test".into(),
            epoch: EPOCH,
            provider: "tcp".into(),
            cores: vec![engine.cores()[0].fabric_name.clone()],
            replication: String::new(),
        }],
        ..Default::default()
    };
    let cfg = RpcConfig {
        msg_size: nacre_proto::meta::MSG_SIZE,
        timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let ep = ClientEndpoint::open(&Selection::provider("tcp"), cfg).unwrap();
    let mut ns = NamespaceClient::connect(ep, &map, Creds::root()).unwrap();
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

fn ino_of(r: Result<Reply, ClientError>) -> u64 {
    match r {
        Ok(Reply::Attr(a)) => a.ino,
        Ok(Reply::Opened { attr, .. }) => attr.ino,
        other => panic!("expected attributes, got {other:?}"),
    }
}

fn mkdir(c: &mut ClientEndpoint, s: nacre_client::SessionId, parent: u64, name: &str) -> u64 {
    let req = Request::Mkdir {
        parent,
        name: name.into(),
        mode: 0o755,
    };
    ino_of(c.meta(s, &head(0), &req))
}

fn rename(parent: u64, name: &str, new_parent: u64, new_name: &str) -> Request {
    Request::Rename {
        parent,
        name: name.into(),
        new_parent,
        new_name: new_name.into(),
        flags: 0,
    }
}

/// Every full listing of `dir`, paged `max` entries at a time: (name, times seen).
fn listing(
    c: &mut ClientEndpoint,
    s: nacre_client::SessionId,
    dir: u64,
    max: u32,
) -> std::collections::HashMap<Vec<u8>, u32> {
    let mut seen = std::collections::HashMap::new();
    let mut cookie = 0;
    for _ in 0..100_000 {
        let req = Request::Readdir { dir, cookie, max };
        let Ok(Reply::Dir {
            entries,
            next_cookie,
            eof,
        }) = c.meta(s, &head(0), &req)
        else {
            panic!("readdir failed")
        };
        for e in entries {
            *seen.entry(e.name).or_insert(0) += 1;
        }
        if eof {
            return seen;
        }
        cookie = next_cookie;
    }
    panic!("a listing that does not end")
}

/// Four clients race to rename the same files out of one directory into another
/// (each file moves exactly once; the losers get ENOENT), and two clients race to
/// move two directories into each other (never both: that would make a loop).
#[test]
fn rename_races_through_the_server() {
    let Some((engine, _mdt)) = start("tcp", "rename-race") else {
        return;
    };
    let core = engine.cores()[0].fabric_name.clone();
    let (mut c, s) = own_client("tcp", &core);
    let (from, to) = (
        mkdir(&mut c, s, ROOT_INO, "from"),
        mkdir(&mut c, s, ROOT_INO, "to"),
    );
    const FILES: usize = 60;
    for i in 0..FILES {
        let create = Request::Create {
            parent: from,
            name: format!("f{i}").into_bytes(),
            mode: 0o644,
            flags: 0,
            layout: None,
        };
        c.meta(s, &head(0), &create).unwrap();
    }
    let won: Vec<Vec<usize>> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..4)
            .map(|t| {
                let core = core.clone();
                scope.spawn(move || {
                    let (mut c, s) = own_client("tcp", &core);
                    let mut won = Vec::new();
                    for i in 0..FILES {
                        let req = rename(from, &format!("f{i}"), to, &format!("g{i}-{t}"));
                        match c.meta(s, &head(0), &req) {
                            Ok(_) => won.push(i),
                            Err(ClientError::Status(libc::ENOENT)) => {}
                            Err(e) => panic!("rename f{i}: {e}"),
                        }
                    }
                    won
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let mut moved: Vec<usize> = won.concat();
    moved.sort_unstable();
    assert_eq!(
        moved,
        (0..FILES).collect::<Vec<_>>(),
        "each file moved once"
    );
    assert!(
        listing(&mut c, s, from, 16).is_empty(),
        "nothing left behind"
    );
    let there = listing(&mut c, s, to, 16);
    assert_eq!(there.len(), FILES);
    assert!(there.values().all(|&n| n == 1));

    // Directory pairs moved into each other at once.
    for round in 0..20 {
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        let ai = mkdir(&mut c, s, ROOT_INO, &a);
        let bi = mkdir(&mut c, s, ROOT_INO, &b);
        let outcomes: Vec<i32> = std::thread::scope(|scope| {
            let moves = [(a.clone(), bi), (b.clone(), ai)].map(|(name, into)| {
                let core = core.clone();
                scope.spawn(move || {
                    let (mut c, s) = own_client("tcp", &core);
                    match c.meta(s, &head(0), &rename(ROOT_INO, &name, into, &name)) {
                        Ok(_) => 0,
                        Err(ClientError::Status(e)) => e,
                        Err(e) => panic!("{e}"),
                    }
                })
            });
            moves.into_iter().map(|m| m.join().unwrap()).collect()
        });
        // One moved; the other found its source gone from the root (ENOENT, when the
        // winner took it) or would have made a loop (EINVAL).
        let ok = outcomes.iter().filter(|&&e| e == 0).count();
        assert_eq!(ok, 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .all(|&e| e == 0 || e == libc::EINVAL || e == libc::ENOENT),
            "round {round}: {outcomes:?}"
        );
    }
    engine.stop();
}

/// Makes `long` in `dir`, a symlink whose target is 4095 bytes (the longest Linux makes):
/// its inode and target.
fn long_symlink(c: &mut ClientEndpoint, s: nacre_client::SessionId, dir: u64) -> (u64, Vec<u8>) {
    let target: Vec<u8> = (0..4095).map(|i| b'a' + (i % 26) as u8).collect();
    let link = Request::Symlink {
        parent: dir,
        name: b"long".to_vec(),
        target: target.clone(),
    };
    let Ok(Reply::Attr(a)) = c.meta(s, &head(0), &link) else {
        panic!("symlink failed")
    };
    (a.ino, target)
}

/// Long replies come whole over every transport: a readdir page of 200 long names
/// (about 42 KB) and a symlink target of 4095 bytes. Over shm the core sends them in
/// pieces within the inject size (a larger message could stall the core if its client
/// died), over tcp in one message.
#[test]
fn long_replies_come_whole_over_every_transport() {
    for provider in ["shm", "tcp"] {
        let Some((engine, _mdt)) = start(provider, &format!("long-replies-{provider}")) else {
            continue;
        };
        let (mut c, s) = client(provider, &engine);
        let dir = mkdir(&mut c, s, ROOT_INO, "d");
        const N: usize = 200;
        let name = |i: usize| format!("{i:03}-{}", "n".repeat(200));
        for i in 0..N {
            let req = Request::Create {
                parent: dir,
                name: name(i).into_bytes(),
                mode: 0o644,
                flags: 0,
                layout: None,
            };
            c.meta(s, &head(0), &req).unwrap();
        }
        let first = Request::Readdir {
            dir,
            cookie: 0,
            max: 1024,
        };
        let Ok(Reply::Dir { entries, eof, .. }) = c.meta(s, &head(0), &first) else {
            panic!("readdir failed")
        };
        assert!(
            eof && entries.len() == N,
            "{provider}: {} entries",
            entries.len()
        );
        let seen = listing(&mut c, s, dir, 1024);
        assert_eq!(seen.len(), N, "{provider}");
        assert!(seen.values().all(|&n| n == 1), "{provider}: a repeat");
        let (ino, target) = long_symlink(&mut c, s, dir);
        let read = c.meta(s, &head(0), &Request::Readlink { ino }).unwrap();
        assert_eq!(read, Reply::Target(target), "{provider}");
        assert_eq!(c.dropped(), 0, "{provider}");
        let pieces = engine.stop()[0].replies_in_pieces;
        match provider {
            "shm" => assert!(pieces >= 2, "shm: {pieces} replies in pieces"),
            _ => assert_eq!(pieces, 0, "{provider}"),
        }
    }
}

/// A reader pages through a directory in pages of 5 while two other clients create
/// and remove entries in it: every entry present throughout appears exactly once in
/// each listing, and no entry ever appears twice.
#[test]
fn readdir_during_creates_and_removes_through_the_server() {
    let Some((engine, _mdt)) = start("tcp", "readdir-churn") else {
        return;
    };
    let core = engine.cores()[0].fabric_name.clone();
    let (mut c, s) = own_client("tcp", &core);
    let dir = mkdir(&mut c, s, ROOT_INO, "d");
    const KEEP: usize = 200;
    let create = |c: &mut ClientEndpoint, s, name: String| {
        let req = Request::Create {
            parent: dir,
            name: name.into_bytes(),
            mode: 0o644,
            flags: 0,
            layout: None,
        };
        c.meta(s, &head(0), &req)
    };
    for i in 0..KEEP {
        create(&mut c, s, format!("keep{i}")).unwrap();
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    let progress = std::sync::atomic::AtomicUsize::new(0);
    let during = std::thread::scope(|scope| {
        let churners: Vec<_> = (0..2)
            .map(|t| {
                let (core, done, progress) = (core.clone(), &done, &progress);
                scope.spawn(move || {
                    let (mut c, s) = own_client("tcp", &core);
                    let mut n = 0;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) && n < 5000 {
                        let name = format!("churn{t}-{n}");
                        create(&mut c, s, name.clone()).unwrap();
                        if n % 2 == 0 {
                            let unlink = Request::Unlink {
                                parent: dir,
                                name: name.into_bytes(),
                            };
                            c.meta(s, &head(0), &unlink).unwrap();
                        }
                        n += 1;
                        progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let count = || progress.load(std::sync::atomic::Ordering::Relaxed);
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while count() < 20 {
            assert!(std::time::Instant::now() < until, "the churn never started");
            std::thread::sleep(Duration::from_millis(1));
        }
        let before = count();
        for round in 0..6 {
            let seen = listing(&mut c, s, dir, 5);
            for i in 0..KEEP {
                let name = format!("keep{i}").into_bytes();
                assert_eq!(seen.get(&name), Some(&1), "round {round}: keep{i}");
            }
            assert!(seen.values().all(|&n| n == 1), "round {round}: a repeat");
        }
        let during = count() - before;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        churners.into_iter().for_each(|h| h.join().unwrap());
        during
    });
    assert!(during > 0, "the churn ran beside the listings");
    println!("{during} creates and removes beside 6 listings");
    engine.stop();
}

/// Readlinks of a 4095-byte target the killed client sends: more than the core's 64
/// transmit slots, each reply longer than shm's inject size.
const DEAD_READLINKS: usize = 96;

/// The client `a_client_killed_before_its_long_replies_leaves_the_core_serving` kills:
/// this test binary run again (ignored when run on its own).
#[test]
#[ignore]
fn child_long_replies() {
    let (Ok(core), Ok(ino)) = (std::env::var("VANISH_CORE"), std::env::var("VANISH_INO")) else {
        return; // run on its own: nothing to do
    };
    let core: Vec<u8> = (0..core.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&core[i..i + 2], 16).unwrap())
        .collect();
    let cfg = RpcConfig {
        depth: DEAD_READLINKS,
        msg_size: nacre_proto::meta::MSG_SIZE,
        ..Default::default()
    };
    let mut c = ClientEndpoint::open(&Selection::provider("shm"), cfg).unwrap();
    let s = c.connect(&core).unwrap();
    let req = Request::Readlink {
        ino: ino.parse().unwrap(),
    };
    let mut body = Vec::new();
    req.encode(&head(0), &mut body);
    for _ in 0..DEAD_READLINKS {
        c.send(s, req.opcode(), &body).unwrap();
    }
    println!("sent");
    std::thread::sleep(Duration::from_secs(60)); // killed long before
}

/// Over shm a message above the inject size is a command the receiver answers, and
/// libfabric 1.17's shm completes those in order: a client killed before taking long
/// replies used to hold the core's later long replies, and once its transmit slots
/// were all held, the core. Now such replies go in pieces within the inject size
/// (`Core::reply`): after each of three killed clients, another reads the long symlink
/// target more times than the core has transmit slots.
#[test]
fn a_client_killed_before_its_long_replies_leaves_the_core_serving() {
    let Some((engine, _mdt)) = start("shm", "vanish-long") else {
        return;
    };
    let core = engine.cores()[0].fabric_name.clone();
    let (mut c, s) = own_client("shm", &core);
    let (ino, target) = long_symlink(&mut c, s, ROOT_INO);
    let hex: String = core.iter().map(|b| format!("{b:02x}")).collect();
    for round in 0..3u64 {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "child_long_replies", "--ignored", "--nocapture"])
            .env("VANISH_CORE", &hex)
            .env("VANISH_INO", ino.to_string());
        let mut child = nacre_fabric::testing::Proc::spawn("long-replies", cmd);
        child.expect("sent", Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(5 * round));
        child.kill9();
        let killed = std::time::Instant::now();
        for i in 0..200 {
            let read = c
                .meta(s, &head(0), &Request::Readlink { ino })
                .unwrap_or_else(|e| panic!("round {round}: readlink {i} after the kill: {e}"));
            assert_eq!(read, Reply::Target(target.clone()), "round {round}");
        }
        let waited = killed.elapsed();
        assert!(
            waited < Duration::from_secs(10),
            "round {round}: {waited:?}"
        );
    }
    assert!(engine.stop()[0].replies_in_pieces >= 600);
}
