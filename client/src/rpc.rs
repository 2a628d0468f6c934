//! A session with one server core.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nacre_fabric::{
    Access, Completion, Endpoint, EndpointConfig, Memory, MemoryRegion, OpKind, PeerAddr, Selection,
};
use nacre_proto::{DecodeError, Frame, Header, Limits, Opcode, Pending, HEADER_LEN};

const RECV: u64 = 1 << 40;
const SEND: u64 = 1 << 41;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Fabric(#[from] nacre_fabric::Error),
    #[error("malformed reply: {0}")]
    Decode(#[from] DecodeError),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("request {id} got no reply within {after:?}")]
    Expired { id: u64, after: Duration },
    #[error("{0}")]
    Protocol(String),
}

#[derive(Debug, Clone)]
pub struct RpcConfig {
    /// Requests in flight at most (receive and transmit slots).
    pub depth: usize,
    /// Largest message in either direction (header + inline body).
    pub msg_size: usize,
    pub timeout: Duration,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            depth: 16,
            msg_size: 4096,
            timeout: Duration::from_secs(30),
        }
    }
}

/// A reply: its header (status, request id) and inline body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub header: Header,
    pub body: Vec<u8>,
}

pub struct RpcClient {
    ep: Endpoint,
    server: PeerAddr,
    session: u32,
    msgs: MemoryRegion,
    cfg: RpcConfig,
    tx_free: Vec<usize>,
    replies: VecDeque<Reply>,
    /// Requests sent and not answered, with their deadlines.
    pending: Pending<Opcode>,
    /// Requests whose deadline passed, not reported yet.
    expired: VecDeque<u64>,
    dropped: u64,
    frame: Vec<u8>,
    next_id: u64,
}

impl RpcClient {
    /// Opens an endpoint, reaches the core at `server_name` and says HELLO.
    pub fn connect(
        sel: &Selection,
        server_name: &[u8],
        cfg: RpcConfig,
    ) -> Result<RpcClient, ClientError> {
        let mut ep = nacre_fabric::open(sel, &EndpointConfig::default())?;
        let server = ep.insert_peer(server_name)?;
        let slots = cfg.depth + 1;
        let msgs = ep.register(Memory::anonymous(2 * slots * cfg.msg_size)?, Access::LOCAL)?;
        for slot in 0..slots {
            ep.post_recv(
                msgs.slice(slot * cfg.msg_size, cfg.msg_size)?,
                RECV | slot as u64,
            )?;
        }
        let mut c = RpcClient {
            ep,
            server,
            session: 0,
            msgs,
            tx_free: (0..slots).collect(),
            replies: VecDeque::new(),
            pending: Pending::with_capacity(slots * 4),
            expired: VecDeque::new(),
            dropped: 0,
            frame: vec![0; cfg.msg_size],
            cfg,
            next_id: 1,
        };
        let name = c.ep.name().to_vec();
        let reply = c.request(Opcode::HELLO, &name)?;
        let session: [u8; 4] = reply
            .body
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                ClientError::Protocol(format!("bad HELLO reply (status {})", reply.header.status))
            })?;
        c.session = u32::from_le_bytes(session);
        Ok(c)
    }

    /// The endpoint, e.g. to register buffers the server reaches by RMA.
    pub fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.ep
    }

    pub fn session(&self) -> u32 {
        self.session
    }

    /// Sends a request and waits for its reply.
    pub fn request(&mut self, op: Opcode, body: &[u8]) -> Result<Reply, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(op, id, body)?;
        let start = Instant::now();
        loop {
            if let Some(at) = self.replies.iter().position(|r| r.header.request_id == id) {
                return Ok(self.replies.remove(at).expect("found"));
            }
            self.pump()?;
            if start.elapsed() > self.cfg.timeout {
                self.pending.complete(id);
                return Err(ClientError::Expired {
                    id,
                    after: self.cfg.timeout,
                });
            }
        }
    }

    /// Sends a request without waiting (inject when it fits, else from a transmit slot).
    /// Its reply must come within the configured timeout, or [`RpcClient::next_reply`]
    /// reports it expired.
    pub fn send(&mut self, op: Opcode, id: u64, body: &[u8]) -> Result<(), ClientError> {
        let mut h = Header::request(op, id, 0);
        h.session = self.session;
        let n = h
            .encode_frame(body, &mut self.frame)
            .ok_or_else(|| ClientError::Protocol("request body larger than a message".into()))?;
        self.pending
            .insert(id, Instant::now(), self.cfg.timeout, op)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if let Err(e) = self.send_raw_len(n) {
            self.pending.complete(id);
            return Err(e);
        }
        Ok(())
    }

    /// Sends arbitrary bytes as one message (tests of the server's decoder); a reply with
    /// request id `expect` is awaited, any other is dropped.
    pub fn send_raw(&mut self, bytes: &[u8], expect: Option<u64>) -> Result<(), ClientError> {
        if bytes.len() > self.frame.len() {
            return Err(ClientError::Protocol("message too large".into()));
        }
        if let Some(id) = expect {
            self.pending
                .insert(id, Instant::now(), self.cfg.timeout, Opcode(0))
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
        }
        self.frame[..bytes.len()].copy_from_slice(bytes);
        self.send_raw_len(bytes.len())
    }

    fn send_raw_len(&mut self, n: usize) -> Result<(), ClientError> {
        if n <= self.ep.inject_size() {
            return Ok(self.ep.inject(&self.frame[..n], self.server)?);
        }
        let start = Instant::now();
        while self.tx_free.is_empty() {
            self.pump()?;
            if start.elapsed() > self.cfg.timeout {
                return Err(ClientError::Timeout(self.cfg.timeout));
            }
        }
        let slot = self.tx_free.pop().expect("checked");
        let at = (self.cfg.depth + 1 + slot) * self.cfg.msg_size;
        self.msgs.copy_in(at, &self.frame[..n])?;
        self.ep
            .post_send(self.msgs.slice(at, n)?, self.server, SEND | slot as u64)?;
        Ok(())
    }

    /// Waits for the next reply, whatever its request; fails when a request outlives its
    /// deadline (the server is gone or dropped it), or after the timeout with nothing sent.
    pub fn next_reply(&mut self) -> Result<Reply, ClientError> {
        let start = Instant::now();
        loop {
            if let Some(r) = self.replies.pop_front() {
                return Ok(r);
            }
            self.pump()?;
            let now = Instant::now();
            self.expired
                .extend(self.pending.expire(now).into_iter().map(|(id, _)| id));
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

    /// Polls for replies for up to `wait`; returns how many are queued.
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
        }; 16];
        let n = match self.ep.poll(&mut done) {
            Ok(n) => n,
            Err(e) => return self.failed_completion(e),
        };
        for c in &done[..n] {
            let slot = (c.context & 0xffff) as usize;
            if c.context & SEND != 0 {
                self.tx_free.push(slot);
            } else {
                self.take_reply(slot, c.len)?;
            }
        }
        Ok(())
    }

    /// An error completion: a failed send gives its slot back (its request will expire),
    /// a failed receive is reposted; anything else is the caller's error.
    fn failed_completion(&mut self, e: nacre_fabric::Error) -> Result<(), ClientError> {
        let nacre_fabric::ErrorKind::Completion(c) = e.kind() else {
            return Err(e.into());
        };
        match c.context {
            Some(ctx) if ctx & SEND != 0 => self.tx_free.push((ctx & 0xffff) as usize),
            Some(ctx) if ctx & RECV != 0 => self.repost((ctx & 0xffff) as usize)?,
            _ => return Err(e.into()),
        }
        Ok(())
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
        if self.pending.complete(frame.header.request_id).is_none() {
            self.dropped += 1;
            return Ok(());
        }
        self.replies.push_back(Reply {
            header: frame.header,
            body: frame.body.to_vec(),
        });
        Ok(())
    }

    fn repost(&mut self, slot: usize) -> Result<(), ClientError> {
        let size = self.cfg.msg_size;
        Ok(self
            .ep
            .post_recv(self.msgs.slice(slot * size, size)?, RECV | slot as u64)?)
    }

    /// Messages dropped because they were malformed or answered nothing pending.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}
