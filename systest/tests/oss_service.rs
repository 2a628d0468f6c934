//! The object service end to end: an engine with two cores serving two OSTs, a client
//! over tcp;ofi_rxm and shm doing object I/O at every alignment (inline and bulk, one
//! request and many) against a model; attributes, punch, truncate, destroy, statfs; and
//! the refusals: a stale epoch, an OST not served here, an object of another core, a
//! corrupted checksum.

use std::path::PathBuf;
use std::time::Duration;

use nacre_client::objects::{IoOptions, KeyBlock, OstRoute};
use nacre_client::{ClientEndpoint, ClientError, RpcConfig};
use nacre_engine::{Engine, EngineConfig};
use nacre_fabric::testing::pattern;
use nacre_fabric::Selection;
use nacre_mgs::role::ServingEpoch;
use nacre_oss::server::{self, OstRegistry, OstSpec, MSG_SIZE};
use nacre_oss::superblock::{format, FormatRequest};
use nacre_proto::object::{Data, ObjFlags, ObjTarget, WriteReq};
use nacre_proto::Opcode;

fn ost_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("svc-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    d
}

struct Oss {
    engine: Engine,
    routes: Vec<OstRoute>,
    epochs: Vec<ServingEpoch>,
}

fn start(provider: &str, name: &str) -> Option<Oss> {
    let fabric = Selection::provider(provider);
    if let Err(e) = nacre_fabric::Info::find(&fabric) {
        nacre_fabric::testing::skip(&format!("object service on {provider}: {e}"));
        return None;
    }
    let mut specs = Vec::new();
    for index in [3u32, 5] {
        let dir = ost_dir(&format!("{name}-{index}"));
        let req = FormatRequest {
            fsname: "testfs".into(),
            index,
            label: None,
            generation: 1,
            force: false,
        };
        format(&dir, &req).expect("format");
        specs.push(OstSpec {
            index,
            dir,
            epoch: ServingEpoch::new(7 + index as u64),
            health: Default::default(),
        });
    }
    let base = EngineConfig {
        cores: 2,
        no_pin: true,
        fabric,
        ..Default::default()
    };
    let cfg = server::engine_config(base, &specs);
    let epochs = specs.iter().map(|s| s.epoch.clone()).collect();
    let engine = server::start(&cfg, OstRegistry::new(specs.clone())).expect("engine");
    let cores: Vec<Vec<u8>> = engine
        .cores()
        .iter()
        .map(|c| c.fabric_name.clone())
        .collect();
    let routes = specs
        .iter()
        .map(|s| OstRoute {
            ost: s.index,
            epoch: s.epoch.get(),
            cores: cores.clone(),
        })
        .collect();
    Some(Oss {
        engine,
        routes,
        epochs,
    })
}

fn client(provider: &str) -> ClientEndpoint {
    let cfg = RpcConfig {
        msg_size: MSG_SIZE,
        timeout: Duration::from_secs(20),
        ..Default::default()
    };
    ClientEndpoint::open(&Selection::provider(provider), cfg).expect("client")
}

/// A tiny deterministic generator for offsets and lengths.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

fn io_against_a_model(provider: &str) {
    let Some(oss) = start(provider, provider.split(';').next().unwrap()) else {
        return;
    };
    let mut c = client(provider);
    let opt = IoOptions::default();
    // Every alignment class, inline and bulk, on objects of both cores and both OSTs.
    let sizes = [
        1usize,
        511,
        4095,
        4096,
        4097,
        65_537,
        (1 << 20) + 1,
        5 << 20,
    ];
    let offsets = [0u64, 1, 511, 4095, 4096, 4097, (1 << 20) + 3];
    let mut rng = Rng(provider.len() as u64);
    for (i, &len) in sizes.iter().enumerate() {
        let route = &oss.routes[i % 2];
        let object = 100 + i as u64; // both parities: both cores
        let off = offsets[i % offsets.len()];
        let mut model = vec![0u8; off as usize + len];
        let data = pattern(i as u64, len);
        assert_eq!(c.obj_write(route, object, off, &data, opt).unwrap(), len);
        model[off as usize..].copy_from_slice(&data);
        // An overwrite inside, at a random place.
        let at = rng.below(len as u64) as usize;
        let n = 1 + rng.below((len - at) as u64) as usize;
        let patch = pattern(1000 + i as u64, n);
        c.obj_write(route, object, off + at as u64, &patch, opt)
            .unwrap();
        model[off as usize + at..off as usize + at + n].copy_from_slice(&patch);
        // Read all of it, and past the end (short).
        let mut back = vec![0xeeu8; model.len() + 100];
        let got = c.obj_read(route, object, 0, &mut back, opt).unwrap();
        assert_eq!(got, model.len(), "{provider} size {len} at {off}");
        assert!(back[..got] == model[..], "{provider} size {len} at {off}");
        let attr = c.obj_getattr(route, object).unwrap();
        assert_eq!(attr.size, model.len() as u64);
    }
    // Punch makes a hole that reads as zeros; truncate cuts; destroy removes.
    let route = &oss.routes[0];
    let data = pattern(77, 3 << 20);
    c.obj_write(route, 42, 0, &data, opt).unwrap();
    c.obj_punch(route, 42, (4096, 1 << 20), None).unwrap();
    let mut back = vec![0u8; data.len()];
    c.obj_read(route, 42, 0, &mut back, opt).unwrap();
    assert!(back[4096..4096 + (1 << 20)].iter().all(|&b| b == 0));
    assert!(back[..4096] == data[..4096]);
    c.obj_truncate(route, 42, 10_000, None).unwrap();
    assert_eq!(c.obj_getattr(route, 42).unwrap().size, 10_000);
    c.obj_sync(route, 42).unwrap();
    c.obj_destroy(route, 42).unwrap();
    let err = c.obj_getattr(route, 42).unwrap_err();
    assert!(matches!(err, ClientError::Status(libc::ENOENT)), "{err}");
    let fs = c.ost_statfs(route).unwrap();
    assert!(
        fs.bytes_total > 0 && fs.bytes_avail <= fs.bytes_free && fs.bytes_free <= fs.bytes_total
    );
    assert!(fs.objects_total > 0 && fs.objects_free <= fs.objects_total);
    oss.engine.stop();
}

#[test]
fn object_io_against_a_model_on_tcp() {
    io_against_a_model("tcp");
}

#[test]
fn object_io_against_a_model_on_shm() {
    io_against_a_model("shm");
}

/// Two clients and a forced resend: client A's keyed write is answered, B writes the
/// same range, then A sends its write again with the same keys on a new session (what
/// a client does after a timeout): the server answers from its memory and B's bytes
/// stay. Once A's floor passed the write, a late copy is refused. The same for a
/// keyed truncate, inline and bulk writes alike.
fn a_resent_change_never_lands_over_a_later_writer(provider: &str) {
    let name = format!("resend-{}", provider.split(';').next().unwrap());
    let Some(oss) = start(provider, &name) else {
        return;
    };
    let route = &oss.routes[0];
    let (mut a, mut b) = (client(provider), client(provider));
    let block = |first: u64| KeyBlock {
        client: 0xA,
        first,
        count: 1,
        floor: first,
    };
    let keyed = |first| IoOptions {
        keys: Some(block(first)),
        ..IoOptions::default()
    };
    let opt = IoOptions::default();
    for (object, len) in [(4u64, 3000usize), (6, 1 << 20)] {
        let (mine, theirs) = (pattern(object, len), pattern(object + 1, len));
        a.obj_write(route, object, 0, &mine, keyed(object * 100))
            .unwrap();
        b.obj_write(route, object, 0, &theirs, opt).unwrap();
        let mut again = client(provider);
        assert_eq!(
            again
                .obj_write(route, object, 0, &mine, keyed(object * 100))
                .unwrap(),
            len,
            "the resend is answered as the first copy was"
        );
        let mut back = vec![0u8; len];
        b.obj_read(route, object, 0, &mut back, opt).unwrap();
        assert!(
            back == theirs,
            "the resend did not land over the later write"
        );
        // A moves on: its next change raises its floor past the first write.
        let next = keyed(object * 100 + 1);
        a.obj_write(route, object, len as u64, b"next", next)
            .unwrap();
        let err = again
            .obj_write(route, object, 0, &mine, keyed(object * 100))
            .unwrap_err();
        assert!(matches!(err, ClientError::Status(libc::EALREADY)), "{err}");
        b.obj_read(route, object, 0, &mut back, opt).unwrap();
        assert!(back == theirs, "a copy from the past is refused");
    }
    // A truncate sent again after another client wrote past it changes nothing.
    let key = block(900).key(0);
    a.obj_write(route, 8, 0, &[1u8; 30], opt).unwrap();
    a.obj_truncate(route, 8, 10, Some(key)).unwrap();
    b.obj_write(route, 8, 0, &[7u8; 20], opt).unwrap();
    a.obj_truncate(route, 8, 10, Some(key)).unwrap();
    assert_eq!(b.obj_getattr(route, 8).unwrap().size, 20);
    // Unkeyed changes are applied every time, as before.
    b.obj_truncate(route, 8, 10, None).unwrap();
    assert_eq!(b.obj_getattr(route, 8).unwrap().size, 10);
    oss.engine.stop();
}

#[test]
fn a_resent_change_never_lands_over_a_later_writer_on_tcp() {
    a_resent_change_never_lands_over_a_later_writer("tcp");
}

#[test]
fn a_resent_change_never_lands_over_a_later_writer_on_shm() {
    a_resent_change_never_lands_over_a_later_writer("shm");
}

#[test]
fn refusals_are_clear_errors_and_the_core_keeps_serving() {
    let Some(oss) = start("tcp", "refusals") else {
        return;
    };
    let mut c = client("tcp");
    let opt = IoOptions::default();
    let good = oss.routes[0].clone();
    c.obj_write(&good, 2, 0, b"ok", opt).unwrap();
    // A stale epoch (a map from before a takeover).
    let stale = OstRoute {
        epoch: good.epoch - 1,
        ..good.clone()
    };
    let err = c.obj_write(&stale, 2, 0, b"x", opt).unwrap_err();
    assert!(matches!(err, ClientError::Status(libc::ESTALE)), "{err}");
    // An OST this server does not serve.
    let other = OstRoute {
        ost: 99,
        ..good.clone()
    };
    let err = c.obj_read(&other, 2, 0, &mut [0u8; 8], opt).unwrap_err();
    assert!(matches!(err, ClientError::Status(libc::ENODEV)), "{err}");
    // An object sent to the core that does not own it, and a corrupted checksum.
    let sid = c.connect(&good.cores[1]).unwrap(); // object 2 belongs to core 0
    let target = ObjTarget {
        ost: good.ost,
        flags: ObjFlags::CHECKSUM,
        epoch: good.epoch,
        object: 2,
        cap: None,
    };
    let write = |target: ObjTarget, crc: u32| {
        let req = WriteReq {
            target,
            offset: 0,
            len: 4,
            crc,
            data: Data::Inline(b"data"),
            key: None,
        };
        let mut body = [0u8; 128];
        let n = req.encode(&mut body).unwrap();
        body[..n].to_vec()
    };
    let r = c
        .request(
            sid,
            Opcode::OBJ_WRITE,
            &write(target, crc32c::crc32c(b"data")),
        )
        .unwrap();
    assert_eq!(r.header.status, -libc::EXDEV);
    let sid0 = c.connect(&good.cores[0]).unwrap();
    let r = c
        .request(sid0, Opcode::OBJ_WRITE, &write(target, 0xbad))
        .unwrap();
    assert_eq!(r.header.status, -libc::EILSEQ, "corrupted payload refused");
    let mut back = [0u8; 2];
    c.obj_read(&good, 2, 0, &mut back, opt).unwrap();
    assert_eq!(&back, b"ok", "nothing of the refused writes landed");
    // A fenced server refuses everything, even with the epoch it had.
    oss.epochs[0].fence();
    let err = c.obj_read(&good, 2, 0, &mut back, opt).unwrap_err();
    assert!(matches!(err, ClientError::Status(libc::ESTALE)), "{err}");
    oss.engine.stop();
}

/// A client that vanishes with bulk writes in flight: the server's pulls fail or finish,
/// every slab goes back to the pool, and the core goes on serving others.
#[test]
fn a_vanished_client_leaves_nothing_held() {
    use nacre_fabric::{Access, Memory};
    use nacre_proto::object::{Data, WriteReq};
    let Some(oss) = start("tcp", "vanish") else {
        return;
    };
    let route = oss.routes[0].clone();
    let free_slabs = |engine: &Engine| {
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(engine.call(0, move |core| {
            let free: usize = core.pool.usage().iter().map(|&(_, free, _)| free).sum();
            tx.send(free).unwrap();
        }));
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    };
    let idle = free_slabs(&oss.engine);
    {
        let mut c = client("tcp");
        let sid = c.connect(&route.cores[0]).unwrap();
        let len = 4 << 20;
        let mr = c
            .endpoint()
            .register(Memory::anonymous(8 * len).unwrap(), Access::ALL)
            .unwrap();
        for i in 0..8u64 {
            let req = WriteReq {
                target: ObjTarget {
                    ost: route.ost,
                    flags: ObjFlags::BULK,
                    epoch: route.epoch,
                    object: 2 * (i + 1), // core 0
                    cap: None,
                },
                offset: 0,
                len: len as u64,
                crc: 0,
                data: Data::Bulk(mr.remote(i as usize * len, len).unwrap()),
                key: None,
            };
            let mut body = [0u8; 128];
            let n = req.encode(&mut body).unwrap();
            c.send(sid, Opcode::OBJ_WRITE, &body[..n]).unwrap();
        }
        // Gone: endpoint closed, registrations with it, nothing answered.
    }
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while free_slabs(&oss.engine) != idle {
        assert!(std::time::Instant::now() < until, "slabs still held");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = client("tcp");
    c.obj_write(&route, 2, 0, b"still serving", IoOptions::default())
        .unwrap();
    oss.engine.stop();
}
