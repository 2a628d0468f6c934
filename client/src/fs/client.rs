//! The [`Client`]: one per file system and process, with a connection per thread,
//! the cluster map, replay keys for changing requests, and recovery on a newer map.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use nacre_fabric::Selection;
use nacre_proto::bootstrap::{ClusterMap, Role, RoleKind};
use nacre_proto::layout::StripedLayout;
use nacre_proto::meta::{self, lock, LockRequest, ReplayKey, Reply, Request};

use super::errors::{errno, mgs_err, to_io};
use super::ClientConfig;
use crate::locks::HeldLocks;
use crate::namespace::NamespaceClient;
use crate::objects::{checksum_by_default, IoOptions, KeyBlock, OstRoute};
use crate::opens::HeldOpens;
use crate::rpc::{ClientEndpoint, ClientError, RpcConfig, Watchdog, WATCH_EVERY};
use nacre_mgc::{BootConfig, MgsClient};
use nacre_rpc::Capabilities;

/// What an OSS answers a request whose capability ran out (renew and resend).
const EKEYEXPIRED: i32 = 127;

/// A connection to one file system, shared by every thread of the process.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    id: u64,
    cfg: ClientConfig,
    /// The MGS address(es) the client was given: its endpoints serve from the local
    /// address that routes there.
    mgs_addr: String,
    mgs: Mutex<MgsClient>,
    pub(super) map: RwLock<Arc<ClusterMap>>,
    /// When the watchdog last fetched the map.
    map_fetched: Mutex<Instant>,
    replay: Replay,
    object_keys: Mutex<ObjectKeys>,
    locks: HeldLocks,
    opens: HeldOpens,
    /// Whether the keeper thread runs (`crate::keeper`).
    keeping: std::sync::atomic::AtomicBool,
    /// Requests whose answer did not come within the request timeout.
    unanswered: AtomicU64,
    /// The key the MGS accepted: every HELLO proves it (None: an MGS without a key).
    key: Option<nacre_auth::Key>,
    /// The capabilities the MDS granted with layouts, shared by every connection.
    caps: Arc<Capabilities>,
    /// Requests an OSS refused for an expired capability (renewed and resent).
    renewed_on_expiry: AtomicU64,
}

/// What makes changing namespace requests safe to retry: a random client id for the
/// MDS's reply cache, request ids, and tags. A tag is held by one request at a time
/// and given back only once that request is answered (or given up), so the MDS keeps
/// one saved reply per (client, tag).
struct Replay {
    client: u64,
    next_xid: AtomicU64,
    free_tags: Mutex<Vec<u32>>,
    tags: AtomicU32,
}

impl Replay {
    fn new() -> Replay {
        Replay {
            client: random_client_id(),
            next_xid: AtomicU64::new(1),
            free_tags: Mutex::new(Vec::new()),
            tags: AtomicU32::new(0),
        }
    }

    fn key(&self) -> ReplayKey {
        let reused = self
            .free_tags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        ReplayKey {
            client: self.client,
            tag: reused.unwrap_or_else(|| self.tags.fetch_add(1, Ordering::Relaxed)),
            xid: self.next_xid.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn give_back(&self, key: ReplayKey) {
        self.free_tags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(key.tag);
    }
}

/// Keys for object changes (writes, truncates) that may be sent again: blocks of xids
/// drawn in order, and the floor below which every block was answered or given up,
/// which tells the servers that a copy of an older request is from the past.
struct ObjectKeys {
    next: u64,
    /// First xid of each block in use.
    live: std::collections::BTreeSet<u64>,
}

impl ObjectKeys {
    fn draw(keys: &Mutex<ObjectKeys>, client: u64, count: u64) -> KeyBlock {
        let mut k = keys.lock().unwrap_or_else(|p| p.into_inner());
        let first = k.next;
        k.next += count.max(1);
        k.live.insert(first);
        let floor = *k.live.first().expect("just inserted");
        KeyBlock {
            client,
            first,
            count,
            floor,
        }
    }

    fn give_back(keys: &Mutex<ObjectKeys>, block: &KeyBlock) {
        let mut k = keys.lock().unwrap_or_else(|p| p.into_inner());
        k.live.remove(&block.first);
    }
}

/// A client id that no other client of the file system draws: std's per-process
/// random hash keys, mixed with the pid and the time. Never 0 (0 means "no key").
fn random_client_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u64(NEXT_ID.load(Ordering::Relaxed));
    h.finish().max(1)
}

/// One thread's endpoint and what it knows of the servers.
pub(super) struct Conn {
    pub(super) ns: NamespaceClient,
    /// The map the sessions were made from.
    pub(super) map: Arc<ClusterMap>,
    pub(super) io: IoOptions,
}

thread_local! {
    /// This thread's connections, one per live client.
    static CONNS: RefCell<Vec<(Weak<Inner>, Conn)>> = const { RefCell::new(Vec::new()) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Client {
    /// Connects to the file system whose MGS listens at `mgs` (`host:port[,host:port]`).
    pub fn connect(mgs: &str, cfg: ClientConfig) -> io::Result<Client> {
        let keys = cfg.keys.clone();
        let mut boot =
            MgsClient::connect_with(mgs, BootConfig::default(), keys).map_err(mgs_err)?;
        let key = boot.key().cloned();
        let map = boot.fetch_map().map_err(mgs_err)?;
        let client = Client {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                cfg,
                mgs_addr: mgs.to_string(),
                mgs: Mutex::new(boot),
                map: RwLock::new(Arc::new(map)),
                map_fetched: Mutex::new(Instant::now()),
                replay: Replay::new(),
                object_keys: Mutex::new(ObjectKeys {
                    next: 1,
                    live: Default::default(),
                }),
                locks: HeldLocks::default(),
                opens: HeldOpens::default(),
                keeping: Default::default(),
                unanswered: AtomicU64::new(0),
                key,
                caps: Arc::default(),
                renewed_on_expiry: AtomicU64::new(0),
            }),
        };
        // Reach the MDS once now, so a bad address fails here and not at first use.
        client.with_conn(false, |_| Ok(()))?;
        Ok(client)
    }

    /// The cluster map this client works from.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.inner.map.read().expect("map lock").clone()
    }

    /// Fetches the cluster map again.
    pub fn refresh_map(&self) -> io::Result<Arc<ClusterMap>> {
        let map = self.inner.mgs.lock().expect("mgs lock").fetch_map();
        let map = Arc::new(map.map_err(mgs_err)?);
        *self.inner.map.write().expect("map lock") = map.clone();
        Ok(map)
    }

    /// Waits (up to `wait`) for a map newer than `version`; the current one otherwise.
    fn newer_map(&self, version: u64, wait: Duration) -> Arc<ClusterMap> {
        let got = self
            .inner
            .mgs
            .lock()
            .expect("mgs lock")
            .wait_map(version, wait);
        if let Ok(map) = got {
            self.adopt(map);
        }
        self.map()
    }

    /// Takes `map` as the client's map if it is newer than the one it has.
    fn adopt(&self, map: ClusterMap) {
        let mut cur = self.inner.map.write().expect("map lock");
        if map.version > cur.version {
            *cur = Arc::new(map);
        }
    }

    /// Runs `f` on this thread's connection, recovering as [the module](super) says: a
    /// stale epoch is always retried on a newer map, a lost answer only if `idempotent`.
    pub(super) fn with_conn<R>(
        &self,
        idempotent: bool,
        mut f: impl FnMut(&mut Conn) -> Result<R, ClientError>,
    ) -> io::Result<R> {
        let start = Instant::now();
        let deadline = start + self.inner.cfg.recovery;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let out = self.on_conn(|conn| f(conn));
            let err = match out {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if matches!(err, ClientError::Expired { .. } | ClientError::Timeout(_)) {
                self.inner.unanswered.fetch_add(1, Ordering::Relaxed);
            }
            if matches!(err, ClientError::Status(EKEYEXPIRED)) && attempt < 3 {
                self.inner.renewed_on_expiry.fetch_add(1, Ordering::Relaxed);
                // A capability ran out (the process held a file longer than it holds):
                // renewed, and the request sent again; the server applied nothing.
                self.renew_capabilities()?;
                continue;
            }
            if matches!(err, ClientError::Status(libc::EINPROGRESS)) && Instant::now() < deadline {
                // A resent change whose first copy the server is still running: ask
                // again shortly for its answer, on the same sessions.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let seen = self.on_conn(|c| Ok(c.map.version)).unwrap_or(0);
            let retry = match &err {
                ClientError::Status(e) => *e == libc::ESTALE,
                ClientError::Expired { .. }
                | ClientError::Timeout(_)
                | ClientError::Fabric(_)
                | ClientError::ServerGone => idempotent,
                // Scratch: a down OST fails its I/O at once, unless the connection's map
                // is older than the client's, fetched again if it is half a second old
                // (the OST may be up again).
                ClientError::TargetDown(_) => self.recent_map().version > seen,
                _ => false,
            };
            if !retry || Instant::now() >= deadline {
                return Err(to_io(err));
            }
            // Said at warn: a retry is a server gone, fenced or silent for a request
            // timeout, which whoever reads the log of a stalled job needs to see.
            tracing::warn!(
                "retrying after {err} (attempt {attempt}, {:?} into recovery) on a newer map",
                start.elapsed()
            );
            // The old sessions may be dead: drop this thread's connection (its
            // registrations close, so no server transfers into them any more) before
            // waiting for the map, then rebuild it on the map.
            self.drop_conn();
            let map = self.newer_map(seen, Duration::from_secs(2));
            if map.version == seen {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Runs `f`, whose one changing namespace request goes under a fresh replay key,
    /// with the retries of an idempotent request: the MDS answers a retry of the same
    /// key from its reply cache, so the change is applied once.
    pub(super) fn modify<R>(
        &self,
        mut f: impl FnMut(&mut Conn) -> Result<R, ClientError>,
    ) -> io::Result<R> {
        let key = self.inner.replay.key();
        let out = self.with_conn(true, |c| {
            c.ns.replay_next(Some(key));
            let r = f(c);
            c.ns.replay_next(None);
            r
        });
        self.inner.replay.give_back(key);
        out
    }

    /// Runs `f` with `count` keys for its object changes (see
    /// [`KeyBlock`]), with the retries of an idempotent request: every try sends the
    /// same keys, so a server applies each change at most once.
    pub(super) fn change_objects<R>(
        &self,
        count: u64,
        mut f: impl FnMut(&mut Conn, &KeyBlock) -> Result<R, ClientError>,
    ) -> io::Result<R> {
        let block = ObjectKeys::draw(&self.inner.object_keys, self.client_id(), count);
        let out = self.with_conn(true, |c| f(c, &block));
        ObjectKeys::give_back(&self.inner.object_keys, &block);
        out
    }

    /// Runs `f` on this thread's connection, opening it first if needed.
    pub(super) fn on_conn<R>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<R, ClientError>,
    ) -> Result<R, ClientError> {
        // A thread that is ending (its thread-locals gone: a File closed from an exit
        // handler) gets a connection for this one call.
        if CONNS.try_with(|_| ()).is_err() {
            let mut conn = self.open_conn()?;
            return f(&mut conn);
        }
        CONNS.with(|conns| {
            let mut conns = conns.borrow_mut();
            conns.retain(|(w, _)| w.strong_count() > 0);
            let at = conns
                .iter()
                .position(|(w, _)| w.upgrade().is_some_and(|i| i.id == self.inner.id));
            let at = match at {
                Some(at) => at,
                None => {
                    let conn = self.open_conn()?;
                    conns.push((Arc::downgrade(&self.inner), conn));
                    conns.len() - 1
                }
            };
            f(&mut conns[at].1)
        })
    }

    /// Who this client acts as.
    pub(super) fn creds(&self) -> &nacre_proto::meta::Creds {
        &self.inner.cfg.creds
    }

    /// In the child of a fork: forgets this thread's connections without closing
    /// them. They are the parent's endpoints, copied; closing them here would shut
    /// the parent's sockets and shared-memory regions under it.
    pub fn abandon_thread_connections() {
        let _ = CONNS.try_with(|conns| {
            if let Ok(mut c) = conns.try_borrow_mut() {
                std::mem::forget(std::mem::take(&mut *c));
            }
        });
    }

    fn drop_conn(&self) {
        CONNS.with(|conns| {
            conns
                .borrow_mut()
                .retain(|(w, _)| w.upgrade().is_some_and(|i| i.id != self.inner.id));
        });
    }

    fn open_conn(&self) -> Result<Conn, ClientError> {
        let map = self.map();
        let cfg = &self.inner.cfg;
        let mds = map
            .server(Role {
                kind: RoleKind::Mds,
                index: 0,
            })
            .ok_or_else(|| ClientError::Protocol("no MDS (mds0) in the cluster map".into()))?;
        let rpc = RpcConfig {
            depth: cfg.depth,
            msg_size: meta::MSG_SIZE,
            timeout: cfg.timeout,
            key: self.inner.key.clone(),
            caps: Some(self.inner.caps.clone()),
            ..Default::default()
        };
        let sel = Selection::toward(&mds.provider, cfg.source.clone(), &self.inner.mgs_addr);
        let mut ep = ClientEndpoint::open(&sel, rpc)?;
        ep.set_watchdog(Some(self.watchdog()));
        let checksum = cfg
            .checksum
            .unwrap_or_else(|| checksum_by_default(&mds.provider));
        let mut ns = NamespaceClient::connect(ep, &map, cfg.creds.clone())?;
        // A restarted MDS (a new epoch) forgot this client's opens: name them again.
        self.inner
            .opens
            .replay(&mut ns, mds.epoch, self.inner.replay.client)?;
        Ok(Conn {
            ns,
            io: IoOptions {
                checksum,
                ..IoOptions::default()
            },
            map,
        })
    }

    /// The watchdog of this client's slow requests (`Watchdog`): while one waits, it
    /// looks at the cluster map (fetched again at most every `WATCH_EVERY`) for the
    /// server the request went to. An OSS whose target is down ends the wait with
    /// TargetDown, a server no longer in the map with ServerGone; anything else
    /// (a slow server, the MDS in recovery) waits on.
    fn watchdog(&self) -> Watchdog {
        let inner = Arc::downgrade(&self.inner);
        Box::new(move |name: &[u8]| {
            let client = Client::from_inner(&inner)?;
            server_verdict(&client.recent_map(), name)
        })
    }

    /// The cluster map, fetched again if the last fetch is older than `WATCH_EVERY`
    /// and the MGS connection is free (whoever holds it is fetching a map already).
    fn recent_map(&self) -> Arc<ClusterMap> {
        let due = {
            let mut at = self
                .inner
                .map_fetched
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let due = at.elapsed() >= WATCH_EVERY;
            if due {
                *at = Instant::now();
            }
            due
        };
        if due {
            let fetched = self.inner.mgs.try_lock().ok().map(|mut m| m.fetch_map());
            if let Some(Ok(map)) = fetched {
                self.adopt(map);
            }
        }
        self.map()
    }

    /// Asks the layout (and so fresh capabilities) again of the open files whose
    /// capabilities are due (`nacre_rpc::caps`): the keeper's, ahead of their expiry.
    pub(crate) fn renew_open_capabilities(&self) -> io::Result<()> {
        let open = self.held_opens().inos();
        if open.is_empty() {
            return Ok(());
        }
        let now = nacre_auth::capability::now_secs();
        self.renew_layouts(self.inner.caps.due(&open, now))
    }

    /// Asks the layout (and so fresh capabilities) again of every file whose
    /// capabilities expire within a minute.
    fn renew_capabilities(&self) -> io::Result<()> {
        let before = nacre_auth::capability::now_secs() + 60;
        self.renew_layouts(self.inner.caps.expiring(before))
    }

    /// Asks the layouts of `inos` again: their new capabilities come with them.
    fn renew_layouts(&self, inos: Vec<u64>) -> io::Result<()> {
        for ino in inos {
            match self.meta(true, &Request::GetLayout { ino }) {
                // A file gone since: nothing to renew.
                Err(e) if errno(&e) == libc::ENOENT => {}
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
        Ok(())
    }

    pub(super) fn meta(&self, idempotent: bool, req: &Request) -> io::Result<Reply> {
        self.with_conn(idempotent, |c| c.ns.call(req))
    }

    /// Requests an OSS refused because their capability had expired (each renewed and
    /// sent again): the keeper renews open files' ahead of that.
    pub fn renewed_on_expiry(&self) -> u64 {
        self.inner.renewed_on_expiry.load(Ordering::Relaxed)
    }

    /// Requests so far whose answer did not come within the request timeout (each try
    /// counts, also when a retry then succeeded): with every server alive, replies lost.
    pub fn unanswered(&self) -> u64 {
        self.inner.unanswered.load(Ordering::Relaxed)
    }

    /// This client's id at the MDS (replay keys, lock owners).
    pub fn client_id(&self) -> u64 {
        self.inner.replay.client
    }

    /// A POSIX advisory lock request at the MDS (a mount's fcntl and flock). Retried
    /// like an idempotent request: setting or clearing the same lock twice leaves the
    /// same state. The lock belongs to `l.owner` of this client, whatever `l.client`
    /// says. The client keeps the locks it was granted: it renews them while it holds
    /// any, and takes them again after an MDS restart (`crate::locks`).
    pub fn lock(&self, l: LockRequest) -> io::Result<Reply> {
        let l = LockRequest {
            client: self.client_id(),
            replay: false,
            ..l
        };
        let reply = self.meta(true, &Request::Lock(l))?;
        self.inner.locks.granted(&l);
        if l.kind != lock::UNLOCK && !l.test {
            self.keep();
        }
        Ok(reply)
    }

    /// One request (idempotent: a lock renewal or replay, a getattr) whose every try
    /// waits at most `timeout` for its answer: sent to an MDS that died, it is retried
    /// on a newer map within the restarted MDS's recovery window, not after a whole
    /// request timeout.
    pub(crate) fn call_within(&self, req: &Request, timeout: Duration) -> io::Result<Reply> {
        self.with_conn(true, |c| {
            let before = c.ns.ep.set_timeout(timeout);
            let r = c.ns.call(req);
            c.ns.ep.set_timeout(before);
            r
        })
    }

    /// As [`Client::call_within`], for an answer known to be slow (a load or an
    /// export of a data repository): the wait naps between polls once it has lasted,
    /// leaving the CPU to the servers that prepare the answer.
    pub(crate) fn call_patiently(&self, req: &Request, timeout: Duration) -> io::Result<Reply> {
        self.with_conn(true, |c| {
            let before = c.ns.ep.set_timeout(timeout);
            let was = c.ns.ep.set_patient(true);
            let r = c.ns.call(req);
            c.ns.ep.set_patient(was);
            c.ns.ep.set_timeout(before);
            r
        })
    }

    pub(crate) fn held_locks(&self) -> &HeldLocks {
        &self.inner.locks
    }

    pub(crate) fn held_opens(&self) -> &HeldOpens {
        &self.inner.opens
    }

    /// Starts the keeper (`crate::keeper`) unless it runs.
    pub(super) fn keep(&self) {
        if !self.inner.keeping.swap(true, Ordering::AcqRel) {
            crate::keeper::start(Arc::downgrade(&self.inner));
        }
    }

    /// The client of `inner`, while it lives.
    pub(crate) fn from_inner(inner: &Weak<Inner>) -> Option<Client> {
        inner.upgrade().map(|inner| Client { inner })
    }
}

/// What the map says of the server that serves from fabric name `name`: an OSS whose
/// target is down, a name no server has any more, or (None) nothing to stop for.
fn server_verdict(map: &ClusterMap, name: &[u8]) -> Option<ClientError> {
    let Some(s) = map
        .servers
        .iter()
        .find(|s| s.cores.iter().any(|c| c.as_slice() == name))
    else {
        return Some(ClientError::ServerGone);
    };
    match s.role.kind == RoleKind::Oss && map.target_down(s.role) {
        true => Some(ClientError::TargetDown(s.role.index)),
        false => None,
    }
}

impl Conn {
    /// The route to OST `ost` in this connection's map; TargetDown when the map says
    /// the target is down.
    pub(super) fn route(&self, ost: u32) -> Result<OstRoute, ClientError> {
        let role = Role {
            kind: RoleKind::Oss,
            index: ost,
        };
        if self.map.target_down(role) {
            return Err(ClientError::TargetDown(ost));
        }
        OstRoute::in_map(&self.map, ost)
    }

    pub(super) fn routes(&self, layout: &StripedLayout) -> Result<Vec<OstRoute>, ClientError> {
        layout.objects.iter().map(|o| self.route(o.ost)).collect()
    }

    /// Sets each object of one copy to its size for a file of `size` bytes, object `k`
    /// under key `key + k` of `keys`.
    pub(super) fn truncate_stripes(
        &mut self,
        layout: &StripedLayout,
        size: u64,
        keys: &KeyBlock,
        key: usize,
    ) -> Result<(), ClientError> {
        for (stripe, obj) in layout.objects.iter().enumerate() {
            let route = self.route(obj.ost)?;
            let osize = layout.object_size_for_file(stripe as u32, size);
            let key = Some(keys.key(key + stripe));
            match self.ns.ep.obj_truncate(&route, obj.oid, osize, key) {
                // Never written: an absent object reads as empty, which is what a
                // truncate to 0 asks; a longer size is the MDS's to record.
                Err(ClientError::Status(libc::ENOENT)) => {}
                other => other?,
            }
        }
        Ok(())
    }
}
