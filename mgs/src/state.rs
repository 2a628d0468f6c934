//! The MGS's state machine: roles, leases, epochs and the map, as pure code.
//!
//! Every call takes the time (the MGS's monotonic clock) and an event and answers with a
//! value; what must be made durable before that answer leaves is collected and taken by
//! the driver with [`MgsState::take_changes`]. Leases are judged here, in memory, on the
//! MGS's clock: after a restart every role that was up gets a fresh lease (a grace
//! period), so nobody loses a role because the MGS was away, and nobody takes one over
//! before the old owner, whose own clock runs out no later than the MGS's, has stopped
//! serving. A store that keeps leases of its own (etcd) is told of every lease granted,
//! renewed and ended, and may say at load that a role's lease ran out while no MGS
//! decided (`Persisted::lease_lost`): such a role is down at once.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use nacre_proto::bootstrap::{
    errno, ClaimRequest, ClusterMap, Deployment, Grant, LayoutDefaults, RebuildProgress,
    RenewRequest, Renewed, Role, RoleKind, ServerEntry, Settled, Target, TargetKind, TargetState,
    MAX_REPLY_BODY,
};

/// The file system this MGS manages (written once by `format`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsIdent {
    pub fsname: String,
    pub fsid: u64,
    pub layout: LayoutDefaults,
    /// What root of a client acts as (None: root stays root).
    pub root_squash: Option<(u32, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How often servers renew.
    pub heartbeat: Duration,
    /// How long a renewal keeps a role; after it the role may be taken over.
    pub lease: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            heartbeat: Duration::from_secs(1),
            lease: Duration::from_secs(5),
        }
    }
}

/// What the store keeps of a role: its owner (with addresses) and its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRecord {
    pub server: ServerEntry,
    pub target: Target,
}

/// Everything durable: the identity, the map version and every role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persisted {
    pub fs: FsIdent,
    pub version: u64,
    pub roles: Vec<RoleRecord>,
    /// Roles up in the records whose lease the store saw end while no MGS decided
    /// (etcd: the role's lease key expired); empty for a store without leases.
    pub lease_lost: Vec<Role>,
}

/// What to make durable before answering, and the lease events of the same call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub version: Option<u64>,
    pub roles: Vec<RoleRecord>,
    /// Roles whose lease started (a claim, or a renewal that brought a role back up).
    pub granted: Vec<Role>,
    /// Roles whose lease ended (lapsed or released).
    pub ended: Vec<Role>,
    /// Roles whose live lease was renewed (nothing durable: a store may keep its own
    /// lease alive on it).
    pub renewed: Vec<Role>,
    /// A new root squash setting to store.
    pub root_squash: Option<Option<(u32, u32)>>,
}

impl Changes {
    /// Nothing to commit (renewals alone are not commits).
    pub fn is_empty(&self) -> bool {
        self.version.is_none()
            && self.roles.is_empty()
            && self.granted.is_empty()
            && self.ended.is_empty()
            && self.root_squash.is_none()
    }
}

/// A refusal: the errno on the wire and a message naming what was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub errno: i32,
    pub message: String,
}

fn refuse(errno: i32, message: String) -> Refusal {
    Refusal { errno, message }
}

pub struct MgsState {
    fs: FsIdent,
    cfg: LeaseConfig,
    version: u64,
    roles: BTreeMap<Role, RoleRecord>,
    /// Live leases; a role absent here has lapsed (or was released).
    expiry: HashMap<Role, Instant>,
    /// Roles whose lease this MGS saw end: their owner must claim them again.
    lapsed: std::collections::HashSet<Role>,
    /// Each MDS's last rebuild report (in memory: it moves with every heartbeat).
    rebuild: BTreeMap<Role, Vec<RebuildProgress>>,
    /// Each MDS's last report of the replaced OSTs whose lost copies it marked stale.
    settled: BTreeMap<Role, Vec<Settled>>,
    /// Each MDS's last named in-sync standby (in memory: an MGS restart forgets it,
    /// and then any server with an MDT may take a lapsed MDS role, as before standbys).
    standby: BTreeMap<Role, String>,
    changes: Changes,
}

impl MgsState {
    /// The state after (re)start at `now`: roles that were up get a full lease, but for
    /// those whose lease the store saw end, which go down (a change to commit).
    pub fn new(p: Persisted, cfg: LeaseConfig, now: Instant) -> MgsState {
        let roles: BTreeMap<Role, RoleRecord> =
            p.roles.into_iter().map(|r| (r.server.role, r)).collect();
        let mut s = MgsState {
            fs: p.fs,
            cfg,
            version: p.version,
            roles,
            expiry: HashMap::new(),
            lapsed: Default::default(),
            rebuild: BTreeMap::new(),
            settled: BTreeMap::new(),
            standby: BTreeMap::new(),
            changes: Changes::default(),
        };
        for role in &p.lease_lost {
            s.set_state(*role, TargetState::Down);
        }
        for (role, rec) in &s.roles {
            if rec.target.state != TargetState::Down {
                s.expiry.insert(*role, now + cfg.lease);
            }
        }
        s
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn config(&self) -> LeaseConfig {
        self.cfg
    }

    /// What changed since the last call: persist it before replying.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Lapses every lease past its end: the role's target goes down and the version
    /// grows. Returns the roles that lapsed.
    pub fn tick(&mut self, now: Instant) -> Vec<Role> {
        let lapsed: Vec<Role> = self
            .expiry
            .iter()
            .filter(|(_, &end)| now > end)
            .map(|(&r, _)| r)
            .collect();
        for role in &lapsed {
            self.expiry.remove(role);
            self.rebuild.remove(role);
            self.lapsed.insert(*role);
            self.set_state(*role, TargetState::Down);
            self.changes.ended.push(*role);
        }
        lapsed
    }

    /// Gives a role to `req.node` (see [`ClaimRequest`] for which one).
    pub fn claim(&mut self, now: Instant, req: &ClaimRequest) -> Result<Grant, Refusal> {
        if req.node.is_empty() || req.provider.is_empty() {
            return Err(refuse(
                errno::EINVAL,
                "a claim needs a node identity and a provider".into(),
            ));
        }
        self.tick(now);
        let Pick {
            role,
            fresh,
            replaced,
        } = self.pick_role(req)?;
        let old = self.roles.get(&role).map(|r| &r.target);
        let epoch = self.roles.get(&role).map_or(0, |r| r.server.epoch) + 1;
        // A replaced target holds none of its copies (or old ones) until the MDS marked
        // them stale: down to clients until then.
        let (generation, settled) = match (old, replaced) {
            (Some(t), true) => (t.generation + 1, t.settled),
            (Some(t), false) => (t.generation, t.settled),
            (None, _) => (1, 1),
        };
        if replaced {
            tracing::warn!(
                "{role} replaced by {} at generation {generation}: its copies are rebuilt \
                 from their mirrors",
                req.node
            );
        }
        let rec = RoleRecord {
            server: ServerEntry {
                role,
                node: req.node.clone(),
                epoch,
                provider: req.provider.clone(),
                cores: req.cores.clone(),
                replication: req.replication.clone(),
            },
            target: Target {
                kind: role.kind.target_kind(),
                index: role.index,
                role,
                owner: req.node.clone(),
                epoch,
                state: match generation == settled {
                    true => TargetState::Up,
                    false => TargetState::Down,
                },
                capacity: self.roles.get(&role).map_or(0, |r| r.target.capacity),
                free: self.roles.get(&role).map_or(0, |r| r.target.free),
                generation,
                settled,
            },
        };
        self.check_map_fits(&rec)?;
        self.expiry.insert(role, now + self.cfg.lease);
        self.lapsed.remove(&role);
        self.roles.insert(role, rec.clone());
        self.bump();
        self.changes.roles.retain(|r| r.server.role != role);
        self.changes.roles.push(rec);
        self.changes.granted.push(role);
        Ok(Grant {
            role,
            epoch,
            fresh,
            generation,
            heartbeat_ms: ms(self.cfg.heartbeat),
            lease_ms: ms(self.cfg.lease),
            fsname: self.fs.fsname.clone(),
            fsid: self.fs.fsid,
        })
    }

    /// Extends the owner's lease, if `req.epoch` is the role's current epoch.
    pub fn renew(&mut self, now: Instant, req: &RenewRequest) -> Result<Renewed, Refusal> {
        self.check_epoch(req.role, req.epoch)?;
        // A lease this MGS saw end is not taken up again at the same epoch: clients may
        // have acted on the target being down (marked its copies stale), and tell a
        // server that came back by its new epoch. The owner steps down and claims the
        // role again. (Leases that ended while no MGS ran, found at a start, are taken
        // up again: the owner may have served throughout.)
        if self.lapsed.contains(&req.role) {
            return Err(refuse(
                errno::ESTALE,
                format!(
                    "{}: the lease of epoch {} ended (the target is down): claim it again",
                    req.role, req.epoch
                ),
            ));
        }
        match self.expiry.insert(req.role, now + self.cfg.lease) {
            Some(_) => self.changes.renewed.push(req.role),
            None => self.changes.granted.push(req.role),
        }
        let rec = self.roles.get_mut(&req.role).expect("checked");
        // Space figures change on every heartbeat: kept in memory, not a map change.
        rec.target.capacity = req.report.capacity;
        rec.target.free = req.report.free;
        let unsettled = rec.target.generation != rec.target.settled;
        if req.role.kind == RoleKind::Mds {
            self.rebuild.insert(req.role, req.report.rebuild.clone());
            self.settled.insert(req.role, req.report.settled.clone());
            self.standby.insert(req.role, req.report.standby.clone());
            self.settle();
        }
        self.set_state(
            req.role,
            match unsettled {
                true => TargetState::Down,
                false => req.report.state,
            },
        );
        Ok(Renewed {
            lease_ms: ms(self.cfg.lease),
            map_version: self.version,
        })
    }

    /// Gives a role up at once: it may be claimed without waiting for the lease.
    pub fn release(&mut self, role: Role, epoch: u64) -> Result<(), Refusal> {
        self.check_epoch(role, epoch)?;
        if self.expiry.remove(&role).is_some() {
            self.changes.ended.push(role);
        }
        self.rebuild.remove(&role);
        self.set_state(role, TargetState::Down);
        Ok(())
    }

    pub fn map(&self) -> ClusterMap {
        ClusterMap {
            version: self.version,
            fsname: self.fs.fsname.clone(),
            fsid: self.fs.fsid,
            layout: self.fs.layout,
            root_squash: self.fs.root_squash,
            targets: self.roles.values().map(|r| r.target.clone()).collect(),
            servers: self.roles.values().map(|r| r.server.clone()).collect(),
            rebuild: self.rebuild_progress(),
        }
    }

    /// Replaced OSTs that every MDS has settled (marked the lost copies stale) serve
    /// again: up if their server's lease is live.
    fn settle(&mut self) {
        let mdss: Vec<Role> = self
            .roles
            .keys()
            .filter(|r| r.kind == RoleKind::Mds)
            .copied()
            .collect();
        let done = |ost: u32, generation: u64| {
            mdss.iter().all(|m| {
                self.settled.get(m).is_some_and(|list| {
                    list.iter()
                        .any(|s| s.ost == ost && s.generation >= generation)
                })
            })
        };
        let ready: Vec<Role> = self
            .roles
            .values()
            .filter(|r| r.target.kind == TargetKind::Ost)
            .filter(|r| r.target.settled < r.target.generation)
            .filter(|r| done(r.target.index, r.target.generation))
            .map(|r| r.server.role)
            .collect();
        for role in ready {
            let rec = self.roles.get_mut(&role).expect("listed");
            rec.target.settled = rec.target.generation;
            tracing::info!(
                "{role}: the copies its generation {} lost are marked stale: it serves",
                rec.target.generation
            );
            let live = self.expiry.contains_key(&role);
            let rec = rec.clone();
            self.changes.roles.retain(|r| r.server.role != role);
            self.changes.roles.push(rec);
            self.bump();
            if live {
                self.set_state(role, TargetState::Up);
            }
        }
    }

    /// Every MDS's rebuild reports summed per OST.
    fn rebuild_progress(&self) -> Vec<RebuildProgress> {
        let mut per_ost: BTreeMap<u32, RebuildProgress> = BTreeMap::new();
        for r in self.rebuild.values().flatten() {
            let sum = per_ost.entry(r.ost).or_insert(RebuildProgress {
                ost: r.ost,
                left: 0,
                total: 0,
            });
            sum.left = sum.left.saturating_add(r.left);
            sum.total = sum.total.saturating_add(r.total);
        }
        per_ost.into_values().collect()
    }

    /// The role a claim gets, whether it is new, and whether it replaces the target.
    fn pick_role(&self, req: &ClaimRequest) -> Result<Pick, Refusal> {
        let of_kind = || {
            self.roles
                .values()
                .filter(|r| r.server.role.kind == req.kind)
        };
        let next = Role {
            kind: req.kind,
            index: of_kind().count() as u32,
        };
        // A target whose data is not the role's: none (an empty directory), or of
        // another generation (it was replaced while its server was away).
        let replaces = |r: &RoleRecord| {
            req.kind == RoleKind::Oss && (req.empty || req.generation != r.target.generation)
        };
        let pick = |r: &RoleRecord| Pick {
            role: r.server.role,
            fresh: false,
            replaced: replaces(r),
        };
        // Only a persistent file system has copies to rebuild a replaced target from.
        let replaceable = Deployment::of(&self.fs.layout) == Deployment::Persistent;
        if let Some(index) = req.want {
            let role = Role {
                kind: req.kind,
                index,
            };
            let named = self.standby.get(&role).filter(|s| !s.is_empty());
            return match self.roles.get(&role) {
                Some(r) if r.server.node == req.node => Ok(pick(r)),
                // The owner named a standby holding every operation it acknowledged:
                // only that one may take over, no server with an older copy.
                Some(_) if named.is_some_and(|s| *s != req.node) => Err(refuse(
                    errno::EBUSY,
                    format!(
                        "{role}: only its in-sync standby {} may take it over",
                        named.map_or("", |s| s.as_str())
                    ),
                )),
                Some(r) if !self.expiry.contains_key(&role) => Ok(pick(r)),
                Some(r) => Err(refuse(
                    errno::EBUSY,
                    format!(
                        "{role} is held by {} (epoch {}) until its lease lapses",
                        r.server.node, r.server.epoch
                    ),
                )),
                None if role == next => Ok(Pick::new(role)),
                None => Err(refuse(
                    errno::ENOENT,
                    format!("{role} does not exist; the next new role is {next}"),
                )),
            };
        }
        if let Some(own) = of_kind().find(|r| r.server.node == req.node) {
            if req.empty && !replaceable {
                // Its directory held that target, and holds nothing now: serving the
                // role from it would show every object there as missing.
                return Err(refuse(
                    errno::EEXIST,
                    format!(
                        "{} was served from {} but this server finds no target there: \
                         restore the directory, or start the server on another one \
                         (it then gets a new role)",
                        own.server.role, req.node
                    ),
                ));
            }
            return Ok(pick(own));
        }
        // A lapsed role goes to a server that brings a target; to an empty one only
        // where the role's copies can be rebuilt from their mirrors.
        if !req.empty || replaceable {
            if let Some(lapsed) = of_kind().find(|r| !self.expiry.contains_key(&r.server.role)) {
                return Ok(pick(lapsed));
            }
        }
        Ok(Pick::new(next))
    }

    fn check_epoch(&self, role: Role, epoch: u64) -> Result<(), Refusal> {
        let Some(rec) = self.roles.get(&role) else {
            return Err(refuse(errno::ENOENT, format!("{role} does not exist")));
        };
        if rec.server.epoch != epoch {
            return Err(refuse(
                errno::ESTALE,
                format!(
                    "{role}: epoch {epoch} is stale; the owner is {} at epoch {}",
                    rec.server.node, rec.server.epoch
                ),
            ));
        }
        Ok(())
    }

    /// The map must stay one bounded frame: refuse a claim that would outgrow it.
    fn check_map_fits(&self, rec: &RoleRecord) -> Result<(), Refusal> {
        let mut map = self.map();
        map.servers.retain(|s| s.role != rec.server.role);
        map.targets.retain(|t| t.role != rec.server.role);
        map.servers.push(rec.server.clone());
        map.targets.push(rec.target.clone());
        let len = map.encode().len();
        if len > MAX_REPLY_BODY as usize {
            return Err(refuse(
                errno::ENOSPC,
                format!("the map would grow to {len} bytes, over its limit of {MAX_REPLY_BODY}"),
            ));
        }
        Ok(())
    }

    fn set_state(&mut self, role: Role, state: TargetState) {
        let Some(rec) = self.roles.get_mut(&role) else {
            return;
        };
        if rec.target.state == state {
            return;
        }
        rec.target.state = state;
        let rec = rec.clone();
        self.changes.roles.retain(|r| r.server.role != role);
        self.changes.roles.push(rec);
        self.bump();
    }

    /// Sets what root of a client acts as (None: root stays root).
    pub fn set_root_squash(&mut self, squash: Option<(u32, u32)>) {
        if self.fs.root_squash != squash {
            self.fs.root_squash = squash;
            self.changes.root_squash = Some(squash);
            self.bump();
        }
    }

    fn bump(&mut self) {
        self.version += 1;
        self.changes.version = Some(self.version);
    }

    /// The kinds of role present, for logging.
    pub fn count(&self, kind: RoleKind) -> usize {
        self.roles.keys().filter(|r| r.kind == kind).count()
    }
}

/// What a claim gets: a role, whether it is new, whether its target is replaced.
struct Pick {
    role: Role,
    fresh: bool,
    replaced: bool,
}

impl Pick {
    fn new(role: Role) -> Pick {
        Pick {
            role,
            fresh: true,
            replaced: false,
        }
    }
}

fn ms(d: Duration) -> u32 {
    d.as_millis().min(u32::MAX as u128) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_proto::bootstrap::TargetReport;

    const HB: Duration = Duration::from_millis(100);
    const LEASE: Duration = Duration::from_millis(500);

    fn fresh(now: Instant) -> MgsState {
        let fs = FsIdent {
            fsname: "t".into(),
            fsid: 9,
            layout: LayoutDefaults::default(),
            root_squash: None,
        };
        MgsState::new(
            Persisted {
                fs,
                version: 1,
                roles: vec![],
                lease_lost: vec![],
            },
            LeaseConfig {
                heartbeat: HB,
                lease: LEASE,
            },
            now,
        )
    }

    fn claim(kind: RoleKind, node: &str, want: Option<u32>) -> ClaimRequest {
        ClaimRequest {
            kind,
            want,
            node: node.into(),
            provider: "tcp".into(),
            cores: vec![node.as_bytes().to_vec()],
            empty: false,
            generation: 1,
            replication: String::new(),
        }
    }

    fn renew(role: Role, epoch: u64) -> RenewRequest {
        RenewRequest {
            role,
            epoch,
            report: TargetReport {
                rebuild: Vec::new(),
                settled: Vec::new(),
                standby: String::new(),
                state: TargetState::Up,
                capacity: 10,
                free: 5,
            },
        }
    }

    #[test]
    fn an_empty_server_gets_a_new_role_never_one_with_data() {
        let t0 = Instant::now();
        let mut s = fresh(t0);
        let a = s.claim(t0, &claim(RoleKind::Oss, "a", None)).unwrap();
        // a's lease lapses: a server with a target of its own may take the role over,
        // one that brings an empty directory gets a new one.
        let later = t0 + LEASE * 2;
        let mut empty = claim(RoleKind::Oss, "b", None);
        empty.empty = true;
        let b = s.claim(later, &empty).unwrap();
        assert_eq!((b.role.index, b.fresh), (1, true));
        assert!(s.map().target_down(a.role), "the lapsed role stays down");
        // a's directory wiped: its own role is not given back to it empty.
        let mut wiped = claim(RoleKind::Oss, "a", None);
        wiped.empty = true;
        assert_eq!(s.claim(later, &wiped).unwrap_err().errno, errno::EEXIST);
        // With its target it is.
        let back = s.claim(later, &claim(RoleKind::Oss, "a", None)).unwrap();
        assert_eq!(back.role, a.role);
    }

    fn persistent(now: Instant) -> MgsState {
        let mut s = fresh(now);
        s.fs.layout.mirror_count = Deployment::Persistent.mirrors();
        s
    }

    fn settled(mds: &Grant, ost: u32, generation: u64) -> RenewRequest {
        let mut r = renew(mds.role, mds.epoch);
        r.report.settled = vec![Settled { ost, generation }];
        r
    }

    #[test]
    fn in_a_persistent_fs_an_empty_server_replaces_a_lost_oss_at_a_new_generation() {
        let t0 = Instant::now();
        let mut s = persistent(t0);
        let m = s.claim(t0, &claim(RoleKind::Mds, "m", None)).unwrap();
        let a = s.claim(t0, &claim(RoleKind::Oss, "a", None)).unwrap();
        assert_eq!(a.generation, 1);
        // a lost; the MDS renews on.
        let m_r = renew(m.role, m.epoch);
        let later = t0 + LEASE + HB;
        s.renew(later - LEASE / 2, &m_r).unwrap();
        s.tick(later);
        let mut empty = claim(RoleKind::Oss, "b", None);
        empty.empty = true;
        empty.generation = 0;
        let b = s.claim(later, &empty).unwrap();
        assert_eq!((b.role, b.fresh, b.generation), (a.role, false, 2));
        // Down to clients, whatever its server says, until the MDS settled it.
        s.renew(later, &renew(b.role, b.epoch)).unwrap();
        s.renew(later, &m_r).unwrap();
        let t = s.map().target(a.role).cloned().unwrap();
        assert_eq!(
            (t.state, t.generation, t.settled),
            (TargetState::Down, 2, 1)
        );
        // Settled for an older generation: not enough.
        s.renew(later, &settled(&m, a.role.index, 1)).unwrap();
        assert!(s.map().target_down(a.role));
        let version = s.version();
        s.renew(later, &settled(&m, a.role.index, 2)).unwrap();
        let t = s.map().target(a.role).cloned().unwrap();
        assert_eq!((t.state, t.settled), (TargetState::Up, 2));
        assert!(s.version() > version, "a map change");
        let c = s.take_changes();
        assert!(
            c.roles.iter().any(|r| r.target.settled == 2),
            "made durable"
        );
        // a back with its old directory while b serves: refused.
        let old = claim(RoleKind::Oss, "a", Some(a.role.index));
        assert_eq!(s.claim(later, &old).unwrap_err().errno, errno::EBUSY);
        // b lost too: a takes the role back, but its data are of generation 1.
        let much_later = later + LEASE + HB;
        s.renew(much_later - LEASE / 2, &m_r).unwrap();
        s.tick(much_later);
        let back = s.claim(much_later, &old).unwrap();
        assert_eq!((back.role, back.generation), (a.role, 3));
        assert!(s.map().target_down(a.role));
    }

    #[test]
    fn in_a_persistent_fs_a_wiped_directory_takes_its_own_role_back_replaced() {
        let t0 = Instant::now();
        let mut s = persistent(t0);
        let a = s.claim(t0, &claim(RoleKind::Oss, "a", None)).unwrap();
        let mut wiped = claim(RoleKind::Oss, "a", None);
        wiped.empty = true;
        wiped.generation = 0;
        let back = s.claim(t0, &wiped).unwrap();
        assert_eq!((back.role, back.generation), (a.role, 2));
        // Unsettled with no MDS at all: it stays down.
        s.renew(t0, &renew(back.role, back.epoch)).unwrap();
        assert!(s.map().target_down(a.role));
    }

    #[test]
    fn only_the_named_standby_takes_a_lapsed_mds_role_over() {
        let t0 = Instant::now();
        let mut s = fresh(t0);
        let mut a_claim = claim(RoleKind::Mds, "a", None);
        a_claim.replication = "127.0.0.1:9".into();
        let a = s.claim(t0, &a_claim).unwrap();
        let shown = s.map().server(a.role).cloned().unwrap();
        assert_eq!(
            shown.replication, "127.0.0.1:9",
            "the map says where to follow"
        );
        let mut r = renew(a.role, a.epoch);
        r.report.standby = "b".into();
        s.renew(t0, &r).unwrap();
        let later = t0 + LEASE * 2;
        s.tick(later);
        // c has an MDT too, but not every operation a acknowledged.
        let c = s.claim(later, &claim(RoleKind::Mds, "c", Some(0)));
        assert_eq!(c.unwrap_err().errno, errno::EBUSY);
        let b = s.claim(later, &claim(RoleKind::Mds, "b", Some(0))).unwrap();
        assert_eq!((b.role, b.epoch), (a.role, a.epoch + 1));
        // a, back, finds its role held: it is the one to follow now.
        let back = s.claim(later, &claim(RoleKind::Mds, "a", Some(0)));
        assert_eq!(back.unwrap_err().errno, errno::EBUSY);
    }

    #[test]
    fn the_mds_rebuild_report_shows_in_the_map_until_its_lease_ends() {
        let t0 = Instant::now();
        let mut s = fresh(t0);
        let m = s.claim(t0, &claim(RoleKind::Mds, "m", None)).unwrap();
        let o = s.claim(t0, &claim(RoleKind::Oss, "o", None)).unwrap();
        let mut r = renew(m.role, m.epoch);
        r.report.rebuild = vec![RebuildProgress {
            ost: 0,
            left: 3,
            total: 4,
        }];
        s.renew(t0, &r).unwrap();
        let version = s.version();
        assert_eq!(s.map().rebuild_of(0).map(|p| p.percent()), Some(25));
        assert_eq!(s.version(), version, "progress is not a map change");
        // An OSS's report says nothing of the rebuild.
        let mut o_r = renew(o.role, o.epoch);
        o_r.report.rebuild = r.report.rebuild.clone();
        s.renew(t0, &o_r).unwrap();
        assert_eq!(s.map().rebuild.len(), 1);
        // The MDS gone: nobody rebuilds.
        s.tick(t0 + LEASE * 2);
        assert!(s.map().rebuild.is_empty());
    }

    #[test]
    fn new_claimants_get_the_next_index_and_a_restart_reclaims_its_own() {
        let t0 = Instant::now();
        let mut s = fresh(t0);
        let a = s.claim(t0, &claim(RoleKind::Oss, "a", None)).unwrap();
        let b = s.claim(t0, &claim(RoleKind::Oss, "b", None)).unwrap();
        let m = s.claim(t0, &claim(RoleKind::Mds, "a", None)).unwrap();
        assert_eq!(
            (a.role.to_string(), b.role.to_string(), m.role.to_string()),
            ("oss0".into(), "oss1".into(), "mds0".into())
        );
        assert!(a.fresh && b.fresh && m.fresh);
        assert_eq!((a.epoch, a.lease_ms, a.heartbeat_ms), (1, 500, 100));
        // "a" restarts while its lease runs: same role, next epoch, not fresh.
        let again = s.claim(t0, &claim(RoleKind::Oss, "a", None)).unwrap();
        assert_eq!((again.role, again.epoch, again.fresh), (a.role, 2, false));
        // The old incarnation is fenced.
        assert_eq!(
            s.renew(t0, &renew(a.role, 1)).unwrap_err().errno,
            errno::ESTALE
        );
        let changes = s.take_changes();
        assert_eq!(changes.version, Some(s.version()));
        let map = s.map();
        assert!(map.is_current(a.role, 2));
        assert_eq!(map.server(a.role).unwrap().cores, vec![b"a".to_vec()]);
        assert_eq!(map.targets.len(), 3);
    }

    #[test]
    fn takeover_waits_for_the_lease_then_fences_the_old_owner() {
        let t0 = Instant::now();
        let mut s = fresh(t0);
        let a = s.claim(t0, &claim(RoleKind::Oss, "a", None)).unwrap();
        // A standby for oss0 is refused while "a" renews.
        let mut t = t0;
        for _ in 0..10 {
            t += HB;
            s.renew(t, &renew(a.role, a.epoch)).unwrap();
            let err = s.claim(t, &claim(RoleKind::Oss, "b", Some(0))).unwrap_err();
            assert_eq!(err.errno, errno::EBUSY);
        }
        // Without `want`, "b" gets a new role rather than "a"'s.
        assert_eq!(
            s.claim(t, &claim(RoleKind::Oss, "c", None))
                .unwrap()
                .role
                .index,
            1
        );
        // Exactly at the lease's end it is still held; just after, it is not.
        let end = t + LEASE;
        assert!(s.claim(end, &claim(RoleKind::Oss, "b", Some(0))).is_err());
        let v = s.version();
        let g = s
            .claim(
                end + Duration::from_millis(1),
                &claim(RoleKind::Oss, "b", Some(0)),
            )
            .unwrap();
        assert_eq!((g.role, g.epoch, g.fresh), (a.role, 2, false));
        assert!(s.version() > v);
        // The old owner wakes up: refused; the successor renews.
        let err = s.renew(end + LEASE, &renew(a.role, a.epoch)).unwrap_err();
        assert_eq!(err.errno, errno::ESTALE);
        assert!(err.message.contains("owner is b at epoch 2"), "{err}");
        s.renew(end + LEASE, &renew(a.role, 2)).unwrap();
        assert_eq!(s.map().target(a.role).unwrap().owner, "b");
    }

    #[test]
    fn a_lapsed_lease_marks_the_target_down_and_its_owner_must_claim_again() {
        let t0 = Instant::now();
        let mut s = fresh(t0);
        let a = s.claim(t0, &claim(RoleKind::Oss, "a", None)).unwrap();
        s.take_changes();
        let v = s.version();
        assert!(s.tick(t0 + LEASE).is_empty());
        assert_eq!(s.tick(t0 + LEASE + HB), vec![a.role]);
        assert_eq!(s.map().target(a.role).unwrap().state, TargetState::Down);
        assert_eq!(s.version(), v + 1);
        assert_eq!(s.take_changes().roles.len(), 1);
        // Nobody took it, but the owner's late renewal is refused: it claims the role
        // again, at the next epoch.
        let late = s
            .renew(t0 + 2 * LEASE, &renew(a.role, a.epoch))
            .unwrap_err();
        assert_eq!(late.errno, errno::ESTALE, "{}", late.message);
        let again = s
            .claim(t0 + 2 * LEASE, &claim(RoleKind::Oss, "a", None))
            .unwrap();
        assert_eq!((again.role, again.epoch), (a.role, a.epoch + 1));
        assert_eq!(s.map().target(a.role).unwrap().state, TargetState::Up);
        s.renew(t0 + 2 * LEASE, &renew(a.role, again.epoch))
            .unwrap();
        let v = s.version();
        let a = again;
        // Space figures alone do not change the version.
        let mut r = renew(a.role, a.epoch);
        r.report.free = 1;
        s.renew(t0 + 2 * LEASE, &r).unwrap();
        assert_eq!(s.version(), v);
        assert_eq!(s.map().target(a.role).unwrap().free, 1);
    }

    #[test]
    fn release_frees_the_role_at_once_and_wrong_epochs_are_refused() {
        let t0 = Instant::now();
        let mut s = fresh(t0);
        let a = s.claim(t0, &claim(RoleKind::Mds, "a", None)).unwrap();
        assert_eq!(s.release(a.role, 7).unwrap_err().errno, errno::ESTALE);
        let ghost = Role {
            kind: RoleKind::Oss,
            index: 4,
        };
        assert_eq!(s.release(ghost, 1).unwrap_err().errno, errno::ENOENT);
        s.release(a.role, a.epoch).unwrap();
        let b = s.claim(t0, &claim(RoleKind::Mds, "b", None)).unwrap();
        assert_eq!((b.role, b.epoch), (a.role, 2));
        let err = s
            .claim(t0, &claim(RoleKind::Mds, "c", Some(5)))
            .unwrap_err();
        assert_eq!(err.errno, errno::ENOENT);
        let bad = ClaimRequest {
            node: String::new(),
            ..claim(RoleKind::Mds, "x", None)
        };
        assert_eq!(s.claim(t0, &bad).unwrap_err().errno, errno::EINVAL);
    }

    #[test]
    fn a_restarted_mgs_grants_a_grace_lease_to_roles_that_were_up() {
        let t0 = Instant::now();
        let mut s = fresh(t0);
        let a = s.claim(t0, &claim(RoleKind::Oss, "a", None)).unwrap();
        let b = s.claim(t0, &claim(RoleKind::Oss, "b", None)).unwrap();
        s.release(b.role, b.epoch).unwrap();
        let mut p = Persisted {
            fs: s.fs.clone(),
            version: s.version(),
            roles: s.roles.values().cloned().collect(),
            lease_lost: vec![],
        };
        p.roles.sort_by_key(|r| r.server.role);
        // Restart long after: "a" may still renew, nobody may take it for a lease.
        let t1 = t0 + 100 * LEASE;
        let mut s = MgsState::new(p, s.cfg, t1);
        let err = s
            .claim(t1 + HB, &claim(RoleKind::Oss, "z", Some(0)))
            .unwrap_err();
        assert_eq!(err.errno, errno::EBUSY);
        // The released one is free at once.
        let z = s.claim(t1 + HB, &claim(RoleKind::Oss, "z", None)).unwrap();
        assert_eq!(z.role, b.role);
        s.renew(t1 + 2 * HB, &renew(a.role, a.epoch)).unwrap();
    }

    #[test]
    fn lease_events_are_reported_with_the_changes() {
        let t0 = Instant::now();
        let mut s = fresh(t0);
        let a = s.claim(t0, &claim(RoleKind::Oss, "a", None)).unwrap();
        let c = s.take_changes();
        assert_eq!((c.granted, c.ended), (vec![a.role], vec![]));
        s.renew(t0 + HB, &renew(a.role, a.epoch)).unwrap();
        let c = s.take_changes();
        assert!(c.is_empty(), "a renewal commits nothing: {c:?}");
        assert_eq!(c.renewed, vec![a.role]);
        // Lapsed: ended; the late renewal is refused and grants nothing; claimed again
        // by its owner, it is granted at the next epoch.
        s.tick(t0 + HB + 2 * LEASE);
        assert_eq!(s.take_changes().ended, vec![a.role]);
        assert!(s.renew(t0 + 3 * LEASE, &renew(a.role, a.epoch)).is_err());
        assert!(s.take_changes().granted.is_empty());
        let a = s
            .claim(t0 + 3 * LEASE, &claim(RoleKind::Oss, "a", None))
            .unwrap();
        assert_eq!(s.take_changes().granted, vec![a.role]);
        // A takeover in one claim: the old lease ends, the new one starts, one record.
        let t = t0 + 5 * LEASE;
        let b = s.claim(t, &claim(RoleKind::Oss, "b", Some(0))).unwrap();
        let c = s.take_changes();
        assert_eq!((c.ended, c.granted), (vec![a.role], vec![b.role]));
        assert_eq!(c.roles.len(), 1);
        assert_eq!(c.roles[0].server.epoch, b.epoch);
        s.release(b.role, b.epoch).unwrap();
        assert_eq!(s.take_changes().ended, vec![b.role]);
    }

    #[test]
    fn a_role_whose_lease_the_store_lost_is_down_at_once() {
        let t0 = Instant::now();
        let mut s = fresh(t0);
        let a = s.claim(t0, &claim(RoleKind::Oss, "a", None)).unwrap();
        let b = s.claim(t0, &claim(RoleKind::Oss, "b", None)).unwrap();
        let p = Persisted {
            fs: s.fs.clone(),
            version: s.version(),
            roles: s.roles.values().cloned().collect(),
            lease_lost: vec![a.role],
        };
        let t1 = t0 + HB;
        let mut s = MgsState::new(p.clone(), s.cfg, t1);
        let c = s.take_changes();
        assert_eq!(c.version, Some(p.version + 1), "the map says so");
        assert_eq!(c.roles[0].target.state, TargetState::Down);
        // "a" is free for another at once; "b" keeps its grace lease.
        let z = s.claim(t1, &claim(RoleKind::Oss, "z", Some(0))).unwrap();
        assert_eq!((z.role, z.epoch), (a.role, a.epoch + 1));
        let err = s
            .claim(t1, &claim(RoleKind::Oss, "y", Some(b.role.index)))
            .unwrap_err();
        assert_eq!(err.errno, errno::EBUSY);
    }

    #[test]
    fn a_map_over_its_limit_is_refused() {
        let t0 = Instant::now();
        let mut s = fresh(t0);
        let mut big = claim(RoleKind::Oss, "n", None);
        big.cores = vec![vec![0; 512]; 128];
        let mut refused = None;
        for i in 0..200 {
            big.node = format!("n{i}");
            if let Err(e) = s.claim(t0, &big) {
                refused = Some((i, e));
                break;
            }
        }
        let (i, e) = refused.expect("the map stops growing");
        assert_eq!(e.errno, errno::ENOSPC);
        assert!(i > 10);
        assert!(s.map().encode().len() <= MAX_REPLY_BODY as usize);
    }
}
