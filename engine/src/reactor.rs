//! The per-core reactor: one loop that owns a fabric endpoint, a buffer pool and a
//! storage queue, and turns their completions into calls on a [`Service`].
//!
//! Handlers are explicit state machines: a service keeps its requests' states and
//! advances them from `on_request`, `on_bulk` and `on_storage`. The reactor handles
//! what every service needs: receives kept posted, frame decoding with limits (a bad
//! message is answered with an errno or dropped, logged once per kind, and the core keeps
//! serving), HELLO sessions, PING, replies, bulk transfers (see [`crate::bulk`]), posts
//! that met a full queue retried on later turns, back-pressure (a congested core leaves
//! new messages in their receive slots until it catches up), one io_uring submission
//! per turn, cross-core calls, and idle back-off.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use nacre_auth::{Key, Principal, Side};
use nacre_fabric::{Access, Completion, ErrorKind, Memory, MemoryRegion, OpKind, PeerAddr};
use nacre_proto::hello::{HelloReply, HelloReq, PROOF_LEN};
use nacre_proto::{DecodeError, Frame, Header, Limits, Opcode};

use crate::bulk::BulkDone;
use crate::core::{Core, Route};
use crate::storage::IoCompletion;

/// What the reactor logs once (then only counts): one bit per kind.
const LOG_UNKNOWN_SESSION: u32 = 1;
const LOG_BAD_NAME: u32 = 1 << 1;
const LOG_SESSIONS: u32 = 1 << 2;
const LOG_WRONG_SOURCE: u32 = 1 << 3;
/// Decode errors take the bits from here up, one per kind of error.
const LOG_DECODE: u32 = 1 << 4;
/// Clients whose refused HELLO was logged, at most (then refusals are only counted).
const LOGGED_REFUSALS: usize = 1024;

/// What an idle core does: poll for a while, then sleep between turns, each sleep
/// twice the last up to a ceiling. A core is idle when a turn finds no work and it
/// has nothing of its own in flight (storage I/O, bulk transfers, queued posts).
#[derive(Debug, Clone, Copy)]
pub struct IdlePolicy {
    /// How long an idle core keeps polling before it backs off; `None`: never backs
    /// off (pure polling). A time, not a count of turns: an empty turn costs from tens
    /// of nanoseconds to microseconds, and a count of 20 000 let a core under a 1 MiB
    /// write stream sleep in the client's short pauses (docs/engine.md, "Reactor").
    pub spin_for: Option<Duration>,
    /// The first sleep once backing off.
    pub sleep: Duration,
    /// The longest sleep: the most a request that ends a long idle stretch waits for
    /// the core to look. Growing to it matters where cores share CPUs (`nacre up`):
    /// an idle OSS core waking every 50 us took a fifth of the CPU its machine's
    /// busy MDS core ran on (docs/engine.md, "Reactor").
    pub max_sleep: Duration,
    /// Offer the CPU to other threads (sched_yield) after each empty turn while
    /// spinning: for cores that share their CPUs with other work (not pinned, as on
    /// one machine running servers and clients together), where a spinning core
    /// would hold a CPU for a whole scheduler slice. Costs a system call per empty
    /// turn when nobody else wants the CPU.
    pub yield_empty: bool,
}

impl Default for IdlePolicy {
    fn default() -> Self {
        IdlePolicy {
            spin_for: Some(Duration::from_millis(20)),
            sleep: Duration::from_micros(50),
            max_sleep: Duration::from_millis(1),
            yield_empty: false,
        }
    }
}

impl IdlePolicy {
    /// Whether a core idle for `idle` backs off.
    pub fn backs_off(&self, idle: Duration) -> bool {
        self.spin_for.is_some_and(|s| idle >= s)
    }

    /// The `nth` sleep (from 0) of an idle stretch.
    pub fn backoff(&self, nth: u32) -> Duration {
        let grown = self.sleep.saturating_mul(1u32 << nth.min(20));
        grown.min(self.max_sleep.max(self.sleep))
    }
}

/// The default bulk timeout: twice the client's default request timeout (30 s).
pub const DEFAULT_BULK_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a session may go unused before the core reaps it: twice the time after
/// which a client says HELLO again (`nacre_proto::SESSION_REFRESH`).
pub const DEFAULT_SESSION_IDLE: Duration =
    Duration::from_secs(2 * nacre_proto::SESSION_REFRESH.as_secs());

/// Refused HELLOs answered between two reaps (a second) at most.
const MAX_REFUSED: usize = 1024;

/// Turns between two looks for pushes past the bulk timeout (a clock read and a scan of
/// the bulk table; a busy core turns over in microseconds).
pub(crate) const EXPIRY_TURNS: u64 = 1024;

#[derive(Debug, Clone)]
pub struct ReactorConfig {
    /// Receives kept posted.
    pub recv_slots: usize,
    /// Transmit slots for replies too large to inject.
    pub tx_slots: usize,
    /// Largest message (header + inline body) in either direction.
    pub msg_size: usize,
    /// Clients (HELLO sessions) one core serves at once, at most (at most 65535).
    pub max_sessions: usize,
    /// How long a session may go unused before it is reaped (crate::sessions).
    pub session_idle: Duration,
    /// Bulk transfers in flight or waiting for slabs, at most (at most 2^16).
    pub bulk_ops: usize,
    /// How long a push may wait for its completion before its peer is evicted (its
    /// pushes given up, their slabs back in the pool). Longer than a client's request
    /// timeout, so that a live client has given up (and closed its registration) first.
    pub bulk_timeout: Duration,
    pub idle: IdlePolicy,
    /// The file system key: a HELLO must prove its client holds a key of the file
    /// system (the file system key or a client key issued from it). None: every
    /// client is taken for the file system key's holder (engines built by tests).
    pub key: Option<Key>,
}

impl Default for ReactorConfig {
    fn default() -> Self {
        ReactorConfig {
            recv_slots: 64,
            tx_slots: 64,
            msg_size: 4096,
            max_sessions: 4096,
            session_idle: DEFAULT_SESSION_IDLE,
            bulk_ops: 256,
            bulk_timeout: DEFAULT_BULK_TIMEOUT,
            idle: IdlePolicy::default(),
            key: None,
        }
    }
}

/// A request as it reaches a service: its header, its body (in the core's receive
/// buffer, valid for the call) and the peer that sent it. (A metadata request's body
/// decodes to a `nacre_proto::meta::Request`.)
pub struct Incoming<'a> {
    pub header: Header,
    pub body: &'a [u8],
    pub peer: PeerAddr,
}

/// What the engine's loop calls.
pub trait Service {
    /// A decoded request from a known session (HELLO and PING are answered by the
    /// reactor). Every request gets exactly one [`Core::reply`], now or later.
    fn on_request(&mut self, core: &mut Core, req: Incoming<'_>);
    /// A bulk transfer the service started ([`Core::pull`], [`Core::push`]) finished.
    fn on_bulk(&mut self, core: &mut Core, done: BulkDone) {
        for b in done.bufs {
            let _ = core.pool.put(b);
        }
    }
    /// A storage operation the service submitted completed.
    fn on_storage(&mut self, core: &mut Core, done: IoCompletion) {
        let _ = (core, done);
    }
    /// Once per turn: resume work that waited for a buffer (back-pressure). Returns
    /// whether anything moved.
    fn on_turn(&mut self, core: &mut Core) -> bool {
        let _ = core;
        false
    }
    /// Whether the service holds as much work as it may: new requests then wait in
    /// their receive slots, as they do while the core is congested, and their senders
    /// wait (the service's queues stay within their bounds; nothing is dropped).
    fn busy(&self) -> bool {
        false
    }
}

/// Work sent to a core from another thread.
pub enum CoreMsg {
    Call(Box<dyn FnOnce(&mut Core) + Send>),
    Stop,
}

/// A core's loop.
pub struct Reactor<S: Service> {
    pub core: Core,
    pub service: S,
    inbox: Receiver<CoreMsg>,
    rx: MemoryRegion,
    msg: Vec<u8>,
    /// Messages left in their receive slots while the core was congested: (slot, len,
    /// source).
    parked: VecDeque<(u32, usize, Option<PeerAddr>)>,
    key: Option<Key>,
    /// Clients (fabric names) whose refused HELLO was logged.
    refusals_logged: HashSet<Vec<u8>>,
    idle: IdlePolicy,
    /// Since when the core has been idle, and how many sleeps it took since.
    idle_since: Option<Instant>,
    sleeps: u32,
    logged: u32,
    fabric: Vec<Completion>,
    io: Vec<IoCompletion>,
    stopped: bool,
}

impl<S: Service> Reactor<S> {
    pub fn new(
        mut core: Core,
        service: S,
        inbox: Receiver<CoreMsg>,
        cfg: &ReactorConfig,
    ) -> Result<Self, nacre_fabric::Error> {
        let rx = core.ep.register(
            Memory::anonymous(cfg.recv_slots * cfg.msg_size)?,
            Access::LOCAL,
        )?;
        for slot in 0..cfg.recv_slots {
            // recv_slots beyond what a route holds is a configuration the engine
            // refuses (loudly), rather than posting receives it could not route back.
            let context = match u32::try_from(slot).map(|s| Route::Recv(s).encode()) {
                Ok(Ok(context)) => context,
                Ok(Err(e)) => return Err(unroutable(e.to_string())),
                Err(e) => return Err(unroutable(format!("receive slot {slot}: {e}"))),
            };
            core.ep
                .post_recv(rx.slice(slot * cfg.msg_size, cfg.msg_size)?, context)?;
        }
        Ok(Reactor {
            core,
            service,
            inbox,
            rx,
            msg: vec![0; cfg.msg_size],
            parked: VecDeque::with_capacity(cfg.recv_slots),
            key: cfg.key.clone(),
            refusals_logged: HashSet::new(),
            idle: cfg.idle,
            idle_since: None,
            sleeps: 0,
            logged: 0,
            fabric: vec![
                Completion {
                    context: 0,
                    kind: OpKind::Send,
                    len: 0,
                    source: None,
                };
                32
            ],
            io: Vec::with_capacity(64),
            stopped: false,
        })
    }

    /// Runs until a [`CoreMsg::Stop`] arrives or the inbox's senders are all gone.
    pub fn run(&mut self) {
        while !self.stopped {
            let worked = self.turn();
            self.idle_step(worked);
        }
    }

    /// One pass over every source of work; true if anything happened.
    pub fn turn(&mut self) -> bool {
        self.core.metrics.turns += 1;
        let mut worked = self.poll_fabric();
        worked |= self.core.retry_deferred();
        worked |= self.core.drain_tx_backlog();
        worked |= self.core.start_pulls();
        if self.core.metrics.turns.is_multiple_of(EXPIRY_TURNS) {
            self.core.clock = Instant::now();
            worked |= self.core.expire_pushes(self.core.clock);
            worked |= self.core.reap_sessions(self.core.clock);
        }
        worked |= self.deliver_bulk();
        worked |= self.poll_storage();
        worked |= self.service.on_turn(&mut self.core);
        worked |= self.deliver_bulk();
        worked |= self.unpark();
        if let Err(e) = self.core.storage.flush() {
            tracing::error!("storage submission failed: {e}");
        }
        worked |= self.poll_inbox();
        if !worked {
            self.core.metrics.idle_turns += 1;
        }
        worked
    }

    fn idle_step(&mut self, worked: bool) {
        // A core with I/O or transfers in flight is not idle: it polls on for them.
        if worked || self.core.waiting() {
            (self.idle_since, self.sleeps) = (None, 0);
        } else {
            let since = *self.idle_since.get_or_insert_with(Instant::now);
            if self.idle.backs_off(since.elapsed()) {
                self.core.metrics.backoff_sleeps += 1;
                std::thread::sleep(self.idle.backoff(self.sleeps));
                self.sleeps = self.sleeps.saturating_add(1);
                return;
            }
        }
        if !worked && self.idle.yield_empty {
            std::thread::yield_now();
        }
    }

    fn poll_fabric(&mut self) -> bool {
        let n = match self.core.ep.poll(&mut self.fabric) {
            Ok(n) => n,
            Err(e) => {
                self.fabric_error(e);
                return true;
            }
        };
        for i in 0..n {
            let c = self.fabric[i];
            // A context that is no route (a provider's bug) is logged and skipped: the
            // rest of the batch goes on.
            match Route::decode(c.context) {
                Ok(Route::Recv(slot)) => self.on_message(slot, c.len, c.source),
                Ok(Route::Reply(slot)) => self.core.reply_sent(slot),
                Ok(Route::Bulk { op, gen, .. }) => self.core.chunk_done(op, gen, None),
                Err(e) => tracing::error!("completion with a bad route: {e}"),
            }
        }
        n > 0
    }

    fn fabric_error(&mut self, e: nacre_fabric::Error) {
        self.core.metrics.fabric_errors += 1;
        let ErrorKind::Completion(c) = e.kind() else {
            tracing::error!("fabric: {e}");
            return;
        };
        match c.context.map(Route::decode) {
            Some(Ok(Route::Recv(slot))) => {
                tracing::warn!("receive failed: {c}; reposting");
                self.repost(slot);
            }
            Some(Ok(Route::Reply(slot))) => {
                tracing::warn!("reply failed: {c}");
                self.core.reply_sent(slot);
            }
            Some(Ok(Route::Bulk { op, gen, .. })) => {
                tracing::warn!("bulk transfer failed: {c}");
                self.core.chunk_done(op, gen, Some(c.code.max(1)));
            }
            Some(Err(e)) => tracing::error!("fabric error with a bad route: {c}: {e}"),
            None => tracing::warn!("fabric error not tied to an operation: {c}"),
        }
    }

    /// Hands finished bulk transfers to the service.
    fn deliver_bulk(&mut self) -> bool {
        let mut moved = false;
        while let Some(done) = self.core.bulk_done.pop_front() {
            self.service.on_bulk(&mut self.core, done);
            moved = true;
        }
        moved
    }

    fn repost(&mut self, slot: u32) {
        let size = self.msg.len();
        let context = match Route::Recv(slot).encode() {
            Ok(context) => context,
            Err(e) => return tracing::error!("cannot repost receive slot {slot}: {e}"),
        };
        let posted = self
            .rx
            .slice(slot as usize * size, size)
            .and_then(|dst| self.core.ep.post_recv(dst, context));
        if let Err(e) = posted {
            tracing::error!("cannot repost receive slot {slot}: {e}");
        }
    }

    /// A message arrived in receive slot `slot`: handled now, or left in its slot while
    /// the core is congested or the service busy (its sender waits; nothing is
    /// dropped).
    fn on_message(&mut self, slot: u32, len: usize, source: Option<PeerAddr>) {
        if self.core.congested() || self.service.busy() || !self.parked.is_empty() {
            self.core.metrics.parked_messages += 1;
            self.parked.push_back((slot, len, source));
            return;
        }
        self.take_message(slot, len, source);
    }

    /// Handles parked messages, oldest first, while the core is not congested.
    fn unpark(&mut self) -> bool {
        let mut moved = false;
        while !self.core.congested() && !self.service.busy() {
            let Some((slot, len, source)) = self.parked.pop_front() else {
                break;
            };
            self.take_message(slot, len, source);
            moved = true;
        }
        moved
    }

    /// Copies the message out of its slot, reposts the slot, handles the message.
    fn take_message(&mut self, slot: u32, len: usize, source: Option<PeerAddr>) {
        let len = len.min(self.msg.len());
        let copied = self
            .rx
            .copy_out(slot as usize * self.msg.len(), &mut self.msg[..len]);
        self.repost(slot);
        if copied.is_err() {
            return;
        }
        let msg = std::mem::take(&mut self.msg);
        self.handle(&msg[..len], source);
        self.msg = msg;
    }

    fn handle(&mut self, bytes: &[u8], source: Option<PeerAddr>) {
        let frame = match Frame::decode(bytes, &self.core.limits) {
            Ok(f) => f,
            Err(e) => return self.malformed(bytes, e),
        };
        let h = frame.header;
        if h.opcode == Opcode::HELLO {
            return self.hello(&h, frame.body);
        }
        let Some(peer) = self.core.sessions.heard(h.session, source, self.core.clock) else {
            self.core.metrics.unknown_session += 1;
            match self.core.sessions.peer(h.session) {
                // A live id from another address: forged, replayed or guessed.
                Some(peer) => self.log_once(LOG_WRONG_SOURCE, || {
                    format!(
                        "session {:#x} of peer {} used from {}: dropped",
                        h.session,
                        peer.index(),
                        source.map_or("an unknown address".into(), |s| format!(
                            "peer {}",
                            s.index()
                        ))
                    )
                }),
                None => self.log_once(LOG_UNKNOWN_SESSION, || {
                    format!("message from unknown session {:#x}: dropped", h.session)
                }),
            }
            return;
        };
        if h.opcode == Opcode::BYE {
            // The client's endpoint closes: its session goes at the next reap.
            self.core.metrics.byes += 1;
            return self.core.sessions.leave(h.session);
        }
        self.core.metrics.requests += 1;
        self.core.heard_from(peer);
        if h.opcode == Opcode::PING {
            return self.core.reply(peer, &h, 0, frame.body);
        }
        let req = Incoming {
            header: h,
            body: frame.body,
            peer,
        };
        self.service.on_request(&mut self.core, req);
    }

    /// A client's first message: its fabric name and its proof that it holds a key of
    /// the file system. A client that says HELLO again (a retry, or a refresh after a
    /// long pause) gets its session back while it lives; the proof is checked every
    /// time (a copied HELLO names its sender's address, where the answer goes).
    fn hello(&mut self, h: &Header, body: &[u8]) {
        let hello = match HelloReq::decode(body) {
            Ok(hello) => hello,
            Err(e) => {
                self.core.metrics.malformed += 1;
                return self.log_once(LOG_BAD_NAME, || format!("bad HELLO: {e}"));
            }
        };
        let principal = match self.authenticate(&hello) {
            Ok(p) => p,
            Err(why) => {
                self.core.metrics.refused_hellos += 1;
                if self.refusals_logged.len() < LOGGED_REFUSALS
                    && self.refusals_logged.insert(hello.name.to_vec())
                {
                    tracing::warn!(
                        "HELLO refused: authentication failed: {why} (further refusals of \
                         this client are counted, not logged)"
                    );
                }
                // Not answered where a session lives under that name: the answer's
                // address-vector entry, removed after it, may be the session's.
                if self.core.sessions.has_name(hello.name) {
                    return;
                }
                return self.refuse_hello(h, hello.name, libc::EACCES);
            }
        };
        let name = hello.name;
        let now = self.core.clock;
        if let Some((session, peer)) = self.core.sessions.find(name, &principal, now) {
            let mut reply = *h;
            reply.session = session;
            self.core.heard_from(peer);
            let body = self.welcome(&hello, &principal, session);
            return self.core.reply(peer, &reply, 0, &body);
        }
        if self.core.sessions.full() {
            self.core.metrics.malformed += 1;
            let live = self.core.sessions.len();
            self.log_once(LOG_SESSIONS, || {
                format!("HELLO refused: {live} sessions already")
            });
            return self.refuse_hello(h, name, libc::EUSERS);
        }
        let inserted = match self.core.take_refused(name) {
            Some(peer) => Ok(peer),
            None => self.core.ep.insert_peer(name),
        };
        match inserted {
            Ok(peer) => {
                let session = match self.core.sessions.add(peer, name, principal.clone(), now) {
                    Ok(session) => session,
                    Err(e) => {
                        // A bug (the table is bounded to what ids hold): said loudly,
                        // and the HELLO refused rather than answered with a wrong id.
                        tracing::error!("HELLO refused: no session id: {e}");
                        self.core.metrics.malformed += 1;
                        if let Err(e) = self.core.ep.remove_peer(peer) {
                            tracing::warn!("removing the refused peer failed: {e}");
                        }
                        return;
                    }
                };
                let mut reply = *h;
                reply.session = session;
                let body = self.welcome(&hello, &principal, session);
                self.core.reply(peer, &reply, 0, &body);
            }
            Err(e) => {
                self.core.metrics.malformed += 1;
                self.log_once(LOG_BAD_NAME, || {
                    format!("HELLO with an unusable fabric name: {e}")
                });
            }
        }
    }

    /// Who a HELLO's client proved to be (the file system key's holder on a core
    /// without a key: one built by tests).
    fn authenticate(&self, hello: &HelloReq) -> Result<Principal, String> {
        let Some(key) = &self.key else {
            return Ok(Principal::FileSystem);
        };
        if hello.principal.is_empty() {
            return Err("the client has no key".into());
        }
        let principal = match Principal::decode(hello.principal) {
            Ok((p, [])) => p,
            Ok(_) => return Err("trailing bytes after the principal".into()),
            Err(e) => return Err(e.to_string()),
        };
        let ex = nacre_auth::proof::hello(key.fsname(), &principal, hello.name, &hello.nonce, &[]);
        key.check(Side::Client, &ex, &hello.proof)
            .map_err(|e| e.to_string())?;
        Ok(principal)
    }

    /// The HELLO reply's body: the session id and this server's proof over it.
    fn welcome(&self, hello: &HelloReq, principal: &Principal, session: u32) -> Vec<u8> {
        let proof = self.key.as_ref().map_or([0; PROOF_LEN], |key| {
            let id = session.to_le_bytes();
            let ex =
                nacre_auth::proof::hello(key.fsname(), principal, hello.name, &hello.nonce, &id);
            key.prove_to(Side::Server, &ex).unwrap_or([0; PROOF_LEN])
        });
        HelloReply { session, proof }.encode().to_vec()
    }

    /// Answers a HELLO this core cannot admit with `errno` and no session, at once, so
    /// the client fails with a clear error rather than a timeout: the peer is in the
    /// address vector only for the answer (removed on the next reap, once it is sent).
    fn refuse_hello(&mut self, h: &Header, name: &[u8], errno: i32) {
        if self.core.refused_waiting() >= MAX_REFUSED {
            return; // a flood of HELLOs: the first of each second are answered
        }
        let peer = match self.core.refused_peer(name) {
            Some(peer) => peer,
            None => match self.core.ep.insert_peer(name) {
                Ok(peer) => peer,
                Err(_) => return,
            },
        };
        self.core.reply(peer, h, -errno, &[]);
        self.core.refused(peer, name);
    }

    /// Answers a bad message with an errno when its sender is known, else drops it.
    fn malformed(&mut self, bytes: &[u8], e: DecodeError) {
        self.core.metrics.malformed += 1;
        let bit = LOG_DECODE << e.kind_index();
        self.log_once(bit, || {
            format!("malformed message ({} bytes): {e}", bytes.len())
        });
        let Ok(h) = Header::decode(bytes, &Limits { max_body: u32::MAX }) else {
            return;
        };
        if let Some(peer) = self.core.peer(h.session) {
            self.core.reply(peer, &h, -e.errno(), &[]);
        }
    }

    fn log_once(&mut self, bit: u32, what: impl FnOnce() -> String) {
        if self.logged & bit == 0 {
            self.logged |= bit;
            tracing::warn!(
                "{} (further ones are counted in metrics, not logged)",
                what()
            );
        }
    }

    fn poll_storage(&mut self) -> bool {
        self.io.clear();
        if let Err(e) = self.core.storage.reap(&mut self.io) {
            tracing::error!("storage: {e}");
        }
        let n = self.io.len();
        self.core.metrics.storage_completions += n as u64;
        for done in self.io.drain(..) {
            self.service.on_storage(&mut self.core, done);
        }
        n > 0
    }

    fn poll_inbox(&mut self) -> bool {
        match self.inbox.try_recv() {
            Ok(CoreMsg::Call(f)) => {
                f(&mut self.core);
                true
            }
            Ok(CoreMsg::Stop) | Err(TryRecvError::Disconnected) => {
                self.stopped = true;
                true
            }
            Err(TryRecvError::Empty) => false,
        }
    }
}

/// A receive slot that no route can name: refused at start.
fn unroutable(text: String) -> nacre_fabric::Error {
    tracing::error!("engine: {text}");
    nacre_fabric::ErrorKind::Call {
        call: "Route::encode",
        code: libc::EINVAL,
        text,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_sleeps_double_up_to_the_ceiling() {
        let p = IdlePolicy::default();
        let us = |nth| p.backoff(nth).as_micros();
        assert_eq!((us(0), us(1), us(2), us(4)), (50, 100, 200, 800));
        assert_eq!((us(5), us(6), us(u32::MAX)), (1000, 1000, 1000));
        // A ceiling below the first sleep never shortens it.
        let short = IdlePolicy {
            max_sleep: Duration::ZERO,
            ..p
        };
        assert_eq!(short.backoff(3), p.sleep);
    }

    #[test]
    fn a_core_backs_off_after_its_spin_time_or_never() {
        let p = IdlePolicy::default();
        assert!(!p.backs_off(Duration::from_millis(19)));
        assert!(p.backs_off(Duration::from_millis(20)));
        let polling = IdlePolicy {
            spin_for: None,
            ..p
        };
        assert!(!polling.backs_off(Duration::from_secs(3600)));
    }
}
