//! TLS on the bootstrap connection, the MGS's side (docs/security.md): a self-signed
//! certificate made at each start (nobody trusts it for anything: the MGS proves itself
//! with the file system key over the session's exporter), and the byte pumps between a
//! non-blocking socket and a rustls session for the event loop.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection};

/// When the bootstrap runs TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    Off,
    On,
    /// On unless the MGS listens on loopback (one machine: nothing crosses a wire).
    #[default]
    Auto,
}

impl std::str::FromStr for TlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<TlsMode, String> {
        match s {
            "off" => Ok(TlsMode::Off),
            "on" => Ok(TlsMode::On),
            "auto" => Ok(TlsMode::Auto),
            other => Err(format!("--tls {other}: on, off or auto")),
        }
    }
}

impl TlsMode {
    /// Whether an MGS listening on `addr` runs TLS.
    pub fn applies(self, addr: std::net::SocketAddr) -> bool {
        match self {
            TlsMode::Off => false,
            TlsMode::On => true,
            TlsMode::Auto => !addr.ip().is_loopback(),
        }
    }
}

/// The server configuration: TLS 1.3 with a fresh self-signed certificate.
pub fn server_config() -> io::Result<Arc<ServerConfig>> {
    let made = rcgen::generate_simple_self_signed(vec!["nacre-mgs".to_string()])
        .map_err(io::Error::other)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
    let cfg = ServerConfig::builder_with_provider(nacre_mgc::tls_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![made.cert.der().clone()], key)
        .map_err(io::Error::other)?;
    Ok(Arc::new(cfg))
}

/// Reads what the socket has into the session, until the socket has no more (the loop
/// is edge-triggered: bytes left unread would wake nobody) or `room` bytes of plaintext
/// came, and the session's plaintext into `out`. Ok(None): nothing now; Ok(Some(0)):
/// closed.
pub fn read(
    tls: &mut ServerConnection,
    sock: &mut impl Read,
    out: &mut Vec<u8>,
    room: usize,
) -> io::Result<Option<usize>> {
    let mut got = 0;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // Plaintext first: rustls takes no more records while its buffer is full.
        while got < room {
            let n = (room - got).min(chunk.len());
            match tls.reader().read(&mut chunk[..n]) {
                Ok(0) => return Ok(Some(0)),
                Ok(n) => {
                    out.extend_from_slice(&chunk[..n]);
                    got += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if got >= room {
            break;
        }
        match tls.read_tls(sock) {
            Ok(0) => return Ok(Some(0)),
            Ok(_) => {
                tls.process_new_packets().map_err(io::Error::other)?;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((got > 0).then_some(got))
}

/// Hands `plain` to the session (only when it holds nothing unsent, so the caller's
/// buffer keeps counting what the peer has not taken) and writes what the session has
/// to the socket. Returns (plaintext bytes taken, whether anything was written).
pub fn write(
    tls: &mut ServerConnection,
    sock: &mut impl Write,
    plain: &[u8],
) -> io::Result<(usize, bool)> {
    let mut taken = 0;
    if !plain.is_empty() && !tls.wants_write() {
        tls.writer().write_all(plain)?;
        taken = plain.len();
    }
    let mut wrote = false;
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => wrote = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok((taken, wrote))
}
