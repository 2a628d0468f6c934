//! nacre-bench: benches that performance engineers hold against fabtests and fio.
//!
//! `pingpong` takes fi_pingpong's command line and prints its columns; `rma` measures the
//! RMA bandwidth of the bulk data path; `mgs` loads a management service; `soak` runs
//! clients that come and go against a file system and checks every byte; `info` lists
//! the providers fi_getinfo offers.

mod control;
mod disk;
mod failover;
mod format;
mod fusefloor;
mod ior;
mod mdtest;
mod mgs;
mod obj;
mod pingpong;
mod rebuild;
mod regcache;
mod repo;
mod rma;
mod soak;
mod wire;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "nacre-bench",
    version,
    about = "nacre's fabric and storage benches"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ping-pong messages, as fabtests' fi_pingpong (no address: server; an address: client).
    Pingpong {
        #[command(flatten)]
        common: CommonArgs,
        /// Verify the data of every message (slows the run, as with fi_pingpong -c).
        #[arg(short = 'c')]
        check: bool,
    },
    /// RMA read or write bandwidth with a window of operations in flight.
    Rma {
        #[command(flatten)]
        common: CommonArgs,
        /// Which RMA operation the client issues.
        #[arg(long, value_enum, default_value = "read")]
        op: rma::RmaOp,
        /// Operations in flight.
        #[arg(short = 'W', long, default_value_t = 16)]
        window: usize,
        /// One local buffer per operation in flight (default: one shared buffer, as fi_rma_bw).
        #[arg(long)]
        distinct_buffers: bool,
    },
    /// The engine's storage path with fio's parameters; last line `bw_mib_s=... iops=...`.
    Disk(disk::DiskArgs),
    /// The data path end to end: a client hands blocks by RMA descriptor, one engine core
    /// pulls them into registered buffers and writes them O_DIRECT to a file.
    WireToDisk(wire::WireArgs),
    /// Load on a management service: simulated servers renew leases while a client
    /// fetches the map; last line `renewals_per_s=... map_fetch_p99_us=...`.
    Mgs(mgs::MgsArgs),
    /// Object I/O against an OSS found through the MGS, with fio's parameters; last line
    /// `bw_mib_s=... iops=...`.
    Obj(obj::ObjArgs),
    /// The caller's buffers through the client library with the registration cache and
    /// with a registration per call; last line `cache_mib_s=... per_call_mib_s=...`.
    Regcache(regcache::RegCacheArgs),
    /// Metadata rates in the spirit of mdtest (create, stat, readdir, remove), on nacre
    /// or with --local on a local directory; one line per phase `phase=... ops_per_s=...`.
    Mdtest(mdtest::MdtestArgs),
    /// Bandwidth in the spirit of IOR (-t -b -s -F -w -r -C, --tasks), on nacre or with
    /// --local on a local file with O_DIRECT; one line per phase `phase=... bw_mib_s=...`.
    Ior(ior::IorArgs),
    /// A FUSE file system that answers from memory on its session thread, mounted at
    /// the given directory until unmounted: the ceiling of any FUSE mount's create rate.
    FuseFloor(fusefloor::FuseFloorArgs),
    /// Clients that come and go (some killed with SIGKILL) under mixed metadata and I/O,
    /// every byte checked; last line `ops=N lost_replies=N timeouts=N corrupt=N`.
    Soak(soak::SoakArgs),
    /// A persistent file system of its own losing a server (kill -9) under a checked
    /// workload; last line `pause_ms=N lost_ops=N corrupt=N rebuild_s=N`.
    Failover(failover::FailoverArgs),
    /// A client's write bandwidth before an OSS is lost and while the MDS rebuilds its
    /// copies; last line `before_mib_s=N during_mib_s=N ratio=R rebuild_s=N`.
    Rebuild(rebuild::RebuildArgs),
    /// A data repository's lazy load, export and import against the repository's own
    /// GET and PUT rates; last line `import_objs_per_s=N load_ratio=R export_ratio=R`.
    Repo(repo::RepoArgs),
    /// One client process of `soak`.
    #[command(hide = true)]
    SoakClient(soak::SoakClientArgs),
    /// List the RDM providers fi_getinfo offers for nacre's needs (FI_PROVIDER applies).
    Info {
        /// Local address to ask for (FI_SOURCE).
        #[arg(short = 's', default_value = "127.0.0.1")]
        node: String,
    },
}

/// Options shared by the fabric benches; the letters are fi_pingpong's.
#[derive(Args)]
pub struct CommonArgs {
    /// Provider: tcp (tcp;ofi_rxm), sockets, shm, udp (udp;ofi_rxd), efa, verbs; default FI_PROVIDER.
    #[arg(short = 'p')]
    provider: Option<String>,
    /// Endpoint type; nacre's data path is RDM only.
    #[arg(short = 'e', default_value = "rdm")]
    ep_type: String,
    /// Domain name.
    #[arg(short = 'd')]
    domain: Option<String>,
    /// Iterations per size (pingpong: 10, as fi_pingpong; rma: 1000).
    #[arg(short = 'I')]
    iterations: Option<u64>,
    /// Size in bytes, a comma-separated list, or `all`.
    #[arg(short = 'S')]
    sizes: Option<String>,
    /// Control port the server binds (default 47592).
    #[arg(short = 'B')]
    src_port: Option<u16>,
    /// Control port the client connects to (default 47592).
    #[arg(short = 'P')]
    dst_port: Option<u16>,
    /// Address the server binds and serves from (default 127.0.0.1; 0.0.0.0 for all).
    #[arg(short = 's', default_value = "127.0.0.1")]
    src_addr: String,
    /// Transmit mode: msg (tagged is not used by nacre).
    #[arg(short = 'm', default_value = "msg")]
    mode: String,
    /// The server's address: run as client. Without it: run as server.
    server: Option<String>,
}

impl CommonArgs {
    fn role(&self) -> control::Side {
        control::Side {
            server: self.server.clone(),
            src_port: self.src_port,
            dst_port: self.dst_port,
            src_addr: self.src_addr.clone(),
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        if !self.ep_type.eq_ignore_ascii_case("rdm") {
            return Err(BenchError::msg(format!(
                "endpoint type `{}` is not supported: nacre's data path uses rdm endpoints",
                self.ep_type
            )));
        }
        format::parse_sizes(self.sizes.as_deref(), u64::MAX).map_err(BenchError)?;
        if self.mode != "msg" {
            return Err(BenchError::msg(format!(
                "transmit mode `{}` is not supported (msg only)",
                self.mode
            )));
        }
        Ok(())
    }
}

/// Whatever stops a bench, printed as one line.
#[derive(Debug)]
pub struct BenchError(pub String);

impl BenchError {
    fn msg(s: impl Into<String>) -> Self {
        BenchError(s.into())
    }
}

impl<E: std::error::Error> From<E> for BenchError {
    fn from(e: E) -> Self {
        BenchError(e.to_string())
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("NACRE_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Pingpong { common, check } => common
            .validate()
            .and_then(|_| pingpong::run(common, *check)),
        Command::Rma {
            common,
            op,
            window,
            distinct_buffers,
        } => common
            .validate()
            .and_then(|_| rma::run(common, *op, *window, *distinct_buffers)),
        Command::Disk(args) => disk::run(args),
        Command::WireToDisk(args) => wire::run(args),
        Command::Mgs(args) => mgs::run(args),
        Command::Obj(args) => obj::run(args),
        Command::Mdtest(args) => mdtest::run(args),
        Command::Ior(args) => ior::run(args),
        Command::Regcache(args) => regcache::run(args),
        Command::FuseFloor(args) => fusefloor::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Failover(args) => failover::run(args),
        Command::Rebuild(args) => rebuild::run(args),
        Command::Repo(args) => repo::run(args),
        Command::SoakClient(args) => soak::client(args),
        Command::Info { node } => info(node),
    };
    if let Err(e) = result {
        eprintln!("nacre-bench: {}", e.0);
        std::process::exit(1);
    }
}

fn info(node: &str) -> Result<(), BenchError> {
    let providers = nacre_fabric::list_providers(Some(node))?;
    println!(
        "{:<16} {:<24} {:<12} {:>8} {:>6} {:>6}  mr_mode",
        "provider", "fabric", "domain", "inject", "tx", "rx"
    );
    for p in providers {
        println!(
            "{:<16} {:<24} {:<12} {:>8} {:>6} {:>6}  {}",
            p.provider,
            p.fabric,
            p.domain,
            p.inject_size,
            p.tx_size,
            p.rx_size,
            p.mr_mode_names()
        );
    }
    Ok(())
}
