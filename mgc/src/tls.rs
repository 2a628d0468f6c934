//! TLS on the bootstrap connection, the client's side.
//!
//! An MGS that serves TLS says so in its challenge; the client then runs a TLS 1.3
//! handshake on the same connection and proves itself over the session's exporter
//! (RFC 5705) as well as the nonces. The MGS's certificate is not what it is trusted for
//! (it makes a new self-signed one at each start): its proof over the same exporter is.
//! A man in the middle that terminated TLS on each side would hold two sessions whose
//! exporters differ, and neither proof would pass (docs/security.md).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

/// The label of the exporter the proofs bind (RFC 5705 exporters start `EXPORTER`).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-nacre-mgs-auth";
/// Bytes of exporter the proofs bind.
pub const EXPORTER_LEN: usize = 32;

/// A bootstrap connection: plain TCP, or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP connection underneath (for timeouts).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    /// Starts TLS on a plain connection and finishes the handshake; returns the
    /// exporter the proofs bind.
    pub fn start_tls(self) -> io::Result<(Stream, [u8; EXPORTER_LEN])> {
        let Stream::Plain(sock) = self else {
            return Err(io::Error::other("TLS started twice"));
        };
        let name = ServerName::try_from("nacre-mgs").expect("a valid name");
        let conn = ClientConnection::new(config(), name).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        let exporter = tls
            .conn
            .export_keying_material([0u8; EXPORTER_LEN], EXPORTER_LABEL, None)
            .map_err(io::Error::other)?;
        Ok((Stream::Tls(Box::new(tls)), exporter))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// ring's provider: it builds with a C compiler alone (aws-lc, rustls's default, needs
/// more of a toolchain). It offers no post-quantum key exchange, which rustls now
/// deprecates it for; what authenticates these sessions is the file system key's proofs
/// over their exporter, not the key exchange.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = provider();
            let verifier = Arc::new(ProvenLater(provider.clone()));
            let cfg = ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("TLS 1.3 with ring")
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            Arc::new(cfg)
        })
        .clone()
}

/// Takes any certificate (the MGS proves itself with the file system key over the
/// session's exporter instead), but checks that the handshake's signatures were made
/// with the key of the certificate presented.
#[derive(Debug)]
struct ProvenLater(Arc<CryptoProvider>);

impl ServerCertVerifier for ProvenLater {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
