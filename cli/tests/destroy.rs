//! Space comes back: unlinking a file, renaming over one and removing a tree free their
//! objects on every OST within seconds (the MDS's destroyer drains its destroy log), and
//! `nacre df` shows the space again.

mod common;

use common::*;
use nacre_fabric::testing::pattern;

fn space_comes_back(provider: &str) {
    if !have(provider, "destroys") {
        return;
    }
    let dir = tmp(&format!("destroy-{provider}"));
    let data = dir.join("data");
    let local = dir.join("in.bin");
    std::fs::write(&local, pattern(3, 3 << 20)).unwrap();
    let local = local.to_str().unwrap();
    let up = Up::start(&data, provider, &[]);
    let before = objects(&data);
    up.ok(&["mkdir", "/d"]);
    up.ok(&["cp", "-c", "4", "-S", "64k", local, "nacre:/d/a"]);
    up.ok(&["cp", "-c", "2", local, "nacre:/d/b"]);
    up.ok(&["cp", "-c", "1", local, "nacre:/d/c"]);
    wait_for_objects(&data, before + 7, "after writing 4 + 2 + 1 objects");

    up.ok(&["rm", "/d/a"]);
    wait_for_objects(&data, before + 3, "after rm of the 4-stripe file");
    // Renaming over c frees c's object; b's two live on as c.
    up.ok(&["mv", "/d/b", "/d/c"]);
    wait_for_objects(&data, before + 2, "after renaming over a file");
    up.ok(&["rm", "-r", "/d"]);
    wait_for_objects(&data, before, "after rm -r");
    // What df reads comes from the OSTs themselves: nothing of ours is left there.
    let df = up.ok(&["df"]);
    assert!(df.contains("filesystem_summary"), "{df}");
    up.stop();
}

#[test]
fn unlink_rename_over_and_rm_r_free_the_objects_on_tcp() {
    space_comes_back("tcp");
}

#[test]
fn unlink_rename_over_and_rm_r_free_the_objects_on_shm() {
    space_comes_back("shm");
}

/// The open lease: a file unlinked while a client holds it open keeps its objects
/// while that client lives (its keeper says so every 2.5 s; the lease here is 5 s, the
/// least the MDS takes),
/// and loses them once the client is killed (SIGKILL: no close ever comes) and the MDS
/// has not heard from it for the lease, without waiting for an MDS restart.
#[test]
fn a_killed_clients_unlinked_open_file_goes_after_the_open_lease() {
    use nacre_fabric::testing::KillOnDrop;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    if !have("tcp;ofi_rxm", "open lease") || !have_tools("open lease", &["mkfifo"]) {
        return;
    }
    let dir = tmp("destroy-open-lease");
    let data = dir.join("data");
    let cfg_file = dir.join("up.toml");
    std::fs::write(
        &cfg_file,
        format!(
            "[mgs]\nlisten = \"127.0.0.1:0\"\n[mds]\nopen_lease = 5\n\
             [[oss]]\nosts = [\"{0}/oss0/target0\", \"{0}/oss0/target1\"]\n",
            data.display()
        ),
    )
    .unwrap();
    let up = Up::start(
        &data,
        "tcp;ofi_rxm",
        &["--config", cfg_file.to_str().unwrap()],
    );
    let local = dir.join("in.bin");
    std::fs::write(&local, pattern(5, 1 << 20)).unwrap();
    let before = objects(&data);
    up.ok(&[
        "cp",
        "-c",
        "2",
        "-S",
        "64k",
        local.to_str().unwrap(),
        "nacre:/held",
    ]);
    wait_for_objects(&data, before + 2, "after writing a file of 2 stripes");

    // `nacre cp` out of nacre into a FIFO nobody reads: it opens the nacre file, then
    // blocks opening the FIFO, holding the file open.
    let fifo = dir.join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    let mut holder = KillOnDrop::new(
        Command::new(nacre_bin())
            .args(["cp", "nacre:/held", fifo.to_str().unwrap()])
            .env("NACRE_MGS", &up.mgs)
            .env("NACRE_KEY", &up.key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The open is in once the MDS counts the file as open: an unlink leaves an orphan.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        holder.child().try_wait().unwrap().is_none(),
        "cp blocks on the FIFO"
    );
    up.ok(&["rm", "/held"]);
    // Alive, the holder keeps the objects past the lease.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(
        objects(&data),
        before + 2,
        "a live client's unlinked open file"
    );

    let killed = Instant::now();
    holder.child().kill().unwrap();
    let _ = holder.child().wait();
    // The lease (5 s), the server's look each second, then the destroyer's round.
    while objects(&data) != before {
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "{} objects left 20 s after the holder was killed, want {before}",
            objects(&data)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("space back {:?} after the kill", killed.elapsed());
    up.stop();
}
