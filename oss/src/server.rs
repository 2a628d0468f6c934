//! Starting an OSS's engine: one core per chosen CPU, each with an object store per
//! served OST and the object service on top. `nacre-oss serve` and the tests use it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nacre_engine::{Engine, EngineConfig, EngineError, PoolConfig, ReactorConfig, SizeClass};

use crate::service::{OssService, ServedOst};
use crate::{ObjectStore, StoreConfig};
use nacre_mgs::role::ServingEpoch;

/// Messages of the object protocol (the protocol's own size).
pub use nacre_proto::object::MSG_SIZE;

/// One OST to serve: its index, directory and the epoch its role was granted.
#[derive(Debug, Clone)]
pub struct OstSpec {
    pub index: u32,
    pub dir: PathBuf,
    pub epoch: ServingEpoch,
    pub health: OstHealth,
}

/// The worst device error any core's store of an OST has met (0: none), for the
/// heartbeat: a device that fails marks the target degraded in the cluster map.
#[derive(Debug, Clone, Default)]
pub struct OstHealth(Arc<std::sync::atomic::AtomicI32>);

impl OstHealth {
    pub fn degrade(&self, errno: i32) {
        self.0.store(errno, Ordering::Release);
    }

    /// The device error that degraded the target, if any.
    pub fn degraded(&self) -> Option<i32> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            e => Some(e),
        }
    }
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

/// The OSTs a server serves, shared by its cores. A server starts its engine first
/// (a claim at the MGS carries the cores' fabric addresses), then adds each OST once its
/// role is granted; every core opens its own store of it on its next turn (one atomic
/// load per turn while nothing changes).
#[derive(Clone, Default)]
pub struct OstRegistry {
    inner: Arc<(Mutex<Vec<OstSpec>>, AtomicU64)>,
}

impl OstRegistry {
    pub fn new(osts: Vec<OstSpec>) -> OstRegistry {
        let r = OstRegistry::default();
        for o in osts {
            r.add(o);
        }
        r
    }

    /// Serves one more OST (store id = its position; at most 128 per server).
    pub fn add(&self, ost: OstSpec) {
        let mut list = self.inner.0.lock().unwrap_or_else(|e| e.into_inner());
        list.push(ost);
        self.inner.1.fetch_add(1, Ordering::Release);
    }

    pub fn generation(&self) -> u64 {
        self.inner.1.load(Ordering::Acquire)
    }

    /// The OSTs from position `from` on.
    pub fn since(&self, from: usize) -> Vec<OstSpec> {
        let list = self.inner.0.lock().unwrap_or_else(|e| e.into_inner());
        list.get(from..)
            .map(<[OstSpec]>::to_vec)
            .unwrap_or_default()
    }
}

/// Starts the engine with the object service on every core, serving what `osts` holds
/// now and whatever is added to it later.
pub fn start(cfg: &EngineConfig, osts: OstRegistry) -> Result<Engine, EngineError> {
    let cores = cfg.cpus.as_ref().map_or(cfg.cores.max(1), Vec::len);
    let max_files = cfg.storage.max_files as usize;
    let caps = cfg
        .reactor
        .key
        .as_ref()
        .and_then(nacre_auth::CapabilityKey::of);
    Engine::start(cfg, move |core, c| {
        OssService::new(core, cores, osts.clone(), max_files, c.reply_body_max())
            .checking(caps.clone())
    })
}

/// Opens a core's store of `spec` (store id `id`), or says why not.
pub(crate) fn open_store(spec: &OstSpec, id: usize, max_open: usize) -> Option<ServedOst> {
    let Ok(id) = u8::try_from(id) else {
        tracing::error!(dir = %spec.dir.display(), "OST not served: store id {id} past 255");
        return None;
    };
    let cfg = StoreConfig {
        max_open,
        id,
        ..Default::default()
    };
    match ObjectStore::open(&spec.dir, cfg) {
        Ok(mut store) => Some(ServedOst {
            store: {
                store.set_fence(spec.epoch.clone());
                store
            },
            index: spec.index,
            epoch: spec.epoch.clone(),
            health: spec.health.clone(),
        }),
        Err(e) => {
            tracing::error!(dir = %spec.dir.display(), "OST not served: {e}");
            None
        }
    }
}
