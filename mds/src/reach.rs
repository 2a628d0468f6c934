//! How the MDS's own threads (destroyer, checker, resyncer) reach the OSSs: the fabric
//! selection, and the key their HELLOs prove (the file system key: they act as a
//! server, which capabilities do not bind).

use nacre_auth::Key;
use nacre_fabric::Selection;
use nacre_rpc::{ClientEndpoint, ClientError, RpcConfig};

#[derive(Debug, Clone)]
pub struct Reach {
    pub sel: Selection,
    pub key: Option<Key>,
}

impl Reach {
    /// An endpoint with `cfg` and this reach's key.
    pub fn open(&self, mut cfg: RpcConfig) -> Result<ClientEndpoint, ClientError> {
        cfg.key = self.key.clone();
        ClientEndpoint::open(&self.sel, cfg)
    }
}
