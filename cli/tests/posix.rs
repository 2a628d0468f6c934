//! POSIX conformance of the mount against local ext4: the same cases
//! (tests/posix/conformance.py: open, creat, link, unlink, rename, mkdir, rmdir, chmod,
//! chown, truncate, write, utimensat, symlink, mknod, access; as root and as another
//! uid; a sticky directory, setuid and setgid files) run on a nacre mount and on a
//! directory of the ext4 disk the tests run from, in the same test, and must give the
//! same errno and leave the same state, case by case.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::{tmp, Mount, Up};
use nacre_fabric::testing::skip;

/// The cases, run as root over `dir`: one line per case.
fn run_cases(dir: &Path) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/posix/conformance.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(dir)
        .output()
        .expect("python3 (scripts/deps installs it)");
    assert!(
        out.status.success(),
        "conformance.py on {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The file system type of `dir` as `stat -f` names it (ext4 shows as "ext2/ext3").
fn fs_type(dir: &Path) -> String {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .expect("stat");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether the running kernel is at least MAJOR.MINOR.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

fn can_run() -> bool {
    // /proc/self belongs to the effective uid.
    if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
        skip("posix conformance: needs root (fixtures owned by several users)");
        return false;
    }
    if !Path::new("/dev/fuse").exists() {
        skip("posix conformance: no /dev/fuse");
        return false;
    }
    common::have_tools("posix conformance", &["python3", "fusermount3"])
        && common::have("tcp;ofi_rxm", "posix conformance")
}

#[test]
fn the_mount_answers_as_ext4_does() {
    if !can_run() {
        return;
    }
    let work = tmp("posix");
    let local = work.join("ext4");
    std::fs::create_dir_all(&local).unwrap();
    let kind = fs_type(&local);
    if kind != "ext2/ext3" {
        skip(&format!(
            "posix conformance: {} is on {kind}, not ext4",
            local.display()
        ));
        return;
    }
    let up = Up::start(&work.join("data"), "tcp;ofi_rxm", &[]);
    let m = Mount::new(&up, work.join("m"));
    let ours = run_cases(&m.dir.join("c"));
    let theirs = run_cases(&local);
    assert_eq!(ours.len(), theirs.len(), "the same cases ran on both");
    assert!(ours.len() >= 300, "only {} cases", ours.len());
    let differ: Vec<String> = ours
        .iter()
        .zip(&theirs)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("  nacre: {a}\n  ext4:  {b}"))
        .collect();
    println!("{} cases, {} differ from ext4", ours.len(), differ.len());
    assert!(
        differ.is_empty(),
        "{} of {} cases differ from ext4:\n{}",
        differ.len(),
        ours.len(),
        differ.join("\n")
    );
    drop(m);
    up.stop();
}

/// Shared and private mmap on the mount, coherent with read(2) and write(2) through the
/// same mount and, after msync and close, read through another; SQLite in WAL mode
/// (which maps its shared-memory index) writing, reading from a second connection, and
/// read through the other mount (tests/posix/mmap_sqlite.py; skipped, said, on a kernel
/// before 6.6); negative entries cached for the attribute timeout and never hiding this
/// mount's own creates, and listings with attributes (tests/posix/entries.py).
#[test]
fn shared_mmap_sqlite_wal_and_negative_entries_on_two_mounts() {
    if !can_run() {
        return;
    }
    let work = tmp("posix-mmap");
    let up = Up::start(&work.join("data"), "tcp;ofi_rxm", &[]);
    let (m1, m2) = (
        Mount::new(&up, work.join("m1")),
        Mount::new(&up, work.join("m2")),
    );
    let mut scripts = vec!["entries.py"];
    match kernel_at_least(6, 6) {
        true => scripts.push("mmap_sqlite.py"),
        false => skip("mmap on the mount: the kernel predates FUSE_DIRECT_IO_ALLOW_MMAP (6.6)"),
    }
    for name in scripts {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/posix")
            .join(name);
        let out = Command::new("python3")
            .arg(&script)
            .arg(&m1.dir)
            .arg(&m2.dir)
            .output()
            .expect("python3");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop((m1, m2));
    up.stop();
}
