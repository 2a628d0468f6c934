//! A server that pushes into a client's buffer past the client's timeout: once the call
//! returned, nothing may land in the buffer it lent. On shm, whose RMA is a one-sided
//! copy that ignores keys, the call holds the buffer until the late answer came (the
//! server moves data before it answers); on tcp the registration's key dies when the
//! call gives up, and the late push fails at the server.

use std::time::{Duration, Instant};

use nacre_client::{ClientEndpoint, ClientError, RpcConfig};
use nacre_engine::{
    Bufs, BulkDone, Core, Engine, EngineConfig, Incoming, PoolConfig, Service, SizeClass,
};
use nacre_fabric::{BulkDesc, PeerAddr, Selection};
use nacre_proto::{BodyReader, Header, Opcode};

const PUSH: Opcode = Opcode(301);
const STALL: Duration = Duration::from_millis(1500);
const TIMEOUT: Duration = Duration::from_millis(300);
const LEN: usize = 64 << 10;
const MIB: usize = 1 << 20;

/// Pushes 0xEE into the descriptor of every request [`STALL`] after it came, then
/// answers with the push's status.
#[derive(Default)]
struct Stall {
    held: Vec<(Instant, PeerAddr, Header, BulkDesc)>,
    pushes: Vec<(PeerAddr, Header)>,
}

impl Service for Stall {
    fn on_request(&mut self, core: &mut Core, req: Incoming<'_>) {
        match BodyReader::new(req.body).bulk() {
            Ok(d) => self.held.push((Instant::now(), req.peer, req.header, d)),
            Err(_) => core.reply(req.peer, &req.header, -libc::EBADMSG, &[]),
        }
    }

    fn on_turn(&mut self, core: &mut Core) -> bool {
        let (due, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.0.elapsed() >= STALL);
        self.held = wait;
        for (_, peer, header, desc) in &due {
            let mut slab = core.pool.get(MIB).expect("the test sizes the pool");
            slab.bytes_mut()[..LEN].fill(0xEE);
            let mut bufs = Bufs::new();
            bufs.push(slab);
            let tag = self.pushes.len() as u64;
            self.pushes.push((*peer, *header));
            if let Err(e) = core.push(*peer, desc, 0, bufs, 0, LEN, tag) {
                core.reply(*peer, header, -e.errno(), &[]);
            }
        }
        !due.is_empty()
    }

    fn on_bulk(&mut self, core: &mut Core, done: BulkDone) {
        for b in done.bufs {
            let _ = core.pool.put(b);
        }
        let (peer, header) = self.pushes[done.tag as usize];
        let status = match done.result {
            Ok(_) => 0,
            Err(errno) => -errno,
        };
        core.reply(peer, &header, status, &[]);
    }
}

fn nothing_lands_after_the_call_returned(provider: &str) {
    let fabric = Selection::provider(provider);
    if let Err(e) = nacre_fabric::Info::find(&fabric) {
        nacre_fabric::testing::skip(&format!("lent buffers on {provider}: not available: {e}"));
        return;
    }
    let cfg = EngineConfig {
        cores: 1,
        no_pin: true,
        fabric: fabric.clone(),
        pool: PoolConfig {
            classes: vec![SizeClass {
                size: MIB,
                count: 4,
            }],
            huge_pages: false,
        },
        ..Default::default()
    };
    let engine = Engine::start(&cfg, |_, _| Stall::default()).expect("engine");
    let rpc = RpcConfig {
        timeout: TIMEOUT,
        ..Default::default()
    };
    let mut c = ClientEndpoint::open(&fabric, rpc).expect("client");
    let sid = c.connect(&engine.cores()[0].fabric_name).expect("HELLO");
    let mut buf = vec![0u8; LEN];
    let start = Instant::now();
    let r = c.with_buffer_mut(&mut buf, |c, desc| c.request(sid, PUSH, &desc.to_bytes()));
    let took = start.elapsed();
    assert!(matches!(r, Err(ClientError::Expired { .. })), "{r:?}");
    if provider == "shm" {
        assert!(
            took >= STALL,
            "returned after {took:?}, before the server was done"
        );
        assert!(
            buf.iter().all(|&b| b == 0xEE),
            "the push came before the return"
        );
        assert_eq!(c.late_replies(), 1);
    } else {
        assert!(
            took < STALL,
            "keys die at the timeout: no need to wait ({took:?})"
        );
    }
    // The buffer is the caller's again: give a late push every chance to land, with
    // the client progressing, then look.
    buf.fill(0x11);
    while start.elapsed() < 2 * STALL {
        let _ = c.poll_for(Duration::from_millis(50));
    }
    assert!(
        buf.iter().all(|&b| b == 0x11),
        "a server wrote into a buffer the call had given back"
    );
    engine.stop();
}

#[test]
fn nothing_lands_after_the_call_returned_on_shm() {
    nothing_lands_after_the_call_returned("shm");
}

#[test]
fn nothing_lands_after_the_call_returned_on_tcp() {
    nothing_lands_after_the_call_returned("tcp");
}
