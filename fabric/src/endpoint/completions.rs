//! Reading the completion queue: successes in order, an error completion after the
//! successes before it, and a backlog for what progress read ahead.

use std::ffi::{c_void, CStr};
use std::mem::MaybeUninit;

use nacre_sys as sys;

use super::{Completion, Endpoint, OpKind, CQ_BATCH, EAGAIN, EAVAIL};
use crate::error::{call_error, strerror, CompletionError, ErrorKind, Result};

impl Endpoint {
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
            source: None,
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
        // Uninitialised too: filled by the provider only for an endpoint with sources.
        let mut src = [MaybeUninit::<sys::fi_addr_t>::uninit(); CQ_BATCH];
        // SAFETY: cq is open and was opened with FI_CQ_FORMAT_MSG (with FI_SOURCE when
        // `with_sources`); raw and src have room for `want` entries, of which the
        // provider initialises as many as it returns.
        let rc = unsafe {
            match self.with_sources {
                true => sys::hot::cq_readfrom(
                    self.cq,
                    raw.as_mut_ptr() as *mut c_void,
                    want,
                    src.as_mut_ptr() as *mut sys::fi_addr_t,
                ),
                false => sys::hot::cq_read(self.cq, raw.as_mut_ptr() as *mut c_void, want),
            }
        };
        match rc {
            n if n > 0 => {
                for (i, (entry, from)) in raw.iter().zip(&src).take(n as usize).enumerate() {
                    // SAFETY: the provider initialised the first n entries.
                    let mut done = self.finish(unsafe { entry.assume_init_ref() });
                    if done.kind == OpKind::Recv && self.with_sources {
                        // SAFETY: fi_cq_readfrom (with_sources) initialised the first n
                        // sources too.
                        done.source = self.source_peer(unsafe { from.assume_init() });
                    }
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
            source: None,
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
