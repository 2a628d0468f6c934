//! An RDM endpoint with its own completion queue and address vector, and the domain
//! under it. Everything advances by polling: manual progress, no threads, no waits.
//!
//! Handles are neither Send nor Sync: the domain is opened with FI_THREAD_DOMAIN, so
//! one thread (one engine core) owns an endpoint and everything registered through it.
//! Close order is fixed by ownership: endpoint, then AV and CQ, then the registrations
//! that the endpoint retains (every one made through it), then the domain and fabric.

use std::collections::VecDeque;
use std::ffi::{c_void, CStr};
use std::mem::MaybeUninit;
use std::ptr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nacre_sys as sys;

use crate::error::{call_error, check, strerror, CompletionError, ErrorKind, Result};
use crate::info::{mr_mode_names, Info, ProviderSummary};
use crate::memory::{
    remote_target, Access, ExternalRegion, LocalSlice, Memory, MemoryRegion, MrInner,
};
use nacre_proto::BulkDesc;

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
    /// before giving up. Zero: never wait; such a post returns [`ErrorKind::Again`] at
    /// once and the caller retries it later (what an engine core does, so that one slow
    /// peer never stops its loop).
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
}

impl Domain {
    fn open(info: &Info, force_mr_mode: u64) -> Result<Rc<Domain>> {
        let forceable = sys::FI_MR_PROV_KEY | sys::FI_MR_ENDPOINT;
        let mut d = Domain {
            fabric: ptr::null_mut(),
            domain: ptr::null_mut(),
            mr_mode: info.mr_mode() | (force_mr_mode & forceable),
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

/// Keys for providers that do not pick their own (no FI_MR_PROV_KEY): unique per process.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// An RDM endpoint, its CQ and AV, and the bookkeeping of its operations in flight.
pub struct Endpoint {
    ep: *mut sys::fid_ep,
    cq: *mut sys::fid_cq,
    av: *mut sys::fid_av,
    name: Vec<u8>,
    peers: Vec<sys::fi_addr_t>,
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

/// Per-operation state, one slot per operation in flight: the caller's context, the
/// kind of operation, and the registration it uses (held until the completion is read,
/// so a registration is never released under an operation). `ctx` comes first: its
/// address is the context libfabric carries, and it is the FI_CONTEXT / FI_CONTEXT2
/// storage that providers asking for those modes write into.
#[repr(C)]
struct OpSlot {
    ctx: sys::fi_context2,
    context: u64,
    kind: OpKind,
    region: Option<Rc<MrInner>>,
}

/// A bounded table of [`OpSlot`]s, allocated once: pointers into it stay valid for the
/// endpoint's life. Sized for every transmit and receive the endpoint admits, so a post
/// that passed the queue checks always finds a slot.
struct OpSlots {
    slots: Box<[OpSlot]>,
    free: Vec<u32>,
}

impl OpSlots {
    fn new(count: usize) -> OpSlots {
        let slots = (0..count)
            .map(|_| OpSlot {
                ctx: sys::fi_context2::default(),
                context: 0,
                kind: OpKind::Send,
                region: None,
            })
            .collect();
        OpSlots {
            slots,
            free: (0..count as u32).rev().collect(),
        }
    }

    /// Takes a slot for an operation; its address is the libfabric context.
    #[inline]
    fn take(&mut self, context: u64, kind: OpKind, region: &Rc<MrInner>) -> Option<u32> {
        let i = self.free.pop()?;
        let slot = &mut self.slots[i as usize];
        slot.context = context;
        slot.kind = kind;
        region.busy.set(region.busy.get() + 1);
        slot.region = Some(region.clone());
        Some(i)
    }

    #[inline]
    fn pointer(&mut self, i: u32) -> *mut c_void {
        &mut self.slots[i as usize] as *mut OpSlot as *mut c_void
    }

    /// The slot a context pointer names, if it is one of ours.
    #[inline]
    fn index_of(&self, raw: *mut c_void) -> Option<u32> {
        let base = self.slots.as_ptr() as usize;
        let size = std::mem::size_of::<OpSlot>();
        let off = (raw as usize).checked_sub(base)?;
        (off % size == 0 && off / size < self.slots.len()).then_some((off / size) as u32)
    }

    /// Frees slot `i` (the operation is done): returns its context and kind, and lets go
    /// of its registration.
    #[inline]
    fn release(&mut self, i: u32) -> (u64, OpKind) {
        let slot = &mut self.slots[i as usize];
        if let Some(r) = slot.region.take() {
            r.busy.set(r.busy.get().saturating_sub(1));
        }
        self.free.push(i);
        (slot.context, slot.kind)
    }
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

    /// Inserts a peer's name (from its [`Endpoint::name`]) into the address vector.
    pub fn insert_peer(&mut self, name: &[u8]) -> Result<PeerAddr> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(ErrorKind::BadPeerName {
                len: name.len(),
                text: format!("a fabric name is 1 to {MAX_NAME} bytes"),
            }
            .into());
        }
        // fi_av_insert reads as many bytes as the provider's address format says, and string
        // formats up to a NUL: pad a copy with zeros so a short name cannot be over-read.
        let mut padded = [0u8; MAX_NAME + 1];
        padded[..name.len()].copy_from_slice(name);
        let mut addr: sys::fi_addr_t = sys::FI_ADDR_UNSPEC;
        // SAFETY: av is open; padded is readable for any length the provider reads; addr
        // receives one fi_addr_t.
        let rc = unsafe {
            sys::fi_av_insert(
                self.av,
                padded.as_ptr() as *const c_void,
                1,
                &mut addr,
                0,
                ptr::null_mut(),
            )
        };
        if rc != 1 || addr == sys::FI_ADDR_UNSPEC {
            let text = if rc < 0 {
                strerror(rc)
            } else {
                "the provider did not accept it".into()
            };
            return Err(ErrorKind::BadPeerName {
                len: name.len(),
                text,
            }
            .into());
        }
        self.peers.push(addr);
        Ok(PeerAddr((self.peers.len() - 1) as u32))
    }

    fn fi_addr(&self, peer: PeerAddr) -> Result<sys::fi_addr_t> {
        self.peers
            .get(peer.0 as usize)
            .copied()
            .filter(|&a| a != sys::FI_ADDR_UNSPEC)
            .ok_or_else(|| ErrorKind::UnknownPeer(peer.0 as u64).into())
    }

    /// Takes a peer out of the address vector (the provider frees what it holds for it:
    /// shm unmaps its region, tcp;ofi_rxm closes its connection). Its `PeerAddr` is never
    /// given to another peer: later posts to it are refused as to an unknown peer. The
    /// caller must have nothing of its own in flight to the peer.
    pub fn remove_peer(&mut self, peer: PeerAddr) -> Result<()> {
        let mut addr = self.fi_addr(peer)?;
        // SAFETY: av is open; addr is one fi_addr_t this AV returned and still holds.
        let rc = unsafe { sys::fi_av_remove(self.av, &mut addr, 1, 0) };
        check("fi_av_remove", rc as isize)?;
        self.peers[peer.0 as usize] = sys::FI_ADDR_UNSPEC;
        Ok(())
    }

    /// Registers `memory` for local use and, with `Access::ALL`, for peers' RMA. Obeys the
    /// provider's mr_mode: its key with FI_MR_PROV_KEY (else a unique one of ours), virtual
    /// addresses with FI_MR_VIRT_ADDR (else offsets), binding with FI_MR_ENDPOINT.
    /// The registration lives as long as the endpoint (register at start-up, as the
    /// engine's pool does): an operation in flight can never outlive its memory.
    pub fn register(&mut self, mut memory: Memory, access: Access) -> Result<MemoryRegion> {
        let (ptr, len) = (memory.as_mut_ptr(), memory.len());
        let inner = self.register_range(ptr, len, Some(memory), access)?;
        Ok(MemoryRegion { inner })
    }

    /// Registers memory the caller owns (a client's buffer) for data calls and peers'
    /// RMA. Released with [`Endpoint::deregister_external`] or when the endpoint closes.
    ///
    /// # Safety
    /// `[ptr, ptr+len)` must stay mapped, and not be used for anything else by a
    /// provider's access, while any operation posted on the region is in flight and
    /// while any peer holds a descriptor of it that it may still use: post on it, and
    /// hand out its descriptors, only while the caller holds the memory, and deregister
    /// it (closing the key) before the memory goes if a peer might still reach it.
    pub unsafe fn register_external(
        &mut self,
        ptr: *mut u8,
        len: usize,
        access: Access,
    ) -> Result<ExternalRegion> {
        let inner = self.register_range(ptr, len, None, access)?;
        Ok(ExternalRegion { inner })
    }

    /// Gives up an external registration; refused while an operation uses it. Once the
    /// last handle goes, the registration closes and its key stops working for peers.
    pub fn deregister_external(&mut self, region: ExternalRegion) -> Result<()> {
        let busy = region.busy();
        if busy > 0 {
            return Err(ErrorKind::Busy(busy as usize).into());
        }
        self.registrations.retain(|r| !Rc::ptr_eq(r, &region.inner));
        Ok(())
    }

    fn register_range(
        &mut self,
        ptr: *mut u8,
        len: usize,
        memory: Option<Memory>,
        access: Access,
    ) -> Result<Rc<MrInner>> {
        let mode = self.domain.mr_mode;
        let requested_key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        let mut mr: *mut sys::fid_mr = ptr::null_mut();
        // SAFETY: ptr/len describe memory that `memory` owns (and the registration will
        // outlive), or the caller's memory under register_external's contract; the
        // domain is open; mr receives the new registration.
        let rc = unsafe {
            sys::fi_mr_reg(
                self.domain.domain,
                ptr as *const c_void,
                len,
                access.0,
                0,
                requested_key,
                0,
                &mut mr,
                ptr::null_mut(),
            )
        };
        check("fi_mr_reg", rc as isize)?;
        if mode & sys::FI_MR_ENDPOINT != 0 {
            // Bound and enabled before its key and descriptor are read: a provider may
            // only know them once the registration is enabled.
            // SAFETY: both objects are live; the MR is not used before this.
            let bound = unsafe {
                check(
                    "fi_mr_bind",
                    sys::fi_mr_bind(mr, self.ep as *mut sys::fid, 0) as isize,
                )
                .and_then(|_| check("fi_mr_enable", sys::fi_mr_enable(mr) as isize))
            };
            if let Err(e) = bound {
                // SAFETY: mr is live and never used again.
                unsafe { sys::fi_close(mr as *mut sys::fid) };
                return Err(e);
            }
        }
        let key = if mode & sys::FI_MR_PROV_KEY != 0 {
            // SAFETY: mr is a live, enabled registration.
            unsafe { sys::fi_mr_key(mr) }
        } else {
            requested_key
        };
        if key == sys::FI_KEY_NOTAVAIL {
            // SAFETY: as above.
            unsafe { sys::fi_close(mr as *mut sys::fid) };
            return Err(call_error("fi_mr_key", -(sys::FI_ENOKEY as isize)));
        }
        let inner = MrInner::new(
            mr,
            key,
            mode & sys::FI_MR_VIRT_ADDR != 0,
            ptr,
            len,
            memory,
            access,
            self.domain.clone(),
        );
        tracing::debug!(
            len = inner.len,
            key,
            mr_mode = %mr_mode_names(mode),
            "registered memory"
        );
        let inner = Rc::new(inner);
        self.registrations.push(inner.clone());
        Ok(inner)
    }

    /// Gives up this endpoint's hold on a registration (it closes when the last
    /// `MemoryRegion` handle goes). Refused while an operation posted on that
    /// registration has not completed; operations on other registrations (posted
    /// receives, say) do not matter.
    pub fn deregister(&mut self, region: &MemoryRegion) -> Result<()> {
        let busy = region.busy();
        if busy > 0 {
            return Err(ErrorKind::Busy(busy as usize).into());
        }
        self.registrations.retain(|r| !Rc::ptr_eq(r, &region.inner));
        Ok(())
    }

    /// Sends `src` to `to`; a Send completion with `context` follows.
    pub fn post_send(&mut self, src: LocalSlice<'_>, to: PeerAddr, context: u64) -> Result<()> {
        self.check_msg(src.len)?;
        let dest = self.fi_addr(to)?;
        let (ep, buf, len, desc) = (self.ep, src.ptr(), src.len, self.desc(&src)?);
        self.post(OpKind::Send, context, &src, "fi_send", |ctx| {
            // SAFETY: buf/len lie in a live registration (held by the op's slot until its
            // completion is read), desc is its descriptor, dest is in our AV.
            unsafe { sys::hot::send(ep, buf, len, desc, dest, ctx) }
        })
    }

    /// Posts a receive into `dst` (from any peer); a Recv completion with `context` follows.
    pub fn post_recv(&mut self, dst: LocalSlice<'_>, context: u64) -> Result<()> {
        self.check_msg(dst.len)?;
        let (ep, buf, len, desc) = (self.ep, dst.ptr(), dst.len, self.desc(&dst)?);
        self.post(OpKind::Recv, context, &dst, "fi_recv", |ctx| {
            // SAFETY: as in post_send; the buffer is written only by the provider until the
            // completion is read.
            unsafe { sys::hot::recv(ep, buf, len, desc, sys::FI_ADDR_UNSPEC, ctx) }
        })
    }

    /// Reads `dst.len()` bytes at `offset` of the peer's region into `dst`.
    pub fn post_read(
        &mut self,
        dst: LocalSlice<'_>,
        from: PeerAddr,
        src: &BulkDesc,
        offset: u64,
        context: u64,
    ) -> Result<()> {
        self.check_msg(dst.len)?;
        let peer = self.fi_addr(from)?;
        let addr = remote_target(src, offset, dst.len)?;
        let key = src.key;
        let (ep, buf, len, desc) = (self.ep, dst.ptr(), dst.len, self.desc(&dst)?);
        self.post(OpKind::Read, context, &dst, "fi_read", |ctx| {
            // SAFETY: local side as in post_recv; the remote range was bounds-checked against
            // the peer's descriptor.
            unsafe { sys::fi_read(ep, buf, len, desc, peer, addr, key, ctx) }
        })
    }

    /// Writes `src` to `offset` of the peer's region. Its completion means the bytes are
    /// in the peer's memory, not only sent: a message posted after it (the reply of a
    /// read) can never be seen before the data, on any provider (see [`write_flags`]).
    pub fn post_write(
        &mut self,
        src: LocalSlice<'_>,
        to: PeerAddr,
        dst: &BulkDesc,
        offset: u64,
        context: u64,
    ) -> Result<()> {
        self.check_msg(src.len)?;
        let peer = self.fi_addr(to)?;
        let addr = remote_target(dst, offset, src.len)?;
        let (key, flags) = (dst.key, self.write_flags);
        let (ep, buf, len, desc) = (self.ep, src.ptr(), src.len, self.desc(&src)?);
        self.post(OpKind::Write, context, &src, "fi_writemsg", |ctx| {
            let mut iov = libc::iovec {
                iov_base: buf,
                iov_len: len,
            };
            let mut desc = desc;
            let rma = sys::fi_rma_iov { addr, len, key };
            let msg = sys::fi_msg_rma {
                msg_iov: &mut iov as *mut libc::iovec as *const _,
                desc: &mut desc,
                iov_count: 1,
                addr: peer,
                rma_iov: &rma,
                rma_iov_count: 1,
                context: ctx,
                data: 0,
            };
            // SAFETY: as in post_read; msg and what it points to live across the call, and
            // libfabric copies the message description before returning.
            unsafe { sys::fi_writemsg(ep, &msg, flags) }
        })
    }

    /// Sends a small message that libfabric copies at once: no completion, no registration
    /// needed. At most [`Endpoint::inject_size`] bytes.
    pub fn inject(&mut self, data: &[u8], to: PeerAddr) -> Result<()> {
        if data.len() > self.inject_size {
            return Err(ErrorKind::TooLarge {
                len: data.len(),
                max: self.inject_size,
            }
            .into());
        }
        let dest = self.fi_addr(to)?;
        let (ep, buf, len) = (self.ep, data.as_ptr() as *const c_void, data.len());
        self.retry("fi_inject", || {
            // SAFETY: the provider copies `len` bytes of `buf` before returning.
            unsafe { sys::hot::inject(ep, buf, len, dest) }
        })
    }

    /// Reads available completions into `out`, oldest first. An error completion is
    /// returned as `Err(ErrorKind::Completion.into())` once every earlier success has been returned.
    #[inline]
    pub fn poll(&mut self, out: &mut [Completion]) -> Result<usize> {
        if !self.backlog.is_empty() {
            return self.drain_backlog(out);
        }
        let mut n = 0;
        match self.read_batch(out.len(), |i, c| {
            out[i] = c;
            n += 1;
        })? {
            Some(e) => Err(ErrorKind::Completion(e).into()),
            None => Ok(n),
        }
    }

    /// Drives the provider (manual progress) and keeps what completes for the next poll.
    /// A target of RMA must call this (or poll) for the initiator's operations to advance.
    pub fn progress(&mut self) -> Result<()> {
        let mut got = [Completion {
            context: 0,
            kind: OpKind::Send,
            len: 0,
        }; CQ_BATCH];
        let mut n = 0;
        let failed = self.read_batch(CQ_BATCH, |i, c| {
            got[i] = c;
            n += 1;
        })?;
        self.backlog.extend(got[..n].iter().copied().map(Ok));
        if let Some(e) = failed {
            self.backlog.push_back(Err(e));
        }
        Ok(())
    }

    /// One fi_cq_read of up to `want` entries: each success goes to `sink` (with its
    /// index), and the error completion at the head of the queue, if that is what the
    /// queue holds, is returned.
    #[inline]
    fn read_batch(
        &mut self,
        want: usize,
        mut sink: impl FnMut(usize, Completion),
    ) -> Result<Option<Box<CompletionError>>> {
        let want = want.min(CQ_BATCH);
        if want == 0 {
            return Ok(None);
        }
        // Uninitialised: this runs on every spin of a poll loop, and zeroing the batch
        // each time would cost more than the call.
        let mut raw = [MaybeUninit::<sys::fi_cq_msg_entry>::uninit(); CQ_BATCH];
        // SAFETY: cq is open and was opened with FI_CQ_FORMAT_MSG; raw has room for
        // `want` entries, of which the provider initialises as many as it returns.
        let rc = unsafe { sys::hot::cq_read(self.cq, raw.as_mut_ptr() as *mut c_void, want) };
        match rc {
            n if n > 0 => {
                for (i, entry) in raw[..n as usize].iter().enumerate() {
                    // SAFETY: fi_cq_read initialised the first n entries.
                    let done = self.finish(unsafe { entry.assume_init_ref() });
                    sink(i, done);
                }
                Ok(None)
            }
            n if n == -EAGAIN => Ok(None),
            n if n == -EAVAIL => Ok(Some(self.read_error())),
            n => Err(call_error("fi_cq_read", n)),
        }
    }

    fn drain_backlog(&mut self, out: &mut [Completion]) -> Result<usize> {
        let mut n = 0;
        while n < out.len() {
            match self.backlog.front() {
                Some(Ok(c)) => {
                    out[n] = *c;
                    self.backlog.pop_front();
                    n += 1;
                }
                Some(Err(_)) if n == 0 => {
                    let Some(Err(e)) = self.backlog.pop_front() else {
                        unreachable!("front was an error")
                    };
                    return Err(ErrorKind::Completion(e).into());
                }
                _ => break,
            }
        }
        Ok(n)
    }

    /// Turns a CQ entry into a Completion and counts the operation done.
    #[inline]
    fn finish(&mut self, entry: &sys::fi_cq_msg_entry) -> Completion {
        let (context, kind) = match self.slots.index_of(entry.op_context) {
            Some(i) => self.slots.release(i),
            None => {
                // Not a context of ours: a provider bug; count nothing, surface it.
                debug_assert!(false, "completion with a foreign context");
                (u64::MAX, kind_of_flags(entry.flags))
            }
        };
        self.count_done(kind);
        Completion {
            context,
            kind,
            len: entry.len,
        }
    }

    #[inline]
    fn count_done(&mut self, kind: OpKind) {
        let used = if kind == OpKind::Recv {
            &mut self.rx_used
        } else {
            &mut self.tx_used
        };
        *used = used.saturating_sub(1);
    }

    fn read_error(&mut self) -> Box<CompletionError> {
        let mut e = sys::fi_cq_err_entry::default();
        // SAFETY: cq is open; e is a valid, zeroed error entry (err_data_size 0: the provider
        // points err_data at its own buffer, valid until the next CQ call).
        let rc = unsafe { sys::fi_cq_readerr(self.cq, &mut e, 0) };
        if rc < 0 {
            return Box::new(CompletionError {
                context: None,
                kind: OpKind::Send,
                code: rc.unsigned_abs() as i32,
                text: format!("fi_cq_readerr failed: {}", strerror(rc as i32)),
                provider_errno: 0,
                provider_text: String::new(),
            });
        }
        let mut buf = [0 as libc::c_char; 256];
        // SAFETY: cq is open; err_data comes from the entry just read; buf is writable.
        let provider_text = unsafe {
            let p = sys::fi_cq_strerror(
                self.cq,
                e.prov_errno,
                e.err_data,
                buf.as_mut_ptr(),
                buf.len(),
            );
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        // Some providers report a dead peer with an error that belongs to no operation.
        let (context, kind) = match self.slots.index_of(e.op_context) {
            Some(i) => {
                let (context, kind) = self.slots.release(i);
                self.count_done(kind);
                (Some(context), kind)
            }
            None => (None, kind_of_flags(e.flags)),
        };
        Box::new(CompletionError {
            context,
            kind,
            code: e.err.abs(), // shm reports some errors negative
            text: strerror(e.err),
            provider_errno: e.prov_errno,
            provider_text,
        })
    }

    /// The descriptor of a local slice, after checking it was registered in our domain.
    fn desc(&self, slice: &LocalSlice<'_>) -> Result<*mut c_void> {
        let inner = slice.inner;
        if !Rc::ptr_eq(&inner.domain, &self.domain) {
            return Err(ErrorKind::ForeignRegion.into());
        }
        // EFA's rule, checked here because tcp and sockets would forgive a null descriptor
        // for memory they cannot see: a FI_MR_LOCAL provider must get a real descriptor.
        debug_assert!(
            self.domain.mr_mode & sys::FI_MR_LOCAL == 0 || !inner.desc.is_null(),
            "FI_MR_LOCAL provider returned a null descriptor"
        );
        Ok(inner.desc)
    }

    fn check_msg(&self, len: usize) -> Result<()> {
        if len > self.max_msg_size {
            Err(ErrorKind::TooLarge {
                len,
                max: self.max_msg_size,
            }
            .into())
        } else {
            Ok(())
        }
    }

    /// Posts an operation within the per-direction limit, in a slot that holds its
    /// context and registration until the completion is read.
    #[inline]
    fn post(
        &mut self,
        kind: OpKind,
        context: u64,
        on: &LocalSlice<'_>,
        call: &'static str,
        mut op: impl FnMut(*mut c_void) -> isize,
    ) -> Result<()> {
        self.make_room(kind)?;
        let i = self
            .slots
            .take(context, kind, on.inner)
            .ok_or_else(|| ErrorKind::QueueFull(self.limit(kind)))?;
        let ctx = self.slots.pointer(i);
        if let Err(e) = self.retry(call, || op(ctx)) {
            self.slots.release(i);
            return Err(e);
        }
        if kind == OpKind::Recv {
            self.rx_used += 1;
        } else {
            self.tx_used += 1;
        }
        Ok(())
    }

    /// Whether posts wait (progressing) for room, or return [`ErrorKind::Again`].
    fn waits(&self) -> bool {
        !self.post_timeout.is_zero()
    }

    fn has_room(&self, kind: OpKind) -> bool {
        if kind == OpKind::Recv {
            self.rx_used < self.max_rx
        } else {
            self.tx_used < self.max_tx
        }
    }

    fn limit(&self, kind: OpKind) -> usize {
        if kind == OpKind::Recv {
            self.max_rx
        } else {
            self.max_tx
        }
    }

    /// Transmit operations wait (progressing) for a free slot; receives do not, since
    /// posted receives only drain when peers send.
    #[inline]
    fn make_room(&mut self, kind: OpKind) -> Result<()> {
        if self.has_room(kind) {
            Ok(())
        } else {
            self.wait_for_room(kind)
        }
    }

    #[cold]
    fn wait_for_room(&mut self, kind: OpKind) -> Result<()> {
        if kind == OpKind::Recv {
            return Err(ErrorKind::QueueFull(self.limit(kind)).into());
        }
        if !self.waits() {
            self.progress()?;
            return match self.has_room(kind) {
                true => Ok(()),
                false => Err(ErrorKind::Again("the transmit queue is full").into()),
            };
        }
        let start = Instant::now();
        while !self.has_room(kind) {
            self.progress()?;
            if start.elapsed() > self.post_timeout {
                return Err(ErrorKind::Timeout {
                    what: "waiting for a free transmit slot",
                    secs: start.elapsed().as_secs_f64(),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Calls `op` until it stops returning FI_EAGAIN, progressing the CQ in between.
    #[inline]
    fn retry(&mut self, call: &'static str, mut op: impl FnMut() -> isize) -> Result<()> {
        match op() {
            0 => Ok(()),
            rc if rc == -EAGAIN => self.retry_after_eagain(call, op),
            rc => Err(call_error(call, rc)),
        }
    }

    #[cold]
    #[inline(never)]
    fn retry_after_eagain(
        &mut self,
        call: &'static str,
        mut op: impl FnMut() -> isize,
    ) -> Result<()> {
        if !self.waits() {
            self.progress()?;
            return match op() {
                0 => Ok(()),
                rc if rc == -EAGAIN => Err(ErrorKind::Again(call).into()),
                rc => Err(call_error(call, rc)),
            };
        }
        let start = Instant::now();
        let mut tries = 0u32;
        loop {
            self.progress()?;
            let rc = op();
            if rc == 0 {
                return Ok(());
            }
            if rc != -EAGAIN {
                return Err(call_error(call, rc));
            }
            tries = tries.wrapping_add(1);
            if tries.is_multiple_of(256) && start.elapsed() > self.post_timeout {
                return Err(ErrorKind::Timeout {
                    what: call,
                    secs: start.elapsed().as_secs_f64(),
                }
                .into());
            }
        }
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

fn kind_of_flags(flags: u64) -> OpKind {
    if flags & sys::FI_RECV != 0 {
        OpKind::Recv
    } else if flags & sys::FI_READ != 0 {
        OpKind::Read
    } else if flags & sys::FI_WRITE != 0 {
        OpKind::Write
    } else {
        OpKind::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_slots_name_only_their_own_addresses() {
        let slots = OpSlots::new(4);
        let base = slots.slots.as_ptr() as usize;
        let size = std::mem::size_of::<OpSlot>();
        assert_eq!(slots.index_of(base as *mut c_void), Some(0));
        assert_eq!(slots.index_of((base + 3 * size) as *mut c_void), Some(3));
        assert_eq!(slots.index_of((base + 4 * size) as *mut c_void), None);
        assert_eq!(slots.index_of((base + 1) as *mut c_void), None);
        assert_eq!(slots.index_of(ptr::null_mut()), None);
        assert_eq!(slots.index_of((base - size) as *mut c_void), None);
    }
}
