//! Configuration of an OSS: a TOML file whose values command-line flags override.
//!
//! ```toml
//! [ost]
//! dir = "/srv/nacre/ost0"
//! fsid = "nacre"
//! index = 0
//! label = "nacre-OST0000"   # optional
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub ost: OstConfig,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OstConfig {
    pub dir: Option<PathBuf>,
    pub fsid: Option<String>,
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
