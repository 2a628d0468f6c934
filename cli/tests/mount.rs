//! `nacre mount` end to end, through the ordinary system calls and tools: a file
//! system from `nacre up` (real processes), mounted twice through FUSE, used with sh,
//! cp, cat, dd, cmp, mv, rm, getfattr/setfattr and fio; errors as a shell user sees
//! them, another uid refused, a killed mount's locks lapsing and the mount cleared by
//! `nacre umount`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{tmp, Mount, Up};
use nacre_fabric::testing::skip;

/// `sh -c SCRIPT` (as `user`, a uid, when given): (success, stdout, stderr).
fn sh_as(user: Option<u32>, script: &str) -> (bool, String, String) {
    let mut cmd = match user {
        None => Command::new("sh"),
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "sh",
            ]);
            c
        }
    };
    let out = cmd.args(["-c", script]).output().expect("sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn sh(script: &str) -> String {
    let (ok, out, err) = sh_as(None, script);
    assert!(ok, "sh -c {script:?} failed: {err}");
    out
}

/// Fails as a shell user sees it: exit status non-zero, `want` in stderr.
fn sh_fails(script: &str, want: &str) {
    let (ok, _, err) = sh_as(None, script);
    assert!(
        !ok && err.contains(want),
        "{script:?}: wanted {want:?}, got {err:?}"
    );
}

fn can_mount() -> bool {
    if !Path::new("/dev/fuse").exists() {
        skip("nacre mount: no /dev/fuse");
        return false;
    }
    let has = |t: &str| sh_as(None, &format!("command -v {t}")).0;
    for tool in ["fusermount3", "getfattr", "setpriv", "python3", "flock"] {
        if !has(tool) {
            skip(&format!(
                "nacre mount: {tool} missing (scripts/deps installs it)"
            ));
            return false;
        }
    }
    true
}

fn shell_round_trips(m: &Mount, other: &Mount, work: &Path) {
    let p = |r: &str| m.path(r);
    // Small files, directories, renames and removals with the usual tools.
    sh(&format!("echo hello > {0} && cat {0}", p("a.txt")));
    assert_eq!(sh(&format!("cat {}", other.path("a.txt"))), "hello\n");
    sh(&format!(
        "mkdir -p {} && mv {} {}",
        p("d/e"),
        p("a.txt"),
        p("d/e/b.txt")
    ));
    assert_eq!(sh(&format!("ls {}", p("d/e"))), "b.txt\n");
    sh(&format!(
        "cp {} {} && rm {}",
        p("d/e/b.txt"),
        p("c.txt"),
        p("d/e/b.txt")
    ));
    assert_eq!(sh(&format!("cat {}", other.path("c.txt"))), "hello\n");

    // A file larger than a stripe, striped over 4 OSTs by its directory's default.
    sh(&format!(
        "setfattr -n nacre.layout -v 'stripe_count=4 stripe_size=65536' {}",
        p("d")
    ));
    let src = work.join("src.bin");
    sh(&format!(
        "dd if=/dev/urandom of={} bs=1M count=3 status=none && dd if=/dev/urandom bs=1 count=777 status=none >> {0}",
        src.display()
    ));
    sh(&format!(
        "dd if={} of={} bs=256k status=none",
        src.display(),
        p("d/big")
    ));
    sh(&format!("cmp {} {}", src.display(), p("d/big")));
    sh(&format!("cmp {} {}", src.display(), other.path("d/big")));
    let layout = sh(&format!(
        "getfattr --only-values -n nacre.layout {}",
        p("d/big")
    ));
    assert!(
        layout.starts_with("stripe_count=4 stripe_size=65536"),
        "{layout}"
    );
    let size = sh(&format!("stat -c %s {}", other.path("d/big")));
    assert_eq!(size.trim(), (3 * 1024 * 1024 + 777).to_string());

    // Writes in one mount, read in the other at once (no page cache between).
    sh(&format!("printf abc > {}", p("shared")));
    sh(&format!(
        "printf XYZ | dd of={} bs=1 seek=1 conv=notrunc status=none",
        other.path("shared")
    ));
    assert_eq!(sh(&format!("cat {}", p("shared"))), "aXYZ");
    sh(&format!("truncate -s 2 {}", other.path("shared")));
    assert_eq!(sh(&format!("cat {}", p("shared"))), "aX");

    // Symlinks, hard links, chmod, times, statfs.
    sh(&format!(
        "ln -s c.txt {} && ln {} {}",
        p("sym"),
        p("c.txt"),
        p("hard")
    ));
    assert_eq!(sh(&format!("cat {}", p("sym"))), "hello\n");
    assert_eq!(sh(&format!("stat -c %h {}", p("c.txt"))).trim(), "2");
    sh(&format!(
        "chmod 600 {0} && touch -d '2001-02-03 04:05:06' {0}",
        p("c.txt")
    ));
    // The other mount may hold the old attributes for their time to live (1 s).
    std::thread::sleep(nacre_mount::ATTR_TTL + std::time::Duration::from_millis(200));
    assert_eq!(
        sh(&format!("stat -c %a {}", other.path("c.txt"))).trim(),
        "600"
    );
    assert!(sh(&format!("stat -c %y {}", p("c.txt"))).starts_with("2001-02-03 04:05:06"));
    let df = sh(&format!("df -P {}", m.dir.display()));
    assert!(df.contains("nacre:"), "{df}");

    // O_APPEND, chown, and a directory larger than one readdir batch, listed whole
    // while half of it goes.
    sh(&format!("echo a >> {0} && echo b >> {0}", p("log")));
    assert_eq!(sh(&format!("cat {}", other.path("log"))), "a\nb\n");
    sh(&format!("chown 65534:65534 {}", p("log")));
    assert_eq!(
        sh(&format!("stat -c %u:%g {}", p("log"))).trim(),
        "65534:65534"
    );
    let many = format!(
        "import os\n\
         d = {dir:?}\n\
         os.mkdir(d)\n\
         for i in range(700):\n    os.close(os.open(os.path.join(d, 'f%d' % i), os.O_CREAT | os.O_WRONLY))\n\
         seen = []\n\
         for i, e in enumerate(os.scandir(d)):\n    seen.append(e.name)\n    \
         if i == 100:\n        [os.unlink(os.path.join(d, 'f%d' % k)) for k in range(350, 700)]\n\
         assert len(seen) == len(set(seen)), 'an entry came twice'\n\
         assert set('f%d' % k for k in range(350)) <= set(seen), 'an entry was skipped'\n\
         print(len(os.listdir(d)))\n",
        dir = p("many")
    );
    assert_eq!(
        sh(&format!("python3 -c {}", shell_quote(&many))).trim(),
        "350"
    );
    assert_eq!(
        sh(&format!("ls {} | wc -l", other.path("many"))).trim(),
        "350"
    );
    sh(&format!("rm -r {} {}", p("many"), p("log")));

    // A directory's times and links after changes made through this mount (answered
    // from the mount's directory cache) are the MDS's, as the other mount reads them
    // (it never looked at the directory before); mknod makes regular files only.
    let times = "import errno, os, stat, sys, time\n\
         here, there = sys.argv[1], sys.argv[2]\n\
         os.mkdir(here)\n\
         before = os.stat(here)\n\
         time.sleep(0.01)\n\
         os.close(os.open(os.path.join(here, 'x'), os.O_CREAT | os.O_EXCL | os.O_WRONLY))\n\
         with open(os.path.join(here, 'w'), 'w') as f:\n    f.write('a first, longer text')\n\
         with open(os.path.join(here, 'w'), 'w') as f:\n    f.write('x')\n\
         os.truncate(os.path.join(here, 'w'), 8)\n\
         assert open(os.path.join(here, 'w'), 'rb').read() == b'x' + bytes(7), 'O_TRUNC left data'\n\
         os.mkdir(os.path.join(here, 'sub'))\n\
         os.mknod(os.path.join(here, 'n'), 0o640 | stat.S_IFREG)\n\
         a, b = os.stat(here), os.stat(there)\n\
         key = lambda s: (s.st_mtime_ns, s.st_ctime_ns, s.st_nlink)\n\
         assert key(a) == key(b), (key(a), key(b))\n\
         assert a.st_mtime_ns > before.st_mtime_ns and a.st_nlink == before.st_nlink + 1\n\
         n = os.stat(os.path.join(here, 'n'))\n\
         assert stat.S_ISREG(n.st_mode) and stat.S_IMODE(n.st_mode) == 0o640, n\n\
         os.mkfifo(os.path.join(here, 'fifo'))\n\
         assert stat.S_ISFIFO(os.stat(os.path.join(there, 'fifo')).st_mode)\n\
         r = os.open(os.path.join(here, 'fifo'), os.O_RDONLY | os.O_NONBLOCK)\n\
         w = os.open(os.path.join(here, 'fifo'), os.O_WRONLY)\n\
         os.write(w, b'through the pipe')\n\
         assert os.read(r, 64) == b'through the pipe'\n\
         os.close(w); os.close(r); os.unlink(os.path.join(there, 'fifo'))\n\
         time.sleep(0.01)\n\
         os.unlink(os.path.join(here, 'x'))\n\
         assert os.stat(here).st_mtime_ns > a.st_mtime_ns\n\
         print('ok')\n";
    assert_eq!(
        sh(&format!(
            "python3 -c {} {} {}",
            shell_quote(times),
            p("times"),
            other.path("times")
        ))
        .trim(),
        "ok"
    );
    sh(&format!("rm -r {}", p("times")));

    // Errors as a shell user sees them.
    sh_fails(&format!("cat {}", p("nope")), "No such file or directory");
    sh_fails(&format!("mkdir {}", p("d")), "File exists");
    sh_fails(&format!("rmdir {}", p("d")), "Directory not empty");
    sh_fails(
        &format!("set -o noclobber; echo x > {}", p("c.txt")),
        "exists",
    );
    // Another user: refused by the permission bits (root's 0755 directory, 0600 file).
    let (ok, _, err) = sh_as(Some(65534), &format!("touch {}", p("d/x")));
    assert!(!ok && err.contains("Permission denied"), "{err}");
    let (ok, _, err) = sh_as(Some(65534), &format!("cat {}", p("c.txt")));
    assert!(!ok && err.contains("Permission denied"), "{err}");
    // ... and allowed where the bits allow it; the file is theirs.
    sh(&format!("mkdir -m 1777 {}", p("tmp")));
    let (ok, _, err) = sh_as(Some(65534), &format!("echo mine > {}", p("tmp/n")));
    assert!(ok, "{err}");
    assert_eq!(sh(&format!("stat -c %u {}", p("tmp/n"))).trim(), "65534");
    // The creator writes a file whose new mode denies writing (POSIX), once only.
    // ... and may truncate it through that descriptor (ftruncate needs only the open).
    let ro = format!(
        "import os\nfd = os.open({:?}, os.O_CREAT | os.O_WRONLY, 0o444)\n\
         os.write(fd, b'xyz')\nos.ftruncate(fd, 1)\n",
        p("tmp/ro")
    );
    let (ok, _, err) = sh_as(Some(65534), &format!("python3 -c {}", shell_quote(&ro)));
    assert!(ok, "{err}");
    let (ok, _, err) = sh_as(Some(65534), &format!("echo y > {}", p("tmp/ro")));
    assert!(!ok && err.contains("Permission denied"), "{err}");
    assert_eq!(sh(&format!("cat {}", p("tmp/ro"))), "x");

    sh(&format!(
        "rm -r {} {} {} {} {}",
        p("d"),
        p("c.txt"),
        p("sym"),
        p("hard"),
        p("shared")
    ));
    sh(&format!("rm -r {}", p("tmp")));
    assert_eq!(sh(&format!("ls -A {}", p(""))), "");
}

/// Holds a write lock on bytes 0..10 of `path` (fcntl, through lockf) until its stdin
/// closes; returns once the lock is held.
fn hold_lock(path: &str) -> std::process::Child {
    let script = format!(
        "import fcntl, os, sys\n\
         fd = os.open({path:?}, os.O_RDWR | os.O_CREAT)\n\
         fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)\n\
         print('locked', flush=True)\n\
         sys.stdin.read()\n"
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    let out = child.stdout.as_mut().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    child
}

/// "taken" if a non-blocking write lock on bytes 0..10 of `path` can be had now (it is
/// released at once), else "busy".
fn try_lock(path: &str) -> String {
    let probe = format!(
        "import fcntl, os\n\
         fd = os.open({path:?}, os.O_RDWR)\n\
         try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)\n    print('taken')\n\
         except BlockingIOError:\n    print('busy')\n"
    );
    sh(&format!("python3 -c {}", shell_quote(&probe)))
        .trim()
        .to_string()
}

/// A lock held through a mount whose daemon is killed blocks the others at first;
/// once the dead mount's lease lapses the MDS takes it away. A live mount renews its
/// locks: one held through `m2` all along is still held after that lease.
fn locks_of_a_dead_mount_lapse(m1: &Mount, m2: &Mount, m3: &Mount) {
    let lease = nacre_proto::meta::lock::LEASE;
    let t0 = std::time::Instant::now();
    let mut live = hold_lock(&m2.path("live-lock"));
    let mut dead = hold_lock(&m3.path("dead-lock"));
    sh(&format!("kill -9 {}", m3.pid));
    assert_eq!(try_lock(&m1.path("dead-lock")), "busy");
    let killed = std::time::Instant::now();
    while try_lock(&m1.path("dead-lock")) != "taken" {
        assert!(
            killed.elapsed() < lease * 2 + std::time::Duration::from_secs(5),
            "the dead mount's lock never lapsed"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    while t0.elapsed() <= lease + std::time::Duration::from_secs(1) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        try_lock(&m1.path("live-lock")),
        "busy",
        "a live mount's lock lapsed"
    );
    drop(live.stdin.take());
    live.wait().unwrap();
    let _ = dead.kill();
    let _ = dead.wait();
}

/// fcntl and flock locks taken in one mount hold against the other (the MDS holds
/// them), F_GETLK reports the holder, F_SETLKW waits for the release.
fn locks_across_mounts(m1: &Mount, m2: &Mount) {
    let (f1, f2) = (m1.path("locked"), m2.path("locked"));
    let mut holder = hold_lock(&f1);
    let probe = format!(
        "import fcntl, os, struct\n\
         fd = os.open({f2:?}, os.O_RDWR)\n\
         try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)\n    print('taken')\n\
         except BlockingIOError:\n    print('busy')\n\
         got = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack('hhqqi', fcntl.F_WRLCK, 0, 5, 1, 0))\n\
         kind, _, start, length, pid = struct.unpack('hhqqi', got[:struct.calcsize('hhqqi')])\n\
         print(kind == fcntl.F_WRLCK, start, length, pid)\n\
         fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 20)\n\
         print('other range ok')\n"
    );
    let out = sh(&format!("python3 -c {}", shell_quote(&probe)));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "busy", "{out}");
    assert_eq!(lines[1], format!("True 0 10 {}", holder.id()), "{out}");
    assert_eq!(lines[2], "other range ok", "{out}");

    // F_SETLKW in the other mount waits until the holder closes its file.
    let waiter_script = format!(
        "import fcntl, os\n\
         fd = os.open({f2:?}, os.O_RDWR)\n\
         fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)\n\
         print('got', flush=True)\n"
    );
    let mut waiter = Command::new("python3")
        .args(["-c", &waiter_script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "F_SETLKW did not wait"
    );
    drop(holder.stdin.take());
    holder.wait().unwrap();
    let done = waiter.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&done.stdout).trim(), "got");

    // flock(1): exclusive across the two mounts, free again once the holder ends.
    let mut flocker = Command::new("flock")
        .args([&f1, "-c", "echo held; sleep 2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let out = flocker.stdout.as_mut().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
    let (ok, _, _) = sh_as(None, &format!("flock -n {f2} true"));
    assert!(!ok, "flock -n got a lock the other mount holds");
    flocker.wait().unwrap();
    sh(&format!("flock -n {f2} true"));
    sh(&format!("rm {f1}"));
    deadlock_across_mounts(m1, m2);
}

/// Two processes, one on each mount, each holding a byte the other waits for
/// (F_SETLKW): the second to wait gets EDEADLK, and the first gets its byte once the
/// second lets its own go.
fn deadlock_across_mounts(m1: &Mount, m2: &Mount) {
    let (a, b) = (m1.path("deadlock"), m2.path("deadlock"));
    sh(&format!("touch {a}"));
    let script = format!(
        "import errno, fcntl, os, time\n\
         r1, w1 = os.pipe()\n\
         r2, w2 = os.pipe()\n\
         if os.fork() == 0:\n\
         \x20   fd = os.open({a:?}, os.O_RDWR)\n\
         \x20   fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)\n\
         \x20   os.write(w1, b'x')\n\
         \x20   os.read(r2, 1)\n\
         \x20   fcntl.lockf(fd, fcntl.LOCK_EX, 1, 10)\n\
         \x20   print('first got byte 10', flush=True)\n\
         \x20   os._exit(0)\n\
         fd = os.open({b:?}, os.O_RDWR)\n\
         os.read(r1, 1)\n\
         fcntl.lockf(fd, fcntl.LOCK_EX, 1, 10)\n\
         os.write(w2, b'x')\n\
         time.sleep(1)\n\
         try:\n\
         \x20   fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)\n\
         \x20   print('second got byte 0')\n\
         except OSError as e:\n\
         \x20   print('second: EDEADLK' if e.errno == errno.EDEADLK else e, flush=True)\n\
         os.close(fd)\n\
         os.wait()\n"
    );
    let out = sh(&format!("timeout 60 python3 -c {}", shell_quote(&script)));
    assert_eq!(out.trim(), "second: EDEADLK\nfirst got byte 10", "{out}");
    sh(&format!("rm {a}"));
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn fio_runs(m: &Mount) {
    if !sh_as(None, "command -v fio").0 {
        skip("fio on the mount: fio missing (scripts/deps installs it)");
        return;
    }
    for (engine, depth) in [("psync", 1), ("libaio", 4)] {
        let out = sh(&format!(
            "fio --name=t --directory={} --ioengine={engine} --direct=1 --rw=write --bs=1m \
             --size=16m --numjobs=2 --iodepth={depth} --verify=crc32c --do_verify=1 \
             --verify_state_save=0 \
             --group_reporting --output-format=terse",
            m.dir.display()
        ));
        // Terse format v3: the fifth field is fio's error code (verify failures too).
        let terse = out.lines().find(|l| l.starts_with("3;"));
        let error = terse.and_then(|l| l.split(';').nth(4));
        assert_eq!(error, Some("0"), "fio {engine}: {out}");
        sh(&format!("rm -f {}/t.*", m.dir.display()));
    }
}

#[test]
fn posix_tools_on_two_mounts() {
    if !can_mount() || !common::have("tcp;ofi_rxm", "nacre mount") {
        return;
    }
    let work = tmp("mount");
    let up = Up::start(&work.join("data"), "tcp;ofi_rxm", &[]);
    let m1 = Mount::new(&up, work.join("m1"));
    let m2 = Mount::new(&up, work.join("m2"));
    shell_round_trips(&m1, &m2, &work);
    locks_across_mounts(&m1, &m2);
    fio_runs(&m1);

    // Refused: a busy mountpoint, a non-empty one, a missing one.
    let e = up.fails(&["mount", m1.dir.to_str().unwrap()]);
    assert!(e.contains("already a mount point"), "{e}");
    let full = work.join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("x"), b"x").unwrap();
    assert!(up
        .fails(&["mount", full.to_str().unwrap()])
        .contains("not empty"));
    let missing = work.join("missing");
    assert!(up
        .fails(&["mount", missing.to_str().unwrap()])
        .contains("No such file"));

    // A mount whose process died: its locks lapse; the mountpoint answers ENOTCONN
    // until umount.
    let m3 = Mount::new(&up, work.join("m3"));
    locks_of_a_dead_mount_lapse(&m1, &m2, &m3);
    sh_fails(&format!("ls {}", m3.dir.display()), "not connected");
    up.ok(&["umount", m3.dir.to_str().unwrap()]);
    assert_eq!(sh(&format!("ls -A {}", m3.dir.display())), "");
    assert!(up
        .fails(&["umount", m3.dir.to_str().unwrap()])
        .contains("not mounted"));

    // SIGTERM to a daemon unmounts cleanly.
    sh(&format!("kill -TERM {}", m2.pid));
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Path::new(&format!("/proc/{}", m2.pid)).exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(m2.dir.to_str().unwrap()),
        "SIGTERM left the mount"
    );
    drop((m1, m2, m3));
    up.stop();
}
