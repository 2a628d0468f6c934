//! An RDM endpoint with its own completion queue and address vector, and the domain
//! under it. Everything advances by polling: manual progress, no threads, no waits.
//!
//! Handles are neither Send nor Sync: the domain is opened with FI_THREAD_DOMAIN, so
//! one thread (one engine core) owns an endpoint and everything registered through it.
//! Close order is fixed by ownership: endpoint, then AV and CQ, then the registrations
//! that the endpoint retains (every one made through it), then the domain and fabric.
//!
//! Here: the public types, the domain, and opening an endpoint. Its address vector is in
//! `peers`, memory registration in `register`, posting operations in `post`, reading
//! completions in `completions`, and the per-operation context table in `slots`.

mod completions;
mod peers;
mod post;
mod register;
mod slots;

use std::collections::VecDeque;
use std::ffi::c_void;
use std::ptr;
use std::rc::Rc;
use std::time::Duration;

use nacre_sys as sys;

use crate::error::{check, strerror, CompletionError, Result};
use crate::info::{Info, ProviderSummary};
use crate::memory::MrInner;
use slots::OpSlots;

const EAGAIN: isize = sys::FI_EAGAIN as isize;
const EAVAIL: isize = sys::FI_EAVAIL as isize;
/// Completions read per fi_cq_read call.
const CQ_BATCH: usize = 32;
/// Largest peer name we accept (libfabric names are at most a few dozen bytes).
const MAX_NAME: usize = 256;

/// What kind of operation a completion belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Send,
    Recv,
    Read,
    Write,
}

/// A successful completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The context the caller gave when posting.
    pub context: u64,
    pub kind: OpKind,
    /// Bytes received (receives); the posted length otherwise.
    pub len: usize,
    /// Who sent a received message, if it is in the address vector (FI_SOURCE): a
    /// server checks it against the peer a session was issued to.
    pub source: Option<PeerAddr>,
}

/// A peer inserted in this endpoint's address vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(u32);

impl PeerAddr {
    /// The peer at index `i` of an address vector (tables and tests). Safe to make up:
    /// an index the endpoint's address vector does not hold is refused by every post.
    pub const fn from_index(i: u32) -> PeerAddr {
        PeerAddr(i)
    }

    pub fn index(self) -> u32 {
        self.0
    }
}

/// Sizes of an endpoint's queues, fixed when it opens.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Transmit-side operations (send, read, write) in flight at most.
    pub max_tx: usize,
    /// Receives posted at most.
    pub max_rx: usize,
    /// Peers the address vector is sized for (it may grow).
    pub av_size: usize,
    /// How long a post may keep meeting FI_EAGAIN or a full queue (while progressing)
    /// before giving up. Zero: never wait; such a post returns
    /// [`ErrorKind::Again`](crate::ErrorKind::Again) at once and the caller retries it
    /// later (what an engine core does, so that one slow peer never stops its loop).
    pub post_timeout: Duration,
    /// mr_mode bits handled as if the provider had asked for them. Only the bits whose
    /// handling is valid on any provider are taken (FI_MR_PROV_KEY: use the key the
    /// provider reports; FI_MR_ENDPOINT: bind and enable each registration): tests use it
    /// to run those branches on providers that ask for neither, as EFA and verbs do.
    pub force_mr_mode: u64,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            max_tx: 256,
            max_rx: 256,
            av_size: 64,
            post_timeout: Duration::from_secs(30),
            force_mr_mode: 0,
        }
    }
}

/// Fabric and domain; closed when the last endpoint or registration using them goes.
pub(crate) struct Domain {
    fabric: *mut sys::fid_fabric,
    domain: *mut sys::fid_domain,
    mr_mode: u64,
    /// The bits of a key we choose (providers without FI_MR_PROV_KEY).
    key_mask: u64,
}

impl Domain {
    fn open(info: &Info, force_mr_mode: u64) -> Result<Rc<Domain>> {
        let forceable = sys::FI_MR_PROV_KEY | sys::FI_MR_ENDPOINT;
        let mut d = Domain {
            fabric: ptr::null_mut(),
            domain: ptr::null_mut(),
            mr_mode: info.mr_mode() | (force_mr_mode & forceable),
            key_mask: match info.mr_key_size() {
                8 => u64::MAX,
                n => (1u64 << (8 * n)) - 1,
            },
        };
        // SAFETY: info is a valid fi_info; the out-pointers receive objects we close in Drop.
        unsafe {
            check(
                "fi_fabric",
                sys::fi_fabric((*info.raw()).fabric_attr, &mut d.fabric, ptr::null_mut()) as isize,
            )?;
            check(
                "fi_domain",
                sys::fi_domain(d.fabric, info.raw(), &mut d.domain, ptr::null_mut()) as isize,
            )?;
        }
        Ok(Rc::new(d))
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        close("domain", self.domain as *mut sys::fid);
        close("fabric", self.fabric as *mut sys::fid);
    }
}

/// An RDM endpoint, its CQ and AV, and the bookkeeping of its operations in flight.
pub struct Endpoint {
    ep: *mut sys::fid_ep,
    cq: *mut sys::fid_cq,
    av: *mut sys::fid_av,
    name: Vec<u8>,
    peers: Vec<sys::fi_addr_t>,
    /// The other way: by the provider's address (an index, FI_AV_TABLE), our peer's
    /// index + 1 (0: none), for the source a completion names. The provider reuses
    /// the addresses of removed peers; our indexes are never reused.
    sources: Vec<u32>,
    /// Whether the endpoint asked for FI_SOURCE (a server's): completions are read
    /// with their sources then.
    with_sources: bool,
    backlog: VecDeque<Result<Completion, Box<CompletionError>>>,
    slots: OpSlots,
    /// Flags of RMA writes: see [`write_flags`].
    write_flags: u64,
    inject_size: usize,
    max_msg_size: usize,
    /// See [`Endpoint::safe_send_size`].
    safe_send_size: usize,
    post_timeout: Duration,
    info: Info,
    /// Operations posted and not completed, per direction, and their limits.
    tx_used: usize,
    rx_used: usize,
    max_tx: usize,
    max_rx: usize,
    // Dropped after the endpoint is closed (Drop runs first): every registration made
    // through this endpoint (so no operation in flight can outlive its memory), then
    // the domain.
    registrations: Vec<Rc<MrInner>>,
    domain: Rc<Domain>,
}

/// Whether `provider` completes operations that wait on the peer in the order they
/// were made, whatever the peer. libfabric 1.17's shm does: an RMA write asking for
/// FI_DELIVERY_COMPLETE, and any send above the inject size, is a command whose response
/// the peer writes, and shm reads those responses in order, stopping at the first one not
/// yet written (`smr_progress_resp`). One peer that died (or stops polling) with such an
/// operation in flight would stall every later completion of the endpoint, for all
/// peers. On such a provider, writes take the path that needs no response (see
/// [`write_flags`]) and replies stay within the inject size
/// ([`Endpoint::safe_send_size`]).
fn responses_in_order(provider: &str) -> bool {
    provider == "shm"
}

/// The completion flags of RMA writes: FI_DELIVERY_COMPLETE (the bytes are in the peer's
/// memory when the write completes), except where [`responses_in_order`]. There (shm)
/// delivery is what a write gives anyway: it either copies into the peer with CMA inside
/// the post (its fast path, which asking for delivery-complete takes away) or is a
/// command the peer runs in order before any later message from us.
fn write_flags(in_order: bool) -> u64 {
    match in_order {
        true => sys::FI_COMPLETION | sys::FI_TRANSMIT_COMPLETE,
        false => sys::FI_COMPLETION | sys::FI_DELIVERY_COMPLETE,
    }
}

impl Endpoint {
    /// Opens fabric, domain, CQ, AV and an enabled RDM endpoint for `info`.
    pub fn open(info: Info, cfg: &EndpointConfig) -> Result<Endpoint> {
        if info.summary().provider == "shm" {
            crate::shm_sweep::sweep_once();
        }
        let domain = Domain::open(&info, cfg.force_mr_mode)?;
        let cap = |want: usize, offered: usize| if offered > 0 { want.min(offered) } else { want };
        let max_tx = cap(cfg.max_tx, info.tx_size()).max(1);
        let max_rx = cap(cfg.max_rx, info.rx_size()).max(1);
        let in_order = responses_in_order(&info.summary().provider);
        let mut ep = Endpoint {
            ep: ptr::null_mut(),
            cq: ptr::null_mut(),
            av: ptr::null_mut(),
            name: Vec::new(),
            peers: Vec::with_capacity(cfg.av_size),
            sources: Vec::with_capacity(cfg.av_size),
            with_sources: info.sources(),
            backlog: VecDeque::with_capacity(max_tx + max_rx),
            slots: OpSlots::new(max_tx + max_rx),
            write_flags: write_flags(in_order),
            inject_size: info.inject_size(),
            max_msg_size: info.max_msg_size(),
            safe_send_size: match in_order {
                true => info.inject_size().min(info.max_msg_size()),
                false => info.max_msg_size(),
            },
            post_timeout: cfg.post_timeout,
            info,
            tx_used: 0,
            rx_used: 0,
            max_tx,
            max_rx,
            registrations: Vec::new(),
            domain,
        };
        ep.open_queues(max_tx + max_rx, cfg.av_size)?;
        ep.name = ep.read_name()?;
        Ok(ep)
    }

    fn open_queues(&mut self, cq_size: usize, av_size: usize) -> Result<()> {
        let mut cq_attr = sys::fi_cq_attr {
            size: cq_size,
            format: sys::fi_cq_format_FI_CQ_FORMAT_MSG, // context, flags, len: all we read
            wait_obj: sys::fi_wait_obj_FI_WAIT_NONE,
            ..Default::default()
        };
        let mut av_attr = sys::fi_av_attr {
            type_: sys::fi_av_type_FI_AV_TABLE,
            count: av_size,
            ..Default::default()
        };
        let d = self.domain.domain;
        // SAFETY: d is an open domain; attrs are valid for the calls; every object created is
        // stored in self and closed by Drop, also when a later step fails.
        unsafe {
            check(
                "fi_cq_open",
                sys::fi_cq_open(d, &mut cq_attr, &mut self.cq, ptr::null_mut()) as isize,
            )?;
            check(
                "fi_av_open",
                sys::fi_av_open(d, &mut av_attr, &mut self.av, ptr::null_mut()) as isize,
            )?;
            check(
                "fi_endpoint",
                sys::fi_endpoint(d, self.info.raw(), &mut self.ep, ptr::null_mut()) as isize,
            )?;
            check(
                "fi_ep_bind(cq)",
                sys::fi_ep_bind(
                    self.ep,
                    self.cq as *mut sys::fid,
                    sys::FI_TRANSMIT | sys::FI_RECV,
                ) as isize,
            )?;
            check(
                "fi_ep_bind(av)",
                sys::fi_ep_bind(self.ep, self.av as *mut sys::fid, 0) as isize,
            )?;
            check("fi_enable", sys::fi_enable(self.ep) as isize)?;
        }
        Ok(())
    }

    fn read_name(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; MAX_NAME];
        let mut len = buf.len();
        // SAFETY: the endpoint is enabled; buf has `len` writable bytes.
        let rc = unsafe {
            sys::fi_getname(
                self.ep as *mut sys::fid,
                buf.as_mut_ptr() as *mut c_void,
                &mut len,
            )
        };
        check("fi_getname", rc as isize)?;
        buf.truncate(len);
        Ok(buf)
    }

    /// This endpoint's fabric address, to hand to peers out of band.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The mr_mode this endpoint obeys: the provider's, plus any forced bits.
    pub fn mr_mode(&self) -> u64 {
        self.domain.mr_mode
    }

    /// Whether registrations pin physical pages (FI_MR_LOCAL or FI_MR_ALLOCATED: NICs
    /// that DMA, such as EFA and verbs). A pinned registration goes stale when its
    /// memory is unmapped and mapped again, so only a cache that watches the address
    /// space (libfabric's own MR cache and its memory monitor) may keep one across
    /// calls. Software providers (tcp, sockets, shm) resolve addresses at each operation.
    pub fn pins_registrations(&self) -> bool {
        self.domain.mr_mode & (sys::FI_MR_LOCAL | sys::FI_MR_ALLOCATED) != 0
    }

    pub fn summary(&self) -> ProviderSummary {
        self.info.summary()
    }

    /// How long a post refused with FI_EAGAIN is tried again, progressing, before it
    /// fails (zero: once more after one progress).
    pub fn set_post_timeout(&mut self, timeout: Duration) {
        self.post_timeout = timeout;
    }

    /// Largest message sent with [`Endpoint::inject`] (no completion, buffer reusable at once).
    pub fn inject_size(&self) -> usize {
        self.inject_size
    }

    pub fn max_msg_size(&self) -> usize {
        self.max_msg_size
    }

    /// Largest message whose send completes without the peer's help: the inject size
    /// where the provider completes such sends in order ([`responses_in_order`]: shm),
    /// any message elsewhere.
    pub fn safe_send_size(&self) -> usize {
        self.safe_send_size
    }

    /// Operations posted and not yet completed (and read).
    pub fn in_flight(&self) -> usize {
        self.tx_used + self.rx_used
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // The endpoint first: after it is closed no operation touches its buffers, so the
        // registrations it retains may be released (fields drop after this).
        close("endpoint", self.ep as *mut sys::fid);
        close("av", self.av as *mut sys::fid);
        close("cq", self.cq as *mut sys::fid);
    }
}

fn close(what: &str, fid: *mut sys::fid) {
    if fid.is_null() {
        return;
    }
    // SAFETY: fid is a live libfabric object owned by the caller and closed exactly once;
    // `struct fid` is the first member of every fid_* type.
    let rc = unsafe { sys::fi_close(fid) };
    if rc != 0 {
        tracing::warn!("fi_close({what}) failed: {}", strerror(rc));
    }
}
