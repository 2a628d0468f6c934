//! `nacre-oss serve` as a real process beside a real `nacre-mgs`: the OSS claims a role
//! per OST, the client finds the cores and epochs in the cluster map and does object I/O
//! over tcp;ofi_rxm and shm; kill -9 of the OSS in the middle of a write stream, then a
//! restart on the same directories: every acknowledged write reads back, under the new
//! epoch, and a client holding the old map is refused (ESTALE) until it refetches.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::process::*;
use nacre_client::objects::{IoOptions, OstRoute};
use nacre_client::ClientError;

fn block(i: u64) -> Vec<u8> {
    (0..65_536u64 + 123)
        .map(|j| (i * 7 + j * 13 + j / 4096) as u8)
        .collect()
}

fn kill9_mid_stream(provider: &str) {
    let name = format!("kill9-{}", provider.split(';').next().unwrap());
    let Some((dir, _mgs, addr)) = cluster(provider, &name) else {
        return;
    };
    let osts = [dir.join("ost-a"), dir.join("ost-b")];
    let mut server = oss(provider, &addr, &osts);
    let map = map_with_osts(&addr, 0);
    let routes = [route(&map, 0), route(&map, 1)];
    // A stream of writes, each acknowledged before the next; the server is killed
    // somewhere in the middle by another thread.
    let killed = Arc::new(AtomicBool::new(false));
    let pid = server.pid();
    let mut killer = None;
    let mut c = client(provider);
    let opt = IoOptions::default();
    let mut acked = Vec::new();
    for i in 0..100_000u64 {
        if i == 40 {
            // Killed from another thread while writes are in flight.
            let k = killed.clone();
            killer = Some(std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                let _ = nacre_fabric::testing::send_signal(pid, "KILL");
                k.store(true, Ordering::SeqCst);
            }));
        }
        let r = &routes[(i % 2) as usize];
        // Unaligned offsets, several objects, both cores.
        let (obj, off) = (1 + i % 5, (i / 5) * 70_001);
        match c.obj_write(r, obj, off, &block(i), opt) {
            Ok(_) => acked.push((i, obj, off)),
            Err(_) if killed.load(Ordering::SeqCst) => break,
            Err(e) => panic!("write {i} failed before the kill: {e}"),
        }
    }
    killer.expect("started").join().unwrap();
    server.kill9();
    assert!(acked.len() >= 40, "the stream ran before the kill");
    // Restart on the same directories: the same roles, new epochs.
    let _server = oss(provider, &addr, &osts);
    let old = routes[0].epoch;
    let map = map_with_osts(&addr, old);
    let fresh = [route(&map, 0), route(&map, 1)];
    let mut c = client(provider);
    let mut back = vec![0u8; 65_536 + 123];
    // The old epoch (a map from before the restart) is refused by the new server.
    let stale = OstRoute {
        epoch: routes[0].epoch,
        ..fresh[0].clone()
    };
    let err = c.obj_read(&stale, 1, 0, &mut back, opt).unwrap_err();
    assert!(matches!(err, ClientError::Status(libc::ESTALE)), "{err}");
    for &(i, obj, off) in &acked {
        let r = &fresh[(i % 2) as usize];
        let n = c.obj_read(r, obj, off, &mut back, opt).unwrap();
        assert_eq!(n, back.len(), "write {i} is whole");
        assert!(back == block(i), "write {i} reads back");
    }
    println!(
        "{provider}: {} acknowledged writes survived kill -9",
        acked.len()
    );
}

#[test]
fn acknowledged_writes_survive_kill9_of_the_oss_on_tcp() {
    kill9_mid_stream("tcp");
}

#[test]
fn acknowledged_writes_survive_kill9_of_the_oss_on_shm() {
    kill9_mid_stream("shm");
}
