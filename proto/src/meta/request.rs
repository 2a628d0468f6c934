//! The metadata request body: its variants, its opcode, and its encoding after the
//! common head.

use super::wire::{no_trailing, put_bytes, put_name_at, put_u32, put_u64, read_name, read_target};
use super::{
    lock, set, Creds, FileKind, Head, LockRequest, MetaError, ReplayKey, SetAttr, MAX_GROUPS,
};
use crate::body::BodyReader;
use crate::frame::Opcode;
use crate::layout::StripeSpec;

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
    /// A close after writes: the end of the handle's writes (as [`Request::ReportSize`],
    /// allowed by the handle being open for writing) and the close, in one request and
    /// one transaction, so a file written and closed costs the MDS one exchange less.
    CloseSized {
        ino: u64,
        handle: u64,
        size: u64,
    },
    /// Open replay: after an MDS restart a client names again each handle it holds
    /// from an earlier run, so the file stays open (an unlinked one alive) to its
    /// last close.
    Reopen {
        ino: u64,
        handle: u64,
        /// The client's id (as in its replay keys): the handle is its again, and goes
        /// when the client falls silent (see [`Request::Ping`]).
        client: u64,
    },
    /// A client that holds files open says it lives: the MDS closes the handles of a
    /// client it has not heard from for [`OPEN_LEASE`](super::OPEN_LEASE) (any request
    /// under its replay key, a lock request or this counts), as Lustre evicts a client
    /// that stops pinging, so a killed process's opens (an unlinked file's space) do not
    /// stay until the next MDS restart.
    Ping {
        client: u64,
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
    /// A readdir page with each entry's attributes (a mount's readdirplus, `ls -l`):
    /// answered [`Reply::DirPlus`](super::Reply::DirPlus).
    ReaddirPlus {
        dir: u64,
        cookie: u64,
        max: u32,
    },
    /// A FIFO, socket or device node (`kind` one of the special kinds; `rdev` for
    /// devices).
    Mknod {
        parent: u64,
        name: Vec<u8>,
        kind: FileKind,
        mode: u32,
        rdev: u64,
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
    /// Marks mirror `mirror` of a file stale (a client could not write it: one of its
    /// OSTs is down) or, after a resync, in sync again. Idempotent. The MDS refuses
    /// (EIO) to mark stale the last mirror in sync, and a copy in sync unless a resync
    /// of the file started in this MDS run and nothing could have written it since
    /// (EBUSY, or EAGAIN when no resync started).
    MirrorState {
        ino: u64,
        mirror: u32,
        stale: bool,
    },
    /// A resync of a file's stale copies starts (`nacre mirror resync`): EBUSY while a
    /// handle may write the file. Answers its attributes (the size to copy).
    ResyncStart {
        ino: u64,
    },
    /// The end of a client's writes (at close or fsync): the MDS keeps the max.
    ReportSize {
        ino: u64,
        size: u64,
    },
    /// A POSIX advisory lock (fcntl F_SETLK / F_GETLK, flock) held at the MDS, so it
    /// holds across clients. Not stored: locks live in the MDS's memory.
    Lock(LockRequest),
    /// The consistency checker (`nacre check`; root only): start a run when `start`
    /// and none is running, and answer with the current or last run's report, its
    /// findings from index `from` on.
    Check {
        start: bool,
        fix: bool,
        keep_orphans: bool,
        from: u32,
    },
    /// Data repositories (`nacre repo`): see [`super::hsm`].
    Hsm(super::hsm::HsmRequest),
}

impl Request {
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Lookup { .. } => Opcode::MDS_LOOKUP,
            Request::Create { .. } => Opcode::MDS_CREATE,
            Request::Open { .. } => Opcode::MDS_OPEN,
            Request::Close { .. } => Opcode::MDS_CLOSE,
            Request::CloseSized { .. } => Opcode::MDS_CLOSE_SIZED,
            Request::Reopen { .. } => Opcode::MDS_REOPEN,
            Request::Ping { .. } => Opcode::MDS_PING,
            Request::Getattr { .. } => Opcode::MDS_GETATTR,
            Request::Setattr { .. } => Opcode::MDS_SETATTR,
            Request::Mkdir { .. } => Opcode::MDS_MKDIR,
            Request::Rmdir { .. } => Opcode::MDS_RMDIR,
            Request::Readdir { .. } => Opcode::MDS_READDIR,
            Request::ReaddirPlus { .. } => Opcode::MDS_READDIR_PLUS,
            Request::Unlink { .. } => Opcode::MDS_UNLINK,
            Request::Rename { .. } => Opcode::MDS_RENAME,
            Request::Symlink { .. } => Opcode::MDS_SYMLINK,
            Request::Readlink { .. } => Opcode::MDS_READLINK,
            Request::Mknod { .. } => Opcode::MDS_MKNOD,
            Request::Link { .. } => Opcode::MDS_LINK,
            Request::Statfs => Opcode::MDS_STATFS,
            Request::GetLayout { .. } => Opcode::MDS_GET_LAYOUT,
            Request::SetLayout { .. } => Opcode::MDS_SET_LAYOUT,
            Request::ReportSize { .. } => Opcode::MDS_REPORT_SIZE,
            Request::MirrorState { .. } => Opcode::MDS_MIRROR_STATE,
            Request::ResyncStart { .. } => Opcode::MDS_RESYNC_START,
            Request::Lock(_) => Opcode::MDS_LOCK,
            Request::Check { .. } => Opcode::MDS_CHECK,
            Request::Hsm(_) => Opcode::MDS_HSM,
        }
    }

    /// Whether the request only reads the namespace (no commit needed).
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Request::Lookup { .. }
                | Request::Getattr { .. }
                | Request::Readdir { .. }
                | Request::ReaddirPlus { .. }
                | Request::Readlink { .. }
                | Request::Statfs
                | Request::GetLayout { .. }
                | Request::Ping { .. }
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
            Request::Reopen {
                ino,
                handle,
                client,
            } => {
                put_u64(out, *ino);
                put_u64(out, *handle);
                put_u64(out, *client);
            }
            Request::Ping { client } => put_u64(out, *client),
            Request::CloseSized { ino, handle, size } => {
                put_u64(out, *ino);
                put_u64(out, *handle);
                put_u64(out, *size);
            }
            Request::Getattr { ino }
            | Request::Readlink { ino }
            | Request::GetLayout { ino }
            | Request::ResyncStart { ino } => put_u64(out, *ino),
            Request::Setattr { ino, attr } => {
                put_u64(out, *ino);
                put_setattr(out, attr);
            }
            Request::Mkdir { parent, name, mode } => {
                put_name_at(out, *parent, name);
                put_u32(out, *mode);
            }
            Request::Readdir { dir, cookie, max } | Request::ReaddirPlus { dir, cookie, max } => {
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
            Request::Mknod {
                parent,
                name,
                kind,
                mode,
                rdev,
            } => {
                put_name_at(out, *parent, name);
                put_u32(out, *kind as u32);
                put_u32(out, *mode);
                put_u64(out, *rdev);
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
            Request::MirrorState { ino, mirror, stale } => {
                put_u64(out, *ino);
                put_u32(out, *mirror);
                put_u32(out, *stale as u32);
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
            Request::Check {
                start,
                fix,
                keep_orphans,
                from,
            } => {
                put_u32(
                    out,
                    *start as u32 | (*fix as u32) << 1 | (*keep_orphans as u32) << 2,
                );
                put_u32(out, *from);
            }
            Request::Hsm(h) => h.encode(out),
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
        Opcode::MDS_CLOSE_SIZED => Request::CloseSized {
            ino: r.u64()?,
            handle: r.u64()?,
            size: r.u64()?,
        },
        Opcode::MDS_REOPEN => Request::Reopen {
            ino: r.u64()?,
            handle: r.u64()?,
            client: r.u64()?,
        },
        Opcode::MDS_PING => Request::Ping { client: r.u64()? },
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
        Opcode::MDS_READDIR_PLUS => Request::ReaddirPlus {
            dir: r.u64()?,
            cookie: r.u64()?,
            max: r.u32()?,
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
        Opcode::MDS_MKNOD => Request::Mknod {
            parent: r.u64()?,
            name: read_name(r)?,
            kind: read_special_kind(r)?,
            mode: r.u32()?,
            rdev: r.u64()?,
        },
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
        Opcode::MDS_RESYNC_START => Request::ResyncStart { ino: r.u64()? },
        Opcode::MDS_MIRROR_STATE => Request::MirrorState {
            ino: r.u64()?,
            mirror: r.u32()?,
            stale: match r.u32()? {
                0 => false,
                1 => true,
                value => {
                    return Err(MetaError::BadValue {
                        what: "mirror state",
                        value,
                    })
                }
            },
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
        Opcode::MDS_CHECK => match r.u32()? {
            flags if flags <= 7 => Request::Check {
                start: flags & 1 != 0,
                fix: flags & 2 != 0,
                keep_orphans: flags & 4 != 0,
                from: r.u32()?,
            },
            value => {
                return Err(MetaError::BadValue {
                    what: "check flags",
                    value,
                })
            }
        },
        Opcode::MDS_HSM => Request::Hsm(super::hsm::HsmRequest::read(r)?),
        other => return Err(MetaError::NotMeta(other.0)),
    })
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

/// A mknod's kind: only the special kinds (files come by create, directories by mkdir).
fn read_special_kind(r: &mut BodyReader<'_>) -> Result<FileKind, MetaError> {
    let v = r.u32()?;
    match FileKind::from_u32(v)? {
        k if k.is_special() => Ok(k),
        _ => Err(MetaError::BadValue {
            what: "mknod kind",
            value: v,
        }),
    }
}
