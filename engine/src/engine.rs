//! Starting the engine: one pinned thread per chosen core, each building its own
//! endpoint, pool and storage on that thread (fabric handles never cross threads), then
//! running its reactor. The caller gets each core's fabric address (for the cluster map)
//! and a channel to send it work; stopping joins the threads and returns their metrics.

use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender};
use nacre_fabric::{EndpointConfig, Selection};

use crate::core::Core;
use crate::metrics::CoreMetrics;
use crate::pool::{BufferPool, PoolConfig};
use crate::reactor::{CoreMsg, Reactor, ReactorConfig, Service};
use crate::storage::{Storage, StorageConfig};
use crate::topology;

#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Engine cores to run (ignored when `cpus` is given).
    pub cores: usize,
    /// Explicit CPUs, one per core; None: near the NIC (hwloc), else the allowed ones.
    pub cpus: Option<Vec<usize>>,
    /// The NIC whose NUMA node to prefer (e.g. "eth0"); None: the first one hwloc finds.
    pub nic: Option<String>,
    /// Where the cores will do storage I/O (target directories): among CPUs equally
    /// near the NIC, those that take these devices' completion interrupts come first.
    pub storage_paths: Vec<std::path::PathBuf>,
    /// Do not pin (tests on shared machines); the plan is still logged.
    pub no_pin: bool,
    pub fabric: Selection,
    pub endpoint: EndpointConfig,
    pub pool: PoolConfig,
    pub storage: StorageConfig,
    pub reactor: ReactorConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("choosing cores: {0}")]
    Topology(#[from] topology::TopologyError),
    #[error("core {core}: {what}")]
    Core { core: usize, what: String },
    #[error("core {0} stopped before it was ready")]
    Vanished(usize),
}

/// A running core, seen from outside.
pub struct CoreHandle {
    pub index: usize,
    pub cpu: Option<usize>,
    /// The core's fabric address: clients send this core's requests there.
    pub fabric_name: Vec<u8>,
    tx: Sender<CoreMsg>,
    thread: Option<JoinHandle<CoreMetrics>>,
}

pub struct Engine {
    cores: Vec<CoreHandle>,
}

impl Engine {
    /// Starts the cores; `make` builds each core's service on its own thread.
    pub fn start<S, F>(cfg: &EngineConfig, make: F) -> Result<Engine, EngineError>
    where
        S: Service + 'static,
        F: Fn(usize, &mut Core) -> S + Send + Sync + Clone + 'static,
    {
        let cpus = plan(cfg)?;
        let mut cores = Vec::with_capacity(cpus.len());
        for (index, cpu) in cpus.into_iter().enumerate() {
            match start_core(cfg, index, cpu, make.clone()) {
                Ok(core) => cores.push(core),
                Err(e) => {
                    Engine { cores }.stop();
                    return Err(e);
                }
            }
        }
        Ok(Engine { cores })
    }

    pub fn cores(&self) -> &[CoreHandle] {
        &self.cores
    }

    /// Runs `f` on core `index`'s thread (a cross-core message; never on the hot path).
    pub fn call(&self, index: usize, f: impl FnOnce(&mut Core) + Send + 'static) -> bool {
        self.cores
            .get(index)
            .is_some_and(|c| c.tx.send(CoreMsg::Call(Box::new(f))).is_ok())
    }

    /// Stops every core and returns its final metrics.
    pub fn stop(mut self) -> Vec<CoreMetrics> {
        for c in &self.cores {
            let _ = c.tx.send(CoreMsg::Stop);
        }
        self.cores
            .iter_mut()
            .filter_map(|c| c.thread.take()?.join().ok())
            .collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for c in &self.cores {
            let _ = c.tx.send(CoreMsg::Stop);
        }
        for c in &mut self.cores {
            if let Some(t) = c.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Which CPU each core runs on (None: unpinned), logged once.
fn plan(cfg: &EngineConfig) -> Result<Vec<Option<usize>>, EngineError> {
    let allowed = topology::allowed_cpus();
    let count = cfg.cpus.as_ref().map_or(cfg.cores.max(1), Vec::len);
    let mut machine = match topology::discover() {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(
                "hwloc could not read the machine ({e}); using the allowed CPUs in order"
            );
            topology::Machine {
                cpus: allowed
                    .iter()
                    .map(|&os_index| topology::Cpu {
                        os_index,
                        numa_node: None,
                    })
                    .collect(),
                nics: Vec::new(),
                numa_nodes: 0,
                storage_irq_cpus: Vec::new(),
            }
        }
    };
    machine.storage_irq_cpus = topology::storage_irq_cpus(&cfg.storage_paths);
    let chosen = topology::choose_cpus(
        &machine,
        &allowed,
        cfg.cpus.as_deref(),
        cfg.nic.as_deref(),
        count,
    )?;
    tracing::info!(
        "engine: {}{}",
        topology::describe(&machine, &chosen, cfg.nic.as_deref()),
        if cfg.no_pin { " (not pinned)" } else { "" }
    );
    Ok(chosen
        .into_iter()
        .map(|cpu| (!cfg.no_pin).then_some(cpu))
        .collect())
}

fn start_core<S, F>(
    cfg: &EngineConfig,
    index: usize,
    cpu: Option<usize>,
    make: F,
) -> Result<CoreHandle, EngineError>
where
    S: Service + 'static,
    F: Fn(usize, &mut Core) -> S + Send + 'static,
{
    let (tx, inbox) = crossbeam_channel::unbounded();
    let (ready_tx, ready) = bounded::<Result<Vec<u8>, String>>(1);
    let mut cfg = cfg.clone();
    // A core that is not pinned shares its CPU with other work: it yields between
    // empty turns instead of holding the CPU while it spins.
    cfg.reactor.idle.yield_empty |= cfg.no_pin;
    let thread = std::thread::Builder::new()
        .name(format!("nacre-core-{index}"))
        .spawn(move || {
            let built = build_core(&cfg, cpu).and_then(|mut core| {
                let service = make(index, &mut core);
                Reactor::new(core, service, inbox, &cfg.reactor).map_err(|e| e.to_string())
            });
            match built {
                Ok(mut reactor) => {
                    let _ = ready_tx.send(Ok(reactor.core.fabric_name().to_vec()));
                    reactor.run();
                    reactor.core.metrics.clone()
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    CoreMetrics::default()
                }
            }
        })
        .map_err(|e| EngineError::Core {
            core: index,
            what: format!("cannot start its thread: {e}"),
        })?;
    match ready.recv() {
        Ok(Ok(fabric_name)) => {
            tracing::info!(core = index, ?cpu, "engine core serving");
            Ok(CoreHandle {
                index,
                cpu,
                fabric_name,
                tx,
                thread: Some(thread),
            })
        }
        Ok(Err(what)) => {
            let _ = thread.join();
            Err(EngineError::Core { core: index, what })
        }
        Err(_) => Err(EngineError::Vanished(index)),
    }
}

/// On the core's own thread: pin, then open what the core owns.
fn build_core(cfg: &EngineConfig, cpu: Option<usize>) -> Result<Core, String> {
    if let Some(cpu) = cpu {
        topology::pin_current_thread(cpu).map_err(|e| e.to_string())?;
    }
    // A core's posts never wait: one slow peer must not stop the loop that serves the
    // others (a full queue defers the post to a later turn instead).
    let endpoint = EndpointConfig {
        post_timeout: std::time::Duration::ZERO,
        ..cfg.endpoint.clone()
    };
    // A core takes a session's messages only from its peer: it needs their sources.
    let sel = nacre_fabric::Selection {
        sources: true,
        ..cfg.fabric.clone()
    };
    let mut ep = nacre_fabric::open(&sel, &endpoint).map_err(|e| e.to_string())?;
    let pool = BufferPool::new(&cfg.pool, Some(&mut ep)).map_err(|e| e.to_string())?;
    let storage = Storage::new(&cfg.storage, Some(&pool)).map_err(|e| e.to_string())?;
    Core::new(ep, pool, storage, &cfg.reactor).map_err(|e| e.to_string())
}
