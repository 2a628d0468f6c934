//! The client's object half: object I/O against the cores of OSS servers, straight from
//! and into the caller's buffer.
//!
//! An object lives on one OST; the OST's server publishes its cores' fabric addresses
//! and the role's epoch (the cluster map), and each object belongs to core
//! `object % cores`. Small transfers ride inline in the request or reply; larger ones
//! lend the caller's buffer to the server (registered through the endpoint's cache) and
//! are split into requests of at most [`MAX_REQUEST`] bytes, all in flight at once.
//! With checksums on (the default wherever bytes cross a wire or a NIC: every provider
//! but shm, see [`checksum_by_default`]), a write carries the crc32c of its bytes and a
//! read's reply carries the crc32c the server computed; a mismatch is an error (EILSEQ).

use nacre_proto::object::{
    decode_target, encode_target, AttrReply, Data, IoReply, ObjFlags, ObjTarget, RangeReq, ReadReq,
    StatfsReply, WriteReq,
};
use nacre_proto::{BulkDesc, Opcode, HEADER_LEN};

use crate::rpc::{ClientEndpoint, ClientError, Reply, SessionId};

/// The largest request the client sends; a larger transfer is several, in flight
/// together (the server splits each further into slabs).
pub const MAX_REQUEST: usize = 4 << 20;

/// Where an OST is served: what the cluster map says of its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OstRoute {
    pub ost: u32,
    /// The role's current epoch (fencing token).
    pub epoch: u64,
    /// Fabric addresses of the server's cores, in core order.
    pub cores: Vec<Vec<u8>>,
}

/// Per-request options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoOptions {
    pub checksum: bool,
    /// Make a write durable (with the object's size) before it is acknowledged.
    pub sync: bool,
}

impl Default for IoOptions {
    fn default() -> Self {
        IoOptions {
            checksum: true,
            sync: false,
        }
    }
}

impl IoOptions {
    /// The defaults for `provider`: checksums wherever bytes cross a wire or a NIC, and
    /// not on shm, where they move from one process's memory to another's on the same
    /// host (a memory copy has nothing to protect against that ECC does not).
    pub fn for_provider(provider: &str) -> IoOptions {
        IoOptions {
            checksum: checksum_by_default(provider),
            ..IoOptions::default()
        }
    }
}

/// Whether object data carries a crc32c by default on `provider`.
pub fn checksum_by_default(provider: &str) -> bool {
    provider != "shm"
}

/// Attributes of an object as its OST reports them.
pub type ObjectAttr = AttrReply;
pub type OstStatfs = StatfsReply;

impl ClientEndpoint {
    /// The session with the core that owns `object` on `route`'s server.
    fn object_session(&mut self, route: &OstRoute, object: u64) -> Result<SessionId, ClientError> {
        if route.cores.is_empty() {
            return Err(ClientError::Protocol(format!(
                "OST {} has no server cores in the map",
                route.ost
            )));
        }
        let core = (object % route.cores.len() as u64) as usize;
        self.connect(&route.cores[core])
    }

    fn target(route: &OstRoute, object: u64, flags: ObjFlags) -> ObjTarget {
        ObjTarget {
            ost: route.ost,
            flags,
            epoch: route.epoch,
            object,
        }
    }

    /// The largest payload that travels inline in a request or a reply.
    pub fn inline_max(&self) -> usize {
        self.msg_size() - HEADER_LEN - 64
    }

    /// Writes `data` at `offset` of `object`; returns the bytes written (all of them).
    pub fn obj_write(
        &mut self,
        route: &OstRoute,
        object: u64,
        offset: u64,
        data: &[u8],
        opt: IoOptions,
    ) -> Result<usize, ClientError> {
        let sid = self.object_session(route, object)?;
        let mut flags = ObjFlags::default();
        if opt.checksum {
            flags = flags.with(ObjFlags::CHECKSUM);
        }
        if opt.sync {
            flags = flags.with(ObjFlags::SYNC);
        }
        if data.len() <= self.inline_max() {
            let req = WriteReq {
                target: Self::target(route, object, flags),
                offset,
                len: data.len() as u64,
                crc: if opt.checksum {
                    crc32c::crc32c(data)
                } else {
                    0
                },
                data: Data::Inline(data),
            };
            let mut body = vec![0u8; 64 + data.len()];
            let n = req.encode(&mut body).map_err(proto_err)?;
            let reply = self.request(sid, Opcode::OBJ_WRITE, &body[..n])?;
            return written(&reply, data.len());
        }
        let flags = flags.with(ObjFlags::BULK);
        self.with_buffer(data, |c, desc| {
            let mut ids = Vec::new();
            for (at, len) in pieces(data.len()) {
                let piece = &data[at..at + len];
                let req = WriteReq {
                    target: Self::target(route, object, flags),
                    offset: offset + at as u64,
                    len: len as u64,
                    crc: if opt.checksum {
                        crc32c::crc32c(piece)
                    } else {
                        0
                    },
                    data: Data::Bulk(sub(&desc, at, len)),
                };
                let mut body = [0u8; 128];
                let n = req.encode(&mut body).map_err(proto_err)?;
                ids.push((c.send(sid, Opcode::OBJ_WRITE, &body[..n])?, len));
            }
            // Every piece is answered before the buffer is given back (or the call fails
            // and its registration is closed).
            let mut total = 0;
            for (id, len) in ids {
                total += written(&c.wait(id)?, len)?;
            }
            Ok(total)
        })
    }

    /// Reads into `buf` from `offset` of `object`; returns the bytes read (short at the
    /// end of the object; holes read as zeros).
    pub fn obj_read(
        &mut self,
        route: &OstRoute,
        object: u64,
        offset: u64,
        buf: &mut [u8],
        opt: IoOptions,
    ) -> Result<usize, ClientError> {
        let sid = self.object_session(route, object)?;
        let flags = match opt.checksum {
            true => ObjFlags::CHECKSUM,
            false => ObjFlags::default(),
        };
        if buf.len() <= self.inline_max() {
            let req = ReadReq {
                target: Self::target(route, object, flags),
                offset,
                len: buf.len() as u64,
                bulk: None,
            };
            let mut body = [0u8; 64];
            let n = req.encode(&mut body).map_err(proto_err)?;
            let reply = self.request(sid, Opcode::OBJ_READ, &body[..n])?;
            check(&reply)?;
            let r = IoReply::decode(&reply.body).map_err(proto_err)?;
            let got = (r.len as usize).min(buf.len()).min(r.inline.len());
            buf[..got].copy_from_slice(&r.inline[..got]);
            verify(opt, r.crc, &buf[..got])?;
            return Ok(got);
        }
        let flags = flags.with(ObjFlags::BULK);
        let len = buf.len();
        let got = self.with_buffer_mut(buf, |c, desc| {
            let mut ids = Vec::new();
            for (at, len) in pieces(len) {
                let req = ReadReq {
                    target: Self::target(route, object, flags),
                    offset: offset + at as u64,
                    len: len as u64,
                    bulk: Some(sub(&desc, at, len)),
                };
                let mut body = [0u8; 128];
                let n = req.encode(&mut body).map_err(proto_err)?;
                ids.push((c.send(sid, Opcode::OBJ_READ, &body[..n])?, at, len));
            }
            let mut got = Vec::with_capacity(ids.len());
            for (id, at, len) in ids {
                let reply = c.wait(id)?;
                check(&reply)?;
                let r = IoReply::decode(&reply.body).map_err(proto_err)?;
                got.push((at, len, (r.len as usize).min(len), r.crc));
            }
            Ok(got)
        })?;
        // The object ends where the first short piece stops.
        let mut read = 0;
        for (at, len, n, crc) in got {
            verify(opt, crc, &buf[at..at + n])?;
            read = at + n;
            if n < len {
                break;
            }
        }
        Ok(read)
    }

    /// Punches `len` bytes at `offset` (they read as zeros; the size does not change).
    pub fn obj_punch(
        &mut self,
        route: &OstRoute,
        object: u64,
        offset: u64,
        len: u64,
    ) -> Result<(), ClientError> {
        self.range_op(Opcode::OBJ_PUNCH, route, object, offset, len)
    }

    /// Sets the object's size.
    pub fn obj_truncate(
        &mut self,
        route: &OstRoute,
        object: u64,
        size: u64,
    ) -> Result<(), ClientError> {
        self.range_op(Opcode::OBJ_TRUNCATE, route, object, size, 0)
    }

    fn range_op(
        &mut self,
        op: Opcode,
        route: &OstRoute,
        object: u64,
        offset: u64,
        len: u64,
    ) -> Result<(), ClientError> {
        let sid = self.object_session(route, object)?;
        let req = RangeReq {
            target: Self::target(route, object, ObjFlags::default()),
            offset,
            len,
        };
        let mut body = [0u8; 64];
        let n = req.encode(&mut body).map_err(proto_err)?;
        check(&self.request(sid, op, &body[..n])?)
    }

    pub fn obj_getattr(
        &mut self,
        route: &OstRoute,
        object: u64,
    ) -> Result<ObjectAttr, ClientError> {
        let reply = self.target_op(Opcode::OBJ_GETATTR, route, object, ObjFlags::default())?;
        AttrReply::decode(&reply.body).map_err(proto_err)
    }

    pub fn obj_destroy(&mut self, route: &OstRoute, object: u64) -> Result<(), ClientError> {
        self.target_op(Opcode::OBJ_DESTROY, route, object, ObjFlags::default())
            .map(|_| ())
    }

    /// Makes every acknowledged write of the object durable, with its size.
    pub fn obj_sync(&mut self, route: &OstRoute, object: u64) -> Result<(), ClientError> {
        self.target_op(Opcode::OBJ_SYNC, route, object, ObjFlags::default())
            .map(|_| ())
    }

    /// Capacity and free space of the OST (asked of the server's first core).
    pub fn ost_statfs(&mut self, route: &OstRoute) -> Result<OstStatfs, ClientError> {
        let reply = self.target_op(Opcode::OBJ_STATFS, route, 0, ObjFlags::default())?;
        StatfsReply::decode(&reply.body).map_err(proto_err)
    }

    fn target_op(
        &mut self,
        op: Opcode,
        route: &OstRoute,
        object: u64,
        flags: ObjFlags,
    ) -> Result<Reply, ClientError> {
        let sid = self.object_session(route, object)?;
        let t = Self::target(route, object, flags);
        let mut body = [0u8; 32];
        let n = encode_target(&t, &mut body).map_err(proto_err)?;
        debug_assert!(decode_target(&body[..n]).is_ok());
        let reply = self.request(sid, op, &body[..n])?;
        check(&reply)?;
        Ok(reply)
    }
}

/// Pieces of at most MAX_REQUEST bytes: (offset in the buffer, length).
fn pieces(len: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..len)
        .step_by(MAX_REQUEST)
        .map(move |at| (at, MAX_REQUEST.min(len - at)))
}

fn sub(desc: &BulkDesc, at: usize, len: usize) -> BulkDesc {
    desc.sub(at as u64, len as u64)
        .expect("pieces lie inside the buffer")
}

fn check(reply: &Reply) -> Result<(), ClientError> {
    match reply.header.status {
        0 => Ok(()),
        s => Err(ClientError::Status(-s)),
    }
}

fn written(reply: &Reply, want: usize) -> Result<usize, ClientError> {
    check(reply)?;
    let r = IoReply::decode(&reply.body).map_err(proto_err)?;
    match r.len as usize == want {
        true => Ok(want),
        false => Err(ClientError::Protocol(format!(
            "server wrote {} of {want} bytes",
            r.len
        ))),
    }
}

fn verify(opt: IoOptions, crc: u32, data: &[u8]) -> Result<(), ClientError> {
    if opt.checksum && crc32c::crc32c(data) != crc {
        return Err(ClientError::Status(libc::EILSEQ));
    }
    Ok(())
}

fn proto_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(e.to_string())
}
