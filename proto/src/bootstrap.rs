//! The bootstrap protocol: what servers and clients say to the management service (MGS)
//! over TCP, and the cluster map it hands out.
//!
//! One request, one reply, in order, on a TCP connection. Every frame is a 16-byte header
//! and a body (little-endian):
//!
//! | off | size | field                                     |
//! |-----|------|-------------------------------------------|
//! | 0   | 4    | magic `NCRB`                              |
//! | 4   | 2    | version (1)                               |
//! | 6   | 2    | opcode (a reply repeats its request's)    |
//! | 8   | 4    | status: 0, or a negative errno (replies)  |
//! | 12  | 4    | body length                               |
//!
//! A failed reply's body is a UTF-8 message. Every length and count is checked against
//! the [limits](MAX_REQUEST_BODY) and against the bytes actually left before anything is
//! allocated, so a hostile peer cannot make a decoder allocate more than it sent.

use std::fmt;

/// `NCRB` as a little-endian u32.
pub const BOOT_MAGIC: u32 = u32::from_le_bytes(*b"NCRB");
pub const BOOT_VERSION: u16 = 1;
pub const BOOT_HEADER_LEN: usize = 16;

/// Largest request body (a claim with every core's address is the largest request).
pub const MAX_REQUEST_BODY: u32 = 128 * 1024;
/// Largest reply body, hence largest encoded map: the MGS refuses a claim that would
/// grow the map past it, so a map fetch is always one bounded frame.
pub const MAX_REPLY_BODY: u32 = 4 * 1024 * 1024;
pub const MAX_NODE_LEN: usize = 256;
pub const MAX_PROVIDER_LEN: usize = 64;
pub const MAX_FSNAME_LEN: usize = 64;
/// Engine cores one server may publish.
pub const MAX_CORES: usize = 128;
/// One core's fabric address (opaque; EFA's are 32 bytes, tcp's 16 to 128).
pub const MAX_ADDR_LEN: usize = 512;
/// Longest wait a map long poll may ask for.
pub const MAX_WAIT_MS: u32 = 60_000;
pub const MAX_MESSAGE_LEN: usize = 1024;

/// Errno values the MGS answers with.
pub mod errno {
    pub const EBUSY: i32 = 16;
    pub const EINVAL: i32 = 22;
    pub const ENOSPC: i32 = 28;
    pub const EBADMSG: i32 = 74;
    pub const EMSGSIZE: i32 = 90;
    pub const EOPNOTSUPP: i32 = 95;
    pub const ESTALE: i32 = 116;
    pub const EIO: i32 = 5;
    pub const ENOENT: i32 = 2;
    pub const EEXIST: i32 = 17;
    /// This MGS cannot answer now (not the leader, no leader reachable): try again or
    /// try another MGS.
    pub const EAGAIN: i32 = 11;
    /// Not authenticated, or not as what the request needs (a server's key).
    pub const EACCES: i32 = 13;
}

/// Bytes of a nonce and of a proof in the authentication exchange.
pub const NONCE_LEN: usize = 32;
pub const PROOF_LEN: usize = 32;
/// Longest encoded principal (`nacre_auth::Principal`).
pub const MAX_PRINCIPAL_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootError {
    #[error("truncated: wanted {want} bytes at offset {at}, {left} left")]
    Short { at: usize, want: usize, left: usize },
    #[error("bad magic {0:#010x}: not a nacre bootstrap frame")]
    BadMagic(u32),
    #[error("unsupported bootstrap version {0} (this build speaks {BOOT_VERSION})")]
    UnsupportedVersion(u16),
    #[error("unknown opcode {0}")]
    UnknownOp(u16),
    #[error("body of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u32, max: u32 },
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("{field}: {len} bytes exceeds the limit of {max}")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field}: {count} entries exceeds the limit of {max}")]
    TooMany {
        field: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{field}: not UTF-8")]
    NotUtf8 { field: &'static str },
    #[error("{field}: bad value {value}")]
    BadValue { field: &'static str, value: u64 },
}

impl BootError {
    /// The errno a reply to such a request carries.
    pub fn errno(&self) -> i32 {
        match self {
            BootError::UnsupportedVersion(_) | BootError::UnknownOp(_) => errno::EOPNOTSUPP,
            BootError::TooLarge { .. } => errno::EMSGSIZE,
            _ => errno::EBADMSG,
        }
    }
}

/// An operation. A reply carries its request's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootOp {
    Claim = 1,
    Renew = 2,
    Release = 3,
    FetchMap = 4,
    WaitMap = 5,
    /// Authentication, step 1: the client's nonce; the MGS answers its own and the
    /// file system's name (which key to use).
    AuthBegin = 6,
    /// Step 2: who the client says it is and its proof; the MGS answers its own proof.
    AuthProve = 7,
    /// Sets (or clears) root squash: needs the file system key.
    SetRootSquash = 8,
}

impl BootOp {
    pub fn from_u16(v: u16) -> Result<BootOp, BootError> {
        Ok(match v {
            1 => BootOp::Claim,
            2 => BootOp::Renew,
            3 => BootOp::Release,
            4 => BootOp::FetchMap,
            5 => BootOp::WaitMap,
            6 => BootOp::AuthBegin,
            7 => BootOp::AuthProve,
            8 => BootOp::SetRootSquash,
            _ => return Err(BootError::UnknownOp(v)),
        })
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootHeader {
    pub op: BootOp,
    /// 0, or a negative errno in a reply.
    pub status: i32,
    pub body_len: u32,
}

impl BootHeader {
    /// Decodes and checks a header; `max_body` is what the receiver accepts.
    pub fn decode(bytes: &[u8], max_body: u32) -> Result<BootHeader, BootError> {
        let mut d = Dec::new(bytes);
        let magic = d.u32()?;
        if magic != BOOT_MAGIC {
            return Err(BootError::BadMagic(magic));
        }
        let version = d.u16()?;
        if version != BOOT_VERSION {
            return Err(BootError::UnsupportedVersion(version));
        }
        let op = BootOp::from_u16(d.u16()?)?;
        let status = d.u32()? as i32;
        let body_len = d.u32()?;
        if body_len > max_body {
            return Err(BootError::TooLarge {
                len: body_len,
                max: max_body,
            });
        }
        Ok(BootHeader {
            op,
            status,
            body_len,
        })
    }
}

/// One whole frame: header then body.
pub fn encode_frame(op: BootOp, status: i32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(BOOT_HEADER_LEN + body.len());
    out.extend_from_slice(&BOOT_MAGIC.to_le_bytes());
    out.extend_from_slice(&BOOT_VERSION.to_le_bytes());
    out.extend_from_slice(&(op as u16).to_le_bytes());
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// What kind of server holds a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RoleKind {
    Mds = 1,
    Oss = 2,
}

impl RoleKind {
    fn from_u32(v: u32) -> Result<RoleKind, BootError> {
        match v {
            1 => Ok(RoleKind::Mds),
            2 => Ok(RoleKind::Oss),
            _ => Err(BootError::BadValue {
                field: "role kind",
                value: v.into(),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RoleKind::Mds => "mds",
            RoleKind::Oss => "oss",
        }
    }

    /// The kind of target a role of this kind serves.
    pub fn target_kind(self) -> TargetKind {
        match self {
            RoleKind::Mds => TargetKind::Mdt,
            RoleKind::Oss => TargetKind::Ost,
        }
    }
}

/// A role: `mds0`, `oss3`. Each role serves the target of the same index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Role {
    pub kind: RoleKind,
    pub index: u32,
}

impl Role {
    /// Parses `mds0`, `oss12`.
    pub fn parse(s: &str) -> Option<Role> {
        let (kind, digits) = if let Some(d) = s.strip_prefix("mds") {
            (RoleKind::Mds, d)
        } else {
            (RoleKind::Oss, s.strip_prefix("oss")?)
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Role {
            kind,
            index: digits.parse().ok()?,
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind.name(), self.index)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    Mdt = 1,
    Ost = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetState {
    Up = 1,
    Down = 2,
    Degraded = 3,
}

impl TargetState {
    fn from_u32(v: u32) -> Result<TargetState, BootError> {
        match v {
            1 => Ok(TargetState::Up),
            2 => Ok(TargetState::Down),
            3 => Ok(TargetState::Degraded),
            _ => Err(BootError::BadValue {
                field: "target state",
                value: v.into(),
            }),
        }
    }
}

/// What a server says of its target in each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetReport {
    pub state: TargetState,
    pub capacity: u64,
    pub free: u64,
    /// The MDS's rebuild of stale copies, per OST that has any (empty from an OSS).
    pub rebuild: Vec<RebuildProgress>,
    /// From an MDS: replaced OSTs whose lost copies it has marked stale, each with the
    /// generation it did so for (empty from an OSS).
    pub settled: Vec<Settled>,
    /// From an MDS: the node of its standby that holds every operation it acknowledged
    /// (empty: none). Only that node may take the role over once its lease lapses.
    pub standby: String,
}

/// An MDS has marked stale every copy it knows of on OST `ost` from before its
/// `generation`: the copies the replaced target lost. The OST may serve again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub ost: u32,
    pub generation: u64,
}

impl Settled {
    const LEN: usize = 4 + 8;
}

/// Most OSTs a rebuild report names.
pub const MAX_REBUILD_ENTRIES: usize = 4096;

/// How far the rebuild of the stale copies on one OST has come: `left` bytes of files
/// still to copy out of `total` since the OST last had none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildProgress {
    pub ost: u32,
    pub left: u64,
    pub total: u64,
}

impl RebuildProgress {
    const LEN: usize = 4 + 8 + 8;

    /// Whole per cent done, 99 at most while anything is left.
    pub fn percent(&self) -> u64 {
        let done = self.total.saturating_sub(self.left) as u128 * 100;
        match self.total {
            0 => 100,
            t => ((done / t as u128) as u64).min(if self.left > 0 { 99 } else { 100 }),
        }
    }
}

/// Ask for a role of `kind`: the MGS gives back this node's own role if it has one, else
/// `want` (a standby that waits to take one role over), else a lapsed role of that kind,
/// else the next new index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    pub kind: RoleKind,
    pub want: Option<u32>,
    /// The server's identity: stable across its restarts (host name, instance id...).
    pub node: String,
    /// libfabric provider the cores' addresses belong to (`tcp`, `efa`...).
    pub provider: String,
    /// Every engine core's fabric address, in core order (opaque bytes).
    pub cores: Vec<Vec<u8>>,
    /// The server brings no target (its directory is empty): only a new role fits it.
    /// A role that exists has data this server does not hold: in a scratch file system
    /// it is neither given a lapsed role nor its own (a wiped directory) back; in a
    /// persistent one it may take either as a replacement (a new generation).
    pub empty: bool,
    /// The generation of the target the server brings (0: none, or not an OSS).
    pub generation: u64,
    /// Where an MDS ships its redo log to a standby (`IP:PORT`, TCP; empty: nowhere).
    pub replication: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewRequest {
    pub role: Role,
    pub epoch: u64,
    pub report: TargetReport,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootRequest {
    Claim(ClaimRequest),
    Renew(RenewRequest),
    Release {
        role: Role,
        epoch: u64,
    },
    FetchMap,
    /// Answer once the map's version exceeds `newer_than`, or after `wait_ms` with
    /// whatever map is current.
    WaitMap {
        newer_than: u64,
        wait_ms: u32,
    },
    AuthBegin {
        client_nonce: [u8; NONCE_LEN],
    },
    AuthProve {
        /// The principal as `nacre_auth::Principal::encode` wrote it.
        principal: Vec<u8>,
        proof: [u8; PROOF_LEN],
    },
    /// `Some((uid, gid))`: root of clients (but the file system key's) acts as it.
    SetRootSquash(Option<(u32, u32)>),
}

/// The MGS's answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    /// The fencing token: put it in everything sent as this role.
    pub epoch: u64,
    /// The role's target was never served: format it.
    pub fresh: bool,
    /// The generation the role's target is served at: a target whose data was lost
    /// (a replacement on an empty directory) or may be old (it was replaced while its
    /// server was away) gets a new one, and holds nothing of the old until rebuilt.
    pub generation: u64,
    pub heartbeat_ms: u32,
    pub lease_ms: u32,
    pub fsname: String,
    pub fsid: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewed {
    pub lease_ms: u32,
    pub map_version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootReply {
    Granted(Grant),
    Renewed(Renewed),
    Released,
    Map(ClusterMap),
    Challenge {
        fsname: String,
        server_nonce: [u8; NONCE_LEN],
        /// Whether this MGS serves only authenticated connections (it has a key).
        required: bool,
        /// The rest of the connection is TLS: the client starts its handshake next,
        /// and its proof binds the session's exporter (docs/security.md).
        tls: bool,
    },
    /// The MGS's proof: it holds the file system key too.
    Proven {
        proof: [u8; PROOF_LEN],
    },
    /// A setting changed (the map's new version carries it).
    Set,
    /// Refused: a positive errno and why.
    Failed {
        errno: i32,
        message: String,
    },
}

/// Stripe defaults for files created without a layout of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutDefaults {
    pub stripe_count: u32,
    pub stripe_size: u64,
    /// Copies of every file: 1 in a scratch file system, 2 in a persistent one.
    pub mirror_count: u32,
}

impl Default for LayoutDefaults {
    fn default() -> Self {
        LayoutDefaults {
            stripe_count: 1,
            stripe_size: 1 << 20,
            mirror_count: 1,
        }
    }
}

/// What a file system promises, as FSx for Lustre's deployment types: scratch keeps
/// one copy of every byte; persistent keeps two, on OSTs of different servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Deployment {
    #[default]
    Scratch,
    Persistent,
}

impl Deployment {
    /// The default mirror count of new files.
    pub fn mirrors(self) -> u32 {
        match self {
            Deployment::Scratch => 1,
            Deployment::Persistent => 2,
        }
    }

    pub fn of(layout: &LayoutDefaults) -> Deployment {
        match layout.mirror_count > 1 {
            true => Deployment::Persistent,
            false => Deployment::Scratch,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Deployment::Scratch => "scratch",
            Deployment::Persistent => "persistent",
        }
    }
}

impl std::str::FromStr for Deployment {
    type Err = String;

    fn from_str(s: &str) -> Result<Deployment, String> {
        match s {
            "scratch" => Ok(Deployment::Scratch),
            "persistent" => Ok(Deployment::Persistent),
            _ => Err(format!(
                "deployment type {s:?}: expected scratch or persistent"
            )),
        }
    }
}

/// One target as the map shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: TargetKind,
    pub index: u32,
    pub role: Role,
    /// The node that owns the role now.
    pub owner: String,
    pub epoch: u64,
    pub state: TargetState,
    pub capacity: u64,
    pub free: u64,
    /// Grows each time the target is replaced (its data lost or possibly old); 1 at
    /// first.
    pub generation: u64,
    /// The generation up to which the MDS has marked the copies the target lost stale.
    /// Below `generation`, the target is down to clients whoever serves it.
    pub settled: u64,
}

/// One server (the current owner of a role) and where its engine cores listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEntry {
    pub role: Role,
    pub node: String,
    pub epoch: u64,
    pub provider: String,
    pub cores: Vec<Vec<u8>>,
    /// Where a standby follows this MDS's redo log (`IP:PORT`; empty: not an MDS).
    pub replication: String,
}

/// Who serves what: every client and server decodes this.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterMap {
    /// Grows on every change of owner, epoch, state or addresses.
    pub version: u64,
    pub fsname: String,
    pub fsid: u64,
    pub layout: LayoutDefaults,
    /// The uid and gid that root of a client acts as (Lustre's root squash); the file
    /// system key's holders are not squashed.
    pub root_squash: Option<(u32, u32)>,
    pub targets: Vec<Target>,
    pub servers: Vec<ServerEntry>,
    /// OSTs whose stale copies the MDS is rebuilding (not a map change: it moves with
    /// every MDS heartbeat, as space figures do).
    pub rebuild: Vec<RebuildProgress>,
}

impl ClusterMap {
    pub fn server(&self, role: Role) -> Option<&ServerEntry> {
        self.servers.iter().find(|s| s.role == role)
    }

    /// Whether `role`'s target is down (its server's lease lapsed, nobody took it).
    pub fn target_down(&self, role: Role) -> bool {
        self.target(role)
            .is_some_and(|t| t.state == TargetState::Down)
    }

    pub fn target(&self, role: Role) -> Option<&Target> {
        self.targets.iter().find(|t| t.role == role)
    }

    /// Whether `role`'s target is up with a server in this map.
    pub fn serves(&self, role: Role) -> bool {
        self.target(role)
            .is_some_and(|t| t.state == TargetState::Up)
            && self.server(role).is_some()
    }

    /// The rebuild of OST `ost`'s stale copies, if it has any.
    pub fn rebuild_of(&self, ost: u32) -> Option<&RebuildProgress> {
        self.rebuild.iter().find(|r| r.ost == ost)
    }

    /// Whether `epoch` is the current owner's epoch of `role` in this map: a peer that
    /// presents an older one is a stale owner and must be refused.
    pub fn is_current(&self, role: Role, epoch: u64) -> bool {
        self.server(role).is_some_and(|s| s.epoch == epoch)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        self.encode_into(&mut e);
        e.0
    }

    pub fn decode(body: &[u8]) -> Result<ClusterMap, BootError> {
        let mut d = Dec::new(body);
        let map = ClusterMap::decode_from(&mut d)?;
        d.finish()?;
        Ok(map)
    }

    fn encode_into(&self, e: &mut Enc) {
        e.u64(self.version);
        e.str(&self.fsname);
        e.u64(self.fsid);
        e.u32(self.layout.stripe_count);
        e.u64(self.layout.stripe_size);
        e.u32(self.layout.mirror_count);
        e.squash(self.root_squash);
        e.u32(self.targets.len() as u32);
        for t in &self.targets {
            t.encode_into(e);
        }
        e.u32(self.servers.len() as u32);
        for s in &self.servers {
            s.encode_into(e);
        }
        e.rebuild(&self.rebuild);
    }

    fn decode_from(d: &mut Dec<'_>) -> Result<ClusterMap, BootError> {
        let version = d.u64()?;
        let fsname = d.str("fsname", MAX_FSNAME_LEN)?;
        let fsid = d.u64()?;
        let layout = LayoutDefaults {
            stripe_count: d.u32()?,
            stripe_size: d.u64()?,
            mirror_count: d.u32()?,
        };
        let root_squash = d.squash()?;
        let n = d.count("targets", usize::MAX, Target::MIN_LEN)?;
        let targets = (0..n)
            .map(|_| Target::decode_from(d))
            .collect::<Result<_, _>>()?;
        let n = d.count("servers", usize::MAX, ServerEntry::MIN_LEN)?;
        let servers = (0..n)
            .map(|_| ServerEntry::decode_from(d))
            .collect::<Result<_, _>>()?;
        Ok(ClusterMap {
            version,
            fsname,
            fsid,
            layout,
            root_squash,
            targets,
            servers,
            rebuild: d.rebuild()?,
        })
    }
}

impl Target {
    const MIN_LEN: usize = 4 * 4 + 4 + 8 + 4 + 16 + 16;

    /// Encoded alone (the MGS's store keeps records this way).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        self.encode_into(&mut e);
        e.0
    }

    /// A stored record; one written before targets had generations is at its first.
    pub fn decode(bytes: &[u8]) -> Result<Target, BootError> {
        let mut d = Dec::new(bytes);
        let mut t = Target::decode_first(&mut d)?;
        if d.left() > 0 {
            t.generation = d.u64()?;
            t.settled = d.u64()?;
        }
        d.finish()?;
        Ok(t)
    }

    fn encode_into(&self, e: &mut Enc) {
        e.u32(self.kind as u32);
        e.u32(self.index);
        e.role(self.role);
        e.str(&self.owner);
        e.u64(self.epoch);
        e.u32(self.state as u32);
        e.u64(self.capacity);
        e.u64(self.free);
        e.u64(self.generation);
        e.u64(self.settled);
    }

    fn decode_from(d: &mut Dec<'_>) -> Result<Target, BootError> {
        let mut t = Target::decode_first(d)?;
        t.generation = d.u64()?;
        t.settled = d.u64()?;
        Ok(t)
    }

    /// The fields targets had before generations; at generation 1.
    fn decode_first(d: &mut Dec<'_>) -> Result<Target, BootError> {
        let kind = match d.u32()? {
            1 => TargetKind::Mdt,
            2 => TargetKind::Ost,
            v => {
                return Err(BootError::BadValue {
                    field: "target kind",
                    value: v.into(),
                })
            }
        };
        Ok(Target {
            kind,
            index: d.u32()?,
            role: d.role()?,
            owner: d.str("owner", MAX_NODE_LEN)?,
            epoch: d.u64()?,
            state: TargetState::from_u32(d.u32()?)?,
            capacity: d.u64()?,
            free: d.u64()?,
            generation: 1,
            settled: 1,
        })
    }
}

impl ServerEntry {
    const MIN_LEN: usize = 8 + 4 + 8 + 4 + 4 + 4;

    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        self.encode_into(&mut e);
        e.0
    }

    /// A stored record; one written before replication addresses has none.
    pub fn decode(bytes: &[u8]) -> Result<ServerEntry, BootError> {
        let mut d = Dec::new(bytes);
        let s = ServerEntry {
            role: d.role()?,
            node: d.str("node", MAX_NODE_LEN)?,
            epoch: d.u64()?,
            provider: d.str("provider", MAX_PROVIDER_LEN)?,
            cores: d.cores()?,
            replication: match d.left() {
                0 => String::new(),
                _ => d.str("replication", MAX_NODE_LEN)?,
            },
        };
        d.finish()?;
        Ok(s)
    }

    fn encode_into(&self, e: &mut Enc) {
        e.role(self.role);
        e.str(&self.node);
        e.u64(self.epoch);
        e.str(&self.provider);
        e.cores(&self.cores);
        e.str(&self.replication);
    }

    fn decode_from(d: &mut Dec<'_>) -> Result<ServerEntry, BootError> {
        Ok(ServerEntry {
            role: d.role()?,
            node: d.str("node", MAX_NODE_LEN)?,
            epoch: d.u64()?,
            provider: d.str("provider", MAX_PROVIDER_LEN)?,
            cores: d.cores()?,
            replication: d.str("replication", MAX_NODE_LEN)?,
        })
    }
}

impl BootRequest {
    pub fn op(&self) -> BootOp {
        match self {
            BootRequest::Claim(_) => BootOp::Claim,
            BootRequest::Renew(_) => BootOp::Renew,
            BootRequest::Release { .. } => BootOp::Release,
            BootRequest::FetchMap => BootOp::FetchMap,
            BootRequest::WaitMap { .. } => BootOp::WaitMap,
            BootRequest::AuthBegin { .. } => BootOp::AuthBegin,
            BootRequest::AuthProve { .. } => BootOp::AuthProve,
            BootRequest::SetRootSquash(_) => BootOp::SetRootSquash,
        }
    }

    /// The whole frame. Fails if a field is over its limit (the MGS would refuse it).
    pub fn encode(&self) -> Result<Vec<u8>, BootError> {
        let mut e = Enc::default();
        match self {
            BootRequest::Claim(c) => {
                check_len("node", c.node.len(), MAX_NODE_LEN)?;
                check_len("provider", c.provider.len(), MAX_PROVIDER_LEN)?;
                check_len("replication", c.replication.len(), MAX_NODE_LEN)?;
                if c.cores.len() > MAX_CORES {
                    return Err(BootError::TooMany {
                        field: "cores",
                        count: c.cores.len(),
                        max: MAX_CORES,
                    });
                }
                for a in &c.cores {
                    check_len("core address", a.len(), MAX_ADDR_LEN)?;
                }
                e.u32(c.kind as u32);
                e.u32(c.want.map_or(0, |w| w.saturating_add(1)));
                e.str(&c.node);
                e.str(&c.provider);
                e.cores(&c.cores);
                e.u32(c.empty.into());
                e.u64(c.generation);
                e.str(&c.replication);
            }
            BootRequest::Renew(r) => {
                e.role(r.role);
                e.u64(r.epoch);
                e.u32(r.report.state as u32);
                e.u64(r.report.capacity);
                e.u64(r.report.free);
                e.rebuild(&r.report.rebuild);
                e.settled(&r.report.settled);
                e.str(&r.report.standby);
            }
            BootRequest::Release { role, epoch } => {
                e.role(*role);
                e.u64(*epoch);
            }
            BootRequest::FetchMap => {}
            BootRequest::WaitMap {
                newer_than,
                wait_ms,
            } => {
                e.u64(*newer_than);
                e.u32(*wait_ms);
            }
            BootRequest::AuthBegin { client_nonce } => e.0.extend_from_slice(client_nonce),
            BootRequest::AuthProve { principal, proof } => {
                check_len("principal", principal.len(), MAX_PRINCIPAL_LEN)?;
                e.bytes(principal);
                e.0.extend_from_slice(proof);
            }
            BootRequest::SetRootSquash(squash) => e.squash(*squash),
        }
        check_body(e.0.len(), MAX_REQUEST_BODY)?;
        Ok(encode_frame(self.op(), 0, &e.0))
    }

    /// Decodes a request body (the header already checked it is within the limit).
    pub fn decode(op: BootOp, body: &[u8]) -> Result<BootRequest, BootError> {
        check_body(body.len(), MAX_REQUEST_BODY)?;
        let mut d = Dec::new(body);
        let req = match op {
            BootOp::Claim => {
                let kind = RoleKind::from_u32(d.u32()?)?;
                let want = d.u32()?.checked_sub(1);
                BootRequest::Claim(ClaimRequest {
                    kind,
                    want,
                    node: d.str("node", MAX_NODE_LEN)?,
                    provider: d.str("provider", MAX_PROVIDER_LEN)?,
                    cores: d.cores()?,
                    empty: d.u32()? != 0,
                    generation: d.u64()?,
                    replication: d.str("replication", MAX_NODE_LEN)?,
                })
            }
            BootOp::Renew => BootRequest::Renew(RenewRequest {
                role: d.role()?,
                epoch: d.u64()?,
                report: TargetReport {
                    state: TargetState::from_u32(d.u32()?)?,
                    capacity: d.u64()?,
                    free: d.u64()?,
                    rebuild: d.rebuild()?,
                    settled: d.settled()?,
                    standby: d.str("standby", MAX_NODE_LEN)?,
                },
            }),
            BootOp::Release => BootRequest::Release {
                role: d.role()?,
                epoch: d.u64()?,
            },
            BootOp::FetchMap => BootRequest::FetchMap,
            BootOp::WaitMap => BootRequest::WaitMap {
                newer_than: d.u64()?,
                wait_ms: d.u32()?,
            },
            BootOp::AuthBegin => BootRequest::AuthBegin {
                client_nonce: d.fixed()?,
            },
            BootOp::AuthProve => BootRequest::AuthProve {
                principal: d.bytes("principal", MAX_PRINCIPAL_LEN)?.to_vec(),
                proof: d.fixed()?,
            },
            BootOp::SetRootSquash => BootRequest::SetRootSquash(d.squash()?),
        };
        d.finish()?;
        Ok(req)
    }
}

impl BootReply {
    /// A challenge's flags (bit 0: authentication required, bit 1: TLS follows).
    fn with_flags(self, flags: u32) -> Result<BootReply, BootError> {
        if flags > 3 {
            return Err(BootError::BadValue {
                field: "challenge flags",
                value: flags.into(),
            });
        }
        Ok(match self {
            BootReply::Challenge {
                fsname,
                server_nonce,
                ..
            } => BootReply::Challenge {
                fsname,
                server_nonce,
                required: flags & 1 != 0,
                tls: flags & 2 != 0,
            },
            other => other,
        })
    }
}

impl BootReply {
    /// The whole frame answering a request of `op`.
    pub fn encode(&self, op: BootOp) -> Vec<u8> {
        let mut e = Enc::default();
        let status = match self {
            BootReply::Granted(g) => {
                e.role(g.role);
                e.u64(g.epoch);
                e.u32(g.fresh as u32);
                e.u64(g.generation);
                e.u32(g.heartbeat_ms);
                e.u32(g.lease_ms);
                e.str(&g.fsname);
                e.u64(g.fsid);
                0
            }
            BootReply::Renewed(r) => {
                e.u32(r.lease_ms);
                e.u64(r.map_version);
                0
            }
            BootReply::Released | BootReply::Set => 0,
            BootReply::Challenge {
                fsname,
                server_nonce,
                required,
                tls,
            } => {
                e.str(fsname);
                e.0.extend_from_slice(server_nonce);
                e.u32(u32::from(*required) | u32::from(*tls) << 1);
                0
            }
            BootReply::Proven { proof } => {
                e.0.extend_from_slice(proof);
                0
            }
            BootReply::Map(m) => {
                m.encode_into(&mut e);
                0
            }
            BootReply::Failed { errno, message } => {
                let mut cut = message.len().min(MAX_MESSAGE_LEN);
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                e.0.extend_from_slice(&message.as_bytes()[..cut]);
                -errno.abs().max(1)
            }
        };
        encode_frame(op, status, &e.0)
    }

    /// Decodes a reply to a request of `op` (`status` from its header).
    pub fn decode(op: BootOp, status: i32, body: &[u8]) -> Result<BootReply, BootError> {
        check_body(body.len(), MAX_REPLY_BODY)?;
        if status != 0 {
            check_len("message", body.len(), MAX_MESSAGE_LEN)?;
            return Ok(BootReply::Failed {
                errno: status.checked_neg().unwrap_or(i32::MAX),
                message: String::from_utf8_lossy(body).into_owned(),
            });
        }
        let mut d = Dec::new(body);
        let reply = match op {
            BootOp::Claim => BootReply::Granted(Grant {
                role: d.role()?,
                epoch: d.u64()?,
                fresh: d.u32()? != 0,
                generation: d.u64()?,
                heartbeat_ms: d.u32()?,
                lease_ms: d.u32()?,
                fsname: d.str("fsname", MAX_FSNAME_LEN)?,
                fsid: d.u64()?,
            }),
            BootOp::Renew => BootReply::Renewed(Renewed {
                lease_ms: d.u32()?,
                map_version: d.u64()?,
            }),
            BootOp::Release => BootReply::Released,
            BootOp::FetchMap | BootOp::WaitMap => BootReply::Map(ClusterMap::decode_from(&mut d)?),
            BootOp::AuthBegin => BootReply::Challenge {
                fsname: d.str("fsname", MAX_FSNAME_LEN)?,
                server_nonce: d.fixed()?,
                required: false,
                tls: false,
            }
            .with_flags(d.u32()?)?,
            BootOp::AuthProve => BootReply::Proven { proof: d.fixed()? },
            BootOp::SetRootSquash => BootReply::Set,
        };
        d.finish()?;
        Ok(reply)
    }
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), BootError> {
    if len > max {
        return Err(BootError::FieldTooLong { field, len, max });
    }
    Ok(())
}

fn check_body(len: usize, max: u32) -> Result<(), BootError> {
    if len > max as usize {
        return Err(BootError::TooLarge {
            len: len.min(u32::MAX as usize) as u32,
            max,
        });
    }
    Ok(())
}

#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn role(&mut self, r: Role) {
        self.u32(r.kind as u32);
        self.u32(r.index);
    }
    fn cores(&mut self, cores: &[Vec<u8>]) {
        self.u32(cores.len() as u32);
        for c in cores {
            self.bytes(c);
        }
    }
    fn squash(&mut self, squash: Option<(u32, u32)>) {
        match squash {
            None => self.u32(0),
            Some((uid, gid)) => {
                self.u32(1);
                self.u32(uid);
                self.u32(gid);
            }
        }
    }
    /// At most [`MAX_REBUILD_ENTRIES`]: a progress report is not worth a refusal.
    fn rebuild(&mut self, list: &[RebuildProgress]) {
        let list = &list[..list.len().min(MAX_REBUILD_ENTRIES)];
        self.u32(list.len() as u32);
        for r in list {
            self.u32(r.ost);
            self.u64(r.left);
            self.u64(r.total);
        }
    }
    /// At most [`MAX_REBUILD_ENTRIES`], as the rebuild report.
    fn settled(&mut self, list: &[Settled]) {
        let list = &list[..list.len().min(MAX_REBUILD_ENTRIES)];
        self.u32(list.len() as u32);
        for s in list {
            self.u32(s.ost);
            self.u64(s.generation);
        }
    }
}

/// A bounds-checked reader over a body.
struct Dec<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Dec<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Dec { bytes, at: 0 }
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], BootError> {
        if n > self.left() {
            return Err(BootError::Short {
                at: self.at,
                want: n,
                left: self.left(),
            });
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, BootError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, BootError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, BootError> {
        Ok(u64::from(self.u32()?) | (u64::from(self.u32()?) << 32))
    }

    fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], BootError> {
        let len = self.u32()? as usize;
        check_len(field, len, max)?;
        self.take(len)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], BootError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn squash(&mut self) -> Result<Option<(u32, u32)>, BootError> {
        match self.u32()? {
            0 => Ok(None),
            1 => Ok(Some((self.u32()?, self.u32()?))),
            v => Err(BootError::BadValue {
                field: "root squash",
                value: v.into(),
            }),
        }
    }

    fn str(&mut self, field: &'static str, max: usize) -> Result<String, BootError> {
        let b = self.bytes(field, max)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| BootError::NotUtf8 { field })
    }

    /// A count of items of at least `min_len` bytes each: never more than the bytes
    /// left could hold, so a lying count cannot make us allocate.
    fn count(
        &mut self,
        field: &'static str,
        max: usize,
        min_len: usize,
    ) -> Result<usize, BootError> {
        let count = self.u32()? as usize;
        let max = max.min(self.left() / min_len.max(1));
        if count > max {
            return Err(BootError::TooMany { field, count, max });
        }
        Ok(count)
    }

    fn role(&mut self) -> Result<Role, BootError> {
        Ok(Role {
            kind: RoleKind::from_u32(self.u32()?)?,
            index: self.u32()?,
        })
    }

    fn cores(&mut self) -> Result<Vec<Vec<u8>>, BootError> {
        let n = self.count("cores", MAX_CORES, 4)?;
        (0..n)
            .map(|_| Ok(self.bytes("core address", MAX_ADDR_LEN)?.to_vec()))
            .collect()
    }

    fn rebuild(&mut self) -> Result<Vec<RebuildProgress>, BootError> {
        let n = self.count("rebuild", MAX_REBUILD_ENTRIES, RebuildProgress::LEN)?;
        (0..n)
            .map(|_| {
                Ok(RebuildProgress {
                    ost: self.u32()?,
                    left: self.u64()?,
                    total: self.u64()?,
                })
            })
            .collect()
    }

    fn settled(&mut self) -> Result<Vec<Settled>, BootError> {
        let n = self.count("settled", MAX_REBUILD_ENTRIES, Settled::LEN)?;
        (0..n)
            .map(|_| {
                Ok(Settled {
                    ost: self.u32()?,
                    generation: self.u64()?,
                })
            })
            .collect()
    }

    fn finish(&self) -> Result<(), BootError> {
        match self.left() {
            0 => Ok(()),
            n => Err(BootError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ClusterMap {
        let role = Role {
            kind: RoleKind::Oss,
            index: 3,
        };
        ClusterMap {
            rebuild: Vec::new(),
            version: 7,
            fsname: "scratch".into(),
            fsid: 0xfeed,
            layout: LayoutDefaults::default(),
            root_squash: Some((65534, 65534)),
            targets: vec![Target {
                kind: TargetKind::Ost,
                index: 3,
                role,
                owner: "node-a".into(),
                epoch: 2,
                state: TargetState::Degraded,
                capacity: 100,
                free: 40,
                generation: 3,
                settled: 2,
            }],
            servers: vec![ServerEntry {
                role,
                node: "node-a".into(),
                epoch: 2,
                provider: "tcp".into(),
                cores: vec![vec![1, 2, 3], vec![]],
                replication: String::new(),
            }],
        }
    }

    #[test]
    fn map_round_trips_and_says_who_is_current() {
        let m = map();
        let frame = BootReply::Map(m.clone()).encode(BootOp::FetchMap);
        let h = BootHeader::decode(&frame, MAX_REPLY_BODY).unwrap();
        let back = BootReply::decode(h.op, h.status, &frame[BOOT_HEADER_LEN..]).unwrap();
        assert_eq!(back, BootReply::Map(m.clone()));
        let role = m.servers[0].role;
        assert!(m.is_current(role, 2));
        assert!(!m.is_current(role, 1));
        assert_eq!(role.to_string(), "oss3");
        assert_eq!(Role::parse("oss3"), Some(role));
        assert_eq!(Role::parse("oss"), None);
        assert_eq!(Role::parse("mdsx"), None);
    }

    #[test]
    fn rebuild_percent_never_says_done_while_bytes_are_left() {
        let p = |left, total| {
            RebuildProgress {
                ost: 0,
                left,
                total,
            }
            .percent()
        };
        assert_eq!(p(4, 4), 0);
        assert_eq!(p(1, 4), 75);
        assert_eq!(p(1, 1000), 99);
        assert_eq!(p(0, 0), 100);
        assert_eq!(p(5, 4), 0);
    }

    #[test]
    fn oversized_fields_and_lying_counts_are_refused() {
        let claim = ClaimRequest {
            kind: RoleKind::Oss,
            want: None,
            node: "n".repeat(MAX_NODE_LEN + 1),
            provider: "tcp".into(),
            cores: vec![],
            empty: false,
            generation: 1,
            replication: String::new(),
        };
        assert!(matches!(
            BootRequest::Claim(claim).encode(),
            Err(BootError::FieldTooLong { field: "node", .. })
        ));
        // A claim saying it has 2^32-1 cores in a few bytes.
        let mut body = Vec::new();
        body.extend_from_slice(&2u32.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&1u32.to_le_bytes());
        body.push(b'n');
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            BootRequest::decode(BootOp::Claim, &body),
            Err(BootError::TooMany { field: "cores", .. })
        ));
        let frame = encode_frame(BootOp::FetchMap, 0, &[0; 8]);
        assert!(matches!(
            BootHeader::decode(&frame, 4),
            Err(BootError::TooLarge { len: 8, max: 4 })
        ));
        assert!(matches!(
            BootRequest::decode(BootOp::FetchMap, &[0]),
            Err(BootError::Trailing(1))
        ));
    }

    #[test]
    fn failures_carry_errno_and_message() {
        let frame = BootReply::Failed {
            errno: errno::ESTALE,
            message: "stale".into(),
        }
        .encode(BootOp::Renew);
        let h = BootHeader::decode(&frame, MAX_REPLY_BODY).unwrap();
        assert_eq!(h.status, -errno::ESTALE);
        assert_eq!(
            BootReply::decode(h.op, h.status, &frame[BOOT_HEADER_LEN..]).unwrap(),
            BootReply::Failed {
                errno: errno::ESTALE,
                message: "stale".into()
            }
        );
    }
}
