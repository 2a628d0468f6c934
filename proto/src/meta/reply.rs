//! The successful reply body: its shapes, its encoding, and readdir paging by size.

use super::wire::{no_trailing, put_bytes, put_u32, put_u64, read_name, read_string, read_target};
use super::{
    Attr, CheckCounts, CheckReport, CheckState, DirEntry, FileKind, Grants, LockDesc, MdtStatfs,
    MetaError, FINDING_MAX, READDIR_MAX_ENTRIES,
};
use crate::body::BodyReader;
use crate::layout::{FileLayout, StripeSpec};

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
        layout: Option<FileLayout>,
        handle: u64,
        created: bool,
    },
    Dir {
        entries: Vec<DirEntry>,
        next_cookie: u64,
        eof: bool,
    },
    /// A readdir page with each entry's attributes (`ReaddirPlus`).
    DirPlus {
        entries: Vec<(DirEntry, Attr)>,
        next_cookie: u64,
        eof: bool,
    },
    Target(Vec<u8>),
    Statfs(MdtStatfs),
    /// A file's layout.
    Layout(FileLayout),
    /// F_GETLK's answer: the first conflicting lock, or kind UNLOCK.
    Lock(LockDesc),
    /// A directory's default striping.
    DefaultLayout(StripeSpec),
    /// A consistency check's report.
    Check(CheckReport),
    /// A data repository operation's answer.
    Hsm(super::hsm::HsmReply),
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
const R_CHECK: u32 = 9;
const R_HSM: u32 = 10;
const R_DIR_PLUS: u32 = 11;
/// An attribute's bytes on the wire (`put_attr`).
const ATTR_WIRE_LEN: usize = 8 + 5 * 4 + 5 * 8;

impl Reply {
    /// Shortens a readdir page to at most `max` encoded bytes (at least one entry):
    /// the entries left out come with the next cookie. Other replies are left as they
    /// are. The MDT pages readdir with it (`READDIR_MAX_BYTES`).
    pub fn trim_to(&mut self, max: usize) {
        if let Reply::Check(r) = self {
            let mut len = 4 + 8 + 4 + 5 * 8 + 4 + 4;
            let keep = r
                .findings
                .iter()
                .position(|f| {
                    len += 4 + f.len();
                    len > max
                })
                .unwrap_or(r.findings.len());
            r.findings.truncate(keep);
            return;
        }
        if let Reply::DirPlus {
            entries,
            next_cookie,
            eof,
        } = self
        {
            let keep = keep_within(entries.iter().map(|(e, _)| e), ATTR_WIRE_LEN, max);
            if keep < entries.len() {
                entries.truncate(keep);
                *next_cookie = entries[keep - 1].0.cookie;
                *eof = false;
            }
            return;
        }
        let Reply::Dir {
            entries,
            next_cookie,
            eof,
        } = self
        else {
            return;
        };
        let keep = keep_within(entries.iter(), 0, max);
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
                    put_dir_entry(out, e);
                }
            }
            Reply::DirPlus {
                entries,
                next_cookie,
                eof,
            } => {
                put_u32(out, R_DIR_PLUS);
                put_u64(out, *next_cookie);
                put_u32(out, u32::from(*eof));
                put_u32(out, entries.len() as u32);
                for (e, a) in entries {
                    put_dir_entry(out, e);
                    put_attr(out, a);
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
            Reply::Check(r) => {
                put_u32(out, R_CHECK);
                put_u64(out, r.run);
                put_u32(out, r.state as u32);
                let c = &r.counts;
                for v in [c.orphans, c.dangling, c.nlink, c.size, c.fixed] {
                    put_u64(out, v);
                }
                put_u32(out, r.total);
                put_u32(out, r.findings.len() as u32);
                for f in &r.findings {
                    put_bytes(out, f);
                }
            }
            Reply::Hsm(h) => {
                put_u32(out, R_HSM);
                h.encode(out);
            }
        }
    }

    /// Decodes a reply body, and the capabilities that may follow one with a layout.
    pub fn decode_granted(body: &[u8]) -> Result<(Reply, Option<Grants>), MetaError> {
        let mut r = BodyReader::new(body);
        let reply = Reply::read(&mut r)?;
        let grants = match &reply {
            Reply::Opened {
                layout: Some(_), ..
            }
            | Reply::Layout(_) => Grants::read(&mut r)?,
            _ => None,
        };
        no_trailing(&mut r)?;
        Ok((reply, grants))
    }

    pub fn decode(body: &[u8]) -> Result<Reply, MetaError> {
        let mut r = BodyReader::new(body);
        let reply = Reply::read(&mut r)?;
        no_trailing(&mut r)?;
        Ok(reply)
    }

    fn read(r: &mut BodyReader<'_>) -> Result<Reply, MetaError> {
        let reply = match r.u32()? {
            R_DONE => Reply::Done,
            R_ATTR => Reply::Attr(read_attr(r)?),
            R_OPENED => Reply::Opened {
                attr: read_attr(r)?,
                handle: r.u64()?,
                layout: match r.u32()? {
                    0 => None,
                    1 => Some(FileLayout::read(r)?),
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
            R_DIR => read_dir(r)?,
            R_DIR_PLUS => read_dir_plus(r)?,
            R_TARGET => Reply::Target(read_target(r)?),
            R_STATFS => Reply::Statfs(MdtStatfs {
                inodes_used: r.u64()?,
                inodes_free: r.u64()?,
                name_max: r.u32()?,
                bytes_total: r.u64()?,
                bytes_free: r.u64()?,
                osts: r.u32()?,
            }),
            R_LAYOUT => Reply::Layout(FileLayout::read(r)?),
            R_DEFAULT_LAYOUT => Reply::DefaultLayout(StripeSpec::read(r)?),
            R_LOCK => Reply::Lock(LockDesc {
                kind: r.u32()?,
                start: r.u64()?,
                end: r.u64()?,
                pid: r.u32()?,
            }),
            R_CHECK => Reply::Check(read_check(r)?),
            R_HSM => Reply::Hsm(super::hsm::HsmReply::read(r)?),
            value => {
                return Err(MetaError::BadValue {
                    what: "reply shape",
                    value,
                })
            }
        };
        Ok(reply)
    }
}

/// A readdir page's head: the next cookie, eof, and the entry count (bounded).
fn read_page_head(r: &mut BodyReader<'_>) -> Result<(u64, bool, u32), MetaError> {
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
    Ok((next_cookie, eof, n))
}

fn read_dir(r: &mut BodyReader<'_>) -> Result<Reply, MetaError> {
    let (next_cookie, eof, n) = read_page_head(r)?;
    let mut entries = Vec::with_capacity(n as usize);
    for _ in 0..n {
        entries.push(read_dir_entry(r)?);
    }
    Ok(Reply::Dir {
        entries,
        next_cookie,
        eof,
    })
}

fn read_dir_plus(r: &mut BodyReader<'_>) -> Result<Reply, MetaError> {
    let (next_cookie, eof, n) = read_page_head(r)?;
    let mut entries = Vec::with_capacity(n as usize);
    for _ in 0..n {
        entries.push((read_dir_entry(r)?, read_attr(r)?));
    }
    Ok(Reply::DirPlus {
        entries,
        next_cookie,
        eof,
    })
}

fn put_dir_entry(out: &mut Vec<u8>, e: &DirEntry) {
    put_u64(out, e.ino);
    put_u32(out, e.kind as u32);
    put_u64(out, e.cookie);
    put_bytes(out, &e.name);
}

fn read_dir_entry(r: &mut BodyReader<'_>) -> Result<DirEntry, MetaError> {
    Ok(DirEntry {
        ino: r.u64()?,
        kind: FileKind::from_u32(r.u32()?)?,
        cookie: r.u64()?,
        name: read_name(r)?,
    })
}

/// How many of `entries` fit in a page of `max` bytes, each taking `extra` bytes beside
/// its entry (at least one, so that a page always moves on).
fn keep_within<'a>(
    entries: impl ExactSizeIterator<Item = &'a DirEntry>,
    extra: usize,
    max: usize,
) -> usize {
    let n = entries.len();
    let mut len = 4 + 8 + 4 + 4;
    entries
        .enumerate()
        .find_map(|(i, e)| {
            len += dir_entry_wire_len(&e.name) + extra;
            (len > max).then_some(i.max(1))
        })
        .unwrap_or(n)
}

fn read_check(r: &mut BodyReader<'_>) -> Result<CheckReport, MetaError> {
    let run = r.u64()?;
    let state = CheckState::from_u32(r.u32()?)?;
    let counts = CheckCounts {
        orphans: r.u64()?,
        dangling: r.u64()?,
        nlink: r.u64()?,
        size: r.u64()?,
        fixed: r.u64()?,
    };
    let total = r.u32()?;
    let n = r.u32()?;
    if n > total {
        return Err(MetaError::BadValue {
            what: "finding count",
            value: n,
        });
    }
    let mut findings = Vec::new();
    for _ in 0..n {
        findings.push(read_string(r, FINDING_MAX)?);
    }
    Ok(CheckReport {
        run,
        state,
        counts,
        total,
        findings,
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
    put_u64(out, a.rdev);
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
        rdev: r.u64()?,
    })
}
