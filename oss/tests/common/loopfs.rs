//! A small ext4 on a loop device (64 MiB, no blocks reserved), for the tests of a full
//! or failing file system under a target. Needs root: without it the test skips.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::target_dir;

/// The loop mount; unmounted and removed when dropped, also when the test fails.
pub struct LoopFs {
    base: PathBuf,
    pub mnt: PathBuf,
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

impl LoopFs {
    /// Makes ext4 take its error path (through sysfs), as a failing device would; with
    /// `errors=remount-ro` the file system turns read-only. Err: the path it could not
    /// write, for the test to skip with.
    pub fn trigger_fs_error(&self) -> Result<(), String> {
        let dev = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.mnt)
            .output()
            .map_err(|e| format!("findmnt: {e}"))?;
        let dev = String::from_utf8_lossy(&dev.stdout).trim().to_string();
        let trigger = format!(
            "/sys/fs/ext4/{}/trigger_fs_error",
            dev.trim_start_matches("/dev/")
        );
        std::fs::write(&trigger, "nacre test").map_err(|e| format!("{trigger}: {e}"))
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
pub fn mount(name: &str, options: &str) -> Option<LoopFs> {
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
