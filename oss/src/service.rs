//! The OSS's engine service: object requests from clients, on the core that owns the
//! object, turned into bulk transfers and object-store operations.
//!
//! Each core holds one [`ObjectStore`] per OST its server serves (store id = position).
//! A request names its OST and the epoch the client's map gives that OST's role; the
//! core refuses an OST it does not serve (ENODEV), a stale or fenced epoch (ESTALE) and
//! an object another core owns (EXDEV: the client's routing rule is `object % cores`).
//!
//! A bulk write: slabs laid out for the object offset -> pull (fi_read) into them ->
//! checksum -> store write from the same slabs -> reply. A bulk read: store read into
//! slabs -> checksum -> push (fi_write, delivery-complete) -> reply. Small payloads
//! travel inline in the request or reply. An empty pool makes requests wait, in order.

use nacre_mgs::role::ServingEpoch;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use nacre_engine::{Bufs, BulkDone, Core, Incoming, IoCompletion, Service};
use nacre_fabric::PeerAddr;
use nacre_proto::object::{
    decode_target, Data, IoKey, IoReply, ListReply, ListReq, ObjError, ObjFlags, ObjTarget,
    ObjectAttr, OstStatfs, RangeReq, ReadReq, WriteReq,
};
use nacre_proto::{BulkDesc, Header, Opcode, HEADER_LEN};

use crate::access::Access;
use crate::replay::{Admit, Answer, Replays};
use crate::server::{open_store, OstHealth, OstRegistry};
use crate::{
    crc32c_bufs, slabs_for, Errno, Io, ObjectCompletion, ObjectStore, OpKind, TargetHealth,
    WriteMode,
};

/// One OST as a core serves it.
pub struct ServedOst {
    pub index: u32,
    pub epoch: ServingEpoch,
    pub health: OstHealth,
    pub store: ObjectStore,
}

/// What a request is waiting for, between its steps.
enum Step {
    /// A bulk write waiting for slabs.
    WaitSlabs,
    /// A bulk write's pull in flight.
    Pulling,
    /// A store operation in flight.
    Storing,
    /// A read's push in flight.
    Pushing { len: usize, crc: u32 },
}

struct InFlight {
    peer: PeerAddr,
    header: Header,
    store: usize,
    target: ObjTarget,
    offset: u64,
    len: usize,
    crc: u32,
    bulk: Option<BulkDesc>,
    step: Step,
    /// A write, punch or truncate that must apply at most once.
    key: Option<IoKey>,
}

impl InFlight {
    /// A request on `store` about `target`, before its step-specific fields are set.
    fn new(peer: PeerAddr, header: Header, store: usize, target: ObjTarget) -> InFlight {
        InFlight {
            peer,
            header,
            store,
            target,
            offset: 0,
            len: 0,
            crc: 0,
            bulk: None,
            step: Step::Storing,
            key: None,
        }
    }
}

/// Errnos of the service's own refusals.
const ENODEV: i32 = libc::ENODEV;
const ESTALE: i32 = libc::ESTALE;
const EXDEV: i32 = libc::EXDEV;
const EILSEQ: i32 = libc::EILSEQ;
/// A resend whose first copy is still running.
const EINPROGRESS: i32 = libc::EINPROGRESS;
/// A copy of a keyed change its client already saw answered or gave up.
const EALREADY: i32 = libc::EALREADY;

/// Bytes of bulk pushes (read data) a core keeps in flight to one client. A reply
/// follows its push on the same connection: over tcp, 32 pushes posted at once queued
/// 32 MiB in the socket ahead of the first reply, so the client got its replies
/// together, sent its next 32 reads together, and disk and wire took turns (reads
/// 0.9-1.2 GB/s, the disk idle two thirds of the time). Over shm the copy runs inside
/// the post, and 32 of them in one turn held every reply for 3 ms the same way. Two MiB
/// in flight keep the wire busy (more than a fast NIC's bandwidth-delay product) and
/// let each reply out as soon as its data is there.
const PUSH_BYTES_IN_FLIGHT: usize = 2 << 20;

/// Bulk pulls a core starts per turn. Over shm the pull is a CMA copy made inside the
/// post (~100 us a MiB): a turn that started every waiting pull copied 32 MiB before
/// any of it went to the disk, and the writes then moved in lock-step (the disk busy,
/// then idle while the next 32 copies ran). One per turn sends each write to the disk
/// as soon as its data is in, so copies and disk writes overlap.
const PULLS_PER_TURN: usize = 1;

/// Requests a core holds at most (admitted and not answered: in the store, waiting for
/// slabs, pulling or pushing). Beyond it the engine leaves new requests in their
/// receive slots and their senders wait (`Service::busy`), so a client that floods
/// requests and never reads the replies cannot grow the server's memory: the op table
/// and the `waiting` and `to_push` queues hold at most this many entries each (a few
/// hundred bytes apiece, slabs apart, which the pool bounds).
pub const MAX_OPS: usize = 1024;

pub struct OssService {
    core: usize,
    cores: usize,
    osts: Vec<ServedOst>,
    registry: OstRegistry,
    /// The registry's generation and length this core has opened stores for.
    seen: (u64, usize),
    max_files: usize,
    ops: Vec<Option<InFlight>>,
    free: Vec<usize>,
    /// Bulk writes waiting for slabs, oldest first.
    waiting: VecDeque<usize>,
    /// Bulk reads read from the disk, waiting to be pushed: (op, slabs, head, bytes).
    to_push: VecDeque<(usize, Bufs, usize, usize)>,
    /// Bytes of the pushes posted and not completed, per client.
    pushing: HashMap<PeerAddr, usize>,
    done: Vec<ObjectCompletion>,
    /// Answers of keyed changes, so a resend never applies twice.
    replays: Replays,
    /// Largest inline reply body, and the buffer inline replies are built in.
    inline_max: usize,
    scratch: Vec<u8>,
    /// The capability check of every object request.
    access: Access,
}

impl OssService {
    /// `core` of `cores` serves what `registry` holds (now and later); its storage
    /// has `max_files` file slots; reply bodies carry at most `reply_max` bytes
    /// (`Core::reply_body_max`): a larger read is refused inline (EMSGSIZE) and goes
    /// by bulk.
    pub fn new(
        core: usize,
        cores: usize,
        registry: OstRegistry,
        max_files: usize,
        reply_max: usize,
    ) -> OssService {
        let mut s = OssService {
            core,
            cores: cores.max(1),
            osts: Vec::new(),
            registry,
            seen: (u64::MAX, 0),
            max_files,
            ops: Vec::new(),
            free: Vec::new(),
            waiting: VecDeque::new(),
            to_push: VecDeque::new(),
            pushing: HashMap::new(),
            done: Vec::new(),
            replays: Replays::default(),
            inline_max: reply_max - 16,
            scratch: Vec::with_capacity(reply_max + HEADER_LEN),
            access: Access::default(),
        };
        s.open_new_osts();
        s
    }

    /// Object requests must carry capabilities sealed with `key` (None: checks nothing).
    pub fn checking(mut self, key: Option<nacre_auth::CapabilityKey>) -> OssService {
        self.access = Access::new(key);
        self
    }

    /// Opens this core's store of every OST added to the registry since the last look.
    fn open_new_osts(&mut self) -> bool {
        let generation = self.registry.generation();
        if generation == self.seen.0 {
            return false;
        }
        let from = self.seen.1;
        let added = self.registry.since(from);
        // File slots are shared by the stores: each gets an equal part (at least 8).
        let per_store = (self.max_files / (from + added.len()).max(1)).max(8);
        for (i, spec) in added.iter().enumerate() {
            if let Some(ost) = open_store(spec, from + i, per_store) {
                self.osts.push(ost);
            }
        }
        self.seen = (generation, from + added.len());
        !added.is_empty()
    }

    pub fn osts(&self) -> &[ServedOst] {
        &self.osts
    }

    /// Whether the role `f` was admitted under still holds: the same epoch, its lease
    /// not lapsed (checked again before every push and every reply).
    fn serves(&self, f: &InFlight) -> bool {
        self.osts[f.store].epoch.get() == f.target.epoch
    }

    /// The store for `t`, after the checks every request passes.
    fn admit(&self, t: &ObjTarget, needs_object: bool) -> Result<usize, i32> {
        let store = self
            .osts
            .iter()
            .position(|o| o.index == t.ost)
            .ok_or(ENODEV)?;
        let epoch = self.osts[store].epoch.get();
        if epoch == 0 || t.epoch != epoch {
            return Err(ESTALE);
        }
        if needs_object && (t.object % self.cores as u64) as usize != self.core {
            return Err(EXDEV);
        }
        Ok(store)
    }

    /// A decoded request on an OST this core may serve, or None once the request was
    /// answered with why not (malformed, not served here, stale epoch, other core).
    fn admit_decoded<T>(
        &mut self,
        core: &mut Core,
        peer: PeerAddr,
        h: &Header,
        decoded: Result<T, ObjError>,
        target: impl FnOnce(&T) -> &ObjTarget,
        needs_object: bool,
    ) -> Option<(T, usize)> {
        let checked = decoded.map_err(|e| e.errno()).and_then(|r| {
            let t = target(&r);
            let store = self.admit(t, needs_object)?;
            let principal = core.principal(h.session);
            self.access.check(principal, h.session, h.opcode, t)?;
            Ok((store, r))
        });
        match checked {
            Ok((store, r)) => Some((r, store)),
            Err(errno) => {
                core.reply(peer, h, -errno, &[]);
                None
            }
        }
    }

    fn add(&mut self, f: InFlight) -> usize {
        match self.free.pop() {
            Some(id) => {
                self.ops[id] = Some(f);
                id
            }
            None => {
                self.ops.push(Some(f));
                self.ops.len() - 1
            }
        }
    }

    fn take(&mut self, id: usize) -> Option<InFlight> {
        let f = self.ops.get_mut(id)?.take()?;
        self.free.push(id);
        Some(f)
    }

    fn io<'a>(core: &'a mut Core) -> Io<'a> {
        Io {
            storage: &mut core.storage,
            pool: &mut core.pool,
        }
    }

    fn on_write(&mut self, core: &mut Core, peer: PeerAddr, h: Header, body: &[u8]) {
        let decoded = WriteReq::decode(body);
        let Some((req, store)) = self.admit_decoded(core, peer, &h, decoded, |r| &r.target, true)
        else {
            return;
        };
        if let Data::Inline(bytes) = req.data {
            if req.target.flags.has(ObjFlags::CHECKSUM) && crc32c::crc32c(bytes) != req.crc {
                return core.reply(peer, &h, -EILSEQ, &[]);
            }
        }
        if !self.admit_key(core, peer, &h, req.key.as_ref()) {
            return;
        }
        let mode = write_mode(req.target.flags);
        let f = InFlight {
            offset: req.offset,
            len: req.len as usize,
            crc: req.crc,
            key: req.key,
            ..InFlight::new(peer, h, store, req.target)
        };
        match req.data {
            Data::Inline(bytes) => {
                let id = self.add(f);
                let (obj, offset) = (req.target.object, req.offset);
                let st = &mut self.osts[store].store;
                st.write_inline(&mut core.pool, obj, offset, bytes, mode, id as u64);
            }
            Data::Bulk(desc) => {
                let id = self.add(InFlight {
                    bulk: Some(desc),
                    step: Step::WaitSlabs,
                    ..f
                });
                // Pulled from `on_turn`, a few per turn (see PULLS_PER_TURN).
                self.waiting.push_back(id);
            }
        }
    }

    /// Pushes read data to clients, oldest first, while fewer than
    /// [`PUSH_BYTES_IN_FLIGHT`] are in flight to that client (one push at least,
    /// whatever its size). A client whose pushes are slow (or gone) holds back only
    /// its own.
    fn start_pushes(&mut self, core: &mut Core) -> bool {
        let mut moved = false;
        for _ in 0..self.to_push.len() {
            let (id, bufs, head, n) = self.to_push.pop_front().expect("counted");
            let Some(f) = self.ops.get(id).and_then(Option::as_ref) else {
                put_all(core, bufs);
                continue;
            };
            if !self.serves(f) {
                // The lease lapsed while the push waited: nothing goes to the client.
                put_all(core, bufs);
                self.fail(core, id, ESTALE);
                moved = true;
                continue;
            }
            let (peer, desc) = (f.peer, f.bulk.expect("a bulk read"));
            let sent = self.pushing.get(&peer).copied().unwrap_or(0);
            if sent > 0 && sent + n > PUSH_BYTES_IN_FLIGHT {
                self.to_push.push_back((id, bufs, head, n));
                continue;
            }
            moved = true;
            match core.push(peer, &desc, 0, bufs, head, n, id as u64) {
                Ok(()) => *self.pushing.entry(peer).or_default() += n,
                Err(e) => self.fail(core, id, e.errno()),
            }
        }
        moved
    }

    /// A push of `len` bytes to `peer` is over.
    fn pushed(&mut self, peer: PeerAddr, len: usize) {
        if let Some(sent) = self.pushing.get_mut(&peer) {
            *sent -= len;
            if *sent == 0 {
                self.pushing.remove(&peer);
            }
        }
    }

    /// Starts bulk writes, oldest first, while the pool has their slabs, at most
    /// [`PULLS_PER_TURN`] a turn.
    fn start_pulls(&mut self, core: &mut Core) -> bool {
        let mut moved = false;
        let mut budget = PULLS_PER_TURN;
        while let Some(&id) = self.waiting.front() {
            if budget == 0 {
                return true; // more next turn, after this turn's data went to storage
            }
            let Some(f) = self.ops[id].as_ref() else {
                self.waiting.pop_front();
                continue;
            };
            let (offset, len, desc, peer) = (f.offset, f.len, f.bulk.expect("bulk"), f.peer);
            let Some(bufs) = slabs_for(&mut core.pool, offset, len) else {
                break; // back-pressure: slabs come back as other requests finish
            };
            self.waiting.pop_front();
            let head = (offset % 4096) as usize;
            let bufs: Bufs = bufs.into_iter().collect();
            budget -= 1;
            match core.pull_into(peer, &desc, 0, len, bufs, head, id as u64) {
                Ok(()) => self.ops[id].as_mut().expect("live").step = Step::Pulling,
                Err(e) => self.fail(core, id, e.errno()),
            }
            moved = true;
        }
        moved
    }

    fn on_read(&mut self, core: &mut Core, peer: PeerAddr, h: Header, body: &[u8]) {
        let decoded = ReadReq::decode(body);
        let Some((req, store)) = self.admit_decoded(core, peer, &h, decoded, |r| &r.target, true)
        else {
            return;
        };
        if req.bulk.is_none() && req.len as usize > self.inline_max {
            return core.reply(peer, &h, -libc::EMSGSIZE, &[]);
        }
        let id = self.add(InFlight {
            offset: req.offset,
            len: req.len as usize,
            bulk: req.bulk,
            ..InFlight::new(peer, h, store, req.target)
        });
        let (obj, offset, len) = (req.target.object, req.offset, req.len as usize);
        self.osts[store].store.read(obj, offset, len, id as u64);
    }

    fn on_range(&mut self, core: &mut Core, peer: PeerAddr, h: Header, body: &[u8]) {
        let decoded = RangeReq::decode(body);
        let Some((req, store)) = self.admit_decoded(core, peer, &h, decoded, |r| &r.target, true)
        else {
            return;
        };
        if !self.admit_key(core, peer, &h, req.key.as_ref()) {
            return;
        }
        let id = self.add(InFlight {
            offset: req.offset,
            len: req.len as usize,
            key: req.key,
            ..InFlight::new(peer, h, store, req.target)
        });
        let (st, obj) = (&mut self.osts[store].store, req.target.object);
        if h.opcode == Opcode::OBJ_PUNCH {
            st.punch(obj, req.offset, req.len, id as u64);
        } else {
            st.truncate(obj, req.offset, id as u64);
        }
    }

    /// GETATTR, STATFS (answered at once), DESTROY and SYNC (through the store).
    fn on_target_only(&mut self, core: &mut Core, peer: PeerAddr, h: Header, body: &[u8]) {
        let needs_object = h.opcode != Opcode::OBJ_STATFS;
        let decoded = decode_target(body);
        let Some((t, store)) = self.admit_decoded(core, peer, &h, decoded, |t| t, needs_object)
        else {
            return;
        };
        // The larger of the two fixed replies answered here.
        const OUT: usize = if ObjectAttr::LEN > OstStatfs::LEN {
            ObjectAttr::LEN
        } else {
            OstStatfs::LEN
        };
        let mut out = [0u8; OUT];
        let st = &mut self.osts[store].store;
        let answered = match h.opcode {
            Opcode::OBJ_GETATTR => st
                .getattr(t.object)
                .map(|a| a.encode(&mut out).expect("fits")),
            Opcode::OBJ_STATFS => st.statfs().map(|s| s.encode(&mut out).expect("fits")),
            _ => {
                let id = self.add(InFlight::new(peer, h, store, t));
                let st = &mut self.osts[store].store;
                if h.opcode == Opcode::OBJ_DESTROY {
                    st.destroy(t.object, id as u64);
                } else {
                    st.sync(t.object, t.flags.has(ObjFlags::DATASYNC), id as u64);
                }
                return;
            }
        };
        match answered {
            Ok(n) => core.reply(peer, &h, 0, &out[..n]),
            Err(Errno(e)) => core.reply(peer, &h, -e, &[]),
        }
    }

    /// LIST: a page of one object directory, answered at once (any core may list any
    /// directory: the store's directories are shared by the cores).
    fn on_list(&mut self, core: &mut Core, peer: PeerAddr, h: Header, body: &[u8]) {
        let decoded = ListReq::decode(body);
        let Some((req, store)) = self.admit_decoded(core, peer, &h, decoded, |r| &r.target, false)
        else {
            return;
        };
        let max = (req.max as usize).min(ListReply::room(self.inline_max + 16));
        let st = &self.osts[store].store;
        match st.list(req.dir as u8, req.target.object, max) {
            Ok((objects, eof)) => {
                let reply = ListReply { eof, objects };
                self.scratch.resize(8 + 16 * reply.objects.len(), 0);
                let n = reply.encode(&mut self.scratch).expect("sized");
                core.reply(peer, &h, 0, &self.scratch[..n]);
            }
            Err(Errno(e)) => core.reply(peer, &h, -e, &[]),
        }
    }

    /// A store operation finished.
    fn on_object(&mut self, core: &mut Core, c: ObjectCompletion) {
        let id = c.tag as usize;
        let Some(f) = self.ops.get(id).and_then(Option::as_ref) else {
            put_all(core, c.bufs);
            return;
        };
        let n = match c.result {
            Ok(n) => n,
            Err(Errno(e)) => {
                put_all(core, c.bufs);
                return self.fail(core, id, e);
            }
        };
        if !self.serves(f) {
            // The role's lease lapsed or moved while the operation ran: no data is
            // pushed and the answer is ESTALE, so the client asks the owner it serves
            // under now (a change that reached the disk did so under the lease).
            put_all(core, c.bufs);
            return self.fail(core, id, ESTALE);
        }
        if c.kind != OpKind::Read {
            put_all(core, c.bufs);
            let f = self.take(id).expect("live");
            let answer = Answer {
                status: 0,
                len: n as u64,
            };
            if let Some(key) = &f.key {
                self.replays.finish(key, Some(answer));
            }
            return reply_change(core, f.peer, &f.header, answer);
        }
        let crc = match f.target.flags.has(ObjFlags::CHECKSUM) {
            true => crc32c_bufs(&c.bufs, c.head, n),
            false => 0,
        };
        match f.bulk {
            Some(_) if n > 0 => {
                let bufs: Bufs = c.bufs.into_iter().collect();
                self.ops[id].as_mut().expect("live").step = Step::Pushing { len: n, crc };
                // Pushed from `on_turn` (see PUSH_BYTES_IN_FLIGHT).
                self.to_push.push_back((id, bufs, c.head, n));
            }
            _ => {
                // Inline (or empty): the reply body is the 16-byte IoReply, then the data.
                let inline = if f.bulk.is_none() { n } else { 0 };
                let mut body = std::mem::take(&mut self.scratch);
                body.resize(16 + inline, 0);
                c.copy_to(&mut body[16..]);
                let head = IoReply {
                    len: n as u64,
                    crc,
                    inline: &[],
                };
                head.encode(&mut body[..16]).expect("16 bytes");
                put_all(core, c.bufs);
                let f = self.take(id).expect("live");
                core.reply(f.peer, &f.header, 0, &body);
                self.scratch = body;
            }
        }
    }

    fn fail(&mut self, core: &mut Core, id: usize, errno: i32) {
        if let Some(f) = self.take(id) {
            if let Some(key) = &f.key {
                // Only the store's own failures are answers to keep: before it (no
                // slabs, no pull, a bad checksum) nothing changed, and a lapsed lease
                // sends the client to the role's next owner.
                let applied = matches!(f.step, Step::Storing) && errno != ESTALE;
                let answer = Answer {
                    status: -errno,
                    len: 0,
                };
                self.replays.finish(key, applied.then_some(answer));
            }
            core.reply(f.peer, &f.header, -errno, &[]);
        }
    }

    /// For a keyed change (`key`): whether to run it, or (false) it was answered from
    /// what the core remembers of the key (see [`crate::replay`]).
    fn admit_key(
        &mut self,
        core: &mut Core,
        peer: PeerAddr,
        h: &Header,
        key: Option<&IoKey>,
    ) -> bool {
        let Some(key) = key else {
            return true;
        };
        match self.replays.admit(key, Instant::now()) {
            Admit::Run => return true,
            Admit::Answer(a) => reply_change(core, peer, h, a),
            Admit::Running => core.reply(peer, h, -EINPROGRESS, &[]),
            Admit::Past => core.reply(peer, h, -EALREADY, &[]),
        }
        false
    }
}

/// The answer to a write (its length in an [`IoReply`]), punch or truncate (no body).
fn reply_change(core: &mut Core, peer: PeerAddr, h: &Header, a: Answer) {
    if a.status != 0 || h.opcode != Opcode::OBJ_WRITE {
        return core.reply(peer, h, a.status, &[]);
    }
    let mut out = [0u8; 16];
    let reply = IoReply {
        len: a.len,
        crc: 0,
        inline: &[],
    };
    let n = reply.encode(&mut out).expect("fits");
    core.reply(peer, h, 0, &out[..n]);
}

fn write_mode(flags: ObjFlags) -> WriteMode {
    if flags.has(ObjFlags::SYNC) {
        WriteMode::Sync
    } else {
        WriteMode::Async
    }
}

fn put_all(core: &mut Core, bufs: impl IntoIterator<Item = nacre_engine::PoolBuf>) {
    for b in bufs {
        let _ = core.pool.put(b);
    }
}

impl Service for OssService {
    fn on_request(&mut self, core: &mut Core, req: Incoming<'_>) {
        let (peer, h, body) = (req.peer, req.header, req.body);
        match h.opcode {
            Opcode::OBJ_WRITE => self.on_write(core, peer, h, body),
            Opcode::OBJ_READ => self.on_read(core, peer, h, body),
            Opcode::OBJ_PUNCH | Opcode::OBJ_TRUNCATE => self.on_range(core, peer, h, body),
            Opcode::OBJ_GETATTR | Opcode::OBJ_STATFS | Opcode::OBJ_DESTROY | Opcode::OBJ_SYNC => {
                self.on_target_only(core, peer, h, body)
            }
            Opcode::OBJ_LIST => self.on_list(core, peer, h, body),
            _ => core.reply(peer, &h, -libc::ENOSYS, &[]),
        }
    }

    fn on_bulk(&mut self, core: &mut Core, done: BulkDone) {
        let id = done.tag as usize;
        let Some(f) = self.ops.get_mut(id).and_then(Option::as_mut) else {
            put_all(core, done.bufs);
            return;
        };
        if let Err(errno) = done.result {
            if let Step::Pushing { len, .. } = f.step {
                let peer = f.peer;
                self.pushed(peer, len);
            }
            return self.fail(core, id, errno);
        }
        match f.step {
            Step::Pulling => {
                let head = (f.offset % 4096) as usize;
                if f.target.flags.has(ObjFlags::CHECKSUM)
                    && crc32c_bufs(&done.bufs, head, f.len) != f.crc
                {
                    put_all(core, done.bufs);
                    return self.fail(core, id, EILSEQ);
                }
                f.step = Step::Storing;
                let (obj, offset, len) = (f.target.object, f.offset, f.len);
                let mode = write_mode(f.target.flags);
                let st = &mut self.osts[f.store].store;
                st.write(obj, offset, len, done.bufs.into_vec(), mode, id as u64);
            }
            Step::Pushing { len, crc } => {
                let peer = f.peer;
                self.pushed(peer, len);
                put_all(core, done.bufs);
                let f = self.take(id).expect("live");
                let mut out = [0u8; 16];
                let n = IoReply {
                    len: len as u64,
                    crc,
                    inline: &[],
                }
                .encode(&mut out)
                .expect("fits");
                core.reply(f.peer, &f.header, 0, &out[..n]);
            }
            Step::WaitSlabs | Step::Storing => put_all(core, done.bufs),
        }
    }

    fn on_storage(&mut self, core: &mut Core, done: IoCompletion) {
        if !ObjectStore::owns(done.user_data) {
            if let Some(b) = done.buf {
                let _ = core.pool.put(b);
            }
            return;
        }
        let id = ObjectStore::store_of(done.user_data)
            .map_err(|e| tracing::error!("storage completion with a bad tag: {e}"))
            .ok();
        match self.osts.iter_mut().find(|o| Some(o.store.id()) == id) {
            Some(o) => o.store.on_io(&mut Self::io(core), done),
            None => {
                if let Some(b) = done.buf {
                    let _ = core.pool.put(b);
                }
            }
        }
    }

    fn on_turn(&mut self, core: &mut Core) -> bool {
        let mut moved = self.open_new_osts();
        moved |= self.start_pulls(core);
        moved |= self.start_pushes(core);
        for o in &mut self.osts {
            moved |= o.store.progress(&mut Self::io(core));
            o.store.reap(&mut self.done);
            if let TargetHealth::Degraded(Errno(e)) = o.store.state() {
                if o.health.degraded().is_none() {
                    tracing::error!("OST{} degraded: {}", o.index, Errno(e));
                    o.health.degrade(e);
                }
            }
        }
        let mut done = std::mem::take(&mut self.done);
        moved |= !done.is_empty();
        for c in done.drain(..) {
            self.on_object(core, c);
        }
        self.done = done;
        moved
    }

    fn busy(&self) -> bool {
        self.ops.len() - self.free.len() >= MAX_OPS
    }
}
