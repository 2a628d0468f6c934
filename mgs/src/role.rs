//! Holding a role: what a server (MDS, OSS) runs once the MGS granted it a role.
//!
//! A [`LeaseKeeper`] renews the role's lease every heartbeat on a thread of its own; a
//! [`RoleHolder`] follows it and keeps the [`ServingEpoch`] that the server's cores check
//! on every request. The MGS's side of the same lease is in [`crate::state`].
//!
//! Self-fencing: a server may serve only while [`LeaseClock`] says so. Its lease is
//! counted from when a renewal was *sent* (the MGS counts from when it received it, which
//! is later), less a margin for clock-rate drift and for replies still in flight; so the
//! server stops before the MGS can think the lease over and give the role to another.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nacre_mgc::{BootConfig, MgsClient, MgsError};
use nacre_proto::bootstrap::{Grant, TargetReport};

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
    /// Renew at once rather than at the next heartbeat.
    urgent: AtomicBool,
    /// When the last acknowledged renewal was sent.
    renewed: Mutex<Option<Instant>>,
}

/// Renews a role's lease every heartbeat on its own thread and keeps the [`LeaseClock`].
pub struct LeaseKeeper {
    shared: Arc<KeeperShared>,
    grant: Grant,
    /// A client of the MGS the grant came from, with its key (for the release).
    mgs: MgsClient,
    thread: Option<JoinHandle<()>>,
    events: Option<Receiver<LeaseEvent>>,
}

impl LeaseKeeper {
    /// Starts keeping `grant`, whose claim was sent at `claim_sent` through `mgs`.
    pub fn start(
        mgs: &MgsClient,
        grant: Grant,
        claim_sent: Instant,
        report: TargetReport,
    ) -> LeaseKeeper {
        let lease = Duration::from_millis(grant.lease_ms.into());
        let shared = Arc::new(KeeperShared {
            clock: Mutex::new(LeaseClock::new(claim_sent, lease)),
            report: Mutex::new(report),
            stop: AtomicBool::new(false),
            urgent: AtomicBool::new(false),
            renewed: Mutex::new(None),
        });
        let (tx, rx) = sync_channel(64);
        let thread = {
            let shared = shared.clone();
            let heartbeat = Duration::from_millis(grant.heartbeat_ms.max(1).into());
            // A renewal that takes longer than a heartbeat is as good as lost.
            let cfg = BootConfig {
                connect_timeout: heartbeat,
                request_timeout: heartbeat,
            };
            let renewer = mgs.sibling(cfg);
            let grant = grant.clone();
            std::thread::Builder::new()
                .name(format!("lease-{}", grant.role))
                .spawn(move || keep(renewer, &grant, &shared, &tx))
                .ok()
        };
        LeaseKeeper {
            shared,
            grant,
            mgs: mgs.sibling(BootConfig::default()),
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

    /// What the heartbeats say now.
    pub fn report(&self) -> TargetReport {
        lock(&self.shared.report).clone()
    }

    /// Renews now with the report as it is (not at the next heartbeat); the instant to
    /// give [`LeaseKeeper::renewed_since`].
    pub fn renew_now(&self) -> Instant {
        let now = Instant::now();
        self.shared.urgent.store(true, Ordering::SeqCst);
        now
    }

    /// Whether the MGS acknowledged a renewal sent at or after `t` (so it holds the
    /// report set before `t`).
    pub fn renewed_since(&self, t: Instant) -> bool {
        lock(&self.shared.renewed).is_some_and(|r| r >= t)
    }

    /// The keeper's events (once).
    pub fn events(&mut self) -> Option<Receiver<LeaseEvent>> {
        self.events.take()
    }

    /// Stops renewing and gives the role up at the MGS (so a successor needs not wait).
    pub fn release(mut self) -> Result<(), MgsError> {
        self.halt();
        let (role, epoch) = (self.grant.role, self.grant.epoch);
        self.mgs.release(role, epoch)
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

fn keep(mut mgs: MgsClient, grant: &Grant, shared: &KeeperShared, events: &SyncSender<LeaseEvent>) {
    let heartbeat = Duration::from_millis(grant.heartbeat_ms.max(1).into());
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
        let urgent = shared.urgent.swap(false, Ordering::SeqCst);
        if now < next && !urgent {
            std::thread::sleep((next - now).min(Duration::from_millis(5)));
            continue;
        }
        next = now + heartbeat;
        // `sent` before the report is read: a renewal sent at or after an instant
        // carries the report as set before that instant.
        let sent = Instant::now();
        let report = lock(&shared.report).clone();
        match mgs.renew(grant.role, grant.epoch, report) {
            Ok(_) => {
                lock(&shared.clock).on_renewed(sent);
                *lock(&shared.renewed) = Some(sent);
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

/// A server's identity at the MGS for the target in `dir`: `host:canonical-directory`
/// (`host` as given, else this machine's host name). One process serving several
/// targets holds one role per target, and a restart on the same host reclaims them. The
/// directory should exist (a path is only canonical once it does: a relative one that
/// does not is made absolute).
pub fn node_identity(host: Option<&str>, dir: &std::path::Path) -> String {
    let host = host.map(str::to_string).unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into())
    });
    let dir = std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf());
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
}
