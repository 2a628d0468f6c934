//! The inode record as stored in the `inodes` table (record version 1, 2 for an
//! inode with a data repository record, 3 for a device node).
//!
//! | size | field                                                   |
//! |------|---------------------------------------------------------|
//! | 1    | record version (1, 2 or 3)                              |
//! | 1    | kind (1 file, 2 dir, 3 symlink, 4 FIFO, 5 socket, 6 char device, 7 block device) |
//! | 1    | flags: 1 WRITTEN (opened for write or sized), 2 ORPHAN  |
//! | 1    | reserved                                                |
//! | 4×4  | mode, uid, gid, nlink                                   |
//! | 8×6  | size, atime, mtime, ctime (ns), parent (dirs), next_seq |
//! | 4+n  | layout: resolved (file) or default spec (dir), or empty |
//! | 4+n  | symlink target, or empty                                |
//! | 4+n  | version 2 only: its [`HsmRecord`] (data repositories)   |
//! | 8    | version 3 only: the device number (rdev)                |

use nacre_proto::layout::{FileLayout, StripeSpec};
use nacre_proto::meta::{Attr, FileKind};
use nacre_proto::BodyReader;

use super::hsm::HsmRecord;

const RECORD_VERSION: u8 = 1;
/// A record with an HSM record after the symlink target.
const RECORD_VERSION_HSM: u8 = 2;
/// A record with a device number after the symlink target (device nodes only, which
/// never have an HSM record).
const RECORD_VERSION_RDEV: u8 = 3;
pub const WRITTEN: u8 = 1;
pub const ORPHAN: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub ino: u64,
    pub kind: FileKind,
    pub flags: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
    /// For a directory, the directory holding it (itself for the root).
    pub parent: u64,
    /// For a directory, the sequence number (readdir cookie) its next entry gets.
    pub next_seq: u64,
    /// Encoded layout: a file's resolved layout or a directory's default spec.
    pub layout: Vec<u8>,
    pub target: Vec<u8>,
    /// Where a file or directory below a linked directory stands with its data
    /// repository (None elsewhere).
    pub hsm: Option<HsmRecord>,
    /// A device node's device number (0 for other kinds).
    pub rdev: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("corrupt inode record {ino}: {why}")]
pub struct CorruptInode {
    pub ino: u64,
    pub why: String,
}

impl Inode {
    pub fn attr(&self) -> Attr {
        Attr {
            ino: self.ino,
            kind: self.kind,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            nlink: self.nlink,
            size: self.size,
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            rdev: self.rdev,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Dir
    }

    /// A file's layout (None for other kinds, a file without one, or one that does not
    /// decode, which the checker reports).
    pub fn file_layout(&self) -> Option<FileLayout> {
        (self.kind == FileKind::File && !self.layout.is_empty())
            .then(|| FileLayout::decode(&self.layout).ok())
            .flatten()
    }

    pub fn default_spec(&self) -> Option<StripeSpec> {
        (self.is_dir() && !self.layout.is_empty())
            .then(|| StripeSpec::decode(&self.layout).ok())
            .flatten()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(80 + self.layout.len() + self.target.len());
        let version = match (&self.hsm, self.rdev) {
            (Some(_), _) => RECORD_VERSION_HSM,
            (None, 0) => RECORD_VERSION,
            (None, _) => RECORD_VERSION_RDEV,
        };
        out.extend_from_slice(&[version, self.kind as u8, self.flags, 0]);
        for v in [self.mode, self.uid, self.gid, self.nlink] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [
            self.size,
            self.atime as u64,
            self.mtime as u64,
            self.ctime as u64,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.parent.to_le_bytes());
        out.extend_from_slice(&self.next_seq.to_le_bytes());
        for b in [&self.layout, &self.target] {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        if let Some(h) = &self.hsm {
            let b = h.encode();
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(&b);
        } else if self.rdev != 0 {
            out.extend_from_slice(&self.rdev.to_le_bytes());
        }
        out
    }

    pub fn decode(ino: u64, bytes: &[u8]) -> Result<Inode, CorruptInode> {
        let bad = |why: String| CorruptInode { ino, why };
        let mut r = BodyReader::new(bytes);
        let head = r.bytes(4).map_err(|e| bad(e.to_string()))?;
        if !(RECORD_VERSION..=RECORD_VERSION_RDEV).contains(&head[0]) {
            return Err(bad(format!("record version {}", head[0])));
        }
        let kind = FileKind::from_u32(head[1].into()).map_err(|e| bad(e.to_string()))?;
        let mut read = || -> Result<(Inode, Option<&[u8]>), nacre_proto::BodyError> {
            let (mode, uid, gid, nlink) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
            let (size, atime, mtime, ctime) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
            let (parent, next_seq) = (r.u64()?, r.u64()?);
            let n = r.u32()? as usize;
            let layout = r.bytes(n)?.to_vec();
            let n = r.u32()? as usize;
            let target = r.bytes(n)?.to_vec();
            let hsm = match head[0] {
                RECORD_VERSION_HSM => {
                    let n = r.u32()? as usize;
                    Some(r.bytes(n)?)
                }
                _ => None,
            };
            let rdev = match head[0] {
                RECORD_VERSION_RDEV => r.u64()?,
                _ => 0,
            };
            let inode = Inode {
                ino,
                kind,
                flags: head[2],
                mode,
                uid,
                gid,
                nlink,
                size,
                atime: atime as i64,
                mtime: mtime as i64,
                ctime: ctime as i64,
                parent,
                next_seq,
                layout,
                target,
                hsm: None,
                rdev,
            };
            Ok((inode, hsm))
        };
        let (mut inode, hsm) = read().map_err(|e| bad(e.to_string()))?;
        if let Some(b) = hsm {
            inode.hsm = Some(HsmRecord::decode(b).map_err(|why| bad(why.to_string()))?);
        }
        Ok(inode)
    }
}

/// A directory entry's value in the `dentries` table: the inode and the entry's sequence
/// number in its directory (its readdir cookie), and the kind (for readdir without a
/// second lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dentry {
    pub ino: u64,
    pub seq: u64,
    pub kind: FileKind,
}

impl Dentry {
    pub fn encode(&self) -> [u8; 17] {
        let mut out = [0; 17];
        out[..8].copy_from_slice(&self.ino.to_le_bytes());
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16] = self.kind as u8;
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Dentry> {
        let bytes: &[u8; 17] = bytes.try_into().ok()?;
        Some(Dentry {
            ino: u64::from_le_bytes(bytes[..8].try_into().ok()?),
            seq: u64::from_le_bytes(bytes[8..16].try_into().ok()?),
            kind: FileKind::from_u32(bytes[16].into()).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_round_trips_and_truncation_is_an_error() {
        let ino = Inode {
            ino: 9,
            kind: FileKind::Symlink,
            flags: WRITTEN,
            mode: 0o777,
            uid: 1,
            gid: 2,
            nlink: 1,
            size: 3,
            atime: -4,
            mtime: 5,
            ctime: 6,
            parent: 0,
            next_seq: 0,
            layout: vec![],
            target: b"/a/b".to_vec(),
            hsm: None,
            rdev: 0,
        };
        let bytes = ino.encode();
        assert_eq!(Inode::decode(9, &bytes).unwrap(), ino);
        for cut in 0..bytes.len() {
            assert!(Inode::decode(9, &bytes[..cut]).is_err());
        }
        let with = Inode {
            hsm: Some(HsmRecord {
                repo: 3,
                flags: super::super::hsm::DIRTY,
                version: 4,
                key: "a/b".into(),
                stored: "a/c".into(),
                etag: "\"e\"".into(),
            }),
            ..ino.clone()
        };
        let bytes = with.encode();
        assert_eq!(bytes[0], RECORD_VERSION_HSM);
        assert_eq!(Inode::decode(9, &bytes).unwrap(), with);
        for cut in 0..bytes.len() {
            assert!(Inode::decode(9, &bytes[..cut]).is_err());
        }
        let dev = Inode {
            kind: FileKind::BlockDevice,
            target: vec![],
            rdev: 0x0803,
            ..ino.clone()
        };
        let bytes = dev.encode();
        assert_eq!(bytes[0], RECORD_VERSION_RDEV);
        assert_eq!(Inode::decode(9, &bytes).unwrap(), dev);
        for cut in 0..bytes.len() {
            assert!(Inode::decode(9, &bytes[..cut]).is_err());
        }
        let d = Dentry {
            ino: 4,
            seq: 7,
            kind: FileKind::Dir,
        };
        assert_eq!(Dentry::decode(&d.encode()), Some(d));
    }
}
