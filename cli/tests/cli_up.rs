//! `nacre up` and the `nacre` command end to end: real MGS, MDS and OSS processes over
//! tcp;ofi_rxm and shm, files copied in and out, striping shown and changed, errors as
//! one line, and a stop and restart on the same directory with every byte intact.

mod common;

use common::{tmp, Up};
use nacre_fabric::testing::pattern;

fn round_trip_and_restart(provider: &str) {
    if !common::have(provider, "nacre up CLI round trip") {
        return;
    }
    let name = provider.split(';').next().unwrap();
    let dir = tmp(&format!("up-{name}"));
    let data = dir.join("data");
    let local = dir.join("in.bin");
    let bytes = pattern(7, 5 * 1024 * 1024 + 12345);
    std::fs::write(&local, &bytes).unwrap();
    let local = local.to_str().unwrap();

    let up = Up::start(&data, provider, &[]);
    let status = up.ok(&["status"]);
    for t in ["mds0", "OST0000", "OST0003"] {
        assert!(status.contains(t), "status shows {t}: {status}");
    }
    up.ok(&["mkdir", "-p", "/a/b"]);
    up.ok(&["cp", "-c", "4", "-S", "1M", local, "nacre:/a/b/f"]);
    let stripe = up.ok(&["getstripe", "/a/b/f"]);
    assert!(stripe.contains("lmm_stripe_count:  4"), "{stripe}");
    assert!(stripe.contains("lmm_stripe_size:   1048576"), "{stripe}");
    let back = dir.join("out.bin");
    up.ok(&["cp", "nacre:/a/b/f", back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == bytes, "copy out differs");

    let ls = up.ok(&["ls", "-l", "/a/b"]);
    assert!(
        ls.contains(&bytes.len().to_string()) && ls.contains(" f"),
        "{ls}"
    );
    let st = up.ok(&["stat", "/a/b/f"]);
    assert!(st.contains(&format!("Size: {}", bytes.len())), "{st}");
    let df = up.ok(&["df"]);
    for t in [
        "MDT0000",
        "OST0000",
        "OST0001",
        "OST0002",
        "OST0003",
        "filesystem_summary",
    ] {
        assert!(df.contains(t), "df shows {t}: {df}");
    }

    // A directory's default striping goes to the files made in it.
    up.ok(&["setstripe", "-c", "2", "-S", "64k", "/a"]);
    up.ok(&["cp", local, "nacre:/a/two"]);
    let two = up.ok(&["getstripe", "/a/two"]);
    assert!(two.contains("lmm_stripe_count:  2"), "{two}");
    assert!(two.contains("lmm_stripe_size:   65536"), "{two}");
    up.ok(&["mv", "/a/two", "/a/b/two"]);

    // Errors: one line, exit status 1, nothing changed.
    let e = up.fails(&["stat", "/nope"]);
    assert!(e.contains("No such file"), "{e}");
    let e = up.fails(&["rm", "/a"]);
    assert!(e.contains("directory"), "{e}");
    up.fails(&["setstripe", "-c", "0", "/a/x"]);
    up.fails(&["mkdir", "/a/b/f/under-a-file"]);
    up.fails(&["cp", "/no/such/local/file", "nacre:/a/z"]);
    let e = common::nacre("127.0.0.1:1", &["ls", "/"]);
    assert_eq!(
        e.status.code(),
        Some(1),
        "an MGS that is not there is an error"
    );
    up.ok(&["stat", "/a/b/two"]);
    up.stop();

    // Started again on the same directory: the same files, byte for byte.
    let up = Up::start(&data, provider, &[]);
    let again = dir.join("again.bin");
    up.ok(&["cp", "nacre:/a/b/f", again.to_str().unwrap()]);
    assert!(
        std::fs::read(&again).unwrap() == bytes,
        "data lost across a restart"
    );
    let ls = up.ok(&["ls", "/a/b"]);
    assert!(ls.contains("two"), "{ls}");
    up.ok(&["rm", "-r", "/a"]);
    let e = up.fails(&["stat", "/a/b/f"]);
    assert!(e.contains("No such file"), "{e}");
    up.stop();
}

#[test]
fn cli_round_trip_and_restart_on_tcp() {
    round_trip_and_restart("tcp;ofi_rxm");
}

#[test]
fn cli_round_trip_and_restart_on_shm() {
    round_trip_and_restart("shm");
}

#[test]
fn up_check_starts_and_stops_everything() {
    let dir = tmp("check");
    let out = std::process::Command::new(common::nacre_bin())
        .args([
            "up",
            "--check",
            "--provider",
            "tcp",
            "--listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir.join("data"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines().any(|l| l.starts_with("NACRE_MGS=127.0.0.1:")),
        "{text}"
    );
    assert!(text.contains("nacre up: stopped"), "{text}");
    for log in ["mgs", "mds", "oss0", "oss1"] {
        assert!(dir.join("data/logs").join(format!("{log}.log")).exists());
    }
}
