//! A persistent file system: every file mirrored on OSTs of two OSS processes. Host A
//! runs the MGS (formatted `persistent`), the MDS and one OSS; host B a second OSS.
//! B's OSS is killed with SIGKILL while a client streams a file and before it reads
//! another whose first mirror is on B: no call fails, the longest pause stays within
//! the lease and a little, the mirror on B is marked stale, and every byte reads back
//! from the copy on A. Files made after the kill are mirrored on A's two OSTs. A write
//! while B is down marks B's copy stale; once B's OSS is back (a new epoch), a reader
//! that opened the file before all this reads the new bytes from A, not B's old copy.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{tmp, Up};
use nacre_client::{Client, File, Layout, OpenOptions};
use nacre_fabric::testing::pattern;
use nacre_proto::bootstrap::RoleKind;
use nacre_proto::layout::{FileLayout, FirstOst, StripeCount, StripeSpec};
use nacre_proto::meta::{Creds, Request};

const MIB: usize = 1 << 20;
const CHUNKS: usize = 40;
/// The MGS's default lease: a dead OSS's target is down in the map this long after its
/// last renewal.
const LEASE: Duration = Duration::from_secs(5);
/// What the pause may exceed the lease by here: the target is 1 s (measured by
/// `nacre-bench`); the test allows for two vCPUs shared by five servers and a build.
const SLACK: Duration = Duration::from_secs(3);

fn write_config(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Hosts A and B up over `provider`, A's MGS formatted persistent, its MDS rebuilding
/// stale copies at `rebuild` MiB/s (0: never).
fn hosts(provider: &str, test: &str, rebuild: u64) -> Option<(PathBuf, Up, Up)> {
    if !common::have(provider, "a persistent file system losing an OSS") {
        return None;
    }
    let dir = tmp(&format!("{test}-{}", provider.split(';').next().unwrap()));
    let d = dir.display();
    let a = write_config(
        &dir.join("a.toml"),
        &format!(
            "[mgs]\nlisten = \"127.0.0.1:0\"\ndeployment = \"persistent\"\n\
             [mds]\nrebuild_mib_s = {rebuild}\n\
             [[oss]]\nosts = [\"{d}/a/ost0\", \"{d}/a/ost1\"]\n"
        ),
    );
    let a = Up::start(&dir.join("a"), provider, &["--config", &a]);
    let b = write_config(
        &dir.join("b.toml"),
        &format!(
            "mgs_address = \"{}\"\n[[oss]]\nosts = [\"{d}/b/ost0\", \"{d}/b/ost1\"]\n",
            a.mgs
        ),
    );
    // Lost for good: its `nacre up` does not start it again.
    let b = Up::start(
        &dir.join("b"),
        provider,
        &["--config", &b, "--restart", "never"],
    );
    Some((dir, a, b))
}

/// The OSTs served from B's directories.
fn osts_of_b(client: &Client, dir: &Path) -> Vec<u32> {
    let b_dir = format!("{}/b/", dir.display());
    let map = client.refresh_map().unwrap();
    let mut v: Vec<u32> = map
        .servers
        .iter()
        .filter(|s| s.role.kind == RoleKind::Oss && s.node.contains(&b_dir))
        .map(|s| s.role.index)
        .collect();
    v.sort_unstable();
    assert_eq!(v.len(), 2, "B's two OSTs in {:?}", map.servers);
    v
}

/// The `nacre up` server (`oss0` or `oss1`, serving `<dir>/ossN/...`) that holds the
/// first copy of a file of layout `l`.
fn first_copy_server(client: &Client, l: &FileLayout) -> &'static str {
    let map = client.refresh_map().unwrap();
    let first = nacre_proto::bootstrap::Role {
        kind: RoleKind::Oss,
        index: l.mirrors[0].stripes.objects[0].ost,
    };
    match map.server(first).unwrap().node.contains("/oss0/") {
        true => "oss0",
        false => "oss1",
    }
}

fn layout_of(client: &Client, path: &str) -> FileLayout {
    match client.get_layout(path).unwrap() {
        Layout::File(l) => l,
        other => panic!("{path}: {other:?}"),
    }
}

/// Creates `path` as `spec` asks, once the MDS places copies on both hosts (it takes
/// B's OSTs from the map within a second or two).
fn create_across(client: &Client, path: &str, spec: StripeSpec, b: &[u32]) -> File {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        // EINVAL: the MDS does not know B's OST named first yet.
        let f = match client.open(path, &OpenOptions::create().layout(spec)) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            other => other.unwrap(),
        };
        let l = f.layout().unwrap().clone();
        assert_eq!(l.mirrors.len(), 2, "{l:?}");
        let on_b = |m: usize| {
            l.mirrors[m]
                .stripes
                .objects
                .iter()
                .all(|o| b.contains(&o.ost))
        };
        let on_a = |m: usize| {
            l.mirrors[m]
                .stripes
                .objects
                .iter()
                .all(|o| !b.contains(&o.ost))
        };
        if (on_b(0) && on_a(1)) || (on_a(0) && on_b(1)) {
            return f;
        }
        assert!(
            Instant::now() < until,
            "copies never spread over A and B: {l:?}"
        );
        drop(f);
        client.unlink(path).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn persistent_survives_a_lost_oss(provider: &str) {
    // No rebuild: the resync is the test's to run.
    let Some((dir, a, mut b)) = hosts(provider, "mirrors", 0) else {
        return;
    };
    let status = a.ok(["status"].as_slice());
    assert!(
        status.contains("deployment: persistent (2 copies of every file)"),
        "{status}"
    );
    let client = Client::connect(&a.mgs, common::client_config(&a.mgs)).unwrap();
    let b_osts = osts_of_b(&client, &dir);
    // Written whole before the kill, its first mirror (the one read) on B.
    let first_on_b = StripeSpec {
        stripe_size: MIB as u32,
        count: StripeCount::Count(2),
        first: FirstOst::Index(b_osts[0]),
        mirrors: 2,
    };
    let before = create_across(&client, "/before", first_on_b, &b_osts);
    let old = pattern(5, 8 * MIB);
    before.write_at(&old, 0).unwrap();
    before.fsync().unwrap();
    // Opened before the kill: its layout knows no stale copy.
    let r = client.open("/before", &OpenOptions::read()).unwrap();
    // Streamed across the kill, with the file system's default layout (2 copies).
    let stream_spec = StripeSpec {
        first: FirstOst::Any,
        ..first_on_b
    };
    let file = Arc::new(create_across(&client, "/stream", stream_spec, &b_osts));
    let data = Arc::new(pattern(11, CHUNKS * MIB));
    let done = Arc::new(AtomicUsize::new(0));
    let longest = Arc::new(Mutex::new(Duration::ZERO));
    let writer = {
        let (file, data, done, longest) =
            (file.clone(), data.clone(), done.clone(), longest.clone());
        std::thread::spawn(move || {
            for i in 0..CHUNKS {
                let at = i * MIB;
                let t = Instant::now();
                file.write_at(&data[at..at + MIB], at as u64)
                    .unwrap_or_else(|e| panic!("write of chunk {i}: {e}"));
                let took = t.elapsed();
                let mut l = longest.lock().unwrap();
                *l = (*l).max(took);
                done.store(i + 1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let until = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::Relaxed) < CHUNKS / 4 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    nacre_fabric::testing::send_signal(b.pid_of("oss0"), "KILL").expect("kill -9 of B's OSS");
    let killed = Instant::now();
    let at_kill = done.load(Ordering::Relaxed);
    // A read of the file whose first copy was on B: served by the copy on A.
    let mut back = vec![0u8; old.len()];
    assert_eq!(r.read_at(&mut back, 0).unwrap(), back.len());
    let read_pause = killed.elapsed();
    assert!(back == old, "the copy on A reads back whole");
    writer.join().expect("the writer went on without an error");
    let write_pause = *longest.lock().unwrap();
    eprintln!(
        "{provider}: killed after {at_kill} of {CHUNKS} chunks; longest write {write_pause:?}, \
         read of the other file done {read_pause:?} after the kill (lease {LEASE:?})"
    );
    assert!(at_kill < CHUNKS, "the stream was still going at the kill");
    for (what, pause) in [("write", write_pause), ("read", read_pause)] {
        assert!(
            pause <= LEASE + SLACK,
            "a {what} paused {pause:?}, lease {LEASE:?}"
        );
    }
    file.fsync().unwrap();
    let l = layout_of(&client, "/stream");
    let stale: Vec<usize> = (0..2).filter(|&m| l.mirrors[m].stale).collect();
    assert_eq!(stale.len(), 1, "the copy on B is stale: {l:?}");
    let on_b = &l.mirrors[stale[0]].stripes.objects;
    assert!(on_b.iter().all(|o| b_osts.contains(&o.ost)), "{l:?}");
    let shown = a.ok(["getstripe", "/stream"].as_slice());
    assert!(shown.contains("lcm_mirror_count:  2"), "{shown}");
    assert!(shown.contains("lcme_flags:        init,stale"), "{shown}");
    let mut back = vec![0u8; CHUNKS * MIB];
    assert_eq!(file.read_at(&mut back, 0).unwrap(), back.len());
    assert!(back == *data, "every byte streamed reads back");
    Arc::into_inner(file).unwrap().close().unwrap();
    // B's `nacre up` ends once its OSS is gone; A's MDS places new files on A's two
    // OSTs, which serve.
    assert_ne!(b.proc.wait_exit(Duration::from_secs(30)), Some(0));
    let until = Instant::now() + Duration::from_secs(LEASE.as_secs() + 10);
    let after = loop {
        let f = client.open("/after", &OpenOptions::create()).unwrap();
        let l = f.layout().unwrap().clone();
        if l.objects().all(|o| !b_osts.contains(&o.ost)) {
            break f;
        }
        assert!(Instant::now() < until, "new files still go to B: {l:?}");
        drop(f);
        client.unlink("/after").unwrap();
        std::thread::sleep(Duration::from_millis(300));
    };
    let l = after.layout().unwrap();
    assert_eq!(l.mirrors.len(), 2);
    assert_ne!(
        l.mirrors[0].stripes.objects[0].ost,
        l.mirrors[1].stripes.objects[0].ost
    );
    after.write_at(&old[..MIB], 0).unwrap();
    let mut one = vec![0u8; MIB];
    assert_eq!(after.read_at(&mut one, 0).unwrap(), MIB);
    assert!(one == old[..MIB]);
    drop(after);
    // Written while B is down: B's copy goes stale. B's OSS comes back on its old
    // directory (old bytes, a new epoch); the reader opened before the kill reads the
    // new bytes.
    let newer = pattern(7, 8 * MIB);
    before.write_at(&newer, 0).unwrap();
    before.fsync().unwrap();
    let stale = layout_of(&client, "/before");
    assert!(
        stale.mirrors[0].stale && !stale.mirrors[1].stale,
        "{stale:?}"
    );
    let old_epoch = epoch_of(&client, b_osts[0]);
    let b = Up::start(
        &dir.join("b"),
        provider,
        &[
            "--config",
            dir.join("b.toml").to_str().unwrap(),
            "--restart",
            "never",
        ],
    );
    let until = Instant::now() + Duration::from_secs(30);
    while epoch_of(&client, b_osts[0]) == old_epoch {
        assert!(Instant::now() < until, "B's OSS never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    // From a thread of its own: a connection made now, on the map that shows B back.
    let mut back = vec![0u8; newer.len()];
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(r.read_at(&mut back, 0).unwrap(), newer.len()));
    });
    assert!(back == newer, "an old handle read B's stale copy");
    // The resync: refused while a handle may write the file; then B's copy holds the
    // new bytes, which reads show once A's copy is set aside.
    let busy = client.resync("/before").unwrap_err();
    assert_eq!(busy.raw_os_error(), Some(libc::EBUSY), "{busy}");
    drop((r, before));
    let said = a.ok(["mirror", "resync", "/before"].as_slice());
    assert_eq!(said.trim(), "/before: mirror 1 resynced");
    let shown = a.ok(["getstripe", "/before"].as_slice());
    assert!(!shown.contains("stale"), "{shown}");
    let ino = client.stat("/before").unwrap().ino;
    let aside = Request::MirrorState {
        ino,
        mirror: 1,
        stale: true,
    };
    client.request_as(&Creds::root(), &aside).unwrap();
    let only_b = client.open("/before", &OpenOptions::read()).unwrap();
    let mut back = vec![0u8; newer.len()];
    assert_eq!(only_b.read_at(&mut back, 0).unwrap(), back.len());
    assert!(back == newer, "B's resynced copy holds the new bytes");
    drop(only_b);
    b.stop();
    a.stop();
}

/// The epoch of `ost`'s server in the map now (0: none serves it).
fn epoch_of(client: &Client, ost: u32) -> u64 {
    let map = client.refresh_map().unwrap();
    let role = nacre_proto::bootstrap::Role {
        kind: RoleKind::Oss,
        index: ost,
    };
    map.server(role).map_or(0, |s| s.epoch)
}

#[test]
fn persistent_survives_a_lost_oss_on_tcp() {
    persistent_survives_a_lost_oss("tcp;ofi_rxm");
}

#[test]
fn persistent_survives_a_lost_oss_on_shm() {
    persistent_survives_a_lost_oss("shm");
}

/// `nacre up --deployment persistent` on one machine (two OSSs of two OSTs each): kill
/// -9 of one OSS while a client writes and reads. `nacre up` says so and starts it
/// again after its back-off; no call fails, and everything written reads back.
fn nacre_up_restarts_a_dead_oss(provider: &str) {
    if !common::have(provider, "nacre up starting a dead OSS again") {
        return;
    }
    let dir = tmp(&format!("restart-{}", provider.split(';').next().unwrap()));
    let mut up = Up::start(&dir.join("data"), provider, &["--deployment", "persistent"]);
    let client = Client::connect(&up.mgs, common::client_config(&up.mgs)).unwrap();
    let f = client.open("/f", &OpenOptions::create()).unwrap();
    let l = f.layout().unwrap().clone();
    assert_eq!(l.mirrors.len(), 2, "persistent: two copies by default");
    let data = pattern(3, CHUNKS * MIB);
    f.write_at(&data[..MIB], 0).unwrap();
    let victim = first_copy_server(&client, &l);
    nacre_fabric::testing::send_signal(up.pid_of(victim), "KILL").expect("kill -9");
    let killed = Instant::now();
    let mut longest = Duration::ZERO;
    let mut back = vec![0u8; MIB];
    for i in 1..CHUNKS {
        let at = i * MIB;
        let t = Instant::now();
        f.write_at(&data[at..at + MIB], at as u64)
            .unwrap_or_else(|e| panic!("write of chunk {i}: {e}"));
        assert_eq!(f.read_at(&mut back, (at - MIB) as u64).unwrap(), MIB);
        assert!(back == data[at - MIB..at], "chunk {} reads back", i - 1);
        longest = longest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    let exited = up.wait_for(
        &format!("nacre up: {victim} exited"),
        Duration::from_secs(30),
    );
    assert!(exited.contains("starting it again in 1s"), "{exited}");
    up.wait_for(
        &format!("nacre up: {victim} restarted"),
        Duration::from_secs(30),
    );
    eprintln!(
        "{provider}: {victim} killed; longest write and read {longest:?}, all done {:?} \
         after the kill",
        killed.elapsed()
    );
    assert!(longest <= LEASE + SLACK, "a call paused {longest:?}");
    let log = std::fs::read_to_string(dir.join(format!("data/logs/{victim}.log"))).unwrap();
    assert!(
        log.contains(&format!("nacre up: {victim} restarted (restart 1)")),
        "{log}"
    );
    // Back in the map, serving: every target up.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let status = up.ok(["status"].as_slice());
        let down = status.lines().filter(|l| l.contains("DOWN")).count();
        if down == 0 && status.matches("OST0").count() == 4 {
            break;
        }
        assert!(
            Instant::now() < until,
            "not every target came back:\n{status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    f.fsync().unwrap();
    let mut all = vec![0u8; data.len()];
    assert_eq!(f.read_at(&mut all, 0).unwrap(), all.len());
    assert!(
        all == data,
        "every byte written across the restart reads back"
    );
    // Closed, the file's stale copy is rebuilt: every OST up again.
    drop(f);
    wait_states(&up, &[0, 1, 2, 3], "up", Duration::from_secs(60));
    up.stop();
}

#[test]
fn nacre_up_restarts_a_dead_oss_on_shm() {
    nacre_up_restarts_a_dead_oss("shm");
}

#[test]
fn nacre_up_restarts_a_dead_oss_on_tcp() {
    nacre_up_restarts_a_dead_oss("tcp;ofi_rxm");
}

/// The state `nacre status` shows for each of `osts` (`rebuilding` without its figure).
fn ost_states(status: &str, osts: &[u32]) -> Vec<String> {
    let shown = common::shown_targets(status);
    osts.iter()
        .map(|&o| {
            let name = format!("OST{o:04x}");
            let t = shown.iter().find(|t| t.name == name);
            t.unwrap_or_else(|| panic!("{name} in:\n{status}"))
                .state
                .clone()
        })
        .collect()
}

/// Polls `nacre status` until each of `osts` shows `want`; every state seen on the way.
fn wait_states(up: &Up, osts: &[u32], want: &str, within: Duration) -> Vec<String> {
    let until = Instant::now() + within;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let status = up.ok(["status"].as_slice());
        let now = ost_states(&status, osts);
        for s in &now {
            if !seen.contains(s) {
                seen.push(s.clone());
            }
        }
        if now.iter().all(|s| s == want) {
            return seen;
        }
        assert!(
            Instant::now() < until,
            "{osts:?} never all {want} (seen {seen:?}):\n{status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (a minute at most) until the first copy of each of `paths` is in sync.
fn wait_rebuilt(client: &Client, paths: &[String]) {
    let until = Instant::now() + Duration::from_secs(60);
    for path in paths {
        while layout_of(client, path).mirrors[0].stale {
            assert!(Instant::now() < until, "{path} was never rebuilt");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The first copy of each of `paths` alone (the second set aside by hand: marked
/// stale) reads back `want`, to the byte and to its end.
fn first_copies_hold(client: &Client, paths: &[String], want: &[Vec<u8>]) {
    for (path, want) in paths.iter().zip(want) {
        let aside = Request::MirrorState {
            ino: client.stat(path).unwrap().ino,
            mirror: 1,
            stale: true,
        };
        client.request_as(&Creds::root(), &aside).unwrap();
        let f = client.open(path, &OpenOptions::read()).unwrap();
        let mut got = vec![0u8; want.len() + 4096];
        assert_eq!(f.read_at(&mut got, 0).unwrap(), want.len(), "{path}");
        assert!(
            got[..want.len()] == want[..],
            "{path}: the rebuilt copy holds every byte written without it"
        );
    }
}

/// The rebuild: B's OSS killed, files written while it is down (their copies on B go
/// stale), B's OSS back on its directory: A's MDS copies them back in sync by itself,
/// at the bounded rate (4 MiB/s here, so that it takes seconds), and B's copies then
/// hold every byte written during the outage. `nacre status` shows B's OSTs
/// `degraded`, then `rebuilding N%`, then `up`.
fn rebuild_after_an_oss_came_back(provider: &str) {
    let Some((dir, a, mut b)) = hosts(provider, "rebuild", 4) else {
        return;
    };
    let client = Client::connect(&a.mgs, common::client_config(&a.mgs)).unwrap();
    let b_osts = osts_of_b(&client, &dir);
    let first_on_b = StripeSpec {
        stripe_size: MIB as u32,
        count: StripeCount::Count(2),
        first: FirstOst::Index(b_osts[0]),
        mirrors: 2,
    };
    const FILES: usize = 4;
    for i in 0..FILES {
        let f = create_across(&client, &format!("/r{i}"), first_on_b, &b_osts);
        f.write_at(&pattern(i as u64, MIB), 0).unwrap();
    }
    nacre_fabric::testing::send_signal(b.pid_of("oss0"), "KILL").expect("kill -9 of B's OSS");
    assert_ne!(b.proc.wait_exit(Duration::from_secs(30)), Some(0));
    let new: Vec<Vec<u8>> = (0..FILES)
        .map(|i| pattern(100 + i as u64, 3 * MIB))
        .collect();
    for (i, data) in new.iter().enumerate() {
        let f = client
            .open(&format!("/r{i}"), &OpenOptions::create())
            .unwrap();
        f.write_at(data, 0).unwrap();
        f.close().unwrap();
        let l = layout_of(&client, &format!("/r{i}"));
        assert!(l.mirrors[0].stale && !l.mirrors[1].stale, "{l:?}");
    }
    wait_states(&a, &b_osts, "degraded", Duration::from_secs(30));
    // The MDS's count of what is to rebuild reaches the MGS with its heartbeats.
    let until = Instant::now() + Duration::from_secs(30);
    while !b_osts
        .iter()
        .all(|&o| client.refresh_map().unwrap().rebuild_of(o).is_some())
    {
        assert!(Instant::now() < until, "no rebuild counted for B's OSTs");
        std::thread::sleep(Duration::from_millis(100));
    }
    let b = Up::start(
        &dir.join("b"),
        provider,
        &[
            "--config",
            dir.join("b.toml").to_str().unwrap(),
            "--restart",
            "never",
        ],
    );
    let back = Instant::now();
    let seen = wait_states(&a, &b_osts, "up", Duration::from_secs(60));
    assert!(
        seen.iter().any(|s| s == "rebuilding"),
        "B's OSTs shown rebuilding on the way: {seen:?}"
    );
    let paths: Vec<String> = (0..FILES).map(|i| format!("/r{i}")).collect();
    wait_rebuilt(&client, &paths);
    eprintln!(
        "{provider}: {FILES} files of 3 MiB rebuilt {:?} after B's OSS was started again",
        back.elapsed()
    );
    first_copies_hold(&client, &paths, &new);
    b.stop();
    a.stop();
}

#[test]
fn rebuild_after_an_oss_came_back_on_tcp() {
    rebuild_after_an_oss_came_back("tcp;ofi_rxm");
}

#[test]
fn rebuild_after_an_oss_came_back_on_shm() {
    rebuild_after_an_oss_came_back("shm");
}

/// SIGSTOP of the OSS holding a file's first copy, under `nacre up --deployment
/// persistent`: writes go on (the paused copy is marked stale once its lease lapsed),
/// a reader that opened the file before reads the new bytes; resumed, the OSS finds
/// its lease ended and steps down (the MGS does not take a lapsed lease up again at the
/// same epoch), `nacre up` starts it again at a new epoch, and the rebuild brings its
/// copy back in sync, holding every byte.
fn paused_oss_steps_down_and_is_rebuilt(provider: &str) {
    if !common::have(provider, "a paused OSS under a persistent nacre up") {
        return;
    }
    let dir = tmp(&format!("paused-{}", provider.split(';').next().unwrap()));
    let mut up = Up::start(&dir.join("data"), provider, &["--deployment", "persistent"]);
    let client = Client::connect(&up.mgs, common::client_config(&up.mgs)).unwrap();
    let f = client.open("/p", &OpenOptions::create()).unwrap();
    let old = pattern(21, 2 * MIB);
    f.write_at(&old, 0).unwrap();
    let l = f.layout().unwrap().clone();
    let victim = first_copy_server(&client, &l);
    let reader = client.open("/p", &OpenOptions::read()).unwrap();
    let pid = up.pid_of(victim);
    nacre_fabric::testing::send_signal(pid, "STOP").expect("SIGSTOP");
    let paused = Instant::now();
    let new = pattern(22, 2 * MIB);
    f.write_at(&new, 0).unwrap();
    let pause = paused.elapsed();
    // Closed: the rebuild waits while a handle may write the file.
    f.close().unwrap();
    assert!(pause <= LEASE + SLACK, "the write paused {pause:?}");
    assert!(
        layout_of(&client, "/p").mirrors[0].stale,
        "the paused copy is stale"
    );
    nacre_fabric::testing::send_signal(pid, "CONT").expect("SIGCONT");
    up.wait_for(
        &format!("nacre up: {victim} exited"),
        Duration::from_secs(30),
    );
    up.wait_for(
        &format!("nacre up: {victim} restarted"),
        Duration::from_secs(30),
    );
    let until = Instant::now() + Duration::from_secs(60);
    while layout_of(&client, "/p").mirrors[0].stale {
        assert!(Instant::now() < until, "the paused copy was never rebuilt");
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "{provider}: {victim} paused; the write took {pause:?}; rebuilt {:?} after the pause",
        paused.elapsed()
    );
    // The reader from before, on a connection made now.
    let mut back = vec![0u8; new.len()];
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(reader.read_at(&mut back, 0).unwrap(), new.len()));
    });
    assert!(back == new, "the old reader read the new bytes");
    // The rebuilt copy alone.
    drop(reader);
    let aside = Request::MirrorState {
        ino: client.stat("/p").unwrap().ino,
        mirror: 1,
        stale: true,
    };
    client.request_as(&Creds::root(), &aside).unwrap();
    let only = client.open("/p", &OpenOptions::read()).unwrap();
    assert_eq!(only.read_at(&mut back, 0).unwrap(), new.len());
    assert!(back == new, "the rebuilt copy holds the new bytes");
    drop(only);
    up.stop();
}

#[test]
fn paused_oss_steps_down_and_is_rebuilt_on_tcp() {
    paused_oss_steps_down_and_is_rebuilt("tcp;ofi_rxm");
}

#[test]
fn paused_oss_steps_down_and_is_rebuilt_on_shm() {
    paused_oss_steps_down_and_is_rebuilt("shm");
}

/// A replacement: B's OSS lost for good, a new OSS started on two empty directories
/// (as on a new host) takes B's lapsed roles after the lease, at a new generation. The
/// MDS marks every copy that was on B stale (the new OSTs hold none of them), the MGS
/// then lets them serve, and the rebuild fills them from A: `nacre status` shows B's
/// OSTs `degraded`, `rebuilding N%`, `up`, and the new OSS's copies alone read every
/// byte, of files written before the loss and during it.
fn an_empty_oss_replaces_a_lost_one(provider: &str) {
    let Some((dir, a, mut b)) = hosts(provider, "replace", 4) else {
        return;
    };
    let client = Client::connect(&a.mgs, common::client_config(&a.mgs)).unwrap();
    let b_osts = osts_of_b(&client, &dir);
    let spec = StripeSpec {
        stripe_size: MIB as u32,
        count: StripeCount::Count(2),
        first: FirstOst::Index(b_osts[0]),
        mirrors: 2,
    };
    const FILES: usize = 3;
    let mut data: Vec<Vec<u8>> = Vec::new();
    for i in 0..FILES {
        let f = create_across(&client, &format!("/e{i}"), spec, &b_osts);
        data.push(pattern(40 + i as u64, 3 * MIB));
        f.write_at(&data[i], 0).unwrap();
        f.close().unwrap();
    }
    let epochs: Vec<u64> = b_osts.iter().map(|&o| epoch_of(&client, o)).collect();
    nacre_fabric::testing::send_signal(b.pid_of("oss0"), "KILL").expect("kill -9 of B's OSS");
    assert_ne!(b.proc.wait_exit(Duration::from_secs(30)), Some(0));
    // Written while B is down: the copy on B goes stale.
    data[0] = pattern(50, 2 * MIB);
    let f = client.open("/e0", &OpenOptions::create()).unwrap();
    f.write_at(&data[0], 0).unwrap();
    f.close().unwrap();
    wait_states(&a, &b_osts, "degraded", Duration::from_secs(30));
    let cfg = write_config(
        &dir.join("c.toml"),
        &format!(
            "mgs_address = \"{}\"\n[[oss]]\nosts = [\"{d}/c/ost0\", \"{d}/c/ost1\"]\n",
            a.mgs,
            d = dir.display()
        ),
    );
    let c = Up::start(
        &dir.join("c"),
        provider,
        &["--config", &cfg, "--restart", "never"],
    );
    let started = Instant::now();
    let c_dir = format!("{}/c/", dir.display());
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let map = client.refresh_map().unwrap();
        let taken: Vec<u32> = map
            .servers
            .iter()
            .filter(|s| s.node.contains(&c_dir))
            .map(|s| s.role.index)
            .collect();
        if taken.len() == 2 {
            assert_eq!(
                {
                    let mut t = taken.clone();
                    t.sort_unstable();
                    t
                },
                b_osts,
                "the new OSS took B's roles"
            );
            for &o in &b_osts {
                let t = map.targets.iter().find(|t| t.index == o).unwrap();
                assert_eq!(t.generation, 2, "OST{o} replaced: {t:?}");
            }
            break;
        }
        assert!(
            Instant::now() < until,
            "the new OSS never claimed B's roles"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (k, &o) in b_osts.iter().enumerate() {
        assert!(epoch_of(&client, o) > epochs[k], "a new epoch for OST{o}");
    }
    let seen = wait_states(&a, &b_osts, "up", Duration::from_secs(90));
    assert!(
        seen.iter().any(|s| s == "rebuilding"),
        "B's OSTs shown rebuilding on the way: {seen:?}"
    );
    let paths: Vec<String> = (0..FILES).map(|i| format!("/e{i}")).collect();
    wait_rebuilt(&client, &paths);
    eprintln!(
        "{provider}: B's OSTs replaced and rebuilt {:?} after the new OSS started",
        started.elapsed()
    );
    first_copies_hold(&client, &paths, &data);
    c.stop();
    a.stop();
}

#[test]
fn an_empty_oss_replaces_a_lost_one_on_tcp() {
    an_empty_oss_replaces_a_lost_one("tcp;ofi_rxm");
}

#[test]
fn an_empty_oss_replaces_a_lost_one_on_shm() {
    an_empty_oss_replaces_a_lost_one("shm");
}
