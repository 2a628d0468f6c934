//! nacre-fabric: safe libfabric for nacre's data path.
//!
//! Provider discovery ([`Info`]), RDM endpoints with their own completion queue and
//! address vector ([`Endpoint`]), memory registration ([`MemoryRegion`]), messages and
//! RMA read/write. Progress is manual: nothing moves unless the owner polls.
//!
//! EFA's memory-registration rules are this layer's rules on every provider: data calls
//! only take registered memory and always pass its descriptor; remote addresses and
//! keys come only from a peer's registration descriptor and are bounds-checked.
//! It knows nothing of files, and must never block or allocate per operation.

mod endpoint;
mod error;
mod info;
mod memory;
mod shm_sweep;
pub mod signals;
pub mod testing;

pub use endpoint::{Completion, Endpoint, EndpointConfig, OpKind, PeerAddr};
pub use error::{strerror, CompletionError, Error, ErrorKind, Result};
pub use info::{
    default_node, list_providers, mr_mode_names, provider_query, source_for, Info, ProviderSummary,
    Selection,
};
pub use memory::{Access, ExternalRegion, LocalSlice, Memory, MemoryRegion, Pages};
pub use nacre_proto::BulkDesc;
pub use shm_sweep::{shm_peer_gone, shm_peer_pid};

/// Opens an endpoint on the first provider that matches `sel`.
pub fn open(sel: &Selection, cfg: &EndpointConfig) -> Result<Endpoint> {
    Endpoint::open(Info::find(sel)?, cfg)
}
