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
use nacre_proto::meta::{Grants, Head, Reply, Request};
use nacre_proto::Header;

use super::service::{Mdt, SubmitError, Submitter};
use crate::grants::Sealer;

/// Where a server's cores find the MDT once its role is granted (the claim needs the
/// cores' addresses, so the engine runs before the MDT is open), with the role's epoch
/// and lease deadline that every request is checked against.
pub type MdtSlot = Arc<OnceLock<(Arc<Mdt>, ServingEpoch)>>;

/// A request submitted and not answered: who to answer, and for a request whose reply
/// may carry a layout, what its capabilities are granted for.
struct Waiting {
    peer: PeerAddr,
    header: Header,
    grant: Option<GrantFor>,
}

/// Who a layout reply's capabilities are for: the identity the request acts as, and
/// the file (for replies that carry no attributes: get-layout and the like).
struct GrantFor {
    creds: nacre_proto::meta::Creds,
    ino: u64,
}

pub struct MdsService {
    sub: Option<Submitter>,
    mdt: Option<Arc<Mdt>>,
    /// Seals the capabilities of layout replies (None: replies carry none).
    sealer: Option<Sealer>,
    slot: Option<MdtSlot>,
    serving: Option<ServingEpoch>,
    /// Requests submitted, by tag.
    open: Vec<Option<Waiting>>,
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
            mdt: Some(mdt.clone()),
            sealer: None,
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
            mdt: None,
            sealer: None,
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
                self.mdt = Some(mdt.clone());
                self.serving = Some(epoch.clone());
            }
        }
        self.sub.is_some() && self.serving.as_ref().is_none_or(|e| e.get() != 0)
    }

    /// Layout replies carry capabilities sealed by `sealer`.
    pub fn sealing(mut self, sealer: Option<Sealer>) -> MdsService {
        self.sealer = sealer;
        self
    }

    fn add(&mut self, w: Waiting) -> usize {
        match self.free.pop() {
            Some(id) => {
                self.open[id] = Some(w);
                id
            }
            None => {
                self.open.push(Some(w));
                self.open.len() - 1
            }
        }
    }

    fn take(&mut self, id: usize) -> Option<Waiting> {
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
                if let Some(w) = self.take(id) {
                    core.reply(w.peer, &w.header, -libc::EIO, &[]);
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
            let Some(w) = self.take(c.tag as usize) else {
                continue;
            };
            match c.result {
                Ok(reply) => {
                    // A reply above what the transport sends safely goes in pieces
                    // (`Core::reply`).
                    self.out.clear();
                    reply.encode(&mut self.out);
                    if let Some(g) = self.grants(core, &w, &reply) {
                        g.encode(&mut self.out);
                    }
                    core.reply(w.peer, &w.header, 0, &self.out);
                }
                Err(errno) => core.reply(w.peer, &w.header, -errno, &[]),
            }
        }
        moved
    }
}

impl MdsService {
    /// The capabilities of a reply that carries a layout, sealed for the principal of
    /// the session that asked.
    fn grants(&self, core: &Core, w: &Waiting, reply: &Reply) -> Option<Grants> {
        let (sealer, g) = (self.sealer.as_ref()?, w.grant.as_ref()?);
        let holder = core.principal(w.header.session)?;
        match reply {
            Reply::Opened {
                attr,
                layout: Some(l),
                created,
                ..
            } => Some(sealer.grants(holder, &g.creds, attr, *created, l)),
            Reply::Layout(l) => {
                // The reply names no attributes: the file's, as it is now.
                let mdt = self.mdt.as_ref()?;
                let head = Head {
                    creds: g.creds.clone(),
                    epoch: mdt.epoch(),
                    replay: None,
                };
                let attr = match mdt.read(&head, &Request::Getattr { ino: g.ino }) {
                    Ok(Reply::Attr(a)) => a,
                    _ => return None,
                };
                Some(sealer.grants(holder, &g.creds, &attr, false, l))
            }
            _ => None,
        }
    }
}

impl Service for MdsService {
    fn on_request(&mut self, core: &mut Core, req: Incoming<'_>) {
        if !self.serving() {
            return core.reply(req.peer, &req.header, -libc::ESTALE, &[]);
        }
        let (mut head, request) = match Request::decode(req.header.opcode, req.body) {
            Ok(r) => r,
            Err(e) => return core.reply(req.peer, &req.header, -e.errno(), &[]),
        };
        // The identity the client's key allows, not what it says (crate::identity).
        let squash = self.mdt.as_ref().and_then(|m| m.root_squash().get());
        if let Some(p) = core.principal(req.header.session) {
            head.creds = crate::identity::effective(p, head.creds, squash);
        }
        let grant = match (&self.sealer, &request) {
            (Some(_), Request::Create { .. } | Request::Open { .. }) => Some(0),
            (
                Some(_),
                Request::GetLayout { ino }
                | Request::SetLayout { ino, .. }
                | Request::MirrorState { ino, .. },
            ) => Some(*ino),
            _ => None,
        };
        let id = self.add(Waiting {
            peer: req.peer,
            header: req.header,
            grant: grant.map(|ino| GrantFor {
                creds: head.creds.clone(),
                ino,
            }),
        });
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
