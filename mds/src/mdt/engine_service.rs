//! The MDS on engine cores: metadata requests decoded on the core, submitted to the
//! MDT's committer through the core's own [`Submitter`] (never blocking), and answered
//! when their completion comes back, polled once per turn.
//!
//! A full submission queue is back-pressure: the request waits in the core's queue, in
//! order, and is submitted again on a later turn. A request that does not decode is
//! answered with its errno at once; the core keeps serving.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use nacre_mgs::role::ServingEpoch;

use nacre_engine::{Core, Incoming, Service};
use nacre_fabric::PeerAddr;
use nacre_proto::meta::{Head, Request};
use nacre_proto::Header;

use super::service::{Mdt, SubmitError, Submitter};

/// Where a server's cores find the MDT once its role is granted (the claim needs the
/// cores' addresses, so the engine runs before the MDT is open), with the role's epoch
/// and lease deadline that every request is checked against.
pub type MdtSlot = Arc<OnceLock<(Arc<Mdt>, ServingEpoch)>>;

pub struct MdsService {
    sub: Option<Submitter>,
    slot: Option<MdtSlot>,
    serving: Option<ServingEpoch>,
    /// Requests submitted, by tag: who to answer.
    open: Vec<Option<(PeerAddr, Header)>>,
    free: Vec<usize>,
    /// Requests the full queue sent back, oldest first.
    blocked: VecDeque<(usize, Head, Request)>,
    out: Vec<u8>,
}

impl MdsService {
    /// Serves `mdt` (its own epoch check applies; no lease).
    pub fn new(mdt: &Arc<Mdt>) -> MdsService {
        MdsService {
            sub: Some(mdt.submitter()),
            slot: None,
            serving: None,
            open: Vec::new(),
            free: Vec::new(),
            blocked: VecDeque::new(),
            out: Vec::with_capacity(8192),
        }
    }

    /// Serves whatever MDT `slot` receives, under its lease: until then, and whenever the
    /// lease does not hold, requests are refused (ESTALE).
    pub fn bound(slot: MdtSlot) -> MdsService {
        MdsService {
            sub: None,
            slot: Some(slot),
            serving: None,
            open: Vec::new(),
            free: Vec::new(),
            blocked: VecDeque::new(),
            out: Vec::with_capacity(8192),
        }
    }

    /// Whether requests may be served now: the MDT is bound and the lease holds.
    fn serving(&mut self) -> bool {
        if self.sub.is_none() {
            if let Some((mdt, epoch)) = self.slot.as_ref().and_then(|s| s.get()) {
                self.sub = Some(mdt.submitter());
                self.serving = Some(epoch.clone());
            }
        }
        self.sub.is_some() && self.serving.as_ref().is_none_or(|e| e.get() != 0)
    }

    fn add(&mut self, peer: PeerAddr, h: Header) -> usize {
        match self.free.pop() {
            Some(id) => {
                self.open[id] = Some((peer, h));
                id
            }
            None => {
                self.open.push(Some((peer, h)));
                self.open.len() - 1
            }
        }
    }

    fn take(&mut self, id: usize) -> Option<(PeerAddr, Header)> {
        let v = self.open.get_mut(id)?.take()?;
        self.free.push(id);
        Some(v)
    }

    /// Submits, or keeps the request for a later turn when the queue is full.
    fn submit(&mut self, core: &mut Core, id: usize, head: Head, req: Request) -> bool {
        let sub = self.sub.as_ref().expect("serving() checked");
        match sub.submit(id as u64, head, req) {
            Ok(()) => true,
            Err(SubmitError::Busy) => false,
            Err(SubmitError::Closed) => {
                if let Some((peer, h)) = self.take(id) {
                    core.reply(peer, &h, -libc::EIO, &[]);
                }
                true
            }
        }
    }

    fn retry_blocked(&mut self, core: &mut Core) -> bool {
        let mut moved = false;
        while let Some((id, head, req)) = self.blocked.pop_front() {
            if !self.submit(core, id, head.clone(), req.clone()) {
                self.blocked.push_front((id, head, req));
                break;
            }
            moved = true;
        }
        moved
    }

    fn answer(&mut self, core: &mut Core) -> bool {
        let mut moved = false;
        while let Some(c) = self.sub.as_ref().and_then(Submitter::poll) {
            moved = true;
            let Some((peer, h)) = self.take(c.tag as usize) else {
                continue;
            };
            match c.result {
                Ok(reply) => {
                    // A reply above what the transport sends safely goes in pieces
                    // (`Core::reply`).
                    self.out.clear();
                    reply.encode(&mut self.out);
                    core.reply(peer, &h, 0, &self.out);
                }
                Err(errno) => core.reply(peer, &h, -errno, &[]),
            }
        }
        moved
    }
}

impl Service for MdsService {
    fn on_request(&mut self, core: &mut Core, req: Incoming<'_>) {
        if !self.serving() {
            return core.reply(req.peer, &req.header, -libc::ESTALE, &[]);
        }
        let (head, request) = match Request::decode(req.header.opcode, req.body) {
            Ok(r) => r,
            Err(e) => return core.reply(req.peer, &req.header, -e.errno(), &[]),
        };
        let id = self.add(req.peer, req.header);
        if !self.blocked.is_empty() || !self.submit(core, id, head.clone(), request.clone()) {
            self.blocked.push_back((id, head, request));
        }
    }

    fn on_turn(&mut self, core: &mut Core) -> bool {
        let moved = self.retry_blocked(core);
        self.answer(core) | moved
    }

    /// A request the MDT's full queue sent back waits, and new ones wait in their
    /// receive slots behind it; so do they while [`MAX_PENDING`] requests await their
    /// answer. `open` and `blocked` stay bounded whatever clients send.
    fn busy(&self) -> bool {
        !self.blocked.is_empty() || self.open.len() - self.free.len() >= MAX_PENDING
    }
}

/// Requests a core has submitted and not answered, at most: beyond it new requests
/// wait in their receive slots (back-pressure through the engine).
pub const MAX_PENDING: usize = 4096;
