//! Every connection of the MGS on one event-loop thread (mio, edge-triggered).
//!
//! One thread answers all requests in the order they become ready: no thread per
//! connection to wake and schedule, which is what a map fetch would otherwise wait for
//! behind a hundred renewing servers on a small machine. Each connection keeps a read
//! buffer (at most one whole request), a write buffer (bounded: a client that does not
//! read its replies stops being read), the time its current request started (for the
//! request deadline), when it was last heard (idle timeout), and a parked map long poll.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use nacre_proto::bootstrap::{
    BootHeader, BootOp, BootReply, BootRequest, BOOT_HEADER_LEN, MAX_REQUEST_BODY, MAX_WAIT_MS,
};

use super::auth::Standing;
use super::{answer, Shared};

const LISTENER: Token = Token(usize::MAX - 1);
pub(super) const WAKER: Token = Token(usize::MAX - 2);
/// Largest read buffer: one whole request of the largest size.
const READ_LIMIT: usize = BOOT_HEADER_LEN + MAX_REQUEST_BODY as usize;
/// Replies not yet taken by the client beyond which its requests are not read.
const WRITE_LIMIT: usize = 8 << 20;
/// How often deadlines are looked at.
const SWEEP: Duration = Duration::from_millis(20);

struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    /// When the request in `rbuf` began to arrive.
    started: Option<Instant>,
    last_seen: Instant,
    /// A map long poll waiting for a version above `.0` until `.1`.
    parked: Option<(u64, Instant)>,
    peer: Option<std::net::IpAddr>,
    standing: Standing,
    /// The challenge said TLS follows: once it is written, the connection turns TLS.
    start_tls: bool,
    /// The TLS configuration when this MGS runs TLS (taken when the session starts).
    tls_config: Option<Arc<rustls::ServerConfig>>,
    tls: Option<Box<rustls::ServerConnection>>,
}

impl Conn {
    fn pending_write(&self) -> usize {
        self.wbuf.len() - self.wpos
    }
}

/// Serves until `shared.stop`; `poll` and its waker were made by the caller.
pub(super) fn run(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut poll: Poll,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut conns: HashMap<Token, Conn> = HashMap::new();
    let mut next_token = 0usize;
    let mut last_sweep = Instant::now();
    let mut seen_version = shared.version.load(Ordering::SeqCst);
    while !shared.stop.load(Ordering::SeqCst) {
        if let Err(e) = poll.poll(&mut events, Some(SWEEP)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events {
            match ev.token() {
                LISTENER => accept(&mut listener, &poll, &shared, &mut conns, &mut next_token),
                WAKER => {}
                t => {
                    let Some(c) = conns.get_mut(&t) else { continue };
                    if service(c, &shared).is_err() {
                        close(&poll, &mut conns, t);
                    }
                }
            }
        }
        let version = shared.version.load(Ordering::SeqCst);
        let now = Instant::now();
        if version != seen_version || now - last_sweep >= SWEEP {
            seen_version = version;
            last_sweep = now;
            sweep(&poll, &shared, &mut conns, now);
        }
    }
    Ok(())
}

fn accept(
    listener: &mut TcpListener,
    poll: &Poll,
    shared: &Shared,
    conns: &mut HashMap<Token, Conn>,
    next: &mut usize,
) {
    loop {
        let (mut stream, from) = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("mgs: accept: {e}");
                return;
            }
        };
        if conns.len() >= shared.cfg.max_connections {
            tracing::warn!(
                "mgs: {} connections open; closing a new one",
                shared.cfg.max_connections
            );
            continue;
        }
        let token = Token(*next);
        *next = (*next + 1) % (usize::MAX - 16);
        let _ = stream.set_nodelay(true);
        if poll
            .registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            continue;
        }
        conns.insert(
            token,
            Conn {
                stream,
                rbuf: Vec::new(),
                wbuf: Vec::new(),
                wpos: 0,
                started: None,
                last_seen: Instant::now(),
                parked: None,
                peer: Some(from.ip()),
                standing: Standing::Stranger,
                start_tls: false,
                tls_config: shared.tls.clone(),
                tls: None,
            },
        );
    }
}

fn close(poll: &Poll, conns: &mut HashMap<Token, Conn>, t: Token) {
    if let Some(mut c) = conns.remove(&t) {
        let _ = poll.registry().deregister(&mut c.stream);
    }
}

/// Reads, answers and writes until nothing moves. Err: close the connection.
fn service(c: &mut Conn, shared: &Shared) -> Result<(), ()> {
    loop {
        let read = fill(c)?;
        answer_ready(c, shared)?;
        let wrote = flush(c)?;
        if !read && !wrote {
            return Ok(());
        }
    }
}

/// Reads what is there, up to one whole request ahead. Ok(true): something came.
fn fill(c: &mut Conn) -> Result<bool, ()> {
    if c.tls.is_some() {
        return fill_tls(c);
    }
    let mut got = false;
    let mut chunk = [0u8; 16 * 1024];
    while c.rbuf.len() < READ_LIMIT && c.parked.is_none() && c.pending_write() < WRITE_LIMIT {
        let room = (READ_LIMIT - c.rbuf.len()).min(chunk.len());
        match c.stream.read(&mut chunk[..room]) {
            Ok(0) => return Err(()),
            Ok(n) => {
                if c.rbuf.is_empty() {
                    c.started = Some(Instant::now());
                }
                c.rbuf.extend_from_slice(&chunk[..n]);
                c.last_seen = Instant::now();
                got = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    Ok(got)
}

/// [`fill`] through the connection's TLS session.
fn fill_tls(c: &mut Conn) -> Result<bool, ()> {
    let mut got = false;
    while c.rbuf.len() < READ_LIMIT && c.parked.is_none() && c.pending_write() < WRITE_LIMIT {
        let tls = c.tls.as_mut().expect("checked");
        let room = READ_LIMIT - c.rbuf.len();
        let was_empty = c.rbuf.is_empty();
        match super::tls::read(tls, &mut c.stream, &mut c.rbuf, room) {
            Ok(Some(0)) | Err(_) => return Err(()),
            Ok(Some(_)) => {
                if was_empty {
                    c.started = Some(Instant::now());
                }
                c.last_seen = Instant::now();
                got = true;
            }
            Ok(None) => break,
        }
    }
    Ok(got)
}

/// Answers every whole request in the read buffer (stops at a parked long poll, and
/// after a challenge that starts TLS: what follows is the client's handshake).
fn answer_ready(c: &mut Conn, shared: &Shared) -> Result<(), ()> {
    while c.parked.is_none()
        && !c.start_tls
        && c.pending_write() < WRITE_LIMIT
        && c.rbuf.len() >= BOOT_HEADER_LEN
    {
        // A bad header loses the framing: close.
        let h = BootHeader::decode(&c.rbuf[..BOOT_HEADER_LEN], MAX_REQUEST_BODY).map_err(|_| ())?;
        let end = BOOT_HEADER_LEN + h.body_len as usize;
        if c.rbuf.len() < end {
            break;
        }
        let req = BootRequest::decode(h.op, &c.rbuf[BOOT_HEADER_LEN..end]);
        // Over TLS, a proof binds the session's exporter.
        let binding = match &c.tls {
            Some(tls) => tls
                .export_keying_material(
                    [0u8; nacre_mgc::TLS_EXPORTER_LEN],
                    nacre_mgc::TLS_EXPORTER_LABEL,
                    None,
                )
                .map_err(|_| ())?
                .to_vec(),
            None => Vec::new(),
        };
        let gated = req.as_ref().ok().and_then(|r| {
            let gate = &shared.gate;
            gate.exchange(&mut c.standing, c.peer, &binding, r)
                .or_else(|| gate.refuse(&c.standing, r))
        });
        match req {
            _ if gated.is_some() => {
                let reply = gated.expect("checked");
                c.start_tls = matches!(reply, BootReply::Challenge { tls: true, .. });
                c.wbuf.extend_from_slice(&reply.encode(h.op));
            }
            Ok(BootRequest::FetchMap) => c.wbuf.extend_from_slice(&shared.map_frame()),
            Ok(BootRequest::WaitMap {
                newer_than,
                wait_ms,
            }) => {
                let wait = Duration::from_millis(wait_ms.min(MAX_WAIT_MS).into());
                if shared.version.load(Ordering::SeqCst) > newer_than || wait.is_zero() {
                    push_wait_reply(c, shared);
                } else {
                    c.parked = Some((newer_than, Instant::now() + wait));
                }
            }
            Ok(req) => c.wbuf.extend_from_slice(&answer(shared, req).encode(h.op)),
            Err(e) => c.wbuf.extend_from_slice(
                &BootReply::Failed {
                    errno: e.errno(),
                    message: format!("malformed {:?} request: {e}", h.op),
                }
                .encode(h.op),
            ),
        }
        c.rbuf.drain(..end);
        c.started = (!c.rbuf.is_empty()).then(Instant::now);
    }
    Ok(())
}

/// The current map as the reply to a long poll (the cached fetch frame, relabelled).
fn push_wait_reply(c: &mut Conn, shared: &Shared) {
    let frame = shared.map_frame();
    let at = c.wbuf.len();
    c.wbuf.extend_from_slice(&frame);
    c.wbuf[at + 6..at + 8].copy_from_slice(&(BootOp::WaitMap as u16).to_le_bytes());
}

/// Writes what is pending. Ok(true): something went.
fn flush(c: &mut Conn) -> Result<bool, ()> {
    if let Some(tls) = c.tls.as_mut() {
        let (taken, wrote) =
            super::tls::write(tls, &mut c.stream, &c.wbuf[c.wpos..]).map_err(|_| ())?;
        c.wpos += taken;
        if c.wpos == c.wbuf.len() {
            c.wbuf.clear();
            c.wpos = 0;
        }
        if wrote {
            c.last_seen = Instant::now();
        }
        return Ok(wrote || taken > 0);
    }
    let mut wrote = false;
    while c.pending_write() > 0 {
        match c.stream.write(&c.wbuf[c.wpos..]) {
            Ok(0) => return Err(()),
            Ok(n) => {
                c.wpos += n;
                c.last_seen = Instant::now();
                wrote = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    if c.wpos == c.wbuf.len() {
        c.wbuf.clear();
        c.wpos = 0;
        if c.start_tls {
            start_tls(c)?;
            wrote = true;
        }
    }
    Ok(wrote)
}

/// The challenge that said so is written: the connection turns TLS (bytes the client
/// sent after it already are the start of its handshake).
fn start_tls(c: &mut Conn) -> Result<(), ()> {
    c.start_tls = false;
    let cfg = c.tls_config.take().ok_or(())?;
    let mut tls = rustls::ServerConnection::new(cfg).map_err(|_| ())?;
    let early = std::mem::take(&mut c.rbuf);
    if !early.is_empty() {
        tls.read_tls(&mut early.as_slice()).map_err(|_| ())?;
    }
    c.tls = Some(Box::new(tls));
    Ok(())
}

/// Answers long polls whose map is there or whose time is up; closes connections past
/// their request deadline or idle timeout.
fn sweep(poll: &Poll, shared: &Shared, conns: &mut HashMap<Token, Conn>, now: Instant) {
    let version = shared.version.load(Ordering::SeqCst);
    let deadline = Duration::from_millis(shared.cfg.request_deadline_ms);
    let idle = Duration::from_millis(shared.cfg.idle_timeout_ms);
    let mut dead = Vec::new();
    for (&t, c) in conns.iter_mut() {
        if let Some((newer_than, until)) = c.parked {
            if version > newer_than || now >= until || shared.stop.load(Ordering::SeqCst) {
                c.parked = None;
                push_wait_reply(c, shared);
                c.last_seen = now;
                if service(c, shared).is_err() {
                    dead.push(t);
                }
            }
            continue;
        }
        let late = c.started.is_some_and(|s| now - s > deadline);
        // Nothing read nor written for this long (also a client that stopped reading).
        let silent = now - c.last_seen > idle;
        if late || silent {
            dead.push(t);
        }
    }
    for t in dead {
        close(poll, conns, t);
    }
}

/// Wakes the loop (a change of version made on another thread, or a stop).
pub(super) fn wake(waker: &Waker) {
    let _ = waker.wake();
}
