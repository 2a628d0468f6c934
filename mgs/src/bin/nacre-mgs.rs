//! nacre-mgs: formats and serves the management target.
//!
//! `nacre-mgs format --dir D --fsname NAME [--force]` creates it;
//! `nacre-mgs serve --dir D --listen HOST:PORT` serves it. Settings come from an optional
//! TOML file (`--config`), flags override it. `format` also writes the file system key
//! (DIR/FSNAME.key, mode 0600); `issue-key` derives client keys from it and
//! `root-squash` changes root squash on a running MGS.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use nacre_auth::{IdMap, Key, KeySource};
use nacre_mgc::{BootConfig, MgsClient};
use nacre_mgs::etcd::{Etcd, EtcdStore};
use nacre_mgs::follower::{Follower, LeaderAddr};
use nacre_mgs::{Changes, EmbeddedStore, MgsConfig, MgsServer, Store};
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
        /// The file system key file: written (mode 0600) if absent or with --force,
        /// else used as it is (several MGS processes share one). Default:
        /// DIR/FSNAME.key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Root of clients acts as UID:GID (Lustre's root squash); holders of the
        /// file system key are not squashed. `nacre-mgs root-squash` changes it later.
        #[arg(long)]
        root_squash: Option<IdMap>,
    },
    /// Sets root squash on a running MGS (`off` clears it); needs the file system key.
    RootSquash {
        /// The MGS, HOST:PORT (default: NACRE_MGS).
        #[arg(long)]
        mgs: Option<String>,
        /// The file system key file (default: NACRE_KEY, then /etc/nacre/FSNAME.key).
        #[arg(long)]
        key: Option<PathBuf>,
        /// UID:GID, or `off`.
        squash: String,
    },
    /// Issues a client key from the file system key: its holder uses the file system
    /// (never as a server), as UID:GID only when --map is given (Lustre's nodemap).
    IssueKey {
        /// The file system key file.
        #[arg(long)]
        key: PathBuf,
        /// The client's name (A-Z a-z 0-9 - _ . @), in logs and refusals.
        #[arg(long)]
        name: String,
        /// Every user of this key acts as UID:GID.
        #[arg(long)]
        map: Option<IdMap>,
        /// Where to write the client key (mode 0600).
        #[arg(long)]
        out: PathBuf,
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
        /// The file system key file (default: NACRE_KEY, then DIR/FSNAME.key, then
        /// /etc/nacre/FSNAME.key).
        #[arg(long)]
        key: Option<PathBuf>,
        /// TLS on the bootstrap: on, off, or auto (on unless listening on loopback).
        #[arg(long)]
        tls: Option<nacre_mgs::server::tls::TlsMode>,
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
            key,
            root_squash,
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
            let dir = dir.or(cfg.dir);
            let key_path = key
                .or_else(|| dir.as_ref().map(|d| d.join(format!("{fsname}.key"))))
                .ok_or("--key FILE is required with an etcd store: where the key goes")?;
            let squash = Changes {
                root_squash: Some(root_squash.map(|m| (m.uid, m.gid))),
                ..Default::default()
            };
            let (fs, place) = if store == "embedded" {
                let dir = dir.ok_or("--dir is required")?;
                let fs = EmbeddedStore::format(&dir, &fsname, layout, force)?;
                EmbeddedStore::open(&dir)?.commit(&squash)?;
                (fs, dir.display().to_string())
            } else {
                let fs = Etcd::connect(&store)?.format(&fsname, layout, force)?;
                (fs, store)
            };
            let made = file_system_key(&key_path, &fsname, force)?;
            println!(
                "nacre-mgs: formatted {} in {} (fsid {:#018x}, {} deployment)",
                fs.fsname,
                place,
                fs.fsid,
                deployment.name()
            );
            println!(
                "nacre-mgs: file system key {} ({})",
                key_path.display(),
                if made { "new" } else { "kept" }
            );
            if let Some(m) = root_squash {
                println!("nacre-mgs: root squashed to {m}");
            }
            Ok(())
        }
        Cmd::RootSquash { mgs, key, squash } => {
            let squash = match squash.as_str() {
                "off" => None,
                s => Some(s.parse::<IdMap>()?),
            };
            let mgs = nacre_mgc::mgs_address(mgs).ok_or("--mgs or NACRE_MGS is required")?;
            let mut c = MgsClient::new(&mgs, BootConfig::default()).with_keys(KeySource::new(key));
            c.set_root_squash(squash.map(|m| (m.uid, m.gid)))?;
            match squash {
                Some(m) => println!("nacre-mgs: root squashed to {m}"),
                None => println!("nacre-mgs: root squash off"),
            }
            Ok(())
        }
        Cmd::IssueKey {
            key,
            name,
            map,
            out,
        } => {
            let fs = Key::load(&key)?;
            let client = fs.issue_client(&name, map)?;
            client.save(&out)?;
            println!(
                "nacre-mgs: issued {} in {}",
                client.principal(),
                out.display()
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
            key,
            tls,
        } => {
            cfg.dir = dir.or(cfg.dir);
            cfg.listen = listen.unwrap_or(cfg.listen);
            cfg.store = store.unwrap_or(cfg.store);
            cfg.heartbeat_ms = heartbeat_ms.unwrap_or(cfg.heartbeat_ms);
            cfg.lease_ms = lease_ms.unwrap_or(cfg.lease_ms);
            cfg.max_connections = max_connections.unwrap_or(cfg.max_connections);
            cfg.request_deadline_ms = request_deadline_ms.unwrap_or(cfg.request_deadline_ms);
            cfg.idle_timeout_ms = idle_timeout_ms.unwrap_or(cfg.idle_timeout_ms);
            cfg.key_file = key.or(cfg.key_file);
            cfg.tls = tls.unwrap_or(cfg.tls);
            cfg.validate()?;
            if cfg.store != "embedded" {
                let fsname = Etcd::connect(&cfg.store)?
                    .fsname()?
                    .ok_or_else(|| format!("{} holds no file system: format it", cfg.store))?;
                cfg.key = Some(serving_key(&cfg, &fsname)?);
                return serve_etcd(&cfg, stop);
            }
            let dir = cfg.dir.clone().ok_or("--dir is required")?;
            let fsname = EmbeddedStore::open(&dir)?.load()?.fs.fsname;
            cfg.key = Some(serving_key(&cfg, &fsname)?);
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

/// Writes a new file system key at `path`, or keeps the one there (unless `force`);
/// true if it made one.
fn file_system_key(path: &Path, fsname: &str, force: bool) -> Result<bool, Error> {
    if path.exists() && !force {
        let kept = Key::load(path)?;
        if kept.fsname() != fsname || !kept.principal().is_server() {
            return Err(format!(
                "{} holds {} of file system `{}`: not a file system key of `{fsname}` \
                 (remove it, or --force)",
                path.display(),
                kept.principal(),
                kept.fsname()
            )
            .into());
        }
        return Ok(false);
    }
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    Key::generate(fsname)?.save(path)?;
    Ok(true)
}

/// The key an MGS serves with: --key (or the config's), NACRE_KEY, DIR/FSNAME.key,
/// /etc/nacre/FSNAME.key, in that order. It must be the file system key.
fn serving_key(cfg: &MgsConfig, fsname: &str) -> Result<Key, Error> {
    let mut source = KeySource::new(cfg.key_file.clone());
    if source.file.is_none() {
        let in_dir = cfg.dir.as_ref().map(|d| d.join(format!("{fsname}.key")));
        source.file = in_dir.filter(|p| p.exists());
    }
    let key = source.load(fsname).map_err(|e| {
        format!("{e}: an MGS serves only with its file system key (`nacre-mgs format` writes DIR/FSNAME.key)")
    })?;
    if !key.principal().is_server() {
        return Err(format!(
            "an MGS serves with the file system key, not {}",
            key.principal()
        )
        .into());
    }
    Ok(key)
}

/// Waits until a stop signal came or `go_on` says no more.
fn wait_for(stop: &AtomicBool, go_on: impl Fn() -> bool) {
    while !stop.load(Ordering::Relaxed) && go_on() {
        std::thread::sleep(Duration::from_millis(20));
    }
}
