//! The file system as an application sees it: a [`Client`] connected through the MGS,
//! paths and open files, and striped parallel I/O straight from and into the caller's
//! buffers. Errors are `io::Error`s carrying the errno.
//!
//! Threads: a `Client` is `Send + Sync` and cheap to clone; every thread that uses it
//! gets its own fabric endpoint (libfabric endpoints here are single-threaded by
//! design, as the engine's cores are), opened on first use and closed when the thread
//! exits or the client is dropped. Threads therefore never wait for one another on the
//! data path; what they share is the cluster map.
//!
//! Recovery: a request the server refuses as stale (ESTALE: the role changed owner), or
//! that gets no answer, makes the client refetch the cluster map, waiting for a newer
//! version for up to [`ClientConfig::recovery`], and retry on the server the map names
//! now. Only idempotent requests are retried after a lost answer (object reads and
//! writes, lookups, getattr, setattr, open, size reports, layouts); a namespace change
//! whose answer was lost (an exclusive create, mkdir, unlink, rename...) is reported as
//! ETIMEDOUT instead of being sent twice.

use std::cell::RefCell;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use nacre_fabric::Selection;
use nacre_proto::bootstrap::{ClusterMap, Role, RoleKind, TargetKind, TargetState};
use nacre_proto::layout::{StripeSpec, StripedLayout};
use nacre_proto::meta::{
    self, Attr, Creds, DirEntry, LockRequest, ReplayKey, Reply, Request, SetAttr,
};

use crate::cache::{Backing, Cache};
use crate::locks::HeldLocks;
use crate::namespace::Namespace;
use crate::objects::{checksum_by_default, Extent, IoOptions, OstRoute, OstStatfs};
use crate::rpc::{ClientEndpoint, ClientError, RpcConfig};
use nacre_mgc::{BootConfig, MgsClient, MgsError};

/// How a client talks to the file system.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Who the client acts as (checked by the MDS).
    pub creds: Creds,
    /// Deadline of each request.
    pub timeout: Duration,
    /// How long a failed request keeps being retried on a newer cluster map.
    pub recovery: Duration,
    /// Requests each thread keeps in flight at most.
    pub depth: usize,
    /// crc32c of bulk data: `None` is the provider's default (on everywhere but shm).
    pub checksum: Option<bool>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            creds: process_creds(),
            timeout: Duration::from_secs(10),
            recovery: Duration::from_secs(60),
            depth: 64,
            checksum: None,
        }
    }
}

/// The calling process's effective uid, gid and supplementary groups (from
/// /proc/self/status; root if it cannot be read).
pub fn process_creds() -> Creds {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    // Uid: and Gid: list real, effective, saved and file-system ids.
    let uid = field("Uid:").get(1).copied().unwrap_or(0);
    let gid = field("Gid:").get(1).copied().unwrap_or(0);
    let mut groups = field("Groups:");
    groups.truncate(meta::MAX_GROUPS);
    Creds { uid, gid, groups }
}

/// A connection to one file system, shared by every thread of the process.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    id: u64,
    cfg: ClientConfig,
    mgs: Mutex<MgsClient>,
    map: RwLock<Arc<ClusterMap>>,
    replay: Replay,
    locks: HeldLocks,
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
struct Conn {
    ns: Namespace,
    /// The map the sessions were made from.
    map: Arc<ClusterMap>,
    io: IoOptions,
}

thread_local! {
    /// This thread's connections, one per live client.
    static CONNS: RefCell<Vec<(Weak<Inner>, Conn)>> = const { RefCell::new(Vec::new()) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What a path's layout is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// A file's objects.
    File(StripedLayout),
    /// A directory's default striping for new files.
    Dir(StripeSpec),
}

/// One target's usage, as `nacre df` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUsage {
    pub name: String,
    pub kind: TargetKind,
    pub index: u32,
    pub state: TargetState,
    /// Bytes (OST) or inodes (MDT).
    pub total: u64,
    pub free: u64,
}

/// The file system's totals (`statfs`): inodes at the MDT, and bytes over the OSTs that
/// serve, as the MDS last saw them in the cluster map (a second or two old).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsStat {
    pub bytes_total: u64,
    pub bytes_free: u64,
    pub files_total: u64,
    pub files_free: u64,
    pub name_max: u32,
}

/// An open flag of nacre's own, beside Linux's: the handle gathers small writes in
/// order and reads ahead, a window of 1 MiB at a time. Not a bit Linux
/// gives to open(2). What it trades: writes reach other clients when the handle
/// reads, syncs or closes, or a window of gathered writes fills; a buffered handle
/// sees other clients' writes that were synced before its open or its last fsync.
pub const O_BUFFERED: i32 = 0x4000_0000;

/// Flags and mode of an open, with the layout of a file it creates.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Linux open flags (O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_TRUNC, O_APPEND),
    /// and [`O_BUFFERED`].
    pub flags: i32,
    pub mode: u32,
    pub layout: Option<StripeSpec>,
}

impl OpenOptions {
    pub fn read() -> OpenOptions {
        OpenOptions {
            flags: libc::O_RDONLY,
            mode: 0o644,
            layout: None,
        }
    }

    /// Create or truncate for writing (`fopen(path, "w")`).
    pub fn create() -> OpenOptions {
        OpenOptions {
            flags: libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC,
            mode: 0o644,
            layout: None,
        }
    }

    pub fn flags(mut self, flags: i32) -> OpenOptions {
        self.flags = flags;
        self
    }

    pub fn mode(mut self, mode: u32) -> OpenOptions {
        self.mode = mode;
        self
    }

    pub fn layout(mut self, spec: StripeSpec) -> OpenOptions {
        self.layout = Some(spec);
        self
    }
}

/// An open file. Reads and writes take `&self`: many threads may use one `File`.
pub struct File {
    client: Client,
    ino: u64,
    handle: u64,
    layout: Option<StripedLayout>,
    flags: i32,
    /// The attributes the MDS gave at open.
    opened: Attr,
    /// Whether the open made the file (its objects are new and empty).
    created: bool,
    /// The largest size this handle knows of (from the MDS, or its own writes).
    size: AtomicU64,
    /// The end of this handle's writes, and what of it the MDS was told.
    written_end: AtomicU64,
    reported: AtomicU64,
    closed: AtomicBool,
    /// Write-behind and read-ahead, on a handle opened with [`O_BUFFERED`].
    cache: Option<Box<Mutex<Cache>>>,
}

impl Client {
    /// Connects to the file system whose MGS listens at `mgs` (`host:port[,host:port]`).
    pub fn connect(mgs: &str, cfg: ClientConfig) -> io::Result<Client> {
        let mut boot = MgsClient::connect(mgs, BootConfig::default()).map_err(mgs_err)?;
        let map = boot.fetch_map().map_err(mgs_err)?;
        let client = Client {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                cfg,
                mgs: Mutex::new(boot),
                map: RwLock::new(Arc::new(map)),
                replay: Replay::new(),
                locks: HeldLocks::default(),
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
            let mut cur = self.inner.map.write().expect("map lock");
            if map.version > cur.version {
                *cur = Arc::new(map);
            }
        }
        self.map()
    }

    /// Runs `f` on this thread's connection, recovering as the module says: a stale
    /// epoch is always retried on a newer map, a lost answer only if `idempotent`.
    fn with_conn<R>(
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
            let retry = match &err {
                ClientError::Status(e) => *e == libc::ESTALE,
                ClientError::Expired { .. } | ClientError::Timeout(_) | ClientError::Fabric(_) => {
                    idempotent
                }
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
            let seen = self.on_conn(|c| Ok(c.map.version)).unwrap_or(0);
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
    fn modify<R>(&self, mut f: impl FnMut(&mut Conn) -> Result<R, ClientError>) -> io::Result<R> {
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

    /// Runs `f` on this thread's connection, opening it first if needed.
    fn on_conn<R>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<R, ClientError>,
    ) -> Result<R, ClientError> {
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
            ..Default::default()
        };
        let ep = ClientEndpoint::open(&Selection::provider(&mds.provider), rpc)?;
        let checksum = cfg
            .checksum
            .unwrap_or_else(|| checksum_by_default(&mds.provider));
        let ns = Namespace::connect(ep, &map, cfg.creds.clone())?;
        Ok(Conn {
            ns,
            io: IoOptions {
                checksum,
                sync: false,
            },
            map,
        })
    }

    fn meta(&self, idempotent: bool, req: &Request) -> io::Result<Reply> {
        self.with_conn(idempotent, |c| c.ns.call(req))
    }

    pub fn stat(&self, path: &str) -> io::Result<Attr> {
        self.with_conn(true, |c| c.ns.stat(path))
    }

    pub fn mkdir(&self, path: &str, mode: u32) -> io::Result<Attr> {
        self.modify(|c| c.ns.mkdir(path, mode))
    }

    pub fn rmdir(&self, path: &str) -> io::Result<()> {
        self.modify(|c| c.ns.rmdir(path))
    }

    pub fn unlink(&self, path: &str) -> io::Result<()> {
        self.modify(|c| c.ns.unlink(path))
    }

    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.modify(|c| c.ns.rename(from, to, 0))
    }

    /// Renames `from` to `to` unless `to` exists (EEXIST).
    pub fn rename_noreplace(&self, from: &str, to: &str) -> io::Result<()> {
        self.modify(|c| c.ns.rename(from, to, meta::RENAME_NOREPLACE))
    }

    pub fn readdir(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        self.with_conn(true, |c| c.ns.readdir(path))
    }

    /// Creates a symbolic link at `link` pointing to `target`.
    pub fn symlink(&self, target: &str, link: &str) -> io::Result<Attr> {
        self.modify(|c| c.ns.symlink(target.as_bytes(), link))
    }

    pub fn readlink(&self, path: &str) -> io::Result<Vec<u8>> {
        self.with_conn(true, |c| c.ns.readlink(path))
    }

    /// A hard link `new` to the file at `existing`.
    pub fn link(&self, existing: &str, new: &str) -> io::Result<Attr> {
        self.modify(|c| c.ns.link(existing, new))
    }

    /// Changes the attributes `attr.mask` names; a size change truncates the objects.
    pub fn setattr(&self, path: &str, attr: SetAttr) -> io::Result<Attr> {
        let ino = self.with_conn(true, |c| c.ns.resolve(path))?;
        self.setattr_ino(ino, attr)
    }

    /// The MDS first (it checks permissions and records the size), then the objects:
    /// a refused truncate must not have trimmed data. A crash in between leaves the
    /// objects longer than the size, which reads never pass.
    fn setattr_ino(&self, ino: u64, attr: SetAttr) -> io::Result<Attr> {
        let out = attr_of(self.meta(true, &Request::Setattr { ino, attr })?)?;
        self.trim_to(ino, &attr)?;
        Ok(out)
    }

    /// Sets the objects' lengths for a setattr that changed the size.
    fn trim_to(&self, ino: u64, attr: &SetAttr) -> io::Result<()> {
        if attr.mask & meta::set::SIZE != 0 {
            if let Some(layout) = self.file_layout(ino)? {
                self.truncate_objects(&layout, attr.size)?;
            }
        }
        Ok(())
    }

    pub fn truncate(&self, path: &str, size: u64) -> io::Result<()> {
        let attr = SetAttr {
            mask: meta::set::SIZE,
            size,
            ..Default::default()
        };
        self.setattr(path, attr).map(|_| ())
    }

    /// Sets each object's size so the file is `size` bytes long.
    fn truncate_objects(&self, layout: &StripedLayout, size: u64) -> io::Result<()> {
        self.with_conn(true, |c| {
            for (stripe, obj) in layout.objects.iter().enumerate() {
                let route = c.route(obj.ost)?;
                let osize = layout.object_size_for_file(stripe as u32, size);
                match c.ns.ep.obj_truncate(&route, obj.oid, osize) {
                    // Never written: an absent object reads as empty, which is what a
                    // truncate to 0 asks; a longer size is the MDS's to record.
                    Err(ClientError::Status(libc::ENOENT)) => {}
                    other => other?,
                }
            }
            Ok(())
        })
    }

    fn file_layout(&self, ino: u64) -> io::Result<Option<StripedLayout>> {
        match self.meta(true, &Request::GetLayout { ino })? {
            Reply::Layout(l) => Ok(Some(l)),
            _ => Ok(None),
        }
    }

    /// Sets the striping of a file (before its first write) or a directory's default.
    pub fn set_layout(&self, path: &str, spec: StripeSpec) -> io::Result<()> {
        let ino = self.with_conn(true, |c| c.ns.resolve(path))?;
        // Under a replay key: on a file, a second application would allocate new objects.
        self.modify(|c| c.ns.call(&Request::SetLayout { ino, spec }))
            .map(|_| ())
    }

    /// A file's objects or a directory's default striping (ENODATA: none set).
    pub fn get_layout(&self, path: &str) -> io::Result<Layout> {
        let ino = self.with_conn(true, |c| c.ns.resolve(path))?;
        match self.meta(true, &Request::GetLayout { ino })? {
            Reply::Layout(l) => Ok(Layout::File(l)),
            Reply::DefaultLayout(s) => Ok(Layout::Dir(s)),
            other => Err(protocol(format!("expected a layout, got {other:?}"))),
        }
    }

    /// Usage of every target: the MDT's inodes, and each OST's bytes asked of its server
    /// (a target that does not answer shows what its last heartbeat told the MGS).
    pub fn df(&self) -> io::Result<Vec<TargetUsage>> {
        let map = self.refresh_map()?;
        let mut out = Vec::new();
        for t in &map.targets {
            let (total, free) = match t.kind {
                TargetKind::Mdt => match self.meta(true, &Request::Statfs)? {
                    Reply::Statfs(s) => (s.inodes_used + s.inodes_free, s.inodes_free),
                    other => return Err(protocol(format!("expected statfs, got {other:?}"))),
                },
                TargetKind::Ost => match self.ost_statfs(t.index) {
                    Ok(s) => (s.capacity, s.free),
                    Err(_) => (t.capacity, t.free),
                },
            };
            out.push(TargetUsage {
                name: format!("{}-{}", map.fsname, target_name(t.kind, t.index)),
                kind: t.kind,
                index: t.index,
                state: t.state,
                total,
                free,
            });
        }
        Ok(out)
    }

    fn ost_statfs(&self, ost: u32) -> Result<OstStatfs, ClientError> {
        self.on_conn(|c| {
            let route = c.route(ost)?;
            c.ns.ep.ost_statfs(&route)
        })
    }

    /// The file system's totals in one MDS round trip: the MDS adds up the OSTs' space
    /// from the cluster map, as Lustre's MDT aggregates its OSTs' statfs, so that a
    /// `df` (or any statfs on a mount) does not ask every OST. `df` asks them live.
    pub fn statfs(&self) -> io::Result<FsStat> {
        match self.meta(true, &Request::Statfs)? {
            Reply::Statfs(s) => Ok(FsStat {
                bytes_total: s.bytes_total,
                bytes_free: s.bytes_free,
                files_total: s.inodes_used + s.inodes_free,
                files_free: s.inodes_free,
                name_max: s.name_max,
            }),
            other => Err(protocol(format!("expected statfs, got {other:?}"))),
        }
    }

    /// Opens (and with O_CREAT creates) the file at `path`.
    pub fn open(&self, path: &str, opt: &OpenOptions) -> io::Result<File> {
        let flags = opt.flags;
        if flags & libc::O_CREAT == 0 {
            let ino = self.with_conn(true, |c| c.ns.resolve(path))?;
            return self.open_ino(ino, flags);
        }
        // Created and opened in one request: the creator may write a file whose new
        // mode denies it (POSIX), and nothing is left behind by a refused open.
        let opened = self.modify(|c| {
            let (parent, name) = c.ns.parent_of(path)?;
            let req = create_open_request(parent, &name, opt.mode, flags, opt.layout);
            c.ns.call(&req)
        })?;
        let ino = match &opened {
            Reply::Opened { attr, .. } => attr.ino,
            other => return Err(protocol(format!("expected an open handle, got {other:?}"))),
        };
        self.file_from(ino, flags, opened)
    }

    /// Opens inode `ino` (found by [`Client::request_as`] lookups, as a mount does)
    /// with open `flags`; O_TRUNC empties it.
    pub fn open_ino(&self, ino: u64, flags: i32) -> io::Result<File> {
        // Under a replay key: a retried open must not leave a second handle behind.
        let opened = self.modify(|c| c.ns.call(&open_request(ino, flags)))?;
        self.file_from(ino, flags, opened)
    }

    /// As [`Client::open_ino`], as `creds` (a mount's caller).
    pub fn open_ino_as(&self, creds: &Creds, ino: u64, flags: i32) -> io::Result<File> {
        let opened = self.request_as(creds, &open_request(ino, flags))?;
        self.file_from(ino, flags, opened)
    }

    /// Creates `name` in directory `parent` as `creds` and opens it with `flags` in
    /// one MDS request (a mount's create): the creator may write a file whose new
    /// mode denies it, as POSIX has it. O_EXCL fails on an existing name; without it
    /// an existing file is opened (and with O_TRUNC emptied).
    pub fn create_open(
        &self,
        creds: &Creds,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
        layout: Option<StripeSpec>,
    ) -> io::Result<File> {
        let req = create_open_request(parent, name, mode, flags, layout);
        let opened = self.request_as(creds, &req)?;
        let ino = match &opened {
            Reply::Opened { attr, .. } => attr.ino,
            other => return Err(protocol(format!("expected an open handle, got {other:?}"))),
        };
        self.file_from(ino, flags, opened)
    }

    /// The `File` of an MDS open handle (`opened`, an Opened reply); O_TRUNC empties
    /// the objects of a file that was there before.
    fn file_from(&self, ino: u64, flags: i32, opened: Reply) -> io::Result<File> {
        let (attr, layout, handle, created) = match opened {
            Reply::Opened {
                attr,
                layout,
                handle,
                created,
            } => (attr, layout, handle, created),
            other => return Err(protocol(format!("expected an open handle, got {other:?}"))),
        };
        let file = File {
            client: self.clone(),
            ino,
            handle,
            layout,
            flags,
            opened: attr,
            created,
            size: AtomicU64::new(attr.size),
            written_end: AtomicU64::new(0),
            reported: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            cache: (flags & O_BUFFERED != 0).then(Box::default),
        };
        // The MDS emptied the file for any O_TRUNC (it checked write permission); a
        // file it just made has new objects with nothing in them (no request to every
        // OST a wide stripe spans, as `open(O_CREAT|O_TRUNC)` of a new file would cost).
        if flags & libc::O_TRUNC != 0 && !created {
            if let Some(layout) = &file.layout {
                self.truncate_objects(layout, 0)?;
            }
        }
        Ok(file)
    }

    /// One MDS request by inode, as `creds` (a mount's caller): reads retried as
    /// idempotent, changes under a replay key. Setting a file's size here changes
    /// only the MDS's record: [`Client::setattr_as`] also trims the objects.
    pub fn request_as(&self, creds: &Creds, req: &Request) -> io::Result<Reply> {
        match req.is_read_only() {
            true => self.with_conn(true, |c| c.ns.call_as(creds, req)),
            false => self.modify(|c| c.ns.call_as(creds, req)),
        }
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
        self.inner.locks.granted(&l, Arc::downgrade(&self.inner));
        Ok(reply)
    }

    /// One lock request whose every try waits at most `timeout` for its answer: a
    /// renewal sent to an MDS that died is retried on a newer map within the restarted
    /// MDS's recovery window, not after a whole request timeout.
    pub(crate) fn lock_request_within(
        &self,
        l: &LockRequest,
        timeout: Duration,
    ) -> io::Result<Reply> {
        let req = Request::Lock(*l);
        self.with_conn(true, |c| {
            let before = c.ns.ep.set_timeout(timeout);
            let r = c.ns.call(&req);
            c.ns.ep.set_timeout(before);
            r
        })
    }

    pub(crate) fn held_locks(&self) -> &HeldLocks {
        &self.inner.locks
    }

    /// The client of `inner`, while it lives.
    pub(crate) fn from_inner(inner: &Weak<Inner>) -> Option<Client> {
        inner.upgrade().map(|inner| Client { inner })
    }

    /// Sets inode `ino`'s attributes as `creds` (a mount's caller); a new size then
    /// trims or extends the objects, as [`Client::setattr`] does.
    pub fn setattr_as(&self, creds: &Creds, ino: u64, attr: SetAttr) -> io::Result<Attr> {
        let out = attr_of(self.request_as(creds, &Request::Setattr { ino, attr })?)?;
        self.trim_to(ino, &attr)?;
        Ok(out)
    }

    /// Creates `path` exclusively and opens it for reading and writing.
    pub fn create(&self, path: &str, mode: u32, layout: Option<StripeSpec>) -> io::Result<File> {
        let opt = OpenOptions {
            flags: libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            mode,
            layout,
        };
        self.open(path, &opt)
    }
}

impl Conn {
    /// The route to OST `ost` in this connection's map.
    fn route(&self, ost: u32) -> Result<OstRoute, ClientError> {
        let role = Role {
            kind: RoleKind::Oss,
            index: ost,
        };
        let s = self
            .map
            .server(role)
            .ok_or_else(|| ClientError::Protocol(format!("no server for OST {ost} in the map")))?;
        Ok(OstRoute {
            ost,
            epoch: s.epoch,
            cores: s.cores.clone(),
        })
    }

    fn routes(&self, layout: &StripedLayout) -> Result<Vec<OstRoute>, ClientError> {
        layout.objects.iter().map(|o| self.route(o.ost)).collect()
    }
}

impl File {
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// The file's objects (None for a file without a layout yet).
    pub fn layout(&self) -> Option<&StripedLayout> {
        self.layout.as_ref()
    }

    fn layout_or_einval(&self) -> io::Result<&StripedLayout> {
        self.layout
            .as_ref()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
    }

    fn may(&self, write: bool) -> io::Result<()> {
        let acc = self.flags & libc::O_ACCMODE;
        let ok = match write {
            true => acc == libc::O_WRONLY || acc == libc::O_RDWR,
            false => acc == libc::O_RDONLY || acc == libc::O_RDWR,
        };
        match ok && !self.closed.load(Ordering::Acquire) {
            true => Ok(()),
            false => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    /// Writes all of `data` at `offset` (pwrite); with O_APPEND, at the end of the file
    /// as the MDS knows it plus this handle's own writes. Returns `data.len()`. On a
    /// buffered handle ([`O_BUFFERED`]) small writes in order are gathered first.
    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<usize> {
        self.may(true)?;
        let offset = match self.flags & libc::O_APPEND != 0 {
            true => self.current_size()?,
            false => offset,
        };
        if data.is_empty() {
            return Ok(0);
        }
        self.layout_or_einval()?;
        match &self.cache {
            Some(cache) => guard(cache).write(self, data, offset)?,
            None => self.write_direct(data, offset)?,
        }
        let end = offset + data.len() as u64;
        self.written_end.fetch_max(end, Ordering::AcqRel);
        self.size.fetch_max(end, Ordering::AcqRel);
        Ok(data.len())
    }

    /// Reads at `offset` into `buf` (pread): short only at the end of the file; holes
    /// read as zeros. On a buffered handle, reads in order are served from a window
    /// read ahead.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.may(false)?;
        match &self.cache {
            Some(cache) => guard(cache).read(self, buf, offset),
            None => self.read_direct(buf, offset),
        }
    }

    /// Sends what a buffered handle gathered.
    fn flush(&self) -> io::Result<()> {
        match &self.cache {
            Some(cache) => guard(cache).flush(self),
            None => Ok(()),
        }
    }

    /// Whether the open that made this handle created the file.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The attributes as of the open, with the size this handle knows now (no
    /// request: [`File::stat`] asks the MDS).
    pub fn attr(&self) -> Attr {
        Attr {
            size: self.size.load(Ordering::Acquire),
            ..self.opened
        }
    }

    /// The file's size now: the MDS's, or this handle's own writes if further.
    fn current_size(&self) -> io::Result<u64> {
        let attr = attr_of(
            self.client
                .meta(true, &Request::Getattr { ino: self.ino })?,
        )?;
        let size = self
            .size
            .fetch_max(attr.size, Ordering::AcqRel)
            .max(attr.size);
        Ok(size.max(self.written_end.load(Ordering::Acquire)))
    }

    /// The file's attributes (the size includes this handle's unreported writes).
    pub fn stat(&self) -> io::Result<Attr> {
        let mut attr = attr_of(
            self.client
                .meta(true, &Request::Getattr { ino: self.ino })?,
        )?;
        attr.size = attr.size.max(self.written_end.load(Ordering::Acquire));
        Ok(attr)
    }

    /// Makes every write of this handle durable and its size known to the MDS; a
    /// buffered handle then reads what other clients synced before it.
    pub fn fsync(&self) -> io::Result<()> {
        if let Some(cache) = &self.cache {
            let mut cache = guard(cache);
            cache.flush(self)?;
            cache.forget_reads();
        }
        if let Some(layout) = &self.layout {
            self.client.with_conn(true, |c| {
                for o in &layout.objects {
                    let route = c.route(o.ost)?;
                    match c.ns.ep.obj_sync(&route, o.oid) {
                        // Never written: nothing of it to make durable.
                        Err(ClientError::Status(libc::ENOENT)) => {}
                        other => other?,
                    }
                }
                Ok(())
            })?;
        }
        self.report_size()
    }

    /// Sets the file's size (ftruncate).
    pub fn set_len(&self, size: u64) -> io::Result<()> {
        self.may(true)?;
        let attr = SetAttr {
            mask: meta::set::SIZE,
            size,
            ..Default::default()
        };
        self.client.setattr_ino(self.ino, attr)?;
        self.resized(size);
        Ok(())
    }

    /// Another handle (or a truncate by inode) set the file's size to `size`: this
    /// handle forgets the larger size its own writes had shown it.
    pub fn resized(&self, size: u64) {
        if let Some(cache) = &self.cache {
            guard(cache).truncated(size);
        }
        self.size.store(size, Ordering::Release);
        self.written_end.store(size, Ordering::Release);
        self.reported.store(size, Ordering::Release);
    }

    /// Whether this handle wrote past the size the MDS was last told.
    pub fn unreported(&self) -> bool {
        self.written_end.load(Ordering::Acquire) > self.reported.load(Ordering::Acquire)
    }

    /// Tells the MDS where this handle's writes end (it keeps the larger size), so
    /// that other clients see it: what close and fsync do, without the sync.
    pub fn report_size(&self) -> io::Result<()> {
        self.flush()?;
        let end = self.written_end.load(Ordering::Acquire);
        if end > self.reported.load(Ordering::Acquire) {
            let req = Request::ReportSize {
                ino: self.ino,
                size: end,
            };
            self.client.meta(true, &req)?;
            self.reported.fetch_max(end, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Reports the size and closes the handle at the MDS.
    pub fn close(self) -> io::Result<()> {
        self.close_inner()
    }

    fn close_inner(&self) -> io::Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let reported = self.report_size();
        let req = Request::Close {
            ino: self.ino,
            handle: self.handle,
        };
        // A retried close whose first try was applied finds the handle gone (EBADF).
        match self.client.meta(true, &req) {
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => {}
            other => {
                other?;
            }
        }
        reported
    }
}

impl Drop for File {
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::warn!("closing inode {}: {e}", self.ino);
        }
    }
}

/// A handle's transfers at the servers, under its cache.
impl Backing for File {
    fn write_ranges(&self, window: &[u8], base: u64, ranges: &[Range<usize>]) -> io::Result<()> {
        let layout = self.layout_or_einval()?;
        let mut pieces = Vec::new();
        for r in ranges {
            let at = base + r.start as u64;
            pieces.extend(
                layout
                    .pieces(at, r.len() as u64)
                    .map_err(|e| failure(libc::EINVAL, e.to_string()))?,
            );
        }
        self.client.with_conn(true, |c| {
            let routes = c.routes(layout)?;
            let extents = extents(layout, &routes, &pieces, base);
            let io = c.io;
            c.ns.ep.write_extents(&extents, window, io)
        })
    }

    fn read_direct(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let want = offset.saturating_add(buf.len() as u64);
        let mut size = self.size.load(Ordering::Acquire);
        if want > size {
            // Past what this handle knows: another client may have written since.
            size = self.current_size()?;
        }
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let n = (size - offset).min(buf.len() as u64) as usize;
        let Some(layout) = self.layout.as_ref() else {
            buf[..n].fill(0);
            return Ok(n);
        };
        let pieces = layout
            .pieces(offset, n as u64)
            .map_err(|e| failure(libc::EINVAL, e.to_string()))?;
        let buf = &mut buf[..n];
        let got = self.client.with_conn(true, |c| {
            let routes = c.routes(layout)?;
            let extents = extents(layout, &routes, &pieces, offset);
            let io = c.io;
            c.ns.ep.read_extents(&extents, buf, io)
        })?;
        // Below the file's size, what an object does not hold is a hole: zeros.
        for (p, got) in pieces.iter().zip(got) {
            let at = (p.file_offset - offset) as usize;
            buf[at + got..at + p.len as usize].fill(0);
        }
        Ok(n)
    }
}

/// A handle's cache, taken even after a thread panicked holding it: its state is
/// valid between any two of its statements (at worst a gathered write is lost, and
/// the panic was reported).
fn guard(cache: &Mutex<Cache>) -> std::sync::MutexGuard<'_, Cache> {
    cache.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_request(ino: u64, flags: i32) -> Request {
    Request::Open {
        ino,
        flags: (flags as u32) & (meta::O_ACCMODE | meta::O_TRUNC),
    }
}

/// The create-and-open request of `name` in `parent` for open `flags`.
fn create_open_request(
    parent: u64,
    name: &[u8],
    mode: u32,
    flags: i32,
    layout: Option<StripeSpec>,
) -> Request {
    let open_flags = (flags as u32) & (meta::O_ACCMODE | meta::O_TRUNC);
    let mut create = meta::CREATE_OPEN | (open_flags << meta::CREATE_OPEN_SHIFT);
    if flags & libc::O_EXCL != 0 {
        create |= meta::CREATE_EXCL;
    }
    Request::Create {
        parent,
        name: name.to_vec(),
        mode,
        flags: create,
        layout,
    }
}

/// The object extents of file `pieces` of a transfer starting at `offset`.
fn extents<'r>(
    layout: &StripedLayout,
    routes: &'r [OstRoute],
    pieces: &[nacre_proto::layout::Piece],
    offset: u64,
) -> Vec<Extent<'r>> {
    pieces
        .iter()
        .map(|p| Extent {
            route: &routes[p.stripe as usize],
            object: layout.objects[p.stripe as usize].oid,
            offset: p.object_offset,
            at: (p.file_offset - offset) as usize,
            len: p.len as usize,
        })
        .collect()
}

/// The name `lfs df` gives a target: MDT0000, OST0003.
pub fn target_name(kind: TargetKind, index: u32) -> String {
    match kind {
        TargetKind::Mdt => format!("MDT{index:04x}"),
        TargetKind::Ost => format!("OST{index:04x}"),
    }
}

fn attr_of(reply: Reply) -> io::Result<Attr> {
    match reply {
        Reply::Attr(a) | Reply::Opened { attr: a, .. } => Ok(a),
        other => Err(protocol(format!("expected attributes, got {other:?}"))),
    }
}

fn protocol(msg: String) -> io::Error {
    failure(libc::EPROTO, msg)
}

/// The errno a client error stands for.
pub fn errno_of(e: &ClientError) -> i32 {
    match e {
        ClientError::Status(e) => *e,
        ClientError::Expired { .. } | ClientError::Timeout(_) => libc::ETIMEDOUT,
        ClientError::Decode(_) | ClientError::Protocol(_) => libc::EPROTO,
        ClientError::UnknownSession(_) => libc::EBADF,
        ClientError::Fabric(_) => libc::EIO,
    }
}

/// An error with its errno and what happened, for errors that are more than an errno.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub errno: i32,
    pub message: String,
}

fn failure(errno: i32, message: String) -> io::Error {
    let kind = io::Error::from_raw_os_error(errno).kind();
    io::Error::new(kind, Failure { errno, message })
}

/// The errno an `io::Error` of this library stands for (EIO if it has none).
pub fn errno(e: &io::Error) -> i32 {
    e.raw_os_error()
        .or_else(|| e.get_ref()?.downcast_ref::<Failure>().map(|f| f.errno))
        .unwrap_or(libc::EIO)
}

fn to_io(e: ClientError) -> io::Error {
    match e {
        ClientError::Status(errno) => io::Error::from_raw_os_error(errno),
        other => failure(errno_of(&other), other.to_string()),
    }
}

fn mgs_err(e: MgsError) -> io::Error {
    failure(e.errno().unwrap_or(libc::EHOSTUNREACH), e.to_string())
}
