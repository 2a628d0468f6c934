//! The etcd store, for deployments that run several MGS processes on one etcd.
//!
//! Keys, under `/nacre/mgs/`: `meta/<name>` (fsname, fsid, layout defaults, format
//! version), `version` (the map version), `role/<kind>/<index>` (a role record, as the
//! embedded store keeps it), `lease/<kind>/<index>` (the owner's epoch and node, attached
//! to an etcd lease of that role's own) and `leader` (the address of the MGS that decides,
//! attached to that MGS's etcd lease).
//!
//! Role leases: the leader judges them on its clock, as the embedded MGS does, and
//! mirrors each one as an etcd lease. A claim grants a fresh etcd lease and puts the
//! role's lease key on it in the commit's transaction, which also compares the key's
//! create revision with what the leader last saw (0: nobody's lease); a lapse or a release
//! deletes the key and revokes the lease. While the owner renews, the leader keeps the
//! etcd lease alive (every third of its TTL); an owner that stops renewing stops the
//! keep-alives. The TTL is one and a half MGS leases (at least etcd's 2 s), so a key
//! outlives the owner's own view of its lease by at least half a lease. A new leader
//! adopts the keys it finds and keeps them alive; a role whose key is gone (its owner
//! went silent while no MGS led) is down at once and may be claimed, while every role
//! with a key keeps the usual grace lease.
//!
//! One MGS at a time is the leader: it won the `leader` key with a transaction that
//! compares the key's create revision with 0 (nobody holds it), under an etcd lease it
//! keeps alive. Every commit is a transaction that compares the `leader` key's create
//! revision with the one the leader's own campaign created, so a deposed leader can never
//! write, even one that comes back on the same address. The others forward
//! requests to the leader (any MGS answers), and campaign when its lease lapses; the new
//! leader loads everything from etcd and grants every role that was up a fresh lease, the
//! same grace as after a restart of the embedded MGS.
//!
//! A leader stops answering once its etcd lease could have run out without a
//! keep-alive acknowledged (counted from when the keep-alive was sent, less a margin),
//! before etcd lets another MGS take over: the self-fencing argument of docs/mgs.md.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
};
use nacre_proto::bootstrap::{LayoutDefaults, Role, RoleKind, TargetState, MAX_FSNAME_LEN};

use super::embedded::FORMAT_VERSION;
use super::state::{Changes, FsIdent, Persisted};
use super::store::{decode_record, encode_record, Store, StoreError};

const PREFIX: &str = "/nacre/mgs/";

fn key(k: &str) -> String {
    format!("{PREFIX}{k}")
}

fn role_key(r: Role) -> String {
    key(&format!("role/{}/{}", r.kind as u32, r.index))
}

fn lease_key(r: Role) -> String {
    key(&format!("lease/{}/{}", r.kind as u32, r.index))
}

/// The etcd TTL of a role lease for an MGS lease of `lease`: one and a half of it, in
/// whole seconds, at least etcd's minimum of 2 s.
pub fn role_ttl(lease: Duration) -> Duration {
    Duration::from_secs(((lease.as_millis() * 3).div_ceil(2000) as u64).max(2))
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("etcd: {e}"))
}

/// `etcd://HOST:PORT[,HOST:PORT...]` to the endpoints etcd-client takes.
pub fn parse_url(url: &str) -> Option<Vec<String>> {
    let rest = url.strip_prefix("etcd://")?;
    let eps: Vec<String> = rest
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| format!("http://{s}"))
        .collect();
    (!eps.is_empty()).then_some(eps)
}

/// An etcd connection with its own small runtime; every call blocks the caller.
pub struct Etcd {
    rt: Arc<tokio::runtime::Runtime>,
    client: Client,
    url: String,
}

impl Etcd {
    pub fn connect(url: &str) -> Result<Etcd, StoreError> {
        let eps = parse_url(url)
            .ok_or_else(|| StoreError::Backend(format!("{url}: not etcd://HOST:PORT[,...]")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(3));
        let client = rt
            .block_on(Client::connect(eps, Some(opts)))
            .map_err(|e| StoreError::Backend(format!("cannot reach etcd at {url}: {e}")))?;
        Ok(Etcd {
            rt: Arc::new(rt),
            client,
            url: url.to_string(),
        })
    }

    fn get(&self, k: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut c = self.client.clone();
        let resp = self.rt.block_on(c.get(k, None)).map_err(backend)?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Creates the management target in etcd; refuses to replace one unless `force`.
    /// The name of the file system formatted in this store, if one is.
    pub fn fsname(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .get(&key("meta/fsname"))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn format(
        &self,
        fsname: &str,
        layout: LayoutDefaults,
        force: bool,
    ) -> Result<FsIdent, StoreError> {
        if fsname.is_empty() || fsname.len() > MAX_FSNAME_LEN {
            return Err(StoreError::Backend(format!(
                "fsname must be 1 to {MAX_FSNAME_LEN} bytes"
            )));
        }
        if let Some(old) = self.get(&key("meta/fsname"))? {
            if !force {
                return Err(StoreError::Exists {
                    dir: self.url.clone(),
                    fsname: String::from_utf8_lossy(&old).into_owned(),
                });
            }
        }
        let mut c = self.client.clone();
        self.rt
            .block_on(c.delete(PREFIX, Some(DeleteOptions::new().with_prefix())))
            .map_err(backend)?;
        let fs = FsIdent {
            fsname: fsname.to_string(),
            fsid: super::embedded::random_u64()?,
            layout,
            root_squash: None,
        };
        let puts = vec![
            TxnOp::put(
                key("meta/format_version"),
                FORMAT_VERSION.to_le_bytes(),
                None,
            ),
            TxnOp::put(key("meta/fsname"), fsname.as_bytes(), None),
            TxnOp::put(key("meta/fsid"), fs.fsid.to_le_bytes(), None),
            TxnOp::put(
                key("meta/stripe_count"),
                layout.stripe_count.to_le_bytes(),
                None,
            ),
            TxnOp::put(
                key("meta/stripe_size"),
                layout.stripe_size.to_le_bytes(),
                None,
            ),
            TxnOp::put(
                key("meta/mirror_count"),
                layout.mirror_count.to_le_bytes(),
                None,
            ),
            TxnOp::put(key("version"), 1u64.to_le_bytes(), None),
        ];
        // Only if nobody formatted it meanwhile.
        let txn = Txn::new()
            .when([Compare::create_revision(
                key("meta/fsname"),
                CompareOp::Equal,
                0,
            )])
            .and_then(puts);
        let done = self.rt.block_on(c.txn(txn)).map_err(backend)?;
        if !done.succeeded() {
            return Err(StoreError::Backend(
                "formatted concurrently by another".into(),
            ));
        }
        Ok(fs)
    }

    /// The current leader's address, if any.
    pub fn leader(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .get(&key("leader"))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Tries once to become the leader as `me` (the address this MGS serves on), under
    /// an etcd lease of `ttl`. On success the lease is kept alive on the runtime until
    /// it is lost (then `lost` is set).
    pub fn campaign(&self, me: &str, ttl: Duration) -> Result<Option<Leadership>, StoreError> {
        let ttl_s = ttl.as_secs().max(2) as i64;
        let mut c = self.client.clone();
        let sent = Instant::now();
        let lease = self
            .rt
            .block_on(c.lease_grant(ttl_s, None))
            .map_err(backend)?;
        let id = lease.id();
        let granted = Duration::from_secs(lease.ttl().max(0) as u64);
        let txn = Txn::new()
            .when([Compare::create_revision(key("leader"), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key("leader"),
                me.as_bytes(),
                Some(PutOptions::new().with_lease(id)),
            )]);
        let resp = self.rt.block_on(c.txn(txn)).map_err(backend)?;
        if !resp.succeeded() {
            let _ = self.rt.block_on(c.lease_revoke(id));
            return Ok(None);
        }
        // The revision that created our `leader` key: unique to this leadership, even if
        // a later leader serves on the same address.
        let revision = resp
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| StoreError::Backend("etcd: a txn reply without a header".into()))?;
        let clock = Arc::new(LeaderClock::new(sent, granted));
        let lost = Arc::new(AtomicBool::new(false));
        {
            let (clock, lost) = (clock.clone(), lost.clone());
            let client = self.client.clone();
            self.rt
                .spawn(async move { keep_alive(client, id, granted, clock, lost).await });
        }
        Ok(Some(Leadership {
            revision,
            lease: id,
            clock,
            lost,
        }))
    }

    /// Gives the leadership up at once (a clean stop): revokes its etcd lease, which
    /// deletes the `leader` key, so a follower is elected without waiting for the lease
    /// to run out. Stop serving before: the store's writes are fenced by the same lease.
    pub fn resign(&self, leadership: &Leadership) -> Result<(), StoreError> {
        leadership.lost.store(true, Ordering::SeqCst);
        let mut c = self.client.clone();
        self.rt
            .block_on(c.lease_revoke(leadership.lease))
            .map_err(backend)?;
        Ok(())
    }
}

/// The leader's own clock on its etcd lease.
pub struct LeaderClock {
    ttl: Duration,
    deadline: Mutex<Instant>,
}

impl LeaderClock {
    fn new(sent: Instant, ttl: Duration) -> LeaderClock {
        LeaderClock {
            ttl,
            deadline: Mutex::new(sent + ttl - ttl / 4),
        }
    }

    fn renewed(&self, sent: Instant) {
        let mut d = self.deadline.lock().unwrap_or_else(|p| p.into_inner());
        *d = (*d).max(sent + self.ttl - self.ttl / 4);
    }

    pub fn valid(&self) -> bool {
        Instant::now() < *self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the leader holds: the revision that created its `leader` key, its lease clock.
#[derive(Clone)]
pub struct Leadership {
    revision: i64,
    /// The etcd lease the `leader` key lives under.
    lease: i64,
    clock: Arc<LeaderClock>,
    lost: Arc<AtomicBool>,
}

impl Leadership {
    pub fn valid(&self) -> bool {
        !self.lost.load(Ordering::SeqCst) && self.clock.valid()
    }
}

async fn keep_alive(
    mut client: Client,
    id: i64,
    ttl: Duration,
    clock: Arc<LeaderClock>,
    lost: Arc<AtomicBool>,
) {
    let every = (ttl / 4).max(Duration::from_millis(100));
    let Ok((mut keeper, mut stream)) = client.lease_keep_alive(id).await else {
        lost.store(true, Ordering::SeqCst);
        return;
    };
    loop {
        tokio::time::sleep(every).await;
        let sent = Instant::now();
        if keeper.keep_alive().await.is_err() {
            if !clock.valid() {
                break;
            }
            continue;
        }
        match tokio::time::timeout(every, stream.message()).await {
            Ok(Ok(Some(r))) if r.ttl() > 0 => clock.renewed(sent),
            Ok(Ok(Some(_))) => break, // the lease is gone
            _ if clock.valid() => {}
            _ => break,
        }
    }
    lost.store(true, Ordering::SeqCst);
}

/// The store of the leader: loads from etcd, commits under the leader compare.
pub struct EtcdStore {
    etcd: Etcd,
    leadership: Leadership,
    /// The MGS lease: how long an owner may stay silent before its keep-alives stop.
    lease: Duration,
    /// The etcd lease behind each role this leader keeps alive.
    held: std::collections::HashMap<Role, HeldLease>,
    /// The clock `HeldLease::renewed` counts from.
    base: Instant,
}

/// A role's etcd lease as the leader holds it, and its keep-alive task.
struct HeldLease {
    id: i64,
    /// The create revision of the role's lease key.
    created: i64,
    /// When the owner last renewed, in ms since `EtcdStore::base`.
    renewed: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl EtcdStore {
    /// The store of the leader with `leadership`, for an MGS lease of `lease`.
    pub fn new(etcd: Etcd, leadership: Leadership, lease: Duration) -> EtcdStore {
        EtcdStore {
            etcd,
            leadership,
            lease,
            held: Default::default(),
            base: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// Holds `id` for `role` (its key created at `created`) and keeps it alive while
    /// the owner renews; a lease held before for the role is revoked.
    fn hold(&mut self, role: Role, id: i64, created: i64) {
        let lease = HeldLease {
            id,
            created,
            renewed: Arc::new(self.now_ms().into()),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let task = RoleKeepAlive {
            client: self.etcd.client.clone(),
            id,
            every: role_ttl(self.lease) / 3,
            silent_after: self.lease.as_millis() as u64,
            renewed: lease.renewed.clone(),
            base: self.base,
            stop: lease.stop.clone(),
        };
        self.etcd.rt.spawn(task.run());
        if let Some(old) = self.held.insert(role, lease) {
            self.revoke(old);
        }
    }

    fn revoke_ids(&self, ids: impl Iterator<Item = i64>) {
        for id in ids {
            let mut c = self.etcd.client.clone();
            self.etcd.rt.spawn(async move {
                let _ = c.lease_revoke(id).await;
            });
        }
    }

    /// Why a commit's transaction was refused: the leadership passed on (this MGS
    /// stops), or a role's lease key was not as this leader saw it (the caller reloads).
    fn why_refused(&self) -> StoreError {
        let still = self
            .etcd
            .rt
            .block_on(self.etcd.client.clone().get(key("leader"), None))
            .ok()
            .and_then(|r| r.kvs().first().map(|kv| kv.create_revision()))
            == Some(self.leadership.revision);
        if still {
            return StoreError::Backend(
                "etcd: a role's lease key changed under this leader; reloading".into(),
            );
        }
        self.leadership.lost.store(true, Ordering::SeqCst);
        StoreError::Backend("this MGS is no longer the leader in etcd".into())
    }

    /// Stops keeping `lease` alive and revokes it in the background (best effort: an
    /// etcd lease not revoked ends at its TTL anyway).
    fn revoke(&self, lease: HeldLease) {
        let id = lease.id;
        drop(lease);
        self.revoke_ids(std::iter::once(id));
    }
}

fn parse_lease_key(k: &str) -> Option<Role> {
    let rest = k.strip_prefix(&key("lease/"))?;
    let (kind, index) = rest.split_once('/')?;
    let kind = match kind.parse::<u32>().ok()? {
        k if k == RoleKind::Mds as u32 => RoleKind::Mds,
        k if k == RoleKind::Oss as u32 => RoleKind::Oss,
        _ => return None,
    };
    Some(Role {
        kind,
        index: index.parse().ok()?,
    })
}

/// Keeps one role's etcd lease alive while its owner renews at the MGS.
struct RoleKeepAlive {
    client: Client,
    id: i64,
    every: Duration,
    /// Stop once the owner has not renewed for this long (ms): it is gone, or the MGS
    /// will lapse its lease and revoke this one.
    silent_after: u64,
    renewed: Arc<std::sync::atomic::AtomicU64>,
    base: Instant,
    stop: Arc<AtomicBool>,
}

impl RoleKeepAlive {
    async fn run(mut self) {
        let Ok((mut keeper, mut stream)) = self.client.lease_keep_alive(self.id).await else {
            return;
        };
        // At once (an adopted lease may be close to its end), then every `every`.
        loop {
            let now = self.base.elapsed().as_millis() as u64;
            let last = self.renewed.load(Ordering::SeqCst);
            if self.stop.load(Ordering::SeqCst) || now.saturating_sub(last) > self.silent_after {
                return;
            }
            if keeper.keep_alive().await.is_ok() {
                if let Ok(Ok(Some(r))) = tokio::time::timeout(self.every, stream.message()).await {
                    if r.ttl() <= 0 {
                        return; // revoked or expired
                    }
                }
            }
            tokio::time::sleep(self.every).await;
        }
    }
}

fn fixed<const N: usize>(key: &str, v: Option<Vec<u8>>) -> Result<[u8; N], StoreError> {
    v.and_then(|v| v.try_into().ok())
        .ok_or(StoreError::Corrupt {
            key: key.into(),
            why: format!("missing or not {N} bytes"),
        })
}

impl Store for EtcdStore {
    fn load(&mut self) -> Result<Persisted, StoreError> {
        let mut c = self.etcd.client.clone();
        let resp = self
            .etcd
            .rt
            .block_on(c.get(PREFIX, Some(GetOptions::new().with_prefix())))
            .map_err(backend)?;
        let mut meta = std::collections::HashMap::new();
        let mut roles = Vec::new();
        let mut leases = Vec::new();
        for kv in resp.kvs() {
            let k = String::from_utf8_lossy(kv.key()).into_owned();
            let name = &k[PREFIX.len().min(k.len())..];
            if name.starts_with("lease/") {
                let role = parse_lease_key(&k).ok_or_else(|| StoreError::Corrupt {
                    key: k.clone(),
                    why: "not lease/<kind>/<index>".into(),
                })?;
                leases.push((role, kv.lease(), kv.create_revision()));
            } else if name.starts_with("role/") {
                roles.push(decode_record(kv.value()).map_err(|e| StoreError::Corrupt {
                    key: k.clone(),
                    why: e.to_string(),
                })?);
            } else {
                meta.insert(
                    name.trim_start_matches("meta/").to_string(),
                    kv.value().to_vec(),
                );
            }
        }
        let Some(fsname) = meta.remove("fsname") else {
            return Err(StoreError::NotFormatted {
                dir: self.etcd.url.clone(),
            });
        };
        let found = u32::from_le_bytes(fixed("format_version", meta.remove("format_version"))?);
        if found != FORMAT_VERSION {
            return Err(StoreError::FormatVersion {
                dir: self.etcd.url.clone(),
                found,
                want: FORMAT_VERSION,
            });
        }
        let fs = FsIdent {
            fsname: String::from_utf8_lossy(&fsname).into_owned(),
            fsid: u64::from_le_bytes(fixed("fsid", meta.remove("fsid"))?),
            layout: LayoutDefaults {
                stripe_count: u32::from_le_bytes(fixed(
                    "stripe_count",
                    meta.remove("stripe_count"),
                )?),
                stripe_size: u64::from_le_bytes(fixed("stripe_size", meta.remove("stripe_size"))?),
                // Absent in stores formatted before deployment types: scratch.
                mirror_count: match meta.remove("mirror_count") {
                    None => 1,
                    v => u32::from_le_bytes(fixed("mirror_count", v)?),
                },
            },
            root_squash: meta
                .remove("root_squash")
                .map(|v| fixed::<8>("root_squash", Some(v)).map(super::embedded::squash_of))
                .transpose()?,
        };
        let version = u64::from_le_bytes(fixed("version", meta.remove("version"))?);
        roles.sort_by_key(|r| r.server.role);
        // Adopt the role leases still alive in etcd (their owners renew to us now); a
        // role up in its record without one lost it while no MGS decided.
        self.held.clear();
        for &(role, id, created) in &leases {
            self.hold(role, id, created);
        }
        let lease_lost = roles
            .iter()
            .filter(|r| r.target.state != TargetState::Down)
            .map(|r| r.server.role)
            .filter(|role| !self.held.contains_key(role))
            .collect();
        Ok(Persisted {
            fs,
            version,
            roles,
            lease_lost,
        })
    }

    fn commit(&mut self, changes: &Changes) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut ops: Vec<TxnOp> = changes
            .roles
            .iter()
            .map(|r| TxnOp::put(role_key(r.server.role), encode_record(r), None))
            .collect();
        if let Some(v) = changes.version {
            ops.push(TxnOp::put(key("version"), v.to_le_bytes(), None));
        }
        match changes.root_squash {
            None => {}
            Some(None) => ops.push(TxnOp::delete(key("meta/root_squash"), None)),
            Some(Some(sq)) => ops.push(TxnOp::put(
                key("meta/root_squash"),
                super::embedded::squash_bytes(sq),
                None,
            )),
        }
        let mut when = vec![Compare::create_revision(
            key("leader"),
            CompareOp::Equal,
            self.leadership.revision,
        )];
        let mut c = self.etcd.client.clone();
        // Each lease granted: a fresh etcd lease, and the role's key put on it only if
        // the key is as this leader last saw it (create revision 0: nobody's).
        let ttl = role_ttl(self.lease).as_secs() as i64;
        let mut fresh = Vec::new();
        for &role in &changes.granted {
            // The key's create revision as this leader last saw it (0: none).
            let seen = self.held.get(&role).map_or(0, |h| h.created);
            match self.etcd.rt.block_on(c.lease_grant(ttl, None)) {
                Ok(g) => fresh.push((role, g.id(), seen)),
                Err(e) => {
                    self.revoke_ids(fresh.iter().map(|f| f.1));
                    return Err(backend(e));
                }
            }
        }
        for &(role, id, seen) in &fresh {
            when.push(Compare::create_revision(
                lease_key(role),
                CompareOp::Equal,
                seen,
            ));
            let owner = changes.roles.iter().find(|r| r.server.role == role);
            let value = owner.map_or(String::new(), |r| {
                format!("{} {}", r.server.epoch, r.server.node)
            });
            ops.push(TxnOp::put(
                lease_key(role),
                value,
                Some(PutOptions::new().with_lease(id)),
            ));
        }
        let ended: Vec<Role> = changes
            .ended
            .iter()
            .copied()
            .filter(|r| !changes.granted.contains(r))
            .collect();
        for &role in &ended {
            ops.push(TxnOp::delete(lease_key(role), None));
        }
        let txn = Txn::new().when(when).and_then(ops);
        let resp = match self.etcd.rt.block_on(c.txn(txn)) {
            Ok(r) if r.succeeded() => r,
            refused => {
                self.revoke_ids(fresh.iter().map(|f| f.1));
                return Err(match refused {
                    Err(e) => backend(e),
                    Ok(_) => self.why_refused(),
                });
            }
        };
        let revision = resp.header().map_or(0, |h| h.revision());
        for (role, id, seen) in fresh {
            // A put on an existing key keeps its create revision.
            self.hold(role, id, if seen == 0 { revision } else { seen });
        }
        for role in ended {
            if let Some(h) = self.held.remove(&role) {
                self.revoke(h);
            }
        }
        Ok(())
    }

    fn authoritative(&self) -> bool {
        self.leadership.valid()
    }

    fn note_renewals(&mut self, roles: &[Role]) {
        let now = self.now_ms();
        for role in roles {
            if let Some(h) = self.held.get(role) {
                h.renewed.store(now, Ordering::SeqCst);
            }
        }
    }
}
