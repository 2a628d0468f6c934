//! Data repositories end to end, against a local directory (`file://`) and a real S3
//! server (`s3s-fs`, which `scripts/deps` installs) on loopback: link with import,
//! lazy loads (a range, then the whole file), writes to a released file, export with
//! POSIX metadata, release freeing the OSTs' objects, conflicts, and the errors a user
//! must see at once.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use nacre_client::{Client, OpenOptions};
use nacre_fabric::testing::pattern;
use nacre_repo::testing::S3Server;
use nacre_repo::{Access, PosixMeta, Repository};

/// 2.5 chunks of the MDS's loads: a read in the middle waits only for its own.
const BIG: usize = 20 * 1024 * 1024 + 7;

/// The state `nacre repo status` prints for `path`.
fn state(up: &Up, path: &str) -> String {
    let out = up.ok(&["repo", "status", path]);
    let line = out
        .lines()
        .find(|l| l.ends_with(path) || l.contains(&format!("{path}\t")))
        .unwrap_or_else(|| panic!("no status line for {path}: {out}"));
    line.split('\t').next().unwrap().to_string()
}

/// Waits until `nacre repo list` shows `imported=N` and no import running.
fn wait_imported(up: &Up, n: u64) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let out = up.ok(&["repo", "list"]);
        let running = out
            .lines()
            .any(|l| l.starts_with("task import") && l.ends_with("running"));
        if out.contains(&format!("imported={n} ")) && !running {
            return;
        }
        assert!(Instant::now() < until, "import not over after 60 s: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read_all(c: &Client, path: &str) -> Vec<u8> {
    let f = c.open(path, &OpenOptions::read()).unwrap();
    let size = f.stat().unwrap().size as usize;
    let mut buf = vec![0; size];
    let mut at = 0;
    while at < size {
        let n = f.read_at(&mut buf[at..], at as u64).unwrap();
        assert!(n > 0, "{path}: short read at {at} of {size}");
        at += n;
    }
    f.close().unwrap();
    buf
}

/// What the repositories hold before the link.
fn seed(repo: &Repository) {
    let meta = |mode: u32, uid: u32| PosixMeta {
        mode: Some(libc::S_IFREG | mode),
        uid: Some(uid),
        gid: Some(100),
        mtime_ns: Some(1_500_000_000_000_000_000),
    };
    let put = |key: &str, data: Vec<u8>, m: PosixMeta| {
        repo.write(
            key,
            data.len() as u64,
            |at, buf| {
                let at = at as usize;
                buf.copy_from_slice(&data[at..at + buf.len()]);
                Ok(())
            },
            &m,
        )
        .unwrap();
    };
    put("a.txt", b"hello repository\n".to_vec(), meta(0o600, 1000));
    put("sub/big.bin", pattern(7, BIG), meta(0o644, 0));
    put("deep/x/y.txt", b"y".to_vec(), meta(0o640, 0));
}

/// The scenario both backends go through; `direct` edits the repository behind the
/// file system's back.
fn scenario(up: &Up, data: &Path, url: &str, link_extra: &[&str], direct: &Repository) {
    let c = Client::connect(&up.mgs, client_config(&up.mgs)).unwrap();
    up.ok(&["mkdir", "/data"]);
    let before = objects(data);
    let mut link = vec!["repo", "link", "/data", url, "--import-metadata"];
    link.extend_from_slice(link_extra);
    assert!(up.ok(&link).contains("linked /data"));
    wait_imported(up, 3);

    // Imported: listed with the objects' sizes and POSIX metadata, released, and
    // nothing on the OSTs.
    let a = c.stat("/data/a.txt").unwrap();
    assert_eq!(
        (a.size, a.mode & 0o7777, a.uid, a.gid),
        (17, 0o600, 1000, 100)
    );
    assert_eq!(a.mtime, 1_500_000_000_000_000_000);
    assert_eq!(c.stat("/data/sub/big.bin").unwrap().size, BIG as u64);
    assert_eq!(c.stat("/data/deep/x/y.txt").unwrap().size, 1);
    assert_eq!(state(up, "/data/sub/big.bin"), "released");
    assert_eq!(objects(data), before, "an import writes no data");

    // Lazy load: one byte in the middle, then all of it.
    let want = pattern(7, BIG);
    let f = c.open("/data/sub/big.bin", &OpenOptions::read()).unwrap();
    let mut one = [0u8; 1];
    assert_eq!(f.read_at(&mut one, 12 << 20).unwrap(), 1);
    assert_eq!(one[0], want[12 << 20]);
    f.close().unwrap();
    assert_eq!(read_all(&c, "/data/sub/big.bin"), want);
    assert_eq!(state(up, "/data/sub/big.bin"), "cached");
    assert!(objects(data) > before);

    // A write to a released file loads it first; the rest of the file is kept.
    let f = c
        .open("/data/a.txt", &OpenOptions::read().flags(libc::O_RDWR))
        .unwrap();
    f.write_at(b"J", 0).unwrap();
    f.close().unwrap();
    assert_eq!(read_all(&c, "/data/a.txt"), b"Jello repository\n");
    assert_eq!(state(up, "/data/a.txt"), "dirty");
    // A file made here is dirty (new) until exported.
    let new = dir_of(data).join("new.bin");
    std::fs::write(&new, pattern(9, 3 << 20)).unwrap();
    up.ok(&["cp", new.to_str().unwrap(), "nacre:/data/sub/new.bin"]);
    assert_eq!(state(up, "/data/sub/new.bin"), "dirty");
    // Not exported: not released.
    let err = up.fails(&["repo", "release", "/data/a.txt"]);
    assert!(err.contains("export it first"), "{err}");

    // Export writes both back, with their metadata.
    up.ok(&["repo", "export", "/data"]);
    assert_eq!(state(up, "/data/a.txt"), "exported");
    assert_eq!(state(up, "/data/sub/new.bin"), "exported");
    let got = direct.read("a.txt", 0..17, "").unwrap();
    assert_eq!(&got[..], b"Jello repository\n");
    let o = direct.head("sub/new.bin").unwrap().unwrap();
    assert_eq!(o.size, 3 << 20);
    assert_eq!(o.meta.mode.map(|m| m & 0o7777), Some(0o644));
    assert_eq!(o.meta.uid, Some(0));

    // Release frees the objects; the next read loads them again.
    let loaded = objects(data);
    let freed = objects_of(&c, "/data/sub/big.bin") + objects_of(&c, "/data/sub/new.bin");
    up.ok(&["repo", "release", "/data/sub/big.bin", "/data/sub/new.bin"]);
    assert_eq!(state(up, "/data/sub/big.bin"), "released");
    wait_for_objects(data, loaded - freed, "after release");
    assert_eq!(read_all(&c, "/data/sub/new.bin"), pattern(9, 3 << 20));
    assert_eq!(read_all(&c, "/data/sub/big.bin"), want);

    // Changed in the repository while dirty here: a conflict, nothing overwritten.
    up.ok(&["cp", new.to_str().unwrap(), "nacre:/data/deep/x/y.txt"]);
    direct
        .write(
            "deep/x/y.txt",
            2,
            |_, b| {
                b.copy_from_slice(b"zz");
                Ok(())
            },
            &PosixMeta::default(),
        )
        .unwrap();
    let err = up.fails(&["repo", "export", "/data/deep/x/y.txt"]);
    assert!(err.contains("conflict"), "{err}");
    assert!(up
        .ok(&["repo", "status", "/data/deep"])
        .contains("conflict"));
    assert_eq!(&direct.read("deep/x/y.txt", 0..2, "").unwrap()[..], b"zz");

    // Gone from the repository: a released file's read fails, it does not hang.
    up.ok(&["repo", "release", "/data/a.txt"]);
    direct.delete("a.txt").unwrap();
    let started = Instant::now();
    let f = c.open("/data/a.txt", &OpenOptions::read()).unwrap();
    let e = f.read_at(&mut [0u8; 4], 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(started.elapsed() < Duration::from_secs(60));
    f.close().unwrap();
    // ... and cached files are unaffected.
    assert_eq!(read_all(&c, "/data/sub/new.bin"), pattern(9, 3 << 20));

    // Directories do not move within a linked tree (mv copies them).
    let e = c.rename("/data/deep", "/data/deeper").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EXDEV));
    // Bad links say why in one line.
    up.ok(&["mkdir", "/other"]);
    let err = up.fails(&["repo", "link", "/other", "http://x"]);
    assert!(err.contains("not a repository URL"), "{err}");
    let mut again = vec!["repo", "link", "/data/sub", url];
    again.extend_from_slice(link_extra);
    let err = up.fails(&again);
    assert!(
        err.contains("not empty") || err.contains("linked already"),
        "{err}"
    );
    up.ok(&["repo", "unlink", "/data"]);
    assert!(up.ok(&["repo", "list"]).contains("no associations"));
}

fn dir_of(data: &Path) -> std::path::PathBuf {
    data.parent().unwrap().to_path_buf()
}

/// How many objects a file's layout names.
fn objects_of(c: &Client, path: &str) -> usize {
    c.get_layout(path).map_or(0, |l| match l {
        nacre_client::Layout::File(f) => f.objects().count(),
        _ => 0,
    })
}

#[test]
fn a_local_directory_over_tcp() {
    if !have("tcp", "data repositories") {
        return;
    }
    let dir = tmp("repo-file");
    let repo_dir = dir.join("repo");
    let direct = Repository::open(
        &format!("file://{}", repo_dir.display()),
        &Access::default(),
    )
    .unwrap();
    seed(&direct);
    let up = Up::start(&dir.join("data"), "tcp", &[]);
    let url = format!("file://{}", repo_dir.display());
    scenario(&up, &dir.join("data"), &url, &[], &direct);
    up.stop();
}

#[test]
fn an_s3_server_over_shm() {
    if !have("shm", "data repositories") {
        return;
    }
    let dir = tmp("repo-s3");
    std::fs::create_dir_all(dir.join("s3/bucket")).unwrap();
    let mut s3 = match S3Server::start(&dir.join("s3")) {
        Ok(s) => s,
        Err(why) => return nacre_fabric::testing::skip(&format!("S3 repositories: {why}")),
    };
    let direct = Repository::open("s3://bucket/fsx", &s3.access(S3Server::SECRET)).unwrap();
    seed(&direct);
    let up = Up::start(&dir.join("data"), "shm", &[]);
    let flags = [
        "--endpoint",
        s3.endpoint.as_str(),
        "--region",
        "us-east-1",
        "--access-key-id",
        nacre_repo::testing::ACCESS_KEY_ID,
        "--secret-access-key",
        S3Server::SECRET,
    ];
    // The errors a link must report at once.
    up.ok(&["mkdir", "/bad"]);
    let mut wrong = vec!["repo", "link", "/bad", "s3://nobucket/p"];
    wrong.extend_from_slice(&flags);
    let err = up.fails(&wrong);
    assert!(err.contains("no such bucket"), "{err}");
    let mut wrong = vec!["repo", "link", "/bad", "s3://bucket/p"];
    wrong.extend_from_slice(&flags[..6]);
    wrong.extend_from_slice(&["--secret-access-key", "wrong"]);
    let err = up.fails(&wrong);
    assert!(err.contains("refused the credentials"), "{err}");

    scenario(&up, &dir.join("data"), "s3://bucket/fsx", &flags, &direct);

    // The repository gone: a released file's read fails within the bounded retries.
    let mut link = vec![
        "repo",
        "link",
        "/bad",
        "s3://bucket/fsx",
        "--import-metadata",
    ];
    link.extend_from_slice(&flags);
    up.ok(&link);
    wait_imported(&up, 3);
    s3.stop();
    let started = Instant::now();
    let out = up.nacre(&[
        "cp",
        "nacre:/bad/sub/new.bin",
        dir.join("out").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "{:?}",
        started.elapsed()
    );
    let mut err = String::new();
    (&out.stderr[..]).read_to_string(&mut err).unwrap();
    assert!(err.contains("Input/output error"), "{err}");
    up.stop();
}

/// Waits up to 20 s for `f` to hold.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < until, "{what}: not after 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn automatic_import_and_export_keep_both_sides_in_step() {
    if !have("tcp", "data repositories") {
        return;
    }
    let dir = tmp("repo-auto");
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("in")).unwrap();
    std::fs::write(repo.join("in/first"), b"1").unwrap();
    let up = Up::start(&dir.join("data"), "tcp", &[]);
    let c = Client::connect(&up.mgs, client_config(&up.mgs)).unwrap();
    up.ok(&["mkdir", "/auto"]);
    let url = format!("file://{}", repo.display());
    up.ok(&[
        "repo",
        "link",
        "/auto",
        &url,
        "--import-metadata",
        "--auto-import",
        "new,changed,deleted",
        "--auto-export",
        "new,changed,deleted",
        "--interval",
        "1",
    ]);
    let list = up.ok(&["repo", "list"]);
    assert!(
        list.contains("import=new,changed,deleted export=new,changed,deleted interval=1s"),
        "{list}"
    );
    eventually("the first import", || c.stat("/auto/in/first").is_ok());

    // Repository -> file system: new, changed, deleted.
    std::fs::write(repo.join("in/second"), b"two").unwrap();
    eventually("a new object imported", || {
        c.stat("/auto/in/second").is_ok()
    });
    assert_eq!(read_all(&c, "/auto/in/second"), b"two");
    std::fs::write(repo.join("in/second"), b"second!").unwrap();
    eventually("a changed object imported", || {
        c.stat("/auto/in/second").is_ok_and(|a| a.size == 7)
    });
    assert_eq!(read_all(&c, "/auto/in/second"), b"second!");
    std::fs::remove_file(repo.join("in/first")).unwrap();
    eventually("a deleted object's file removed", || {
        c.stat("/auto/in/first")
            .is_err_and(|e| e.raw_os_error() == Some(libc::ENOENT))
    });

    // File system -> repository: new (at its last close), changed, renamed, deleted.
    let f = c.open("/auto/out.txt", &OpenOptions::create()).unwrap();
    f.write_at(b"made here", 0).unwrap();
    f.close().unwrap();
    eventually("a new file exported", || {
        std::fs::read(repo.join("out.txt")).is_ok_and(|d| d == b"made here")
    });
    let f = c
        .open("/auto/out.txt", &OpenOptions::read().flags(libc::O_RDWR))
        .unwrap();
    f.write_at(b"M", 0).unwrap();
    f.close().unwrap();
    eventually("a changed file exported", || {
        std::fs::read(repo.join("out.txt")).is_ok_and(|d| d == b"Made here")
    });
    c.rename("/auto/out.txt", "/auto/in/moved.txt").unwrap();
    eventually("a renamed file exported under its new name", || {
        std::fs::read(repo.join("in/moved.txt")).is_ok_and(|d| d == b"Made here")
            && !repo.join("out.txt").exists()
    });
    c.unlink("/auto/in/moved.txt").unwrap();
    eventually("a deleted file's object removed", || {
        !repo.join("in/moved.txt").exists()
    });
    // Its own export did not come back as an import of something new.
    assert!(c.stat("/auto/out.txt").is_err());
    up.stop();
}

/// `sh -c CMD`, which must succeed; its stdout.
fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn released_files_through_the_mount() {
    if !Path::new("/dev/fuse").exists() || !sh("command -v getfattr || true").contains("getfattr") {
        nacre_fabric::testing::skip("repositories through the mount: no /dev/fuse or getfattr");
        return;
    }
    if !have("tcp", "data repositories through the mount") {
        return;
    }
    let dir = tmp("repo-mount");
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("d")).unwrap();
    std::fs::write(repo.join("d/log.txt"), b"line 1\n").unwrap();
    std::fs::write(repo.join("big.bin"), pattern(3, 9 << 20)).unwrap();
    let up = Up::start(&dir.join("data"), "tcp", &[]);
    up.ok(&["mkdir", "/r"]);
    let url = format!("file://{}", repo.display());
    up.ok(&["repo", "link", "/r", &url, "--import-metadata"]);
    wait_imported(&up, 2);
    let m = Mount::new(&up, dir.join("mnt"));
    let hsm = |rel: &str| {
        sh(&format!(
            "getfattr --only-values -n nacre.hsm {}",
            m.path(rel)
        ))
    };
    assert_eq!(hsm("r/big.bin"), "released");
    sh(&format!(
        "cmp {} {}",
        repo.join("big.bin").display(),
        m.path("r/big.bin")
    ));
    assert_eq!(hsm("r/big.bin"), "cached");
    // An append to a released file loads it first: the old line stays.
    sh(&format!("echo 'line 2' >> {}", m.path("r/d/log.txt")));
    assert_eq!(
        sh(&format!("cat {}", m.path("r/d/log.txt"))),
        "line 1\nline 2\n"
    );
    assert_eq!(hsm("r/d/log.txt"), "dirty");
    // The attribute is read-only, and a file outside linked trees has none.
    let out = Command::new("setfattr")
        .args(["-n", "nacre.hsm", "-v", "cached", &m.path("r/d/log.txt")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    sh(&format!("echo x > {}", m.path("plain")));
    let out = Command::new("getfattr")
        .args(["-n", "nacre.hsm", &m.path("plain")])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such attribute"),
        "{out:?}"
    );
    drop(m);
    up.stop();
}

/// kill -9 of the MDS (which loads) while a released file loads: after `nacre up`
/// starts it again, the file is still released unless every chunk was in, and the
/// reader that waited gets the right bytes.
#[test]
fn a_load_cut_by_kill_9_finishes_after_the_restart() {
    if !have("tcp", "data repositories") {
        return;
    }
    const SIZE: usize = 96 << 20;
    let dir = tmp("repo-kill");
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let want = pattern(11, SIZE);
    std::fs::write(repo.join("big"), &want).unwrap();
    let mut up = Up::start(&dir.join("data"), "tcp", &[]);
    up.ok(&["mkdir", "/k"]);
    let url = format!("file://{}", repo.display());
    up.ok(&["repo", "link", "/k", &url, "--import-metadata"]);
    wait_imported(&up, 1);
    let c = Client::connect(&up.mgs, client_config(&up.mgs)).unwrap();
    // The first chunk's answer starts the whole file loading behind it.
    let f = c.open("/k/big", &OpenOptions::read()).unwrap();
    let mut one = [0u8; 1];
    assert_eq!(f.read_at(&mut one, 0).unwrap(), 1);
    nacre_fabric::testing::send_signal(up.pid_of("mds"), "KILL").expect("kill -9 of the MDS");
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; SIZE];
        let mut at = 0;
        while at < SIZE {
            let n = f.read_at(&mut buf[at..], at as u64).unwrap();
            assert!(n > 0);
            at += n;
        }
        buf
    });
    up.wait_for("mds restarted", Duration::from_secs(60));
    let got = reader.join().unwrap();
    assert!(got == want, "the bytes read after the restart differ");
    assert_eq!(read_all(&c, "/k/big"), want);
    assert_eq!(state(&up, "/k/big"), "cached");
    up.stop();
}

/// kill -9 of the MDS while it imports: the restarted MDS finishes the pass from the
/// last page it applied (or from the start, if the kill came first), and every
/// object is a file exactly once.
#[test]
fn an_import_cut_by_kill_9_finishes_after_the_restart() {
    if !have("tcp", "data repositories") {
        return;
    }
    const DIRS: usize = 20;
    const PER_DIR: usize = 1000;
    let dir = tmp("repo-import-kill");
    let repo = dir.join("repo");
    for d in 0..DIRS {
        let sub = repo.join(format!("d{d:02}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..PER_DIR {
            std::fs::write(sub.join(format!("f{f:04}")), b"").unwrap();
        }
    }
    let mut up = Up::start(&dir.join("data"), "tcp", &[]);
    up.ok(&["mkdir", "/i"]);
    let url = format!("file://{}", repo.display());
    up.ok(&["repo", "link", "/i", &url, "--import-metadata"]);
    nacre_fabric::testing::send_signal(up.pid_of("mds"), "KILL").expect("kill -9 of the MDS");
    up.wait_for("mds restarted", Duration::from_secs(60));
    let total = (DIRS * PER_DIR) as u64;
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let out = up.nacre(&["repo", "list"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let running = text
            .lines()
            .any(|l| l.starts_with("task import") && l.ends_with("running"));
        if text.contains(&format!("imported={total} ")) && !running {
            break;
        }
        assert!(
            Instant::now() < until,
            "import not over 120 s after the restart: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let c = Client::connect(&up.mgs, client_config(&up.mgs)).unwrap();
    let dirs = c.readdir("/i").unwrap();
    assert_eq!(
        dirs.iter().filter(|e| !e.name.starts_with(b".")).count(),
        DIRS
    );
    for d in 0..DIRS {
        let names = c.readdir(&format!("/i/d{d:02}")).unwrap();
        let files = names.iter().filter(|e| !e.name.starts_with(b".")).count();
        assert_eq!(files, PER_DIR, "d{d:02}");
    }
    up.stop();
}
