//! The per-core reactor: one loop that owns a fabric endpoint, a buffer pool and a
//! storage queue, and turns their completions into calls on a [`Service`].
//!
//! Handlers are explicit state machines: a service keeps its requests' states and
//! advances them from `on_request`, `on_fabric` and `on_storage`. The reactor handles
//! what every service needs: receives kept posted, frame decoding with limits (a bad
//! message is answered with an errno or dropped, logged once per kind, and the core keeps
//! serving), HELLO sessions, PING, replies (inline by inject, or from a registered
//! transmit slot), one io_uring submission per turn, cross-core calls, and idle back-off.

use std::collections::VecDeque;
use std::time::Duration;

use crossbeam_channel::{Receiver, TryRecvError};
use nacre_fabric::{
    Access, Completion, CompletionError, Endpoint, ErrorKind, Memory, MemoryRegion, OpKind,
    PeerAddr,
};
use nacre_proto::{DecodeError, Frame, Header, Limits, Opcode, HEADER_LEN};

use crate::pool::BufferPool;
use crate::storage::{IoCompletion, Storage};

/// What the reactor logs once (then only counts): one bit per kind.
const LOG_UNKNOWN_SESSION: u32 = 1;
const LOG_BAD_NAME: u32 = 1 << 1;
const LOG_SESSIONS: u32 = 1 << 2;
/// Decode errors take the bits from here up, one per kind of error.
const LOG_DECODE: u32 = 1 << 3;

/// Fabric contexts with this bit set belong to the reactor; services use the others.
pub const INTERNAL: u64 = 1 << 58;
const RECV: u64 = INTERNAL | 1 << 57;
const REPLY: u64 = INTERNAL;

/// What an idle core does: spin this many empty turns, then sleep between turns.
#[derive(Debug, Clone, Copy)]
pub struct IdlePolicy {
    /// Empty turns before backing off; 0: never back off (pure polling).
    pub spins: u32,
    /// Sleep per empty turn once backing off.
    pub sleep: Duration,
}

impl Default for IdlePolicy {
    fn default() -> Self {
        IdlePolicy {
            spins: 20_000,
            sleep: Duration::from_micros(50),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReactorConfig {
    /// Receives kept posted.
    pub recv_slots: usize,
    /// Transmit slots for replies too large to inject.
    pub tx_slots: usize,
    /// Largest message (header + inline body) in either direction.
    pub msg_size: usize,
    /// Clients (HELLO sessions) one core serves at most.
    pub max_sessions: usize,
    pub idle: IdlePolicy,
}

impl Default for ReactorConfig {
    fn default() -> Self {
        ReactorConfig {
            recv_slots: 64,
            tx_slots: 64,
            msg_size: 4096,
            max_sessions: 4096,
            idle: IdlePolicy::default(),
        }
    }
}

/// Counters of one core, readable from outside through a cross-core call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreMetrics {
    pub turns: u64,
    pub idle_turns: u64,
    /// Turns that slept because the core was idle (the back-off is visible here).
    pub backoff_sleeps: u64,
    pub requests: u64,
    pub replies: u64,
    pub malformed: u64,
    pub unknown_session: u64,
    pub fabric_errors: u64,
    pub storage_completions: u64,
    pub replies_dropped: u64,
}

impl CoreMetrics {
    /// The counters in Prometheus text exposition format, labelled with the core index,
    /// for a server's metrics endpoint or the CLI.
    pub fn prometheus(&self, core: usize) -> String {
        let counters: [(&str, &str, u64); 10] = [
            ("turns", "Turns of the core's loop", self.turns),
            ("idle_turns", "Turns that found no work", self.idle_turns),
            (
                "backoff_sleeps",
                "Idle turns that slept (back-off)",
                self.backoff_sleeps,
            ),
            ("requests", "Requests from known sessions", self.requests),
            ("replies", "Replies sent", self.replies),
            ("malformed", "Messages that did not decode", self.malformed),
            (
                "unknown_session",
                "Messages from unknown sessions",
                self.unknown_session,
            ),
            (
                "fabric_errors",
                "Fabric error completions and call failures",
                self.fabric_errors,
            ),
            (
                "storage_completions",
                "Storage operations completed",
                self.storage_completions,
            ),
            (
                "replies_dropped",
                "Replies that could not be sent",
                self.replies_dropped,
            ),
        ];
        let mut out = String::new();
        for (name, help, value) in counters {
            out.push_str(&format!(
                "# HELP nacre_core_{name}_total {help}.\n# TYPE nacre_core_{name}_total counter\nnacre_core_{name}_total{{core=\"{core}\"}} {value}\n"
            ));
        }
        out
    }
}

/// A request as a service sees it.
pub struct Request<'a> {
    pub header: Header,
    pub body: &'a [u8],
    pub peer: PeerAddr,
}

/// Everything a core owns, lent to the service on every call.
pub struct Core {
    // Drop order matters: storage first (it waits for I/O in flight on pool buffers),
    // then the pool, then the endpoint that registered the pool's memory.
    pub storage: Storage,
    pub pool: BufferPool,
    pub ep: Endpoint,
    pub metrics: CoreMetrics,
    sessions: Vec<PeerAddr>,
    /// The fabric name behind each session, so a repeated HELLO gets the same one.
    session_names: Vec<Vec<u8>>,
    max_sessions: usize,
    limits: Limits,
    tx: MemoryRegion,
    tx_free: Vec<u32>,
    tx_backlog: VecDeque<(PeerAddr, Vec<u8>)>,
    tx_backlog_limit: usize,
    msg_size: usize,
    encode: Vec<u8>,
}

/// What the engine's loop calls.
pub trait Service {
    /// A decoded request from a known session (HELLO and PING are answered by the reactor).
    fn on_request(&mut self, core: &mut Core, req: Request<'_>);
    /// A fabric operation the service posted (context without [`INTERNAL`]) completed.
    fn on_fabric(&mut self, core: &mut Core, done: Result<Completion, Box<CompletionError>>) {
        let _ = (core, done);
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
}

/// Work sent to a core from another thread.
pub enum CoreMsg {
    Call(Box<dyn FnOnce(&mut Core) + Send>),
    Stop,
}

impl Core {
    /// Sets up the reactor's own registrations next to the pool and storage.
    pub fn new(
        mut ep: Endpoint,
        pool: BufferPool,
        storage: Storage,
        cfg: &ReactorConfig,
    ) -> Result<Core, nacre_fabric::Error> {
        let tx = ep.register(
            Memory::anonymous(cfg.tx_slots * cfg.msg_size)?,
            Access::LOCAL,
        )?;
        Ok(Core {
            ep,
            pool,
            storage,
            metrics: CoreMetrics::default(),
            sessions: Vec::new(),
            session_names: Vec::new(),
            max_sessions: cfg.max_sessions,
            limits: Limits {
                max_body: (cfg.msg_size - HEADER_LEN) as u32,
            },
            tx,
            tx_free: (0..cfg.tx_slots as u32).rev().collect(),
            tx_backlog: VecDeque::with_capacity(cfg.tx_slots),
            tx_backlog_limit: cfg.tx_slots,
            msg_size: cfg.msg_size,
            encode: vec![0; cfg.msg_size],
        })
    }

    /// The peer behind a session id, if HELLO created it.
    pub fn peer(&self, session: u32) -> Option<PeerAddr> {
        self.sessions
            .get((session as usize).checked_sub(1)?)
            .copied()
    }

    /// Answers `to` with `status` (0 or -errno) and `body`. Small replies are injected;
    /// larger ones go from a registered transmit slot, or wait for one (bounded).
    pub fn reply(&mut self, peer: PeerAddr, to: &Header, status: i32, body: &[u8]) {
        let header = to.reply(status, body.len() as u32);
        let Some(len) = header.encode_frame(body, &mut self.encode) else {
            tracing::warn!(
                len = body.len(),
                "reply body larger than a message: dropped"
            );
            self.metrics.replies_dropped += 1;
            return;
        };
        self.send_frame(peer, len);
    }

    fn send_frame(&mut self, peer: PeerAddr, len: usize) {
        if len <= self.ep.inject_size() {
            match self.ep.inject(&self.encode[..len], peer) {
                Ok(()) => self.metrics.replies += 1,
                Err(e) => self.reply_failed(&e),
            }
            return;
        }
        let Some(slot) = self.tx_free.pop() else {
            if self.tx_backlog.len() < self.tx_backlog_limit {
                self.tx_backlog
                    .push_back((peer, self.encode[..len].to_vec()));
            } else {
                self.metrics.replies_dropped += 1;
            }
            return;
        };
        let offset = slot as usize * self.msg_size;
        let posted = self
            .tx
            .copy_in(offset, &self.encode[..len])
            .and_then(|_| self.tx.slice(offset, len))
            .and_then(|src| self.ep.post_send(src, peer, REPLY | slot as u64));
        match posted {
            Ok(()) => self.metrics.replies += 1,
            Err(e) => {
                self.tx_free.push(slot);
                self.reply_failed(&e);
            }
        }
    }

    fn reply_failed(&mut self, e: &nacre_fabric::Error) {
        self.metrics.replies_dropped += 1;
        tracing::warn!("reply not sent: {e}");
    }

    /// Sends replies that waited for a transmit slot.
    fn drain_tx_backlog(&mut self) -> bool {
        let mut moved = false;
        while !self.tx_free.is_empty() {
            let Some((peer, frame)) = self.tx_backlog.pop_front() else {
                break;
            };
            self.encode[..frame.len()].copy_from_slice(&frame);
            self.send_frame(peer, frame.len());
            moved = true;
        }
        moved
    }
}

/// A core's loop.
pub struct Reactor<S: Service> {
    pub core: Core,
    pub service: S,
    inbox: Receiver<CoreMsg>,
    rx: MemoryRegion,
    msg: Vec<u8>,
    idle: IdlePolicy,
    empty_turns: u32,
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
            core.ep.post_recv(
                rx.slice(slot * cfg.msg_size, cfg.msg_size)?,
                RECV | slot as u64,
            )?;
        }
        Ok(Reactor {
            core,
            service,
            inbox,
            rx,
            msg: vec![0; cfg.msg_size],
            idle: cfg.idle,
            empty_turns: 0,
            logged: 0,
            fabric: vec![
                Completion {
                    context: 0,
                    kind: OpKind::Send,
                    len: 0
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
        worked |= self.poll_storage();
        worked |= self.service.on_turn(&mut self.core);
        worked |= self.core.drain_tx_backlog();
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
        if worked {
            self.empty_turns = 0;
            return;
        }
        self.empty_turns = self.empty_turns.saturating_add(1);
        if self.idle.spins > 0 && self.empty_turns >= self.idle.spins {
            self.core.metrics.backoff_sleeps += 1;
            std::thread::sleep(self.idle.sleep);
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
            if c.context & INTERNAL == 0 {
                self.service.on_fabric(&mut self.core, Ok(c));
            } else if c.context & RECV == RECV {
                self.on_message(c);
            } else {
                self.core.tx_free.push((c.context & !REPLY) as u32);
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
        match c.context {
            Some(ctx) if ctx & RECV == RECV => {
                tracing::warn!("receive failed: {c}; reposting");
                self.repost((ctx & 0xffff_ffff) as usize);
            }
            Some(ctx) if ctx & INTERNAL != 0 => {
                tracing::warn!("reply failed: {c}");
                self.core.tx_free.push((ctx & !REPLY) as u32);
            }
            Some(_) => self.service.on_fabric(&mut self.core, Err(c.clone())),
            None => tracing::warn!("fabric error not tied to an operation: {c}"),
        }
    }

    fn repost(&mut self, slot: usize) {
        let size = self.msg.len();
        let posted = self
            .rx
            .slice(slot * size, size)
            .and_then(|dst| self.core.ep.post_recv(dst, RECV | slot as u64));
        if let Err(e) = posted {
            tracing::error!("cannot repost receive slot {slot}: {e}");
        }
    }

    /// A message arrived in receive slot `c.context`: copy it out, repost, handle it.
    fn on_message(&mut self, c: Completion) {
        let slot = (c.context & 0xffff_ffff) as usize;
        let len = c.len.min(self.msg.len());
        let copied = self
            .rx
            .copy_out(slot * self.msg.len(), &mut self.msg[..len]);
        self.repost(slot);
        if copied.is_err() {
            return;
        }
        let msg = std::mem::take(&mut self.msg);
        self.handle(&msg[..len]);
        self.msg = msg;
    }

    fn handle(&mut self, bytes: &[u8]) {
        let frame = match Frame::decode(bytes, &self.core.limits) {
            Ok(f) => f,
            Err(e) => return self.malformed(bytes, e),
        };
        let h = frame.header;
        if h.opcode == Opcode::HELLO {
            return self.hello(&h, frame.body);
        }
        let Some(peer) = self.core.peer(h.session) else {
            self.core.metrics.unknown_session += 1;
            self.log_once(LOG_UNKNOWN_SESSION, || {
                format!("message from unknown session {}: dropped", h.session)
            });
            return;
        };
        self.core.metrics.requests += 1;
        if h.opcode == Opcode::PING {
            return self.core.reply(peer, &h, 0, frame.body);
        }
        let req = Request {
            header: h,
            body: frame.body,
            peer,
        };
        self.service.on_request(&mut self.core, req);
    }

    /// A client's first message: its fabric name. The session id is its index + 1; a
    /// client that says HELLO again (a retry) gets its session back.
    fn hello(&mut self, h: &Header, name: &[u8]) {
        if let Some(i) = self.core.session_names.iter().position(|n| n == name) {
            let session = i as u32 + 1;
            let mut reply = *h;
            reply.session = session;
            let peer = self.core.sessions[i];
            return self.core.reply(peer, &reply, 0, &session.to_le_bytes());
        }
        if self.core.sessions.len() >= self.core.max_sessions {
            self.core.metrics.malformed += 1;
            let max = self.core.max_sessions;
            self.log_once(LOG_SESSIONS, || {
                format!("HELLO refused: {max} sessions already")
            });
            return;
        }
        match self.core.ep.insert_peer(name) {
            Ok(peer) => {
                self.core.sessions.push(peer);
                self.core.session_names.push(name.to_vec());
                let session = self.core.sessions.len() as u32;
                let mut reply = *h;
                reply.session = session;
                self.core.reply(peer, &reply, 0, &session.to_le_bytes());
            }
            Err(e) => {
                self.core.metrics.malformed += 1;
                self.log_once(LOG_BAD_NAME, || {
                    format!("HELLO with an unusable fabric name: {e}")
                });
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_as_prometheus_text() {
        let m = CoreMetrics {
            requests: 7,
            backoff_sleeps: 2,
            ..Default::default()
        };
        let text = m.prometheus(3);
        assert!(text.contains("# TYPE nacre_core_requests_total counter\n"));
        assert!(text.contains("nacre_core_requests_total{core=\"3\"} 7\n"));
        assert!(text.contains("nacre_core_backoff_sleeps_total{core=\"3\"} 2\n"));
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 10);
    }
}
