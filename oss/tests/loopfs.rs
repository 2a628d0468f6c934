//! Failures of the file system under a target, on a small ext4 on a loop device (needs
//! root, else SKIP): a full file system fails the write that does not fit with ENOSPC
//! and the target goes on serving others; a file system error (ext4's own error path,
//! triggered through sysfs) marks the target degraded.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use nacre_engine::Backend;
use nacre_oss::{Errno, TargetState};

/// The loop mount; unmounted and removed when dropped, also when the test fails.
struct LoopFs {
    base: PathBuf,
    mnt: PathBuf,
}

impl LoopFs {
    fn make(base: &Path, options: &str) -> Result<LoopFs, String> {
        std::fs::create_dir_all(base).map_err(|e| e.to_string())?;
        let img = base.join("img");
        let mnt = base.join("mnt");
        std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
        let run = |cmd: &str, args: &[&str]| -> Result<(), String> {
            let out = Command::new(cmd)
                .args(args)
                .output()
                .map_err(|e| format!("{cmd}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd} {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        let img_s = img.to_str().unwrap();
        run("truncate", &["-s", "64M", img_s])?;
        // No blocks reserved for root: what statfs calls available is all there is.
        run("mkfs.ext4", &["-q", "-F", "-m", "0", img_s])?;
        run("mount", &["-o", options, img_s, mnt.to_str().unwrap()])?;
        Ok(LoopFs {
            base: base.to_path_buf(),
            mnt,
        })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // The kernel may drop an io_uring's file references a moment after the ring.
        let mut ok = false;
        for _ in 0..20 {
            ok = Command::new("umount")
                .arg(&self.mnt)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// The mounted file system, or None after printing why the test skips.
fn mount(name: &str, options: &str) -> Option<LoopFs> {
    if !rustix::process::geteuid().is_root() {
        nacre_fabric::testing::skip(&format!("oss {name}: needs root to mount a small ext4"));
        return None;
    }
    let base = target_dir(name);
    match LoopFs::make(&base, options) {
        Ok(fs) => Some(fs),
        Err(e) => {
            nacre_fabric::testing::skip(&format!("oss {name}: cannot mount a loop ext4: {e}"));
            let _ = std::fs::remove_dir_all(&base);
            None
        }
    }
}

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
        TargetState::Healthy,
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
    let dev = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE"])
        .arg(&fs.mnt)
        .output()
        .unwrap();
    let dev = String::from_utf8_lossy(&dev.stdout).trim().to_string();
    let trigger = format!(
        "/sys/fs/ext4/{}/trigger_fs_error",
        dev.trim_start_matches("/dev/")
    );
    if std::fs::write(&trigger, "nacre test").is_err() {
        nacre_fabric::testing::skip(&format!("oss fserror: cannot write {trigger}"));
        return;
    }
    let r = h.write(1, 0, &pattern(4, 5000));
    assert_eq!(r, Err(Errno::EROFS));
    assert_eq!(h.store.state(), TargetState::Degraded(Errno::EROFS));
    // What is on the device is still served.
    assert!(h.read(1, 100, 10_000).unwrap() == data);
    h.assert_pool_full();
    drop(h);
    drop(fs);
}
