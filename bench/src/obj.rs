//! `nacre-bench obj`: object I/O against one OSS of a running file system, found through
//! the MGS (`--mgs` or `NACRE_MGS`), with fio's parameters. Requests go straight to the
//! core that owns each object, `--depth` of them in flight; blocks larger than the
//! inline size move by RMA from and into one registered buffer per request in flight,
//! smaller ones ride inline. Reads are laid out first (not timed).
//! Last line: `bw_mib_s=<float> iops=<float>`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nacre_client::objects::OstRoute;
use nacre_client::{ClientEndpoint, RpcConfig, SessionId};
use nacre_fabric::{Access, Memory, MemoryRegion, Selection};
use nacre_mgc::{BootConfig, MgsClient};
use nacre_proto::bootstrap::{Role, RoleKind};
use nacre_proto::object::{Data, IoReply, ObjFlags, ObjTarget, ReadReq, WriteReq};
use nacre_proto::Opcode;

use crate::disk::Rw;
use crate::format::parse_size;
use crate::BenchError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Checksum {
    Auto,
    On,
    Off,
}

#[derive(clap::Args)]
pub struct ObjArgs {
    /// The MGS, HOST:PORT [env: NACRE_MGS].
    #[arg(long)]
    mgs: Option<String>,
    /// The OST to drive.
    #[arg(long, default_value_t = 0)]
    ost: u32,
    #[arg(long, value_enum, default_value = "write")]
    rw: Rw,
    /// Block size per request.
    #[arg(long, default_value = "1m")]
    bs: String,
    /// Requests in flight.
    #[arg(long, default_value_t = 8)]
    depth: usize,
    /// Bytes of objects to cover (spread over one object per server core).
    #[arg(long, default_value = "1g")]
    size: String,
    /// Seconds at most (the run also ends once `size` was covered, for sequential I/O).
    #[arg(long, default_value_t = 10.0)]
    runtime: f64,
    /// crc32c checksums with the data: `auto` is the client library's default for the
    /// provider (on everywhere but shm).
    #[arg(long, value_enum, default_value = "auto")]
    checksum: Checksum,
}

/// One OST's server as the bench drives it.
struct Target {
    route: OstRoute,
    sessions: Vec<SessionId>,
}

pub fn run(args: &ObjArgs) -> Result<(), BenchError> {
    let mgs = nacre_mgc::mgs_address(args.mgs.clone())
        .ok_or_else(|| BenchError::msg("no MGS: give --mgs HOST:PORT or set NACRE_MGS"))?;
    let bs = parse_size(&args.bs).map_err(BenchError)? as usize;
    let size = parse_size(&args.size).map_err(BenchError)?;
    let runtime_ok = args.runtime.is_finite() && args.runtime > 0.0;
    if bs == 0 || size < bs as u64 || args.depth == 0 || !runtime_ok {
        return Err(BenchError::msg(
            "--bs and --depth must be positive, --size at least --bs, --runtime > 0",
        ));
    }
    let mut boot = MgsClient::connect(&mgs, BootConfig::default())?;
    let (map, key) = (boot.fetch_map()?, boot.key().cloned());
    let role = Role {
        kind: RoleKind::Oss,
        index: args.ost,
    };
    let server = map
        .server(role)
        .ok_or_else(|| BenchError::msg(format!("no {role} in the cluster map of {mgs}")))?;
    let cfg = RpcConfig {
        depth: args.depth.max(16),
        msg_size: 8192,
        timeout: Duration::from_secs(30),
        key,
        ..Default::default()
    };
    // Served from the address that routes to the MGS (`NACRE_SOURCE` when set), as
    // the client library's endpoints are: the OSS pushes reads there.
    let source = std::env::var("NACRE_SOURCE").ok().filter(|s| !s.is_empty());
    let sel = Selection::toward(&server.provider, source, &mgs);
    let mut c = ClientEndpoint::open(&sel, cfg)?;
    let route = OstRoute {
        ost: args.ost,
        epoch: server.epoch,
        cores: server.cores.clone(),
    };
    let sessions = route
        .cores
        .iter()
        .map(|name| c.connect(name))
        .collect::<Result<_, _>>()?;
    let target = Target { route, sessions };
    let job = Job::new(args, bs, size, target.sessions.len());
    let buffers = c
        .endpoint()
        .register(Memory::anonymous_huge(args.depth * bs)?, Access::ALL)?;
    buffers.fill(0, args.depth * bs, 0x5a)?;
    let checksum = match args.checksum {
        Checksum::Auto => nacre_client::objects::checksum_by_default(&server.provider),
        Checksum::On => true,
        Checksum::Off => false,
    };
    if matches!(args.rw, Rw::Read | Rw::Randread) {
        let layout = Job::new(args, bs, size, target.sessions.len());
        drive(
            &mut c,
            &target,
            &buffers,
            layout.sequential_writes(),
            checksum,
            None,
        )?;
    }
    let deadline = Duration::from_secs_f64(args.runtime);
    let start = Instant::now();
    let (ops, bytes) = drive(&mut c, &target, &buffers, job, checksum, Some(deadline))?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "nacre-bench obj: {:?} bs={bs} depth={} ost={} provider={} cores={} checksum={checksum}: {ops} ops, {bytes} bytes in {secs:.2} s",
        args.rw,
        args.depth,
        args.ost,
        server.provider,
        target.sessions.len()
    );
    println!(
        "bw_mib_s={:.2} iops={:.2}",
        bytes as f64 / secs / (1 << 20) as f64,
        ops as f64 / secs
    );
    Ok(())
}

/// Which block each request moves: sequential or uniformly random over the objects.
struct Job {
    rw: Rw,
    bs: usize,
    depth: usize,
    blocks: u64,
    objects: u64,
    next: u64,
    rng: u64,
}

impl Job {
    fn new(args: &ObjArgs, bs: usize, size: u64, objects: usize) -> Job {
        Job {
            rw: args.rw,
            bs,
            depth: args.depth,
            blocks: size / bs as u64,
            objects: objects as u64,
            next: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// The same blocks, written in order: how reads find their data.
    fn sequential_writes(mut self) -> Job {
        self.rw = Rw::Write;
        self
    }

    fn writes(&self) -> bool {
        matches!(self.rw, Rw::Write | Rw::Randwrite)
    }

    /// (object, offset) of the next block, None when a sequential job covered them all.
    fn next(&mut self) -> Option<(u64, u64)> {
        let block = match self.rw {
            Rw::Write | Rw::Read => {
                if self.next >= self.blocks {
                    return None;
                }
                self.next += 1;
                self.next - 1
            }
            Rw::Randwrite | Rw::Randread => {
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                self.rng % self.blocks
            }
        };
        // Block k lives on object k % objects: every server core gets its share.
        let object = 1 + block % self.objects;
        Some((object, (block / self.objects) * self.bs as u64))
    }
}

/// Runs `job` with one request per buffer slot in flight, until it is done or the
/// deadline passes; returns (operations, bytes).
fn drive(
    c: &mut ClientEndpoint,
    t: &Target,
    bufs: &MemoryRegion,
    mut job: Job,
    checksum: bool,
    deadline: Option<Duration>,
) -> Result<(u64, u64), BenchError> {
    // One buffer slot per request in flight (the registration may be larger: huge pages).
    let depth = job.depth;
    let inline = match job.writes() {
        true => job.bs <= c.inline_max(),
        false => job.bs <= c.reply_inline_max(),
    };
    let start = Instant::now();
    let mut free: VecDeque<usize> = (0..depth).collect();
    let mut in_flight: Vec<(u64, usize)> = Vec::with_capacity(depth);
    let (mut ops, mut bytes, mut done) = (0u64, 0u64, false);
    let mut body = vec![0u8; 128 + if inline { job.bs } else { 0 }];
    let payload = vec![0x5au8; job.bs];
    let crc = if checksum {
        crc32c::crc32c(&payload)
    } else {
        0
    };
    loop {
        while !done && !free.is_empty() {
            let Some((object, offset)) = job.next() else {
                done = true;
                break;
            };
            let slot = free.pop_front().expect("checked");
            let core = (object % t.sessions.len() as u64) as usize;
            let mut flags = if checksum {
                ObjFlags::CHECKSUM
            } else {
                ObjFlags::default()
            };
            if !inline {
                flags = flags.with(ObjFlags::BULK);
            }
            let target = ObjTarget {
                ost: t.route.ost,
                flags,
                epoch: t.route.epoch,
                object,
                cap: None,
            };
            let desc = bufs.remote(slot * job.bs, job.bs)?;
            let (op, n) = if job.writes() {
                let data = if inline {
                    Data::Inline(&payload)
                } else {
                    Data::Bulk(desc)
                };
                let req = WriteReq {
                    target,
                    offset,
                    len: job.bs as u64,
                    crc,
                    data,
                    key: None,
                };
                (Opcode::OBJ_WRITE, req.encode(&mut body)?)
            } else {
                let req = ReadReq {
                    target,
                    offset,
                    len: job.bs as u64,
                    bulk: (!inline).then_some(desc),
                };
                (Opcode::OBJ_READ, req.encode(&mut body)?)
            };
            let id = c.send(t.sessions[core], op, &body[..n])?;
            in_flight.push((id, slot));
        }
        if in_flight.is_empty() {
            break;
        }
        let (_, reply) = c.next_reply()?;
        if reply.header.status != 0 {
            return Err(BenchError::msg(format!(
                "server error: {}",
                std::io::Error::from_raw_os_error(-reply.header.status)
            )));
        }
        let r = IoReply::decode(&reply.body).map_err(|e| BenchError::msg(e.to_string()))?;
        let at = in_flight
            .iter()
            .position(|&(id, _)| id == reply.header.request_id)
            .ok_or_else(|| BenchError::msg("a reply to no request of ours"))?;
        free.push_back(in_flight.swap_remove(at).1);
        ops += 1;
        bytes += r.len;
        if deadline.is_some_and(|d| start.elapsed() >= d) {
            done = true;
        }
    }
    Ok((ops, bytes))
}
