//! A core that cannot admit another client says so at once: its HELLO is answered with
//! EUSERS (no session), and the client fails with that error, not after a timeout.
//! The sessions it holds keep being served.

use std::time::{Duration, Instant};

use nacre_client::{ClientEndpoint, ClientError, RpcConfig};
use nacre_engine::{Core, Engine, EngineConfig, Incoming, ReactorConfig, Service};
use nacre_fabric::Selection;
use nacre_proto::Opcode;

const ECHO: Opcode = Opcode(302);

struct Echo;

impl Service for Echo {
    fn on_request(&mut self, core: &mut Core, req: Incoming<'_>) {
        core.reply(req.peer, &req.header, 0, req.body);
    }
}

fn a_full_core_refuses_at_once(provider: &str) {
    let fabric = Selection::provider(provider);
    if let Err(e) = nacre_fabric::Info::find(&fabric) {
        nacre_fabric::testing::skip(&format!("admission on {provider}: not available: {e}"));
        return;
    }
    let cfg = EngineConfig {
        cores: 1,
        no_pin: true,
        fabric: fabric.clone(),
        reactor: ReactorConfig {
            max_sessions: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let engine = Engine::start(&cfg, |_, _| Echo).expect("engine");
    let server = engine.cores()[0].fabric_name.clone();
    let rpc = RpcConfig {
        timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let mut first = ClientEndpoint::open(&fabric, rpc.clone()).unwrap();
    let sid = first
        .connect(&server)
        .expect("the first client is admitted");
    let mut second = ClientEndpoint::open(&fabric, rpc).unwrap();
    let start = Instant::now();
    let err = second.connect(&server).unwrap_err();
    assert!(matches!(err, ClientError::Status(libc::EUSERS)), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "refused after {:?}: an answer, not a timeout",
        start.elapsed()
    );
    let r = first.request(sid, ECHO, b"still served").unwrap();
    assert_eq!(r.body, b"still served");
    engine.stop();
}

#[test]
fn a_full_core_refuses_at_once_on_tcp() {
    a_full_core_refuses_at_once("tcp");
}

#[test]
fn a_full_core_refuses_at_once_on_shm() {
    a_full_core_refuses_at_once("shm");
}
