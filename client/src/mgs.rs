//! The bootstrap half: talking to the management service (MGS) over TCP.
//!
//! Clients fetch the cluster map and wait for a newer one; servers claim a role, renew
//! its lease (a [`LeaseKeeper`] does it on a thread) and release it. Every call has a
//! deadline, and an MGS that cannot be reached is an error naming its address.
//!
//! Self-fencing: a server may serve only while [`LeaseClock`] says so. Its lease is
//! counted from when a renewal was *sent* (the MGS counts from when it received it, which
//! is later), less a margin for clock-rate drift and for replies still in flight; so the
//! server stops before the MGS can think the lease over and give the role to another.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nacre_proto::bootstrap::{
    errno, BootError, BootHeader, BootOp, BootReply, BootRequest, ClaimRequest, ClusterMap, Grant,
    RenewRequest, Renewed, Role, TargetReport, BOOT_HEADER_LEN, MAX_REPLY_BODY,
};

#[derive(Debug, thiserror::Error)]
pub enum MgsError {
    #[error("cannot reach the MGS at {addr}: {source}")]
    Unreachable { addr: String, source: io::Error },
    #[error("the MGS at {addr} did not answer within {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("connection to the MGS at {addr} lost: {source}")]
    Lost { addr: String, source: io::Error },
    #[error("the MGS at {addr} refused: {message} (errno {errno})")]
    Refused {
        addr: String,
        errno: i32,
        message: String,
    },
    #[error("the MGS at {addr} sent a malformed reply: {source}")]
    Malformed { addr: String, source: BootError },
    #[error("request not sent: {0}")]
    Request(BootError),
}

impl MgsError {
    /// The errno of a refusal, if the MGS answered with one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            MgsError::Refused { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The MGS says the epoch presented is not the role's current one: step down.
    pub fn is_fenced(&self) -> bool {
        matches!(self.errno(), Some(errno::ESTALE) | Some(errno::ENOENT))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BootConfig {
    pub connect_timeout: Duration,
    /// For one request and its reply (a map long poll adds its wait).
    pub request_timeout: Duration,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// A connection to an MGS (reopened as needed). `addrs` is `HOST:PORT`, or several
/// separated by commas (MGS processes sharing one store): tried in turn.
pub struct MgsClient {
    addrs: String,
    cfg: BootConfig,
    conn: Option<(TcpStream, String)>,
    /// Which address to try first: moves on after a failure, so that a paused MGS
    /// (whose kernel still accepts connections) is not tried first forever.
    first: usize,
}

impl MgsClient {
    /// No connection yet: the first call opens it.
    pub fn new(addrs: &str, cfg: BootConfig) -> MgsClient {
        MgsClient {
            addrs: addrs.to_string(),
            cfg,
            conn: None,
            first: 0,
        }
    }

    /// Connects now, so that a wrong address shows at once.
    pub fn connect(addrs: &str, cfg: BootConfig) -> Result<MgsClient, MgsError> {
        let mut c = MgsClient::new(addrs, cfg);
        c.open()?;
        Ok(c)
    }

    pub fn addrs(&self) -> &str {
        &self.addrs
    }

    pub fn fetch_map(&mut self) -> Result<ClusterMap, MgsError> {
        match self.call(&BootRequest::FetchMap, Duration::ZERO)? {
            BootReply::Map(m) => Ok(m),
            other => Err(self.unexpected(other)),
        }
    }

    /// The map once its version exceeds `newer_than`, or the current one after `wait`.
    pub fn wait_map(&mut self, newer_than: u64, wait: Duration) -> Result<ClusterMap, MgsError> {
        let req = BootRequest::WaitMap {
            newer_than,
            wait_ms: wait.as_millis().min(u32::MAX as u128) as u32,
        };
        match self.call(&req, wait)? {
            BootReply::Map(m) => Ok(m),
            other => Err(self.unexpected(other)),
        }
    }

    pub fn claim(&mut self, req: &ClaimRequest) -> Result<Grant, MgsError> {
        match self.call(&BootRequest::Claim(req.clone()), Duration::ZERO)? {
            BootReply::Granted(g) => Ok(g),
            other => Err(self.unexpected(other)),
        }
    }

    pub fn renew(
        &mut self,
        role: Role,
        epoch: u64,
        report: TargetReport,
    ) -> Result<Renewed, MgsError> {
        let req = BootRequest::Renew(RenewRequest {
            role,
            epoch,
            report,
        });
        match self.call(&req, Duration::ZERO)? {
            BootReply::Renewed(r) => Ok(r),
            other => Err(self.unexpected(other)),
        }
    }

    pub fn release(&mut self, role: Role, epoch: u64) -> Result<(), MgsError> {
        match self.call(&BootRequest::Release { role, epoch }, Duration::ZERO)? {
            BootReply::Released => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    fn unexpected(&self, reply: BootReply) -> MgsError {
        let addr = self.current_addr();
        match reply {
            BootReply::Failed { errno, message } => MgsError::Refused {
                addr,
                errno,
                message,
            },
            other => MgsError::Malformed {
                addr,
                source: BootError::BadValue {
                    field: if matches!(other, BootReply::Map(_)) {
                        "unexpected map reply"
                    } else {
                        "unexpected reply"
                    },
                    value: 0,
                },
            },
        }
    }

    fn current_addr(&self) -> String {
        self.conn
            .as_ref()
            .map_or_else(|| self.addrs.clone(), |(_, a)| a.clone())
    }

    /// One request and its reply; a reused connection that turns out dead is reopened
    /// once (every request is safe to repeat: a repeated claim reclaims the same role).
    fn call(&mut self, req: &BootRequest, extra: Duration) -> Result<BootReply, MgsError> {
        let frame = req.encode().map_err(MgsError::Request)?;
        let reused = self.conn.is_some();
        let out = match self.exchange(req.op(), &frame, extra) {
            Err(MgsError::Lost { .. }) if reused => self.exchange(req.op(), &frame, extra),
            other => other,
        };
        let failed = match &out {
            Ok(BootReply::Failed { errno, .. }) => *errno == errno::EAGAIN,
            Ok(_) => false,
            Err(_) => true,
        };
        if failed {
            self.conn = None;
            self.first = self.first.wrapping_add(1);
        }
        out
    }

    fn exchange(
        &mut self,
        op: BootOp,
        frame: &[u8],
        extra: Duration,
    ) -> Result<BootReply, MgsError> {
        if self.conn.is_none() {
            self.open()?;
        }
        let timeout = self.cfg.request_timeout + extra;
        let (s, addr) = self.conn.as_mut().expect("opened");
        let addr = addr.clone();
        let result = send_and_read(s, op, frame, timeout);
        let reply = match result {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return Err(match e {
                    Exchange::Io(source)
                        if matches!(
                            source.kind(),
                            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                        ) =>
                    {
                        MgsError::Timeout {
                            addr,
                            after: timeout,
                        }
                    }
                    Exchange::Io(source) => MgsError::Lost { addr, source },
                    Exchange::Frame(source) => MgsError::Malformed { addr, source },
                });
            }
        };
        Ok(reply)
    }

    fn open(&mut self) -> Result<(), MgsError> {
        let mut last = None;
        let all: Vec<&str> = self
            .addrs
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        let start = self.first % all.len().max(1);
        for one in all[start..].iter().chain(&all[..start]).copied() {
            match connect_one(one, self.cfg.connect_timeout) {
                Ok(s) => {
                    self.conn = Some((s, one.to_string()));
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| MgsError::Unreachable {
            addr: self.addrs.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "no address given"),
        }))
    }
}

fn connect_one(addr: &str, timeout: Duration) -> Result<TcpStream, MgsError> {
    let unreachable = |source| MgsError::Unreachable {
        addr: addr.to_string(),
        source,
    };
    let resolved: Vec<SocketAddr> = addr.to_socket_addrs().map_err(unreachable)?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address");
    for sa in resolved {
        match TcpStream::connect_timeout(&sa, timeout) {
            Ok(s) => {
                s.set_nodelay(true).map_err(unreachable)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(unreachable(last))
}

enum Exchange {
    Io(io::Error),
    Frame(BootError),
}

fn send_and_read(
    s: &mut TcpStream,
    op: BootOp,
    frame: &[u8],
    timeout: Duration,
) -> Result<BootReply, Exchange> {
    let until = Instant::now() + timeout;
    s.set_write_timeout(Some(timeout)).map_err(Exchange::Io)?;
    s.write_all(frame).map_err(Exchange::Io)?;
    let mut head = [0u8; BOOT_HEADER_LEN];
    read_full(s, &mut head, until).map_err(Exchange::Io)?;
    let h = BootHeader::decode(&head, MAX_REPLY_BODY).map_err(Exchange::Frame)?;
    if h.op != op {
        return Err(Exchange::Frame(BootError::BadValue {
            field: "reply opcode",
            value: h.op as u64,
        }));
    }
    let mut body = vec![0u8; h.body_len as usize];
    read_full(s, &mut body, until).map_err(Exchange::Io)?;
    BootReply::decode(op, h.status, &body).map_err(Exchange::Frame)
}

fn read_full(s: &mut TcpStream, buf: &mut [u8], until: Instant) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        let left = until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?;
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf[at..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether a server may serve its role now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStatus {
    /// The lease holds for at least `left`.
    Serving { left: Duration },
    /// No renewal was acknowledged in time: stop serving; a later acknowledged renewal
    /// (same epoch: nobody took the role) may bring it back.
    Lapsed,
    /// The MGS refused the epoch: the role belongs to someone else. Final.
    Fenced(String),
}

/// The server's own clock on its lease (pure: the caller passes the time).
#[derive(Debug, Clone)]
pub struct LeaseClock {
    lease: Duration,
    margin: Duration,
    deadline: Instant,
    fenced: Option<String>,
}

impl LeaseClock {
    /// The margin kept below the lease: a tenth of it (clock-rate drift is far less;
    /// the rest covers a request admitted just before the deadline).
    pub fn margin_for(lease: Duration) -> Duration {
        lease / 10
    }

    /// A lease granted by a claim or renewal sent at `sent`.
    pub fn new(sent: Instant, lease: Duration) -> LeaseClock {
        let margin = Self::margin_for(lease);
        LeaseClock {
            lease,
            margin,
            deadline: sent + lease - margin,
            fenced: None,
        }
    }

    /// A renewal sent at `sent` was acknowledged.
    pub fn on_renewed(&mut self, sent: Instant) {
        if self.fenced.is_none() {
            self.deadline = self.deadline.max(sent + self.lease - self.margin);
        }
    }

    pub fn on_fenced(&mut self, why: String) {
        self.fenced.get_or_insert(why);
    }

    pub fn status(&self, now: Instant) -> LeaseStatus {
        if let Some(why) = &self.fenced {
            return LeaseStatus::Fenced(why.clone());
        }
        match self.deadline.checked_duration_since(now) {
            Some(left) if !left.is_zero() => LeaseStatus::Serving { left },
            _ => LeaseStatus::Lapsed,
        }
    }
}

/// What a [`LeaseKeeper`] tells its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// A renewal failed to reach the MGS (the lease may still hold).
    Unreachable(String),
    /// A renewal was acknowledged after failures or a lapse.
    Restored,
    /// The lease ran out with no acknowledged renewal: stopped serving.
    Lapsed,
    /// The MGS refused the epoch: stepped down for good.
    Fenced(String),
}

struct KeeperShared {
    clock: Mutex<LeaseClock>,
    report: Mutex<TargetReport>,
    stop: AtomicBool,
}

/// Renews a role's lease every heartbeat on its own thread and keeps the [`LeaseClock`].
pub struct LeaseKeeper {
    shared: Arc<KeeperShared>,
    grant: Grant,
    addrs: String,
    thread: Option<JoinHandle<()>>,
    events: Option<Receiver<LeaseEvent>>,
}

impl LeaseKeeper {
    /// Starts keeping `grant`, whose claim was sent at `claim_sent`.
    pub fn start(
        addrs: &str,
        grant: Grant,
        claim_sent: Instant,
        report: TargetReport,
    ) -> LeaseKeeper {
        let lease = Duration::from_millis(grant.lease_ms.into());
        let shared = Arc::new(KeeperShared {
            clock: Mutex::new(LeaseClock::new(claim_sent, lease)),
            report: Mutex::new(report),
            stop: AtomicBool::new(false),
        });
        let (tx, rx) = sync_channel(64);
        let thread = {
            let shared = shared.clone();
            let addrs = addrs.to_string();
            let grant = grant.clone();
            std::thread::Builder::new()
                .name(format!("lease-{}", grant.role))
                .spawn(move || keep(&addrs, &grant, &shared, &tx))
                .ok()
        };
        LeaseKeeper {
            shared,
            grant,
            addrs: addrs.to_string(),
            thread,
            events: Some(rx),
        }
    }

    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    pub fn status(&self) -> LeaseStatus {
        lock(&self.shared.clock).status(Instant::now())
    }

    /// Check before serving each request (and before its reply leaves).
    pub fn may_serve(&self) -> bool {
        matches!(self.status(), LeaseStatus::Serving { .. })
    }

    /// What the next heartbeats say of the target.
    pub fn set_report(&self, report: TargetReport) {
        *lock(&self.shared.report) = report;
    }

    /// The keeper's events (once).
    pub fn events(&mut self) -> Option<Receiver<LeaseEvent>> {
        self.events.take()
    }

    /// Stops renewing and gives the role up at the MGS (so a successor needs not wait).
    pub fn release(mut self) -> Result<(), MgsError> {
        self.halt();
        let mut c = MgsClient::new(&self.addrs, BootConfig::default());
        c.release(self.grant.role, self.grant.epoch)
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.halt();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn keep(addrs: &str, grant: &Grant, shared: &KeeperShared, events: &SyncSender<LeaseEvent>) {
    let heartbeat = Duration::from_millis(grant.heartbeat_ms.max(1).into());
    // A renewal that takes longer than a heartbeat is as good as lost.
    let cfg = BootConfig {
        connect_timeout: heartbeat,
        request_timeout: heartbeat,
    };
    let mut mgs = MgsClient::new(addrs, cfg);
    let mut troubled = false;
    let mut lapsed = false;
    let mut next = Instant::now() + heartbeat;
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if !lapsed && lock(&shared.clock).status(now) == LeaseStatus::Lapsed {
            lapsed = true;
            troubled = true;
            let _ = events.try_send(LeaseEvent::Lapsed);
        }
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(20)));
            continue;
        }
        next = now + heartbeat;
        let report = *lock(&shared.report);
        let sent = Instant::now();
        match mgs.renew(grant.role, grant.epoch, report) {
            Ok(_) => {
                lock(&shared.clock).on_renewed(sent);
                lapsed = false;
                if std::mem::take(&mut troubled) {
                    let _ = events.try_send(LeaseEvent::Restored);
                }
            }
            Err(e) if e.is_fenced() => {
                lock(&shared.clock).on_fenced(e.to_string());
                let _ = events.try_send(LeaseEvent::Fenced(e.to_string()));
                return;
            }
            Err(e) => {
                if !troubled {
                    troubled = true;
                    let _ = events.try_send(LeaseEvent::Unreachable(e.to_string()));
                }
                // Retry sooner than a heartbeat: the lease is running.
                next = Instant::now() + heartbeat / 4;
            }
        }
    }
}

/// The MGS address to use: the one given (flag or config), else `NACRE_MGS`.
pub fn mgs_address(given: Option<String>) -> Option<String> {
    given.or_else(|| std::env::var("NACRE_MGS").ok().filter(|v| !v.is_empty()))
}

/// A server's identity at the MGS for the target in `dir`: `host:canonical-directory`
/// (`host` as given, else this machine's host name). One process serving several
/// targets holds one role per target, and a restart on the same host reclaims them.
pub fn node_identity(host: Option<&str>, dir: &std::path::Path) -> String {
    let host = host.map(str::to_string).unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into())
    });
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    format!("{host}:{}", dir.display())
}

/// The epoch a server's cores serve a role under (0 once it stepped down), and until
/// when: the lease's deadline on this process's clock. The lease keeper's watcher moves
/// the deadline on with every acknowledged renewal; a core checks both on every
/// request, so a server whose renewals stopped (paused, cut off) stops serving on its
/// own clock even before the watcher runs again.
#[derive(Debug, Clone)]
pub struct ServingEpoch(Arc<(AtomicU64, AtomicU64)>);

/// Nanoseconds on this process's monotonic clock.
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

impl ServingEpoch {
    /// Serving under `epoch` with no deadline (until `fence` or `serve_until`).
    pub fn new(epoch: u64) -> ServingEpoch {
        ServingEpoch(Arc::new((AtomicU64::new(epoch), AtomicU64::new(u64::MAX))))
    }

    /// The epoch requests must carry, or 0 when not serving now.
    pub fn get(&self) -> u64 {
        let deadline = self.0 .1.load(Ordering::Acquire);
        if deadline != u64::MAX && now_ns() >= deadline {
            return 0;
        }
        self.0 .0.load(Ordering::Acquire)
    }

    /// Stops serving under this epoch: every later request is refused (ESTALE).
    pub fn fence(&self) {
        self.0 .0.store(0, Ordering::Release);
    }

    /// Serves (again) under `epoch`: a lease restored with the epoch it was granted.
    pub fn set(&self, epoch: u64) {
        self.0 .0.store(epoch, Ordering::Release);
    }

    /// Serves for at most `left` from now (the lease's remaining time).
    pub fn serve_until(&self, left: Duration) {
        let deadline = now_ns().saturating_add(left.as_nanos() as u64);
        self.0 .1.store(deadline, Ordering::Release);
    }
}

/// A role a server holds: its lease keeper, and the [`ServingEpoch`] its cores check.
/// [`RoleHolder::poll`] (call it every few milliseconds, well inside the lease's margin)
/// follows the keeper: it moves the cores' deadline on with each acknowledged renewal,
/// stops them when the lease lapses, restores them when a renewal is acknowledged again,
/// and stops them for good when the role is fenced.
pub struct RoleHolder {
    pub keeper: LeaseKeeper,
    pub epoch: ServingEpoch,
    events: Receiver<LeaseEvent>,
    granted: u64,
    fenced: bool,
}

impl RoleHolder {
    pub fn new(mut keeper: LeaseKeeper) -> RoleHolder {
        let granted = keeper.grant().epoch;
        let events = keeper.events().expect("a fresh keeper has its events");
        let epoch = ServingEpoch::new(granted);
        let h = RoleHolder {
            keeper,
            epoch,
            events,
            granted,
            fenced: false,
        };
        h.follow();
        h
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// Applies what happened to the lease; returns a line worth telling the operator.
    pub fn poll(&mut self) -> Option<String> {
        let role = self.keeper.grant().role;
        let mut said = None;
        while let Ok(ev) = self.events.try_recv() {
            said = Some(match ev {
                LeaseEvent::Unreachable(why) => format!("{role}: MGS unreachable: {why}"),
                LeaseEvent::Lapsed => {
                    self.epoch.fence();
                    format!("{role}: lease lapsed: not serving")
                }
                LeaseEvent::Restored if !self.fenced => {
                    self.epoch.set(self.granted);
                    format!("{role}: lease restored: serving")
                }
                LeaseEvent::Restored => continue,
                LeaseEvent::Fenced(why) => {
                    self.fenced = true;
                    self.epoch.fence();
                    format!("{role}: fenced ({why}): stepped down")
                }
            });
        }
        self.follow();
        said
    }

    /// Moves the cores' deadline to what the lease clock allows now.
    fn follow(&self) {
        match self.keeper.status() {
            LeaseStatus::Serving { left } => self.epoch.serve_until(left),
            LeaseStatus::Lapsed | LeaseStatus::Fenced(_) => self.epoch.serve_until(Duration::ZERO),
        }
    }

    /// Stops serving and gives the role back (unless it was fenced: it is not ours).
    pub fn release(self) -> Result<(), MgsError> {
        self.epoch.fence();
        match self.fenced {
            true => Ok(()),
            false => self.keeper.release(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_counts_from_the_send_less_a_margin_and_fencing_is_final() {
        let t0 = Instant::now();
        let lease = Duration::from_millis(500);
        let mut c = LeaseClock::new(t0, lease);
        assert!(matches!(c.status(t0), LeaseStatus::Serving { .. }));
        // Lapses a margin before the MGS (counting from receipt) could.
        assert_eq!(
            c.status(t0 + Duration::from_millis(450)),
            LeaseStatus::Lapsed
        );
        assert!(matches!(
            c.status(t0 + Duration::from_millis(449)),
            LeaseStatus::Serving { .. }
        ));
        // A late acknowledgement of an old renewal never shortens the lease.
        c.on_renewed(t0 + Duration::from_millis(300));
        c.on_renewed(t0 + Duration::from_millis(100));
        assert!(matches!(
            c.status(t0 + Duration::from_millis(700)),
            LeaseStatus::Serving { .. }
        ));
        c.on_fenced("stale".into());
        c.on_renewed(t0 + Duration::from_secs(5));
        assert_eq!(c.status(t0), LeaseStatus::Fenced("stale".into()));
    }

    #[test]
    fn an_unreachable_mgs_is_an_error_naming_its_address() {
        // A port nobody listens on: bind one, learn it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let err = MgsClient::connect(&addr, BootConfig::default())
            .err()
            .expect("nothing listens there");
        assert!(matches!(err, MgsError::Unreachable { .. }));
        assert!(err.to_string().contains(&addr), "{err}");
        let mut c = MgsClient::new("no-such-host.invalid:1", BootConfig::default());
        let err = c.fetch_map().unwrap_err();
        assert!(err.to_string().contains("no-such-host.invalid:1"), "{err}");
    }
}
