//! A real `nacre-oss serve` with one OST on a small loop-mounted ext4 and one on the
//! disk (needs root, else SKIP): a full OST answers ENOSPC for the write that does not
//! fit, keeps serving the rest and stays up in the map with its free space shrunk; a
//! file-system error under an OST marks it degraded in the map, its data still reads,
//! and the other OST goes on as before.

mod common;

use common::loopfs::mount;
use common::process::*;
use nacre_client::objects::IoOptions;
use nacre_client::ClientError;
use nacre_fabric::testing::pattern;
use nacre_proto::bootstrap::{ClusterMap, Role, RoleKind, Target, TargetState};

const PROVIDER: &str = "tcp";

fn ost(map: &ClusterMap, index: u32) -> Target {
    map.target(Role {
        kind: RoleKind::Oss,
        index,
    })
    .expect("OST in the map")
    .clone()
}

#[test]
fn a_full_ost_answers_enospc_and_goes_on_serving() {
    let Some(fs) = mount("serve-enospc-fs", "loop") else {
        return;
    };
    let Some(servers) = two_osts(PROVIDER, "serve-enospc", Some(&fs.mnt.join("ost"))) else {
        return;
    };
    let (addr, map) = (&servers.addr, &servers.map);
    let (small, big) = (route(map, 0), route(map, 1));
    let before = ost(
        &wait_map(addr, "OST 0's free space", |m| ost(m, 0).free > 0),
        0,
    );
    assert!(before.capacity < 100 << 20, "OST 0 is the loop file system");
    assert!(
        before.free > 32 << 20,
        "an empty 64 MiB file system: {before:?}"
    );
    let mut c = client(PROVIDER);
    let opt = IoOptions::default();
    // Fill the small OST in 4 MiB writes (two objects, both cores) until one fails.
    let chunk = pattern(1, 4 << 20);
    let mut written = Vec::new();
    let err = loop {
        let (object, at) = (
            1 + written.len() as u64 % 2,
            (written.len() as u64 / 2) << 22,
        );
        match c.obj_write(&small, object, at, &chunk, opt) {
            Ok(_) => written.push((object, at)),
            Err(e) => break e,
        }
        assert!(written.len() < 64, "64 MiB file system never filled");
    };
    assert!(
        matches!(err, ClientError::Status(libc::ENOSPC)),
        "the write that does not fit: {err}"
    );
    assert!(written.len() >= 8, "only {} writes fitted", written.len());
    // The same OST serves what fits, and everything acknowledged reads back.
    let tail = pattern(2, 5000);
    c.obj_write(&small, 9, 7, &tail, opt).unwrap();
    let mut back = vec![0u8; 5000];
    assert_eq!(c.obj_read(&small, 9, 7, &mut back, opt).unwrap(), 5000);
    assert!(back == tail);
    let mut back = vec![0u8; chunk.len()];
    for &(object, at) in &written {
        c.obj_read(&small, object, at, &mut back, opt).unwrap();
        assert!(back == chunk, "object {object} at {at}");
    }
    // The other OST is untouched by it.
    c.obj_write(&big, 1, 0, &chunk, opt).unwrap();
    // ENOSPC is not a failure of the target: it stays up, and the next heartbeats carry
    // the free space that is left.
    let map = wait_map(addr, "OST 0's free space shrunk", |m| {
        ost(m, 0).free < before.free / 4
    });
    assert_eq!(ost(&map, 0).state, TargetState::Up);
    assert_eq!(ost(&map, 1).state, TargetState::Up);
    drop(c);
    drop(servers);
    drop(fs);
}

#[test]
fn a_failing_file_system_degrades_its_ost_in_the_map() {
    let Some(fs) = mount("serve-fserror-fs", "loop,errors=remount-ro") else {
        return;
    };
    let Some(servers) = two_osts(PROVIDER, "serve-fserror", Some(&fs.mnt.join("ost"))) else {
        return;
    };
    let (addr, map) = (&servers.addr, &servers.map);
    let (bad, good) = (route(map, 0), route(map, 1));
    let mut c = client(PROVIDER);
    let opt = IoOptions::default();
    let data = pattern(3, 10_000);
    c.obj_write(&bad, 1, 100, &data, opt).unwrap();
    c.obj_sync(&bad, 1).unwrap();
    if let Err(e) = fs.trigger_fs_error() {
        nacre_fabric::testing::skip(&format!("serve-fserror: cannot trigger an ext4 error: {e}"));
        return;
    }
    let err = c.obj_write(&bad, 1, 0, &pattern(4, 5000), opt).unwrap_err();
    assert!(
        matches!(err, ClientError::Status(libc::EROFS)),
        "a write to the failed file system: {err}"
    );
    let map = wait_map(addr, "OST 0 degraded", |m| {
        ost(m, 0).state == TargetState::Degraded
    });
    assert_eq!(ost(&map, 1).state, TargetState::Up, "the other OST");
    // What is on the device is still served, and the healthy OST takes writes.
    let mut back = vec![0u8; data.len()];
    c.obj_read(&bad, 1, 100, &mut back, opt).unwrap();
    assert!(back == data);
    c.obj_write(&good, 1, 0, &data, opt).unwrap();
    drop(c);
    drop(servers);
    drop(fs);
}
