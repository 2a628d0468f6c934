//! Shared helpers of the fabric tests: provider availability (skip with a printed
//! reason), deterministic patterns, and waiting with a deadline.

#![allow(dead_code)]

use std::time::Duration;

pub use nacre_fabric::testing::pattern;
use nacre_fabric::{Endpoint, EndpointConfig, Info, Selection};

/// The providers every test runs on; the ones missing here are skipped, loudly.
pub const PROVIDERS: [&str; 3] = ["tcp", "sockets", "shm"];

pub const WAIT: Duration = Duration::from_secs(30);

/// The selection tests use: provider on loopback.
pub fn selection(provider: &str) -> Selection {
    Selection::provider(provider)
}

/// Some(info) when the provider exists here, else prints why it is skipped.
pub fn available(provider: &str, test: &str) -> Option<Info> {
    match Info::find(&selection(provider)) {
        Ok(info) => Some(info),
        Err(e) => {
            nacre_fabric::testing::skip(&format!(
                "{test} on provider {provider}: not available on this machine: {e}"
            ));
            None
        }
    }
}

pub fn open(provider: &str, cfg: &EndpointConfig) -> Endpoint {
    nacre_fabric::open(&selection(provider), cfg)
        .unwrap_or_else(|e| panic!("open endpoint on {provider}: {e}"))
}

pub mod checks;
pub mod peer;
