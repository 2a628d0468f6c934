//! Who a connection to the MGS is: nobody until it proves it holds a key of this file
//! system (challenge and response, `nacre_auth::proof`), then the key's principal.
//! Role requests (claim, renew, release) and settings need the file system key.
//!
//! A refused proof is answered `EACCES` with why, and logged once per peer address (a
//! client retrying with a wrong key does not flood the log); the set of addresses
//! logged is bounded.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Mutex;

use nacre_auth::{Key, Principal, Side};
use nacre_proto::bootstrap::{errno, BootReply, BootRequest, NONCE_LEN};

/// Peer addresses whose refusal was logged, at most.
const LOGGED_PEERS: usize = 4096;

/// One connection's standing.
#[derive(Debug, Default)]
pub(super) enum Standing {
    #[default]
    Stranger,
    /// Challenged: both nonces, waiting for the proof.
    Challenged {
        client_nonce: [u8; NONCE_LEN],
        server_nonce: [u8; NONCE_LEN],
    },
    Known(Principal),
}

/// The MGS's key (None: an MGS serving without authentication, as tests that build
/// one in-process may) and the refusals already logged.
pub(super) struct Gate {
    key: Option<Key>,
    /// Connections turn TLS after the challenge, and proofs bind the session.
    tls: bool,
    logged: Mutex<HashSet<IpAddr>>,
}

impl Gate {
    pub fn new(key: Option<Key>, tls: bool) -> Gate {
        Gate {
            key,
            tls,
            logged: Mutex::new(HashSet::new()),
        }
    }

    /// Answers the two authentication steps; None for any other request.
    /// `binding`: the connection's TLS exporter (empty: not TLS).
    pub fn exchange(
        &self,
        st: &mut Standing,
        peer: Option<IpAddr>,
        binding: &[u8],
        req: &BootRequest,
    ) -> Option<BootReply> {
        match req {
            BootRequest::AuthBegin { client_nonce } => Some(self.begin(st, *client_nonce)),
            BootRequest::AuthProve { principal, proof } => {
                let reply = self.prove(st, principal, proof, binding);
                if let (BootReply::Failed { message, .. }, Some(ip)) = (&reply, peer) {
                    self.log_refusal(ip, message);
                }
                Some(reply)
            }
            _ => None,
        }
    }

    fn begin(&self, st: &mut Standing, client_nonce: [u8; NONCE_LEN]) -> BootReply {
        let Some(key) = &self.key else {
            return BootReply::Challenge {
                fsname: String::new(),
                server_nonce: [0; NONCE_LEN],
                required: false,
                tls: false,
            };
        };
        let server_nonce = match nacre_auth::random_bytes() {
            Ok(n) => n,
            Err(e) => return failed(errno::EIO, e.to_string()),
        };
        *st = Standing::Challenged {
            client_nonce,
            server_nonce,
        };
        BootReply::Challenge {
            fsname: key.fsname().to_string(),
            server_nonce,
            required: true,
            tls: self.tls,
        }
    }

    fn prove(
        &self,
        st: &mut Standing,
        principal: &[u8],
        proof: &[u8],
        binding: &[u8],
    ) -> BootReply {
        let Some(key) = &self.key else {
            return failed(
                errno::EACCES,
                "this MGS has no key to check a proof with".into(),
            );
        };
        let Standing::Challenged {
            client_nonce,
            server_nonce,
        } = std::mem::take(st)
        else {
            return failed(
                errno::EACCES,
                "authentication failed: no challenge asked".into(),
            );
        };
        if self.tls && binding.is_empty() {
            return failed(
                errno::EACCES,
                "authentication failed: this MGS needs TLS".into(),
            );
        }
        let principal = match Principal::decode(principal) {
            Ok((p, [])) => p,
            Ok(_) => return failed(errno::EACCES, "authentication failed: bad principal".into()),
            Err(e) => return failed(errno::EACCES, format!("authentication failed: {e}")),
        };
        let ex = nacre_auth::proof::mgs(
            key.fsname(),
            &principal,
            &client_nonce,
            &server_nonce,
            binding,
        );
        if let Err(e) = key.check(Side::Client, &ex, proof) {
            return failed(errno::EACCES, format!("authentication failed: {e}"));
        }
        let answer = match key.prove_to(Side::Server, &ex) {
            Ok(p) => p,
            Err(e) => return failed(errno::EIO, e.to_string()),
        };
        *st = Standing::Known(principal);
        BootReply::Proven { proof: answer }
    }

    /// Why `req` may not be served on a connection of standing `st`, if it may not.
    pub fn refuse(&self, st: &Standing, req: &BootRequest) -> Option<BootReply> {
        self.key.as_ref()?;
        let server_only = matches!(
            req,
            BootRequest::Claim(_)
                | BootRequest::Renew(_)
                | BootRequest::Release { .. }
                | BootRequest::SetRootSquash(_)
        );
        match st {
            Standing::Known(p) if server_only && !p.is_server() => Some(failed(
                errno::EACCES,
                format!("{p} may not do that: it needs the file system key (a server's)"),
            )),
            Standing::Known(_) => None,
            _ => Some(failed(
                errno::EACCES,
                "authentication required: this MGS serves only holders of the file system's key"
                    .into(),
            )),
        }
    }

    fn log_refusal(&self, ip: IpAddr, why: &str) {
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if logged.len() < LOGGED_PEERS && logged.insert(ip) {
            tracing::warn!("mgs: {ip}: {why} (further refusals of this peer not logged)");
        }
    }
}

fn failed(errno: i32, message: String) -> BootReply {
    BootReply::Failed { errno, message }
}
