//! Clients that come and go: over shm, every `nacre` process leaves the servers' address
//! vectors when it exits (its session is reaped once its process is gone), so any
//! number of short-lived clients works, not only the first ~250 endpoints' worth.

mod common;

use std::time::Instant;

use common::*;

#[test]
fn many_short_lived_clients_over_shm() {
    if !have("shm", "short-lived clients") {
        return;
    }
    let dir = tmp("churn-shm");
    let local = dir.join("small.bin");
    std::fs::write(&local, vec![7u8; 300 << 10]).unwrap();
    let local = local.to_str().unwrap();
    let up = Up::start(&dir.join("data"), "shm", &[]);
    up.ok(&["mkdir", "/churn"]);
    // Each copy striped over 4 OSTs opens several endpoints (one per thread that talks
    // to a server): 150 of them are well past the 256 peers of shm's address vector.
    let start = Instant::now();
    for i in 0..150 {
        up.ok(&[
            "cp",
            "-c",
            "4",
            "-S",
            "64k",
            local,
            &format!("nacre:/churn/f{i}"),
        ]);
    }
    let ls = up.ok(&["ls", "/churn"]);
    assert_eq!(ls.lines().count(), 150, "{ls}");
    println!("150 copies in {:?}", start.elapsed());
    up.stop();
}
