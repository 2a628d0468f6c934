//! Object storage (OSS) request and reply bodies: object I/O addressed to one OST of one
//! server core, with the fencing epoch the client believes in.
//!
//! Every request opens with the same 24 bytes ([`ObjTarget`]): the OST index, flags,
//! the OSS role's epoch from the cluster map, and the object id; with flag
//! [`ObjFlags::CAPABILITY`], the 32 bytes of the object's capability follow (what the
//! MDS sealed for the client: `nacre_auth::capability`). Data travels inline
//! (small writes and reads: the bytes follow the fixed fields) or by a bulk descriptor
//! (flag [`ObjFlags::BULK`]): the server pulls a write's data from it and pushes a
//! read's data into it. With [`ObjFlags::CHECKSUM`] the sender puts a crc32c of the data
//! in the request (writes) and the server puts one in the reply (reads).

use crate::body::{BodyError, BodyReader, BodyWriter, BulkDesc};
use crate::frame::Opcode;

/// Messages to and from an OSS core: 8 KiB, so small payloads travel inline and anything
/// larger goes by RMA.
pub const MSG_SIZE: usize = 8192;

/// The object opcodes, 0x200..=0x208.
impl Opcode {
    pub const OBJ_WRITE: Opcode = Opcode(0x200);
    pub const OBJ_READ: Opcode = Opcode(0x201);
    pub const OBJ_PUNCH: Opcode = Opcode(0x202);
    pub const OBJ_TRUNCATE: Opcode = Opcode(0x203);
    pub const OBJ_GETATTR: Opcode = Opcode(0x204);
    pub const OBJ_DESTROY: Opcode = Opcode(0x205);
    pub const OBJ_SYNC: Opcode = Opcode(0x206);
    pub const OBJ_STATFS: Opcode = Opcode(0x207);
    pub const OBJ_LIST: Opcode = Opcode(0x208);

    /// Whether the opcode is in the object block.
    pub fn is_object(self) -> bool {
        (0x200..=0x208).contains(&self.0)
    }
}

/// Request flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObjFlags(pub u32);

impl ObjFlags {
    /// The data moves by RMA through the bulk descriptor in the body.
    pub const BULK: ObjFlags = ObjFlags(1);
    /// A crc32c of the data travels with it and is checked by the receiver.
    pub const CHECKSUM: ObjFlags = ObjFlags(2);
    /// Make the write durable (size and allocation too) before answering.
    pub const SYNC: ObjFlags = ObjFlags(4);
    /// OBJ_SYNC: data only (fdatasync), not every attribute.
    pub const DATASYNC: ObjFlags = ObjFlags(8);
    /// A write, punch or truncate carries an [`IoKey`] after its target: the server
    /// applies it at most once.
    pub const KEYED: ObjFlags = ObjFlags(16);
    /// The object's capability follows the target ([`ObjTarget::cap`]).
    pub const CAPABILITY: ObjFlags = ObjFlags(32);
    const KNOWN: u32 = 63;

    pub fn has(self, f: ObjFlags) -> bool {
        self.0 & f.0 == f.0
    }

    pub fn with(self, f: ObjFlags) -> ObjFlags {
        ObjFlags(self.0 | f.0)
    }

    pub fn without(self, f: ObjFlags) -> ObjFlags {
        ObjFlags(self.0 & !f.0)
    }
}

/// What makes a changing object request safe to send again: the client's id, the
/// request's id (xid, unique for the client, every piece of a striped write its own),
/// and the client's floor: every xid below it was answered or given up, so a copy of
/// one that reaches a server now is a duplicate from the past and must not be applied.
/// The server keeps the answer of each keyed request at or above the floor and answers
/// a resend from it (see the OSS's `replay` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IoKey {
    pub client: u64,
    pub xid: u64,
    pub floor: u64,
}

impl IoKey {
    pub const LEN: usize = 24;

    fn write(&self, w: &mut BodyWriter<'_>) -> Result<(), BodyError> {
        w.u64(self.client)?.u64(self.xid)?.u64(self.floor)?;
        Ok(())
    }

    fn read(r: &mut BodyReader<'_>) -> Result<IoKey, ObjError> {
        let key = IoKey {
            client: r.u64()?,
            xid: r.u64()?,
            floor: r.u64()?,
        };
        if key.client == 0 || key.xid < key.floor {
            return Err(ObjError::Key(key.xid, key.floor));
        }
        Ok(key)
    }
}

/// Writes `t` with the KEYED flag set exactly when `key` is there, then the key.
fn write_keyed(
    t: &ObjTarget,
    key: Option<&IoKey>,
    w: &mut BodyWriter<'_>,
) -> Result<(), BodyError> {
    let flags = match key {
        Some(_) => t.flags.with(ObjFlags::KEYED),
        None => t.flags.without(ObjFlags::KEYED),
    };
    ObjTarget { flags, ..*t }.write(w)?;
    match key {
        Some(k) => k.write(w),
        None => Ok(()),
    }
}

/// The target and, when its flags say so, the key after it.
fn read_keyed(r: &mut BodyReader<'_>) -> Result<(ObjTarget, Option<IoKey>), ObjError> {
    let target = ObjTarget::read(r)?;
    let key = match target.flags.has(ObjFlags::KEYED) {
        true => Some(IoKey::read(r)?),
        false => None,
    };
    Ok((target, key))
}

/// The target of a request that carries no key.
fn read_unkeyed(r: &mut BodyReader<'_>) -> Result<ObjTarget, ObjError> {
    let target = ObjTarget::read(r)?;
    if target.flags.has(ObjFlags::KEYED) {
        return Err(ObjError::Flags(target.flags.0));
    }
    Ok(target)
}

/// Errors specific to object bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("unknown object request flags {0:#x}")]
    Flags(u32),
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLong {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("{0} trailing bytes after the request")]
    Trailing(usize),
    #[error("reserved field set ({0:#x})")]
    Reserved(u32),
    #[error("bad request key: xid {0} below the floor {1}, or no client")]
    Key(u64, u64),
}

/// The largest single object request (bulk); servers split it into slab-sized chunks.
pub const MAX_IO: u64 = 64 << 20;

/// What every object request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjTarget {
    pub ost: u32,
    pub flags: ObjFlags,
    /// The OSS role's epoch as the client's map says (fencing token).
    pub epoch: u64,
    pub object: u64,
    /// The object's capability (flag [`ObjFlags::CAPABILITY`] on the wire).
    pub cap: Option<[u8; CAP_LEN]>,
}

/// Bytes of a capability after the target.
pub const CAP_LEN: usize = 32;

impl ObjTarget {
    /// Bytes of a target without a capability.
    pub const LEN: usize = 24;
    /// Bytes of a target at most (with its capability).
    pub const MAX_LEN: usize = ObjTarget::LEN + CAP_LEN;

    fn write(&self, w: &mut BodyWriter<'_>) -> Result<(), BodyError> {
        let flags = match self.cap {
            Some(_) => self.flags.with(ObjFlags::CAPABILITY),
            None => self.flags.without(ObjFlags::CAPABILITY),
        };
        w.u32(self.ost)?
            .u32(flags.0)?
            .u64(self.epoch)?
            .u64(self.object)?;
        if let Some(cap) = &self.cap {
            w.bytes(cap)?;
        }
        Ok(())
    }

    fn read(r: &mut BodyReader<'_>) -> Result<ObjTarget, ObjError> {
        let ost = r.u32()?;
        let flags = r.u32()?;
        if flags & !ObjFlags::KNOWN != 0 {
            return Err(ObjError::Flags(flags));
        }
        let (epoch, object) = (r.u64()?, r.u64()?);
        let cap = match flags & ObjFlags::CAPABILITY.0 != 0 {
            true => Some(r.bytes(CAP_LEN)?.try_into().expect("took CAP_LEN bytes")),
            false => None,
        };
        Ok(ObjTarget {
            ost,
            flags: ObjFlags(flags),
            epoch,
            object,
            cap,
        })
    }
}

/// Where a request's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data<'a> {
    Inline(&'a [u8]),
    Bulk(BulkDesc),
}

/// OBJ_WRITE: `len` bytes at `offset` of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteReq<'a> {
    pub target: ObjTarget,
    pub offset: u64,
    pub len: u64,
    /// crc32c of the data when the CHECKSUM flag is set, else 0.
    pub crc: u32,
    pub data: Data<'a>,
    /// Set by a client that may send the write again (see [`IoKey`]).
    pub key: Option<IoKey>,
}

/// OBJ_READ: up to `len` bytes at `offset` (short past the end of the object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadReq {
    pub target: ObjTarget,
    pub offset: u64,
    pub len: u64,
    /// Where to push the bytes (BULK), else they come inline in the reply.
    pub bulk: Option<BulkDesc>,
}

/// OBJ_PUNCH (`len` bytes at `offset` become a hole) and OBJ_TRUNCATE (`offset` is the
/// new size, `len` is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeReq {
    pub target: ObjTarget,
    pub offset: u64,
    pub len: u64,
    pub key: Option<IoKey>,
}

impl WriteReq<'_> {
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BodyError> {
        let mut w = BodyWriter::new(out);
        write_keyed(&self.target, self.key.as_ref(), &mut w)?;
        w.u64(self.offset)?.u64(self.len)?.u32(self.crc)?.u32(0)?;
        match self.data {
            Data::Inline(bytes) => w.bytes(bytes)?,
            Data::Bulk(d) => w.bulk(&d)?,
        };
        Ok(w.len())
    }
}

impl<'a> WriteReq<'a> {
    pub fn decode(body: &'a [u8]) -> Result<WriteReq<'a>, ObjError> {
        let mut r = BodyReader::new(body);
        let (target, key) = read_keyed(&mut r)?;
        let (offset, len, crc, pad) = (r.u64()?, r.u64()?, r.u32()?, r.u32()?);
        if pad != 0 {
            return Err(ObjError::Reserved(pad));
        }
        check_range("write", offset, len)?;
        let data = if target.flags.has(ObjFlags::BULK) {
            let d = r.bulk()?;
            if d.len != len {
                return Err(ObjError::TooLong {
                    what: "bulk descriptor",
                    len: d.len,
                    max: len,
                });
            }
            Data::Bulk(d)
        } else {
            let bytes = r.rest();
            if bytes.len() as u64 != len {
                return Err(BodyError::Short {
                    at: body.len() - bytes.len(),
                    want: len as usize,
                    left: bytes.len(),
                }
                .into());
            }
            Data::Inline(bytes)
        };
        finish(&mut r)?;
        Ok(WriteReq {
            target,
            offset,
            len,
            crc,
            data,
            key,
        })
    }
}

impl ReadReq {
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BodyError> {
        let mut w = BodyWriter::new(out);
        self.target.write(&mut w)?;
        w.u64(self.offset)?.u64(self.len)?;
        if let Some(d) = &self.bulk {
            w.bulk(d)?;
        }
        Ok(w.len())
    }

    pub fn decode(body: &[u8]) -> Result<ReadReq, ObjError> {
        let mut r = BodyReader::new(body);
        let target = read_unkeyed(&mut r)?;
        let (offset, len) = (r.u64()?, r.u64()?);
        check_range("read", offset, len)?;
        let bulk = if target.flags.has(ObjFlags::BULK) {
            let d = r.bulk()?;
            if d.len < len {
                return Err(BodyError::Short {
                    at: 0,
                    want: len as usize,
                    left: d.len as usize,
                }
                .into());
            }
            Some(d)
        } else {
            None
        };
        finish(&mut r)?;
        Ok(ReadReq {
            target,
            offset,
            len,
            bulk,
        })
    }
}

impl RangeReq {
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BodyError> {
        let mut w = BodyWriter::new(out);
        write_keyed(&self.target, self.key.as_ref(), &mut w)?;
        w.u64(self.offset)?.u64(self.len)?;
        Ok(w.len())
    }

    pub fn decode(body: &[u8]) -> Result<RangeReq, ObjError> {
        let mut r = BodyReader::new(body);
        let (target, key) = read_keyed(&mut r)?;
        let (offset, len) = (r.u64()?, r.u64()?);
        if offset.checked_add(len).is_none() {
            return Err(ObjError::TooLong {
                what: "range",
                len,
                max: u64::MAX - offset,
            });
        }
        finish(&mut r)?;
        Ok(RangeReq {
            target,
            offset,
            len,
            key,
        })
    }
}

/// OBJ_GETATTR, OBJ_DESTROY, OBJ_SYNC, OBJ_STATFS: the target alone.
pub fn encode_target(t: &ObjTarget, out: &mut [u8]) -> Result<usize, BodyError> {
    let mut w = BodyWriter::new(out);
    t.write(&mut w)?;
    Ok(w.len())
}

pub fn decode_target(body: &[u8]) -> Result<ObjTarget, ObjError> {
    let mut r = BodyReader::new(body);
    let t = read_unkeyed(&mut r)?;
    finish(&mut r)?;
    Ok(t)
}

/// OBJ_LIST: the objects of one of the OST's 256 object directories with ids above
/// `target.object`, in id order, at most `max` (the consistency checker's walk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListReq {
    pub target: ObjTarget,
    pub dir: u32,
    pub max: u32,
}

/// Object directories on an OST (`O/00` .. `O/ff`).
pub const OBJECT_DIRS: u32 = 256;

impl ListReq {
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BodyError> {
        let mut w = BodyWriter::new(out);
        self.target.write(&mut w)?;
        w.u32(self.dir)?.u32(self.max)?;
        Ok(w.len())
    }

    pub fn decode(body: &[u8]) -> Result<ListReq, ObjError> {
        let mut r = BodyReader::new(body);
        let target = read_unkeyed(&mut r)?;
        let (dir, max) = (r.u32()?, r.u32()?);
        if dir >= OBJECT_DIRS {
            return Err(ObjError::TooLong {
                what: "object directory",
                len: dir as u64,
                max: OBJECT_DIRS as u64 - 1,
            });
        }
        finish(&mut r)?;
        Ok(ListReq { target, dir, max })
    }
}

/// One object OBJ_LIST found: its id and logical size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedObject {
    pub oid: u64,
    pub size: u64,
}

/// Reply of OBJ_LIST: whether the directory has no more objects after these, and the
/// objects (16 bytes each after an 8-byte head).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListReply {
    pub eof: bool,
    pub objects: Vec<ListedObject>,
}

impl ListReply {
    /// Objects that fit in a reply body of `bytes`.
    pub fn room(bytes: usize) -> usize {
        bytes.saturating_sub(8) / 16
    }

    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BodyError> {
        let mut w = BodyWriter::new(out);
        w.u32(self.objects.len() as u32)?.u32(self.eof as u32)?;
        for o in &self.objects {
            w.u64(o.oid)?.u64(o.size)?;
        }
        Ok(w.len())
    }

    pub fn decode(body: &[u8]) -> Result<ListReply, ObjError> {
        let mut r = BodyReader::new(body);
        let (n, eof) = (r.u32()?, r.u32()?);
        if eof > 1 {
            return Err(ObjError::Reserved(eof));
        }
        if n as usize > Self::room(body.len()) {
            return Err(ObjError::TooLong {
                what: "object list",
                len: n as u64,
                max: Self::room(body.len()) as u64,
            });
        }
        let objects = (0..n)
            .map(|_| {
                Ok(ListedObject {
                    oid: r.u64()?,
                    size: r.u64()?,
                })
            })
            .collect::<Result<_, BodyError>>()?;
        finish(&mut r)?;
        Ok(ListReply {
            eof: eof == 1,
            objects,
        })
    }
}

/// Reply of OBJ_WRITE and OBJ_READ: bytes moved (a read's may be short), the crc32c of
/// a read's data when asked, and for an inline read the bytes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoReply<'a> {
    pub len: u64,
    pub crc: u32,
    pub inline: &'a [u8],
}

impl<'a> IoReply<'a> {
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BodyError> {
        let mut w = BodyWriter::new(out);
        w.u64(self.len)?.u32(self.crc)?.u32(0)?.bytes(self.inline)?;
        Ok(w.len())
    }

    pub fn decode(body: &'a [u8]) -> Result<IoReply<'a>, ObjError> {
        let mut r = BodyReader::new(body);
        let (len, crc, _pad) = (r.u64()?, r.u32()?, r.u32()?);
        Ok(IoReply {
            len,
            crc,
            inline: r.rest(),
        })
    }
}

/// An object's attributes: what the OST store keeps and OBJ_GETATTR replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObjectAttr {
    /// Logical size: the end of the furthest byte written (or the size truncated to).
    pub size: u64,
    /// 512-byte blocks allocated, as stat(2) counts them: holes take none.
    pub blocks: u64,
    /// Last modification, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
}

/// One OST's capacity and use: what the OST store measures and OBJ_STATFS replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OstStatfs {
    pub bytes_total: u64,
    pub bytes_free: u64,
    /// Free to unprivileged writers (what clients can count on).
    pub bytes_avail: u64,
    pub objects_total: u64,
    pub objects_free: u64,
}

macro_rules! fixed_u64s {
    ($t:ident, $($f:ident),+) => {
        impl $t {
            /// Bytes on the wire: one u64 per field.
            pub const LEN: usize = [$(stringify!($f)),+].len() * 8;

            pub fn encode(&self, out: &mut [u8]) -> Result<usize, BodyError> {
                let mut w = BodyWriter::new(out);
                $( w.u64(self.$f)?; )+
                Ok(w.len())
            }

            pub fn decode(body: &[u8]) -> Result<$t, ObjError> {
                let mut r = BodyReader::new(body);
                let v = $t { $( $f: r.u64()?, )+ };
                finish(&mut r)?;
                Ok(v)
            }
        }
    };
}

fixed_u64s!(ObjectAttr, size, blocks, mtime_ns);
fixed_u64s!(
    OstStatfs,
    bytes_total,
    bytes_free,
    bytes_avail,
    objects_total,
    objects_free
);

fn check_range(what: &'static str, offset: u64, len: u64) -> Result<(), ObjError> {
    if len > MAX_IO {
        return Err(ObjError::TooLong {
            what,
            len,
            max: MAX_IO,
        });
    }
    if offset.checked_add(len).is_none() {
        return Err(ObjError::TooLong {
            what,
            len,
            max: u64::MAX - offset,
        });
    }
    Ok(())
}

fn finish(r: &mut BodyReader<'_>) -> Result<(), ObjError> {
    match r.rest().len() {
        0 => Ok(()),
        n => Err(ObjError::Trailing(n)),
    }
}

impl ObjError {
    /// The errno a server answers with.
    pub fn errno(&self) -> i32 {
        match self {
            ObjError::TooLong { .. } => 27, // EFBIG
            _ => 74,                        // EBADMSG
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(flags: ObjFlags) -> ObjTarget {
        ObjTarget {
            ost: 3,
            flags,
            epoch: 7,
            object: 0xabc,
            cap: None,
        }
    }

    #[test]
    fn list_round_trips_and_refuses_bad_bodies() {
        let mut buf = [0u8; 512];
        let req = ListReq {
            target: target(ObjFlags::default()),
            dir: 255,
            max: 100,
        };
        let n = req.encode(&mut buf).unwrap();
        assert_eq!(ListReq::decode(&buf[..n]).unwrap(), req);
        let bad = ListReq { dir: 256, ..req };
        let n = bad.encode(&mut buf).unwrap();
        assert!(ListReq::decode(&buf[..n]).is_err());
        let reply = ListReply {
            eof: true,
            objects: vec![ListedObject { oid: 9, size: 4096 }; 3],
        };
        let n = reply.encode(&mut buf).unwrap();
        assert_eq!(n, 8 + 3 * 16);
        assert_eq!(ListReply::decode(&buf[..n]).unwrap(), reply);
        // A count larger than the body holds, and a cut body, are errors.
        assert!(ListReply::decode(&buf[..n - 1]).is_err());
        buf[0] = 200;
        assert!(ListReply::decode(&buf[..n]).is_err());
        assert_eq!(ListReply::room(8 + 16 * 10 + 15), 10);
    }

    #[test]
    fn requests_round_trip() {
        let mut buf = [0u8; 256];
        let w = WriteReq {
            target: target(ObjFlags::default()),
            offset: 4095,
            len: 5,
            crc: 0,
            data: Data::Inline(b"hello"),
            key: None,
        };
        let n = w.encode(&mut buf).unwrap();
        assert_eq!(WriteReq::decode(&buf[..n]).unwrap(), w);
        let d = BulkDesc {
            addr: 1 << 30,
            len: 1 << 20,
            key: 5,
        };
        let w = WriteReq {
            target: target(ObjFlags::BULK.with(ObjFlags::CHECKSUM)),
            offset: 0,
            len: 1 << 20,
            crc: 0xdead_beef,
            data: Data::Bulk(d),
            key: None,
        };
        let n = w.encode(&mut buf).unwrap();
        assert_eq!(WriteReq::decode(&buf[..n]).unwrap(), w);
        let r = ReadReq {
            target: target(ObjFlags::BULK),
            offset: 10,
            len: 1 << 20,
            bulk: Some(d),
        };
        let n = r.encode(&mut buf).unwrap();
        assert_eq!(ReadReq::decode(&buf[..n]).unwrap(), r);
        let p = RangeReq {
            target: target(ObjFlags::default()),
            offset: 1,
            len: 2,
            key: None,
        };
        let n = p.encode(&mut buf).unwrap();
        assert_eq!(RangeReq::decode(&buf[..n]).unwrap(), p);
        // Keyed: the flag goes with the key.
        let key = IoKey {
            client: 9,
            xid: 12,
            floor: 10,
        };
        let keyed = RangeReq {
            target: target(ObjFlags::KEYED),
            key: Some(key),
            ..p
        };
        let n = RangeReq {
            target: p.target,
            ..keyed
        }
        .encode(&mut buf)
        .unwrap();
        assert_eq!(RangeReq::decode(&buf[..n]).unwrap(), keyed);
        let kw = WriteReq {
            target: target(ObjFlags::BULK.with(ObjFlags::KEYED)),
            key: Some(key),
            ..w
        };
        let n = kw.encode(&mut buf).unwrap();
        assert_eq!(n, 24 + 24 + 24 + BulkDesc::LEN);
        assert_eq!(WriteReq::decode(&buf[..n]).unwrap(), kw);
        let a = ObjectAttr {
            size: 1,
            blocks: 8,
            mtime_ns: 9,
        };
        let n = a.encode(&mut buf).unwrap();
        assert_eq!(
            (ObjectAttr::decode(&buf[..n]).unwrap(), n),
            (a, ObjectAttr::LEN)
        );
        let s = OstStatfs {
            bytes_total: 1,
            bytes_free: 2,
            bytes_avail: 3,
            objects_total: 4,
            objects_free: 5,
        };
        let n = s.encode(&mut buf).unwrap();
        assert_eq!(
            (OstStatfs::decode(&buf[..n]).unwrap(), n),
            (s, OstStatfs::LEN)
        );
        // A buffer of LEN bytes is enough, one less is not.
        assert!(s.encode(&mut buf[..OstStatfs::LEN - 1]).is_err());
    }

    #[test]
    fn bad_requests_are_errors() {
        let mut buf = [0u8; 256];
        let w = WriteReq {
            target: target(ObjFlags::default()),
            offset: 0,
            len: 5,
            crc: 0,
            data: Data::Inline(b"hello"),
            key: None,
        };
        let n = w.encode(&mut buf).unwrap();
        // Inline data shorter or longer than the length says.
        assert!(WriteReq::decode(&buf[..n - 1]).is_err());
        assert!(WriteReq::decode(&buf[..n + 1]).is_err());
        // Unknown flags, overflowing ranges, oversized requests.
        let mut bad = buf;
        bad[4] = 0x80;
        assert_eq!(WriteReq::decode(&bad[..n]), Err(ObjError::Flags(0x80)));
        let r = ReadReq {
            target: target(ObjFlags::default()),
            offset: u64::MAX,
            len: 2,
            bulk: None,
        };
        let n = r.encode(&mut buf).unwrap();
        assert!(matches!(
            ReadReq::decode(&buf[..n]),
            Err(ObjError::TooLong { .. })
        ));
        let r = ReadReq {
            len: MAX_IO + 1,
            offset: 0,
            ..r
        };
        let n = r.encode(&mut buf).unwrap();
        assert_eq!(ReadReq::decode(&buf[..n]).unwrap_err().errno(), 27);
        // A bulk read whose descriptor is smaller than the read.
        let r = ReadReq {
            target: target(ObjFlags::BULK),
            offset: 0,
            len: 4096,
            bulk: Some(BulkDesc {
                addr: 0,
                len: 100,
                key: 1,
            }),
        };
        let n = r.encode(&mut buf).unwrap();
        assert!(ReadReq::decode(&buf[..n]).is_err());
        // A key whose xid is below its own floor, or without a client; the KEYED flag
        // on a request that carries no key.
        for (client, xid, floor) in [(1, 4, 5), (0, 5, 5)] {
            let p = RangeReq {
                target: target(ObjFlags::default()),
                offset: 0,
                len: 0,
                key: Some(IoKey { client, xid, floor }),
            };
            let n = p.encode(&mut buf).unwrap();
            assert!(matches!(
                RangeReq::decode(&buf[..n]),
                Err(ObjError::Key(..))
            ));
        }
        let n = encode_target(&target(ObjFlags::KEYED), &mut buf).unwrap();
        assert_eq!(decode_target(&buf[..n]), Err(ObjError::Flags(16)));
        // Truncations never panic.
        for cut in 0..n {
            let _ = ReadReq::decode(&buf[..cut]);
            let _ = WriteReq::decode(&buf[..cut]);
            let _ = RangeReq::decode(&buf[..cut]);
            let _ = decode_target(&buf[..cut]);
        }
    }
}
