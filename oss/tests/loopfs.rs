//! Failures of the file system under a target, on a small ext4 on a loop device (needs
//! root, else SKIP): a full file system fails the write that does not fit with ENOSPC
//! and the target goes on serving others; a file system error (ext4's own error path,
//! triggered through sysfs) marks the target degraded.

mod common;

use common::loopfs::mount;
use common::*;
use nacre_engine::Backend;
use nacre_oss::{Errno, TargetHealth};

#[test]
fn enospc_fails_that_write_and_the_rest_goes_on() {
    let Some(fs) = mount("enospc", "loop") else {
        return;
    };
    let dir = fs.mnt.join("ost");
    format_target(&dir);
    let mut h = Harness::open(&dir, Backend::IoUring, 16);
    // Fill all but 2 MiB, in 4 MiB writes.
    let avail = h.store.statfs().unwrap().bytes_avail;
    let fill = avail - (2 << 20);
    let chunk = pattern(1, 4 << 20);
    let mut at = 0u64;
    while at < fill {
        let n = ((fill - at) as usize).min(chunk.len());
        assert_eq!(h.write(1, at, &chunk[..n]), Ok(n), "filling at {at}");
        at += n as u64;
    }
    // 4 MiB do not fit: that write fails, with ENOSPC.
    assert_eq!(h.write(3, 0, &chunk), Err(Errno::ENOSPC));
    assert_eq!(
        h.store.state(),
        TargetHealth::Healthy,
        "ENOSPC is not a device failure"
    );
    // A small write to another object still works, and reads back.
    let small = pattern(2, 5000);
    assert_eq!(h.write(2, 7, &small), Ok(5000));
    assert!(h.read(2, 7, 5000).unwrap() == small);
    assert!(h.read(1, fill - 10, 10).unwrap() == chunk[(fill % (4 << 20)) as usize - 10..][..10]);
    h.assert_pool_full();
    drop(h);
    drop(fs);
}

#[test]
fn a_file_system_error_degrades_the_target() {
    let Some(fs) = mount("fserror", "loop,errors=remount-ro") else {
        return;
    };
    let dir = fs.mnt.join("ost");
    format_target(&dir);
    let mut h = Harness::open(&dir, Backend::IoUring, 16);
    let data = pattern(3, 10_000);
    assert_eq!(h.write(1, 100, &data), Ok(10_000));
    if let Err(e) = fs.trigger_fs_error() {
        nacre_fabric::testing::skip(&format!("oss fserror: cannot trigger an ext4 error: {e}"));
        return;
    }
    let r = h.write(1, 0, &pattern(4, 5000));
    assert_eq!(r, Err(Errno::EROFS));
    assert_eq!(h.store.state(), TargetHealth::Degraded(Errno::EROFS));
    // What is on the device is still served.
    assert!(h.read(1, 100, 10_000).unwrap() == data);
    h.assert_pool_full();
    drop(h);
    drop(fs);
}
