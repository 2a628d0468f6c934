//! The TCP driver around [`MgsState`]: one event-loop thread for every connection
//! (bounded in number, see `event_loop`), one lock around the state and its store, a
//! ticker thread that lapses leases, and a cached map frame so that fetches need not take
//! the lock. A change that must persist is committed (redb fsync, or an etcd transaction)
//! before its reply leaves, on the loop: claims and lapses are rare, renewals that change
//! nothing durable never touch the store.
//!
//! Every connection has deadlines: a request must arrive whole within
//! `request_deadline_ms` of its first byte, and an idle connection is closed after
//! `idle_timeout_ms`, so a client that sends nothing or one byte a second holds a
//! connection slot for a bounded time and never the state.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};

mod auth;
mod event_loop;
pub mod tls;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nacre_proto::bootstrap::{errno, BootOp, BootReply, BootRequest};

use super::config::MgsConfig;
use super::state::{MgsState, Refusal};
use super::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot set up the event loop: {0}")]
    Poll(#[from] io::Error),
}

struct Inner {
    state: MgsState,
    store: Box<dyn Store>,
}

/// The last map frame encoded, so that fetches do not take the state lock.
struct MapCache {
    version: u64,
    built: Instant,
    frame: Arc<Vec<u8>>,
}

/// How stale the space figures (capacity, free) of a cached map may get; every other
/// change bumps the version, which invalidates the cache at once.
const MAP_CACHE_AGE: Duration = Duration::from_millis(100);

struct Shared {
    inner: Mutex<Inner>,
    map_cache: Mutex<Option<MapCache>>,
    /// The state's map version, readable without its lock.
    version: AtomicU64,
    /// Wakes the event loop when the version grows on another thread, or to stop.
    waker: Arc<mio::Waker>,
    stop: AtomicBool,
    cfg: MgsConfig,
    gate: auth::Gate,
    /// TLS on the bootstrap (docs/security.md), when this MGS runs it.
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `f` at the current time, makes its changes durable, wakes long polls.
    fn mutate<T>(
        &self,
        f: impl FnOnce(&mut MgsState, Instant) -> Result<T, Refusal>,
    ) -> Result<T, Refusal> {
        let mut g = self.lock();
        if !g.store.authoritative() {
            return Err(Refusal {
                errno: errno::EAGAIN,
                message: "this MGS is no longer the leader; retry".into(),
            });
        }
        let out = f(&mut g.state, Instant::now());
        let changes = g.state.take_changes();
        if !changes.renewed.is_empty() {
            g.store.note_renewals(&changes.renewed);
        }
        if changes.is_empty() {
            return out;
        }
        if let Err(e) = g.store.commit(&changes) {
            // What was not stored must not be answered nor kept: back to the store.
            tracing::error!("mgs: store commit failed: {e}; reloading the state from it");
            let cfg = g.state.config();
            match g.store.load() {
                Ok(p) => g.state = MgsState::new(p, cfg, Instant::now()),
                Err(e) => tracing::error!("mgs: reload failed too: {e}"),
            }
            return Err(Refusal {
                errno: errno::EIO,
                message: format!("the MGS could not store the change: {e}"),
            });
        }
        self.version.store(g.state.version(), Ordering::SeqCst);
        event_loop::wake(&self.waker);
        out
    }

    /// The current map as a fetch reply frame, from the cache when it is fresh.
    fn map_frame(&self) -> Arc<Vec<u8>> {
        let version = self.version.load(Ordering::SeqCst);
        {
            let cache = self.map_cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.as_ref() {
                if c.version == version && c.built.elapsed() < MAP_CACHE_AGE {
                    return c.frame.clone();
                }
            }
        }
        let map = self.lock().state.map();
        let version = map.version;
        let frame = Arc::new(BootReply::Map(map).encode(BootOp::FetchMap));
        *self.map_cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(MapCache {
            version,
            built: Instant::now(),
            frame: frame.clone(),
        });
        frame
    }
}

pub struct MgsServer {
    listener: TcpListener,
    poll: mio::Poll,
    shared: Arc<Shared>,
}

/// A running server (threads); `stop` ends the accept loop and the ticker.
pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl MgsServer {
    /// Loads the state from `store` and binds `cfg.listen` (port 0 picks one).
    pub fn bind(cfg: &MgsConfig, store: Box<dyn Store>) -> Result<MgsServer, ServerError> {
        let listener = TcpListener::bind(&cfg.listen).map_err(|source| ServerError::Listen {
            addr: cfg.listen.clone(),
            source,
        })?;
        MgsServer::from_listener(listener, cfg, store)
    }

    /// Loads the state from `store` and serves on `listener`.
    pub fn from_listener(
        listener: TcpListener,
        cfg: &MgsConfig,
        mut store: Box<dyn Store>,
    ) -> Result<MgsServer, ServerError> {
        let persisted = store.load()?;
        let mut state = MgsState::new(persisted, cfg.lease(), Instant::now());
        // Roles whose lease the store saw end go down before anyone is answered.
        store.commit(&state.take_changes())?;
        let version = AtomicU64::new(state.version());
        let poll = mio::Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), event_loop::WAKER)?);
        // TLS only with a key: its exporter is bound by the key's proofs.
        let tls = match cfg.key.is_some() && cfg.tls.applies(listener.local_addr()?) {
            true => Some(tls::server_config()?),
            false => None,
        };
        Ok(MgsServer {
            listener,
            poll,
            shared: Arc::new(Shared {
                waker,
                map_cache: Mutex::new(None),
                version,
                inner: Mutex::new(Inner { state, store }),
                stop: AtomicBool::new(false),
                cfg: cfg.clone(),
                gate: auth::Gate::new(cfg.key.clone(), tls.is_some()),
                tls,
            }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }

    /// A summary for the start-up line: fsname, fsid, roles, version.
    pub fn describe(&self) -> String {
        let g = self.shared.lock();
        let m = g.state.map();
        format!(
            "{} (fsid {:#018x}), {} role(s), map version {}{}",
            m.fsname,
            m.fsid,
            m.servers.len(),
            m.version,
            if self.shared.tls.is_some() {
                ", bootstrap over TLS"
            } else {
                ""
            }
        )
    }

    /// Serves on background threads.
    pub fn spawn(self) -> ServerHandle {
        let addr = self.local_addr();
        let ticker = {
            let shared = self.shared.clone();
            std::thread::spawn(move || tick_loop(&shared))
        };
        let shared = self.shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("mgs-io".into())
            .spawn(move || {
                if let Err(e) = event_loop::run(self.listener, self.shared, self.poll) {
                    tracing::error!("mgs: event loop: {e}");
                }
            })
            .expect("a thread for the event loop");
        ServerHandle {
            addr,
            shared,
            threads: vec![ticker, acceptor],
        }
    }
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the server to stop (it does only when asked).
    pub fn join(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        event_loop::wake(&self.shared.waker);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn tick_loop(shared: &Shared) {
    let period = (shared.cfg.lease().heartbeat / 4)
        .clamp(Duration::from_millis(5), Duration::from_millis(250));
    while !shared.stop.load(Ordering::SeqCst) {
        std::thread::sleep(period);
        let _ = shared.mutate(|s, now| {
            for role in s.tick(now) {
                tracing::warn!("mgs: {role}'s lease lapsed; its target is down");
            }
            Ok(())
        });
    }
}

fn answer(shared: &Shared, req: BootRequest) -> BootReply {
    let done = match req {
        // (The event loop answers these itself: from the cache, or parked.)
        BootRequest::FetchMap | BootRequest::WaitMap { .. } => {
            return BootReply::Map(shared.lock().state.map())
        }
        BootRequest::Claim(c) => shared
            .mutate(|s, now| s.claim(now, &c))
            .inspect(|g| {
                tracing::info!(
                    "mgs: {} granted to {} at epoch {}{}",
                    g.role,
                    c.node,
                    g.epoch,
                    if g.fresh { " (new)" } else { "" }
                )
            })
            .map(BootReply::Granted),
        BootRequest::Renew(r) => shared
            .mutate(|s, now| s.renew(now, &r))
            .map(BootReply::Renewed),
        BootRequest::Release { role, epoch } => shared
            .mutate(|s, _| s.release(role, epoch))
            .map(|()| BootReply::Released),
        BootRequest::SetRootSquash(squash) => shared
            .mutate(|s, _| {
                s.set_root_squash(squash);
                Ok(())
            })
            .inspect(|()| match squash {
                Some((uid, gid)) => tracing::info!("mgs: root squashed to {uid}:{gid}"),
                None => tracing::info!("mgs: root squash off"),
            })
            .map(|()| BootReply::Set),
        // (The event loop answers these itself, through the gate.)
        BootRequest::AuthBegin { .. } | BootRequest::AuthProve { .. } => Err(Refusal {
            errno: errno::EINVAL,
            message: "authentication out of place".into(),
        }),
    };
    done.unwrap_or_else(|r| BootReply::Failed {
        errno: r.errno,
        message: r.message,
    })
}

/// Reads exactly `buf`, all of it before `until`.
pub(super) fn read_full(s: &mut TcpStream, buf: &mut [u8], until: Instant) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        let left = until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "request deadline passed"))?;
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf[at..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request deadline passed",
                ))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
