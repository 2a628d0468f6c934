//! The MGS is off the data path: a server with a real engine core publishes its fabric
//! address through the MGS; a client fetches the map and PINGs the core at that address;
//! kill -9 of the MGS stops no ping, the server keeps its role, and it renews once an
//! MGS is back on the same directory and address.

#[path = "../../mgs/tests/mgs_support/mod.rs"]
mod mgs_support;

use std::time::{Duration, Instant};

use mgs_support::*;
use nacre_client::{RpcClient, RpcConfig};
use nacre_fabric::Selection;
use nacre_proto::bootstrap::{Role, RoleKind, TargetState};
use nacre_proto::Opcode;

const TEST: &str = "child_server";

#[test]
#[ignore]
fn child_server() {
    child_main();
}

fn ping(c: &mut RpcClient, n: u32) {
    let body = n.to_le_bytes();
    let r = c.request(Opcode::PING, &body).expect("ping answered");
    assert_eq!((r.header.status, &r.body[..]), (0, &body[..]));
}

#[test]
fn io_goes_on_while_the_mgs_is_down_and_the_server_renews_when_it_is_back() {
    if !have_tcp("mgs data path") {
        return;
    }
    let dir = tmpdir("datapath");
    format(&dir, "dp");
    // A lease long enough to outlast the outage below (the server self-fences at the
    // lease's end without a renewal: see docs/mgs.md).
    let flags = ["--heartbeat-ms", "200", "--lease-ms", "4000"];
    let mut mgs = Mgs::serve(&dir, "127.0.0.1:0", &flags);
    let server = server(TEST, &mgs.addr, "node-e", None, true);
    server.expect("GRANTED oss0 epoch 1", Duration::from_secs(30));

    let role = Role {
        kind: RoleKind::Oss,
        index: 0,
    };
    let map = mgs.client().fetch_map().unwrap();
    let entry = map.server(role).expect("the server is in the map").clone();
    assert_eq!((entry.provider.as_str(), entry.cores.len()), ("tcp", 1));
    let cfg = RpcConfig {
        timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let mut rpc = RpcClient::connect(&Selection::provider(&entry.provider), &entry.cores[0], cfg)
        .expect("HELLO to the core the map names");
    ping(&mut rpc, 0);

    mgs.proc.kill9();
    let down = Instant::now();
    let mut n = 1;
    while down.elapsed() < Duration::from_millis(1500) {
        ping(&mut rpc, n);
        n += 1;
    }
    assert!(server.try_expect("FENCED", Duration::ZERO).is_none());
    server.expect("UNREACHABLE", Duration::from_secs(2));

    // Back on the same address: the server renews with its epoch, keeps its role.
    let mgs = Mgs::serve(&dir, &mgs.addr, &flags);
    server.expect("RESTORED", Duration::from_secs(5));
    let mut c = mgs.client();
    let m = c.fetch_map().unwrap();
    assert!(m.is_current(role, 1), "{m:?}");
    assert_eq!(m.target(role).unwrap().state, TargetState::Up);
    assert_eq!(m.server(role).unwrap().cores, entry.cores);
    ping(&mut rpc, n);
    server.expect("SERVING oss0 epoch 1", Duration::from_secs(2));
    println!("{n} pings while the MGS was down");
}
