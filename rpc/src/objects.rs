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

use nacre_proto::bootstrap::{ClusterMap, Role, RoleKind};
use nacre_proto::layout::{Piece, StripedLayout};
use nacre_proto::object::{
    decode_target, encode_target, Data, IoKey, IoReply, ListReply, ListReq, ObjFlags, ObjTarget,
    RangeReq, ReadReq, WriteReq, MSG_SIZE as OSS_MSG_SIZE,
};
use nacre_proto::{BulkDesc, Opcode, HEADER_LEN};

use crate::rpc::{ClientEndpoint, ClientError, RpcReply, SessionId};

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

impl OstRoute {
    /// The route to OST `ost` as `map` names its server, epoch and cores.
    pub fn in_map(map: &ClusterMap, ost: u32) -> Result<OstRoute, ClientError> {
        let role = Role {
            kind: RoleKind::Oss,
            index: ost,
        };
        let s = map
            .server(role)
            .ok_or_else(|| ClientError::Protocol(format!("no server for OST {ost} in the map")))?;
        Ok(OstRoute {
            ost,
            epoch: s.epoch,
            cores: s.cores.clone(),
        })
    }

    /// The route of each stripe of `layout`, in stripe order, as `map` names them.
    pub fn each_in_map(
        map: &ClusterMap,
        layout: &StripedLayout,
    ) -> Result<Vec<OstRoute>, ClientError> {
        layout
            .objects
            .iter()
            .map(|o| OstRoute::in_map(map, o.ost))
            .collect()
    }
}

/// Per-request options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoOptions {
    pub checksum: bool,
    /// Make a write durable (with the object's size) before it is acknowledged.
    pub sync: bool,
    /// Keys for a write that may be sent again: its pieces go under them, so the
    /// servers apply each at most once.
    pub keys: Option<KeyBlock>,
}

impl Default for IoOptions {
    fn default() -> Self {
        IoOptions {
            checksum: true,
            sync: false,
            keys: None,
        }
    }
}

/// The keys of one call's changes: its `i`th request goes under xid `first + i`, with
/// the client's floor as it was when the block was drawn (see [`IoKey`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyBlock {
    pub client: u64,
    pub first: u64,
    pub count: u64,
    pub floor: u64,
}

impl KeyBlock {
    /// The key of request `i`.
    pub fn key(&self, i: usize) -> IoKey {
        assert!(
            (i as u64) < self.count,
            "request {i} of a block of {}",
            self.count
        );
        IoKey {
            client: self.client,
            xid: self.first + i as u64,
            floor: self.floor,
        }
    }

    /// A block large enough for a write of extents of `lens` bytes: every extent is
    /// sent in requests of at most [`MAX_REQUEST`] bytes.
    pub fn needed(lens: impl IntoIterator<Item = usize>) -> u64 {
        lens.into_iter()
            .map(|n| n.div_ceil(MAX_REQUEST).max(1) as u64)
            .sum()
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

/// An object's attributes and an OST's use, as the OST reports them (OBJ_GETATTR,
/// OBJ_STATFS): the same types the OSS's store returns.
pub use nacre_proto::object::{ObjectAttr, OstStatfs};

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

    /// A request's target, with the object's capability if this endpoint holds one.
    fn target(&self, route: &OstRoute, object: u64, flags: ObjFlags) -> ObjTarget {
        ObjTarget {
            ost: route.ost,
            flags,
            epoch: route.epoch,
            object,
            cap: self.capabilities().and_then(|c| c.get(route.ost, object)),
        }
    }

    /// The largest payload that travels inline in a request.
    pub fn inline_max(&self) -> usize {
        // The fixed fields of a keyed write with its capability, and room to spare.
        self.msg_size() - HEADER_LEN - 128
    }

    /// The largest read answered inline: what fits a reply (16 bytes of reply header
    /// besides the data) that the server can send without waiting for us, which on shm
    /// is its inject size (`Core::reply_body_max`). Larger reads go by bulk.
    pub fn reply_inline_max(&self) -> usize {
        let reply = self.ep.safe_send_size().min(OSS_MSG_SIZE) - HEADER_LEN - 16;
        self.object_inline_max().min(reply)
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
        let whole = Extent::whole(route, object, offset, data.len());
        self.write_extents(&[whole], data, opt)?;
        Ok(data.len())
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
        let whole = Extent::whole(route, object, offset, buf.len());
        Ok(self.read_extents(&[whole], buf, opt)?[0])
    }

    /// The largest payload that travels inline to and from an OSS core: the message
    /// less a keyed write's fixed fields with its capability (104 bytes) and room to
    /// spare.
    fn object_inline_max(&self) -> usize {
        self.inline_max().min(OSS_MSG_SIZE - HEADER_LEN - 128)
    }

    /// Writes `data` to the objects `extents` name, every piece in flight at once (up to
    /// the endpoint's depth): the striped write of a file range. Each extent's bytes are
    /// `data[at..at + len]`. Small transfers travel inline; larger ones lend `data` to
    /// the servers through one registration.
    pub fn write_extents(
        &mut self,
        extents: &[Extent<'_>],
        data: &[u8],
        opt: IoOptions,
    ) -> Result<(), ClientError> {
        let flags = io_flags(opt, true);
        let reqs = split(extents);
        let last = reqs.iter().map(|r| r.key + 1).max().unwrap_or(0);
        if let Some(b) = opt.keys.filter(|b| last > b.count) {
            return Err(ClientError::Protocol(format!(
                "a write whose requests need {last} keys under a block of {}",
                b.count
            )));
        }
        let key = |p: &Req<'_>| opt.keys.map(|b| b.key(p.key as usize));
        if data.len() <= self.object_inline_max() {
            let mut body = vec![0u8; 128 + data.len()];
            return self
                .in_flight(&reqs, |c, _, p| {
                    let bytes = &data[p.at..p.at + p.len];
                    let req = WriteReq {
                        target: c.target(p.route, p.object, flags),
                        offset: p.offset,
                        len: p.len as u64,
                        crc: crc_of(opt, bytes),
                        data: Data::Inline(bytes),
                        key: key(p),
                    };
                    let n = req.encode(&mut body).map_err(proto_err)?;
                    let sid = c.object_session(p.route, p.object)?;
                    c.send(sid, Opcode::OBJ_WRITE, &body[..n])
                })
                .and_then(|replies| check_written(&reqs, &replies));
        }
        let flags = flags.with(ObjFlags::BULK);
        self.with_buffer(data, |c, desc| {
            // Every piece is answered before the buffer is given back (or the call
            // fails and its registration is closed).
            let replies = c.in_flight(&reqs, |c, _, p| {
                let req = WriteReq {
                    target: c.target(p.route, p.object, flags),
                    offset: p.offset,
                    len: p.len as u64,
                    crc: crc_of(opt, &data[p.at..p.at + p.len]),
                    data: Data::Bulk(sub(&desc, p.at, p.len)),
                    key: key(p),
                };
                let mut body = [0u8; 128];
                let n = req.encode(&mut body).map_err(proto_err)?;
                let sid = c.object_session(p.route, p.object)?;
                c.send(sid, Opcode::OBJ_WRITE, &body[..n])
            })?;
            check_written(&reqs, &replies)
        })
    }

    /// Reads the objects `extents` name into `buf` (each extent's bytes go to
    /// `buf[at..at + len]`), every piece in flight at once. Returns, per extent, the
    /// bytes read before the object ended (a short count means the object ends there;
    /// holes inside an object read as zeros).
    pub fn read_extents(
        &mut self,
        extents: &[Extent<'_>],
        buf: &mut [u8],
        opt: IoOptions,
    ) -> Result<Vec<usize>, ClientError> {
        let flags = io_flags(opt, false);
        let reqs = split(extents);
        let got = if buf.len() <= self.reply_inline_max() {
            let replies = self.in_flight(&reqs, |c, _, p| {
                let req = ReadReq {
                    target: c.target(p.route, p.object, flags),
                    offset: p.offset,
                    len: p.len as u64,
                    bulk: None,
                };
                let mut body = [0u8; 128];
                let n = req.encode(&mut body).map_err(proto_err)?;
                let sid = c.object_session(p.route, p.object)?;
                c.send(sid, Opcode::OBJ_READ, &body[..n])
            })?;
            let mut got = Vec::with_capacity(reqs.len());
            for (p, reply) in reqs.iter().zip(&replies) {
                let Some(r) = read_reply(reply)? else {
                    got.push((0, EMPTY_CRC));
                    continue;
                };
                let n = (r.len as usize).min(p.len).min(r.inline.len());
                buf[p.at..p.at + n].copy_from_slice(&r.inline[..n]);
                got.push((n, r.crc));
            }
            got
        } else {
            let flags = flags.with(ObjFlags::BULK);
            self.with_buffer_mut(buf, |c, desc| {
                let replies = c.in_flight(&reqs, |c, _, p| {
                    let req = ReadReq {
                        target: c.target(p.route, p.object, flags),
                        offset: p.offset,
                        len: p.len as u64,
                        bulk: Some(sub(&desc, p.at, p.len)),
                    };
                    let mut body = [0u8; 128];
                    let n = req.encode(&mut body).map_err(proto_err)?;
                    let sid = c.object_session(p.route, p.object)?;
                    c.send(sid, Opcode::OBJ_READ, &body[..n])
                })?;
                let mut got = Vec::with_capacity(reqs.len());
                for (p, reply) in reqs.iter().zip(&replies) {
                    got.push(match read_reply(reply)? {
                        Some(r) => ((r.len as usize).min(p.len), r.crc),
                        None => (0, EMPTY_CRC),
                    });
                }
                Ok(got)
            })?
        };
        // Per extent, the object ends where its first short piece stops.
        let mut out = vec![0usize; extents.len()];
        let mut ended = vec![false; extents.len()];
        for (p, (n, crc)) in reqs.iter().zip(got) {
            verify(opt, crc, &buf[p.at..p.at + n])?;
            if !ended[p.extent] {
                out[p.extent] += n;
                ended[p.extent] = n < p.len;
            }
        }
        Ok(out)
    }

    /// Sends one request per item through `send`, keeping at most the endpoint's depth
    /// in flight, and returns the replies in item order.
    fn in_flight<T>(
        &mut self,
        reqs: &[T],
        mut send: impl FnMut(&mut Self, usize, &T) -> Result<u64, ClientError>,
    ) -> Result<Vec<RpcReply>, ClientError> {
        let window = self.depth().max(1);
        let mut ids = std::collections::VecDeque::with_capacity(window);
        let mut replies = Vec::with_capacity(reqs.len());
        for (i, p) in reqs.iter().enumerate() {
            if ids.len() == window {
                replies.push(self.wait(ids.pop_front().expect("window is full"))?);
            }
            ids.push_back(send(self, i, p)?);
        }
        for id in ids {
            replies.push(self.wait(id)?);
        }
        Ok(replies)
    }

    /// Punches `len` bytes at `offset` (they read as zeros; the size does not change);
    /// under `key`, at most once.
    pub fn obj_punch(
        &mut self,
        route: &OstRoute,
        object: u64,
        (offset, len): (u64, u64),
        key: Option<IoKey>,
    ) -> Result<(), ClientError> {
        self.range_op(Opcode::OBJ_PUNCH, route, object, (offset, len), key)
    }

    /// Sets the object's size; under `key`, at most once.
    pub fn obj_truncate(
        &mut self,
        route: &OstRoute,
        object: u64,
        size: u64,
        key: Option<IoKey>,
    ) -> Result<(), ClientError> {
        self.range_op(Opcode::OBJ_TRUNCATE, route, object, (size, 0), key)
    }

    fn range_op(
        &mut self,
        op: Opcode,
        route: &OstRoute,
        object: u64,
        (offset, len): (u64, u64),
        key: Option<IoKey>,
    ) -> Result<(), ClientError> {
        let sid = self.object_session(route, object)?;
        let req = RangeReq {
            target: self.target(route, object, ObjFlags::default()),
            offset,
            len,
            key,
        };
        let mut body = [0u8; 96];
        let n = req.encode(&mut body).map_err(proto_err)?;
        check(&self.request(sid, op, &body[..n])?)
    }

    pub fn obj_getattr(
        &mut self,
        route: &OstRoute,
        object: u64,
    ) -> Result<ObjectAttr, ClientError> {
        let reply = self.target_op(Opcode::OBJ_GETATTR, route, object, ObjFlags::default())?;
        ObjectAttr::decode(&reply.body).map_err(proto_err)
    }

    pub fn obj_destroy(&mut self, route: &OstRoute, object: u64) -> Result<(), ClientError> {
        self.target_op(Opcode::OBJ_DESTROY, route, object, ObjFlags::default())
            .map(|_| ())
    }

    /// Destroys every object `objects` names, up to the endpoint's depth in flight at
    /// once (a batch of gone files' objects, as the MDS's destroyer sends them). Per
    /// object: whether it was there (ENOENT: false), or the server's refusal. Stops at
    /// the first error that is not a server's answer (no reply, a fabric error), which
    /// it returns: what was not answered is sent again by the caller's next pass.
    pub fn obj_destroy_all(
        &mut self,
        objects: &[(&OstRoute, u64)],
    ) -> Result<Vec<Result<bool, ClientError>>, ClientError> {
        let replies = self.in_flight(objects, |c, _, &(route, object)| {
            let t = c.target(route, object, ObjFlags::default());
            let mut body = [0u8; ObjTarget::MAX_LEN];
            let n = encode_target(&t, &mut body).map_err(proto_err)?;
            let sid = c.object_session(route, object)?;
            c.send(sid, Opcode::OBJ_DESTROY, &body[..n])
        })?;
        Ok(replies.iter().map(destroyed).collect())
    }

    /// Makes every acknowledged write of the object durable, with its size.
    pub fn obj_sync(&mut self, route: &OstRoute, object: u64) -> Result<(), ClientError> {
        self.target_op(Opcode::OBJ_SYNC, route, object, ObjFlags::default())
            .map(|_| ())
    }

    /// The objects of the OST's hashed directory `dir` with ids above `after`, a page at
    /// a time (as many as a reply holds), and whether the directory has no more. Asked
    /// of the core `dir % cores`, so a walk spreads over the server's cores.
    pub fn obj_list(
        &mut self,
        route: &OstRoute,
        dir: u32,
        after: u64,
    ) -> Result<ListReply, ClientError> {
        let sid = self.object_session(route, u64::from(dir))?;
        let room = self.msg_size().min(OSS_MSG_SIZE).saturating_sub(HEADER_LEN);
        let req = ListReq {
            target: self.target(route, after, ObjFlags::default()),
            dir,
            max: ListReply::room(room) as u32,
        };
        let mut body = [0u8; 128];
        let n = req.encode(&mut body).map_err(proto_err)?;
        let reply = self.request(sid, Opcode::OBJ_LIST, &body[..n])?;
        check(&reply)?;
        ListReply::decode(&reply.body).map_err(proto_err)
    }

    /// Capacity and free space of the OST (asked of the server's first core).
    pub fn ost_statfs(&mut self, route: &OstRoute) -> Result<OstStatfs, ClientError> {
        let reply = self.target_op(Opcode::OBJ_STATFS, route, 0, ObjFlags::default())?;
        OstStatfs::decode(&reply.body).map_err(proto_err)
    }

    fn target_op(
        &mut self,
        op: Opcode,
        route: &OstRoute,
        object: u64,
        flags: ObjFlags,
    ) -> Result<RpcReply, ClientError> {
        let sid = self.object_session(route, object)?;
        let t = self.target(route, object, flags);
        let mut body = [0u8; ObjTarget::MAX_LEN];
        let n = encode_target(&t, &mut body).map_err(proto_err)?;
        debug_assert!(decode_target(&body[..n]).is_ok());
        let reply = self.request(sid, op, &body[..n])?;
        check(&reply)?;
        Ok(reply)
    }
}

/// A contiguous run of one object and where its bytes sit in the caller's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Extent<'r> {
    pub route: &'r OstRoute,
    pub object: u64,
    /// Offset in the object.
    pub offset: u64,
    /// Offset in the caller's buffer.
    pub at: usize,
    pub len: usize,
    /// Under keys: the index in the call's [`KeyBlock`] of the extent's first request
    /// (its others follow), so the same extent goes under the same keys in every try,
    /// whichever other extents the try sends.
    pub key: u64,
}

impl<'r> Extent<'r> {
    /// The extents of copy `layout` (routed by `routes`, one per stripe) that file
    /// `pieces` of a transfer starting at file offset `offset` touch, their requests
    /// under keys `key..` of the call's [`KeyBlock`] (ignored by calls without one).
    pub fn of_pieces(
        layout: &StripedLayout,
        routes: &'r [OstRoute],
        pieces: &[Piece],
        offset: u64,
        mut key: u64,
    ) -> Vec<Extent<'r>> {
        pieces
            .iter()
            .map(|p| {
                let e = Extent {
                    route: &routes[p.stripe as usize],
                    object: layout.objects[p.stripe as usize].oid,
                    offset: p.object_offset,
                    at: (p.file_offset - offset) as usize,
                    len: p.len as usize,
                    key,
                };
                key += KeyBlock::needed([e.len]);
                e
            })
            .collect()
    }

    fn whole(route: &'r OstRoute, object: u64, offset: u64, len: usize) -> Extent<'r> {
        Extent {
            route,
            object,
            offset,
            at: 0,
            len,
            key: 0,
        }
    }
}

/// One request: a piece of at most [`MAX_REQUEST`] bytes of an extent.
struct Req<'r> {
    extent: usize,
    /// Its key's index in the call's block.
    key: u64,
    route: &'r OstRoute,
    object: u64,
    offset: u64,
    at: usize,
    len: usize,
}

fn split<'r>(extents: &[Extent<'r>]) -> Vec<Req<'r>> {
    let mut out = Vec::with_capacity(extents.len());
    for (i, e) in extents.iter().enumerate() {
        let mut done = 0;
        let mut key = e.key;
        loop {
            let len = MAX_REQUEST.min(e.len - done);
            out.push(Req {
                extent: i,
                key,
                route: e.route,
                object: e.object,
                offset: e.offset + done as u64,
                at: e.at + done,
                len,
            });
            done += len;
            key += 1;
            if done >= e.len {
                break;
            }
        }
    }
    out
}

fn io_flags(opt: IoOptions, write: bool) -> ObjFlags {
    let mut flags = ObjFlags::default();
    if opt.checksum {
        flags = flags.with(ObjFlags::CHECKSUM);
    }
    if opt.sync && write {
        flags = flags.with(ObjFlags::SYNC);
    }
    flags
}

fn crc_of(opt: IoOptions, data: &[u8]) -> u32 {
    match opt.checksum {
        true => crc32c::crc32c(data),
        false => 0,
    }
}

/// CRC32C of no bytes.
const EMPTY_CRC: u32 = 0;

/// A read's reply, or None for an object that does not exist yet: objects come into
/// being with their first write, so a stripe never written reads as empty (a hole).
fn read_reply(reply: &RpcReply) -> Result<Option<IoReply<'_>>, ClientError> {
    if reply.header.status == -libc::ENOENT {
        return Ok(None);
    }
    check(reply)?;
    IoReply::decode(&reply.body).map(Some).map_err(proto_err)
}

fn check_written(reqs: &[Req<'_>], replies: &[RpcReply]) -> Result<(), ClientError> {
    for (p, reply) in reqs.iter().zip(replies) {
        written(reply, p.len)?;
    }
    Ok(())
}

fn sub(desc: &BulkDesc, at: usize, len: usize) -> BulkDesc {
    desc.sub(at as u64, len as u64)
        .expect("pieces lie inside the buffer")
}

/// A destroy's answer: whether the object was there (ENOENT: gone already, or never
/// written), or the server's refusal.
fn destroyed(reply: &RpcReply) -> Result<bool, ClientError> {
    match reply.header.status {
        s if s == -libc::ENOENT => Ok(false),
        _ => check(reply).map(|_| true),
    }
}

fn check(reply: &RpcReply) -> Result<(), ClientError> {
    match reply.header.status {
        0 => Ok(()),
        s => Err(ClientError::Status(-s)),
    }
}

fn written(reply: &RpcReply, want: usize) -> Result<usize, ClientError> {
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
