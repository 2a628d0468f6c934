//! `nacre-bench wire-to-disk`: the data path end to end. A client hands the server 1 MiB
//! blocks by RMA descriptor (BULK_WRITE); one engine core pulls each block with fi_read
//! into a registered pool buffer and writes that same buffer to a file with O_DIRECT
//! through io_uring, then replies. Last line: `bw_mib_s=<float> iops=<float>`.

use std::path::PathBuf;
use std::time::Instant;

use nacre_client::{RpcClient, RpcConfig};
use nacre_engine::{
    BulkDone, Core, Engine, EngineConfig, FileId, Incoming, IoCompletion, PoolConfig,
    ReactorConfig, Service, SizeClass, StorageConfig,
};
use nacre_fabric::{Access, EndpointConfig, Memory, PeerAddr};
use nacre_proto::{BodyReader, BulkDesc, Header, Opcode};

use crate::control::{Control, Side};
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

fn serve(args: &WireArgs, role: &Side, ctl: &mut Control, bs: usize) -> Result<(), BenchError> {
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
        storage_paths: args
            .file
            .parent()
            .map(|d| d.to_path_buf())
            .into_iter()
            .collect(),
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

/// A BULK_WRITE on its way: pulled by the engine, then written, then answered.
struct InFlightWrite {
    peer: PeerAddr,
    header: Header,
    offset: u64,
    /// Slabs still to be written, and how many writes are out.
    writes_left: usize,
    status: i32,
}

/// The service: BULK_WRITE { file offset u64, bulk descriptor } -> pull -> O_DIRECT write
/// of the same slabs -> reply. The engine moves the bytes; this only says where they go.
struct BulkWrite {
    file: Option<FileId>,
    writes: Vec<Option<InFlightWrite>>,
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
            writes: Vec::new(),
            free: Vec::new(),
        }
    }

    fn finish_one(&mut self, core: &mut Core, id: usize, status: i32) {
        let Some(w) = self.writes.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        w.writes_left -= 1;
        if w.status == 0 {
            w.status = status;
        }
        if w.writes_left == 0 {
            let w = self.writes[id].take().expect("checked");
            self.free.push(id);
            core.reply(w.peer, &w.header, w.status, &[]);
        }
    }
}

impl Service for BulkWrite {
    fn on_request(&mut self, core: &mut Core, req: Incoming<'_>) {
        if req.header.opcode != Opcode::BULK_WRITE || self.file.is_none() {
            return core.reply(req.peer, &req.header, -ENOSYS, &[]);
        }
        let mut r = BodyReader::new(req.body);
        let Ok((offset, desc)) = r.u64().and_then(|offset| Ok((offset, r.bulk()?))) else {
            return core.reply(req.peer, &req.header, -EBADMSG, &[]);
        };
        let id = self.free.pop().unwrap_or_else(|| {
            self.writes.push(None);
            self.writes.len() - 1
        });
        if let Err(e) = core.pull(req.peer, &desc, 0, desc.len as usize, id as u64) {
            self.free.push(id);
            return core.reply(req.peer, &req.header, -e.errno(), &[]);
        }
        self.writes[id] = Some(InFlightWrite {
            peer: req.peer,
            header: req.header,
            offset,
            writes_left: 0,
            status: 0,
        });
    }

    fn on_bulk(&mut self, core: &mut Core, done: BulkDone) {
        let id = done.tag as usize;
        let Some(w) = self.writes.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let len = match done.result {
            Ok(len) => len,
            Err(errno) => {
                w.writes_left = 1;
                return self.finish_one(core, id, -errno);
            }
        };
        let file = self.file.expect("checked at request time");
        let mut at = 0;
        w.writes_left = done.bufs.len();
        let offset = w.offset;
        for buf in done.bufs {
            let n = buf.capacity().min(len - at);
            let pos = offset + at as u64;
            at += n;
            if let Err((e, buf)) = core.storage.write(file, buf, n, pos, id as u64) {
                tracing::warn!("bulk write refused: {e}");
                let _ = core.pool.put(buf);
                self.finish_one(core, id, -EINVAL); // misaligned
            }
        }
    }

    fn on_storage(&mut self, core: &mut Core, done: IoCompletion) {
        let status = match done.result {
            Ok(_) => 0,
            Err(errno) => -errno,
        };
        if let Some(b) = done.buf {
            let _ = core.pool.put(b);
        }
        self.finish_one(core, done.user_data as usize, status);
    }
}

/// The errnos the service answers with (negated in replies).
const EINVAL: i32 = 22;
const ENOSYS: i32 = 38;
const EBADMSG: i32 = 74;

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
            body[8..].copy_from_slice(&data.remote(buf * bs, bs)?.to_bytes());
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
