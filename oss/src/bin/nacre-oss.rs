//! nacre-oss: the object storage server. `format` makes a directory an OST (superblock +
//! hashed object directories); `info` prints a target's superblock and space; `serve`
//! serves OSTs (see nacre_oss::serve). Values come from `--config FILE` (TOML, see
//! nacre_oss::config) with flags overriding them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use nacre_oss::config::Config;
use nacre_oss::serve::ServeConfig;
use nacre_oss::superblock::{self, FormatRequest, Formatted};
use nacre_oss::{ObjectStore, StoreConfig};

#[derive(Parser)]
#[command(version, about = "nacre object storage server")]
struct Cli {
    /// TOML configuration; flags override its values.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make a directory an object storage target.
    Format(FormatArgs),
    /// Print a target's superblock and free space.
    Info(InfoArgs),
    /// Serve OSTs: claim an `oss` role at the MGS for each, format fresh ones, serve
    /// object I/O on pinned engine cores until SIGINT/SIGTERM.
    Serve(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// The MGS, HOST:PORT (several separated by commas) [env: NACRE_MGS].
    #[arg(long)]
    mgs: Option<String>,
    /// An OST directory to serve (repeat for several); a fresh one is formatted.
    #[arg(long = "ost")]
    osts: Vec<PathBuf>,
    /// libfabric provider: tcp, sockets, shm, efa... [default: tcp].
    #[arg(long)]
    provider: Option<String>,
    /// Address the cores serve from [default: the provider's: 127.0.0.1 for tcp].
    #[arg(long)]
    listen: Option<String>,
    /// Engine cores [default: 1].
    #[arg(long)]
    cores: Option<usize>,
    /// Explicit CPUs for the cores, e.g. 2,3.
    #[arg(long, value_delimiter = ',')]
    cpus: Option<Vec<usize>>,
    /// Do not pin the cores (shared test machines).
    #[arg(long)]
    no_pin: bool,
    /// This server's identity at the MGS [default: the host name].
    #[arg(long)]
    identity: Option<String>,
    /// Seconds a push to a client may wait for its completion before the client is
    /// evicted and the slabs of its pushes are taken back [default: 60].
    #[arg(long, value_name = "SECONDS")]
    bulk_timeout: Option<f64>,
    /// The file system key [default: NACRE_KEY, else /etc/nacre/FSNAME.key].
    #[arg(long)]
    key: Option<PathBuf>,
}

#[derive(Args)]
struct FormatArgs {
    /// Target directory (created if missing).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// File system name the target belongs to [default: nacre] (`--fsid`, its old
    /// spelling, is accepted too).
    #[arg(long, visible_alias = "fsid")]
    fsname: Option<String>,
    /// OST index within the file system [default: 0].
    #[arg(long)]
    index: Option<u32>,
    /// Target label [default: <fsname>-OST<index in 4 hex digits>].
    #[arg(long)]
    label: Option<String>,
    /// Format over a target of another file system or index (destroys its objects).
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct InfoArgs {
    /// Target directory.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nacre-oss: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    match cli.cmd {
        Cmd::Format(a) => format(cfg, a),
        Cmd::Info(a) => info(cfg, a),
        Cmd::Serve(a) => serve(cfg, a),
    }
}

fn serve(cfg: Config, a: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let s = cfg.server;
    let mgs = nacre_mgc::mgs_address(a.mgs.or(s.mgs))
        .ok_or("no MGS: give --mgs HOST:PORT, [server] mgs in --config, or NACRE_MGS")?;
    let osts = if a.osts.is_empty() { s.osts } else { a.osts };
    let cpus = a.cpus.or(s.cpus);
    let mut engine = nacre_engine::EngineConfig {
        cores: a.cores.or(s.cores).unwrap_or(1),
        cpus,
        no_pin: a.no_pin,
        ..Default::default()
    };
    if let Some(secs) = a.bulk_timeout.or(s.bulk_timeout) {
        engine.reactor.bulk_timeout = std::time::Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("bulk timeout {secs}: give a positive number of seconds"))?;
    }
    let sc = ServeConfig {
        mgs,
        osts,
        provider: a.provider.or(s.provider).unwrap_or_else(|| "tcp".into()),
        node: a.listen.or(s.listen),
        identity: a.identity.or(s.identity),
        key: a.key.or(s.key),
        engine,
    };
    if !nacre_oss::serve::serve(&sc)? {
        return Err("a role was fenced (taken over, or its lease ended): stepped down".into());
    }
    Ok(())
}

fn need_dir(flag: Option<PathBuf>, cfg: &Config) -> Result<PathBuf, String> {
    flag.or_else(|| cfg.ost.dir.clone())
        .ok_or_else(|| "no target directory: give --dir or [ost] dir in --config".into())
}

fn format(cfg: Config, a: FormatArgs) -> Result<(), Box<dyn std::error::Error>> {
    let dir = need_dir(a.dir, &cfg)?;
    let req = FormatRequest {
        fsname: a
            .fsname
            .or(cfg.ost.fsname)
            .unwrap_or_else(|| "nacre".into()),
        index: a.index.or(cfg.ost.index).unwrap_or(0),
        label: a.label.or(cfg.ost.label),
        generation: 1,
        force: a.force,
    };
    match superblock::format(&dir, &req)? {
        Formatted::New(sb) => println!("formatted {} as {}", dir.display(), describe(&sb)),
        Formatted::AlreadyThere(sb) => {
            println!(
                "{} already is {} (left as is)",
                dir.display(),
                describe(&sb)
            )
        }
    }
    Ok(())
}

fn info(cfg: Config, a: InfoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let dir = need_dir(a.dir, &cfg)?;
    let store = ObjectStore::open(&dir, StoreConfig::default())?;
    let sb = store.superblock();
    println!("target:         {}", dir.display());
    println!("label:          {}", sb.label);
    println!("fsname:         {}", sb.fsname);
    println!("index:          {}", sb.index);
    println!("format version: {}", sb.format_version);
    println!("created:        {} (Unix seconds)", sb.created);
    let s = store.statfs()?;
    println!(
        "space:          {} MiB total, {} MiB available",
        s.bytes_total >> 20,
        s.bytes_avail >> 20
    );
    println!("objects free:   {}", s.objects_free);
    Ok(())
}

fn describe(sb: &nacre_oss::Superblock) -> String {
    format!(
        "{} (file system {}, index {}, format {})",
        sb.label, sb.fsname, sb.index, sb.format_version
    )
}
