//! What one engine core owns (its endpoint, pool, storage, sessions, transmit slots,
//! bulk table) and the calls a service makes on it: replies and bulk transfers.
//!
//! Services never post on the endpoint themselves. Every fabric operation is posted
//! here with a [`Route`] as its context, so each completion goes back to the part that
//! posted it, and no service can forge a context that lands elsewhere.
//!
//! No post waits: the endpoint is opened so that a post meeting FI_EAGAIN or a full
//! queue returns at once; the operation is then queued in a bounded per-core queue and
//! retried on later turns while the loop keeps polling (see [`Core::retry_deferred`]).

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use nacre_fabric::{Access, Endpoint, ErrorKind, Memory, MemoryRegion, PeerAddr};
use nacre_proto::packed::{route, PackError};
use nacre_proto::{BulkDesc, Flags, Header, Limits, HEADER_LEN};

use crate::bulk::{
    chunks_for, slabs_needed, Bufs, BulkDir, BulkDone, BulkError, BulkOp, BulkTable, MAX_BULK_OPS,
    MAX_CHUNKS,
};
use crate::metrics::CoreMetrics;
use crate::pool::BufferPool;
use crate::reactor::ReactorConfig;
use crate::sessions::Sessions;
use crate::storage::Storage;

/// Who a fabric completion belongs to. Encoded into the operation's context by
/// [`Route::encode`] and nowhere else, through [`nacre_proto::packed::route`]; a field
/// that does not fit is an error at the encoder, and decoding a context that is not a
/// route is an error, never a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// A receive slot of the reactor.
    Recv(u32),
    /// A transmit slot carrying a reply.
    Reply(u32),
    /// Chunk `chunk` of bulk transfer `op` (a table index below 2^16) of generation
    /// `gen` (chunks are fewer than 2^8).
    Bulk { op: u32, gen: u32, chunk: u16 },
}

impl Route {
    #[inline]
    pub fn encode(self) -> Result<u64, PackError> {
        match self {
            Route::Recv(slot) => route::RECV.pack([slot.into()]),
            Route::Reply(slot) => route::REPLY.pack([slot.into()]),
            Route::Bulk { op, gen, chunk } => {
                route::BULK.pack([op.into(), gen.into(), chunk.into()])
            }
        }
    }

    #[inline]
    pub fn decode(context: u64) -> Result<Route, PackError> {
        // Each layout's fields are no wider than the variant's, so the casts keep all.
        match route::KIND.get(context) {
            route::RECV_KIND => route::RECV.unpack(context).map(|[s]| Route::Recv(s as u32)),
            route::REPLY_KIND => route::REPLY
                .unpack(context)
                .map(|[s]| Route::Reply(s as u32)),
            route::BULK_KIND => route::BULK
                .unpack(context)
                .map(|[op, gen, chunk]| Route::Bulk {
                    op: op as u32,
                    gen: gen as u32,
                    chunk: chunk as u16,
                }),
            kind => Err(PackError::UnknownKind {
                scheme: route::SCHEME,
                word: context,
                kind,
            }),
        }
    }
}

// The bulk table and the chunk count are bounded so that every transfer has a route.
const _: () = assert!(
    (MAX_BULK_OPS as u64) <= route::BULK.fields()[0].max() + 1
        && (MAX_CHUNKS as u64) <= route::BULK.fields()[2].max() + 1
);

/// How long a deferred post waits before the log says so.
const DEFERRED_WARN: Duration = Duration::from_secs(1);

/// A post that met a full queue, waiting for a later turn.
#[derive(Debug, Clone, Copy)]
enum Deferred {
    Reply { slot: u32, peer: PeerAddr, len: u32 },
    Chunk { op: u32, chunk: u16, peer: PeerAddr },
}

impl Deferred {
    fn peer(&self) -> PeerAddr {
        match *self {
            Deferred::Reply { peer, .. } | Deferred::Chunk { peer, .. } => peer,
        }
    }
}

/// A `PeerAddr` no address vector hands out: a transmit slot that carries nothing.
const NO_PEER: PeerAddr = PeerAddr::from_index(u32::MAX);

/// Everything a core owns, lent to the service on every call.
pub struct Core {
    // Drop order matters: storage first (it waits for I/O in flight on pool buffers),
    // then the pool, then the endpoint that registered the pool's memory.
    pub storage: Storage,
    pub pool: BufferPool,
    pub(crate) ep: Endpoint,
    pub metrics: CoreMetrics,
    pub(crate) sessions: Sessions,
    /// How long a session may go unused before it is reaped, and when the last look
    /// for such sessions was.
    session_idle: Duration,
    last_reap: Instant,
    /// A clock read every [`crate::reactor::EXPIRY_TURNS`] turns: when a session was
    /// last heard from, to the second or so, without a clock read per message.
    pub(crate) clock: Instant,
    pub(crate) limits: Limits,
    tx: MemoryRegion,
    tx_free: Vec<u32>,
    /// The peer of each transmit slot's latest reply (in flight unless the slot is free).
    slot_peer: Vec<PeerAddr>,
    /// Replies that found every transmit slot busy, in order; sent as slots free up.
    /// Bounded: new requests are parked while it holds anything (see `congested`), so
    /// only replies to requests already accepted can land here.
    tx_backlog: VecDeque<(PeerAddr, Vec<u8>)>,
    tx_backlog_limit: usize,
    msg_size: usize,
    encode: Vec<u8>,
    deferred: VecDeque<Deferred>,
    deferred_limit: usize,
    /// Since when the oldest deferred post has waited, and whether that was said.
    deferred_since: Option<(Instant, bool)>,
    pub(crate) bulk: BulkTable,
    /// Finished transfers, handed to the service by the reactor.
    pub(crate) bulk_done: VecDeque<BulkDone>,
    /// Largest slab, the chunk size of bulk transfers.
    chunk: usize,
    /// How long a push may wait for its completion before its peer is evicted.
    bulk_timeout: Duration,
    /// Peers evicted for a push that outlived `bulk_timeout`, until they speak again:
    /// bulk transfers to them are refused.
    evicted: HashSet<PeerAddr>,
    /// Peers told their HELLO cannot be admitted, to remove from the address vector.
    /// (With their fabric names: a client refused and then admitted, say once it has
    /// the key, gets the same entry back. Two entries of one address confuse providers
    /// that say who sent a message, rxm: they name the first.)
    refused: Vec<(PeerAddr, Vec<u8>)>,
}

impl Core {
    /// Sets up the core's transmit slots and bulk table next to the pool and storage.
    pub fn new(
        mut ep: Endpoint,
        pool: BufferPool,
        storage: Storage,
        cfg: &ReactorConfig,
    ) -> Result<Core, nacre_fabric::Error> {
        let tx = ep.register(
            Memory::anonymous(cfg.tx_slots * cfg.msg_size)?,
            Access::LOCAL,
        )?;
        let slabs: usize = pool.usage().iter().map(|&(_, _, total)| total).sum();
        let chunk = pool.usage().last().map_or(4096, |&(size, _, _)| size);
        // Every deferred post holds a transmit slot or a slab: this bound is never hit.
        let deferred_limit = cfg.tx_slots + slabs;
        Ok(Core {
            ep,
            pool,
            storage,
            metrics: CoreMetrics::default(),
            sessions: Sessions::new(cfg.max_sessions),
            session_idle: cfg.session_idle,
            last_reap: Instant::now(),
            clock: Instant::now(),
            limits: Limits {
                max_body: (cfg.msg_size - HEADER_LEN) as u32,
            },
            tx,
            tx_free: (0..cfg.tx_slots as u32).rev().collect(),
            slot_peer: vec![NO_PEER; cfg.tx_slots],
            tx_backlog: VecDeque::new(),
            tx_backlog_limit: 16 * cfg.tx_slots,
            msg_size: cfg.msg_size,
            encode: vec![0; cfg.msg_size],
            deferred: VecDeque::with_capacity(deferred_limit),
            deferred_limit,
            deferred_since: None,
            bulk: BulkTable::new(cfg.bulk_ops),
            bulk_done: VecDeque::with_capacity(cfg.bulk_ops),
            chunk,
            bulk_timeout: cfg.bulk_timeout,
            evicted: HashSet::new(),
            refused: Vec::new(),
        })
    }

    /// The largest reply body sent in one message: the message size, and on shm no
    /// more than its inject size (`Endpoint::safe_send_size`), so that a client that
    /// dies before taking a reply cannot stall the core's later ones. [`Core::reply`]
    /// sends a longer body in pieces; a service that would rather send data another
    /// way (the OSS pushes reads) checks against this.
    pub fn reply_body_max(&self) -> usize {
        self.msg_size.min(self.ep.safe_send_size()) - HEADER_LEN
    }

    /// This core's fabric address, as fi_getname gave it: what clients are told.
    pub fn fabric_name(&self) -> &[u8] {
        self.ep.name()
    }

    /// The peer behind a session id, if HELLO created it and it was not reaped since.
    pub fn peer(&self, session: u32) -> Option<PeerAddr> {
        self.sessions.peer(session)
    }

    /// Who the client of `session` proved to be (its key's principal).
    pub fn principal(&self, session: u32) -> Option<&nacre_auth::Principal> {
        self.sessions.principal(session)
    }

    /// Whether new requests should wait in their receive slots: replies or transfers
    /// are queued behind a full fabric queue, or the bulk table is nearly full.
    pub(crate) fn congested(&self) -> bool {
        self.tx_free.is_empty()
            || !self.tx_backlog.is_empty()
            || self.deferred.len() * 2 >= self.deferred_limit
            || self.bulk.free() < 2
    }

    /// Whether the core waits for operations of its own to complete (storage I/O, bulk
    /// transfers, posts queued behind a full fabric queue): it must keep polling for
    /// them, so such a turn does not count towards the idle back-off.
    pub(crate) fn waiting(&self) -> bool {
        self.storage.in_flight() > 0
            || self.bulk.free() < self.bulk.capacity()
            || !self.deferred.is_empty()
            || !self.tx_backlog.is_empty()
    }

    // ------------------------------------------------------------------ replies

    /// Answers `to` with `status` (0 or -errno) and `body`. Small replies are injected;
    /// larger ones go from a registered transmit slot. A reply that meets a full queue
    /// is queued and sent on a later turn, never dropped for that. A body above
    /// [`Core::reply_body_max`] goes in pieces of at most that size (frame.rs): over shm a
    /// message above the inject size is a command the client must answer, and one
    /// client that died before answering would stall the core's later ones.
    pub fn reply(&mut self, peer: PeerAddr, to: &Header, status: i32, body: &[u8]) {
        let piece = self.reply_body_max();
        if body.len() <= piece || body.len() > self.msg_size - HEADER_LEN {
            return self.reply_frame(peer, to.reply(status, 0), body);
        }
        let last = (body.len() - 1) / piece;
        for (i, chunk) in body.chunks(piece).enumerate() {
            let mut h = to.reply(status, 0);
            h.fragment = i as u16; // a message holds at most 64 KiB: a few dozen pieces
            if i < last {
                h.flags = h.flags.with(Flags::MORE);
            }
            self.reply_frame(peer, h, chunk);
        }
        self.metrics.replies_in_pieces += 1;
    }

    /// Sends one reply frame (the whole reply or a piece of it).
    fn reply_frame(&mut self, peer: PeerAddr, header: Header, body: &[u8]) {
        let Some(len) = header.encode_frame(body, &mut self.encode) else {
            tracing::warn!(
                len = body.len(),
                "reply body larger than a message: dropped"
            );
            self.metrics.replies_dropped += 1;
            return;
        };
        // Injected even past deferred posts: replies to different requests need no
        // order, and one stuck peer must not hold up the replies to the others.
        if len <= self.ep.inject_size() {
            match self.ep.inject(&self.encode[..len], peer) {
                Ok(()) => {
                    self.metrics.replies += 1;
                    return;
                }
                Err(e) if matches!(e.kind(), ErrorKind::Again(_)) => {} // from a slot, later
                Err(e) => return self.reply_failed(&e),
            }
        }
        if !self.tx_backlog.is_empty() || self.tx_free.is_empty() {
            return self.backlog_reply(peer, len);
        }
        self.send_from_slot(peer, len);
    }

    /// Sends `self.encode[..len]` from a free transmit slot (the caller checked one is).
    fn send_from_slot(&mut self, peer: PeerAddr, len: usize) {
        let slot = self.tx_free.pop().expect("a free slot was checked");
        self.slot_peer[slot as usize] = peer;
        let offset = slot as usize * self.msg_size;
        if let Err(e) = self.tx.copy_in(offset, &self.encode[..len]) {
            self.tx_free.push(slot);
            return self.reply_failed(&e);
        }
        if !self.send_slot(slot, peer, len) {
            let len = len as u32;
            self.defer(Deferred::Reply { slot, peer, len });
        }
    }

    /// Every slot is busy: the reply waits, in order, for one (a copy, off the fast path).
    #[cold]
    fn backlog_reply(&mut self, peer: PeerAddr, len: usize) {
        if self.tx_backlog.len() >= self.tx_backlog_limit {
            tracing::warn!("reply backlog full: reply dropped");
            self.metrics.replies_dropped += 1;
            return;
        }
        self.tx_backlog
            .push_back((peer, self.encode[..len].to_vec()));
    }

    /// Sends backlogged replies while slots are free.
    pub(crate) fn drain_tx_backlog(&mut self) -> bool {
        let mut moved = false;
        while !self.tx_free.is_empty() {
            let Some((peer, frame)) = self.tx_backlog.pop_front() else {
                break;
            };
            self.encode[..frame.len()].copy_from_slice(&frame);
            self.send_from_slot(peer, frame.len());
            moved = true;
        }
        moved
    }

    /// Posts the reply in transmit slot `slot`; false when the queue is full (try later).
    fn send_slot(&mut self, slot: u32, peer: PeerAddr, len: usize) -> bool {
        let offset = slot as usize * self.msg_size;
        let context = match Route::Reply(slot).encode() {
            Ok(context) => context,
            Err(e) => {
                // A slot index is a u32 and fits: this is a bug, refused loudly.
                tracing::error!("reply not sent: {e}");
                self.metrics.replies_dropped += 1;
                self.tx_free.push(slot);
                return true;
            }
        };
        let posted = self
            .tx
            .slice(offset, len)
            .and_then(|src| self.ep.post_send(src, peer, context));
        match posted {
            Ok(()) => self.metrics.replies += 1,
            Err(e) if matches!(e.kind(), ErrorKind::Again(_)) => return false,
            Err(e) => {
                self.tx_free.push(slot);
                self.reply_failed(&e);
            }
        }
        true
    }

    fn reply_failed(&mut self, e: &nacre_fabric::Error) {
        self.metrics.replies_dropped += 1;
        tracing::warn!("reply not sent: {e}");
    }

    /// A reply's send finished (or failed): its slot is free again.
    pub(crate) fn reply_sent(&mut self, slot: u32) {
        self.tx_free.push(slot);
    }

    // ------------------------------------------------------------------ deferred posts

    fn defer(&mut self, d: Deferred) {
        self.metrics.deferred_posts += 1;
        // The bound holds by construction (each entry holds a slot or a slab); were it
        // ever hit, queueing past it still loses nothing.
        debug_assert!(self.deferred.len() < self.deferred_limit);
        self.deferred.push_back(d);
    }

    /// Retries posts that met a full queue, oldest first. A post that meets it again
    /// stays queued, and so do the later posts to its peer (each peer's posts keep
    /// their order), but posts to other peers go on: one stuck peer (a dead one whose
    /// connection is gone, say) must not hold up the others. A post refused for over
    /// [`DEFERRED_WARN`] is said once in the log.
    pub(crate) fn retry_deferred(&mut self) -> bool {
        if self.deferred.is_empty() {
            return false; // the common case, every turn
        }
        let mut moved = false;
        let mut blocked: SmallVec<[PeerAddr; 4]> = SmallVec::new();
        let mut front_stuck = false;
        for i in 0..self.deferred.len() {
            let d = self.deferred.pop_front().expect("counted");
            let peer = d.peer();
            let posted = !blocked.contains(&peer)
                && match d {
                    Deferred::Reply { slot, peer, len } => self.send_slot(slot, peer, len as usize),
                    Deferred::Chunk { op, chunk, .. } => self.post_chunk(op, chunk),
                };
            if posted {
                moved = true;
                continue;
            }
            front_stuck |= i == 0;
            if !blocked.contains(&peer) {
                blocked.push(peer);
            }
            self.deferred.push_back(d); // try on a later turn
        }
        if front_stuck {
            self.note_stuck();
        } else {
            self.deferred_since = None;
        }
        moved
    }

    fn note_stuck(&mut self) {
        let (since, said) = self.deferred_since.get_or_insert((Instant::now(), false));
        if !*said && since.elapsed() > DEFERRED_WARN {
            *said = true;
            tracing::warn!(
                "a post has met a full queue for {:?} ({} waiting behind it, {} operations \
                 in flight on the endpoint)",
                since.elapsed(),
                self.deferred.len() - 1,
                self.ep.in_flight()
            );
        }
    }

    // ------------------------------------------------------------------ bulk

    /// Pulls `[offset, offset+len)` of the peer's region into pool slabs. The slabs come
    /// in a [`BulkDone`] (through `Service::on_bulk`) once every byte has landed. When
    /// the pool is short of slabs the pull waits for them (back-pressure, never an error).
    pub fn pull(
        &mut self,
        peer: PeerAddr,
        region: &BulkDesc,
        offset: u64,
        len: usize,
        tag: u64,
    ) -> Result<(), BulkError> {
        self.admit_peer(peer)?;
        let region = self.narrow(region, offset, len)?;
        let chunks = self.check_chunks(len)?;
        let id = self.bulk.insert(BulkOp {
            tag,
            dir: BulkDir::Pull,
            peer,
            region,
            len,
            bufs: Bufs::new(),
            head: 0,
            chunks: chunks as u16,
            done: 0,
            error: None,
            gen: 0,
            started: Instant::now(),
        })?;
        self.bulk.waiting.push_back(id);
        self.start_pulls();
        Ok(())
    }

    /// Pulls `[offset, offset+len)` of the peer's region into slabs the service laid out:
    /// the data starts `head` bytes into the first and runs on through the others from
    /// their start (so that each slab lands at a block-aligned file offset when the
    /// request's offset is not). Slabs beyond what the data needs go back to the pool.
    /// A refused pull has put its slabs back in the pool.
    #[allow(clippy::too_many_arguments)]
    pub fn pull_into(
        &mut self,
        peer: PeerAddr,
        region: &BulkDesc,
        offset: u64,
        len: usize,
        bufs: Bufs,
        head: usize,
        tag: u64,
    ) -> Result<(), BulkError> {
        self.start_with(BulkDir::Pull, peer, region, offset, len, bufs, head, tag)
    }

    /// Pushes `len` bytes held by `bufs` (from `head` in the first slab, then through
    /// the others in order) to `[offset, offset+len)` of the peer's region. The slabs
    /// come back in a [`BulkDone`] once the bytes are in the peer's memory
    /// (delivery-complete): a reply sent after it never overtakes them. A refused push
    /// has put its slabs back in the pool, as a failed one does.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        peer: PeerAddr,
        region: &BulkDesc,
        offset: u64,
        bufs: Bufs,
        head: usize,
        len: usize,
        tag: u64,
    ) -> Result<(), BulkError> {
        self.start_with(BulkDir::Push, peer, region, offset, len, bufs, head, tag)
    }

    /// Starts a transfer over slabs the caller gives.
    #[allow(clippy::too_many_arguments)]
    fn start_with(
        &mut self,
        dir: BulkDir,
        peer: PeerAddr,
        region: &BulkDesc,
        offset: u64,
        len: usize,
        mut bufs: Bufs,
        head: usize,
        tag: u64,
    ) -> Result<(), BulkError> {
        let have: usize = bufs.iter().map(|b| b.capacity()).sum();
        let first = bufs.first().map_or(0, |b| b.capacity());
        let needed =
            slabs_needed(bufs.iter().map(|b| b.capacity()), head, len).filter(|_| head < first);
        let checked = self.narrow(region, offset, len).and_then(|r| match needed {
            Some(n) if n <= MAX_CHUNKS => Ok((r, n)),
            _ => Err(BulkError::ShortBufs {
                len,
                have: have.saturating_sub(head),
            }),
        });
        let full = BulkError::Full(self.bulk.capacity());
        let checked = self.admit_peer(peer).and(checked).and_then(|r| {
            if self.bulk.free() > 0 {
                Ok(r)
            } else {
                Err(full)
            }
        });
        let (region, used) = match checked {
            Ok(r) => r,
            Err(e) => {
                self.put_back(bufs);
                return Err(e);
            }
        };
        let spare: Bufs = bufs.drain(used..).collect();
        self.put_back(spare);
        let op = BulkOp {
            tag,
            dir,
            peer,
            region,
            len,
            chunks: bufs.len() as u16,
            bufs,
            head,
            done: 0,
            error: None,
            gen: 0,
            started: Instant::now(),
        };
        let id = self.bulk.insert(op).expect("a free entry was checked");
        self.post_chunks(id);
        Ok(())
    }

    fn put_back(&mut self, bufs: Bufs) {
        for b in bufs {
            let _ = self.pool.put(b);
        }
    }

    fn narrow(&self, region: &BulkDesc, offset: u64, len: usize) -> Result<BulkDesc, BulkError> {
        if len == 0 {
            return Err(BulkError::Empty);
        }
        region.sub(offset, len as u64).ok_or(BulkError::OutOfRange {
            offset,
            len: len as u64,
            size: region.len,
        })
    }

    /// Chunks a pull of `len` bytes needs, refused when the pool could never hold them.
    fn check_chunks(&self, len: usize) -> Result<usize, BulkError> {
        let chunks = chunks_for(len, self.chunk);
        let slabs = self.pool.usage().last().map_or(0, |&(_, _, total)| total);
        let max = MAX_CHUNKS.min(slabs);
        if chunks > max {
            return Err(BulkError::TooLarge {
                len,
                chunk: self.chunk,
                chunks,
                max,
            });
        }
        Ok(chunks)
    }

    /// Starts waiting pulls, oldest first, while the pool has every slab the head needs.
    pub(crate) fn start_pulls(&mut self) -> bool {
        let mut moved = false;
        while let Some(&id) = self.bulk.waiting.front() {
            let Some(op) = self.bulk.get_mut(id) else {
                self.bulk.waiting.pop_front();
                continue;
            };
            let (len, chunks) = (op.len, op.chunks as usize);
            let Some(bufs) = take_slabs(&mut self.pool, len, self.chunk, chunks) else {
                break; // back-pressure: wait for slabs to come back
            };
            self.bulk.waiting.pop_front();
            self.bulk.get_mut(id).expect("checked").bufs = bufs;
            self.post_chunks(id);
            moved = true;
        }
        moved
    }

    fn post_chunks(&mut self, id: u32) {
        let Some((chunks, peer)) = self.bulk.get_mut(id).map(|op| (op.chunks, op.peer)) else {
            return;
        };
        // Behind deferred posts to its peer, a chunk waits its turn rather than
        // overtaking them.
        let mut behind = self.deferred.iter().any(|d| d.peer() == peer);
        for chunk in 0..chunks {
            if behind || !self.post_chunk(id, chunk) {
                behind = true;
                self.defer(Deferred::Chunk {
                    op: id,
                    chunk,
                    peer,
                });
            }
        }
    }

    /// Posts one chunk; false when the queue is full (try later). Any other failure
    /// fails the chunk (and so the transfer).
    fn post_chunk(&mut self, id: u32, chunk: u16) -> bool {
        let Some(op) = self.bulk.get_mut(id) else {
            return true;
        };
        let (offset, at, len) = op.chunk(chunk as usize);
        let route = Route::Bulk {
            op: id,
            gen: op.gen,
            chunk,
        };
        let context = match route.encode() {
            Ok(context) => context,
            Err(e) => {
                // The table and the chunk count are bounded to fit: this is a bug,
                // refused loudly, and the transfer fails.
                tracing::error!("bulk transfer chunk not posted: {e}");
                let gen = op.gen;
                self.chunk_done(id, gen, Some(libc::EIO));
                return true;
            }
        };
        let buf = &op.bufs[chunk as usize];
        let posted = match buf.fabric_slice(at, len) {
            None => Err(nacre_fabric::ErrorKind::ForeignRegion.into()),
            Some(local) => match op.dir {
                BulkDir::Pull => self
                    .ep
                    .post_read(local, op.peer, &op.region, offset, context),
                BulkDir::Push => self
                    .ep
                    .post_write(local, op.peer, &op.region, offset, context),
            },
        };
        match posted {
            Ok(()) => true,
            Err(e) if matches!(e.kind(), ErrorKind::Again(_)) => false,
            Err(e) => {
                tracing::warn!("bulk transfer chunk not posted: {e}");
                let gen = op.gen;
                self.chunk_done(id, gen, Some(libc::EIO));
                true
            }
        }
    }

    /// A chunk completed (errno on failure); the transfer finishes with its last chunk.
    /// Chunks of a transfer given up before (another generation) are ignored.
    pub(crate) fn chunk_done(&mut self, id: u32, gen: u32, errno: Option<i32>) {
        let Some(op) = self.bulk.chunk_done(id, gen, errno) else {
            return;
        };
        let mut bufs = op.bufs;
        let result = match op.error {
            None => {
                self.metrics.bulk_ops += 1;
                self.metrics.bulk_bytes += op.len as u64;
                Ok(op.len)
            }
            Some(errno) => {
                self.metrics.bulk_errors += 1;
                self.put_back(std::mem::take(&mut bufs));
                Err(errno)
            }
        };
        self.bulk_done.push_back(BulkDone {
            tag: op.tag,
            dir: op.dir,
            peer: op.peer,
            result,
            bufs,
        });
    }
}

impl Core {
    // ------------------------------------------------------------------ eviction

    /// Refuses bulk transfers to an evicted peer.
    fn admit_peer(&self, peer: PeerAddr) -> Result<(), BulkError> {
        if !self.evicted.is_empty() && self.evicted.contains(&peer) {
            return Err(BulkError::Evicted);
        }
        Ok(())
    }

    /// A message came from `peer`: it is alive, and no longer evicted.
    pub(crate) fn heard_from(&mut self, peer: PeerAddr) {
        if !self.evicted.is_empty() && self.evicted.remove(&peer) {
            tracing::info!("evicted peer {peer:?} spoke again: bulk transfers to it resume");
        }
    }

    /// Evicts every peer with a push older than the bulk timeout. Providers do not
    /// always complete operations towards a peer that died (libfabric 1.17's shm and
    /// tcp;ofi_rxm leave a killed client's pushes pending for good), and each holds
    /// slabs: without this, a few dead readers would drain the pool. Returns whether
    /// any peer was evicted.
    pub(crate) fn expire_pushes(&mut self, now: Instant) -> bool {
        if self.bulk.free() == self.bulk.capacity() {
            return false;
        }
        let late = self.bulk.late_push_peers(now, self.bulk_timeout);
        for &peer in &late {
            self.evict(peer);
        }
        !late.is_empty()
    }

    /// Gives up every push to `peer` (they all wait behind the same stuck peer): the
    /// slabs go back to the pool, and the service hears of each as failed with
    /// ETIMEDOUT. Safe for pushes only, see the `bulk` module. Their posted chunks stay
    /// counted at the endpoint (the provider still holds their contexts) and, should
    /// they ever complete, are ignored by generation.
    fn evict(&mut self, peer: PeerAddr) {
        let ids = self.bulk.pushes_to(peer);
        tracing::warn!(
            "peer {peer:?} evicted: a push to it waited over {:?}; giving up its {} pushes",
            self.bulk_timeout,
            ids.len()
        );
        self.evicted.insert(peer);
        self.drop_deferred_to(peer);
        for id in ids {
            let op = self.bulk.remove(id).expect("listed");
            self.metrics.bulk_errors += 1;
            self.metrics.bulk_evicted += 1;
            self.put_back(op.bufs);
            self.bulk_done.push_back(BulkDone {
                tag: op.tag,
                dir: op.dir,
                peer,
                result: Err(libc::ETIMEDOUT),
                bufs: Bufs::new(),
            });
        }
    }

    /// Reaps the sessions nobody used for the session idle time, and those whose peer
    /// process has exited (shm: its fabric name holds its pid, and shm peers share this
    /// host), at most one look a second: the slot and the address-vector entry go back,
    /// and the client, should it come back, says HELLO again. Without the second rule
    /// short-lived clients filled shm's address vector (256 peers) within ten minutes. A session with anything of the core's still
    /// under way towards its peer (a transfer, a post waiting for the queue, a reply in
    /// a transmit slot or the backlog, an eviction) is left for a later look, so that
    /// nothing in flight loses its address. Returns whether any session was reaped.
    pub(crate) fn reap_sessions(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.last_reap) < Duration::from_secs(1) {
            return false;
        }
        self.last_reap = now;
        self.forget_refused();
        let idle = self
            .sessions
            .reapable(now, self.session_idle, nacre_fabric::shm_peer_gone);
        if idle.is_empty() {
            return false;
        }
        let replying = self.replying_to();
        let mut reaped = false;
        for (id, peer) in idle {
            if self.in_use(peer, &replying) {
                continue;
            }
            // Should the provider refuse, its entry stays behind (a leak, not a fault):
            // the session goes all the same, or its slot would be retried every second.
            if let Err(e) = self.ep.remove_peer(peer) {
                tracing::warn!("session {id:#x} reaped; removing its peer failed: {e}");
            }
            self.sessions.remove(id);
            self.metrics.sessions_reaped += 1;
            reaped = true;
        }
        reaped
    }

    /// A peer put in the address vector only to be told it cannot be admitted: removed
    /// on a later reap, once that answer left.
    pub(crate) fn refused(&mut self, peer: PeerAddr, name: &[u8]) {
        if !self.refused.iter().any(|(p, _)| *p == peer) {
            self.refused.push((peer, name.to_vec()));
        }
    }

    /// The address-vector entry of a client told no, if it has one still.
    pub(crate) fn refused_peer(&self, name: &[u8]) -> Option<PeerAddr> {
        self.refused
            .iter()
            .find(|(_, n)| n == name)
            .map(|(p, _)| *p)
    }

    /// As [`Core::refused_peer`], and the entry is no longer to be removed (the client
    /// is admitted now).
    pub(crate) fn take_refused(&mut self, name: &[u8]) -> Option<PeerAddr> {
        let at = self.refused.iter().position(|(_, n)| n == name)?;
        Some(self.refused.swap_remove(at).0)
    }

    pub(crate) fn refused_waiting(&self) -> usize {
        self.refused.len()
    }

    fn forget_refused(&mut self) {
        if self.refused.is_empty() {
            return;
        }
        let replying = self.replying_to();
        let mut left = Vec::new();
        for (peer, name) in std::mem::take(&mut self.refused) {
            if self.in_use(peer, &replying) {
                left.push((peer, name));
            } else if let Err(e) = self.ep.remove_peer(peer) {
                tracing::warn!("removing a refused peer failed: {e}");
            }
        }
        self.refused = left;
    }

    /// The peers of the replies in transmit slots (posted, not completed): the slots
    /// not free, whose `slot_peer` is current.
    fn replying_to(&self) -> Vec<PeerAddr> {
        let mut peers = self.slot_peer.clone();
        for &s in &self.tx_free {
            peers[s as usize] = NO_PEER;
        }
        peers
    }

    /// Whether anything of the core's is still under way towards `peer`: a reply in a
    /// transmit slot (`replying`, from [`Core::replying_to`]), a transfer, a deferred
    /// post, a backlogged reply or an eviction; its address must stay meanwhile.
    fn in_use(&self, peer: PeerAddr, replying: &[PeerAddr]) -> bool {
        replying.contains(&peer)
            || self.evicted.contains(&peer)
            || self.bulk.involves(peer)
            || self.deferred.iter().any(|d| d.peer() == peer)
            || self.tx_backlog.iter().any(|(p, _)| *p == peer)
    }

    /// Forgets the posts to `peer` waiting behind a full queue: a dead peer's queue
    /// never drains, and the deferred posts go out in order, so one of them at the head
    /// would hold up every other peer's. A dropped reply frees its transmit slot.
    fn drop_deferred_to(&mut self, peer: PeerAddr) {
        let bulk = &self.bulk;
        let mut freed = Vec::new();
        self.deferred.retain(|d| match *d {
            Deferred::Chunk { op, peer: to, .. } => to != peer || !bulk.is_push_to(op, peer),
            Deferred::Reply { slot, peer: to, .. } if to == peer => {
                freed.push(slot);
                false
            }
            Deferred::Reply { .. } => true,
        });
        self.metrics.replies_dropped += freed.len() as u64;
        self.tx_free.extend(freed);
        if self.deferred.is_empty() {
            self.deferred_since = None;
        }
    }
}

/// `chunks` slabs for `len` bytes (full chunks, then the smallest slab that holds the
/// rest), all or none.
fn take_slabs(pool: &mut BufferPool, len: usize, chunk: usize, chunks: usize) -> Option<Bufs> {
    let mut bufs = Bufs::new();
    for i in 0..chunks {
        let want = chunk.min(len - i * chunk);
        match pool.get(want) {
            Some(b) => bufs.push(b),
            None => {
                for b in bufs {
                    let _ = pool.put(b);
                }
                return None;
            }
        }
    }
    Some(bufs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_round_trip_and_nothing_else_decodes() {
        for r in [
            Route::Recv(0),
            Route::Recv(u32::MAX),
            Route::Reply(7),
            Route::Bulk {
                op: 3,
                gen: 9,
                chunk: 63,
            },
            Route::Bulk {
                op: MAX_BULK_OPS as u32 - 1,
                gen: u32::MAX,
                chunk: 255,
            },
        ] {
            assert_eq!(r.encode().map(Route::decode), Ok(Ok(r)));
        }
        assert!(Route::decode(0).is_err());
        assert!(Route::decode(0xff << 56).is_err());
        assert!(
            Route::decode(1 << 56 | 1 << 40).is_err(),
            "bits outside a receive"
        );
        let too_far = Route::Bulk {
            op: MAX_BULK_OPS as u32,
            gen: 0,
            chunk: 0,
        };
        assert!(too_far.encode().is_err(), "refused, in release builds too");
        let chunk = Route::Bulk {
            op: 0,
            gen: 0,
            chunk: 256,
        };
        assert!(chunk.encode().is_err());
    }
}
