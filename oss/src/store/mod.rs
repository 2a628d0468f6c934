//! The per-core object store: object operations as a non-blocking state machine over the
//! core's `Storage` and `BufferPool`.
//!
//! Requests are queued by `write`/`read`/... (which return at once) and driven by
//! [`ObjectStore::progress`] (once per loop turn) and [`ObjectStore::on_io`] (for every
//! storage completion whose user_data carries [`IO_TAG`]); finished operations are taken
//! with [`ObjectStore::reap`]. An operation goes through:
//!
//! 1. buffers: slabs for a read, a 4 KiB scratch slab per partial edge block of a write;
//!    an empty pool leaves it waiting (back-pressure). Buffers are taken before any lock,
//!    so that no lock is ever held while waiting for memory.
//! 2. open: the object's file (created by writes), from a bounded table of open objects.
//! 3. lock: a block-range lock in the object's table, granted in arrival order.
//! 4. I/O: edge reads, then one O_DIRECT write per slab from the slab's start; reads one
//!    per slab; syncs through the ring. Open, close, unlink, fstat, ftruncate (truncate),
//!    fallocate (punch) and fsetxattr (the logical size, once per size-extending write)
//!    are metadata calls made synchronously on the core: they are off the per-byte path.

mod chain;
mod meta;
pub mod plan;
mod run;
mod types;

pub use chain::{gather, scatter, slabs_for};
use chain::{largest_slab, put, take_slabs};
pub use meta::SIZE_XATTR;
use meta::{cut_to, stored_size, stored_size_at};

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use nacre_engine::ALIGN;
use nacre_engine::{BufferPool, FileId, IoCompletion, IoKind, PoolBuf, Storage, StorageError};
use nacre_proto::object::{ListedObject, ObjectAttr, OstStatfs};
use nacre_proto::packed::{io_tag, PackError};

use crate::layout::{self, ObjectId};
use crate::rangelock::{LockId, Mode, RangeLocks};
use crate::superblock::{self, Superblock, TargetError};
use crate::Errno;
use nacre_mgs::role::ServingEpoch;
use plan::{Plan, BLOCK};
pub use types::{Io, ObjectCompletion, OpKind, StoreConfig, TargetHealth, WriteMode};

/// Set in the user_data of every storage operation the store submits; the core hands
/// those completions to [`ObjectStore::on_io`] and keeps the bit clear in its own.
pub const IO_TAG: u64 = io_tag::OWNER.mask();

const CLASS_EDGE: u64 = 0;
const CLASS_DATA: u64 = 1;
const CLASS_SYNC: u64 = 2;

/// The user_data of a storage operation, through [`nacre_proto::packed::io_tag`]: the
/// store's id (so a core with several stores routes the completion, see
/// [`ObjectStore::store_of`]), the piece's class, the piece and the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IoTag {
    store: u8,
    op: u32,
    class: u64,
    piece: usize,
}

impl IoTag {
    fn new(store: u8, op: u32, class: u64, piece: usize) -> IoTag {
        IoTag {
            store,
            op,
            class,
            piece,
        }
    }

    /// The tag as user_data; a field that does not fit is an error, never masked.
    #[inline]
    fn encode(self) -> Result<u64, PackError> {
        let IoTag {
            store,
            op,
            class,
            piece,
        } = self;
        io_tag::TAG.pack([store.into(), class, piece as u64, op.into()])
    }

    /// The tag in `user_data`; one that is not a store's tag, or of an unknown class,
    /// is an error.
    #[inline]
    fn decode(user_data: u64) -> Result<IoTag, PackError> {
        let [store, class, piece, op] = io_tag::TAG.unpack(user_data)?;
        if !matches!(class, CLASS_EDGE | CLASS_DATA | CLASS_SYNC) {
            return Err(PackError::UnknownKind {
                scheme: io_tag::SCHEME,
                word: user_data,
                kind: class,
            });
        }
        // Each field is no wider than its type here, so the casts keep all.
        Ok(IoTag {
            store: store as u8,
            op: op as u32,
            class,
            piece: piece as usize,
        })
    }
}

/// An open object.
struct Obj {
    file: FileId,
    /// Logical size, kept in the file's `user.nacre.size` xattr. The file itself ends
    /// on the block boundary after it (O_DIRECT writes whole blocks).
    size: u64,
    /// A failed write may have left blocks past `size`: trim when no write is active.
    size_dirty: bool,
    /// The size xattr changed since the last fsync (fdatasync does not cover it).
    meta_dirty: bool,
    writes_active: usize,
    /// Operations between open and completion: a referenced object is never closed.
    refs: usize,
    locks: RangeLocks,
    lock_ops: HashMap<LockId, u32>,
    last_used: u64,
}

enum Req {
    Write {
        offset: u64,
        len: usize,
        mode: WriteMode,
        plan: Plan,
        inline: Option<Vec<u8>>,
    },
    Read {
        offset: u64,
        len: usize,
        n: usize,
    },
    Punch {
        offset: u64,
        len: u64,
    },
    Truncate {
        size: u64,
    },
    Destroy,
    Sync {
        datasync: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Buffers,
    Open,
    Locked,
}

struct Op {
    tag: u64,
    obj: ObjectId,
    req: Req,
    stage: Stage,
    bufs: Vec<Option<PoolBuf>>,
    scratch: Vec<Option<PoolBuf>>,
    lock: Option<LockId>,
    /// Holds a reference on the open object (and a lock request in its table).
    referenced: bool,
    write_active: bool,
    /// Issued whole blocks past the object's size (a failure leaves them to trim).
    extends: bool,
    in_flight: usize,
    error: Option<Errno>,
}

impl Op {
    fn kind(&self) -> OpKind {
        match self.req {
            Req::Write { .. } => OpKind::Write,
            Req::Read { .. } => OpKind::Read,
            Req::Punch { .. } => OpKind::Punch,
            Req::Truncate { .. } => OpKind::Truncate,
            Req::Destroy => OpKind::Destroy,
            Req::Sync { .. } => OpKind::Sync,
        }
    }
}

/// A storage operation waiting for room in the Storage queue.
struct IoReq {
    kind: IoKind,
    file: FileId,
    buf: Option<PoolBuf>,
    len: usize,
    offset: u64,
    tag: IoTag,
}

enum Advance {
    Wait,
    Moved,
}

/// One core's object store over one target.
pub struct ObjectStore {
    root: PathBuf,
    sb: Superblock,
    cfg: StoreConfig,
    objects: HashMap<ObjectId, Obj>,
    ops: HashMap<u32, Op>,
    next_op: u32,
    /// Ops waiting for buffers or an open-file slot, in arrival order.
    waiting: VecDeque<u32>,
    /// Ops whose lock was granted, to start.
    granted: VecDeque<u32>,
    submit_q: VecDeque<IoReq>,
    done: Vec<ObjectCompletion>,
    state: TargetHealth,
    clock: u64,
    /// Objects whose last active write just ended: trim their size next turn.
    fixups: Vec<ObjectId>,
    /// The role this target is served under: a change (write, punch, truncate,
    /// destroy) whose turn comes after the lease lapsed is refused, ESTALE.
    fence: Option<ServingEpoch>,
}

impl ObjectStore {
    /// Opens the target at `root` (reads and checks its superblock).
    /// A `cfg.id` that the tag of its storage operations cannot carry is refused.
    pub fn open(root: &Path, cfg: StoreConfig) -> Result<ObjectStore, TargetError> {
        if u64::from(cfg.id) > io_tag::TAG.fields()[0].max() {
            return Err(TargetError::BadName {
                what: "store id",
                value: cfg.id.to_string(),
                why: "a core's store ids are 0..=127 (they travel in 7 bits of a storage tag)",
            });
        }
        let sb = superblock::read(root)?;
        Ok(ObjectStore {
            root: root.to_path_buf(),
            sb,
            cfg,
            objects: HashMap::new(),
            ops: HashMap::new(),
            next_op: 0,
            waiting: VecDeque::new(),
            granted: VecDeque::new(),
            submit_q: VecDeque::new(),
            done: Vec::new(),
            state: TargetHealth::Healthy,
            clock: 0,
            fixups: Vec::new(),
            fence: None,
        })
    }

    /// Checks every change against `serving` right before its I/O: an operation that
    /// waited (for slabs, an open-file slot, a lock) past the role's lease, or past a
    /// fence, fails with ESTALE and not one of its bytes reaches the disk. A stale owner
    /// resumed after a stop therefore writes nothing once a new owner may serve.
    pub fn set_fence(&mut self, serving: ServingEpoch) {
        self.fence = Some(serving);
    }

    /// Whether changes may no longer reach the disk (the role's lease lapsed or moved).
    fn fenced(&self) -> bool {
        self.fence.as_ref().is_some_and(|f| f.get() == 0)
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn state(&self) -> TargetHealth {
        self.state
    }

    /// Whether `user_data` of a storage completion belongs to a store.
    pub fn owns(user_data: u64) -> bool {
        user_data & IO_TAG != 0
    }

    /// This store's `StoreConfig::id`.
    pub fn id(&self) -> u8 {
        self.cfg.id
    }

    /// Which store (its `StoreConfig::id`) a storage completion belongs to, or why its
    /// user_data is no store's tag.
    pub fn store_of(user_data: u64) -> Result<u8, PackError> {
        IoTag::decode(user_data).map(|t| t.store)
    }

    /// Operations not yet reaped.
    pub fn pending(&self) -> usize {
        self.ops.len() + self.done.len()
    }

    /// Writes `len` bytes at `offset` from `bufs`, slabs the bulk pull filled: the first
    /// byte sits at `offset % ALIGN` in `bufs[0]` and the data runs on through the slabs
    /// in order (so every slab starts at a block-aligned object offset and goes to disk
    /// from its own memory). The bytes of `bufs[0]` before that point and of the last
    /// slab after the data are overwritten (edge merge). The slabs come back in the
    /// completion.
    pub fn write(
        &mut self,
        obj: ObjectId,
        offset: u64,
        len: usize,
        bufs: Vec<PoolBuf>,
        mode: WriteMode,
        tag: u64,
    ) {
        let caps: Vec<usize> = bufs.iter().map(PoolBuf::capacity).collect();
        let plan = plan::plan(offset, len, &caps);
        let bufs = bufs.into_iter().map(Some).collect();
        let bad = self
            .check(obj, len)
            .or(plan.is_none().then_some(Errno::EINVAL));
        let req = Req::Write {
            offset,
            len,
            mode,
            plan: plan.unwrap_or_default(),
            inline: None,
        };
        self.queue(tag, obj, req, bufs, bad);
    }

    /// Writes a small payload held in memory: copied once into slabs (now if the pool
    /// has them, else once slabs are free).
    pub fn write_inline(
        &mut self,
        pool: &mut BufferPool,
        obj: ObjectId,
        offset: u64,
        data: &[u8],
        mode: WriteMode,
        tag: u64,
    ) {
        let head = (offset % BLOCK) as usize;
        let sizes = plan::slab_sizes(head + data.len(), largest_slab(pool));
        if let Some(mut bufs) = take_slabs(pool, &sizes) {
            scatter(&mut bufs, head, data);
            return self.write(obj, offset, data.len(), bufs, mode, tag);
        }
        let caps = sizes.clone();
        let plan = plan::plan(offset, data.len(), &caps);
        let bad = self
            .check(obj, data.len())
            .or(plan.is_none().then_some(Errno::EINVAL));
        let req = Req::Write {
            offset,
            len: data.len(),
            mode,
            plan: plan.unwrap_or_default(),
            inline: Some(data.to_vec()),
        };
        self.queue(tag, obj, req, Vec::new(), bad);
    }

    /// Reads `len` bytes at `offset`; the data comes back in slabs (see
    /// [`ObjectCompletion`]). Holes read as zeros; a read past the end is short.
    pub fn read(&mut self, obj: ObjectId, offset: u64, len: usize, tag: u64) {
        let bad = self.check(obj, len).or(offset
            .checked_add(len as u64)
            .is_none()
            .then_some(Errno::EINVAL));
        self.queue(tag, obj, Req::Read { offset, len, n: 0 }, Vec::new(), bad);
    }

    /// Zeroes `len` bytes at `offset` (deallocating whole blocks); the size is unchanged.
    pub fn punch(&mut self, obj: ObjectId, offset: u64, len: u64, tag: u64) {
        let bad = self
            .check(obj, 0)
            .or(offset.checked_add(len).is_none().then_some(Errno::EINVAL));
        self.queue(tag, obj, Req::Punch { offset, len }, Vec::new(), bad);
    }

    /// Sets the object's size (cutting or extending with a hole).
    pub fn truncate(&mut self, obj: ObjectId, size: u64, tag: u64) {
        let bad = self.check(obj, 0);
        self.queue(tag, obj, Req::Truncate { size }, Vec::new(), bad);
    }

    /// Removes the object. Operations on it queued behind the destroy fail with ENOENT.
    pub fn destroy(&mut self, obj: ObjectId, tag: u64) {
        let bad = self.check(obj, 0);
        self.queue(tag, obj, Req::Destroy, Vec::new(), bad);
    }

    /// Makes every write to the object requested before this call durable, with its
    /// size (`datasync`: fdatasync, else fsync).
    pub fn sync(&mut self, obj: ObjectId, datasync: bool, tag: u64) {
        let bad = self.check(obj, 0);
        self.queue(tag, obj, Req::Sync { datasync }, Vec::new(), bad);
    }

    /// Size, allocation and modification time (a metadata call).
    pub fn getattr(&self, obj: ObjectId) -> Result<ObjectAttr, Errno> {
        if obj == 0 {
            return Err(Errno::ENOENT);
        }
        let md = std::fs::metadata(layout::object_path(&self.root, obj))
            .map_err(|e| Errno::from_io(&e))?;
        use std::os::unix::fs::MetadataExt;
        Ok(ObjectAttr {
            size: match self.objects.get(&obj) {
                Some(o) => o.size,
                None => stored_size_at(&layout::object_path(&self.root, obj), md.len())?,
            },
            blocks: md.blocks(),
            mtime_ns: mtime_ns(&md),
        })
    }

    /// The objects of hashed directory `dir` with ids above `after`, in id order, at
    /// most `max`, with whether none follow (a metadata call: it reads the directory
    /// and each listed object's size; the consistency checker walks targets with it, a
    /// page at a time). Objects destroyed meanwhile are left out.
    pub fn list(
        &self,
        dir: u8,
        after: ObjectId,
        max: usize,
    ) -> Result<(Vec<ListedObject>, bool), Errno> {
        let path = self
            .root
            .join(layout::OBJECTS_DIR)
            .join(format!("{dir:02x}"));
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&path).map_err(|e| Errno::from_io(&e))? {
            let entry = entry.map_err(|e| Errno::from_io(&e))?;
            let name = entry.file_name();
            // Only object files: 16 hex digits of an id that hashes to this directory.
            let id = name
                .to_str()
                .filter(|n| n.len() == 16)
                .and_then(|n| u64::from_str_radix(n, 16).ok());
            if let Some(id) = id.filter(|&id| id > after && layout::bucket(id) == dir) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let eof = ids.len() <= max;
        let mut out = Vec::with_capacity(ids.len().min(max));
        for oid in ids.into_iter().take(max) {
            match self.getattr(oid) {
                Ok(a) => out.push(ListedObject { oid, size: a.size }),
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((out, eof))
    }

    /// Capacity and free space of the file system under the target (a metadata call).
    pub fn statfs(&self) -> Result<OstStatfs, Errno> {
        let s = rustix::fs::statvfs(&self.root).map_err(|e| Errno(e.raw_os_error()))?;
        let unit = s.f_frsize;
        Ok(OstStatfs {
            bytes_total: s.f_blocks * unit,
            bytes_free: s.f_bfree * unit,
            bytes_avail: s.f_bavail * unit,
            objects_total: s.f_files,
            objects_free: s.f_ffree,
        })
    }

    /// Moves finished operations into `out`; returns how many.
    pub fn reap(&mut self, out: &mut Vec<ObjectCompletion>) -> usize {
        let n = self.done.len();
        out.append(&mut self.done);
        n
    }

    /// Advances waiting operations (free slabs, free file slots, granted locks) and
    /// hands queued I/O to the Storage. Call once per loop turn; returns whether anything
    /// moved.
    pub fn progress(&mut self, io: &mut Io<'_>) -> bool {
        let mut moved = false;
        // Trims first: a write that failed for space gives its blocks back before the
        // next one is tried.
        self.run_fixups(io.storage);
        loop {
            let mut turn = false;
            for _ in 0..self.waiting.len() {
                let id = self.waiting.pop_front().expect("counted");
                match self.advance(io, id) {
                    Advance::Wait => self.waiting.push_back(id),
                    Advance::Moved => turn = true,
                }
            }
            while let Some(id) = self.granted.pop_front() {
                self.start(io, id);
                turn = true;
            }
            turn |= self.drain_submits(io);
            self.run_fixups(io.storage);
            if !turn {
                return moved;
            }
            moved = true;
        }
    }

    /// Takes a storage completion whose user_data has [`IO_TAG`] set.
    pub fn on_io(&mut self, io: &mut Io<'_>, c: IoCompletion) {
        self.complete_io(io, c);
        self.progress(io);
    }

    /// Blocking helper for tools and tests (the engine polls instead): drives the store
    /// until at least one operation finished or nothing can move; returns the number
    /// reaped into `out`.
    pub fn wait(
        &mut self,
        io: &mut Io<'_>,
        out: &mut Vec<ObjectCompletion>,
    ) -> Result<usize, StorageError> {
        let mut ios = Vec::new();
        loop {
            self.progress(io);
            io.storage.flush()?;
            if !self.done.is_empty() {
                return Ok(self.reap(out));
            }
            if io.storage.in_flight() == 0 && self.submit_q.is_empty() {
                return Ok(0);
            }
            ios.clear();
            io.storage.wait(&mut ios)?;
            for c in ios.drain(..) {
                if Self::owns(c.user_data) {
                    self.complete_io(io, c);
                }
            }
        }
    }

    /// Closes every object no operation uses (before the Storage goes away).
    pub fn close_idle(&mut self, storage: &mut Storage) {
        let idle: Vec<ObjectId> = self
            .objects
            .iter()
            .filter(|(_, o)| o.refs == 0)
            .map(|(&id, _)| id)
            .collect();
        for id in idle {
            self.close_obj(storage, id);
        }
    }

    /// Trims objects whose last active write ended (ftruncate to the logical size).
    fn run_fixups(&mut self, storage: &Storage) {
        for id in std::mem::take(&mut self.fixups) {
            let Some(o) = self.objects.get_mut(&id) else {
                continue;
            };
            if o.writes_active == 0 && o.size_dirty {
                if let Err(e) = fix_size(storage, o) {
                    self.note_error(e);
                }
            }
        }
    }

    fn check(&self, obj: ObjectId, len: usize) -> Option<Errno> {
        if self.ops.len() >= self.cfg.max_ops {
            Some(Errno(libc::EAGAIN))
        } else if obj == 0 {
            Some(Errno::ENOENT)
        } else if len > self.cfg.max_request {
            Some(Errno::EINVAL)
        } else {
            None
        }
    }

    fn queue(
        &mut self,
        tag: u64,
        obj: ObjectId,
        req: Req,
        bufs: Vec<Option<PoolBuf>>,
        bad: Option<Errno>,
    ) {
        let id = self.new_op_id();
        let stage = match req {
            Req::Write { .. } | Req::Read { .. } => Stage::Buffers,
            _ => Stage::Open,
        };
        self.ops.insert(
            id,
            Op {
                tag,
                obj,
                req,
                stage,
                bufs,
                scratch: Vec::new(),
                lock: None,
                referenced: false,
                write_active: false,
                extends: false,
                in_flight: 0,
                error: None,
            },
        );
        match bad {
            Some(e) => self.finish_with(None, id, Err(e)),
            None => self.waiting.push_back(id),
        }
    }

    fn new_op_id(&mut self) -> u32 {
        loop {
            let id = self.next_op;
            self.next_op = self.next_op.wrapping_add(1);
            if !self.ops.contains_key(&id) {
                return id;
            }
        }
    }

    /// Stages 1 and 2: buffers, then the open object and the lock request.
    fn advance(&mut self, io: &mut Io<'_>, id: u32) -> Advance {
        if self.ops[&id].stage == Stage::Buffers {
            match self.take_buffers(io.pool, id) {
                Ok(true) => self.ops.get_mut(&id).expect("live").stage = Stage::Open,
                Ok(false) => return Advance::Wait,
                Err(e) => {
                    self.finish_with(Some(io.pool), id, Err(e));
                    return Advance::Moved;
                }
            }
        }
        let op = &self.ops[&id];
        let (obj, create) = (op.obj, matches!(op.req, Req::Write { .. }));
        if create && self.fenced() {
            // Not even an empty object file for a write the lapsed lease refuses.
            self.finish_with(Some(io.pool), id, Err(Errno::ESTALE));
            return Advance::Moved;
        }
        match self.open_obj(io.storage, obj, create) {
            Ok(true) => {}
            Ok(false) => return Advance::Wait,
            Err(e) => {
                self.finish_with(Some(io.pool), id, Err(e));
                return Advance::Moved;
            }
        }
        self.request_lock(id);
        Advance::Moved
    }

    /// Ok(false): the pool is short right now.
    fn take_buffers(&mut self, pool: &mut BufferPool, id: u32) -> Result<bool, Errno> {
        let slab = largest_slab(pool);
        let op = self.ops.get_mut(&id).expect("live");
        match &mut op.req {
            Req::Write {
                offset,
                inline,
                plan,
                ..
            } => {
                if let Some(data) = inline {
                    let head = (*offset % BLOCK) as usize;
                    let sizes = plan::slab_sizes(head + data.len(), slab);
                    let Some(mut bufs) = take_slabs(pool, &sizes) else {
                        return Ok(false);
                    };
                    scatter(&mut bufs, head, data);
                    op.bufs = bufs.into_iter().map(Some).collect();
                    *inline = None;
                }
                let sizes = vec![ALIGN; plan.edges.len()];
                let Some(scratch) = take_slabs(pool, &sizes) else {
                    return Ok(false);
                };
                op.scratch = scratch.into_iter().map(Some).collect();
            }
            Req::Read { offset, len, .. } => {
                let head = (*offset % BLOCK) as usize;
                let sizes = plan::slab_sizes(head + *len, slab);
                let full = sizes.iter().filter(|&&s| s == slab).count();
                let total = pool.usage().iter().find(|u| u.0 == slab).map_or(0, |u| u.2);
                if full > total {
                    return Err(Errno::EINVAL);
                }
                let Some(bufs) = take_slabs(pool, &sizes) else {
                    return Ok(false);
                };
                op.bufs = bufs.into_iter().map(Some).collect();
            }
            _ => {}
        }
        Ok(true)
    }

    /// Ok(false): no file slot free right now.
    fn open_obj(
        &mut self,
        storage: &mut Storage,
        id: ObjectId,
        create: bool,
    ) -> Result<bool, Errno> {
        self.clock += 1;
        if let Some(o) = self.objects.get_mut(&id) {
            o.last_used = self.clock;
            return Ok(true);
        }
        if self.objects.len() >= self.cfg.max_open && !self.evict_one(storage) {
            return Ok(false);
        }
        let path = layout::object_path(&self.root, id);
        let file = match storage.open(&path, create) {
            Ok(f) => f,
            Err(StorageError::TooManyFiles(_)) => {
                // Slots taken by the core's other files: make room, retry next turn.
                self.evict_one(storage);
                return Ok(false);
            }
            Err(StorageError::Open { source, .. }) => return Err(Errno::from_io(&source)),
            Err(e) => {
                tracing::warn!("opening object {id:#x}: {e}");
                return Err(Errno::EIO);
            }
        };
        let size = match storage.file(file).map(|f| (f, f.metadata())) {
            Some((f, Ok(md))) => match stored_size(f, md.len()) {
                Ok(size) => size,
                Err(e) => {
                    let _ = storage.close(file);
                    return Err(e);
                }
            },
            Some((_, Err(e))) => {
                let _ = storage.close(file);
                return Err(Errno::from_io(&e));
            }
            None => return Err(Errno::EIO),
        };
        self.objects.insert(
            id,
            Obj {
                file,
                size,
                size_dirty: false,
                meta_dirty: false,
                writes_active: 0,
                refs: 0,
                locks: RangeLocks::new(),
                lock_ops: HashMap::new(),
                last_used: self.clock,
            },
        );
        Ok(true)
    }

    /// Closes the least recently used object that no operation references.
    fn evict_one(&mut self, storage: &mut Storage) -> bool {
        let victim = self
            .objects
            .iter()
            .filter(|(_, o)| o.refs == 0)
            .min_by_key(|(_, o)| o.last_used)
            .map(|(&id, _)| id);
        match victim {
            Some(id) => {
                self.close_obj(storage, id);
                true
            }
            None => false,
        }
    }

    fn close_obj(&mut self, storage: &mut Storage, id: ObjectId) {
        if let Some(mut o) = self.objects.remove(&id) {
            if o.size_dirty {
                if let Err(e) = fix_size(storage, &mut o) {
                    self.note_error(e);
                }
            }
            if let Err(e) = storage.close(o.file) {
                tracing::warn!("closing object {id:#x}: {e}");
            }
        }
    }

    fn request_lock(&mut self, id: u32) {
        let op = self.ops.get_mut(&id).expect("live");
        let o = self.objects.get_mut(&op.obj).expect("opened");
        let all = 0..u64::MAX;
        let (range, mode) = match &op.req {
            Req::Write { plan, .. } => (plan.blocks.clone(), Mode::Exclusive),
            Req::Read { offset, len, .. } => (block_range(*offset, *len as u64), Mode::Shared),
            Req::Punch { offset, len } => (block_range(*offset, *len), Mode::Exclusive),
            Req::Truncate { size } => ((*size).min(o.size) / BLOCK..u64::MAX, Mode::Exclusive),
            Req::Destroy => (all, Mode::Exclusive),
            Req::Sync { .. } => (all, Mode::Shared),
        };
        let (lock, granted) = o.locks.request(range, mode);
        o.lock_ops.insert(lock, id);
        o.refs += 1;
        op.lock = Some(lock);
        op.referenced = true;
        op.stage = Stage::Locked;
        if granted {
            self.granted.push_back(id);
        }
    }

    fn destroy_now(&mut self, io: &mut Io<'_>, id: u32) -> Result<(), Errno> {
        let obj = self.ops[&id].obj;
        let o = self.objects.remove(&obj).expect("referenced");
        // Operations queued behind the destroy find no object.
        for lock in o.locks.waiting() {
            let waiter = o.lock_ops[&lock];
            if let Some(w) = self.ops.get_mut(&waiter) {
                w.referenced = false;
                w.lock = None;
            }
            self.finish_with(Some(io.pool), waiter, Err(Errno::ENOENT));
        }
        if let Some(op) = self.ops.get_mut(&id) {
            op.referenced = false;
            op.lock = None;
        }
        if let Err(e) = io.storage.close(o.file) {
            tracing::warn!("closing object {obj:#x} to destroy it: {e}");
        }
        std::fs::remove_file(layout::object_path(&self.root, obj)).map_err(|e| Errno::from_io(&e))
    }

    /// Ends an operation: releases its lock (granting the next), trims the size when the
    /// last active write ends, returns scratch slabs, queues the completion.
    fn finish_with(
        &mut self,
        pool: Option<&mut BufferPool>,
        id: u32,
        result: Result<usize, Errno>,
    ) {
        let Some(mut op) = self.ops.remove(&id) else {
            return;
        };
        let result = match (result, op.error) {
            (Ok(_), Some(e)) => Err(e),
            (r, _) => r,
        };
        if let Err(e) = result {
            self.note_error(e);
        }
        if op.referenced {
            if let Some(o) = self.objects.get_mut(&op.obj) {
                if let Some(lock) = op.lock {
                    o.lock_ops.remove(&lock);
                    for g in o.locks.release(lock) {
                        self.granted.push_back(o.lock_ops[&g]);
                    }
                }
                o.refs -= 1;
                if op.write_active {
                    o.writes_active -= 1;
                    if o.writes_active == 0 && o.size_dirty {
                        self.fixups.push(op.obj);
                    }
                }
            }
        }
        let mut bufs: Vec<PoolBuf> = op.bufs.drain(..).flatten().collect();
        // Without a pool (refused at submission) there is no scratch and no read slab.
        if let Some(pool) = pool {
            for b in op.scratch.drain(..).flatten() {
                put(pool, b);
            }
            // A failed or empty read hands back no slabs.
            if op.kind() == OpKind::Read && result.unwrap_or(0) == 0 {
                for b in bufs.drain(..) {
                    put(pool, b);
                }
            }
        }
        let head = match op.req {
            Req::Read { offset, .. } => (offset % BLOCK) as usize,
            _ => 0,
        };
        self.done.push(ObjectCompletion {
            tag: op.tag,
            kind: op.kind(),
            result,
            bufs,
            head,
        });
    }

    fn note_error(&mut self, e: Errno) {
        if e.is_device_failure() && self.state == TargetHealth::Healthy {
            tracing::error!(target = %self.sb.label, "device error {e}: target degraded");
            self.state = TargetHealth::Degraded(e);
        }
    }
}

/// A file's modification time in nanoseconds since the Unix epoch (0 before it).
fn mtime_ns(md: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let (secs, nanos) = (md.mtime(), md.mtime_nsec());
    u64::try_from(secs).map_or(0, |s| s * 1_000_000_000 + nanos as u64)
}

fn block_range(offset: u64, len: u64) -> std::ops::Range<u64> {
    let end = offset.saturating_add(len);
    offset / BLOCK..end.div_ceil(BLOCK)
}

/// Trims blocks that failed writes left past the logical size.
fn fix_size(storage: &Storage, o: &mut Obj) -> Result<(), Errno> {
    cut_to(storage, o.file, o.size)?;
    o.size_dirty = false;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_tags_round_trip_and_refuse_what_does_not_fit() {
        for t in [
            IoTag::new(0, 0, CLASS_EDGE, 0),
            IoTag::new(5, 42, CLASS_DATA, 3),
            IoTag::new(127, u32::MAX, CLASS_SYNC, 0xffff),
        ] {
            let user_data = t.encode().unwrap();
            assert!(ObjectStore::owns(user_data));
            assert_eq!(IoTag::decode(user_data), Ok(t));
            assert_eq!(ObjectStore::store_of(user_data), Ok(t.store));
        }
        // Never masked: store 128 would have been store 0.
        let e = IoTag::new(128, 1, CLASS_DATA, 0).encode().unwrap_err();
        assert!(e.to_string().contains("store") && e.to_string().contains("127"));
        assert!(IoTag::new(0, 1, CLASS_DATA, 1 << 16).encode().is_err());
        // Not a store's tag, or an unknown class.
        assert!(IoTag::decode(42).is_err());
        assert!(IoTag::decode(IO_TAG | 7 << 48).is_err());
        assert!(ObjectStore::store_of(IO_TAG | 7 << 48).is_err());
    }

    #[test]
    fn a_store_id_past_the_tag_is_refused_at_open() {
        let cfg = StoreConfig {
            id: 128,
            ..Default::default()
        };
        let e = ObjectStore::open(Path::new("/nonexistent"), cfg)
            .err()
            .unwrap();
        assert!(e.to_string().contains("store id"), "{e}");
    }
}
