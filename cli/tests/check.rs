//! `nacre check`: a clean file system checks clean; objects no file names (what a
//! create rolled back by a machine loss leaves) and data past a file's recorded size
//! (a writer that died before reporting it) are found, repaired with --fix (or kept
//! under /lost+found with --keep-orphans), and a second run reports all zeros.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use nacre_client::objects::{IoOptions, OstRoute};
use nacre_client::{ClientEndpoint, RpcConfig};
use nacre_fabric::testing::pattern;
use nacre_fabric::Selection;
use nacre_oss::layout::object_path;

const CLEAN: &str = "orphans=0 dangling=0 nlink=0 size=0 fixed=0";

/// The directory of OST `index` under `data` (`ossN/targetM` with that superblock).
fn ost_dir(data: &Path, index: u32) -> PathBuf {
    for oss in std::fs::read_dir(data).unwrap().filter_map(Result::ok) {
        for t in std::fs::read_dir(oss.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let sb = std::fs::read_to_string(t.path().join("nacre-ost.toml")).unwrap_or_default();
            if sb.lines().any(|l| l.trim() == format!("index = {index}")) {
                return t.path();
            }
        }
    }
    panic!("no OST {index} under {}", data.display());
}

/// (OST, object id) of each stripe of `path`, from `nacre getstripe`.
fn objects_of(up: &Up, path: &str) -> Vec<(u32, u64)> {
    up.ok(&["getstripe", path])
        .lines()
        .filter(|l| l.starts_with('\t') && !l.contains("obdidx"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].parse().unwrap(), f[1].parse().unwrap())
        })
        .collect()
}

fn last_line(out: &str) -> &str {
    out.lines().last().unwrap_or("")
}

/// Puts an object file no file names on OST 0, as a rolled-back create leaves it.
fn plant_orphan(data: &Path, oid: u64, len: usize) -> PathBuf {
    let p = object_path(&ost_dir(data, 0), oid);
    std::fs::write(&p, pattern(oid, len)).unwrap();
    p
}

fn size_of(up: &Up, path: &str) -> u64 {
    let out = up.ok(&["stat", path]);
    let line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Size:"))
        .unwrap_or_else(|| panic!("no size in {out}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

/// Writes `data` at `offset` of object `oid` on `ost` through its OSS and reports no
/// size to the MDS: what a writer that died before its close or fsync leaves.
fn write_unreported(mgs: &str, ost: u32, oid: u64, offset: u64, data: &[u8]) {
    let key = nacre_auth::Key::load(common::key_of(mgs).as_ref()).unwrap();
    let keys = nacre_auth::KeySource::key(key.clone());
    let map = nacre_mgc::MgsClient::connect_with(mgs, Default::default(), keys)
        .unwrap()
        .fetch_map()
        .unwrap();
    let route = OstRoute::in_map(&map, ost).unwrap();
    let cfg = RpcConfig {
        msg_size: nacre_proto::object::MSG_SIZE,
        key: Some(key),
        ..Default::default()
    };
    let mut ep = ClientEndpoint::open(&Selection::provider("tcp"), cfg).unwrap();
    ep.obj_write(&route, oid, offset, data, IoOptions::for_provider("tcp"))
        .unwrap();
}

#[test]
fn check_finds_and_fixes_orphans_and_sizes() {
    if !have("tcp", "nacre check") {
        return;
    }
    let dir = tmp("check-tcp");
    let data = dir.join("data");
    let local = dir.join("in.bin");
    std::fs::write(&local, pattern(1, 3 << 20)).unwrap();
    let local = local.to_str().unwrap();
    let up = Up::start(&data, "tcp", &[]);
    up.ok(&["mkdir", "/d"]);
    up.ok(&["cp", "-c", "2", "-S", "1m", local, "nacre:/d/a"]);
    up.ok(&["cp", "-c", "1", local, "nacre:/d/b"]);
    let out = up.ok(&["check"]);
    assert_eq!(last_line(&out), CLEAN, "{out}");

    // Damage: an orphan object, and data past b's size on its object.
    let orphan = plant_orphan(&data, 60_000, 5000);
    let (ost, oid) = objects_of(&up, "/d/b")[0];
    write_unreported(&up.mgs, ost, oid, 3 << 20, &pattern(9, 4096));
    let out = up.ok(&["check"]);
    assert_eq!(
        last_line(&out),
        "orphans=1 dangling=0 nlink=0 size=1 fixed=0",
        "{out}"
    );
    assert!(
        out.contains("orphan: object 0xea60 on OST 0 (5000 bytes)"),
        "{out}"
    );
    assert!(orphan.exists(), "a check without --fix changes nothing");
    assert_eq!(size_of(&up, "/d/b"), 3 << 20);

    let out = up.ok(&["check", "--fix"]);
    assert_eq!(
        last_line(&out),
        "orphans=1 dangling=0 nlink=0 size=1 fixed=2",
        "{out}"
    );
    assert!(!orphan.exists(), "the orphan was destroyed");
    assert_eq!(size_of(&up, "/d/b"), (3 << 20) + 4096);
    let out = up.ok(&["check"]);
    assert_eq!(last_line(&out), CLEAN, "{out}");

    // --keep-orphans links the object under /lost+found, with its data.
    plant_orphan(&data, 60_001, 3000);
    let out = up.ok(&["check", "--fix", "--keep-orphans"]);
    assert_eq!(
        last_line(&out),
        "orphans=1 dangling=0 nlink=0 size=0 fixed=1",
        "{out}"
    );
    let kept = format!("/lost+found/ost0-{:016x}", 60_001);
    assert_eq!(size_of(&up, &kept), 3000);
    let back = dir.join("back.bin");
    up.ok(&["cp", &format!("nacre:{kept}"), back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), pattern(60_001, 3000));
    let out = up.ok(&["check"]);
    assert_eq!(last_line(&out), CLEAN, "{out}");
    up.stop();
}
