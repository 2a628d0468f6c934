//! nacre-mds: the metadata server. `format` creates a metadata target (MDT) in a
//! directory; `serve` claims the `mds` role at the MGS and serves the namespace on an
//! engine core (see nacre_mds::mds_serve).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use nacre_mds::mdt::{Mdt, MdtConfig, SyncMode, DB_FILE};

#[derive(Parser)]
#[command(version, about = "nacre metadata server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a metadata target in a directory.
    Format {
        #[arg(long)]
        dir: PathBuf,
        /// Format over an existing MDT (its namespace is lost).
        #[arg(long)]
        force: bool,
    },
    /// Serve an MDT: claim the mds role at the MGS, serve until SIGINT/SIGTERM.
    Serve(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
    #[arg(long)]
    dir: PathBuf,
    /// The MGS, HOST:PORT (several separated by commas) [env: NACRE_MGS].
    #[arg(long)]
    mgs: Option<String>,
    /// libfabric provider: tcp, sockets, shm, efa... [default: tcp].
    #[arg(long, default_value = "tcp")]
    provider: String,
    /// Address the core serves from [default: the provider's].
    #[arg(long)]
    listen: Option<String>,
    /// Reply only once an operation is on stable storage (group commit).
    #[arg(long)]
    sync: bool,
    /// Do not pin the core (shared test machines).
    #[arg(long)]
    no_pin: bool,
    /// This server's identity at the MGS [default: the host name].
    #[arg(long)]
    identity: Option<String>,
    /// The rebuild of stale copies copies at most this many MiB per second (0: no
    /// rebuild; `nacre mirror resync` still works).
    #[arg(long, default_value_t = 100)]
    rebuild_mib_s: u64,
    /// Follow the MDS serving mds0 (a copy of its MDT in --dir, from its redo log) and
    /// take the role over when its lease lapses.
    #[arg(long)]
    standby: bool,
    /// The file system key [default: NACRE_KEY, else /etc/nacre/FSNAME.key].
    #[arg(long)]
    key: Option<PathBuf>,
    /// Seconds the capabilities handed with layouts hold (clients renew them before).
    #[arg(long, default_value_t = nacre_mds::grants::DEFAULT_LIFETIME.as_secs())]
    capability_lifetime: u64,
    /// Seconds the files a client holds open stay open once the MDS stops hearing
    /// from it (a killed or cut-off client; live ones say so every 2.5 s).
    #[arg(long, default_value_t = nacre_proto::meta::OPEN_LEASE.as_secs())]
    open_lease: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().cmd {
        Cmd::Format { dir, force } => format(dir, force),
        Cmd::Serve(a) => serve(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nacre-mds: {e}");
            ExitCode::FAILURE
        }
    }
}

fn format(dir: PathBuf, force: bool) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if dir.join(DB_FILE).exists() {
        if !force {
            return Err(format!(
                "{} already holds an MDT: refusing to format it without --force",
                dir.display()
            )
            .into());
        }
        std::fs::remove_dir_all(&dir)?;
    }
    Mdt::open(MdtConfig::new(&dir))?.shutdown()?;
    println!("formatted {} as an MDT", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// The open lease, at least twice the clients' ping interval: a shorter one would
/// close the files of live clients between two of their pings.
fn open_lease(secs: u64) -> Result<std::time::Duration, String> {
    let lease = std::time::Duration::from_secs(secs);
    let least = 2 * nacre_proto::meta::lock::RENEW_EVERY;
    match lease >= least {
        true => Ok(lease),
        false => Err(format!(
            "--open-lease {secs}: at least {} s (twice the {:?} between a client's pings)",
            least.as_secs(),
            nacre_proto::meta::lock::RENEW_EVERY
        )),
    }
}

fn serve(a: ServeArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mgs =
        nacre_mgc::mgs_address(a.mgs).ok_or("no MGS: give --mgs HOST:PORT or set NACRE_MGS")?;
    let cfg = nacre_mds::mds_serve::MdsServeConfig {
        mgs,
        dir: a.dir,
        provider: a.provider,
        node: a.listen,
        identity: a.identity,
        rebuild_rate: a.rebuild_mib_s << 20,
        standby: a.standby,
        key: a.key,
        capability_lifetime: std::time::Duration::from_secs(a.capability_lifetime.max(1)),
        open_lease: open_lease(a.open_lease)?,
        mode: if a.sync {
            SyncMode::Sync
        } else {
            SyncMode::Default
        },
        engine: nacre_engine::EngineConfig {
            cores: 1,
            no_pin: a.no_pin,
            ..Default::default()
        },
    };
    if nacre_mds::mds_serve::serve(&cfg)? {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("nacre-mds: the role was fenced (taken over, or its lease ended): stepped down");
        Ok(ExitCode::from(3))
    }
}
