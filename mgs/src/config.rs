//! The MGS's configuration: a TOML file, every field optional, command-line flags
//! override it. The defaults serve a one-machine cluster on loopback.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::state::LeaseConfig;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7600";

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MgsConfig {
    /// The management target's directory.
    pub dir: Option<PathBuf>,
    /// Where to serve the bootstrap protocol.
    pub listen: String,
    /// `embedded` (redb in `dir`) or `etcd://HOST:PORT[,HOST:PORT...]`.
    pub store: String,
    pub heartbeat_ms: u64,
    pub lease_ms: u64,
    /// Connections served at once; more are closed at accept.
    pub max_connections: usize,
    /// A request must arrive whole within this once its first byte has.
    pub request_deadline_ms: u64,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout_ms: u64,
    /// etcd store: the TTL of the leader's etcd lease (etcd's minimum is 2 s).
    pub leader_ttl_ms: u64,
    /// The file system key file (else `NACRE_KEY`, else `DIR/FSNAME.key`, else
    /// `/etc/nacre/FSNAME.key`).
    pub key_file: Option<PathBuf>,
    /// The key loaded (not a setting: `nacre-mgs serve` loads it). None: the MGS
    /// serves without authentication (only tests build one so).
    #[serde(skip)]
    pub key: Option<nacre_auth::Key>,
    /// TLS on the bootstrap: `on`, `off`, or `auto` (on unless listening on loopback).
    pub tls: super::server::tls::TlsMode,
}

impl Default for MgsConfig {
    fn default() -> Self {
        MgsConfig {
            dir: None,
            listen: DEFAULT_LISTEN.into(),
            store: "embedded".into(),
            heartbeat_ms: 1000,
            lease_ms: 5000,
            max_connections: 1024,
            request_deadline_ms: 2000,
            idle_timeout_ms: 60_000,
            leader_ttl_ms: 2000,
            key_file: None,
            key: None,
            tls: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("config: {0}")]
    Invalid(String),
}

impl MgsConfig {
    pub fn from_file(path: &Path) -> Result<MgsConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source: Box::new(source),
        })
    }

    /// Refuses settings that cannot work: a lease must outlast a few heartbeats.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_ms == 0 || self.lease_ms < 2 * self.heartbeat_ms {
            return Err(ConfigError::Invalid(format!(
                "lease_ms ({}) must be at least twice heartbeat_ms ({}), which must not be 0",
                self.lease_ms, self.heartbeat_ms
            )));
        }
        if self.lease_ms > u64::from(u32::MAX) {
            return Err(ConfigError::Invalid("lease_ms is too large".into()));
        }
        if self.max_connections == 0 || self.request_deadline_ms == 0 {
            return Err(ConfigError::Invalid(
                "max_connections and request_deadline_ms must not be 0".into(),
            ));
        }
        if self.store != "embedded" && super::etcd::parse_url(&self.store).is_none() {
            return Err(ConfigError::Invalid(format!(
                "store {:?}: `embedded` or `etcd://HOST:PORT[,HOST:PORT...]`",
                self.store
            )));
        }
        Ok(())
    }

    pub fn lease(&self) -> LeaseConfig {
        LeaseConfig {
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            lease: Duration::from_millis(self.lease_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_override_defaults_and_bad_ones_are_refused() {
        let c: MgsConfig = toml::from_str("heartbeat_ms = 100\nlease_ms = 500\n").unwrap();
        assert_eq!((c.heartbeat_ms, c.lease_ms), (100, 500));
        assert_eq!(c.listen, DEFAULT_LISTEN);
        c.validate().unwrap();
        assert!(toml::from_str::<MgsConfig>("leese_ms = 1").is_err());
        let bad = MgsConfig {
            lease_ms: 150,
            heartbeat_ms: 100,
            ..MgsConfig::default()
        };
        assert!(bad.validate().is_err());
        MgsConfig::default().validate().unwrap();
    }
}
