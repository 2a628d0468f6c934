//! Clients that flood an OSS with bulk writes and never progress nor read a reply,
//! against a real `nacre-oss serve`: nacre's own memory stays bounded however much
//! they send (the op table holds at most `MAX_OPS` requests per core, the rest wait in
//! receive slots and in the provider; the slabs are allocated at start), the provider
//! adds at most a buffer per message waiting (measured here), and once the flooders go
//! the server serves others as before. The server's resident set is read from
//! /proc/PID/status while the flood runs.

mod common;

use std::time::{Duration, Instant};

use common::process::*;
use nacre_client::objects::IoOptions;
use nacre_client::{ClientEndpoint, RpcConfig};
use nacre_fabric::{Access, Memory, Selection};
use nacre_proto::object::{Data, ObjFlags, ObjTarget, WriteReq};
use nacre_proto::Opcode;

/// Flooding endpoints, each with as many requests in flight as its table takes.
const FLOODERS: usize = 32;
const DEPTH: usize = 128;
/// What each flooding write asks the server to pull: 1 MiB of the flooder's memory.
const LEN: usize = 1 << 20;
/// The growth of the server's resident set the flood may cause: nacre's own (the op
/// tables, 1024 requests per core of a few hundred bytes, and the queues; the slabs
/// are the pool's, touched during the warm-up) stays within this...
const OWN_BOUND: u64 = 16 << 20;
/// ...and the provider holds each message the server has not taken yet in a buffer of
/// its own: tcp;ofi_rxm an eager buffer of 16 KiB (measured: 4096 messages waiting,
/// +50 MiB; 256, +0), shm nothing (the messages wait in the sender's queue).
const PER_WAITING_MESSAGE: u64 = 16 << 10;
/// How long the flood goes on.
const FLOOD: Duration = Duration::from_secs(4);

/// The resident set of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb << 10
}

fn flood(provider: &str) {
    let name = format!("flood-{}", provider.split(';').next().unwrap());
    let Some((dir, _mgs, addr)) = cluster(provider, &name) else {
        return;
    };
    let osts = [dir.join("ost-a"), dir.join("ost-b")];
    let server = oss_with(provider, &addr, &osts, &["--bulk-timeout", "2"]);
    let map = map_with_osts(&addr, 0);
    let route = route(&map, 0);
    let opt = IoOptions::default();
    // Warm-up: bulk writes and reads on both cores touch the pool's slabs.
    let mut c = client(provider);
    let data = vec![7u8; 4 << 20];
    for obj in 1..=8u64 {
        c.obj_write(&route, obj, 0, &data, opt).unwrap();
        let mut back = vec![0u8; data.len()];
        c.obj_read(&route, obj, 0, &mut back, opt).unwrap();
    }
    let before = rss(server.pid());

    // The flood: requests sent and never waited for, each lending 1 MiB to pull.
    let cfg = RpcConfig {
        depth: DEPTH,
        msg_size: nacre_oss::server::MSG_SIZE,
        timeout: Duration::from_secs(60),
        key: Some(key().1.clone()),
        ..Default::default()
    };
    // Every flooder says HELLO first: once the flood holds the core (over tcp a pull
    // from a client that does not progress waits for the bulk timeout), new sessions
    // wait behind it.
    let mut flooders = Vec::new();
    for _ in 0..FLOODERS {
        let mut ep = ClientEndpoint::open(&Selection::provider(provider), cfg.clone()).unwrap();
        let sid = ep.connect(&route.cores[0]).unwrap();
        let mr = ep
            .endpoint()
            .register(Memory::anonymous(LEN).unwrap(), Access::ALL)
            .unwrap();
        flooders.push((ep, sid, mr));
    }
    let mut sent = 0u64;
    let mut peak = before;
    let start = Instant::now();
    for (f, (ep, sid, mr)) in flooders.iter_mut().enumerate() {
        let (sid, desc) = (*sid, mr.remote_all().unwrap());
        for i in 0..DEPTH as u64 {
            let object = 2 * (100 + f as u64 * DEPTH as u64 + i); // core 0 of 2
            let req = WriteReq {
                target: ObjTarget {
                    ost: route.ost,
                    flags: ObjFlags::BULK,
                    epoch: route.epoch,
                    object,
                    cap: None,
                },
                offset: 0,
                len: LEN as u64,
                crc: 0,
                data: Data::Bulk(desc),
                key: None,
            };
            let mut body = [0u8; 128];
            let n = req.encode(&mut body).unwrap();
            match ep.send(sid, Opcode::OBJ_WRITE, &body[..n]) {
                Ok(_) => sent += 1,
                Err(_) => break, // this endpoint's table is full
            }
        }
        peak = peak.max(rss(server.pid()));
    }
    while start.elapsed() < FLOOD {
        peak = peak.max(rss(server.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let grew = peak.saturating_sub(before);
    let bound = OWN_BOUND + PER_WAITING_MESSAGE * sent;
    eprintln!(
        "{provider}: {sent} requests from {FLOODERS} endpoints never read; server RSS {} MiB \
         before, {} MiB at most during the flood (+{} MiB, bound {} MiB)",
        before >> 20,
        peak >> 20,
        grew >> 20,
        bound >> 20
    );
    assert!(
        sent >= (FLOODERS * DEPTH / 2) as u64,
        "the flood was sent: {sent}"
    );
    assert!(grew <= bound, "the server grew by {} MiB", grew >> 20);

    // The flooders go; the server serves another client as before.
    drop(flooders);
    let mut other = client(provider);
    let until = Instant::now() + Duration::from_secs(30);
    let mut back = vec![0u8; data.len()];
    loop {
        match other.obj_read(&route, 1, 0, &mut back, opt) {
            Ok(n) if n == data.len() && back == data => break,
            r => assert!(Instant::now() < until, "not served after the flood: {r:?}"),
        }
        other = client(provider);
    }
    drop(server);
}

#[test]
fn a_flood_never_read_keeps_the_server_bounded_on_tcp() {
    flood("tcp;ofi_rxm");
}

#[test]
fn a_flood_never_read_keeps_the_server_bounded_on_shm() {
    flood("shm");
}
