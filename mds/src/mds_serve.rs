//! `nacre-mds serve`: an MDS process. It starts its engine (one core), claims the `mds`
//! role at the MGS with the core's fabric address, opens the MDT under the granted
//! epoch (formatting a fresh directory), and serves the namespace until SIGINT/SIGTERM,
//! keeping its lease; new files use the OSTs the cluster map lists. A lapsed lease
//! stops service until a renewal is acknowledged again; a fenced role stops it for good.
//! With `--standby` (or when another server holds the role its MDT belongs to) it
//! first follows the MDS that serves the role, and takes it over when that one's lease
//! lapses (`crate::standby`).

use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nacre_engine::{Engine, EngineConfig, EngineError, ReactorConfig};
use nacre_fabric::Selection;

use crate::checker::Checker;
use crate::destroyer::Destroyer;
use crate::hsm::Hsm;
use crate::resyncer::Resyncer;
use crate::standby::ship::Shipper;
use nacre_mgc::{BootConfig, MgsClient, MgsError};
use nacre_mgs::role::{node_identity, LeaseKeeper, RoleHolder};
use nacre_proto::bootstrap::{
    errno, ClaimRequest, ClusterMap, Grant, RoleKind, TargetKind, TargetReport, TargetState,
};

use crate::grants::Sealer;
use crate::mdt::engine_service::{MdsService, MdtSlot};
use crate::mdt::{Admin, Mdt, MdtConfig, MdtError, OstPlace, OstSpace, SyncMode};
use crate::reach::Reach;
use nacre_proto::layout::{FirstOst, StripeCount, StripeSpec, MAX_MIRRORS};

/// How often the server looks for clients silent past the open lease.
const EVICT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct MdsServeConfig {
    pub mgs: String,
    pub dir: PathBuf,
    pub provider: String,
    pub node: Option<String>,
    pub identity: Option<String>,
    /// Bytes per second the rebuild of stale copies may copy (0: no rebuild).
    pub rebuild_rate: u64,
    pub mode: SyncMode,
    pub engine: EngineConfig,
    /// Follow the MDS that serves mds0 and take over when its lease lapses, instead of
    /// claiming a role at once.
    pub standby: bool,
    /// The file system key file (else `NACRE_KEY`, else `/etc/nacre/FSNAME.key`).
    pub key: Option<PathBuf>,
    /// How long the capabilities handed with layouts hold.
    pub capability_lifetime: Duration,
    /// How long the open handles of a client not heard from are kept
    /// (`nacre_proto::meta::OPEN_LEASE` by default).
    pub open_lease: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum MdsServeError {
    #[error(transparent)]
    Mgs(#[from] MgsError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Mdt(#[from] MdtError),
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("the MDT directory: {0}")]
    Dir(std::io::Error),
    #[error("starting the destroyer, rebuild, checker or data mover thread: {0}")]
    Destroyer(std::io::Error),
}

/// Runs until a signal (Ok(true)) or until the role is fenced (Ok(false)).
pub fn serve(cfg: &MdsServeConfig) -> Result<bool, MdsServeError> {
    let stop = nacre_fabric::signals::stop_on_signals().map_err(MdsServeError::Signals)?;
    let keys = nacre_auth::KeySource::new(cfg.key.clone());
    let mut mgs = MgsClient::connect_with(&cfg.mgs, BootConfig::default(), keys)?;
    let key = mgs.server_key()?;
    let slot: MdtSlot = Arc::new(OnceLock::new());
    let engine = start_engine(cfg, &slot, key.clone())?;
    let server_key = key.clone();
    let reach = Reach {
        sel: Selection::toward(&cfg.provider, cfg.node.clone(), &cfg.mgs),
        key,
    };
    let cores: Vec<Vec<u8>> = engine
        .cores()
        .iter()
        .map(|c| c.fabric_name.clone())
        .collect();
    // Made before the claim: the identity names its canonical path, which a restart
    // must find the same.
    std::fs::create_dir_all(&cfg.dir).map_err(MdsServeError::Dir)?;
    let listener = replication_listener(cfg)?;
    let has_mdt = cfg.dir.join(crate::mdt::DB_FILE).exists();
    let req = ClaimRequest {
        kind: RoleKind::Mds,
        // An MDT is mds0's (the one clients use); a standby waits for it too.
        want: (has_mdt || cfg.standby).then_some(0),
        node: node_identity(cfg.identity.as_deref(), &cfg.dir),
        provider: cfg.provider.clone(),
        cores: cores.clone(),
        // No store yet: a new MDT, which must not take over an existing one's role.
        empty: !has_mdt && !cfg.standby,
        generation: 0,
        replication: listener
            .local_addr()
            .map_err(MdsServeError::Dir)?
            .to_string(),
    };
    let Some((grant, sent)) = claim_or_follow(cfg, &mut mgs, &req, &stop)? else {
        println!("nacre-mds: stopped");
        return Ok(true);
    };
    let map = mgs.fetch_map()?;
    let osts = ost_indices(&map);
    let mut places = ost_places(&map);
    let mut mcfg = MdtConfig::new(&cfg.dir);
    // A new MDT's root takes the file system's defaults (stripes, and mirrors in a
    // persistent file system); directories pass them on.
    mcfg.default_spec = default_spec(&map);
    mcfg.epoch = grant.epoch;
    mcfg.mode = cfg.mode;
    // A later epoch: an MDS served this MDT before, and its clients replay their opens
    // (and locks) within the recovery window.
    mcfg.recovery = grant.epoch > 1;
    let mut recovery_end = mcfg
        .recovery
        .then(|| Instant::now() + nacre_proto::meta::OPEN_RECOVERY);
    if !osts.is_empty() {
        mcfg.osts = osts.clone();
    }
    let mdt = Arc::new(Mdt::open(mcfg)?);
    // Where each OST is, before any client request: mirrors go to other servers. (A
    // map without OSTs leaves the MDT's configured set.)
    if !places.is_empty() {
        let _ = mdt
            .submitter()
            .submit_admin(0, Admin::SetOsts(places.clone()));
    }
    mdt.set_ost_space(ost_space(&map));
    mdt.root_squash().set(map.root_squash);
    println!(
        "nacre-mds: serving MDT {} as {} (epoch {}) over {} on {} core(s), OSTs {:?}",
        cfg.dir.display(),
        grant.role,
        grant.epoch,
        cfg.provider,
        cores.len(),
        osts
    );
    let report = TargetReport {
        state: TargetState::Up,
        capacity: 0,
        free: 0,
        rebuild: Vec::new(),
        settled: Vec::new(),
        standby: String::new(),
    };
    let mut role = RoleHolder::new(LeaseKeeper::start(&mgs, grant, sent, report.clone()));
    let _ = slot.set((mdt.clone(), role.epoch.clone()));
    let destroyer =
        Destroyer::start(mdt.clone(), reach.clone()).map_err(MdsServeError::Destroyer)?;
    let checker = Checker::start(mdt.clone(), reach.clone()).map_err(MdsServeError::Destroyer)?;
    let hsm = Hsm::start(mdt.clone(), reach.clone()).map_err(MdsServeError::Destroyer)?;
    let rebuild =
        Resyncer::start(mdt.clone(), reach, cfg.rebuild_rate).map_err(MdsServeError::Destroyer)?;
    hsm.set_map(map.clone());
    destroyer.set_map(map.clone());
    rebuild.set_map(map.clone());
    checker.set_map(map);
    let shipper = Shipper::start(
        listener,
        mdt.clone(),
        cfg.mode == SyncMode::Sync,
        server_key,
    )
    .map_err(MdsServeError::Destroyer)?;
    println!("nacre-mds: ready");
    let repl = mdt.replication().clone();
    // Sync mode: when the MGS last heard "no standby" (a dropped standby's replies
    // wait for it).
    let mut out_since: Option<Instant> = None;
    let mut last_map = Instant::now();
    let mut last_evict = Instant::now();
    while !stop.load(Ordering::Relaxed) && !role.is_fenced() {
        if let Some(line) = role.poll() {
            println!("nacre-mds: {line}");
        }
        if repl.out_asked() {
            match out_since {
                None => {
                    role.keeper.set_report(TargetReport {
                        standby: String::new(),
                        ..role.keeper.report()
                    });
                    out_since = Some(role.keeper.renew_now());
                }
                Some(t) if role.keeper.renewed_since(t) => {
                    println!("nacre-mds: the MGS knows the standby is out of sync");
                    repl.confirm_out();
                    out_since = None;
                }
                Some(_) => {}
            }
        }
        if recovery_end.is_some_and(|end| Instant::now() >= end) {
            // Opens not replayed by now are gone with their clients: the orphans
            // nobody took back are destroyed.
            recovery_end = None;
            match mdt.submitter().submit_admin(0, Admin::ReclaimOrphans) {
                Ok(()) => println!("nacre-mds: open recovery window closed"),
                Err(e) => tracing::error!("reclaiming orphans: {e:?}"),
            }
        }
        // Clients that fell silent for the open lease lose their handles: a killed
        // process's unlinked files are destroyed (not held until the next restart).
        if last_evict.elapsed() >= EVICT_EVERY {
            last_evict = Instant::now();
            if let Err(e) = mdt
                .submitter()
                .submit_admin(0, Admin::EvictSilent(cfg.open_lease))
            {
                tracing::error!("evicting silent clients: {e:?}");
            }
        }
        // New OSTs in the map become available to new files, and statfs reports their
        // space as the map has it (the MGS is off the data path: a failed fetch only
        // delays that).
        if last_map.elapsed() > Duration::from_secs(1) {
            last_map = Instant::now();
            role.keeper.set_report(TargetReport {
                rebuild: rebuild.progress(),
                settled: rebuild.settled(),
                standby: match repl.is_named() || cfg.mode == SyncMode::Default {
                    true => shipper.standby(),
                    false => String::new(),
                },
                ..report.clone()
            });
            if let Ok(map) = mgs.fetch_map() {
                // The OSTs' states reach the MDT before the rebuild sees the map: it
                // settles a replaced OST over a snapshot taken after them.
                let now = ost_places(&map);
                if !now.is_empty() && now != places {
                    let _ = mdt.submitter().submit_admin(0, Admin::SetOsts(now.clone()));
                    places = now;
                }
                mdt.set_ost_space(ost_space(&map));
                mdt.root_squash().set(map.root_squash);
                destroyer.set_map(map.clone());
                hsm.set_map(map.clone());
                rebuild.set_map(map.clone());
                checker.set_map(map.clone());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let fenced = role.is_fenced();
    if let Err(e) = role.release() {
        tracing::warn!("releasing the mds role: {e}");
    }
    for (core, m) in engine.stop().iter().enumerate() {
        tracing::debug!("core {core} metrics:\n{}", m.prometheus(core));
    }
    let st = mdt.stats();
    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(
        "MDT: {} operations in {} batches, {} log fdatasyncs ({} us each, {} us idle between), \
         {} checkpoints, {} retries answered from the reply cache",
        n(&st.ops),
        n(&st.batches),
        n(&st.log_syncs),
        n(&st.log_sync_ns) / n(&st.log_syncs).max(1) / 1000,
        n(&st.log_wait_ns) / n(&st.log_syncs).max(1) / 1000,
        n(&st.checkpoints),
        n(&st.reconstructed)
    );
    tracing::debug!("{} objects of gone files destroyed", destroyer.destroyed());
    drop(shipper);
    drop(hsm);
    drop(checker);
    drop(destroyer);
    drop(slot);
    if let Ok(mdt) = Arc::try_unwrap(mdt) {
        mdt.shutdown()?;
    }
    println!("nacre-mds: stopped");
    Ok(!fenced)
}

/// The role to serve and when its claim was sent: claimed at once, or, for a standby
/// (or an MDS whose role another server holds now: its MDT is the older copy), after
/// following the MDS that serves it until its lease lapses. None: stopped first.
fn claim_or_follow(
    cfg: &MdsServeConfig,
    mgs: &mut MgsClient,
    req: &ClaimRequest,
    stop: &AtomicBool,
) -> Result<Option<(Grant, Instant)>, MdsServeError> {
    if !cfg.standby {
        let sent = Instant::now();
        match mgs.claim(req) {
            Ok(grant) => return Ok(Some((grant, sent))),
            Err(e) if e.errno() == Some(errno::EBUSY) && req.want.is_some() => {
                println!("nacre-mds: {e}: following it as a standby");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let got = crate::standby::follow::follow(mgs, &cfg.dir, req, stop)?;
    if let Some((grant, _)) = &got {
        println!(
            "nacre-mds: took {} over at epoch {} from the copy in {}",
            grant.role,
            grant.epoch,
            cfg.dir.display()
        );
    }
    Ok(got)
}

/// The TCP listener a standby follows this MDS at: on the address the fabric serves
/// from, else the one that routes to the MGS, on a port of the kernel's choosing.
fn replication_listener(cfg: &MdsServeConfig) -> Result<TcpListener, MdsServeError> {
    let ip = cfg
        .node
        .as_deref()
        .and_then(|n| n.parse::<IpAddr>().ok())
        .or_else(|| nacre_fabric::source_for(&cfg.mgs)?.parse().ok())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    TcpListener::bind((ip, 0)).map_err(MdsServeError::Dir)
}

fn start_engine(
    cfg: &MdsServeConfig,
    slot: &MdtSlot,
    key: Option<nacre_auth::Key>,
) -> Result<Engine, MdsServeError> {
    let mut ecfg = cfg.engine.clone();
    ecfg.fabric = Selection::toward(&cfg.provider, cfg.node.clone(), &cfg.mgs);
    ecfg.reactor = ReactorConfig {
        msg_size: nacre_proto::meta::MSG_SIZE,
        key,
        ..ecfg.reactor
    };
    ecfg.storage_paths = vec![cfg.dir.clone()];
    let slot = slot.clone();
    let sealer = ecfg
        .reactor
        .key
        .as_ref()
        .and_then(nacre_auth::CapabilityKey::of)
        .map(|k| Sealer::new(k, cfg.capability_lifetime));
    Ok(Engine::start(&ecfg, move |_, _| {
        MdsService::bound(slot.clone()).sealing(sealer.clone())
    })?)
}

/// Where each OST of `map` is and whether it serves, for placing new files.
fn ost_places(map: &ClusterMap) -> Vec<OstPlace> {
    map.targets
        .iter()
        .filter(|t| t.kind == TargetKind::Ost)
        .map(|t| OstPlace {
            index: t.index,
            server: map
                .server(t.role)
                .and_then(|s| s.cores.first().cloned())
                .unwrap_or_else(|| t.owner.as_bytes().to_vec()),
            host: t.owner.split(':').next().unwrap_or_default().to_string(),
            up: t.state != TargetState::Down,
        })
        .collect()
}

/// The striping of new files the file system was formatted with; Lustre's own default
/// where the MGS's cannot be a stripe (a size not a multiple of 64 KiB).
fn default_spec(map: &ClusterMap) -> StripeSpec {
    let d = map.layout;
    let spec = StripeSpec {
        stripe_size: u32::try_from(d.stripe_size).unwrap_or(0),
        count: StripeCount::Count(d.stripe_count),
        first: FirstOst::Any,
        mirrors: d.mirror_count,
    };
    match spec.validate() {
        Ok(()) => spec,
        Err(e) => {
            tracing::warn!("the file system's default layout: {e}; using 1 MiB x 1");
            StripeSpec {
                mirrors: d.mirror_count.clamp(1, MAX_MIRRORS),
                ..StripeSpec::default()
            }
        }
    }
}

pub(crate) fn ost_indices(map: &ClusterMap) -> Vec<u32> {
    let mut v: Vec<u32> = map
        .targets
        .iter()
        .filter(|t| t.kind == TargetKind::Ost)
        .map(|t| t.index)
        .collect();
    v.sort_unstable();
    v
}

/// The space of the OSTs that serve (up or degraded) in `map`; a down OST's last report
/// is not counted, as `df` on Lustre leaves out an OST it cannot reach.
fn ost_space(map: &ClusterMap) -> OstSpace {
    let mut s = OstSpace::default();
    for t in map.targets.iter().filter(|t| t.kind == TargetKind::Ost) {
        if t.state != TargetState::Down {
            s.total += t.capacity;
            s.free += t.free.min(t.capacity);
            s.osts += 1;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_proto::bootstrap::{LayoutDefaults, Role, Target};

    fn target(
        kind: TargetKind,
        index: u32,
        state: TargetState,
        capacity: u64,
        free: u64,
    ) -> Target {
        let role_kind = match kind {
            TargetKind::Mdt => RoleKind::Mds,
            TargetKind::Ost => RoleKind::Oss,
        };
        Target {
            kind,
            index,
            role: Role {
                kind: role_kind,
                index,
            },
            owner: "node".into(),
            epoch: 1,
            state,
            capacity,
            free,
            generation: 1,
            settled: 1,
        }
    }

    #[test]
    fn statfs_counts_the_osts_that_serve() {
        let map = ClusterMap {
            rebuild: Vec::new(),
            version: 3,
            fsname: "fs".into(),
            fsid: 1,
            layout: LayoutDefaults::default(),
            root_squash: None,
            targets: vec![
                target(TargetKind::Mdt, 0, TargetState::Up, 7, 7),
                target(TargetKind::Ost, 0, TargetState::Up, 100, 40),
                target(TargetKind::Ost, 1, TargetState::Degraded, 100, 10),
                target(TargetKind::Ost, 2, TargetState::Down, 100, 100),
                // A report that claims more free than capacity counts as full capacity.
                target(TargetKind::Ost, 3, TargetState::Up, 50, 80),
            ],
            servers: Vec::new(),
        };
        let s = ost_space(&map);
        assert_eq!(
            s,
            OstSpace {
                total: 250,
                free: 100,
                osts: 3
            }
        );
    }
}
