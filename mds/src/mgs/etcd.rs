//! The etcd store, for deployments that run several MGS processes on one etcd.
//!
//! Keys, under `/nacre/mgs/`: `meta/<name>` (fsname, fsid, layout defaults, format
//! version), `version` (the map version), `role/<kind>/<index>` (a role record, as the
//! embedded store keeps it), and `leader` (the address of the MGS that decides, attached to
//! that MGS's etcd lease).
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
use nacre_proto::bootstrap::{LayoutDefaults, Role, MAX_FSNAME_LEN};

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
            clock,
            lost,
        }))
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
}

impl EtcdStore {
    pub fn new(etcd: Etcd, leadership: Leadership) -> EtcdStore {
        EtcdStore { etcd, leadership }
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
        for kv in resp.kvs() {
            let k = String::from_utf8_lossy(kv.key()).into_owned();
            let name = &k[PREFIX.len().min(k.len())..];
            if name.starts_with("role/") {
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
            },
        };
        let version = u64::from_le_bytes(fixed("version", meta.remove("version"))?);
        roles.sort_by_key(|r| r.server.role);
        Ok(Persisted { fs, version, roles })
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
        let txn = Txn::new()
            .when([Compare::create_revision(
                key("leader"),
                CompareOp::Equal,
                self.leadership.revision,
            )])
            .and_then(ops);
        let mut c = self.etcd.client.clone();
        let resp = self.etcd.rt.block_on(c.txn(txn)).map_err(backend)?;
        if !resp.succeeded() {
            self.leadership.lost.store(true, Ordering::SeqCst);
            return Err(StoreError::Backend(
                "this MGS is no longer the leader in etcd".into(),
            ));
        }
        Ok(())
    }

    fn authoritative(&self) -> bool {
        self.leadership.valid()
    }
}
