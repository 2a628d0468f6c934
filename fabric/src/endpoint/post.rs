//! Posting operations: sends, receives, RMA reads and writes, injects, within the
//! per-direction limits, waiting (progressing) for room or returning at once.

use std::ffi::c_void;
use std::rc::Rc;
use std::time::Instant;

use nacre_sys as sys;

use super::{Endpoint, OpKind, PeerAddr, EAGAIN};
use crate::error::{call_error, ErrorKind, Result};
use crate::memory::{remote_target, LocalSlice};
use nacre_proto::BulkDesc;

impl Endpoint {
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
    /// read) can never be seen before the data, on any provider (see
    /// [`write_flags`](super::write_flags)).
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
