//! The io_uring backend: fixed files, the pool's arena as fixed buffer 0, SQEs queued as
//! requests arrive and handed to the kernel together by `flush` (one io_uring_enter).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::{FileId, Files, IoCompletion, IoKind, Op, StorageConfig, StorageError};
use crate::pool::BufferPool;

pub(crate) struct UringStorage {
    ring: IoUring,
    files: Files,
    /// Operations in flight, indexed by the SQE's user_data.
    ops: Vec<Option<Op>>,
    free: Vec<u32>,
    /// SQEs pushed since the last submit.
    queued: usize,
    /// The registered fixed buffer (index 0): start and length.
    fixed: Option<(usize, usize)>,
    /// Completions read from the CQ, processed after the CQ borrow ends.
    scratch: Vec<(u64, i32)>,
}

impl UringStorage {
    pub(crate) fn new(cfg: &StorageConfig, pool: Option<&BufferPool>) -> io::Result<UringStorage> {
        let depth = cfg.queue_depth.max(1);
        let ring = new_ring(depth.next_power_of_two())?;
        ring.submitter().register_files_sparse(cfg.max_files)?;
        let fixed = match pool {
            Some(pool) => {
                let (ptr, len) = pool.arena();
                let iov = libc::iovec {
                    iov_base: ptr as *mut libc::c_void,
                    iov_len: len,
                };
                // SAFETY: the arena stays mapped while any PoolBuf or the pool lives; the
                // core drops its storage (which waits for operations in flight) before its
                // pool; a slab is only handed to the kernel inside an operation that owns it.
                unsafe { ring.submitter().register_buffers(&[iov]) }.map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "registering {len} bytes of buffers with io_uring: {e} \
                             (non-root users need RLIMIT_MEMLOCK, `ulimit -l`, at least that)"
                        ),
                    )
                })?;
                Some((ptr as usize, len))
            }
            None => None,
        };
        Ok(UringStorage {
            ring,
            files: Files::new(cfg.max_files),
            ops: (0..depth).map(|_| None).collect(),
            free: (0..depth).rev().collect(),
            queued: 0,
            fixed,
            scratch: Vec::with_capacity(depth as usize),
        })
    }

    pub(crate) fn add_file(&mut self, file: File) -> Result<FileId, StorageError> {
        let fd = file.as_raw_fd();
        let id = self.files.add(file)?;
        self.ring
            .submitter()
            .register_files_update(id, &[fd])
            .map_err(StorageError::Ring)?;
        Ok(FileId(id))
    }

    pub(crate) fn remove_file(&mut self, id: u32) -> Result<(), StorageError> {
        // A retry of a short transfer goes to the slot number again: the slot must not be
        // reused by another file while operations on this one are in flight.
        let busy = self.ops.iter().flatten().filter(|op| op.file == id).count();
        if busy > 0 {
            return Err(StorageError::FileBusy {
                file: id,
                in_flight: busy,
            });
        }
        self.files.remove(id)?;
        self.ring
            .submitter()
            .register_files_update(id, &[-1])
            .map_err(StorageError::Ring)?;
        Ok(())
    }

    pub(crate) fn file(&self, id: u32) -> Option<&File> {
        self.files.get(id)
    }

    pub(crate) fn push(&mut self, op: Op) -> Result<(), (StorageError, Op)> {
        if self.files.get(op.file).is_none() {
            return Err((StorageError::BadFile(op.file), op));
        }
        let Some(slot) = self.free.pop() else {
            return Err((StorageError::QueueFull(self.ops.len()), op));
        };
        self.ops[slot as usize] = Some(op);
        if let Err(e) = self.queue(slot) {
            let op = self.ops[slot as usize].take().expect("just stored");
            self.free.push(slot);
            return Err((e, op));
        }
        Ok(())
    }

    /// Builds the SQE for what is left of operation `slot` and queues it. A large
    /// transfer goes to the kernel at once, on its own (see [`ALONE_FROM`]).
    fn queue(&mut self, slot: u32) -> Result<(), StorageError> {
        let op = self.ops[slot as usize].as_ref().expect("in flight");
        let sqe = self.sqe(op).user_data(slot as u64);
        let alone = op.len - op.done >= ALONE_FROM;
        if alone && self.queued > 0 {
            self.submit()?;
        }
        // SAFETY: the SQE points into the slab owned by the op (kept in self.ops until its
        // completion is reaped) and at a registered file slot.
        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
            // Submission queue full: hand it to the kernel and try once more.
            self.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(&sqe) }
                .map_err(|_| StorageError::QueueFull(self.ops.len()))?;
        }
        self.queued += 1;
        if alone {
            self.submit()?;
        }
        Ok(())
    }

    fn sqe(&self, op: &Op) -> squeue::Entry {
        let file = types::Fixed(op.file);
        match op.kind {
            IoKind::Fsync => opcode::Fsync::new(file).build(),
            IoKind::Fdatasync => opcode::Fsync::new(file)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            IoKind::Read | IoKind::Write => {
                let buf = op.buf.as_ref().expect("reads and writes carry a buffer");
                // SAFETY: done < len <= capacity, so the pointer stays inside the slab.
                let ptr = unsafe { buf.as_ptr().add(op.done) };
                let len = (op.len - op.done) as u32;
                let offset = op.offset + op.done as u64;
                let fixed = self.fixed.filter(|&(base, size)| {
                    (ptr as usize) >= base && (ptr as usize) + len as usize <= base + size
                });
                match (op.kind, fixed) {
                    (IoKind::Read, Some(_)) => opcode::ReadFixed::new(file, ptr, len, 0)
                        .offset(offset)
                        .build(),
                    (IoKind::Read, None) => {
                        opcode::Read::new(file, ptr, len).offset(offset).build()
                    }
                    (_, Some(_)) => opcode::WriteFixed::new(file, ptr, len, 0)
                        .offset(offset)
                        .build(),
                    (_, None) => opcode::Write::new(file, ptr, len).offset(offset).build(),
                }
            }
        }
    }

    fn submit(&mut self) -> Result<(), StorageError> {
        loop {
            match self.ring.submit() {
                Ok(_) => {
                    self.queued = 0;
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // The kernel is short of resources or the CQ is full: reap, then retry.
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        || e.raw_os_error() == Some(libc::EAGAIN) =>
                {
                    return Ok(());
                }
                Err(e) => return Err(StorageError::Ring(e)),
            }
        }
    }

    pub(crate) fn flush(&mut self) -> Result<(), StorageError> {
        if self.queued > 0 {
            self.submit()?;
        }
        Ok(())
    }

    pub(crate) fn reap(&mut self, out: &mut Vec<IoCompletion>) -> Result<usize, StorageError> {
        self.scratch.clear();
        self.scratch.extend(
            self.ring
                .completion()
                .map(|c: cqueue::Entry| (c.user_data(), c.result())),
        );
        let mut n = 0;
        for i in 0..self.scratch.len() {
            let (slot, res) = self.scratch[i];
            if let Some(done) = self.complete(slot as u32, res) {
                out.push(done);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Applies one CQE: finishes the op, or queues the rest of a short transfer, or
    /// retries after EINTR/EAGAIN. A retry that cannot be queued finishes the op with EIO
    /// (it is never lost).
    fn complete(&mut self, slot: u32, res: i32) -> Option<IoCompletion> {
        let op = self.ops[slot as usize].as_mut()?;
        let result = match (op.kind, res) {
            (_, r) if r == -libc::EINTR || r == -libc::EAGAIN => {
                return self.requeue(slot);
            }
            (_, r) if r < 0 => Err(-r),
            (IoKind::Fsync | IoKind::Fdatasync, _) => Ok(0),
            (IoKind::Read, 0) => Ok(op.done), // end of file
            (IoKind::Write, 0) => Err(libc::EIO),
            (kind, r) => {
                op.done += r as usize;
                // A short O_DIRECT read that stops off a block boundary stopped at the end
                // of the file: resuming there would be an unaligned read (EINVAL if the
                // file grew meanwhile). A short write is resumed (it stays aligned or is
                // the device's to finish).
                let eof = kind == IoKind::Read && !op.done.is_multiple_of(crate::storage::ALIGN);
                if op.done < op.len && !eof {
                    return self.requeue(slot);
                }
                Ok(op.done)
            }
        };
        Some(self.finish(slot, result))
    }

    fn requeue(&mut self, slot: u32) -> Option<IoCompletion> {
        match self.queue(slot) {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!("cannot resubmit the rest of an I/O: {e}");
                Some(self.finish(slot, Err(libc::EIO)))
            }
        }
    }

    fn finish(&mut self, slot: u32, result: Result<usize, i32>) -> IoCompletion {
        let op = self.ops[slot as usize].take().expect("in flight");
        self.free.push(slot);
        IoCompletion {
            user_data: op.user_data,
            kind: op.kind,
            result,
            buf: op.buf,
        }
    }

    /// Reaps what is done (and submits what is queued); if nothing is done, submits and
    /// waits for one completion in the same io_uring_enter.
    pub(crate) fn wait(&mut self, out: &mut Vec<IoCompletion>) -> Result<usize, StorageError> {
        loop {
            let n = self.reap(out)?;
            if n > 0 || self.in_flight() == 0 {
                self.flush()?;
                return Ok(n);
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => self.queued = 0,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(StorageError::Ring(e)),
            }
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.ops.len() - self.free.len()
    }
}

impl Drop for UringStorage {
    /// Lets the kernel finish what it was given before the ring and the buffers the
    /// operations own go away (bounded: a device that never answers is not waited for).
    fn drop(&mut self) {
        let start = std::time::Instant::now();
        let mut sink = Vec::new();
        while self.in_flight() > 0 && start.elapsed() < std::time::Duration::from_secs(10) {
            sink.clear();
            if self.wait(&mut sink).is_err() {
                break;
            }
        }
    }
}

/// Reads and writes of at least this many bytes are submitted one per io_uring_enter.
/// Several SQEs in one enter run under a block plug, which merges adjacent bios: a
/// stream of sequential 1 MiB writes reached the virtio disk as ~3.5 MiB requests, about
/// nine of them in flight instead of 32, and moved 3.3 GB/s where fio, submitting its
/// 1 MiB writes one or two at a time, moved 5.3. Devices serve independent requests in
/// parallel; a transfer this large gains nothing from merging. Smaller ones keep
/// sharing an enter (one syscall per turn for a batch of 4 KiB random reads).
const ALONE_FROM: usize = 256 << 10;

/// A ring for one thread: only this thread submits (SINGLE_ISSUER). Not COOP_TASKRUN:
/// it defers posting completions to the next system call, and a core that polls its
/// rings from user space (shm fabric, idle storage) may make none for a while. Kernels
/// older than 6.0 lack the flag; a plain ring is as correct there.
fn new_ring(entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .build(entries)
        .or_else(|_| IoUring::new(entries))
}
