//! One thread per client, started with its first lock or open, that keeps what the MDS
//! must not forget: every [`lock::RENEW_EVERY`] it renews the client's locks or, with
//! none but files open, says the client lives (`Request::Ping`): the MDS closes the
//! handles of a client silent for its open lease (`meta::OPEN_LEASE`), as a dead
//! one's. Either way a restarted MDS is met within a few seconds, and the new connection replays the client's opens and
//! locks inside the MDS's recovery window, even when the application is idle. It also
//! renews the object capabilities of open files ahead of their expiry
//! (docs/security.md), so their I/O does not meet an expired one.

use std::sync::Weak;

use nacre_proto::meta::{lock, Request};

use crate::fs::{Client, Inner};

/// Starts the keeper of the client `inner`; it ends when the client goes.
pub fn start(inner: Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("nacre-keeper".into())
        .spawn(move || loop {
            std::thread::sleep(lock::RENEW_EVERY);
            let Some(client) = Client::from_inner(&inner) else {
                return;
            };
            if let Err(e) = client.renew_open_capabilities() {
                tracing::warn!("renewing the capabilities of open files: {e}");
            }
            if !client.held_locks().is_empty() {
                crate::locks::renew(&client);
            } else if !client.held_opens().is_empty() {
                let ping = Request::Ping {
                    client: client.client_id(),
                };
                if let Err(e) = client.call_within(&ping, lock::RENEW_EVERY) {
                    tracing::warn!("reaching the MDS for this client's opens: {e}");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("starting the client's keeper: {e}");
    }
}
