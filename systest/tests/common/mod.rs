//! Support for the OSS system tests: servers as processes (`process`) and small file
//! systems on loop devices (`loopfs`, shared with nacre-oss's own tests).
#![allow(dead_code)]

#[path = "../../../oss/tests/common/loopfs.rs"]
pub mod loopfs;
pub mod process;

use std::path::{Path, PathBuf};

/// A fresh directory for a target under the test's temporary directory (ext4 here).
pub fn target_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("systest-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    d
}
