//! The interception library (libnacre_preload.so) through `nacre run -- CMD`, under
//! unmodified programs: coreutils (cp, cat, ls, stat, mv, rm), bash, git, a C program
//! (tests/preload/io.c: every call it serves, and what it hands to the kernel: mmap,
//! fchmod, a forked child) and a Python script (tests/preload/posix_io.py: file
//! objects, scandir, walk, a spawned child writing to an inherited descriptor, fork,
//! mmap, shutil). Each run's report (NACRE_PRELOAD_REPORT) must show the calls served
//! in the process, and what they wrote reads back the same through the mount.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::{nacre_bin, tmp, Mount, Up};
use nacre_fabric::testing::skip;

fn can_run() -> bool {
    if !Path::new("/dev/fuse").exists() {
        skip("preload: no /dev/fuse");
        return false;
    }
    common::have_tools("preload", &["python3", "fusermount3", "cc"])
        && common::have("tcp;ofi_rxm", "preload")
}

/// `nacre run -- args...` against `up`, with the report asked for.
fn run(up: &Up, key: &str, args: &[&str]) -> Output {
    Command::new(nacre_bin())
        .arg("run")
        .arg("--")
        .args(args)
        .env("NACRE_MGS", &up.mgs)
        .env("NACRE_KEY", key)
        .env("NACRE_PRELOAD_REPORT", "1")
        .output()
        .expect("nacre run")
}

/// The output of a run that must succeed.
fn ok(up: &Up, args: &[&str]) -> (Vec<u8>, Report) {
    ok_with_key(up, &up.key, args)
}

fn ok_with_key(up: &Up, key: &str, args: &[&str]) -> (Vec<u8>, Report) {
    let out = run(up, key, args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "nacre run -- {args:?}: {err}");
    (out.stdout, Report::of(&err))
}

/// What the processes of one run served, added up from their report lines
/// (`nacre preload: pid=N opens=N reads=N ...`).
#[derive(Default, Debug)]
struct Report {
    opens: u64,
    reads: u64,
    writes: u64,
    stats: u64,
    dirs: u64,
    names: u64,
}

impl Report {
    fn of(stderr: &str) -> Report {
        let mut r = Report::default();
        for line in stderr
            .lines()
            .filter(|l| l.starts_with("nacre preload: pid="))
        {
            for (k, v) in line.split_whitespace().filter_map(|w| w.split_once('=')) {
                let v: u64 = v.parse().unwrap_or(0);
                match k {
                    "opens" => r.opens += v,
                    "reads" => r.reads += v,
                    "writes" => r.writes += v,
                    "stats" => r.stats += v,
                    "dirs" => r.dirs += v,
                    "names" => r.names += v,
                    _ => {}
                }
            }
        }
        r
    }
}

#[test]
fn coreutils_a_c_program_and_python_through_the_interception_library() {
    if !can_run() {
        return;
    }
    let work = tmp("preload");
    let up = Up::start(&work.join("data"), "tcp;ofi_rxm", &[]);
    let m = Mount::new(&up, work.join("m"));
    let dir = m.dir.join("run");
    std::fs::create_dir_all(&dir).unwrap();
    let at = |name: &str| dir.join(name).to_str().unwrap().to_string();

    // coreutils: cp in, cat, ls, stat, cp within, mv, rm.
    let local = work.join("local.bin");
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let (_, r) = ok(&up, &["cp", local.to_str().unwrap(), &at("x")]);
    assert!(r.opens >= 1 && r.writes >= 1, "cp in: {r:?}");
    assert_eq!(
        std::fs::read(at("x")).unwrap(),
        data,
        "cp in, read through the mount"
    );
    let (out, r) = ok(&up, &["cat", &at("x")]);
    assert!(out == data && r.reads >= 1, "cat: {r:?}");
    // libfabric is loaded by a process's first call on a nacre path, not by the library:
    // a process that touches none never pays for it (docs/fabric.md).
    let has_fabric = |maps: &[u8]| String::from_utf8_lossy(maps).contains("libfabric.so");
    let (maps, _) = ok(&up, &["cat", "/proc/self/maps"]);
    assert!(
        !has_fabric(&maps),
        "libfabric loaded by a process off nacre"
    );
    let (out, _) = ok(&up, &["cat", &at("x"), "/proc/self/maps"]);
    assert!(
        has_fabric(&out[data.len()..]),
        "libfabric not loaded after a nacre read"
    );
    let (out, r) = ok(&up, &["stat", "-c", "%s %F %a", &at("x")]);
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        "3145728 regular file 644"
    );
    assert!(r.stats >= 1, "stat: {r:?}");
    let (_, r) = ok(&up, &["cp", &at("x"), &at("y")]);
    assert!(r.reads >= 1 && r.writes >= 1, "cp within: {r:?}");
    assert_eq!(std::fs::read(at("y")).unwrap(), data, "cp within");
    let (_, r) = ok(&up, &["mv", &at("y"), &at("z")]);
    assert!(r.names >= 1, "mv: {r:?}");
    let (out, r) = ok(&up, &["ls", "-l", dir.to_str().unwrap()]);
    let listing = String::from_utf8_lossy(&out).into_owned();
    let lines: Vec<&str> = listing.lines().filter(|l| l.contains("3145728")).collect();
    assert_eq!(lines.len(), 2, "ls -l: {listing}");
    assert!(
        listing.contains(" x\n") && listing.contains(" z\n"),
        "ls -l: {listing}"
    );
    assert!(r.dirs >= 1, "ls: {r:?}");
    let (_, r) = ok(&up, &["rm", &at("z")]);
    assert!(r.names >= 1, "rm: {r:?}");
    // What the kernel has seen of a name it may keep for the mount's attribute
    // timeout (1 s), as for a change made by another client (docs/mount.md).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(!Path::new(&at("z")).exists(), "rm, seen through the mount");

    // A shell: redirections onto descriptors it picks (3-9, which the library's own
    // must not sit on), builtins writing through stdio to a file of ours, a pipeline,
    // and a file left open at exit (closed, its size told, by the library).
    let script = format!(
        "cd {}\n\
         exec 3>out.txt; echo one >&3; echo two | cat >&3; exec 3>&-\n\
         exec 4>>out.txt 5<out.txt; echo three >&4; read -u 5 first; exec 4>&- 5<&-\n\
         echo \"first=$first\"; cat out.txt; echo builtin > b.txt; cat b.txt\n\
         exec 7>left-open; echo kept >&7",
        dir.display()
    );
    let (out, r) = ok(&up, &["bash", "-c", &script]);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "first=one\none\ntwo\nthree\nbuiltin\n",
        "bash: {r:?}"
    );
    assert!(r.opens >= 4, "bash: {r:?}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(std::fs::read(at("left-open")).unwrap(), b"kept\n");

    // git: lock files, renames over config, mmap of objects and packs, temporary
    // files, fsck after a gc (where git is installed; scripts/deps does not need it).
    let git = Command::new("sh")
        .args(["-c", "command -v git"])
        .output()
        .is_ok_and(|o| o.status.success());
    match git {
        true => {
            let script = format!(
                "set -e; mkdir {0}; cd {0}; git init -q; git config user.email a@b\n\
                 git config user.name n; for i in 1 2 3 4 5; do echo $i > f$i; done\n\
                 git add .; git commit -qm one; echo x > f1; git commit -qam two\n\
                 git gc -q; git fsck >/dev/null; git log --oneline | wc -l",
                at("repo")
            );
            let (out, r) = ok(&up, &["bash", "-c", &script]);
            assert_eq!(String::from_utf8_lossy(&out).trim(), "2", "git: {r:?}");
        }
        false => skip("preload: git is not installed here; its run is skipped"),
    }

    // A C program.
    let io = work.join("io");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/preload/io.c");
    let cc = Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&io)
        .arg(&src)
        .output()
        .expect("cc");
    assert!(
        cc.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    std::fs::create_dir_all(at("c")).unwrap();
    let (out, r) = ok(&up, &[io.to_str().unwrap(), &at("c")]);
    assert_eq!(String::from_utf8_lossy(&out).trim(), "ok");
    assert!(
        r.opens >= 5 && r.reads >= 5 && r.writes >= 5 && r.dirs >= 1,
        "io.c: {r:?}"
    );

    // A Python script.
    std::fs::create_dir_all(at("py")).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/preload/posix_io.py");
    let (out, r) = ok(&up, &["python3", script.to_str().unwrap(), &at("py")]);
    assert_eq!(String::from_utf8_lossy(&out).trim(), "ok");
    assert!(
        r.opens >= 10 && r.names >= 5 && r.dirs >= 1,
        "posix_io.py: {r:?}"
    );

    // A write by another uid drops setuid, and setgid with group execute, as Linux does
    // (the library asks the MDS before its first write). That user gets a copy of the
    // key of its own (a key must be readable by its owner only).
    let f = at("suid");
    std::fs::write(&f, b"").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o6777)).unwrap();
    let key = work.join("user.key");
    std::fs::copy(&up.key, &key).unwrap();
    std::os::unix::fs::chown(&key, Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let write_as_user = "import os, sys\n\
        os.setgid(1000); os.setuid(1000)\n\
        fd = os.open(sys.argv[1], os.O_WRONLY); os.write(fd, b'x'); os.close(fd)";
    let (_, r) = ok_with_key(
        &up,
        key.to_str().unwrap(),
        &["python3", "-c", write_as_user, &f],
    );
    assert!(r.writes >= 1, "write as uid 1000: {r:?}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o777, "after a write by uid 1000: {mode:o}");

    drop(m);
    up.stop();
}

/// Without a reachable MGS the library says so once and every call goes through the
/// mount: the program still works. Without a mount, `nacre run` refuses clearly.
#[test]
fn an_unreachable_mgs_hands_every_call_to_the_mount() {
    if !can_run() {
        return;
    }
    let work = tmp("preload-nomgs");
    let up = Up::start(&work.join("data"), "tcp;ofi_rxm", &[]);
    let m = Mount::new(&up, work.join("m"));
    std::fs::write(m.dir.join("f"), b"through the mount").unwrap();
    let out = Command::new(nacre_bin())
        .args(["--mgs", "127.0.0.1:1", "run", "--", "cat"])
        .arg(m.dir.join("f"))
        .env("NACRE_KEY", &up.key)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(out.stdout, b"through the mount");
    assert!(err.contains("calls go through the mount"), "{err}");
    let out = Command::new(nacre_bin())
        .args(["--mgs", &up.mgs, "run", "--mount"])
        .arg(&work)
        .args(["--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a nacre mount"),
        "{err}"
    );
    drop(m);
    up.stop();
}
