//! `nacre-bench wire-to-disk`: the data path end to end. A client hands the server 1 MiB
//! blocks by RMA descriptor (BULK_WRITE); one engine core pulls each block with fi_read
//! into a registered pool buffer and writes that same buffer to a file with O_DIRECT
//! through io_uring, then replies. Last line: `bw_mib_s=<float> iops=<float>`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Instant;

use nacre_client::{RpcClient, RpcConfig};
use nacre_engine::{
    Core, Engine, EngineConfig, FileId, IoCompletion, PoolBuf, PoolConfig, ReactorConfig, Request,
    Service, SizeClass, StorageConfig,
};
use nacre_fabric::{
    Access, Completion, CompletionError, EndpointConfig, Memory, PeerAddr, RemoteRegion,
};
use nacre_proto::{BodyReader, BulkDesc, Header, Opcode};

use crate::control::{Control, Role};
use crate::format::parse_size;
use crate::{BenchError, CommonArgs};

#[derive(clap::Args)]
pub struct WireArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Server: the file the blocks are written to (on a real file system).
    #[arg(long, default_value = "target/bench-disk/wire-to-disk.dat")]
    file: PathBuf,
    /// Client: block size handed per request.
    #[arg(long, default_value = "1m")]
    bs: String,
    /// Client: bytes to send in all.
    #[arg(long, default_value = "1g")]
    size: String,
    /// Requests in flight (client); pool buffers of the server core (server).
    #[arg(long, default_value_t = 16)]
    iodepth: usize,
}

pub fn run(args: &WireArgs) -> Result<(), BenchError> {
    args.common.validate()?;
    let role = args.common.role();
    let mut ctl = Control::establish(&role)?;
    let bs = parse_size(&args.bs).map_err(BenchError)? as usize;
    if bs == 0 || !bs.is_multiple_of(4096) {
        return Err(BenchError::msg(
            "--bs must be a positive multiple of 4096 (O_DIRECT)",
        ));
    }
    if ctl.is_server {
        serve(args, &role, &mut ctl, bs)
    } else {
        let size = parse_size(&args.size).map_err(BenchError)?;
        send(args, &mut ctl, bs, size)
    }
}

// ---------------------------------------------------------------- server side

fn serve(args: &WireArgs, role: &Role, ctl: &mut Control, bs: usize) -> Result<(), BenchError> {
    let cfg = EngineConfig {
        cores: 1,
        fabric: nacre_fabric::Selection {
            provider: args.common.provider.clone(),
            node: Some(role.src_addr.clone()),
            ..Default::default()
        },
        endpoint: EndpointConfig::default(),
        pool: PoolConfig {
            classes: vec![SizeClass {
                size: bs.div_ceil(4096) * 4096,
                count: args.iodepth.max(1),
            }],
            huge_pages: true,
        },
        storage: StorageConfig {
            queue_depth: args.iodepth.max(1) as u32 * 2,
            require_io_uring: true,
            ..Default::default()
        },
        reactor: ReactorConfig::default(),
        ..Default::default()
    };
    if let Some(dir) = args.file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let path = args.file.clone();
    let engine = Engine::start(&cfg, move |_, core| BulkWrite::new(core, &path))?;
    ctl.send(&engine.cores()[0].fabric_name)?;
    ctl.recv()?; // the client says when it is done
    for (core, m) in engine.stop().iter().enumerate() {
        eprint!("{}", m.prometheus(core));
    }
    Ok(())
}

/// A BULK_WRITE on its way: pulled from the client, then written, then answered.
struct Pending {
    peer: PeerAddr,
    header: Header,
    offset: u64,
    remote: RemoteRegion,
    buf: Option<PoolBuf>,
}

/// The service: BULK_WRITE { file offset u64, bulk descriptor } -> fi_read -> O_DIRECT write.
struct BulkWrite {
    file: Option<FileId>,
    waiting: VecDeque<Pending>,
    active: Vec<Option<Pending>>,
    free: Vec<usize>,
}

impl BulkWrite {
    fn new(core: &mut Core, path: &std::path::Path) -> BulkWrite {
        let file = core
            .storage
            .open(path, true)
            .map_err(|e| tracing::error!("{e}"))
            .ok();
        BulkWrite {
            file,
            waiting: VecDeque::new(),
            active: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Starts waiting requests while the pool has buffers (back-pressure otherwise).
    fn start_waiting(&mut self, core: &mut Core) -> bool {
        let mut moved = false;
        while let Some(p) = self.waiting.front() {
            let len = p.remote.len() as usize;
            let Some(buf) = core.pool.get(len) else { break };
            let mut p = self.waiting.pop_front().expect("front exists");
            let id = self.free.pop().unwrap_or_else(|| {
                self.active.push(None);
                self.active.len() - 1
            });
            let posted = match buf.fabric_slice(len) {
                Some(dst) => core.ep.post_read(dst, p.peer, &p.remote, 0, id as u64),
                None => Err(nacre_fabric::ErrorKind::ForeignRegion.into()),
            };
            if let Err(e) = posted {
                tracing::warn!("pulling a bulk buffer: {e}");
                core.reply(p.peer, &p.header, -EIO, &[]);
                let _ = core.pool.put(buf);
                self.free.push(id);
                continue;
            }
            p.buf = Some(buf);
            self.active[id] = Some(p);
            moved = true;
        }
        moved
    }

    fn finish(&mut self, core: &mut Core, id: usize, status: i32, buf: Option<PoolBuf>) {
        let Some(p) = self.active.get_mut(id).and_then(Option::take) else {
            return;
        };
        self.free.push(id);
        if let Some(b) = buf.or(p.buf) {
            let _ = core.pool.put(b);
        }
        core.reply(p.peer, &p.header, status, &[]);
    }
}

impl Service for BulkWrite {
    fn on_request(&mut self, core: &mut Core, req: Request<'_>) {
        if req.header.opcode != Opcode::BULK_WRITE || self.file.is_none() {
            return core.reply(req.peer, &req.header, -ENOSYS, &[]);
        }
        let mut r = BodyReader::new(req.body);
        let parsed = r.u64().and_then(|offset| Ok((offset, r.bulk()?)));
        let Ok((offset, desc)) = parsed else {
            return core.reply(req.peer, &req.header, -EBADMSG, &[]);
        };
        let Ok(remote) = RemoteRegion::decode(&desc.to_bytes()) else {
            return core.reply(req.peer, &req.header, -EBADMSG, &[]);
        };
        if !core.pool.serves(remote.len() as usize) {
            return core.reply(req.peer, &req.header, -EMSGSIZE, &[]); // no slab that large
        }
        self.waiting.push_back(Pending {
            peer: req.peer,
            header: req.header,
            offset,
            remote,
            buf: None,
        });
        self.start_waiting(core);
    }

    fn on_fabric(&mut self, core: &mut Core, done: Result<Completion, Box<CompletionError>>) {
        let (id, failed) = match done {
            Ok(c) => (c.context as usize, None),
            Err(e) => (e.context.unwrap_or(u64::MAX) as usize, Some(e)),
        };
        if let Some(e) = failed {
            tracing::warn!("bulk pull failed: {e}");
            return self.finish(core, id, -EIO, None);
        }
        let Some(p) = self.active.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let buf = p.buf.take().expect("pulled into a buffer");
        let len = p.remote.len() as usize;
        let file = self.file.expect("checked at request time");
        if let Err((e, buf)) = core.storage.write(file, buf, len, p.offset, id as u64) {
            tracing::warn!("bulk write refused: {e}");
            self.finish(core, id, -EINVAL, Some(buf)); // misaligned
        }
    }

    fn on_storage(&mut self, core: &mut Core, done: IoCompletion) {
        let status = match done.result {
            Ok(_) => 0,
            Err(errno) => -errno,
        };
        self.finish(core, done.user_data as usize, status, done.buf);
        self.start_waiting(core);
    }

    fn on_turn(&mut self, core: &mut Core) -> bool {
        self.start_waiting(core)
    }
}

/// The errnos the service answers with (negated in replies).
const EIO: i32 = 5;
const EINVAL: i32 = 22;
const ENOSYS: i32 = 38;
const EBADMSG: i32 = 74;
const EMSGSIZE: i32 = 90;

// ---------------------------------------------------------------- client side

fn send(args: &WireArgs, ctl: &mut Control, bs: usize, size: u64) -> Result<(), BenchError> {
    let server_name = ctl.recv()?;
    // Serve our endpoint from the interface that reaches the server.
    let sel = nacre_fabric::Selection {
        provider: args.common.provider.clone(),
        node: Some(ctl.local_ip()?.to_string()),
        ..Default::default()
    };
    let depth = args.iodepth.max(1);
    let rpc = RpcConfig {
        depth,
        ..Default::default()
    };
    let mut client = RpcClient::connect(&sel, &server_name, rpc)?;
    let data = client
        .endpoint()
        .register(Memory::anonymous_huge(depth * bs)?, Access::ALL)?;
    data.fill(0, depth * bs, 0xa5)?;

    let blocks = size / bs as u64;
    let start = Instant::now();
    let (mut issued, mut done) = (0u64, 0u64);
    // Which block buffer each request in flight uses: request id -> buffer.
    let mut free: Vec<usize> = (0..depth).rev().collect();
    let mut in_flight: Vec<(u64, usize)> = Vec::with_capacity(depth);
    while done < blocks {
        while issued < blocks {
            let Some(buf) = free.pop() else { break };
            let mut body = [0u8; 8 + BulkDesc::LEN];
            body[..8].copy_from_slice(&(issued * bs as u64).to_le_bytes());
            body[8..].copy_from_slice(&data.remote(buf * bs, bs)?.encode());
            issued += 1;
            in_flight.push((issued, buf));
            client.send(Opcode::BULK_WRITE, issued, &body)?;
        }
        let reply = client.next_reply()?;
        let h = reply.header;
        if h.status != 0 {
            return Err(BenchError::msg(format!(
                "server failed block {}: errno {}",
                h.request_id - 1,
                -h.status
            )));
        }
        let at = in_flight
            .iter()
            .position(|&(id, _)| id == h.request_id)
            .ok_or_else(|| BenchError::msg("reply to a request we did not send"))?;
        free.push(in_flight.swap_remove(at).1);
        done += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    ctl.send(b"done")?;
    println!(
        "nacre-bench wire-to-disk: {} blocks of {} B in {:.2} s, {} in flight",
        done, bs, secs, depth
    );
    println!(
        "bw_mib_s={:.2} iops={:.2}",
        (done * bs as u64) as f64 / secs / (1 << 20) as f64,
        done as f64 / secs
    );
    Ok(())
}
