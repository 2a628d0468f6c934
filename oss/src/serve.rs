//! `nacre-oss serve`: an OSS process. It starts its engine, then claims an `oss` role at
//! the MGS for each OST directory it is given (presenting every core's fabric address),
//! formats a fresh target with the index the MGS grants, serves it under the granted
//! epoch, and keeps each lease with a heartbeat. A lease that lapses on the server's
//! clock stops that target's service until a renewal is acknowledged again; a fenced
//! role (another owner took it, or the MGS saw its lease end) stops the whole server,
//! which releases its other roles and exits for its supervisor to start it again.
//! SIGINT or SIGTERM stops the server cleanly: the roles are released so that a
//! successor need not wait for the leases to run out.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nacre_engine::{Engine, EngineConfig, EngineError};
use nacre_fabric::Selection;
use nacre_mgc::{BootConfig, MgsClient, MgsError};
use nacre_mgs::role::{node_identity, LeaseKeeper, RoleHolder};
use nacre_proto::bootstrap::{ClaimRequest, Grant, RoleKind, TargetReport, TargetState};

use crate::server::{self, OstHealth, OstRegistry, OstSpec};
use crate::superblock::{self, FormatRequest, TargetError};
use nacre_mgs::role::ServingEpoch;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The MGS: `HOST:PORT`, or several separated by commas.
    pub mgs: String,
    pub osts: Vec<PathBuf>,
    /// libfabric provider (`tcp`, `sockets`, `shm`, `efa`...).
    pub provider: String,
    /// Address the cores serve from; None: for IP providers the local address that
    /// routes to the MGS (loopback when the MGS is on loopback), the provider's choice
    /// otherwise.
    pub node: Option<String>,
    /// This server's identity at the MGS, stable across restarts; None: the host name.
    pub identity: Option<String>,
    /// The file system key file (else `NACRE_KEY`, else `/etc/nacre/FSNAME.key`).
    pub key: Option<PathBuf>,
    pub engine: EngineConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("no OST given: pass --ost DIR (one or more)")]
    NoOst,
    #[error(transparent)]
    Mgs(#[from] MgsError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{dir}: the target is OST {have}, but the MGS granted role {granted} (another server's target?)")]
    WrongIndex {
        dir: String,
        have: u32,
        granted: String,
    },
    #[error("{dir}: the target belongs to file system {have:?}, the MGS serves {want:?}")]
    OtherFs {
        dir: String,
        have: String,
        want: String,
    },
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

/// One served OST and its role.
struct Held {
    dir: PathBuf,
    health: OstHealth,
    role: RoleHolder,
}

/// Runs the server until a signal, or until one of its roles is fenced (returns false
/// then, so the process can exit with an error): its other roles are released, and a
/// supervisor (`nacre up`) starts it again, which claims them all anew. Serving on with a
/// target it lost would leave that target's copies unserved until a restart.
pub fn serve(cfg: &ServeConfig) -> Result<bool, ServeError> {
    if cfg.osts.is_empty() {
        return Err(ServeError::NoOst);
    }
    let stop = nacre_fabric::signals::stop_on_signals().map_err(ServeError::Signals)?;
    let keys = nacre_auth::KeySource::new(cfg.key.clone());
    let mut mgs = MgsClient::connect_with(&cfg.mgs, BootConfig::default(), keys)?;
    let registry = OstRegistry::default();
    let engine = start_engine(cfg, &registry, mgs.server_key()?)?;
    let cores: Vec<Vec<u8>> = engine
        .cores()
        .iter()
        .map(|c| c.fabric_name.clone())
        .collect();
    let mut held = Vec::new();
    for dir in &cfg.osts {
        held.push(claim_and_serve(cfg, &mut mgs, dir, &cores, &registry)?);
    }
    println!("nacre-oss: ready");
    let fenced = watch(&mut held, &stop);
    for h in held {
        let name = h.role.keeper.grant().role;
        if let Err(e) = h.role.release() {
            tracing::warn!("releasing {name}: {e}");
        }
    }
    for (core, m) in engine.stop().iter().enumerate() {
        tracing::debug!("core {core} metrics:\n{}", m.prometheus(core));
    }
    println!("nacre-oss: stopped");
    Ok(!fenced)
}

fn start_engine(
    cfg: &ServeConfig,
    registry: &OstRegistry,
    key: Option<nacre_auth::Key>,
) -> Result<Engine, ServeError> {
    let mut base = cfg.engine.clone();
    base.fabric = Selection::toward(&cfg.provider, cfg.node.clone(), &cfg.mgs);
    base.reactor.key = key;
    let specs: Vec<OstSpec> = cfg
        .osts
        .iter()
        .map(|d| OstSpec {
            index: 0,
            dir: d.clone(),
            epoch: ServingEpoch::new(0),
            health: OstHealth::default(),
        })
        .collect();
    let ecfg = server::engine_config(base, &specs);
    Ok(server::start(&ecfg, registry.clone())?)
}

fn claim_and_serve(
    cfg: &ServeConfig,
    mgs: &mut MgsClient,
    dir: &std::path::Path,
    cores: &[Vec<u8>],
    registry: &OstRegistry,
) -> Result<Held, ServeError> {
    std::fs::create_dir_all(dir).map_err(|source| TargetError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let existing = superblock::read(dir).ok();
    let req = ClaimRequest {
        kind: RoleKind::Oss,
        want: existing.as_ref().map(|sb| sb.index),
        node: node_identity(cfg.identity.as_deref(), dir),
        provider: cfg.provider.clone(),
        cores: cores.to_vec(),
        empty: existing.is_none(),
        generation: existing.as_ref().map_or(0, |sb| sb.generation),
        replication: String::new(),
    };
    let sent = Instant::now();
    let grant = mgs.claim(&req)?;
    check_target(dir, existing.as_ref(), &grant)?;
    let index = grant.role.index;
    println!(
        "nacre-oss: serving OST{index} from {} as {} (epoch {}) over {} on {} core(s)",
        dir.display(),
        grant.role,
        grant.epoch,
        cfg.provider,
        cores.len()
    );
    let keeper = LeaseKeeper::start(mgs, grant, sent, report(dir));
    let role = RoleHolder::new(keeper);
    let health = OstHealth::default();
    registry.add(OstSpec {
        index,
        dir: dir.to_path_buf(),
        epoch: role.epoch.clone(),
        health: health.clone(),
    });
    Ok(Held {
        dir: dir.to_path_buf(),
        health,
        role,
    })
}

/// A fresh target is formatted with the granted index; an existing one must be the
/// target of the granted role, of this file system.
fn check_target(
    dir: &std::path::Path,
    existing: Option<&superblock::Superblock>,
    grant: &Grant,
) -> Result<(), ServeError> {
    let show = || dir.display().to_string();
    match existing {
        None => {
            let req = FormatRequest {
                fsname: grant.fsname.clone(),
                index: grant.role.index,
                label: None,
                generation: grant.generation,
                force: false,
            };
            superblock::format(dir, &req)?;
            Ok(())
        }
        Some(sb) if sb.fsname != grant.fsname => Err(ServeError::OtherFs {
            dir: show(),
            have: sb.fsname.clone(),
            want: grant.fsname.clone(),
        }),
        Some(sb) if sb.index != grant.role.index => Err(ServeError::WrongIndex {
            dir: show(),
            have: sb.index,
            granted: grant.role.to_string(),
        }),
        Some(sb) if sb.generation != grant.generation => {
            // Replaced while this server was away: its objects may be old. The MDS
            // marks every copy here stale and the rebuild rewrites them.
            tracing::warn!(
                "{}: generation {} replaced by {}: its copies are rebuilt",
                show(),
                sb.generation,
                grant.generation
            );
            let sb = superblock::Superblock {
                generation: grant.generation,
                ..sb.clone()
            };
            superblock::write(dir, &sb)?;
            Ok(())
        }
        Some(_) => Ok(()),
    }
}

/// What the heartbeat says of a target: its space (statvfs of its directory).
fn report(dir: &std::path::Path) -> TargetReport {
    match rustix::fs::statvfs(dir) {
        Ok(s) => TargetReport {
            rebuild: Vec::new(),
            settled: Vec::new(),
            standby: String::new(),
            state: TargetState::Up,
            capacity: s.f_blocks * s.f_frsize,
            free: s.f_bavail * s.f_frsize,
        },
        Err(_) => TargetReport {
            rebuild: Vec::new(),
            settled: Vec::new(),
            standby: String::new(),
            state: TargetState::Degraded,
            capacity: 0,
            free: 0,
        },
    }
}

/// Follows the leases until `stop` or a role is fenced; returns whether one was.
fn watch(held: &mut [Held], stop: &AtomicBool) -> bool {
    let mut last_report = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for h in held.iter_mut() {
            if let Some(line) = h.role.poll() {
                println!("nacre-oss: {line}");
            }
        }
        if held.iter().any(|h| h.role.is_fenced()) {
            return true;
        }
        if last_report.elapsed() > Duration::from_millis(500) {
            for h in held.iter() {
                let mut r = report(&h.dir);
                if h.health.degraded().is_some() {
                    r.state = TargetState::Degraded;
                }
                h.role.keeper.set_report(r);
            }
            last_report = Instant::now();
        }
        // Well inside the lease's safety margin (a tenth of the lease).
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
