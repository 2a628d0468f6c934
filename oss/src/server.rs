//! Starting an OSS's engine: one core per chosen CPU, each with an object store per
//! served OST and the object service on top. `nacre-oss serve` and the tests use it.

use std::path::PathBuf;

use nacre_engine::{Engine, EngineConfig, EngineError, PoolConfig, ReactorConfig, SizeClass};

use crate::service::{OssService, OstEpoch, ServedOst};
use crate::{ObjectStore, StoreConfig};

/// Messages of the object protocol: 8 KiB, so 4 KiB payloads travel inline.
pub const MSG_SIZE: usize = 8192;

/// One OST to serve: its index, directory and the epoch its role was granted.
#[derive(Debug, Clone)]
pub struct OstSpec {
    pub index: u32,
    pub dir: PathBuf,
    pub epoch: OstEpoch,
}

/// The engine settings an OSS starts from: messages of [`MSG_SIZE`], a pool with a class
/// for edge blocks, one for small transfers and 1 MiB slabs for bulk, and the OST
/// directories as the storage paths that placement looks at.
pub fn engine_config(mut base: EngineConfig, osts: &[OstSpec]) -> EngineConfig {
    base.reactor = ReactorConfig {
        msg_size: MSG_SIZE,
        ..base.reactor
    };
    if base.pool.classes == PoolConfig::default().classes {
        base.pool.classes = vec![
            SizeClass {
                size: 4096,
                count: 256,
            },
            SizeClass {
                size: 64 << 10,
                count: 64,
            },
            SizeClass {
                size: 1 << 20,
                count: 64,
            },
        ];
    }
    base.storage_paths = osts.iter().map(|o| o.dir.clone()).collect();
    base
}

/// Starts the engine with the object service on every core.
pub fn start(cfg: &EngineConfig, osts: Vec<OstSpec>) -> Result<Engine, EngineError> {
    let cores = cfg.cpus.as_ref().map_or(cfg.cores.max(1), Vec::len);
    let max_files = cfg.storage.max_files as usize;
    let per_store = (max_files / osts.len().max(1)).max(1);
    let msg_size = cfg.reactor.msg_size;
    Engine::start(cfg, move |core, _| {
        let served = osts
            .iter()
            .enumerate()
            .filter_map(|(id, o)| {
                let store_cfg = StoreConfig {
                    max_open: per_store,
                    id: id as u8,
                    ..Default::default()
                };
                match ObjectStore::open(&o.dir, store_cfg) {
                    Ok(store) => Some(ServedOst {
                        index: o.index,
                        epoch: o.epoch.clone(),
                        store,
                    }),
                    Err(e) => {
                        tracing::error!(dir = %o.dir.display(), "OST not served: {e}");
                        None
                    }
                }
            })
            .collect();
        OssService::new(core, cores, served, msg_size)
    })
}
