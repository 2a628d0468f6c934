//! Configuration of an OSS: a TOML file whose values command-line flags override.
//!
//! ```toml
//! [ost]
//! dir = "/srv/nacre/ost0"
//! fsname = "nacre"
//! index = 0
//! label = "nacre-OST0000"   # optional
//!
//! [server]                   # nacre-oss serve
//! mgs = "10.0.0.1:7000"      # or NACRE_MGS; several MGS: "a:7000,b:7000"
//! osts = ["/srv/nacre/ost0", "/srv/nacre/ost1"]
//! provider = "tcp"           # tcp, sockets, shm, efa...
//! listen = "10.0.0.2"        # address the cores serve from (default: the provider's)
//! cores = 2                  # engine cores (default 1)
//! cpus = [2, 3]              # explicit CPUs instead (default: near the NIC and disks)
//! bulk_timeout = 60.0        # seconds before a client whose pushes hang is evicted
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub ost: OstConfig,
    #[serde(default)]
    pub server: ServerConfig,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub mgs: Option<String>,
    #[serde(default)]
    pub osts: Vec<PathBuf>,
    pub provider: Option<String>,
    pub listen: Option<String>,
    pub cores: Option<usize>,
    pub cpus: Option<Vec<usize>>,
    pub identity: Option<String>,
    pub bulk_timeout: Option<f64>,
    /// The file system key file.
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OstConfig {
    pub dir: Option<PathBuf>,
    /// The file system's name (`fsid`, its old spelling, is read too).
    #[serde(alias = "fsid")]
    pub fsname: Option<String>,
    pub index: Option<u32>,
    pub label: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Parse { path: PathBuf, msg: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|msg| ConfigError::Parse {
            path: path.to_path_buf(),
            msg,
        })
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let c = Config::parse("[ost]\ndir = \"/x\"\nindex = 2\n").unwrap();
        assert_eq!(c.ost.dir.as_deref(), Some(Path::new("/x")));
        assert_eq!(c.ost.index, Some(2));
        assert!(Config::parse("[ost]\ndri = \"/x\"\n").is_err());
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }
}
