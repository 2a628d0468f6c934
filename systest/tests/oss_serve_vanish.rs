//! A client process killed with bulk reads in flight, against a real `nacre-oss serve`:
//! the server lives on and gets back the slabs of the pushes it made or queued for the
//! dead client, so that other clients' bulk reads of the same size still go through.
//! The providers never complete those pushes (libfabric 1.17's shm and tcp;ofi_rxm),
//! so the slabs come back when the server evicts the client after its bulk timeout
//! (short here). The client is this test binary run again as a child
//! (`child_reader`, ignored when run on its own), killed with SIGKILL once its reads
//! are sent.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::process::*;
use nacre_client::objects::{IoOptions, OstRoute};
use nacre_client::{ClientEndpoint, SessionId};
use nacre_fabric::testing::{pattern, Proc};
use nacre_fabric::{Access, BulkDesc, Memory};
use nacre_proto::object::{ObjFlags, ObjTarget, ReadReq};
use nacre_proto::Opcode;

/// Bulk reads the child sends: together they take every 1 MiB slab of a core's pool.
const READS: u64 = 8;
const LEN: usize = 4 << 20;
/// Small reads the child sends when told to, asking for inline replies of 4 KiB: from
/// transmit slots, were they answered, and over shm a client that dies before taking
/// such replies held those slots and stalled the core's later completions. The server
/// now refuses them there (the reply would not fit shm's inject size).
const INLINE_READS: u64 = 48;
const INLINE_LEN: usize = 4096;
/// What the surviving client reads in small pieces (inline over every provider).
const SMALL: usize = 2048;
/// The server's bulk timeout here, in seconds (60 by default).
const BULK_TIMEOUT: &str = "2";

/// The map once OST0 is served.
fn served(addr: &str) -> nacre_proto::bootstrap::ClusterMap {
    wait_map(addr, "OST0 served", |m| !m.servers.is_empty())
}

fn object(i: u64) -> u64 {
    2 * (i + 1) // all on core 0 of two
}

/// Sends a read of `len` bytes of `object` from offset 0, pushed into `bulk` if given,
/// without waiting for its reply.
fn send_read(
    c: &mut ClientEndpoint,
    sid: SessionId,
    route: &OstRoute,
    object: u64,
    len: usize,
    bulk: Option<BulkDesc>,
) {
    let flags = match bulk {
        Some(_) => ObjFlags::BULK,
        None => ObjFlags::default(),
    };
    let target = ObjTarget {
        ost: route.ost,
        flags,
        epoch: route.epoch,
        object,
        cap: None,
    };
    let len = len as u64;
    let req = ReadReq {
        target,
        offset: 0,
        len,
        bulk,
    };
    let mut body = [0u8; 128];
    let n = req.encode(&mut body).unwrap();
    c.send(sid, Opcode::OBJ_READ, &body[..n]).unwrap();
}

#[test]
#[ignore]
fn child_reader() {
    let (Ok(provider), Ok(addr)) = (
        std::env::var("VANISH_PROVIDER"),
        std::env::var("VANISH_MGS"),
    ) else {
        return; // run on its own: nothing to do
    };
    let route = route(&served(&addr), 0);
    let mut c = client(&provider);
    let sid = c.connect(&route.cores[0]).unwrap();
    // Small reads (the data would come back in the replies), or bulk reads into one
    // registration kept until the kill.
    let _mr = if std::env::var("VANISH_INLINE").is_ok() {
        for i in 0..INLINE_READS {
            send_read(&mut c, sid, &route, object(i % READS), INLINE_LEN, None);
        }
        None
    } else {
        let memory = Memory::anonymous(READS as usize * LEN).unwrap();
        let mr = c.endpoint().register(memory, Access::ALL).unwrap();
        for i in 0..READS {
            send_read(
                &mut c,
                sid,
                &route,
                object(i),
                LEN,
                Some(mr.remote(i as usize * LEN, LEN).unwrap()),
            );
        }
        Some(mr)
    };
    println!("reads sent");
    std::thread::sleep(Duration::from_secs(60)); // killed long before
}

fn killed_reader_test(provider: &str, inline: bool) {
    let name = format!("vanish-{provider}{}", if inline { "-inline" } else { "" });
    let Some((dir, _mgs, addr)) = cluster(provider, &name) else {
        return;
    };
    let flags = ["--bulk-timeout", BULK_TIMEOUT];
    let _server = oss_with(provider, &addr, &[dir.join("ost")], &flags);
    let route = route(&served(&addr), 0);
    let mut c = client(provider);
    for i in 0..READS {
        c.obj_write(&route, object(i), 0, &pattern(i, LEN), IoOptions::default())
            .unwrap();
    }
    for round in 0..3 {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "child_reader", "--ignored", "--nocapture"])
            .env("VANISH_PROVIDER", provider)
            .env("VANISH_MGS", &addr)
            .env(CHILD_KEY, &key().0);
        if inline {
            cmd.env("VANISH_INLINE", "1");
        }
        let mut child = Proc::spawn("reader", cmd);
        child.expect("reads sent", Duration::from_secs(30));
        // Some pushes done, some in flight, some queued: then the client is gone.
        std::thread::sleep(Duration::from_millis(5 * round));
        child.kill9();
        // Every slab must come back for these: READS reads of LEN take them all.
        let killed = Instant::now();
        for i in 0..READS {
            let mut back = vec![0u8; LEN];
            let n = c
                .obj_read(&route, object(i), 0, &mut back, IoOptions::default())
                .unwrap_or_else(|e| panic!("round {round}: read {i} after the kill: {e}"));
            assert_eq!(n, LEN);
            assert!(back == pattern(i, LEN), "round {round}: object {i} differs");
        }
        // And small reads, answered inline, many times over the transmit slots.
        for i in 0..256u64 {
            let mut back = vec![0u8; SMALL];
            c.obj_read(
                &route,
                object(i % READS),
                0,
                &mut back,
                IoOptions::default(),
            )
            .unwrap_or_else(|e| panic!("round {round}: small read {i} after the kill: {e}"));
            assert!(
                back == pattern(i % READS, SMALL), // the object's first bytes
                "round {round}: {i}"
            );
        }
        // Within the bulk timeout and a few expiry checks, well inside the client's
        // own request timeout (30 s).
        let waited = killed.elapsed();
        assert!(
            waited < Duration::from_secs(15),
            "round {round}: {waited:?}"
        );
    }
}

#[test]
fn a_killed_reader_over_shm_leaves_the_server_serving() {
    killed_reader_test("shm", false);
}

#[test]
fn a_killed_reader_over_tcp_leaves_the_server_serving() {
    killed_reader_test("tcp", false);
}

#[test]
fn a_killed_small_reader_over_shm_leaves_the_server_serving() {
    killed_reader_test("shm", true);
}
