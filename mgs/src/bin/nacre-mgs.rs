//! nacre-mgs: formats and serves the management target.
//!
//! `nacre-mgs format --dir D --fsname NAME [--force]` creates it;
//! `nacre-mgs serve --dir D --listen HOST:PORT` serves it. Settings come from an optional
//! TOML file (`--config`), flags override it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use nacre_mgs::etcd::{Etcd, EtcdStore};
use nacre_mgs::follower::{Follower, LeaderAddr};
use nacre_mgs::{EmbeddedStore, MgsConfig, MgsServer};
use nacre_proto::bootstrap::{Deployment, LayoutDefaults};

#[derive(Parser)]
#[command(
    name = "nacre-mgs",
    about = "nacre's management service (roles, leases, the cluster map)"
)]
struct Cli {
    /// TOML config file; flags override what it says.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the management target (file system name, a fresh id, format version).
    Format {
        #[arg(long)]
        dir: Option<PathBuf>,
        /// `embedded` (default: redb in --dir) or `etcd://HOST:PORT[,HOST:PORT...]`.
        #[arg(long)]
        store: Option<String>,
        #[arg(long)]
        fsname: String,
        /// Format over an existing management target (its roles are lost).
        #[arg(long)]
        force: bool,
        /// Default stripe count of new files.
        #[arg(long, default_value_t = 1)]
        stripe_count: u32,
        /// Default stripe size of new files, bytes.
        #[arg(long, default_value_t = 1 << 20)]
        stripe_size: u64,
        /// scratch (one copy of every byte) or persistent (every file mirrored on two
        /// OSTs of different servers), as FSx for Lustre's deployment types.
        #[arg(long, default_value = "scratch")]
        deployment: Deployment,
    },
    /// Serve the management target over TCP.
    Serve {
        #[arg(long)]
        dir: Option<PathBuf>,
        /// HOST:PORT (port 0 picks a free one; the chosen address is printed).
        #[arg(long)]
        listen: Option<String>,
        /// `embedded` (default: redb in --dir) or `etcd://HOST:PORT[,HOST:PORT...]`.
        #[arg(long)]
        store: Option<String>,
        #[arg(long)]
        heartbeat_ms: Option<u64>,
        #[arg(long)]
        lease_ms: Option<u64>,
        #[arg(long)]
        max_connections: Option<usize>,
        #[arg(long)]
        request_deadline_ms: Option<u64>,
        #[arg(long)]
        idle_timeout_ms: Option<u64>,
    },
}

fn main() -> ExitCode {
    // SIGINT and SIGTERM are taken by a thread of their own, before any other thread
    // starts: a shell starts a background job with SIGINT ignored, so the default action
    // cannot be relied on; a blocked signal is kept pending even when ignored.
    let stop = match nacre_fabric::signals::stop_on_signals() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("nacre-mgs: taking SIGINT/SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse(), &stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nacre-mgs: {e}");
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error>;

fn run(cli: Cli, stop: &AtomicBool) -> Result<(), Error> {
    let mut cfg = match &cli.config {
        Some(p) => MgsConfig::from_file(p)?,
        None => MgsConfig::default(),
    };
    match cli.cmd {
        Cmd::Format {
            dir,
            store,
            fsname,
            force,
            stripe_count,
            stripe_size,
            deployment,
        } => {
            if stripe_count == 0 || stripe_size == 0 {
                return Err("stripe count and size must not be 0".into());
            }
            let layout = LayoutDefaults {
                stripe_count,
                stripe_size,
                mirror_count: deployment.mirrors(),
            };
            let store = store.unwrap_or(cfg.store);
            let (fs, place) = if store == "embedded" {
                let dir = dir.or(cfg.dir).ok_or("--dir is required")?;
                let fs = EmbeddedStore::format(&dir, &fsname, layout, force)?;
                (fs, dir.display().to_string())
            } else {
                (
                    Etcd::connect(&store)?.format(&fsname, layout, force)?,
                    store,
                )
            };
            println!(
                "nacre-mgs: formatted {} in {} (fsid {:#018x}, {} deployment)",
                fs.fsname,
                place,
                fs.fsid,
                deployment.name()
            );
            Ok(())
        }
        Cmd::Serve {
            dir,
            listen,
            store,
            heartbeat_ms,
            lease_ms,
            max_connections,
            request_deadline_ms,
            idle_timeout_ms,
        } => {
            cfg.dir = dir.or(cfg.dir);
            cfg.listen = listen.unwrap_or(cfg.listen);
            cfg.store = store.unwrap_or(cfg.store);
            cfg.heartbeat_ms = heartbeat_ms.unwrap_or(cfg.heartbeat_ms);
            cfg.lease_ms = lease_ms.unwrap_or(cfg.lease_ms);
            cfg.max_connections = max_connections.unwrap_or(cfg.max_connections);
            cfg.request_deadline_ms = request_deadline_ms.unwrap_or(cfg.request_deadline_ms);
            cfg.idle_timeout_ms = idle_timeout_ms.unwrap_or(cfg.idle_timeout_ms);
            cfg.validate()?;
            if cfg.store != "embedded" {
                return serve_etcd(&cfg, stop);
            }
            let dir = cfg.dir.clone().ok_or("--dir is required")?;
            let store = EmbeddedStore::open(&dir)?;
            let server = MgsServer::bind(&cfg, Box::new(store))?;
            // Tests and scripts read the address from this line (port 0 picks one).
            println!(
                "nacre-mgs: serving {} on {} (heartbeat {} ms, lease {} ms)",
                server.describe(),
                server.local_addr(),
                cfg.heartbeat_ms,
                cfg.lease_ms
            );
            std::io::stdout().flush()?;
            let handle = server.spawn();
            wait_for(stop, || true);
            handle.stop();
            println!("nacre-mgs: stopped");
            Ok(())
        }
    }
}

/// Several MGS processes on one etcd: follow (relay to the leader) until this one wins
/// the leadership, then serve; exit if the leadership is lost (a supervisor restarts it,
/// and it follows again).
fn serve_etcd(cfg: &MgsConfig, stop: &AtomicBool) -> Result<(), Error> {
    let etcd = Etcd::connect(&cfg.store)?;
    let listener = std::net::TcpListener::bind(&cfg.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let me = listener.local_addr()?.to_string();
    let leader: LeaderAddr = Default::default();
    let follower = Follower::start(&listener, leader.clone(), cfg)?;
    println!(
        "nacre-mgs: serving {} (following until elected) on {me} (heartbeat {} ms, lease {} ms)",
        cfg.store, cfg.heartbeat_ms, cfg.lease_ms
    );
    std::io::stdout().flush()?;
    let ttl = Duration::from_millis(cfg.leader_ttl_ms);
    let leadership = loop {
        if stop.load(Ordering::Relaxed) {
            follower.stop();
            println!("nacre-mgs: stopped");
            return Ok(());
        }
        match etcd.campaign(&me, ttl) {
            Ok(Some(l)) => break l,
            Ok(None) => *leader.lock().unwrap_or_else(|p| p.into_inner()) = etcd.leader()?,
            Err(e) => tracing::warn!("mgs: campaign: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    follower.stop();
    let server = MgsServer::from_listener(
        listener,
        cfg,
        Box::new(EtcdStore::new(etcd, leadership.clone(), cfg.lease().lease)),
    )?;
    println!("nacre-mgs: leader on {me}: {}", server.describe());
    std::io::stdout().flush()?;
    let handle = server.spawn();
    wait_for(stop, || leadership.valid());
    if stop.load(Ordering::Relaxed) {
        handle.stop();
        // The store took the connection: a fresh one for this last call.
        if let Err(e) = Etcd::connect(&cfg.store).and_then(|etcd| etcd.resign(&leadership)) {
            eprintln!("nacre-mgs: resigning the leadership: {e} (it lapses with its lease)");
        }
        println!("nacre-mgs: stopped");
        return Ok(());
    }
    eprintln!("nacre-mgs: lost the leadership in etcd; exiting");
    std::process::exit(2);
}

/// Waits until a stop signal came or `go_on` says no more.
fn wait_for(stop: &AtomicBool, go_on: impl Fn() -> bool) {
    while !stop.load(Ordering::Relaxed) && go_on() {
        std::thread::sleep(Duration::from_millis(20));
    }
}
