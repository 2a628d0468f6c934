//! The data path closed end to end, on every provider here: a client's bytes pulled by
//! RMA into pool slabs, written from those slabs with io_uring (O_DIRECT), read back
//! into slabs and pushed by RMA into another client region; every byte compared, and
//! the file read back with plain system calls too. Then a core whose transmit queue is
//! full: the posts wait on later turns while the other clients keep getting replies.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use nacre_client::{ClientEndpoint, RpcClient, RpcConfig};
use nacre_engine::{
    Bufs, BulkDone, Core, CoreMetrics, Engine, EngineConfig, FileId, Incoming, IoCompletion,
    PoolBuf, PoolConfig, Service, SizeClass, StorageConfig,
};
use nacre_fabric::testing::pattern;
use nacre_fabric::{Access, BulkDesc, EndpointConfig, Memory, MemoryRegion, PeerAddr, Selection};
use nacre_proto::{BodyReader, Header, Opcode};

const WRITE: Opcode = Opcode::BULK_WRITE;
const READ: Opcode = Opcode::BULK_READ;
const MIB: usize = 1 << 20;

/// One request on its way through pull/write or read/push.
struct Op {
    peer: PeerAddr,
    header: Header,
    desc: BulkDesc,
    offset: u64,
    len: usize,
    /// Storage operations or slabs still out.
    left: usize,
    status: i32,
    /// A read's slabs, in file order, as they complete.
    slabs: Vec<Option<PoolBuf>>,
}

/// WRITE {offset, desc}: pull, write the slabs. READ {offset, len, desc}: read into slabs,
/// push them. The reply goes only when everything finished.
struct FileService {
    file: FileId,
    ops: Vec<Option<Op>>,
    /// Reads waiting for slabs (back-pressure).
    waiting: VecDeque<usize>,
}

impl FileService {
    fn new(core: &mut Core, path: &Path) -> FileService {
        let file = core.storage.open(path, true).expect("open the data file");
        FileService {
            file,
            ops: Vec::new(),
            waiting: VecDeque::new(),
        }
    }

    fn add(&mut self, op: Op) -> usize {
        self.ops.push(Some(op));
        self.ops.len() - 1
    }

    fn fail(&mut self, core: &mut Core, id: usize, status: i32) {
        if let Some(op) = self.ops[id].as_mut() {
            if op.status == 0 {
                op.status = status;
            }
        }
        self.one_done(core, id);
    }

    /// One storage operation (or the push) finished; the last one answers.
    fn one_done(&mut self, core: &mut Core, id: usize) {
        let Some(op) = self.ops[id].as_mut() else {
            return;
        };
        op.left -= 1;
        if op.left > 0 {
            return;
        }
        let slabs: Bufs = op.slabs.iter_mut().filter_map(Option::take).collect();
        if op.header.opcode == READ && op.status == 0 && !slabs.is_empty() {
            // The slabs are filled: push them; the reply follows the push's completion.
            op.left = 1;
            let (peer, desc, len) = (op.peer, op.desc, op.len);
            if let Err(e) = core.push(peer, &desc, 0, slabs, 0, len, id as u64) {
                let op = self.ops[id].take().expect("checked");
                core.reply(op.peer, &op.header, -e.errno(), &[]);
            }
            return;
        }
        for b in slabs {
            let _ = core.pool.put(b);
        }
        let op = self.ops[id].take().expect("checked");
        core.reply(op.peer, &op.header, op.status, &[]);
    }

    fn start_reads(&mut self, core: &mut Core) -> bool {
        let mut moved = false;
        while let Some(&id) = self.waiting.front() {
            let len = self.ops[id].as_ref().expect("waiting op").len;
            let slabs = len.div_ceil(MIB);
            if core.pool.available(MIB) < slabs {
                break;
            }
            self.waiting.pop_front();
            let op = self.ops[id].as_mut().expect("waiting op");
            op.left = slabs;
            op.slabs = (0..slabs).map(|_| None).collect();
            for i in 0..slabs {
                let buf = core.pool.get(MIB).expect("counted");
                let n = MIB.min(len - i * MIB).next_multiple_of(4096);
                let at = op.offset + (i * MIB) as u64;
                let tag = (id as u64) << 16 | i as u64;
                match core.storage.read(self.file, buf, n, at, tag) {
                    Ok(()) => {}
                    Err((e, buf)) => panic!("read refused: {e} ({buf:?})"),
                }
            }
            moved = true;
        }
        moved
    }
}

impl Service for FileService {
    fn on_request(&mut self, core: &mut Core, req: Incoming<'_>) {
        let mut r = BodyReader::new(req.body);
        let parsed = match req.header.opcode {
            WRITE => r.u64().and_then(|o| Ok((o, 0, r.bulk()?))),
            READ => r.u64().and_then(|o| Ok((o, r.u64()?, r.bulk()?))),
            _ => return core.reply(req.peer, &req.header, -libc::ENOSYS, &[]),
        };
        let Ok((offset, len, desc)) = parsed else {
            return core.reply(req.peer, &req.header, -libc::EBADMSG, &[]);
        };
        let len = if req.header.opcode == WRITE {
            desc.len as usize
        } else {
            len as usize
        };
        let id = self.add(Op {
            peer: req.peer,
            header: req.header,
            desc,
            offset,
            len,
            left: 0,
            status: 0,
            slabs: Vec::new(),
        });
        if req.header.opcode == READ {
            self.waiting.push_back(id);
            self.start_reads(core);
        } else if let Err(e) = core.pull(req.peer, &desc, 0, len, id as u64) {
            self.ops[id] = None;
            core.reply(req.peer, &req.header, -e.errno(), &[]);
        }
    }

    fn on_bulk(&mut self, core: &mut Core, done: BulkDone) {
        let id = done.tag as usize;
        let len = match done.result {
            Err(errno) => {
                if let Some(op) = self.ops[id].as_mut() {
                    op.left = 1;
                }
                return self.fail(core, id, -errno);
            }
            Ok(len) => len,
        };
        let Some(op) = self.ops[id].as_mut() else {
            return;
        };
        if op.header.opcode == READ {
            // Pushed: the slabs go back, and only now may the reply go.
            for b in done.bufs {
                let _ = core.pool.put(b);
            }
            let op = self.ops[id].take().expect("checked");
            return core.reply(op.peer, &op.header, 0, &[]);
        }
        // Pulled: write every slab where it belongs, from the slab itself.
        op.left = done.bufs.len();
        let mut at = 0;
        let base = op.offset;
        for buf in done.bufs {
            let n = buf.capacity().min(len - at);
            let pos = base + at as u64;
            at += n;
            if let Err((e, buf)) = core
                .storage
                .write(self.file, buf, n, pos, (id as u64) << 16)
            {
                let _ = core.pool.put(buf);
                panic!("write refused: {e}");
            }
        }
    }

    fn on_storage(&mut self, core: &mut Core, done: IoCompletion) {
        let (id, chunk) = (
            (done.user_data >> 16) as usize,
            done.user_data as u16 as usize,
        );
        let buf = done.buf.expect("reads and writes carry their slab");
        let Some(op) = self.ops[id].as_mut() else {
            let _ = core.pool.put(buf);
            return;
        };
        if op.header.opcode == READ {
            op.slabs[chunk] = Some(buf); // reads complete in any order
        } else {
            let _ = core.pool.put(buf);
        }
        match done.result {
            Ok(_) => self.one_done(core, id),
            Err(errno) => self.fail(core, id, -errno),
        }
    }

    fn on_turn(&mut self, core: &mut Core) -> bool {
        self.start_reads(core)
    }
}

fn data_dir(test: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(test);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An engine core serving `path` over `provider`, or None (skipped, with a reason).
fn serve(provider: &str, path: &Path, endpoint: EndpointConfig) -> Option<Engine> {
    serve_with(provider, path, |cfg| cfg.endpoint = endpoint)
}

/// [`serve`], with `edit` applied to the engine's settings.
fn serve_with(provider: &str, path: &Path, edit: impl FnOnce(&mut EngineConfig)) -> Option<Engine> {
    let fabric = Selection::provider(provider);
    if let Err(e) = nacre_fabric::Info::find(&fabric) {
        nacre_fabric::testing::skip(&format!("bulk tests on {provider}: not available: {e}"));
        return None;
    }
    let mut cfg = EngineConfig {
        cores: 1,
        no_pin: true,
        fabric,
        pool: PoolConfig {
            classes: vec![SizeClass {
                size: MIB,
                count: 8,
            }],
            huge_pages: false,
        },
        storage: StorageConfig {
            queue_depth: 32,
            ..Default::default()
        },
        ..Default::default()
    };
    edit(&mut cfg);
    let path = path.to_path_buf();
    Some(Engine::start(&cfg, move |_, core| FileService::new(core, &path)).expect("engine"))
}

fn client(provider: &str, engine: &Engine) -> RpcClient {
    let cfg = RpcConfig {
        timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let sel = Selection::provider(provider);
    RpcClient::connect(&sel, &engine.cores()[0].fabric_name, cfg).expect("HELLO")
}

fn write_body(offset: u64, desc: &BulkDesc) -> Vec<u8> {
    let mut b = offset.to_le_bytes().to_vec();
    b.extend_from_slice(&desc.to_bytes());
    b
}

fn read_body(offset: u64, len: u64, desc: &BulkDesc) -> Vec<u8> {
    let mut b = offset.to_le_bytes().to_vec();
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&desc.to_bytes());
    b
}

/// Sends `reads` reads of `len` bytes from offset 0, each into its own part of a fresh
/// registration (returned), without waiting for the replies (request ids 100...).
fn send_reads(c: &mut RpcClient, reads: usize, len: usize) -> MemoryRegion {
    let dst = c
        .endpoint()
        .register(Memory::anonymous(reads * len).unwrap(), Access::ALL)
        .unwrap();
    for i in 0..reads {
        let desc = dst.remote(i * len, len).unwrap();
        c.send(READ, 100 + i as u64, &read_body(0, len as u64, &desc))
            .unwrap();
    }
    dst
}

fn metrics(engine: &Engine) -> CoreMetrics {
    let (tx, rx) = mpsc::channel();
    assert!(engine.call(0, move |c| tx.send(c.metrics.clone()).unwrap()));
    rx.recv_timeout(Duration::from_secs(10)).expect("metrics")
}

fn pull_write_read_push(provider: &str) {
    let dir = data_dir(&format!("bulk-{}", provider.replace(';', "_")));
    let path = dir.join("data");
    let _ = std::fs::remove_file(&path);
    let Some(engine) = serve(provider, &path, EndpointConfig::default()) else {
        return;
    };
    let mut c = client(provider, &engine);
    // (file offset, length): one page, a slab, several slabs with a short last one.
    let pieces = [
        (0u64, 4096usize),
        (MIB as u64, MIB),
        (4 * MIB as u64, 3 * MIB + 8192),
    ];
    let total: usize = pieces.iter().map(|p| p.1).sum();
    let src = c
        .endpoint()
        .register(Memory::anonymous(total).unwrap(), Access::ALL)
        .unwrap();
    let dst = c
        .endpoint()
        .register(Memory::anonymous(total).unwrap(), Access::ALL)
        .unwrap();
    let data = pattern(provider.len() as u64, total);
    src.copy_in(0, &data).unwrap();
    let mut at = 0;
    for &(offset, len) in &pieces {
        let desc = src.remote(at, len).unwrap();
        let r = c.request(WRITE, &write_body(offset, &desc)).unwrap();
        assert_eq!(r.header.status, 0, "write {offset}+{len} on {provider}");
        at += len;
    }
    let mut at = 0;
    for &(offset, len) in &pieces {
        let desc = dst.remote(at, len).unwrap();
        let r = c
            .request(READ, &read_body(offset, len as u64, &desc))
            .unwrap();
        assert_eq!(r.header.status, 0, "read {offset}+{len} on {provider}");
        at += len;
    }
    let mut back = vec![0u8; total];
    dst.copy_out(0, &mut back).unwrap();
    assert!(back == data, "bytes pushed back differ on {provider}");
    // And on disk, through the page cache, exactly where they were written.
    let file = std::fs::read(&path).unwrap();
    let mut at = 0;
    for &(offset, len) in &pieces {
        let o = offset as usize;
        assert!(file[o..o + len] == data[at..at + len], "file bytes at {o}");
        at += len;
    }
    let m = metrics(&engine);
    assert_eq!(m.bulk_ops, 2 * pieces.len() as u64);
    assert_eq!(m.bulk_bytes, 2 * total as u64);
    assert_eq!(m.bulk_errors, 0);
    // A descriptor that runs past the client's region is an error reply, and the core
    // goes on serving.
    let bad = BulkDesc {
        len: 64 * MIB as u64,
        ..src.remote(0, 4096).unwrap()
    };
    let r = c.request(WRITE, &write_body(0, &bad)).unwrap();
    assert_eq!(
        r.header.status,
        -libc::EMSGSIZE,
        "larger than the pool holds"
    );
    assert_eq!(
        c.request(Opcode::PING, b"still here")
            .unwrap()
            .header
            .status,
        0
    );
    engine.stop();
}

#[test]
fn bytes_go_wire_to_slab_to_disk_and_back_on_tcp() {
    pull_write_read_push("tcp");
}

#[test]
fn bytes_go_wire_to_slab_to_disk_and_back_on_sockets() {
    pull_write_read_push("sockets");
}

#[test]
fn bytes_go_wire_to_slab_to_disk_and_back_on_shm() {
    pull_write_read_push("shm");
}

/// One transmit credit on the server: pushes to a client that does not progress fill
/// it, the posts behind wait in the core's queue, and another client's requests are
/// answered all the while. When the first client progresses again, every read lands.
#[test]
fn a_full_transmit_queue_stalls_no_other_client() {
    let path = data_dir("bulk-full-queue").join("data");
    let one_credit = EndpointConfig {
        max_tx: 1,
        ..Default::default()
    };
    let Some(engine) = serve("tcp", &path, one_credit) else {
        return;
    };
    let mut a = client("tcp", &engine);
    let mut b = client("tcp", &engine);
    let reads = 6;
    let len = 256 << 10;
    let src = a
        .endpoint()
        .register(Memory::anonymous(len).unwrap(), Access::ALL)
        .unwrap();
    let data = pattern(9, len);
    src.copy_in(0, &data).unwrap();
    let r = a
        .request(WRITE, &write_body(0, &src.remote(0, len).unwrap()))
        .unwrap();
    assert_eq!(r.header.status, 0);
    let dst = send_reads(&mut a, reads, len);
    // `a` now stops progressing. `b` is served regardless: while its pushes wait (the
    // reads reach the disk first, which under load takes a while), and after.
    let start = Instant::now();
    let mut after_full = 0;
    let mut i = 0u32;
    while after_full < 50 {
        let r = b.request(Opcode::PING, &i.to_le_bytes()).unwrap();
        assert_eq!(r.header.status, 0);
        i += 1;
        if after_full > 0 || metrics(&engine).deferred_posts > 0 {
            after_full += 1;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the queue never filled, or pings stalled: {:?}",
            metrics(&engine)
        );
    }
    // `a` progresses again: every read completes with the right bytes.
    for _ in 0..reads {
        let r = a.next_reply().unwrap();
        assert_eq!(r.header.status, 0);
    }
    for i in 0..reads {
        let mut back = vec![0u8; len];
        dst.copy_out(i * len, &mut back).unwrap();
        assert!(back == data, "read {i}");
    }
    engine.stop();
}

/// A reader that stops taking its pushes (dead, or hung) is evicted once a push to it
/// outlives the bulk timeout: the slabs of its pushes come back for the other clients,
/// its reads fail with ETIMEDOUT, and once it speaks again it is served as before. Over
/// tcp;ofi_rxm a push completes only when the reader's side acknowledges it, so a
/// reader that stops polling holds its pushes (over shm the server copies straight
/// into the reader's memory, and a live reader holds nothing).
#[test]
fn a_reader_that_stops_is_evicted_and_its_slabs_come_back() {
    let path = data_dir("bulk-evict").join("data");
    let quick = |cfg: &mut EngineConfig| cfg.reactor.bulk_timeout = Duration::from_secs(1);
    let Some(engine) = serve_with("tcp", &path, quick) else {
        return;
    };
    let (mut a, mut b) = (client("tcp", &engine), client("tcp", &engine));
    let data = pattern(11, MIB);
    let src = a
        .endpoint()
        .register(Memory::anonymous(MIB).unwrap(), Access::ALL)
        .unwrap();
    src.copy_in(0, &data).unwrap();
    let r = a.request(WRITE, &write_body(0, &src.remote(0, MIB).unwrap()));
    assert_eq!(r.unwrap().header.status, 0);
    // Every slab of the pool (8) goes to pushes to `a`, which then stops polling.
    let reads = 8;
    let dst = send_reads(&mut a, reads, MIB);
    // `b`'s read needs a slab: it gets one once `a` is evicted.
    let mine = b
        .endpoint()
        .register(Memory::anonymous(MIB).unwrap(), Access::ALL)
        .unwrap();
    let r = b.request(
        READ,
        &read_body(0, MIB as u64, &mine.remote(0, MIB).unwrap()),
    );
    assert_eq!(r.unwrap().header.status, 0);
    let mut back = vec![0u8; MIB];
    mine.copy_out(0, &mut back).unwrap();
    assert!(back == data, "b's read");
    let m = metrics(&engine);
    assert!(m.bulk_evicted > 0, "{m:?}");
    // `a` polls again: its stuck reads failed; a new one is served.
    let mut timed_out = 0;
    for _ in 0..reads {
        let status = a.next_reply().unwrap().header.status;
        assert!(status == 0 || status == -libc::ETIMEDOUT, "status {status}");
        timed_out += (status == -libc::ETIMEDOUT) as u64;
    }
    assert_eq!(timed_out, m.bulk_evicted);
    let desc = dst.remote(0, MIB).unwrap();
    let r = a.request(READ, &read_body(0, MIB as u64, &desc));
    assert_eq!(r.unwrap().header.status, 0, "served again after speaking");
    dst.copy_out(0, &mut back).unwrap();
    assert!(back == data, "a's read after the eviction");
    engine.stop();
}

/// One client endpoint, sessions to two servers: requests interleave, every reply comes
/// back on its own session, and bulk transfers to both land in one registration.
#[test]
fn one_client_endpoint_serves_sessions_to_many_servers() {
    let dir = data_dir("bulk-many-servers");
    let (Some(e1), Some(e2)) = (
        serve("tcp", &dir.join("one"), EndpointConfig::default()),
        serve("tcp", &dir.join("two"), EndpointConfig::default()),
    ) else {
        return;
    };
    let cfg = RpcConfig {
        timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let mut c = ClientEndpoint::open(&Selection::provider("tcp"), cfg).unwrap();
    let s1 = c.connect(&e1.cores()[0].fabric_name).unwrap();
    let s2 = c.connect(&e2.cores()[0].fabric_name).unwrap();
    assert_ne!(s1, s2);
    assert_eq!(c.connect(&e1.cores()[0].fabric_name).unwrap(), s1, "reused");
    let mut sent = Vec::new();
    for i in 0..20u32 {
        let sid = if i % 2 == 0 { s1 } else { s2 };
        sent.push((c.send(sid, Opcode::PING, &i.to_le_bytes()).unwrap(), sid, i));
    }
    for _ in 0..sent.len() {
        let (sid, r) = c.next_reply().unwrap();
        let &(_, want_sid, i) = sent
            .iter()
            .find(|s| s.0 == r.header.request_id)
            .expect("a reply to a request we sent");
        assert_eq!(sid, want_sid);
        assert_eq!(r.body, i.to_le_bytes());
    }
    let len = 64 << 10;
    let mr = c
        .endpoint()
        .register(Memory::anonymous(2 * len).unwrap(), Access::ALL)
        .unwrap();
    mr.copy_in(0, &pattern(1, 2 * len)).unwrap();
    let w1 = c
        .send(s1, WRITE, &write_body(0, &mr.remote(0, len).unwrap()))
        .unwrap();
    let w2 = c
        .send(s2, WRITE, &write_body(0, &mr.remote(len, len).unwrap()))
        .unwrap();
    assert_eq!(c.wait(w2).unwrap().header.status, 0);
    assert_eq!(c.wait(w1).unwrap().header.status, 0);
    let whole = pattern(1, 2 * len);
    assert!(std::fs::read(dir.join("one")).unwrap()[..len] == whole[..len]);
    assert!(std::fs::read(dir.join("two")).unwrap()[..len] == whole[len..]);
    // Nothing uses the region any more: it can be released while receives stay posted.
    assert_eq!(mr.busy(), 0);
    c.endpoint().deregister(&mr).unwrap();
}

/// The caller's own buffers (heap memory, not ours) lent to servers through the
/// registration cache: data written from one and read back into another, byte-exact;
/// a buffer used again is not registered again; and when the caller's call fails, the
/// registration is closed, so its descriptor stops working for the server.
#[test]
fn caller_buffers_go_through_the_registration_cache() {
    use nacre_client::{ClientError, RegCacheConfig, RegCacheMode};
    let dir = data_dir("bulk-regcache");
    let Some(engine) = serve("tcp", &dir.join("data"), EndpointConfig::default()) else {
        return;
    };
    for mode in [RegCacheMode::Auto, RegCacheMode::Off] {
        let cfg = RpcConfig {
            timeout: Duration::from_secs(3),
            reg_cache: RegCacheConfig {
                mode,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut c = ClientEndpoint::open(&Selection::provider("tcp"), cfg).unwrap();
        let s = c.connect(&engine.cores()[0].fabric_name).unwrap();
        let data = pattern(21, 3 * MIB + 4096);
        let mut back = vec![0u8; data.len()];
        for round in 0..3 {
            let status = c
                .with_buffer(&data, |c, desc| {
                    Ok(c.request(s, WRITE, &write_body(0, &desc))?.header.status)
                })
                .unwrap();
            assert_eq!(status, 0, "write, round {round}");
            back.fill(0);
            let status = c
                .with_buffer_mut(&mut back, |c, desc| {
                    let body = read_body(0, desc.len, &desc);
                    Ok(c.request(s, READ, &body)?.header.status)
                })
                .unwrap();
            assert_eq!(status, 0, "read, round {round}");
            assert!(back == data, "round {round}: bytes differ");
        }
        let stats = c.reg_cache().stats;
        match mode {
            RegCacheMode::Auto => {
                assert_eq!((stats.misses, stats.hits), (2, 4), "{stats:?}");
                assert_eq!(c.reg_cache().registered_bytes(), 2 * data.len());
            }
            RegCacheMode::Off => {
                assert_eq!(
                    c.reg_cache().registered_bytes(),
                    0,
                    "released after each call"
                );
            }
        }
        // A call that fails closes its buffer's registration: the key dies with it.
        let mut stale = None;
        let err = c.with_buffer(&data, |_, desc| {
            stale = Some(desc);
            Err::<(), _>(ClientError::Protocol("the caller gave up".into()))
        });
        assert!(err.is_err());
        // tcp answers an RMA on a closed key with an error and drops the connection, so
        // the error reply may never arrive: what must hold is that nothing was read.
        let errors = metrics(&engine).bulk_errors;
        let far = 16 * MIB as u64;
        match c.request(s, WRITE, &write_body(far, &stale.unwrap())) {
            Ok(r) => assert_ne!(r.header.status, 0, "a closed registration was reachable"),
            Err(ClientError::Expired { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        assert_eq!(metrics(&engine).bulk_errors, errors + 1);
        let len = std::fs::metadata(dir.join("data")).unwrap().len();
        assert!(len <= far, "bytes landed through a closed registration");
    }
    engine.stop();
}

/// Pulls into slabs at a head offset, then pushes the same slabs from that offset:
/// SHIFT {head, src desc, dst desc} moves src to dst through slabs whose first byte of
/// data is `head` bytes in (the layout unaligned object writes use).
#[derive(Default)]
struct Shifter {
    pending: Option<(PeerAddr, Header, usize, BulkDesc, u64)>,
}

const SHIFT: Opcode = Opcode(300);

impl Service for Shifter {
    fn on_request(&mut self, core: &mut Core, req: Incoming<'_>) {
        let mut r = BodyReader::new(req.body);
        let Ok((head, src, dst)) = r.u64().and_then(|h| Ok((h as usize, r.bulk()?, r.bulk()?)))
        else {
            return core.reply(req.peer, &req.header, -libc::EBADMSG, &[]);
        };
        let mut bufs = Bufs::new();
        while bufs.iter().map(|b| b.capacity()).sum::<usize>() < head + src.len as usize {
            bufs.push(core.pool.get(MIB).expect("the test sizes the pool"));
        }
        let tag = dst.addr ^ dst.key; // not used to route: checked in on_bulk
        self.pending = Some((req.peer, req.header, head, dst, tag));
        if let Err(e) = core.pull_into(req.peer, &src, 0, src.len as usize, bufs, head, tag) {
            core.reply(req.peer, &req.header, -e.errno(), &[]);
        }
    }

    fn on_bulk(&mut self, core: &mut Core, done: BulkDone) {
        let (peer, header, head, dst, tag) = self.pending.take().expect("one at a time");
        assert_eq!(done.tag, tag);
        match (done.dir, done.result) {
            (nacre_engine::BulkDir::Pull, Ok(len)) => {
                self.pending = Some((peer, header, head, dst, tag));
                if let Err(e) = core.push(peer, &dst, 0, done.bufs, head, len, tag) {
                    self.pending = None;
                    core.reply(peer, &header, -e.errno(), &[]);
                }
            }
            (_, Ok(_)) => {
                for b in done.bufs {
                    let _ = core.pool.put(b);
                }
                core.reply(peer, &header, 0, &[]);
            }
            (_, Err(errno)) => core.reply(peer, &header, -errno, &[]),
        }
    }
}

#[test]
fn slabs_filled_and_emptied_from_a_head_offset() {
    let cfg = EngineConfig {
        cores: 1,
        no_pin: true,
        fabric: Selection::provider("tcp"),
        pool: PoolConfig {
            classes: vec![SizeClass {
                size: MIB,
                count: 4,
            }],
            huge_pages: false,
        },
        ..Default::default()
    };
    if let Err(e) = nacre_fabric::Info::find(&cfg.fabric) {
        nacre_fabric::testing::skip(&format!("head-offset bulk test: tcp not available: {e}"));
        return;
    }
    let engine = Engine::start(&cfg, |_, _| Shifter::default()).expect("engine");
    let mut c = client("tcp", &engine);
    let len = 2 * MIB + 777;
    let src = c
        .endpoint()
        .register(Memory::anonymous(len).unwrap(), Access::ALL)
        .unwrap();
    let dst = c
        .endpoint()
        .register(Memory::anonymous(len).unwrap(), Access::ALL)
        .unwrap();
    let data = pattern(5, len);
    src.copy_in(0, &data).unwrap();
    for head in [0usize, 1, 511, 4095, 4096 + 17] {
        dst.fill(0, len, 0).unwrap();
        let mut body = (head as u64).to_le_bytes().to_vec();
        body.extend_from_slice(&src.remote_all().unwrap().to_bytes());
        body.extend_from_slice(&dst.remote_all().unwrap().to_bytes());
        let r = c.request(SHIFT, &body).unwrap();
        assert_eq!(r.header.status, 0, "head {head}");
        let mut back = vec![0u8; len];
        dst.copy_out(0, &mut back).unwrap();
        assert!(back == data, "head {head}: bytes differ");
    }
    // A head past the first slab is refused, and its slabs go back: the same request
    // with a valid head still finds all four.
    for (head, status) in [(MIB, -libc::EINVAL), (100, 0)] {
        let mut body = (head as u64).to_le_bytes().to_vec();
        body.extend_from_slice(&src.remote_all().unwrap().to_bytes());
        body.extend_from_slice(&dst.remote_all().unwrap().to_bytes());
        let r = c.request(SHIFT, &body).unwrap();
        assert_eq!(r.header.status, status, "head {head}");
    }
    engine.stop();
}

/// A tcp client of the engine's first core with `depth` requests in flight.
fn client_of(engine: &Engine, depth: usize) -> RpcClient {
    let rpc = RpcConfig {
        depth,
        timeout: Duration::from_secs(20),
        ..Default::default()
    };
    RpcClient::connect(
        &Selection::provider("tcp"),
        &engine.cores()[0].fabric_name,
        rpc,
    )
    .expect("HELLO")
}

/// Answers every request on the next turn, all at once (as completions do).
#[derive(Default)]
struct Later {
    held: Vec<(PeerAddr, Header, Vec<u8>)>,
}

impl Service for Later {
    fn on_request(&mut self, _core: &mut Core, req: Incoming<'_>) {
        self.held.push((req.peer, req.header, req.body.to_vec()));
    }

    fn on_turn(&mut self, core: &mut Core) -> bool {
        let moved = !self.held.is_empty();
        for (peer, header, body) in self.held.drain(..) {
            core.reply(peer, &header, 0, &body);
        }
        moved
    }
}

/// More replies at once than transmit slots: none is lost, they wait for slots in order
/// (and new requests wait in their receive slots meanwhile).
#[test]
fn replies_beyond_the_transmit_slots_wait_and_all_arrive() {
    let cfg = EngineConfig {
        cores: 1,
        no_pin: true,
        fabric: Selection::provider("tcp"),
        reactor: nacre_engine::ReactorConfig {
            tx_slots: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    if let Err(e) = nacre_fabric::Info::find(&cfg.fabric) {
        nacre_fabric::testing::skip(&format!("reply backlog test: tcp not available: {e}"));
        return;
    }
    let engine = Engine::start(&cfg, |_, _| Later::default()).expect("engine");
    let mut c = client_of(&engine, 40);
    // 1000-byte replies: far above tcp's inject size, so each needs a transmit slot.
    for i in 0..32u64 {
        c.send(Opcode(400), 1000 + i, &pattern(i, 1000)).unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..32 {
        let r = c.next_reply().unwrap();
        assert_eq!(r.body, pattern(r.header.request_id - 1000, 1000));
        seen.push(r.header.request_id);
    }
    seen.sort_unstable();
    assert_eq!(seen, (1000..1032).collect::<Vec<_>>());
    let m = metrics(&engine);
    assert_eq!(m.replies_dropped, 0, "{m:?}");
    engine.stop();
}

/// Holds requests and answers the oldest one per turn; busy while it holds `limit`.
struct Bounded {
    held: VecDeque<(PeerAddr, Header)>,
    limit: usize,
    most: Arc<std::sync::atomic::AtomicUsize>,
}

impl Service for Bounded {
    fn on_request(&mut self, _core: &mut Core, req: Incoming<'_>) {
        self.held.push_back((req.peer, req.header));
        self.most
            .fetch_max(self.held.len(), std::sync::atomic::Ordering::Relaxed);
    }

    fn on_turn(&mut self, core: &mut Core) -> bool {
        match self.held.pop_front() {
            Some((peer, header)) => {
                core.reply(peer, &header, 0, &[]);
                true
            }
            None => false,
        }
    }

    fn busy(&self) -> bool {
        self.held.len() >= self.limit
    }
}

/// A service that says it is busy gets no more requests until it is not: the rest wait
/// in their receive slots (parked), none is lost, and the service never holds more than
/// its bound however many a client sends.
#[test]
fn a_busy_service_gets_no_more_requests_than_its_bound() {
    let cfg = EngineConfig {
        cores: 1,
        no_pin: true,
        fabric: Selection::provider("tcp"),
        ..Default::default()
    };
    if let Err(e) = nacre_fabric::Info::find(&cfg.fabric) {
        nacre_fabric::testing::skip(&format!("busy service test: tcp not available: {e}"));
        return;
    }
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let engine = {
        let most = most.clone();
        Engine::start(&cfg, move |_, _| Bounded {
            held: Default::default(),
            limit: 4,
            most: most.clone(),
        })
        .expect("engine")
    };
    let mut c = client_of(&engine, 64);
    for i in 0..48u64 {
        c.send(Opcode(400), 1000 + i, b"x").unwrap();
    }
    let mut seen: Vec<u64> = (0..48)
        .map(|_| c.next_reply().unwrap().header.request_id)
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1000..1048).collect::<Vec<_>>());
    assert_eq!(most.load(std::sync::atomic::Ordering::Relaxed), 4);
    let m = metrics(&engine);
    assert!(m.parked_messages > 0, "{m:?}");
    engine.stop();
}
