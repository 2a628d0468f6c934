//! The client's fabric side: one endpoint with sessions to any number of server cores.
//!
//! A [`ClientEndpoint`] owns one libfabric domain and RDM endpoint (the provider's
//! resources are per endpoint: one per client, or one per client thread, not one per
//! server). [`ClientEndpoint::connect`] says HELLO to a server core and returns the
//! [`SessionId`] that requests are routed by. Request ids are unique per endpoint, so a
//! reply names its request, and the request its session. Every request has a deadline;
//! progress runs whenever the caller waits, so RMA that servers drive against our
//! registrations advances while requests are outstanding.

use nacre_proto::hello::{HelloReply, HelloReq, NONCE_LEN, PROOF_LEN};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use nacre_fabric::{
    Access, BulkDesc, Completion, Endpoint, EndpointConfig, Memory, MemoryRegion, OpKind, PeerAddr,
    Selection,
};
use nacre_proto::packed::{slot, PackError};
use nacre_proto::{DecodeError, Flags, Frame, Header, Limits, Opcode, Outstanding, HEADER_LEN};

use crate::pieces::Assembly;
use crate::regcache::{RegCache, RegCacheConfig};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Fabric(#[from] nacre_fabric::Error),
    /// A server refused this client's key, or could not prove it holds the file
    /// system's (HELLO).
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("malformed reply: {0}")]
    Decode(#[from] DecodeError),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("request {id} got no reply within {after:?}")]
    Expired { id: u64, after: Duration },
    #[error("unknown session {0:?}")]
    UnknownSession(SessionId),
    /// The server answered with an error (a positive errno).
    #[error("server error: {}", std::io::Error::from_raw_os_error(*.0))]
    Status(i32),
    #[error("{0}")]
    Protocol(String),
    /// The OST's target is down in the cluster map (its server's lease lapsed and no
    /// server took the role): I/O to it fails at once, not after a request timeout.
    #[error("OST {0} is down")]
    TargetDown(u32),
    /// The server a request waited on left the cluster map (its role moved): the
    /// request may or may not have been applied.
    #[error("the server left the cluster map while the request waited")]
    ServerGone,
}

#[derive(Debug, Clone)]
pub struct RpcConfig {
    /// Requests in flight at most, over all sessions (receive and transmit slots).
    pub depth: usize,
    /// Largest message in either direction (header + inline body).
    pub msg_size: usize,
    /// Deadline of every request.
    pub timeout: Duration,
    /// How the caller's buffers are registered for servers' RMA.
    pub reg_cache: RegCacheConfig,
    /// A session unused for this long says HELLO again before its next request: a
    /// server reaps sessions unused for twice the default (engine's sessions module).
    pub session_refresh: Duration,
    /// The key HELLO proves this client holds (None: no key, for servers without one).
    pub key: Option<nacre_auth::Key>,
    /// Where the capabilities granted with layouts go, and object requests take theirs
    /// from (shared by a client's endpoints). None: requests carry none (servers).
    pub caps: Option<std::sync::Arc<crate::caps::Capabilities>>,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            depth: 16,
            msg_size: 4096,
            timeout: Duration::from_secs(30),
            reg_cache: RegCacheConfig::default(),
            session_refresh: nacre_proto::SESSION_REFRESH,
            key: None,
            caps: None,
        }
    }
}

/// A session with one server core, as [`ClientEndpoint::connect`] made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(u32);

/// A reply as the RPC layer receives it: its header (status, request id) and inline
/// body, which the layer above decodes (`nacre_proto::meta::Reply`, object replies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcReply {
    pub header: Header,
    pub body: Vec<u8>,
}

struct Session {
    peer: PeerAddr,
    /// The server's id for us (from its HELLO reply); 0 until then.
    remote: u32,
    name: Vec<u8>,
    /// When a request last went out on the session.
    used: Instant,
}

/// Receive slots first, transmit slots after them, in one registration. A slot is an
/// operation's context through [`nacre_proto::packed::slot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Recv(usize),
    Send(usize),
}

impl Slot {
    /// The slot as a context; an index that does not fit is an error (slots are
    /// bounded by the configured depth, so a bug or an absurd depth).
    #[inline]
    fn context(self) -> Result<u64, ClientError> {
        let packed = match self {
            Slot::Recv(i) => slot::RECV.pack([i as u64]),
            Slot::Send(i) => slot::SEND.pack([i as u64]),
        };
        packed.map_err(|e| ClientError::Protocol(format!("no context for {self:?}: {e}")))
    }

    /// The slot a completion's context names; a context that is none of ours (bits
    /// outside the layout) is an error.
    #[inline]
    fn of(context: u64) -> Result<Slot, PackError> {
        match slot::KIND.get(context) {
            slot::RECV_KIND => slot::RECV.unpack(context).map(|[i]| Slot::Recv(i as usize)),
            _ => slot::SEND.unpack(context).map(|[i]| Slot::Send(i as usize)),
        }
    }
}

pub struct ClientEndpoint {
    pub(crate) ep: Endpoint,
    sessions: Vec<Session>,
    msgs: MemoryRegion,
    cfg: RpcConfig,
    slots: usize,
    tx_free: Vec<usize>,
    /// Replies that arrived, with their session.
    replies: VecDeque<(SessionId, RpcReply)>,
    /// Requests sent and not answered: id -> (deadline, session).
    pending: Outstanding<SessionId>,
    /// Requests whose deadline passed, not reported yet.
    expired: VecDeque<u64>,
    /// Replies that come in pieces, until every piece has.
    pieces: Assembly,
    dropped: u64,
    /// Whether the provider checks RMA keys (every one but shm, whose RMA is a
    /// one-sided copy between processes: closing a registration does not stop it).
    keys_checked: bool,
    /// Without checked keys: requests that expired unanswered (id -> session), whose
    /// late reply says the server will not touch the memory they lent any more.
    late: BTreeMap<u64, SessionId>,
    late_replies: u64,
    frame: Vec<u8>,
    cache: RegCache,
    /// Polls in a row that found nothing (see `idle`).
    empty_polls: u32,
    /// Waiting on an answer known to be slow: past a while of empty polls, naps
    /// between them (see `idle`).
    patient: bool,
    /// Asked about a request's server while its answer is slow (see [`Watchdog`]).
    watchdog: Option<Watchdog>,
    /// The process that opened the endpoint: only it says BYE (see `Drop`).
    pid: u32,
}

/// Asked every [`WATCH_EVERY`] while a request waits for its answer, with the fabric
/// name of the server it went to: an error ends the wait with it (the server is known
/// down, or gone from the cluster map), None waits on. The client's recovery sets one
/// that looks at the cluster map, so a request to a dead server ends within a lease
/// and not a whole request timeout.
pub type Watchdog = Box<dyn FnMut(&[u8]) -> Option<ClientError> + Send>;

/// How long a closing endpoint progresses so that its BYEs leave.
const BYE_FLUSH: Duration = Duration::from_millis(2);

/// How often a waiting request's [`Watchdog`] is asked.
pub const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Expired requests remembered for their late replies (shm only); the oldest go first.
const LATE_MAX: usize = 4096;

/// How often a call holding a lent buffer looks whether the servers it waits for exited.
const PEER_LOOK_EVERY: Duration = Duration::from_millis(100);

/// How often a call holding a lent buffer for late answers says so.
const HOLD_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Empty polls in a row after which a waiting client yields the CPU between polls.
const YIELD_AFTER: u32 = 64;
/// Empty polls in a row (some milliseconds of them) after which a patient wait naps
/// [`PATIENT_NAP`] between polls.
const PATIENT_AFTER: u32 = 4096;
const PATIENT_NAP: Duration = Duration::from_micros(200);

impl ClientEndpoint {
    /// Opens the endpoint and posts its receives; no session yet.
    pub fn open(sel: &Selection, cfg: RpcConfig) -> Result<ClientEndpoint, ClientError> {
        // A post waits (progressing) a slice at a time: between slices the watchdog
        // is asked about the peer (a send to a dead peer over tcp;ofi_rxm is refused
        // with FI_EAGAIN until its connection is given up), up to the request's
        // deadline.
        let ep_cfg = EndpointConfig {
            post_timeout: cfg.timeout.min(WATCH_EVERY),
            ..Default::default()
        };
        let mut ep = nacre_fabric::open(sel, &ep_cfg)?;
        let keys_checked = ep.summary().provider != "shm";
        let slots = cfg.depth + 1;
        let msgs = ep.register(Memory::anonymous(2 * slots * cfg.msg_size)?, Access::LOCAL)?;
        for slot in 0..slots {
            ep.post_recv(
                msgs.slice(slot * cfg.msg_size, cfg.msg_size)?,
                Slot::Recv(slot).context()?,
            )?;
        }
        Ok(ClientEndpoint {
            ep,
            sessions: Vec::new(),
            msgs,
            tx_free: (0..slots).collect(),
            slots,
            replies: VecDeque::new(),
            pending: Outstanding::with_capacity(slots * 4),
            expired: VecDeque::new(),
            pieces: Assembly::default(),
            dropped: 0,
            keys_checked,
            late: BTreeMap::new(),
            late_replies: 0,
            frame: vec![0; cfg.msg_size],
            cache: RegCache::new(cfg.reg_cache.clone()),
            cfg,
            empty_polls: 0,
            patient: false,
            watchdog: None,
            pid: std::process::id(),
        })
    }

    /// Sets (or clears) the watchdog of slow requests.
    pub fn set_watchdog(&mut self, watchdog: Option<Watchdog>) {
        self.watchdog = watchdog;
    }

    /// Runs `f` with a descriptor through which servers may read `buf` (the data of a
    /// write). `f` sends the requests that carry it and waits for their replies.
    pub fn with_buffer<R>(
        &mut self,
        buf: &[u8],
        f: impl FnOnce(&mut Self, BulkDesc) -> Result<R, ClientError>,
    ) -> Result<R, ClientError> {
        let ptr = buf.as_ptr() as *mut u8;
        self.with_range(ptr, buf.len(), Access::PEER_READ, f)
    }

    /// Runs `f` with a descriptor through which servers may write `buf` (a read's
    /// destination).
    pub fn with_buffer_mut<R>(
        &mut self,
        buf: &mut [u8],
        f: impl FnOnce(&mut Self, BulkDesc) -> Result<R, ClientError>,
    ) -> Result<R, ClientError> {
        self.with_range(buf.as_mut_ptr(), buf.len(), Access::PEER_WRITE, f)
    }

    fn with_range<R>(
        &mut self,
        ptr: *mut u8,
        len: usize,
        access: Access,
        f: impl FnOnce(&mut Self, BulkDesc) -> Result<R, ClientError>,
    ) -> Result<R, ClientError> {
        // SAFETY: the caller's buffer is borrowed (shared for PEER_READ, exclusively for
        // PEER_WRITE) for this whole call; peers reach it only through the descriptor given to
        // `f`, whose requests are answered before it returns Ok. When `f` fails, a server
        // might still pull or push: the registration is closed (its key dies) before the
        // borrow ends, and where keys are not checked (shm) the call first waits until
        // every request it sent was answered or its server is gone (`hold_until_answered`).
        // The cache may keep it afterwards only on providers that resolve addresses at
        // each operation (RegCache::keeps), where no stale pages exist.
        let first = self.pending.peek_next_id();
        let desc = unsafe { self.cache.descriptor(&mut self.ep, ptr, len, access)? };
        let result = f(self, desc);
        if result.as_ref().is_err_and(|e| must_hold(e, access)) && !self.keys_checked {
            self.hold_until_answered(first);
        }
        if result.is_err() || !self.cache.keeps(&self.ep) {
            self.cache.forget(&mut self.ep, ptr, len);
        }
        result
    }

    /// Waits until no request sent from id `first` on can still reach the memory it
    /// lent: each was answered (a server moves data before it answers), late or not, or
    /// its server's process is gone. Only where the provider does not check RMA keys,
    /// so that closing the registration would not stop a late pull or push: there the
    /// caller's buffer must not be given back before. A server that stalls keeps the
    /// call here until it answers (a fenced one answers ESTALE) or dies; said every
    /// [`HOLD_REPORT_EVERY`].
    fn hold_until_answered(&mut self, first: u64) {
        let start = Instant::now();
        let (mut said, mut looked) = (start, start);
        loop {
            if looked.elapsed() >= PEER_LOOK_EVERY {
                looked = Instant::now();
                let sessions = &self.sessions;
                let gone =
                    |sid: &SessionId| nacre_fabric::shm_peer_gone(&sessions[sid.0 as usize].name);
                self.late.retain(|&id, sid| id < first || !gone(sid));
                // Still pending (not yet expired) to a server that exited: no answer
                // will come, nor any transfer.
                let dead: Vec<u64> = self
                    .pending
                    .iter_from(first)
                    .filter(|(_, sid)| gone(sid))
                    .map(|(id, _)| id)
                    .collect();
                for id in dead {
                    self.pending.complete(id);
                    self.pieces.forget(id);
                }
            }
            let late = self.late.range(first..).count();
            if late == 0 && !self.pending.any_from(first) {
                return;
            }
            if said.elapsed() >= HOLD_REPORT_EVERY {
                said = Instant::now();
                tracing::warn!(
                    "{late} request(s) unanswered for {:?}: the caller's buffer is held \
                     until their servers answer or exit",
                    start.elapsed()
                );
            }
            if let Err(e) = self.pump() {
                tracing::warn!("polling while holding a lent buffer: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            if self.empty_polls >= YIELD_AFTER {
                // Nothing is in a hurry here: poll gently.
                std::thread::sleep(Duration::from_millis(1));
            }
            self.expire();
        }
    }

    /// The registration cache's counters.
    pub fn reg_cache(&self) -> &RegCache {
        &self.cache
    }

    /// Reaches the server core at `server_name` (as it published it) and says HELLO.
    pub fn connect(&mut self, server_name: &[u8]) -> Result<SessionId, ClientError> {
        if let Some(i) = self.sessions.iter().position(|s| s.name == server_name) {
            return Ok(SessionId(i as u32));
        }
        let peer = self.ep.insert_peer(server_name)?;
        let sid = SessionId(self.sessions.len() as u32);
        self.sessions.push(Session {
            peer,
            remote: 0,
            name: server_name.to_vec(),
            used: Instant::now(),
        });
        self.hello(sid)?;
        Ok(sid)
    }

    /// Says HELLO on `sid` (with the proof that this client holds its key) and keeps
    /// the session id the server answers: the same one while the server keeps the
    /// session, a new one after it reaped it. The server's answer must prove it holds
    /// the file system key too.
    fn hello(&mut self, sid: SessionId) -> Result<(), ClientError> {
        let name = self.ep.name().to_vec();
        let nonce: [u8; NONCE_LEN] =
            nacre_auth::random_bytes().map_err(|e| ClientError::Auth(e.to_string()))?;
        let (principal, proof) = match &self.cfg.key {
            Some(k) => {
                let ex = nacre_auth::proof::hello(k.fsname(), k.principal(), &name, &nonce, &[]);
                (
                    k.principal().encode(),
                    k.prove(nacre_auth::Side::Client, &ex),
                )
            }
            None => (Vec::new(), [0; PROOF_LEN]),
        };
        let body = HelloReq {
            name: &name,
            principal: &principal,
            nonce,
            proof,
        }
        .encode()
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let reply = self.request(sid, Opcode::HELLO, &body)?;
        match -reply.header.status {
            0 => {}
            libc::EACCES => {
                return Err(ClientError::Auth(match &self.cfg.key {
                    Some(k) => format!("the server refused {}", k.principal()),
                    None => "the server serves only clients with a key (NACRE_KEY)".into(),
                }))
            }
            // Refused (no room for another session): the server's reason.
            errno => return Err(ClientError::Status(errno)),
        }
        let welcome = HelloReply::decode(&reply.body)
            .map_err(|e| ClientError::Protocol(format!("bad HELLO reply: {e}")))?;
        if let Some(k) = &self.cfg.key {
            let id = welcome.session.to_le_bytes();
            let ex = nacre_auth::proof::hello(k.fsname(), k.principal(), &name, &nonce, &id);
            k.check_server(&ex, &welcome.proof)
                .map_err(|e| ClientError::Auth(e.to_string()))?;
        }
        self.sessions[sid.0 as usize].remote = welcome.session;
        Ok(())
    }

    /// Requests this endpoint keeps in flight at most.
    /// The capabilities this endpoint's requests carry, if it keeps any.
    pub fn capabilities(&self) -> Option<&crate::caps::Capabilities> {
        self.cfg.caps.as_deref()
    }

    pub fn depth(&self) -> usize {
        self.cfg.depth
    }

    /// Largest message in either direction.
    pub fn msg_size(&self) -> usize {
        self.cfg.msg_size
    }

    /// The endpoint, e.g. to register buffers servers reach by RMA.
    pub fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.ep
    }

    /// The server's id for this client on session `sid`.
    pub fn remote_session(&self, sid: SessionId) -> Option<u32> {
        self.sessions.get(sid.0 as usize).map(|s| s.remote)
    }

    /// Sends a request on `sid` and waits for its reply (progressing meanwhile).
    pub fn request(
        &mut self,
        sid: SessionId,
        op: Opcode,
        body: &[u8],
    ) -> Result<RpcReply, ClientError> {
        let id = self.send(sid, op, body)?;
        self.wait(id)
    }

    /// Waits for the reply to request `id` (its deadline was set when it was sent);
    /// replies to other requests that arrive meanwhile are kept for their callers.
    pub fn wait(&mut self, id: u64) -> Result<RpcReply, ClientError> {
        let mut watch = None;
        loop {
            if let Some(at) = self
                .replies
                .iter()
                .position(|r| r.1.header.request_id == id)
            {
                return Ok(self.replies.remove(at).expect("found").1);
            }
            if !self.pending.contains(id) {
                self.expired.retain(|&e| e != id);
                return Err(ClientError::Expired {
                    id,
                    after: self.cfg.timeout,
                });
            }
            self.pump()?;
            let now = self.expire();
            if self.watchdog.is_some() {
                // Asked first once the request has waited WATCH_EVERY here (on the
                // clock `expire` read anyway), then every WATCH_EVERY.
                let due = *watch.get_or_insert(now + WATCH_EVERY);
                if now >= due {
                    watch = Some(now + WATCH_EVERY);
                    if let Some(e) = self.ask_watchdog(id) {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Asks the watchdog about pending request `id`'s server; when it says to stop
    /// waiting, the request is given up as if it had expired (a late answer is still
    /// awaited where a lent buffer needs it).
    fn ask_watchdog(&mut self, id: u64) -> Option<ClientError> {
        let sid = *self.pending.token(id)?;
        let name = &self.sessions[sid.0 as usize].name;
        let err = self.watchdog.as_mut()?(name)?;
        self.pending.complete(id);
        self.pieces.forget(id);
        self.remember_late(id, sid);
        Some(err)
    }

    /// Sets the deadline of the requests sent from now on; returns the one before.
    pub fn set_timeout(&mut self, timeout: std::time::Duration) -> std::time::Duration {
        std::mem::replace(&mut self.cfg.timeout, timeout)
    }

    /// Waits that follow nap between polls once they have lasted (for answers known to
    /// be slow); returns the previous setting.
    pub fn set_patient(&mut self, patient: bool) -> bool {
        std::mem::replace(&mut self.patient, patient)
    }

    /// Sends a request without waiting (inject when it fits, else from a transmit slot)
    /// and returns its id. Its reply must come within the configured timeout, or
    /// [`ClientEndpoint::next_reply`] reports it expired.
    pub fn send(&mut self, sid: SessionId, op: Opcode, body: &[u8]) -> Result<u64, ClientError> {
        let id = self.pending.next_id();
        self.send_with_id(sid, op, id, body)?;
        Ok(id)
    }

    /// [`ClientEndpoint::send`] with a request id of the caller's (unique among those
    /// outstanding on this endpoint).
    pub fn send_with_id(
        &mut self,
        sid: SessionId,
        op: Opcode,
        id: u64,
        body: &[u8],
    ) -> Result<(), ClientError> {
        let session = self
            .sessions
            .get_mut(sid.0 as usize)
            .ok_or(ClientError::UnknownSession(sid))?;
        let mut now = Instant::now();
        let unused = now.saturating_duration_since(session.used);
        session.used = now;
        if session.remote != 0 && unused > self.cfg.session_refresh {
            // The server may have reaped the session meanwhile.
            self.hello(sid)?;
            now = Instant::now();
        }
        let session = &self.sessions[sid.0 as usize];
        let (peer, remote) = (session.peer, session.remote);
        let mut h = Header::request(op, id, 0);
        h.session = remote;
        let n = h
            .encode_frame(body, &mut self.frame)
            .ok_or_else(|| ClientError::Protocol("request body larger than a message".into()))?;
        self.pending
            .insert(id, now, self.cfg.timeout, sid)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if let Err(e) = self.send_frame(sid, peer, n) {
            self.pending.complete(id);
            return Err(e);
        }
        Ok(())
    }

    /// Sends arbitrary bytes as one message on `sid` (tests of the server's decoder); a
    /// reply with request id `expect` is awaited, any other is dropped.
    pub fn send_raw(
        &mut self,
        sid: SessionId,
        bytes: &[u8],
        expect: Option<u64>,
    ) -> Result<(), ClientError> {
        let peer = self
            .sessions
            .get(sid.0 as usize)
            .ok_or(ClientError::UnknownSession(sid))?
            .peer;
        if bytes.len() > self.frame.len() {
            return Err(ClientError::Protocol("message too large".into()));
        }
        if let Some(id) = expect {
            self.pending
                .insert(id, Instant::now(), self.cfg.timeout, sid)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
        }
        self.frame[..bytes.len()].copy_from_slice(bytes);
        self.send_frame(sid, peer, bytes.len())
    }

    /// Posts the frame's first `n` bytes to `peer` (of session `sid`). A post the
    /// provider keeps refusing is tried again until the request's deadline, unless the
    /// watchdog says the peer is gone: the request never left, so its caller may send
    /// it again anywhere.
    fn send_frame(&mut self, sid: SessionId, peer: PeerAddr, n: usize) -> Result<(), ClientError> {
        let start = Instant::now();
        loop {
            match self.post_frame(peer, n) {
                Err(ClientError::Fabric(e))
                    if matches!(e.kind(), nacre_fabric::ErrorKind::Timeout { .. }) =>
                {
                    if start.elapsed() > self.cfg.timeout {
                        let what = match e.kind() {
                            nacre_fabric::ErrorKind::Timeout { what, .. } => *what,
                            _ => "a post",
                        };
                        let secs = start.elapsed().as_secs_f64();
                        let e = nacre_fabric::Error::from(nacre_fabric::ErrorKind::Timeout {
                            what,
                            secs,
                        });
                        return Err(e.into());
                    }
                    let name = &self.sessions[sid.0 as usize].name;
                    if let Some(verdict) = self.watchdog.as_mut().and_then(|w| w(name)) {
                        return Err(verdict);
                    }
                }
                other => return other,
            }
        }
    }

    fn post_frame(&mut self, peer: PeerAddr, n: usize) -> Result<(), ClientError> {
        if n <= self.ep.inject_size() {
            return Ok(self.ep.inject(&self.frame[..n], peer)?);
        }
        let start = Instant::now();
        while self.tx_free.is_empty() {
            self.pump()?;
            if start.elapsed() > self.cfg.timeout {
                return Err(ClientError::Timeout(self.cfg.timeout));
            }
        }
        let slot = self.tx_free.pop().expect("checked");
        let at = (self.slots + slot) * self.cfg.msg_size;
        self.msgs.copy_in(at, &self.frame[..n])?;
        let src = self.msgs.slice(at, n)?;
        let context = match Slot::Send(slot).context() {
            Ok(context) => context,
            Err(e) => {
                self.tx_free.push(slot);
                return Err(e);
            }
        };
        self.ep.post_send(src, peer, context)?;
        Ok(())
    }

    /// Waits for the next reply, whatever its request and session; fails when a request
    /// outlives its deadline (the server is gone or dropped it), or after the timeout
    /// with nothing outstanding.
    pub fn next_reply(&mut self) -> Result<(SessionId, RpcReply), ClientError> {
        let start = Instant::now();
        loop {
            if let Some(r) = self.replies.pop_front() {
                return Ok(r);
            }
            self.pump()?;
            self.expire();
            if let Some(id) = self.expired.pop_front() {
                return Err(ClientError::Expired {
                    id,
                    after: self.cfg.timeout,
                });
            }
            if self.pending.is_empty() && start.elapsed() > self.cfg.timeout {
                return Err(ClientError::Timeout(self.cfg.timeout));
            }
        }
    }

    /// Moves the requests past their deadline to the expired ones; returns the time
    /// it read.
    fn expire(&mut self) -> Instant {
        let now = Instant::now();
        for (id, sid) in self.pending.expire(now) {
            self.pieces.forget(id);
            self.expired.push_back(id);
            self.remember_late(id, sid);
        }
        now
    }

    /// Without checked keys: remembers a request given up unanswered, whose late
    /// answer a lent buffer waits for.
    fn remember_late(&mut self, id: u64, sid: SessionId) {
        if !self.keys_checked {
            self.late.insert(id, sid);
            if self.late.len() > LATE_MAX {
                self.late.pop_first();
            }
        }
    }

    /// Progresses for up to `wait`; returns how many replies are queued.
    pub fn poll_for(&mut self, wait: Duration) -> Result<usize, ClientError> {
        let start = Instant::now();
        while start.elapsed() < wait {
            self.pump()?;
        }
        Ok(self.replies.len())
    }

    /// One poll: replies are decoded and queued, transmit slots freed, receives reposted.
    /// A bad or unexpected message is dropped on its own: the rest of the batch, and the
    /// receive it arrived in, go on.
    fn pump(&mut self) -> Result<(), ClientError> {
        let mut done = [Completion {
            context: 0,
            kind: OpKind::Send,
            len: 0,
            source: None,
        }; 16];
        let n = match self.ep.poll(&mut done) {
            Ok(n) => n,
            Err(e) => return self.failed_completion(e),
        };
        self.idle(n == 0);
        for c in &done[..n] {
            // A context that is none of ours (a provider's bug) is said and skipped:
            // the rest of the batch goes on.
            match Slot::of(c.context) {
                Ok(Slot::Send(slot)) => self.tx_free.push(slot),
                Ok(Slot::Recv(slot)) => self.take_reply(slot, c.len)?,
                Err(e) => self.bad_context(e),
            }
        }
        Ok(())
    }

    /// A waiting client polls, but past [`YIELD_AFTER`] empty polls in a row it offers
    /// the CPU to any other runnable thread between polls. Where a client shares CPUs
    /// with server cores (one machine, `nacre up`), pure spinning would hold a CPU the
    /// server needs to answer it for a whole scheduler slice; where nothing else wants
    /// the CPU, sched_yield returns at once and the wait is still a poll loop.
    fn idle(&mut self, empty: bool) {
        match empty {
            false => self.empty_polls = 0,
            true => {
                self.empty_polls = self.empty_polls.saturating_add(1);
                if self.patient && self.empty_polls >= PATIENT_AFTER {
                    // An answer that takes long anyway (a load from a data
                    // repository): a poll loop would take the CPU the servers
                    // preparing it need, on a machine they share.
                    std::thread::sleep(PATIENT_NAP);
                } else if self.empty_polls >= YIELD_AFTER {
                    std::thread::yield_now();
                }
            }
        }
    }

    /// An error completion: a failed send gives its slot back (its request will expire),
    /// a failed receive is reposted; anything else is the caller's error.
    fn failed_completion(&mut self, e: nacre_fabric::Error) -> Result<(), ClientError> {
        let nacre_fabric::ErrorKind::Completion(c) = e.kind() else {
            return Err(e.into());
        };
        match c.context.map(Slot::of) {
            Some(Ok(Slot::Send(slot))) => self.tx_free.push(slot),
            Some(Ok(Slot::Recv(slot))) => self.repost(slot)?,
            Some(Err(bad)) => self.bad_context(bad),
            None => return Err(e.into()),
        }
        Ok(())
    }

    /// A completion whose context names no slot: counted with the dropped messages.
    #[cold]
    fn bad_context(&mut self, e: PackError) {
        self.dropped += 1;
        tracing::error!("completion with a bad context: {e}");
    }

    fn take_reply(&mut self, slot: usize, len: usize) -> Result<(), ClientError> {
        let size = self.cfg.msg_size;
        let mut bytes = vec![0; len.min(size)];
        self.msgs.copy_out(slot * size, &mut bytes)?;
        self.repost(slot)?;
        let limits = Limits {
            max_body: (size - HEADER_LEN) as u32,
        };
        // Dropped: a message that is no frame, and a reply to nothing we wait for (late,
        // duplicate or forged).
        let Ok(frame) = Frame::decode(&bytes, &limits) else {
            self.dropped += 1;
            return Ok(());
        };
        let mut header = frame.header;
        let id = header.request_id;
        // Pieces are kept only for a pending request; a bad one gives its reply up (the
        // request expires).
        let max = limits.max_body as usize;
        let joined = match Assembly::is_piece(&header) {
            false => Ok(Some(frame.body.to_vec())),
            true if !self.pending.contains(id) => Err(()),
            true => self.pieces.add(&header, frame.body, max).map_err(drop),
        };
        let body = match joined {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(()), // more pieces to come
            Err(()) => {
                self.dropped += 1;
                return Ok(());
            }
        };
        let Some(sid) = self.pending.complete(id) else {
            match self.late.remove(&id) {
                Some(_) => self.late_replies += 1,
                None => self.dropped += 1,
            }
            return Ok(());
        };
        header.flags = Flags(header.flags.0 & !Flags::MORE.0);
        header.fragment = 0;
        header.body_len = body.len() as u32;
        self.replies.push_back((sid, RpcReply { header, body }));
        Ok(())
    }

    fn repost(&mut self, slot: usize) -> Result<(), ClientError> {
        let size = self.cfg.msg_size;
        let dst = self.msgs.slice(slot * size, size)?;
        Ok(self.ep.post_recv(dst, Slot::Recv(slot).context()?)?)
    }

    /// Replies that came after their request expired (counted on shm only, where the
    /// client waits for them before giving a lent buffer back).
    pub fn late_replies(&self) -> u64 {
        self.late_replies
    }

    /// Messages dropped because they were malformed or answered nothing pending.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl ClientEndpoint {
    /// Says BYE on every session, so that each server core ends it at its next look
    /// instead of at its idle time (10 min): a tcp or sockets server cannot otherwise
    /// tell that a client process exited, and short-lived clients would hold its
    /// sessions and address-vector entries meanwhile. Best effort and bounded: one
    /// inject per session, never waiting on a full queue or a dead server, then a
    /// moment of progress so that the messages leave before the endpoint closes. Not to
    /// shm peers of this process or gone.
    fn say_bye(&mut self) {
        self.ep.set_post_timeout(Duration::ZERO);
        let mut said = false;
        for i in 0..self.sessions.len() {
            let (peer, remote) = (self.sessions[i].peer, self.sessions[i].remote);
            // An shm peer maps its region into ours: a server of this very process (a
            // test's) may have unmapped it already, and a dead one's is reaped anyway.
            let name = &self.sessions[i].name;
            let shm_skip = nacre_fabric::shm_peer_pid(name).is_some_and(|pid| pid == self.pid)
                || nacre_fabric::shm_peer_gone(name);
            if remote == 0 || shm_skip {
                continue;
            }
            let mut h = Header::request(Opcode::BYE, 0, 0);
            h.session = remote;
            let Some(n) = h.encode_frame(&[], &mut self.frame) else {
                continue;
            };
            said |= n <= self.ep.inject_size() && self.ep.inject(&self.frame[..n], peer).is_ok();
        }
        if said {
            let _ = self.poll_for(BYE_FLUSH);
        }
    }
}

impl Drop for ClientEndpoint {
    fn drop(&mut self) {
        // A forked child's copy of the endpoint must not end its parent's sessions.
        if std::process::id() == self.pid {
            self.say_bye();
        }
    }
}

/// A client endpoint with one session: the common case of tools and tests that talk to
/// one server core.
pub struct RpcClient {
    inner: ClientEndpoint,
    sid: SessionId,
}

impl RpcClient {
    /// Opens an endpoint, reaches the core at `server_name` and says HELLO.
    pub fn connect(
        sel: &Selection,
        server_name: &[u8],
        cfg: RpcConfig,
    ) -> Result<RpcClient, ClientError> {
        let mut inner = ClientEndpoint::open(sel, cfg)?;
        let sid = inner.connect(server_name)?;
        Ok(RpcClient { inner, sid })
    }

    pub fn endpoint(&mut self) -> &mut Endpoint {
        self.inner.endpoint()
    }

    /// The server's id for this client.
    pub fn session(&self) -> u32 {
        self.inner.remote_session(self.sid).unwrap_or(0)
    }

    pub fn request(&mut self, op: Opcode, body: &[u8]) -> Result<RpcReply, ClientError> {
        self.inner.request(self.sid, op, body)
    }

    pub fn send(&mut self, op: Opcode, id: u64, body: &[u8]) -> Result<(), ClientError> {
        self.inner.send_with_id(self.sid, op, id, body)
    }

    pub fn send_raw(&mut self, bytes: &[u8], expect: Option<u64>) -> Result<(), ClientError> {
        self.inner.send_raw(self.sid, bytes, expect)
    }

    pub fn next_reply(&mut self) -> Result<RpcReply, ClientError> {
        Ok(self.inner.next_reply()?.1)
    }

    pub fn poll_for(&mut self, wait: Duration) -> Result<usize, ClientError> {
        self.inner.poll_for(wait)
    }

    pub fn dropped(&self) -> u64 {
        self.inner.dropped()
    }
}

/// Whether a call that failed with `e`, having lent a buffer with `access`, must wait
/// for its servers before it gives the buffer back (where keys are not checked). A
/// buffer servers may only read (a write's source) need not wait for a server whose
/// target the map shows down, or that left the map: its lease ended, so it checks its
/// epoch and lease before a pulled byte reaches the disk and refuses; a late pull reads
/// bytes nobody will keep. A buffer servers may write (a read's destination) always
/// waits: a push posted before a pause could land after it.
fn must_hold(e: &ClientError, access: Access) -> bool {
    let fenced = matches!(e, ClientError::TargetDown(_) | ClientError::ServerGone);
    !(fenced && access == Access::PEER_READ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_through_contexts() {
        for s in [Slot::Recv(0), Slot::Recv(99), Slot::Send(0), Slot::Send(7)] {
            assert_eq!(Slot::of(s.context().unwrap()), Ok(s));
        }
        let top = u32::MAX as usize;
        assert_eq!(
            Slot::of(Slot::Send(top).context().unwrap()),
            Ok(Slot::Send(top))
        );
        assert!(
            Slot::Recv(top + 1).context().is_err(),
            "refused, never masked"
        );
        assert!(Slot::of(1 << 33).is_err(), "bits outside the layout");
        assert!(Slot::of(u64::MAX).is_err());
    }
}
