//! nacre-mgc: the MGS client, linked by servers and clients alike (Lustre's MGC).
//!
//! It talks to the management service (MGS) over its TCP bootstrap protocol
//! (`nacre_proto::bootstrap`): fetch the cluster map, wait for a newer one (long poll),
//! and the raw claim, renew and release calls that a server's role keeping
//! (`nacre_mgs::role`) is built on. Every call has a deadline, and an MGS that cannot be
//! reached is an error naming its address.
//!
//! Every connection first authenticates (`nacre_auth`): the MGS names the file system,
//! the client proves it holds a key of it (from [`KeySource`]) and the MGS proves it
//! holds the file system key. An MGS without a key (built so by tests) says so, and a
//! client that was given a key refuses to trust it. An MGS that runs TLS says so in its
//! challenge: the connection turns TLS there, and the proofs bind the session (`tls.rs`).
//!
//! It must stay light: no engine, no fabric, no store; the client library links it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use nacre_auth::{Key, KeySource, Side};
pub use tls::{
    provider as tls_provider, Stream, EXPORTER_LABEL as TLS_EXPORTER_LABEL,
    EXPORTER_LEN as TLS_EXPORTER_LEN,
};

mod tls;
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
    #[error("authentication failed: {0}")]
    Auth(String),
}

impl MgsError {
    /// The errno of a refusal, if the MGS answered with one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            MgsError::Refused { errno, .. } => Some(*errno),
            MgsError::Auth(_) => Some(errno::EACCES),
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
    conn: Option<(Stream, String)>,
    /// Which address to try first: moves on after a failure, so that a paused MGS
    /// (whose kernel still accepts connections) is not tried first forever.
    first: usize,
    keys: KeySource,
    /// The key the MGS accepted (None until then, or with an MGS without a key).
    key: Option<Key>,
}

impl MgsClient {
    /// No connection yet: the first call opens it.
    pub fn new(addrs: &str, cfg: BootConfig) -> MgsClient {
        MgsClient {
            addrs: addrs.to_string(),
            cfg,
            conn: None,
            first: 0,
            keys: KeySource::new(None),
            key: None,
        }
    }

    /// Authenticates with the key `keys` finds (default: `NACRE_KEY`, else the
    /// installed `/etc/nacre/FSNAME.key`).
    pub fn with_keys(mut self, keys: KeySource) -> MgsClient {
        self.keys = keys;
        self.key = None;
        self
    }

    /// Connects now with the key `keys` finds.
    pub fn connect_with(
        addrs: &str,
        cfg: BootConfig,
        keys: KeySource,
    ) -> Result<MgsClient, MgsError> {
        let mut c = MgsClient::new(addrs, cfg).with_keys(keys);
        c.open()?;
        Ok(c)
    }

    /// The key the MGS accepted: what this process proves itself with to the other
    /// servers too. None before the first call, or with an MGS that has no key.
    pub fn key(&self) -> Option<&Key> {
        self.key.as_ref()
    }

    /// The key a server serves with: the one the MGS accepted, which must be the file
    /// system key (a client key may not serve). None with an MGS that has no key.
    pub fn server_key(&mut self) -> Result<Option<Key>, MgsError> {
        if self.conn.is_none() {
            self.open()?;
        }
        match &self.key {
            Some(k) if !k.principal().is_server() => Err(MgsError::Auth(format!(
                "a server needs the file system key, not {}",
                k.principal()
            ))),
            k => Ok(k.clone()),
        }
    }

    /// Another client of the same MGS with the same key (for a thread of its own).
    pub fn sibling(&self, cfg: BootConfig) -> MgsClient {
        let keys = match &self.key {
            Some(k) => KeySource::key(k.clone()),
            None => self.keys.clone(),
        };
        MgsClient::new(&self.addrs, cfg).with_keys(keys)
    }

    /// Sets (or clears, None) root squash: needs the file system key.
    pub fn set_root_squash(&mut self, squash: Option<(u32, u32)>) -> Result<(), MgsError> {
        match self.call(&BootRequest::SetRootSquash(squash), Duration::ZERO)? {
            BootReply::Set => Ok(()),
            other => Err(self.unexpected(other)),
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
        let order: Vec<String> = all[start..]
            .iter()
            .chain(&all[..start])
            .map(|a| a.to_string())
            .collect();
        for one in order.iter().map(String::as_str) {
            let conn = connect_one(one, self.cfg.connect_timeout)
                .and_then(|s| self.authenticate(Stream::Plain(s), one));
            match conn {
                Ok(s) => {
                    self.conn = Some((s, one.to_string()));
                    return Ok(());
                }
                // The same key would fail at every MGS of the file system.
                Err(e @ MgsError::Auth(_)) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| MgsError::Unreachable {
            addr: self.addrs.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "no address given"),
        }))
    }
}

impl MgsClient {
    /// The challenge and response on a new connection to `addr`.
    fn authenticate(&mut self, mut s: Stream, addr: &str) -> Result<Stream, MgsError> {
        let client_nonce = nacre_auth::random_bytes().map_err(|e| MgsError::Auth(e.to_string()))?;
        let (fsname, server_nonce, tls) =
            match self.step(&mut s, addr, &BootRequest::AuthBegin { client_nonce })? {
                BootReply::Challenge {
                    required: false, ..
                } => {
                    return match self.keys == KeySource::default() {
                        true => Ok(s),
                        false => Err(MgsError::Auth(format!(
                            "the MGS at {addr} has no key: it cannot prove it serves the \
                             file system this key is for"
                        ))),
                    };
                }
                BootReply::Challenge {
                    fsname,
                    server_nonce,
                    tls,
                    ..
                } => (fsname, server_nonce, tls),
                other => return Err(self.refusal(addr, other)),
            };
        // Over TLS, the proofs bind the session (its exporter) too.
        let mut binding = Vec::new();
        if tls {
            let (tls_stream, exporter) = s.start_tls().map_err(|source| MgsError::Lost {
                addr: addr.to_string(),
                source,
            })?;
            s = tls_stream;
            binding = exporter.to_vec();
        }
        if self.key.as_ref().is_none_or(|k| k.fsname() != fsname) {
            self.key = Some(
                self.keys
                    .load(&fsname)
                    .map_err(|e| MgsError::Auth(e.to_string()))?,
            );
        }
        let key = self.key.clone().expect("just loaded");
        let ex = nacre_auth::proof::mgs(
            &fsname,
            key.principal(),
            &client_nonce,
            &server_nonce,
            &binding,
        );
        let prove = BootRequest::AuthProve {
            principal: key.principal().encode(),
            proof: key.prove(Side::Client, &ex),
        };
        match self.step(&mut s, addr, &prove)? {
            BootReply::Proven { proof } => key
                .check_server(&ex, &proof)
                .map(|()| s)
                .map_err(|e| MgsError::Auth(format!("the MGS at {addr}: {e}"))),
            BootReply::Failed {
                errno: errno::EACCES,
                message,
            } => Err(MgsError::Auth(format!(
                "the MGS at {addr} refused {}: {}",
                key.principal(),
                message.trim_start_matches("authentication failed: ")
            ))),
            other => Err(self.refusal(addr, other)),
        }
    }

    fn step(&self, s: &mut Stream, addr: &str, req: &BootRequest) -> Result<BootReply, MgsError> {
        let frame = req.encode().map_err(MgsError::Request)?;
        send_and_read(s, req.op(), &frame, self.cfg.request_timeout).map_err(|e| match e {
            Exchange::Io(source) => MgsError::Lost {
                addr: addr.to_string(),
                source,
            },
            Exchange::Frame(source) => MgsError::Malformed {
                addr: addr.to_string(),
                source,
            },
        })
    }

    fn refusal(&self, addr: &str, reply: BootReply) -> MgsError {
        match reply {
            BootReply::Failed { errno, message } => MgsError::Refused {
                addr: addr.to_string(),
                errno,
                message,
            },
            _ => MgsError::Malformed {
                addr: addr.to_string(),
                source: BootError::BadValue {
                    field: "unexpected reply to authentication",
                    value: 0,
                },
            },
        }
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
    s: &mut Stream,
    op: BootOp,
    frame: &[u8],
    timeout: Duration,
) -> Result<BootReply, Exchange> {
    let until = Instant::now() + timeout;
    s.tcp()
        .set_write_timeout(Some(timeout))
        .map_err(Exchange::Io)?;
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

fn read_full(s: &mut Stream, buf: &mut [u8], until: Instant) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        let left = until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?;
        s.tcp().set_read_timeout(Some(left))?;
        match s.read(&mut buf[at..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The MGS address to use: the one given (flag or config), else `NACRE_MGS`.
pub fn mgs_address(given: Option<String>) -> Option<String> {
    given.or_else(|| std::env::var("NACRE_MGS").ok().filter(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
