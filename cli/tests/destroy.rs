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
