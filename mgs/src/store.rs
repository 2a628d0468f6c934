//! What the MGS must keep across restarts (the identity, every role with its owner,
//! epoch and target, the map version), behind one trait so that another store (etcd)
//! can stand in for the embedded one. The embedded store keeps no leases: they restart
//! with a grace period (see `state`). The etcd store mirrors each role's lease as an
//! etcd lease, so that a new leader knows which owners went silent meanwhile.

use nacre_proto::bootstrap::{BootError, Role, ServerEntry, Target};

use super::state::{Changes, Persisted, RoleRecord};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{dir}: no management target here (run `nacre-mgs format` first)")]
    NotFormatted { dir: String },
    #[error("{dir}: a management target exists already (fsname {fsname}); use --force to format over it")]
    Exists { dir: String, fsname: String },
    #[error("{dir}: format version {found}, this build reads {want}")]
    FormatVersion { dir: String, found: u32, want: u32 },
    #[error("store: {0}")]
    Backend(String),
    #[error("store: corrupt record {key}: {why}")]
    Corrupt { key: String, why: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where roles, epochs and the map live.
pub trait Store: Send {
    /// Everything kept, as it was at the last commit.
    fn load(&mut self) -> Result<Persisted, StoreError>;
    /// Makes `changes` durable, atomically, before the caller answers anyone.
    fn commit(&mut self, changes: &Changes) -> Result<(), StoreError>;
    /// Whether this MGS may answer from its state now (an etcd store says no once its
    /// leadership may have passed to another MGS).
    fn authoritative(&self) -> bool {
        true
    }
    /// The owners of `roles` renewed their live leases (a store with leases of its own
    /// keeps them alive; the embedded store keeps none).
    fn note_renewals(&mut self, _roles: &[Role]) {}
}

/// A role record as stored: the server entry (length-prefixed), then the target.
pub fn encode_record(r: &RoleRecord) -> Vec<u8> {
    let server = r.server.encode();
    let mut out = Vec::with_capacity(4 + server.len() + 64);
    out.extend_from_slice(&(server.len() as u32).to_le_bytes());
    out.extend_from_slice(&server);
    out.extend_from_slice(&r.target.encode());
    out
}

pub fn decode_record(bytes: &[u8]) -> Result<RoleRecord, BootError> {
    let short = BootError::Short {
        at: 0,
        want: 4,
        left: bytes.len(),
    };
    let len = bytes
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(short.clone())?;
    let server = bytes.get(4..4 + len).ok_or(short)?;
    Ok(RoleRecord {
        server: ServerEntry::decode(server)?,
        target: Target::decode(&bytes[4 + len..])?,
    })
}
