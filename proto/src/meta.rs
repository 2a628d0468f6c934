//! Metadata (MDS) request and reply bodies.
//!
//! The frame header's opcode says which request a body holds ([`Request::opcode`]); a
//! reply frame carries the errno in the header's status (0 or `-errno`) and, on success,
//! a [`Reply`] body whose first u32 says its shape. Every request body starts with the
//! same head: the caller's credentials and the MDS epoch the caller believes in (a stale
//! epoch is answered ESTALE so the client refetches the cluster map).
//!
//! Strings are a u32 length and that many bytes. Names are 1..=255 bytes without '/' or
//! NUL; symlink targets 1..=4096 bytes without NUL. Decoding checks every length against
//! what is left and against these limits, and refuses trailing bytes.

use crate::body::{BodyError, BodyReader};
use crate::frame::Opcode;
use crate::layout::{LayoutError, StripeSpec, StripedLayout};

pub const NAME_MAX: usize = 255;
pub const PATH_MAX: usize = 4096;
/// Supplementary groups a request may carry.
pub const MAX_GROUPS: usize = 32;
/// Most entries one readdir reply may hold.
pub const READDIR_MAX_ENTRIES: u32 = 1024;
/// Budget for one readdir reply body (`Reply::trim_to`), below the 64 KiB frame body.
pub const READDIR_MAX_BYTES: usize = 60 * 1024;
/// Messages to and from an MDS: room for the largest reply (a full readdir page, or a
/// file's layout over many OSTs) with its header.
pub const MSG_SIZE: usize = 64 * 1024 + 4096;

/// Linux errno values used at the MDS edge.
pub mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const EBADF: i32 = 9;
    pub const EAGAIN: i32 = 11;
    pub const EACCES: i32 = 13;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const EXDEV: i32 = 18;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EMLINK: i32 = 31;
    pub const EDEADLK: i32 = 35;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ENOLCK: i32 = 37;
    pub const ENOSYS: i32 = 38;
    pub const ENOTEMPTY: i32 = 39;
    pub const ENODATA: i32 = 61;
    pub const EBADMSG: i32 = 74;
    pub const ESTALE: i32 = 116;
}

/// Create fails if the name exists (O_EXCL).
pub const CREATE_EXCL: u32 = 1;
/// Create also opens, with the open flags (O_ACCMODE | O_TRUNC) in the bits from
/// [`CREATE_OPEN_SHIFT`] up, and answers with a handle: one round trip for
/// open(O_CREAT), and the creator may open for writing a file whose new mode denies
/// it (POSIX).
pub const CREATE_OPEN: u32 = 2;
pub const CREATE_OPEN_SHIFT: u32 = 16;
/// Rename fails if the target exists (RENAME_NOREPLACE).
pub const RENAME_NOREPLACE: u32 = 1;
/// Open access modes and flags (Linux values).
pub const O_ACCMODE: u32 = 3;
pub const O_RDONLY: u32 = 0;
pub const O_WRONLY: u32 = 1;
pub const O_RDWR: u32 = 2;
pub const O_TRUNC: u32 = 0o1000;

/// Setattr mask bits: which fields of [`SetAttr`] to apply.
pub mod set {
    pub const MODE: u32 = 1;
    pub const UID: u32 = 2;
    pub const GID: u32 = 4;
    pub const SIZE: u32 = 8;
    pub const ATIME: u32 = 16;
    pub const MTIME: u32 = 32;
    pub const CTIME: u32 = 64;
    /// Set atime / mtime to the server's now (`touch` without a time: needs only write access).
    pub const ATIME_NOW: u32 = 128;
    pub const MTIME_NOW: u32 = 256;
    pub const ALL: u32 = 511;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("metadata body truncated: {0}")]
    Short(#[from] BodyError),
    #[error("bad layout: {0}")]
    Layout(#[from] LayoutError),
    #[error("name of {0} bytes is longer than {NAME_MAX}")]
    NameTooLong(usize),
    #[error("symlink target of {0} bytes is longer than {PATH_MAX}")]
    PathTooLong(usize),
    #[error("invalid name: empty, or contains '/' or NUL")]
    BadName,
    #[error("{0} supplementary groups, more than {MAX_GROUPS}")]
    TooManyGroups(u32),
    #[error("unknown {what} value {value}")]
    BadValue { what: &'static str, value: u32 },
    #[error("opcode {0} is not a metadata request")]
    NotMeta(u16),
    #[error("{0} trailing bytes after the body")]
    Trailing(usize),
}

impl MetaError {
    /// The errno a reply to such a request carries.
    pub fn errno(&self) -> i32 {
        match self {
            MetaError::NameTooLong(_) | MetaError::PathTooLong(_) => errno::ENAMETOOLONG,
            MetaError::BadName | MetaError::TooManyGroups(_) | MetaError::Layout(_) => {
                errno::EINVAL
            }
            MetaError::NotMeta(_) => errno::ENOSYS,
            _ => errno::EBADMSG,
        }
    }
}

/// Who asks: uid, primary gid, supplementary gids (at most [`MAX_GROUPS`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Creds {
    pub fn root() -> Creds {
        Creds::default()
    }

    pub fn user(uid: u32, gid: u32) -> Creds {
        Creds {
            uid,
            gid,
            groups: Vec::new(),
        }
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// What every request starts with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Head {
    pub creds: Creds,
    /// The MDS epoch (fencing token) from the client's cluster map.
    pub epoch: u64,
    /// For a request that changes the namespace: who sent it, so that a retry of it is
    /// answered from the MDS's reply cache instead of being applied twice.
    pub replay: Option<ReplayKey>,
}

/// Names one changing request for reply reconstruction (Lustre's idea): a client
/// (random id, stable for its life) holds `tag` while the request is in flight and
/// reuses a tag only after its answer came, so the MDS keeps one reply per (client,
/// tag); `xid` tells a retry of the same request from the tag's next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplayKey {
    pub client: u64,
    pub tag: u32,
    pub xid: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    File = 1,
    Dir = 2,
    Symlink = 3,
}

impl FileKind {
    pub fn from_u32(v: u32) -> Result<FileKind, MetaError> {
        match v {
            1 => Ok(FileKind::File),
            2 => Ok(FileKind::Dir),
            3 => Ok(FileKind::Symlink),
            value => Err(MetaError::BadValue {
                what: "file kind",
                value,
            }),
        }
    }
}

/// Inode attributes. Times are nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    /// Permission bits with setuid, setgid, sticky (0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
}

/// Setattr values; only the fields named in `mask` (see [`set`]) are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetAttr {
    pub mask: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    pub kind: FileKind,
    /// The cookie that resumes a readdir after this entry.
    pub cookie: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Statfs {
    pub inodes_used: u64,
    pub inodes_free: u64,
    pub name_max: u32,
    /// Bytes over the OSTs the MDS last saw in the cluster map (their servers report
    /// capacity and free space to the MGS with every lease renewal).
    pub bytes_total: u64,
    pub bytes_free: u64,
    /// OSTs counted in the bytes: those up or degraded in that map.
    pub osts: u32,
}

/// A metadata request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Lookup {
        parent: u64,
        name: Vec<u8>,
    },
    Create {
        parent: u64,
        name: Vec<u8>,
        mode: u32,
        flags: u32,
        layout: Option<StripeSpec>,
    },
    Open {
        ino: u64,
        flags: u32,
    },
    Close {
        ino: u64,
        handle: u64,
    },
    Getattr {
        ino: u64,
    },
    Setattr {
        ino: u64,
        attr: SetAttr,
    },
    Mkdir {
        parent: u64,
        name: Vec<u8>,
        mode: u32,
    },
    Rmdir {
        parent: u64,
        name: Vec<u8>,
    },
    Readdir {
        dir: u64,
        cookie: u64,
        max: u32,
    },
    Unlink {
        parent: u64,
        name: Vec<u8>,
    },
    Rename {
        parent: u64,
        name: Vec<u8>,
        new_parent: u64,
        new_name: Vec<u8>,
        flags: u32,
    },
    Symlink {
        parent: u64,
        name: Vec<u8>,
        target: Vec<u8>,
    },
    Readlink {
        ino: u64,
    },
    Link {
        ino: u64,
        new_parent: u64,
        new_name: Vec<u8>,
    },
    Statfs,
    GetLayout {
        ino: u64,
    },
    SetLayout {
        ino: u64,
        spec: StripeSpec,
    },
    /// The end of a client's writes (at close or fsync): the MDS keeps the max.
    ReportSize {
        ino: u64,
        size: u64,
    },
    /// A POSIX advisory lock (fcntl F_SETLK / F_GETLK, flock) held at the MDS, so it
    /// holds across clients. Not stored: locks live in the MDS's memory.
    Lock(LockRequest),
}

/// Lock kinds (as `LockRequest::kind` and `LockDesc::kind`).
pub mod lock {
    use std::time::Duration;

    pub const READ: u32 = 0;
    pub const WRITE: u32 = 1;
    pub const UNLOCK: u32 = 2;
    /// Changes no lock: says the client is alive and keeps its locks (`ino`, range
    /// and owner are not used).
    pub const RENEW: u32 = 3;

    /// How long the MDS keeps the locks of a client it has not heard from: past it,
    /// another client's conflicting request takes them away (the holder died).
    pub const LEASE: Duration = Duration::from_secs(10);
    /// How often a client that holds locks renews them: four times a lease, so a
    /// renewal or two may be late.
    pub const RENEW_EVERY: Duration = Duration::from_millis(2500);
    /// How long a restarted MDS takes its clients' replays before new locks: long
    /// enough for a renewal that went to the dead MDS to time out (a renewal's tries
    /// wait [`RENEW_EVERY`] each) and reach the new one on a newer map.
    pub const RECOVERY: Duration = Duration::from_secs(15);
}

/// A byte-range lock request: `owner` of client `client` asks for `kind` on bytes
/// `start..=end` of `ino` (`end` u64::MAX: to the end of the file, however long). With
/// `test`, nothing changes and the reply describes a conflicting lock (F_GETLK). With
/// `replay`, the client takes again a lock it held before the MDS restarted. With
/// `wait`, the owner waits for the lock (F_SETLKW) and asks again after EAGAIN, so
/// the MDS can see a deadlock among waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockRequest {
    pub ino: u64,
    pub client: u64,
    pub owner: u64,
    pub start: u64,
    pub end: u64,
    pub kind: u32,
    pub pid: u32,
    pub test: bool,
    pub replay: bool,
    pub wait: bool,
}

/// A lock as F_GETLK reports it (`kind` UNLOCK: no conflict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockDesc {
    pub kind: u32,
    pub start: u64,
    pub end: u64,
    pub pid: u32,
}

impl Request {
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Lookup { .. } => Opcode::MDS_LOOKUP,
            Request::Create { .. } => Opcode::MDS_CREATE,
            Request::Open { .. } => Opcode::MDS_OPEN,
            Request::Close { .. } => Opcode::MDS_CLOSE,
            Request::Getattr { .. } => Opcode::MDS_GETATTR,
            Request::Setattr { .. } => Opcode::MDS_SETATTR,
            Request::Mkdir { .. } => Opcode::MDS_MKDIR,
            Request::Rmdir { .. } => Opcode::MDS_RMDIR,
            Request::Readdir { .. } => Opcode::MDS_READDIR,
            Request::Unlink { .. } => Opcode::MDS_UNLINK,
            Request::Rename { .. } => Opcode::MDS_RENAME,
            Request::Symlink { .. } => Opcode::MDS_SYMLINK,
            Request::Readlink { .. } => Opcode::MDS_READLINK,
            Request::Link { .. } => Opcode::MDS_LINK,
            Request::Statfs => Opcode::MDS_STATFS,
            Request::GetLayout { .. } => Opcode::MDS_GET_LAYOUT,
            Request::SetLayout { .. } => Opcode::MDS_SET_LAYOUT,
            Request::ReportSize { .. } => Opcode::MDS_REPORT_SIZE,
            Request::Lock(_) => Opcode::MDS_LOCK,
        }
    }

    /// Whether the request only reads the namespace (no commit needed).
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Request::Lookup { .. }
                | Request::Getattr { .. }
                | Request::Readdir { .. }
                | Request::Readlink { .. }
                | Request::Statfs
                | Request::GetLayout { .. }
        )
    }

    /// Appends head and request to `out`.
    pub fn encode(&self, head: &Head, out: &mut Vec<u8>) {
        put_u32(out, head.creds.uid);
        put_u32(out, head.creds.gid);
        put_u32(out, head.creds.groups.len() as u32);
        for g in &head.creds.groups {
            put_u32(out, *g);
        }
        put_u64(out, head.epoch);
        match head.replay {
            // Client id 0 means "no key": clients draw a non-zero id.
            None => put_u64(out, 0),
            Some(k) => {
                put_u64(out, k.client);
                put_u32(out, k.tag);
                put_u64(out, k.xid);
            }
        }
        match self {
            Request::Lookup { parent, name }
            | Request::Rmdir { parent, name }
            | Request::Unlink { parent, name } => put_name_at(out, *parent, name),
            Request::Create {
                parent,
                name,
                mode,
                flags,
                layout,
            } => {
                put_name_at(out, *parent, name);
                put_u32(out, *mode);
                put_u32(out, *flags);
                match layout {
                    None => put_u32(out, 0),
                    Some(spec) => {
                        put_u32(out, 1);
                        spec.encode(out);
                    }
                }
            }
            Request::Open { ino, flags } => {
                put_u64(out, *ino);
                put_u32(out, *flags);
            }
            Request::Close { ino, handle } => {
                put_u64(out, *ino);
                put_u64(out, *handle);
            }
            Request::Getattr { ino } | Request::Readlink { ino } | Request::GetLayout { ino } => {
                put_u64(out, *ino)
            }
            Request::Setattr { ino, attr } => {
                put_u64(out, *ino);
                put_setattr(out, attr);
            }
            Request::Mkdir { parent, name, mode } => {
                put_name_at(out, *parent, name);
                put_u32(out, *mode);
            }
            Request::Readdir { dir, cookie, max } => {
                put_u64(out, *dir);
                put_u64(out, *cookie);
                put_u32(out, *max);
            }
            Request::Rename {
                parent,
                name,
                new_parent,
                new_name,
                flags,
            } => {
                put_name_at(out, *parent, name);
                put_name_at(out, *new_parent, new_name);
                put_u32(out, *flags);
            }
            Request::Symlink {
                parent,
                name,
                target,
            } => {
                put_name_at(out, *parent, name);
                put_bytes(out, target);
            }
            Request::Link {
                ino,
                new_parent,
                new_name,
            } => {
                put_u64(out, *ino);
                put_name_at(out, *new_parent, new_name);
            }
            Request::Statfs => {}
            Request::SetLayout { ino, spec } => {
                put_u64(out, *ino);
                spec.encode(out);
            }
            Request::ReportSize { ino, size } => {
                put_u64(out, *ino);
                put_u64(out, *size);
            }
            Request::Lock(l) => {
                for v in [l.ino, l.client, l.owner, l.start, l.end] {
                    put_u64(out, v);
                }
                put_u32(out, l.kind);
                put_u32(out, l.pid);
                put_u32(
                    out,
                    l.test as u32 | (l.replay as u32) << 1 | (l.wait as u32) << 2,
                );
            }
        }
    }

    /// Decodes the body of a request with `opcode`; the body must be used up exactly.
    pub fn decode(opcode: Opcode, body: &[u8]) -> Result<(Head, Request), MetaError> {
        if !opcode.is_meta() {
            return Err(MetaError::NotMeta(opcode.0));
        }
        let mut r = BodyReader::new(body);
        let head = read_head(&mut r)?;
        let req = read_request(opcode, &mut r)?;
        no_trailing(&mut r)?;
        Ok((head, req))
    }
}

fn read_head(r: &mut BodyReader<'_>) -> Result<Head, MetaError> {
    let uid = r.u32()?;
    let gid = r.u32()?;
    let n = r.u32()?;
    if n as usize > MAX_GROUPS {
        return Err(MetaError::TooManyGroups(n));
    }
    let groups = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
    let epoch = r.u64()?;
    let replay = match r.u64()? {
        0 => None,
        client => Some(ReplayKey {
            client,
            tag: r.u32()?,
            xid: r.u64()?,
        }),
    };
    Ok(Head {
        creds: Creds { uid, gid, groups },
        epoch,
        replay,
    })
}

fn read_request(op: Opcode, r: &mut BodyReader<'_>) -> Result<Request, MetaError> {
    Ok(match op {
        Opcode::MDS_LOOKUP => Request::Lookup {
            parent: r.u64()?,
            name: read_name(r)?,
        },
        Opcode::MDS_CREATE => Request::Create {
            parent: r.u64()?,
            name: read_name(r)?,
            mode: r.u32()?,
            flags: r.u32()?,
            layout: match r.u32()? {
                0 => None,
                1 => Some(StripeSpec::read(r)?),
                value => {
                    return Err(MetaError::BadValue {
                        what: "layout flag",
                        value,
                    })
                }
            },
        },
        Opcode::MDS_OPEN => Request::Open {
            ino: r.u64()?,
            flags: r.u32()?,
        },
        Opcode::MDS_CLOSE => Request::Close {
            ino: r.u64()?,
            handle: r.u64()?,
        },
        Opcode::MDS_GETATTR => Request::Getattr { ino: r.u64()? },
        Opcode::MDS_SETATTR => Request::Setattr {
            ino: r.u64()?,
            attr: read_setattr(r)?,
        },
        Opcode::MDS_MKDIR => Request::Mkdir {
            parent: r.u64()?,
            name: read_name(r)?,
            mode: r.u32()?,
        },
        Opcode::MDS_RMDIR => Request::Rmdir {
            parent: r.u64()?,
            name: read_name(r)?,
        },
        Opcode::MDS_READDIR => Request::Readdir {
            dir: r.u64()?,
            cookie: r.u64()?,
            max: r.u32()?,
        },
        Opcode::MDS_UNLINK => Request::Unlink {
            parent: r.u64()?,
            name: read_name(r)?,
        },
        Opcode::MDS_RENAME => Request::Rename {
            parent: r.u64()?,
            name: read_name(r)?,
            new_parent: r.u64()?,
            new_name: read_name(r)?,
            flags: r.u32()?,
        },
        Opcode::MDS_SYMLINK => Request::Symlink {
            parent: r.u64()?,
            name: read_name(r)?,
            target: read_target(r)?,
        },
        Opcode::MDS_READLINK => Request::Readlink { ino: r.u64()? },
        Opcode::MDS_LINK => Request::Link {
            ino: r.u64()?,
            new_parent: r.u64()?,
            new_name: read_name(r)?,
        },
        Opcode::MDS_STATFS => Request::Statfs,
        Opcode::MDS_GET_LAYOUT => Request::GetLayout { ino: r.u64()? },
        Opcode::MDS_SET_LAYOUT => Request::SetLayout {
            ino: r.u64()?,
            spec: StripeSpec::read(r)?,
        },
        Opcode::MDS_REPORT_SIZE => Request::ReportSize {
            ino: r.u64()?,
            size: r.u64()?,
        },
        Opcode::MDS_LOCK => {
            let l = LockRequest {
                ino: r.u64()?,
                client: r.u64()?,
                owner: r.u64()?,
                start: r.u64()?,
                end: r.u64()?,
                kind: r.u32()?,
                pid: r.u32()?,
                test: false,
                replay: false,
                wait: false,
            };
            let l = match r.u32()? {
                flags if flags <= 7 => LockRequest {
                    test: flags & 1 != 0,
                    replay: flags & 2 != 0,
                    wait: flags & 4 != 0,
                    ..l
                },
                value => {
                    return Err(MetaError::BadValue {
                        what: "lock flags",
                        value,
                    })
                }
            };
            if l.kind > lock::RENEW || l.start > l.end {
                return Err(MetaError::BadValue {
                    what: "lock kind or range",
                    value: l.kind,
                });
            }
            Request::Lock(l)
        }
        other => return Err(MetaError::NotMeta(other.0)),
    })
}

/// Checks a directory entry name: 1..=255 bytes, no '/' and no NUL.
pub fn validate_name(name: &[u8]) -> Result<(), MetaError> {
    if name.len() > NAME_MAX {
        return Err(MetaError::NameTooLong(name.len()));
    }
    if name.is_empty() || name.iter().any(|&b| b == b'/' || b == 0) {
        return Err(MetaError::BadName);
    }
    Ok(())
}

/// Checks a symlink target: 1..=4096 bytes, no NUL.
pub fn validate_target(target: &[u8]) -> Result<(), MetaError> {
    if target.len() > PATH_MAX {
        return Err(MetaError::PathTooLong(target.len()));
    }
    if target.is_empty() || target.contains(&0) {
        return Err(MetaError::BadName);
    }
    Ok(())
}

/// Reads a length-prefixed string, refusing one longer than `max` before reading it.
fn read_string(r: &mut BodyReader<'_>, max: usize) -> Result<Vec<u8>, MetaError> {
    let len = r.u32()? as usize;
    if len > max {
        return Err(if max == NAME_MAX {
            MetaError::NameTooLong(len)
        } else {
            MetaError::PathTooLong(len)
        });
    }
    Ok(r.bytes(len)?.to_vec())
}

fn read_name(r: &mut BodyReader<'_>) -> Result<Vec<u8>, MetaError> {
    let name = read_string(r, NAME_MAX)?;
    validate_name(&name)?;
    Ok(name)
}

fn read_target(r: &mut BodyReader<'_>) -> Result<Vec<u8>, MetaError> {
    let target = read_string(r, PATH_MAX)?;
    validate_target(&target)?;
    Ok(target)
}

fn read_setattr(r: &mut BodyReader<'_>) -> Result<SetAttr, MetaError> {
    let mask = r.u32()?;
    if mask & !set::ALL != 0 {
        return Err(MetaError::BadValue {
            what: "setattr mask",
            value: mask,
        });
    }
    Ok(SetAttr {
        mask,
        mode: r.u32()?,
        uid: r.u32()?,
        gid: r.u32()?,
        size: r.u64()?,
        atime: r.u64()? as i64,
        mtime: r.u64()? as i64,
        ctime: r.u64()? as i64,
    })
}

fn put_setattr(out: &mut Vec<u8>, a: &SetAttr) {
    put_u32(out, a.mask);
    put_u32(out, a.mode);
    put_u32(out, a.uid);
    put_u32(out, a.gid);
    put_u64(out, a.size);
    put_u64(out, a.atime as u64);
    put_u64(out, a.mtime as u64);
    put_u64(out, a.ctime as u64);
}

/// A successful reply body. The first u32 on the wire is the shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Close, rmdir, unlink, rename.
    Done,
    /// Lookup, getattr, setattr, mkdir, symlink, link, report-size.
    Attr(Attr),
    /// Create and open: the attributes, the resolved layout, an open handle (0 for
    /// create), and whether this request made the file (a create may open a file that
    /// was there: then its objects may hold data, and O_TRUNC must empty them).
    Opened {
        attr: Attr,
        layout: Option<StripedLayout>,
        handle: u64,
        created: bool,
    },
    Dir {
        entries: Vec<DirEntry>,
        next_cookie: u64,
        eof: bool,
    },
    Target(Vec<u8>),
    Statfs(Statfs),
    /// A file's layout.
    Layout(StripedLayout),
    /// F_GETLK's answer: the first conflicting lock, or kind UNLOCK.
    Lock(LockDesc),
    /// A directory's default striping.
    DefaultLayout(StripeSpec),
}

const R_DONE: u32 = 0;
const R_ATTR: u32 = 1;
const R_OPENED: u32 = 2;
const R_DIR: u32 = 3;
const R_TARGET: u32 = 4;
const R_STATFS: u32 = 5;
const R_LAYOUT: u32 = 6;
const R_DEFAULT_LAYOUT: u32 = 7;
const R_LOCK: u32 = 8;

impl Reply {
    /// Shortens a readdir page to at most `max` encoded bytes (at least one entry):
    /// the entries left out come with the next cookie. Other replies are left as they
    /// are. The MDT pages readdir with it (`READDIR_MAX_BYTES`).
    pub fn trim_to(&mut self, max: usize) {
        let Reply::Dir {
            entries,
            next_cookie,
            eof,
        } = self
        else {
            return;
        };
        let mut len = 4 + 8 + 4 + 4;
        let keep = entries
            .iter()
            .position(|e| {
                len += dir_entry_wire_len(&e.name);
                len > max
            })
            .map_or(entries.len(), |i| i.max(1));
        if keep < entries.len() {
            entries.truncate(keep);
            *next_cookie = entries[keep - 1].cookie;
            *eof = false;
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Done => put_u32(out, R_DONE),
            Reply::Attr(a) => {
                put_u32(out, R_ATTR);
                put_attr(out, a);
            }
            Reply::Opened {
                attr,
                layout,
                handle,
                created,
            } => {
                put_u32(out, R_OPENED);
                put_attr(out, attr);
                put_u64(out, *handle);
                match layout {
                    None => put_u32(out, 0),
                    Some(l) => {
                        put_u32(out, 1);
                        l.encode(out);
                    }
                }
                put_u32(out, u32::from(*created));
            }
            Reply::Dir {
                entries,
                next_cookie,
                eof,
            } => {
                put_u32(out, R_DIR);
                put_u64(out, *next_cookie);
                put_u32(out, u32::from(*eof));
                put_u32(out, entries.len() as u32);
                for e in entries {
                    put_u64(out, e.ino);
                    put_u32(out, e.kind as u32);
                    put_u64(out, e.cookie);
                    put_bytes(out, &e.name);
                }
            }
            Reply::Target(t) => {
                put_u32(out, R_TARGET);
                put_bytes(out, t);
            }
            Reply::Statfs(s) => {
                put_u32(out, R_STATFS);
                put_u64(out, s.inodes_used);
                put_u64(out, s.inodes_free);
                put_u32(out, s.name_max);
                put_u64(out, s.bytes_total);
                put_u64(out, s.bytes_free);
                put_u32(out, s.osts);
            }
            Reply::Layout(l) => {
                put_u32(out, R_LAYOUT);
                l.encode(out);
            }
            Reply::DefaultLayout(s) => {
                put_u32(out, R_DEFAULT_LAYOUT);
                s.encode(out);
            }
            Reply::Lock(l) => {
                put_u32(out, R_LOCK);
                put_u32(out, l.kind);
                put_u64(out, l.start);
                put_u64(out, l.end);
                put_u32(out, l.pid);
            }
        }
    }

    pub fn decode(body: &[u8]) -> Result<Reply, MetaError> {
        let mut r = BodyReader::new(body);
        let reply = match r.u32()? {
            R_DONE => Reply::Done,
            R_ATTR => Reply::Attr(read_attr(&mut r)?),
            R_OPENED => Reply::Opened {
                attr: read_attr(&mut r)?,
                handle: r.u64()?,
                layout: match r.u32()? {
                    0 => None,
                    1 => Some(StripedLayout::read(&mut r)?),
                    value => {
                        return Err(MetaError::BadValue {
                            what: "layout flag",
                            value,
                        })
                    }
                },
                created: match r.u32()? {
                    0 => false,
                    1 => true,
                    value => {
                        return Err(MetaError::BadValue {
                            what: "created flag",
                            value,
                        })
                    }
                },
            },
            R_DIR => read_dir(&mut r)?,
            R_TARGET => Reply::Target(read_target(&mut r)?),
            R_STATFS => Reply::Statfs(Statfs {
                inodes_used: r.u64()?,
                inodes_free: r.u64()?,
                name_max: r.u32()?,
                bytes_total: r.u64()?,
                bytes_free: r.u64()?,
                osts: r.u32()?,
            }),
            R_LAYOUT => Reply::Layout(StripedLayout::read(&mut r)?),
            R_DEFAULT_LAYOUT => Reply::DefaultLayout(StripeSpec::read(&mut r)?),
            R_LOCK => Reply::Lock(LockDesc {
                kind: r.u32()?,
                start: r.u64()?,
                end: r.u64()?,
                pid: r.u32()?,
            }),
            value => {
                return Err(MetaError::BadValue {
                    what: "reply shape",
                    value,
                })
            }
        };
        no_trailing(&mut r)?;
        Ok(reply)
    }
}

fn read_dir(r: &mut BodyReader<'_>) -> Result<Reply, MetaError> {
    let next_cookie = r.u64()?;
    let eof = match r.u32()? {
        0 => false,
        1 => true,
        value => {
            return Err(MetaError::BadValue {
                what: "eof flag",
                value,
            })
        }
    };
    let n = r.u32()?;
    if n > READDIR_MAX_ENTRIES {
        return Err(MetaError::BadValue {
            what: "entry count",
            value: n,
        });
    }
    let mut entries = Vec::with_capacity(n as usize);
    for _ in 0..n {
        entries.push(DirEntry {
            ino: r.u64()?,
            kind: FileKind::from_u32(r.u32()?)?,
            cookie: r.u64()?,
            name: read_name(r)?,
        });
    }
    Ok(Reply::Dir {
        entries,
        next_cookie,
        eof,
    })
}

/// Encoded size of one readdir entry (for the reply byte budget).
fn dir_entry_wire_len(name: &[u8]) -> usize {
    8 + 4 + 8 + 4 + name.len()
}

fn put_attr(out: &mut Vec<u8>, a: &Attr) {
    put_u64(out, a.ino);
    put_u32(out, a.kind as u32);
    put_u32(out, a.mode);
    put_u32(out, a.uid);
    put_u32(out, a.gid);
    put_u32(out, a.nlink);
    put_u64(out, a.size);
    put_u64(out, a.atime as u64);
    put_u64(out, a.mtime as u64);
    put_u64(out, a.ctime as u64);
}

fn read_attr(r: &mut BodyReader<'_>) -> Result<Attr, MetaError> {
    Ok(Attr {
        ino: r.u64()?,
        kind: FileKind::from_u32(r.u32()?)?,
        mode: r.u32()?,
        uid: r.u32()?,
        gid: r.u32()?,
        nlink: r.u32()?,
        size: r.u64()?,
        atime: r.u64()? as i64,
        mtime: r.u64()? as i64,
        ctime: r.u64()? as i64,
    })
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

fn put_name_at(out: &mut Vec<u8>, parent: u64, name: &[u8]) {
    put_u64(out, parent);
    put_bytes(out, name);
}

fn no_trailing(r: &mut BodyReader<'_>) -> Result<(), MetaError> {
    match r.rest().len() {
        0 => Ok(()),
        n => Err(MetaError::Trailing(n)),
    }
}
