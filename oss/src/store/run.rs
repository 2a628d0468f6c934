//! Stage 3 and 4 of an operation: the I/O it makes once its lock is held, and what each
//! storage completion does to it.

use nacre_engine::{FileId, IoCompletion, IoKind, PoolBuf, StorageError, ALIGN};

use super::chain::put;
use super::meta::{cut_to, punch_hole, set_stored_size};
use super::plan;
use super::{Io, IoReq, IoTag, ObjectStore, Req, WriteMode, CLASS_DATA, CLASS_EDGE, CLASS_SYNC};
use crate::Errno;

impl ObjectStore {
    /// Stage 3: the lock is held; issue the I/O (or do the metadata call).
    pub(super) fn start(&mut self, io: &mut Io<'_>, id: u32) {
        let Some(op) = self.ops.get(&id) else {
            return;
        };
        let changes = !matches!(op.req, Req::Read { .. } | Req::Sync { .. });
        if changes && self.fenced() {
            // Admitted under a lease that has lapsed since: nothing of it may land.
            return self.finish_with(Some(io.pool), id, Err(Errno::ESTALE));
        }
        let Some(op) = self.ops.get_mut(&id) else {
            return;
        };
        let Some(o) = self.objects.get_mut(&op.obj) else {
            return self.finish_with(Some(io.pool), id, Err(Errno::ENOENT));
        };
        let file = o.file;
        match &mut op.req {
            Req::Write { plan, .. } => {
                op.write_active = true;
                o.writes_active += 1;
                for (i, e) in plan.edges.iter().enumerate() {
                    let scratch = op.scratch[i].take().expect("taken in stage 1");
                    if e.block < o.size {
                        op.in_flight += 1;
                        self.submit_q.push_back(IoReq {
                            kind: IoKind::Read,
                            file,
                            buf: Some(scratch),
                            len: ALIGN,
                            offset: e.block,
                            tag: IoTag::new(self.cfg.id, id, CLASS_EDGE, i),
                        });
                    } else {
                        // Past the end: the old bytes are zeros, no need to read them.
                        let buf = op.bufs[e.buf].as_mut().expect("ours");
                        for r in &e.keep {
                            buf.bytes_mut()[e.pos + r.start..e.pos + r.end].fill(0);
                        }
                        put(io.pool, scratch);
                    }
                }
                if op.in_flight == 0 {
                    self.submit_pieces(io, id);
                }
            }
            Req::Read { offset, len, n } => {
                *n = o.size.saturating_sub(*offset).min(*len as u64) as usize;
                if *n == 0 {
                    return self.finish_with(Some(io.pool), id, Ok(0));
                }
                let caps: Vec<usize> = op.bufs.iter().flatten().map(PoolBuf::capacity).collect();
                let plan = plan::plan(*offset, *n, &caps).expect("slabs sized for len");
                for b in op.bufs.drain(plan.pieces.len()..).flatten() {
                    put(io.pool, b);
                }
                for p in plan.pieces {
                    op.in_flight += 1;
                    self.submit_q.push_back(IoReq {
                        kind: IoKind::Read,
                        file,
                        buf: op.bufs[p.buf].take(),
                        len: p.len,
                        offset: p.file_off,
                        tag: IoTag::new(self.cfg.id, id, CLASS_DATA, p.buf),
                    });
                }
            }
            Req::Punch { offset, len } => {
                let end = offset.saturating_add(*len).min(o.size);
                let r = if *offset < end {
                    punch_hole(io.storage, file, *offset, end - *offset)
                } else {
                    Ok(())
                };
                self.finish_with(Some(io.pool), id, r.map(|()| 0));
            }
            Req::Truncate { size } => {
                let r = cut_to(io.storage, file, *size)
                    .and_then(|()| set_stored_size(io.storage, file, *size));
                if r.is_ok() {
                    o.size = *size;
                    o.meta_dirty = true;
                }
                self.finish_with(Some(io.pool), id, r.map(|()| 0));
            }
            Req::Destroy => {
                let r = self.destroy_now(io, id);
                self.finish_with(Some(io.pool), id, r.map(|()| 0));
            }
            Req::Sync { datasync } => {
                // fdatasync does not cover the size xattr: fsync when it changed.
                let datasync = *datasync && !o.meta_dirty;
                o.meta_dirty = false;
                self.submit_sync(id, file, datasync);
            }
        }
    }

    fn submit_pieces(&mut self, io: &mut Io<'_>, id: u32) {
        if self.fenced() {
            // The lease lapsed while the edge blocks were read.
            return self.finish_with(Some(io.pool), id, Err(Errno::ESTALE));
        }
        let op = self.ops.get_mut(&id).expect("live");
        let o = self.objects.get_mut(&op.obj).expect("referenced");
        let Req::Write { plan, .. } = &op.req else {
            unreachable!("only writes have pieces")
        };
        for p in &plan.pieces {
            if p.file_off + p.len as u64 > o.size {
                op.extends = true;
            }
            op.in_flight += 1;
            self.submit_q.push_back(IoReq {
                kind: IoKind::Write,
                file: o.file,
                buf: op.bufs[p.buf].take(),
                len: p.len,
                offset: p.file_off,
                tag: IoTag::new(self.cfg.id, id, CLASS_DATA, p.buf),
            });
        }
        if op.in_flight == 0 {
            // A zero-length write: nothing to move.
            self.write_done(io, id);
        }
    }

    fn submit_sync(&mut self, id: u32, file: FileId, datasync: bool) {
        let op = self.ops.get_mut(&id).expect("live");
        op.in_flight += 1;
        self.submit_q.push_back(IoReq {
            kind: if datasync {
                IoKind::Fdatasync
            } else {
                IoKind::Fsync
            },
            file,
            buf: None,
            len: 0,
            offset: 0,
            tag: IoTag::new(self.cfg.id, id, CLASS_SYNC, 0),
        });
    }

    /// Hands queued storage operations over until the Storage's queue is full.
    pub(super) fn drain_submits(&mut self, io: &mut Io<'_>) -> bool {
        let mut moved = false;
        while let Some(r) = self.submit_q.pop_front() {
            let user_data = match r.tag.encode() {
                Ok(user_data) => user_data,
                Err(e) => {
                    // Store ids are checked at open and pieces are bounded by the
                    // request size: a bug, refused loudly, and the operation fails.
                    tracing::error!("object I/O not submitted: {e}");
                    self.fail_io(io, r.tag, r.kind, r.buf);
                    moved = true;
                    continue;
                }
            };
            let res = match r.kind {
                IoKind::Read | IoKind::Write => {
                    let buf = r.buf.expect("data ops carry a slab");
                    let res = if r.kind == IoKind::Read {
                        io.storage.read(r.file, buf, r.len, r.offset, user_data)
                    } else {
                        io.storage.write(r.file, buf, r.len, r.offset, user_data)
                    };
                    res.map_err(|(e, b)| (e, Some(b)))
                }
                IoKind::Fsync | IoKind::Fdatasync => io
                    .storage
                    .sync_file(r.file, r.kind == IoKind::Fdatasync, user_data)
                    .map_err(|e| (e, None)),
            };
            match res {
                Ok(()) => moved = true,
                Err((StorageError::QueueFull(_), buf)) => {
                    self.submit_q.push_front(IoReq { buf, ..r });
                    break;
                }
                Err((e, buf)) => {
                    tracing::error!("storage refused an object I/O: {e}");
                    self.fail_io(io, r.tag, r.kind, buf);
                    moved = true;
                }
            }
        }
        moved
    }

    /// An I/O that never reached the storage completes with EIO.
    fn fail_io(&mut self, io: &mut Io<'_>, tag: IoTag, kind: IoKind, buf: Option<PoolBuf>) {
        let c = IoCompletion {
            user_data: tag.encode().unwrap_or(0),
            kind,
            result: Err(libc::EIO),
            buf,
        };
        self.complete_tagged(io, tag, c);
    }

    /// A storage completion: routed by its user_data. One that is no tag of ours (a
    /// bug: the core routes only tagged completions here) is logged and its buffer
    /// goes back to the pool.
    pub(super) fn complete_io(&mut self, io: &mut Io<'_>, c: IoCompletion) {
        match IoTag::decode(c.user_data) {
            Ok(tag) => self.complete_tagged(io, tag, c),
            Err(e) => {
                tracing::error!("storage completion with a bad tag: {e}");
                if let Some(b) = c.buf {
                    put(io.pool, b);
                }
            }
        }
    }

    fn complete_tagged(&mut self, io: &mut Io<'_>, tag: IoTag, c: IoCompletion) {
        let IoTag {
            op: id,
            class,
            piece,
            ..
        } = tag;
        let Some(op) = self.ops.get_mut(&id) else {
            tracing::error!("storage completion for unknown object op {id}");
            if let Some(b) = c.buf {
                put(io.pool, b);
            }
            return;
        };
        op.in_flight -= 1;
        if let Err(e) = c.result {
            op.error.get_or_insert(Errno(e));
        }
        match class {
            CLASS_EDGE => self.edge_read_done(io, id, piece, c),
            CLASS_DATA => {
                let op = self.ops.get_mut(&id).expect("live");
                let mut buf = c.buf.expect("data ops carry a slab");
                if let (Req::Read { .. }, Ok(got)) = (&op.req, c.result) {
                    // Past the file's end (never inside the logical size, which the file
                    // always covers) a read stops short: whatever is there reads as zero.
                    buf.bytes_mut()[got..].fill(0);
                }
                op.bufs[piece] = Some(buf);
                if op.in_flight == 0 {
                    match op.req {
                        Req::Write { .. } => self.write_done(io, id),
                        Req::Read { n, .. } => self.finish_with(Some(io.pool), id, Ok(n)),
                        _ => unreachable!("only reads and writes move data"),
                    }
                }
            }
            _ => {
                // A sync: of its own, or the one ending a WriteMode::Sync write.
                if c.result.is_err() {
                    let op = &self.ops[&id];
                    if let Some(o) = self.objects.get_mut(&op.obj) {
                        o.meta_dirty = true;
                    }
                }
                let n = match self.ops[&id].req {
                    Req::Write { len, .. } => len,
                    _ => 0,
                };
                self.finish_with(Some(io.pool), id, Ok(n))
            }
        }
    }

    /// An edge block's old contents arrived: merge the bytes the write keeps.
    fn edge_read_done(&mut self, io: &mut Io<'_>, id: u32, i: usize, c: IoCompletion) {
        let op = self.ops.get_mut(&id).expect("live");
        let mut scratch = c.buf.expect("edge reads carry a slab");
        let Req::Write { plan, .. } = &op.req else {
            unreachable!("only writes read edges")
        };
        let e = &plan.edges[i];
        if let Ok(got) = c.result {
            let size = self.objects.get(&op.obj).map_or(0, |o| o.size);
            // Bytes past the logical end are zeros whatever the file holds there.
            let valid = (size.saturating_sub(e.block) as usize).min(got);
            let old = scratch.bytes_mut();
            old[valid..].fill(0);
            let buf = op.bufs[e.buf].as_mut().expect("ours").bytes_mut();
            for r in &e.keep {
                buf[e.pos + r.start..e.pos + r.end].copy_from_slice(&old[r.clone()]);
            }
        }
        put(io.pool, scratch);
        if op.in_flight == 0 {
            match op.error {
                Some(e) => self.finish_with(Some(io.pool), id, Err(e)),
                None => self.submit_pieces(io, id),
            }
        }
    }

    /// Every slab of a write is on disk (or failed).
    fn write_done(&mut self, io: &mut Io<'_>, id: u32) {
        let op = self.ops.get_mut(&id).expect("live");
        let Req::Write {
            offset, len, mode, ..
        } = op.req
        else {
            unreachable!("a write")
        };
        let o = self.objects.get_mut(&op.obj).expect("referenced");
        if let Some(e) = op.error {
            o.size_dirty |= op.extends;
            return self.finish_with(Some(io.pool), id, Err(e));
        }
        let end = offset + len as u64;
        if end > o.size {
            // Completions are applied in order on this core: the stored size only grows.
            if let Err(e) = set_stored_size(io.storage, o.file, end) {
                o.size_dirty = true;
                return self.finish_with(Some(io.pool), id, Err(e));
            }
            o.size = end;
            o.meta_dirty = true;
        }
        if mode == WriteMode::Async {
            return self.finish_with(Some(io.pool), id, Ok(len));
        }
        let datasync = !o.meta_dirty;
        o.meta_dirty = false;
        let file = o.file;
        self.submit_sync(id, file, datasync);
    }
}
