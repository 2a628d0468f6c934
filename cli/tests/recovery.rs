//! Servers killed mid-stream, with "hosts" from TOML files. An OSS: A runs the MGS,
//! the MDS and one OSS, B a second OSS; a client streams a file striped over all four
//! OSTs, B's OSS is killed with SIGKILL in the middle and started again; the client
//! waits for the new map, retries, and every byte reads back. The MDS: A runs the MGS
//! and the OSSs, M the MDS; a client makes and removes directories while M's MDS is
//! killed and restarted; every request succeeds exactly once (a retried mkdir whose
//! first answer was lost is answered from the MDS's reply cache, not with EEXIST), a
//! lock held across the restart is replayed by its client and still holds, and so are
//! its opens: a file unlinked while open before the restart, and one unlinked by
//! another client after it, read back whole and go at their last close.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{tmp, Up};
use nacre_client::{Client, OpenOptions};
use nacre_fabric::testing::pattern;
use nacre_proto::bootstrap::RoleKind;
use nacre_proto::layout::{FirstOst, StripeCount, StripeSpec};
use nacre_proto::meta::{lock, Creds, LockRequest, Reply, Request};

const MIB: usize = 1 << 20;
const CHUNKS: usize = 48;

fn write_config(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn host_a(dir: &Path) -> String {
    let d = dir.display();
    let text = format!(
        "[mgs]\nlisten = \"127.0.0.1:0\"\n[mds]\n[[oss]]\nosts = [\"{d}/a/ost0\", \"{d}/a/ost1\"]\n"
    );
    write_config(&dir.join("a.toml"), &text)
}

fn host_b(dir: &Path, mgs: &str) -> String {
    let d = dir.display();
    let text =
        format!("mgs_address = \"{mgs}\"\n[[oss]]\nosts = [\"{d}/b/ost0\", \"{d}/b/ost1\"]\n");
    write_config(&dir.join("b.toml"), &text)
}

/// The flags of the host whose server the test kills: its `nacre up` stops with it
/// (the test starts it again itself).
fn b_args(config: &str) -> [&str; 4] {
    ["--config", config, "--restart", "never"]
}

/// Hosts A (MGS, MDS, one OSS) and B (one OSS) up over `provider` under a directory
/// named after `test`, with B's config file (to start B again); None (skipped, said
/// why) when the provider is absent.
fn hosts_a_and_b(provider: &str, test: &str, what: &str) -> Option<(PathBuf, Up, Up, String)> {
    if !common::have(provider, what) {
        return None;
    }
    let name = provider.split(';').next().unwrap();
    let dir = tmp(&format!("{test}-{name}"));
    let a = Up::start(&dir.join("a"), provider, &["--config", &host_a(&dir)]);
    let b_config = host_b(&dir, &a.mgs);
    let b = Up::start(&dir.join("b"), provider, &b_args(&b_config));
    Some((dir, a, b, b_config))
}

/// Once the stream has done `after` steps, kills `server` of `up` with SIGKILL and
/// waits for that `nacre up` to end with an error; returns the steps done at the kill.
fn kill_mid_stream(up: &mut Up, server: &str, done: &AtomicUsize, after: usize) -> usize {
    let until = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::Relaxed) < after && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    nacre_fabric::testing::send_signal(up.pid_of(server), "KILL").expect("kill -9 of the server");
    let at_kill = done.load(Ordering::Relaxed);
    assert_ne!(up.proc.wait_exit(Duration::from_secs(30)), Some(0));
    at_kill
}

fn oss_killed_mid_stream(provider: &str) {
    let Some((dir, a, mut b, b_config)) =
        hosts_a_and_b(provider, "recovery", "OSS killed mid-stream")
    else {
        return;
    };

    let client = Client::connect(&a.mgs, common::client_config(&a.mgs)).unwrap();
    let spec = StripeSpec {
        stripe_size: MIB as u32,
        count: StripeCount::Count(4),
        first: FirstOst::Index(0),
        mirrors: 1,
    };
    let file = Arc::new(
        client
            .open("/stream", &OpenOptions::create().layout(spec))
            .unwrap(),
    );
    let data = Arc::new(pattern(11, CHUNKS * MIB));
    let done = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (file, data, done) = (file.clone(), data.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..CHUNKS {
                let at = i * MIB;
                file.write_at(&data[at..at + MIB], at as u64)
                    .unwrap_or_else(|e| panic!("write of chunk {i}: {e}"));
                done.store(i + 1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // B's OSS dies without a word; B's `nacre up` sees it go and ends with an error.
    let at_kill = kill_mid_stream(&mut b, "oss0", &done, CHUNKS / 4);
    assert!(
        at_kill < CHUNKS,
        "the stream was still going when the OSS died"
    );
    std::thread::sleep(Duration::from_millis(500));
    b = Up::start(&dir.join("b"), provider, &b_args(&b_config));
    let restarted = Instant::now();
    writer.join().expect("the writer recovered");
    eprintln!(
        "{provider}: killed after {at_kill} of {CHUNKS} chunks; stream done {:?} after the restart",
        restarted.elapsed()
    );
    file.fsync().unwrap();
    let mut back = vec![0u8; CHUNKS * MIB];
    assert_eq!(file.read_at(&mut back, 0).unwrap(), back.len());
    assert!(
        back == *data,
        "every byte written reads back after the OSS restart"
    );
    assert_eq!(client.stat("/stream").unwrap().size, (CHUNKS * MIB) as u64);
    // Closed while the servers run: a close, like every request, waits out a server
    // that is gone for the client's recovery window.
    Arc::into_inner(file).unwrap().close().unwrap();
    b.stop();
    a.stop();
}

/// The MGS's default lease: a dead OSS's target is down in the map this long after its
/// last renewal.
const LEASE: Duration = Duration::from_secs(5);

/// Scratch failures are fast and clear: kill -9 of B's OSS, not restarted. A read of a
/// file on one of B's OSTs, sent to the dead server, fails with EIO once its lease
/// lapsed (not after the client's minute of recovery); later I/O to it fails at once;
/// a file on A's OSTs stays readable and writable throughout.
fn oss_lost_fails_fast(provider: &str) {
    let Some((dir, a, mut b, _)) = hosts_a_and_b(provider, "lost-oss", "OSS lost for good") else {
        return;
    };
    let client = Client::connect(&a.mgs, common::client_config(&a.mgs)).unwrap();
    // B's OSTs: those served from B's directories (a server's node names its target).
    let map = client.refresh_map().unwrap();
    let b_dir = format!("{}/b/", dir.display());
    let on = |of_b: bool| {
        let s = map
            .servers
            .iter()
            .find(|s| s.role.kind == RoleKind::Oss && s.node.contains(&b_dir) == of_b);
        s.unwrap_or_else(|| {
            panic!(
                "no OSS of {} in {:?}",
                ["A", "B"][of_b as usize],
                map.servers
            )
        })
        .role
        .index
    };
    let one_ost = |ost| StripeSpec {
        stripe_size: MIB as u32,
        count: StripeCount::Count(1),
        first: FirstOst::Index(ost),
        mirrors: 1,
    };
    let data = pattern(31, MIB);
    let mut files = Vec::new();
    for (path, ost) in [("/on_a", on(false)), ("/on_b", on(true))] {
        // The MDS takes new OSTs from the map within a second (EINVAL until then).
        let until = Instant::now() + Duration::from_secs(10);
        let f = loop {
            match client.open(path, &OpenOptions::create().layout(one_ost(ost))) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                other => break other.unwrap(),
            }
        };
        f.write_at(&data, 0).unwrap();
        files.push(f);
    }
    let (on_a, on_b) = (&files[0], &files[1]);
    nacre_fabric::testing::send_signal(b.pid_of("oss0"), "KILL").expect("kill -9 of B's OSS");
    let killed = Instant::now();
    let mut back = vec![0u8; MIB];
    let err = on_b.read_at(&mut back, 0).unwrap_err();
    let took = killed.elapsed();
    eprintln!("{provider}: a read on the lost OST failed ({err}) {took:?} after the kill");
    assert_eq!(nacre_client::errno(&err), libc::EIO, "{err}");
    assert!(
        took < LEASE + Duration::from_secs(3),
        "EIO came {took:?} after the kill, lease {LEASE:?}"
    );
    let again = Instant::now();
    let err = on_b.write_at(&data, 0).unwrap_err();
    assert_eq!(nacre_client::errno(&err), libc::EIO, "{err}");
    assert!(
        again.elapsed() < Duration::from_secs(1),
        "the map says down: at once"
    );
    on_a.write_at(&data, MIB as u64).unwrap();
    assert_eq!(on_a.read_at(&mut back, MIB as u64).unwrap(), MIB);
    assert!(back == data, "the file on A's OST is untouched");
    assert_ne!(b.proc.wait_exit(Duration::from_secs(30)), Some(0));
    drop(files);
    a.stop();
}

#[test]
fn io_on_a_lost_ost_fails_fast_on_tcp() {
    oss_lost_fails_fast("tcp;ofi_rxm");
}

#[test]
fn io_on_a_lost_ost_fails_fast_on_shm() {
    oss_lost_fails_fast("shm");
}

fn host_a_without_mds(dir: &Path) -> String {
    let d = dir.display();
    let text = format!(
        "[mgs]\nlisten = \"127.0.0.1:0\"\n[[oss]]\nosts = [\"{d}/a/ost0\", \"{d}/a/ost1\"]\n"
    );
    write_config(&dir.join("a.toml"), &text)
}

fn host_m(dir: &Path, mgs: &str) -> String {
    let d = dir.display();
    let text = format!("mgs_address = \"{mgs}\"\n[mds]\ndir = \"{d}/m/mdt\"\n");
    write_config(&dir.join("m.toml"), &text)
}

const DIRS: usize = 120;

/// A write lock of owner 1 of the client on bytes `start..=end` of `ino`.
fn write_lock(ino: u64, start: u64, end: u64) -> LockRequest {
    LockRequest {
        ino,
        client: 0,
        owner: 1,
        start,
        end,
        kind: lock::WRITE,
        pid: 1,
        test: false,
        replay: false,
        wait: false,
    }
}

/// After an MDS restart: `holder`'s lock on bytes 0..=9 of `ino`, taken before it,
/// still keeps `other` out once the restarted MDS's recovery window has closed (the
/// holder replayed it); new locks waited for that window; the lock goes when the
/// holder unlocks.
fn lock_survives_the_restart(holder: &Client, other: &Client, ino: u64) {
    let until = Instant::now() + lock::RECOVERY * 2;
    // A range nobody holds: refused while the MDS waits for replays, then granted.
    while other.lock(write_lock(ino, 100, 109)).is_err() {
        assert!(Instant::now() < until, "the recovery window never closed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let e = other.lock(write_lock(ino, 0, 0)).unwrap_err();
    assert_eq!(
        nacre_client::errno(&e),
        libc::EAGAIN,
        "the replayed lock holds"
    );
    holder
        .lock(LockRequest {
            kind: lock::UNLOCK,
            ..write_lock(ino, 0, u64::MAX)
        })
        .unwrap();
    other.lock(write_lock(ino, 0, 0)).unwrap();
}

/// Files a client holds open across the MDS's restart: `held` unlinked before it,
/// `kept` still linked.
struct HeldOpen {
    held: nacre_client::File,
    kept: nacre_client::File,
    data: Vec<u8>,
}

const HELD_LEN: usize = 300 << 10;

fn open_before_the_restart(client: &Client) -> HeldOpen {
    let data = pattern(23, HELD_LEN);
    let held = client.create("/held", 0o644, None).unwrap();
    let kept = client.create("/kept", 0o644, None).unwrap();
    for f in [&held, &kept] {
        f.write_at(&data, 0).unwrap();
    }
    client.unlink("/held").unwrap();
    HeldOpen { held, kept, data }
}

fn nlink(client: &Client, ino: u64) -> std::io::Result<u32> {
    match client.request_as(&Creds::root(), &Request::Getattr { ino })? {
        Reply::Attr(a) => Ok(a.nlink),
        other => panic!("{other:?}"),
    }
}

/// After the restart: the file unlinked before it is still there, one unlinked after
/// it is kept as an orphan, both read back whole through their handles, and each goes
/// at its close, which only an MDS that took the client's opens back does (a close of
/// a handle it does not know changes nothing). The reclaim at the end of the open
/// recovery window (60 s) is checked by `mds/tests/mdt_replay.rs`.
fn opens_survive_the_restart(client: &Client, other: &Client, o: HeldOpen) {
    let (held, kept) = (o.held.ino(), o.kept.ino());
    assert_eq!(nlink(client, held).unwrap(), 0, "an orphan still");
    other.unlink("/kept").unwrap();
    assert_eq!(nlink(client, kept).unwrap(), 0, "open: kept as an orphan");
    for f in [&o.held, &o.kept] {
        let mut back = vec![0u8; HELD_LEN];
        assert_eq!(f.read_at(&mut back, 0).unwrap(), HELD_LEN);
        assert!(
            back == o.data,
            "inode {}: the data outlived the restart",
            f.ino()
        );
    }
    o.held.close().unwrap();
    o.kept.close().unwrap();
    for ino in [held, kept] {
        let gone = nlink(client, ino).unwrap_err();
        assert_eq!(
            nacre_client::errno(&gone),
            libc::ENOENT,
            "destroyed at close"
        );
    }
}

fn mds_killed_mid_stream(provider: &str) {
    if !common::have(provider, "MDS killed mid-stream") {
        return;
    }
    let name = provider.split(';').next().unwrap();
    let dir = tmp(&format!("mds-recovery-{name}"));
    let a = Up::start(
        &dir.join("a"),
        provider,
        &["--config", &host_a_without_mds(&dir)],
    );
    let m_config = host_m(&dir, &a.mgs);
    let mut m = Up::start(&dir.join("m"), provider, &b_args(&m_config));
    let client = Client::connect(&a.mgs, common::client_config(&a.mgs)).unwrap();
    let other = Client::connect(&a.mgs, common::client_config(&a.mgs)).unwrap();
    let ino = client.create("/locked", 0o644, None).unwrap().ino();
    client.lock(write_lock(ino, 0, 9)).unwrap();
    let open = open_before_the_restart(&client);
    let done = Arc::new(AtomicUsize::new(0));
    let worker = {
        let (client, done) = (client.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..DIRS {
                let path = format!("/d{i}");
                client
                    .mkdir(&path, 0o755)
                    .unwrap_or_else(|e| panic!("mkdir {path}: {e}"));
                if i % 2 == 1 {
                    client
                        .rmdir(&path)
                        .unwrap_or_else(|e| panic!("rmdir {path}: {e}"));
                }
                done.store(i + 1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let at_kill = kill_mid_stream(&mut m, "mds", &done, DIRS / 4);
    assert!(
        at_kill < DIRS,
        "the stream was still going when the MDS died"
    );
    m = Up::start(&dir.join("m"), provider, &b_args(&m_config));
    worker.join().expect("every mkdir and rmdir succeeded once");
    let mut names: Vec<String> = client
        .readdir("/")
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .filter(|n| n.starts_with('d'))
        .collect();
    names.sort();
    let mut want: Vec<String> = (0..DIRS).step_by(2).map(|i| format!("d{i}")).collect();
    want.sort();
    assert_eq!(names, want);
    lock_survives_the_restart(&client, &other, ino);
    opens_survive_the_restart(&client, &other, open);
    drop((client, other));
    m.stop();
    a.stop();
}

#[test]
fn client_recovers_from_an_mds_killed_mid_stream_on_tcp() {
    mds_killed_mid_stream("tcp;ofi_rxm");
}

#[test]
fn client_recovers_from_an_mds_killed_mid_stream_on_shm() {
    mds_killed_mid_stream("shm");
}

#[test]
fn client_recovers_from_an_oss_killed_mid_stream_on_tcp() {
    oss_killed_mid_stream("tcp;ofi_rxm");
}

#[test]
fn client_recovers_from_an_oss_killed_mid_stream_on_shm() {
    oss_killed_mid_stream("shm");
}
