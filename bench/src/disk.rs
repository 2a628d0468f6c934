//! `nacre-bench disk`: the engine's storage path (io_uring, O_DIRECT, fixed buffers and
//! files, one registered pool) driven like fio: the same parameters, and a last line
//! `bw_mib_s=<float> iops=<float>` for scripts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nacre_engine::{
    Backend, BufferPool, IoCompletion, PoolConfig, SizeClass, Storage, StorageConfig,
};

use crate::format::parse_size;
use crate::BenchError;

/// fio's `--rw` patterns, shared by the disk and object benches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rw {
    Read,
    Write,
    Randread,
    Randwrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    IoUring,
    Sync,
}

#[derive(clap::Args)]
pub struct DiskArgs {
    /// File to read or write (created if missing; on a real file system, not tmpfs).
    #[arg(long)]
    file: PathBuf,
    #[arg(long, value_enum)]
    rw: Rw,
    /// Block size (multiple of 4096), e.g. 4k, 1m.
    #[arg(long, default_value = "4k")]
    bs: String,
    #[arg(long, default_value_t = 1)]
    iodepth: usize,
    /// Bytes to transfer (and the file's extent), e.g. 1g.
    #[arg(long, default_value = "1g")]
    size: String,
    /// Stop after this many seconds even if `size` is not done.
    #[arg(long, default_value_t = 10.0)]
    runtime: f64,
    /// Storage backend (io_uring falls back to pread/pwrite only when asked to with sync).
    #[arg(long, value_enum, default_value = "io-uring")]
    backend: BackendArg,
    /// CPU to pin to, as an engine core is pinned (default: the one the engine's plan
    /// picks first); `--no-pin` runs unpinned.
    #[arg(long)]
    cpu: Option<usize>,
    #[arg(long, conflicts_with = "cpu")]
    no_pin: bool,
}

pub fn run(args: &DiskArgs) -> Result<(), BenchError> {
    let bs = parse_size(&args.bs).map_err(BenchError)? as usize;
    let size = parse_size(&args.size).map_err(BenchError)?;
    if bs == 0 || !bs.is_multiple_of(4096) || size < bs as u64 {
        return Err(BenchError::msg(
            "--bs must be a multiple of 4096 and at most --size",
        ));
    }
    if !(args.runtime.is_finite() && args.runtime > 0.0) {
        return Err(BenchError::msg(
            "--runtime must be a positive number of seconds",
        ));
    }
    if let Some(dir) = args.file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let depth = args.iodepth.max(1);
    let cpu = match args.no_pin {
        true => None,
        false => Some(pin(args.cpu, &args.file)?),
    };
    let mut pool = BufferPool::new(
        &PoolConfig {
            classes: vec![SizeClass {
                size: bs,
                count: depth,
            }],
            huge_pages: true,
        },
        None,
    )?;
    let backend = match args.backend {
        BackendArg::IoUring => Backend::IoUring,
        BackendArg::Sync => Backend::Sync,
    };
    let cfg = StorageConfig {
        backend: Some(backend),
        require_io_uring: backend == Backend::IoUring,
        queue_depth: depth as u32,
        max_files: 1,
    };
    let mut storage = Storage::new(&cfg, Some(&pool))?;
    let file = storage.open(&args.file, true)?;
    let blocks = size / bs as u64;
    let reading = matches!(args.rw, Rw::Read | Rw::Randread);
    if reading {
        lay_out(&mut storage, &mut pool, file, bs, blocks)?;
    }
    let mut job = Job {
        rw: args.rw,
        bs,
        blocks,
        next: 0,
        rng: 0x9E37_79B9_7F4A_7C15,
    };
    let deadline = Duration::from_secs_f64(args.runtime);
    let start = Instant::now();
    let (mut issued, mut done, mut bytes) = (0u64, 0u64, 0u64);
    let mut out: Vec<IoCompletion> = Vec::with_capacity(depth);
    let mut stop = false;
    while done < issued || !stop {
        while !stop && storage.in_flight() < depth && issued < blocks {
            let Some(buf) = pool.get(bs) else { break };
            let offset = job.next_offset();
            let r = if reading {
                storage.read(file, buf, bs, offset, issued)
            } else {
                storage.write(file, buf, bs, offset, issued)
            };
            r.map_err(|(e, _)| e)?;
            issued += 1;
        }
        if issued >= blocks {
            stop = true;
        }
        out.clear();
        // Polled, as an engine core runs: submit what is queued, reap what is done, and
        // never sleep in the kernel waiting for a completion.
        storage.flush()?;
        storage.reap(&mut out)?;
        for c in out.drain(..) {
            let n = c.result.map_err(|errno| {
                BenchError::msg(format!(
                    "I/O error: {}",
                    std::io::Error::from_raw_os_error(errno)
                ))
            })?;
            bytes += n as u64;
            done += 1;
            if let Some(b) = c.buf {
                let _ = pool.put(b);
            }
        }
        if start.elapsed() >= deadline {
            stop = true;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "nacre-bench disk: {:?} bs={} iodepth={} backend={:?} cpu={} file={}: {} ops, {} bytes in {:.2} s",
        args.rw,
        bs,
        depth,
        storage.backend(),
        cpu.map_or("unpinned".to_string(), |c| c.to_string()),
        args.file.display(),
        done,
        bytes,
        secs
    );
    println!(
        "bw_mib_s={:.2} iops={:.2}",
        bytes as f64 / secs / (1 << 20) as f64,
        done as f64 / secs
    );
    Ok(())
}

struct Job {
    rw: Rw,
    bs: usize,
    blocks: u64,
    next: u64,
    rng: u64,
}

impl Job {
    fn next_offset(&mut self) -> u64 {
        let block = match self.rw {
            Rw::Read | Rw::Write => {
                let b = self.next % self.blocks;
                self.next += 1;
                b
            }
            Rw::Randread | Rw::Randwrite => {
                // splitmix64: every output bit well mixed.
                self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = self.rng;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)) % self.blocks
            }
        };
        block * self.bs as u64
    }
}

/// Makes sure the file holds `blocks` blocks before a read job (as fio lays files out).
fn lay_out(
    storage: &mut Storage,
    pool: &mut BufferPool,
    file: nacre_engine::FileId,
    bs: usize,
    blocks: u64,
) -> Result<(), BenchError> {
    let have = storage
        .file(file)
        .and_then(|f| f.metadata().ok())
        .map_or(0, |m| m.len());
    let want = blocks * bs as u64;
    let mut at = have / bs as u64 * bs as u64;
    let mut out = Vec::new();
    while at < want || storage.in_flight() > 0 {
        if at < want {
            if let Some(mut b) = pool.get(bs) {
                b.copy_in(&vec![0x5a; bs]);
                storage.write(file, b, bs, at, 0).map_err(|(e, _)| e)?;
                at += bs as u64;
                continue;
            }
        }
        out.clear();
        storage.wait(&mut out)?;
        for c in out.drain(..) {
            c.result
                .map_err(|e| BenchError::msg(format!("laying out the file: errno {e}")))?;
            let _ = pool.put(c.buf.expect("writes carry a buffer"));
        }
    }
    storage.sync_file(file, true, 0)?;
    out.clear();
    storage.wait(&mut out)?;
    Ok(())
}

/// Pins this thread like an engine core: to `cpu`, or to the first CPU of the engine's
/// plan for storage I/O on `file`.
fn pin(cpu: Option<usize>, file: &std::path::Path) -> Result<usize, BenchError> {
    use nacre_engine::topology;
    let cpu = match cpu {
        Some(c) => c,
        None => {
            let allowed = topology::allowed_cpus();
            let dir = file.parent().unwrap_or(std::path::Path::new("."));
            let dir = if dir.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                dir
            };
            let planned = topology::discover().ok().and_then(|mut m| {
                m.storage_irq_cpus = topology::storage_irq_cpus(&[dir.to_path_buf()]);
                topology::choose_cpus(&m, &allowed, None, None, 1).ok()
            });
            planned
                .and_then(|c| c.first().copied())
                .or_else(|| allowed.first().copied())
                .ok_or_else(|| BenchError::msg("no CPU to run on"))?
        }
    };
    topology::pin_current_thread(cpu)?;
    Ok(cpu)
}
