//! `nacre-bench ior`, in the spirit of IOR: `--tasks N` tasks (threads, each with a
//! client of its own, as IOR's processes have) write and then read `-s` segments of
//! one `-b` block each, in `-t` transfers, to one shared file (block of task i in
//! segment s at `(s * tasks + i) * block`) or to a file per task (`-F`). `-C` makes
//! each task read what its neighbour wrote, so no client reads bytes it just wrote.
//! One line per phase: `phase=write|read bw_mib_s=<float>`. On nacre when an MGS is
//! given (`--mgs` or `NACRE_MGS`) and `-o` is a path in it; with `--local` the same
//! pattern runs with pread/pwrite and O_DIRECT on a local file, so both figures come
//! from one tool in one run. The write phase ends with an fsync per file, as IOR's
//! `-e`; every transfer carries its offset in its first bytes and the read phase checks
//! it, so a misplaced transfer fails the run.

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use nacre_client::{Client, ClientConfig, OpenOptions, O_BUFFERED};
use nacre_proto::layout::{FirstOst, StripeCount, StripeSpec};

use crate::format::parse_size;
use crate::BenchError;

#[derive(clap::Args, Clone)]
pub struct IorArgs {
    /// Bytes per transfer (k, m, g suffixes).
    #[arg(short = 't', default_value = "1m", value_parser = parse_size)]
    transfer: u64,
    /// Bytes each task writes per segment (a multiple of the transfer).
    #[arg(short = 'b', default_value = "64m", value_parser = parse_size)]
    block: u64,
    /// Segments.
    #[arg(short = 's', default_value_t = 1)]
    segments: u64,
    /// A file per task (`PATH.<task>`) instead of one shared file.
    #[arg(short = 'F')]
    file_per_task: bool,
    /// Run the write phase (with neither -w nor -r: both).
    #[arg(short = 'w')]
    write: bool,
    /// Run the read phase.
    #[arg(short = 'r')]
    read: bool,
    /// Each task reads the data of its neighbour (task + 1).
    #[arg(short = 'C')]
    reorder: bool,
    /// Tasks (threads, each with its own client).
    #[arg(long, default_value_t = 1)]
    tasks: u64,
    /// OSTs each new file stripes over (-1: all).
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    stripe_count: i64,
    /// Bytes per stripe of each new file.
    #[arg(long, default_value = "1m", value_parser = parse_size)]
    stripe_size: u64,
    /// Copies of every byte of each new file (2: as a persistent file system keeps).
    #[arg(long, default_value_t = 1)]
    mirror_count: u32,
    /// The test file: a path in nacre, or a local path with --local.
    #[arg(short = 'o', default_value = "/ior.dat")]
    path: String,
    /// The MGS, HOST:PORT [env: NACRE_MGS].
    #[arg(long)]
    mgs: Option<String>,
    /// Run on the local file system at -o with system calls and O_DIRECT.
    #[arg(long)]
    local: bool,
    /// Open nacre files with O_BUFFERED: small transfers in order are gathered into
    /// 1 MiB windows and read ahead, as a Lustre client's page cache does (transfers
    /// of 1 MiB or more go straight through either way).
    #[arg(long, conflicts_with = "local")]
    buffered: bool,
}

/// Where the bytes of one task's transfers go, as IOR lays them out.
#[derive(Clone, Copy)]
struct Pattern {
    transfer: u64,
    block: u64,
    segments: u64,
    tasks: u64,
    per_task: bool,
}

impl Pattern {
    /// File index and offset of transfer `t` of segment `s` of `task`.
    fn place(&self, task: u64, s: u64, t: u64) -> (u64, u64) {
        let within = t * self.transfer;
        match self.per_task {
            true => (task, s * self.block + within),
            false => (0, (s * self.tasks + task) * self.block + within),
        }
    }

    fn transfers(&self) -> u64 {
        self.block / self.transfer
    }
}

/// One open file of a task.
trait TaskFile: Send + Sync {
    fn write_at(&self, buf: &[u8], at: u64) -> Result<(), String>;
    fn read_at(&self, buf: &mut [u8], at: u64) -> Result<(), String>;
    fn sync(&self) -> Result<(), String>;
}

impl TaskFile for nacre_client::File {
    fn write_at(&self, buf: &[u8], at: u64) -> Result<(), String> {
        match nacre_client::File::write_at(self, buf, at) {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(n) => Err(format!("short write at {at}: {n} of {}", buf.len())),
            Err(e) => Err(format!("write at {at}: {e}")),
        }
    }
    fn read_at(&self, buf: &mut [u8], at: u64) -> Result<(), String> {
        match nacre_client::File::read_at(self, buf, at) {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(n) => Err(format!("short read at {at}: {n} of {}", buf.len())),
            Err(e) => Err(format!("read at {at}: {e}")),
        }
    }
    fn sync(&self) -> Result<(), String> {
        self.fsync().map_err(|e| format!("fsync: {e}"))
    }
}

impl TaskFile for std::fs::File {
    fn write_at(&self, buf: &[u8], at: u64) -> Result<(), String> {
        FileExt::write_all_at(self, buf, at).map_err(|e| format!("pwrite at {at}: {e}"))
    }
    fn read_at(&self, buf: &mut [u8], at: u64) -> Result<(), String> {
        FileExt::read_exact_at(self, buf, at).map_err(|e| format!("pread at {at}: {e}"))
    }
    fn sync(&self) -> Result<(), String> {
        self.sync_all().map_err(|e| format!("fsync: {e}"))
    }
}

/// Opens files for the run: on nacre through a client per task, or locally.
enum Target {
    Nacre {
        mgs: String,
        spec: StripeSpec,
        /// O_BUFFERED or 0.
        buffered: i32,
    },
    Local,
}

impl Target {
    fn client(&self) -> Result<Option<Client>, String> {
        match self {
            Target::Nacre { mgs, .. } => Client::connect(mgs, ClientConfig::default())
                .map(Some)
                .map_err(|e| format!("connecting to {mgs}: {e}")),
            Target::Local => Ok(None),
        }
    }

    fn open(
        &self,
        client: Option<&Client>,
        path: &str,
        create: bool,
    ) -> Result<Box<dyn TaskFile>, String> {
        let flags = match create {
            true => libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC,
            false => libc::O_RDWR,
        };
        match (self, client) {
            (Target::Nacre { spec, buffered, .. }, Some(c)) => {
                let opt = OpenOptions::read()
                    .flags(flags | buffered)
                    .mode(0o644)
                    .layout(*spec);
                c.open(path, &opt)
                    .map(|f| Box::new(f) as Box<dyn TaskFile>)
                    .map_err(|e| format!("{path}: {e}"))
            }
            _ => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .truncate(create)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .map(|f| Box::new(f) as Box<dyn TaskFile>)
                .map_err(|e| format!("{path}: {e}")),
        }
    }
}

/// A transfer buffer, page-aligned for O_DIRECT and on huge pages where the system
/// gives them, as the servers' pool is: the same memory for both sides of the
/// comparison, so the local reference is not slowed by 4 KiB pages.
struct Aligned {
    mem: nacre_fabric::Memory,
    len: usize,
}

impl Aligned {
    const ALIGN: usize = 4096;

    fn new(len: usize) -> Result<Aligned, String> {
        let mem = nacre_fabric::Memory::anonymous_huge(len)
            .map_err(|e| format!("transfer buffer: {e}"))?;
        Ok(Aligned { mem, len })
    }
    fn get(&self) -> &[u8] {
        &self.mem.bytes()[..self.len]
    }
    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.mem.bytes_mut()[..self.len]
    }
}

/// Stamps a transfer with its file and offset (IOR's data signature, in short).
fn stamp(buf: &mut [u8], file: u64, at: u64) {
    let tag = (file << 48) ^ at ^ 0x6e61_6372_6500_0000;
    let n = buf.len().min(8);
    buf[..n].copy_from_slice(&tag.to_le_bytes()[..n]);
}

fn stamped(buf: &[u8], file: u64, at: u64) -> bool {
    let mut want = vec![0u8; buf.len().min(8)];
    stamp(&mut want, file, at);
    buf[..want.len()] == want[..]
}

pub fn run(args: &IorArgs) -> Result<(), BenchError> {
    let p = pattern(args)?;
    let target = target(args)?;
    if args.local && !(p.transfer as usize).is_multiple_of(Aligned::ALIGN) {
        return Err(BenchError::msg(format!(
            "--local uses O_DIRECT: the transfer ({}) must be a multiple of {}",
            p.transfer,
            Aligned::ALIGN
        )));
    }
    let (write, read) = match (args.write, args.read) {
        (false, false) => (true, true),
        wr => wr,
    };
    println!(
        "ior: {} tasks={} t={} b={} s={} {} stripe_count={} mirror_count={}",
        match (args.local, args.buffered) {
            (true, _) => "local O_DIRECT",
            (false, true) => "nacre O_BUFFERED",
            (false, false) => "nacre",
        },
        p.tasks,
        p.transfer,
        p.block,
        p.segments,
        if p.per_task {
            "file-per-task"
        } else {
            "shared-file"
        },
        args.stripe_count,
        args.mirror_count
    );
    let target = Arc::new(target);
    if write {
        phase(&target, &args.path, p, Phase::Write, false)?;
    }
    if read {
        phase(&target, &args.path, p, Phase::Read, args.reorder)?;
    }
    Ok(())
}

fn pattern(args: &IorArgs) -> Result<Pattern, BenchError> {
    if args.transfer == 0 || args.block == 0 || args.segments == 0 || args.tasks == 0 {
        return Err(BenchError::msg("-t, -b, -s and --tasks must be at least 1"));
    }
    if !args.block.is_multiple_of(args.transfer) {
        return Err(BenchError::msg(format!(
            "the block ({}) must be a multiple of the transfer ({})",
            args.block, args.transfer
        )));
    }
    Ok(Pattern {
        transfer: args.transfer,
        block: args.block,
        segments: args.segments,
        tasks: args.tasks,
        per_task: args.file_per_task,
    })
}

fn target(args: &IorArgs) -> Result<Target, BenchError> {
    if args.local {
        return Ok(Target::Local);
    }
    let mgs = nacre_mgc::mgs_address(args.mgs.clone()).ok_or_else(|| {
        BenchError::msg("no MGS: give --mgs HOST:PORT, set NACRE_MGS, or run with --local")
    })?;
    let c = args.stripe_count;
    let count = StripeCount::from_lfs(c)
        .ok_or_else(|| BenchError::msg(format!("stripe count {c}: give -1 or 1 and up")))?;
    let stripe_size = u32::try_from(args.stripe_size)
        .map_err(|_| BenchError::msg("the stripe size must be below 4 GiB"))?;
    Ok(Target::Nacre {
        mgs,
        spec: StripeSpec {
            stripe_size,
            count,
            first: FirstOst::Any,
            mirrors: args.mirror_count,
        },
        buffered: if args.buffered { O_BUFFERED } else { 0 },
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Write,
    Read,
}

/// Runs one phase on every task; prints its line. Opening (and, for a write, creating)
/// happens before the clock starts; the fsync of a write phase is inside it.
fn phase(
    target: &Arc<Target>,
    path: &str,
    p: Pattern,
    ph: Phase,
    reorder: bool,
) -> Result<(), BenchError> {
    let start = Arc::new(Barrier::new(p.tasks as usize + 1));
    let done = Arc::new(Barrier::new(p.tasks as usize + 1));
    let shared_ready = Arc::new(Barrier::new(p.tasks as usize));
    let handles: Vec<_> = (0..p.tasks)
        .map(|task| {
            let (target, path) = (target.clone(), path.to_string());
            let (start, done, shared_ready) = (start.clone(), done.clone(), shared_ready.clone());
            std::thread::spawn(move || {
                let who = match reorder {
                    true => (task + 1) % p.tasks,
                    false => task,
                };
                let opened = open_task(&target, &path, p, ph, task, who, &shared_ready);
                start.wait();
                let r = opened.and_then(|(file, name)| move_data(&*file, &name, p, ph, who));
                done.wait();
                r
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    done.wait();
    let secs = t0.elapsed().as_secs_f64();
    for h in handles {
        h.join()
            .map_err(|_| BenchError::msg("a task panicked"))?
            .map_err(BenchError)?;
    }
    let bytes = (p.tasks * p.segments * p.block) as f64;
    let mib_s = bytes / (1 << 20) as f64 / secs;
    let name = match ph {
        Phase::Write => "write",
        Phase::Read => "read",
    };
    println!("phase={name} bw_mib_s={mib_s:.1} seconds={secs:.3} bytes={bytes:.0}");
    Ok(())
}

/// Opens what one task of a phase works on: its file (or the shared one, created by
/// task 0 before the others open it). `who` is the task whose data it moves (its
/// neighbour with -C).
fn open_task(
    target: &Target,
    path: &str,
    p: Pattern,
    ph: Phase,
    task: u64,
    who: u64,
    shared_ready: &Barrier,
) -> Result<(Box<dyn TaskFile>, String), String> {
    let client = target.client();
    let name = match p.per_task {
        true => format!("{path}.{}", p.place(who, 0, 0).0),
        false => path.to_string(),
    };
    let shared_write = !p.per_task && ph == Phase::Write;
    if shared_write && task != 0 {
        shared_ready.wait();
    }
    let create = ph == Phase::Write && (p.per_task || task == 0);
    let file = client.and_then(|c| target.open(c.as_ref(), &name, create));
    if shared_write && task == 0 {
        shared_ready.wait();
    }
    Ok((file?, name))
}

/// Moves one task's data for a phase, transfer after transfer; a write ends in fsync.
fn move_data(
    file: &dyn TaskFile,
    name: &str,
    p: Pattern,
    ph: Phase,
    who: u64,
) -> Result<(), String> {
    let mut buf = Aligned::new(p.transfer as usize)?;
    for s in 0..p.segments {
        for t in 0..p.transfers() {
            let (fi, at) = p.place(who, s, t);
            match ph {
                Phase::Write => {
                    stamp(buf.get_mut(), fi, at);
                    file.write_at(buf.get(), at)?;
                }
                Phase::Read => {
                    file.read_at(buf.get_mut(), at)?;
                    if !stamped(buf.get(), fi, at) {
                        return Err(format!("{name}: the transfer at {at} holds other data"));
                    }
                }
            }
        }
    }
    if ph == Phase::Write {
        file.sync()?;
    }
    Ok(())
}
