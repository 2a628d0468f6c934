//! The namespace operations: POSIX semantics over the store, errno results.
//!
//! Every writing operation checks everything it can fail on before its first change, so
//! a refused operation leaves nothing behind in the batch it belongs to. Reads work on
//! any [`View`] (a read transaction, or the batch's write transaction).

use super::alloc::{resolve, IdRanges, IdSpace, OstChooser};
use super::hsm;
use super::inode::{Dentry, Inode, ORPHAN, WRITTEN};
use super::perm::{is_owner, may, sticky_allows, R, S_ISGID, S_ISUID, W, X};
use super::redo::Change;
use super::store::{StoreError, View, WriteTables};
use nacre_proto::layout::StripeSpec;
use nacre_proto::meta::{
    errno::*, set, validate_name, validate_target, Creds, DirEntry, FileKind, MdtStatfs, Reply,
    Request, SetAttr, CREATE_EXCL, CREATE_OPEN, CREATE_OPEN_SHIFT, NAME_MAX, O_ACCMODE, O_RDONLY,
    O_RDWR, O_TRUNC, O_WRONLY, READDIR_MAX_BYTES, READDIR_MAX_ENTRIES, RENAME_NOREPLACE,
};
use std::collections::{HashMap, HashSet};

pub const ROOT_INO: u64 = 1;
/// Most hard links to one file.
pub const LINK_MAX: u32 = 65000;
/// Inode numbers reported as the MDT's capacity in statfs.
const INODE_CAPACITY: u64 = 1 << 48;
/// Deepest directory chain a rename walks when checking for a loop.
const MAX_DEPTH: usize = 1 << 16;

/// Why an operation did not complete: an errno for the caller, or a store failure that
/// aborts the whole batch.
#[derive(Debug)]
pub enum Fail {
    Errno(i32),
    Store(StoreError),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

pub(super) type Res<T> = Result<T, Fail>;

pub(super) fn need(ok: bool, err: i32) -> Res<()> {
    if ok {
        Ok(())
    } else {
        Err(Fail::Errno(err))
    }
}

pub(super) fn get(v: &impl View, ino: u64) -> Res<Inode> {
    v.inode(ino)?.ok_or(Fail::Errno(ENOENT))
}

pub(super) fn get_dir(v: &impl View, ino: u64) -> Res<Inode> {
    let i = get(v, ino)?;
    need(i.is_dir(), ENOTDIR)?;
    Ok(i)
}

fn is_dot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

/// Checks the names and targets of a request built in process (decoded requests were
/// checked by the decoder already).
pub fn validate(req: &Request) -> Result<(), i32> {
    let name = |n: &[u8]| validate_name(n).map_err(|e| e.errno());
    match req {
        Request::Lookup { name: n, .. }
        | Request::Create { name: n, .. }
        | Request::Mkdir { name: n, .. }
        | Request::Mknod { name: n, .. }
        | Request::Rmdir { name: n, .. }
        | Request::Unlink { name: n, .. }
        | Request::Link { new_name: n, .. } => name(n),
        Request::Rename {
            name: a,
            new_name: b,
            ..
        } => name(a).and_then(|_| name(b)),
        Request::Symlink {
            name: n, target, ..
        } => name(n).and_then(|_| validate_target(target).map_err(|e| e.errno())),
        _ => Ok(()),
    }
}

/// Who asks and when (the caller's clock, nanoseconds since the epoch).
pub struct Ctx<'a> {
    pub creds: &'a Creds,
    pub now: i64,
    /// The asking client's id (its replay key's), 0 when unknown or the server itself:
    /// the owner of the handles it opens.
    pub client: u64,
}

/// Answers a read-only request from `v`.
pub fn read(v: &impl View, c: &Ctx<'_>, req: &Request) -> Res<Reply> {
    match req {
        Request::Lookup { parent, name } => Ok(Reply::Attr(lookup(v, c, *parent, name)?.attr())),
        Request::Getattr { ino } => Ok(Reply::Attr(get(v, *ino)?.attr())),
        Request::Readdir { dir, cookie, max } => readdir(v, c, *dir, *cookie, *max),
        Request::ReaddirPlus { dir, cookie, max } => readdir_plus(v, c, *dir, *cookie, *max),
        Request::Readlink { ino } => {
            let i = get(v, *ino)?;
            need(i.kind == FileKind::Symlink, EINVAL)?;
            Ok(Reply::Target(i.target))
        }
        Request::Statfs => {
            let used = v.meta_value("inodes")?.unwrap_or(0);
            Ok(Reply::Statfs(MdtStatfs {
                inodes_used: used,
                inodes_free: INODE_CAPACITY.saturating_sub(used),
                name_max: NAME_MAX as u32,
                // The OSTs' bytes are the server's to add: it follows the cluster map.
                ..MdtStatfs::default()
            }))
        }
        Request::GetLayout { ino } => {
            let i = get(v, *ino)?;
            match (i.file_layout(), i.default_spec()) {
                (Some(l), _) => Ok(Reply::Layout(l)),
                (None, Some(s)) => Ok(Reply::DefaultLayout(s)),
                _ => Err(Fail::Errno(ENODATA)),
            }
        }
        // The submitter noted who said it lives; nothing to read.
        Request::Ping { .. } => Ok(Reply::Done),
        _ => Err(Fail::Errno(EINVAL)),
    }
}

fn lookup(v: &impl View, c: &Ctx<'_>, parent: u64, name: &[u8]) -> Res<Inode> {
    let p = get_dir(v, parent)?;
    need(may(c.creds, &p, X), EACCES)?;
    match name {
        b"." => Ok(p),
        b".." => get(v, p.parent),
        _ => {
            let d = v.dentry(parent, name)?.ok_or(Fail::Errno(ENOENT))?;
            get(v, d.ino)
        }
    }
}

/// Entries after `cookie` (a sequence number; 0 starts), bounded by count and bytes.
/// "." and ".." are not listed: the client adds them.
fn readdir(v: &impl View, c: &Ctx<'_>, dir: u64, cookie: u64, max: u32) -> Res<Reply> {
    let d = get_dir(v, dir)?;
    need(may(c.creds, &d, R), EACCES)?;
    let max = max.clamp(1, READDIR_MAX_ENTRIES) as usize;
    let (rows, more) = v.entries_after(dir, cookie, max)?;
    let entries: Vec<DirEntry> = rows
        .into_iter()
        .map(|row| DirEntry {
            name: row.name,
            ino: row.ino,
            kind: row.kind,
            cookie: row.seq,
        })
        .collect();
    let next_cookie = entries.last().map_or(cookie, |e| e.cookie);
    let mut page = Reply::Dir {
        entries,
        next_cookie,
        eof: !more,
    };
    page.trim_to(READDIR_MAX_BYTES);
    Ok(page)
}

/// A readdir page with each entry's attributes, read in the same view as the entries.
fn readdir_plus(v: &impl View, c: &Ctx<'_>, dir: u64, cookie: u64, max: u32) -> Res<Reply> {
    let Reply::Dir {
        entries,
        next_cookie,
        eof,
    } = readdir(v, c, dir, cookie, max)?
    else {
        return Err(Fail::Errno(EIO));
    };
    let entries = entries
        .into_iter()
        .map(|e| get(v, e.ino).map(|i| (e, i.attr())))
        .collect::<Res<Vec<_>>>()?;
    let mut page = Reply::DirPlus {
        entries,
        next_cookie,
        eof,
    };
    page.trim_to(READDIR_MAX_BYTES);
    Ok(page)
}

/// Open files: handles are per MDS run. Each run numbers its handles from its epoch
/// shifted up by [`HANDLE_EPOCH_SHIFT`], so a handle of an earlier run never names an
/// open of this one: a close a client sends after a restart gets EBADF instead of
/// closing another client's open that happened to get the same number. Clients name
/// their handles of earlier runs again after a restart ([`Opens::reopen`], open
/// replay), which keeps their numbers.
///
/// Opens also guard mirror resyncs: a resync may mark a copy in sync only if nobody
/// could have written the file while it copied, since writers leave stale copies out.
/// So the handles opened for writing are counted, and a write open, a replayed open
/// (its mode is not known) or a size change of a file being resynced spoils that resync.
#[derive(Debug, Default)]
pub struct Opens {
    handles: HashMap<u64, u64>,
    counts: HashMap<u64, u32>,
    /// This run's first handle less one: every handle of an earlier run is below it.
    base: u64,
    next: u64,
    /// Handles that may write, and how many each inode has.
    writing: HashSet<u64>,
    writers: HashMap<u64, u32>,
    /// Inodes being resynced, and whether a write may have happened since the resync
    /// started (then it may not mark its copy in sync).
    resyncs: HashMap<u64, bool>,
    /// The handles of each client that said who it is, for [`Namespace::evict`].
    held_by: HashMap<u64, HashSet<u64>>,
    /// The owner of each such handle.
    owners: HashMap<u64, u64>,
}

/// Resyncs followed at once: past it, one of them is forgotten (its mark back in sync
/// is then refused with EAGAIN, and it starts again).
pub const MAX_RESYNCS: usize = 4096;

/// Handles of epoch `e` start at `e << HANDLE_EPOCH_SHIFT` (2^40 opens per run).
pub const HANDLE_EPOCH_SHIFT: u32 = 40;

impl Opens {
    pub fn for_epoch(epoch: u64) -> Opens {
        let base = epoch.wrapping_shl(HANDLE_EPOCH_SHIFT);
        Opens {
            base,
            next: base,
            ..Opens::default()
        }
    }

    /// Takes back `handle` of `ino`, opened in an earlier run. A handle already here
    /// is a retry (the same inode) or a mistake (EBADF), as is one of this run.
    fn reopen(&mut self, ino: u64, handle: u64, client: u64) -> Res<()> {
        if let Some(&held) = self.handles.get(&handle) {
            return need(held == ino, EBADF);
        }
        need(handle != 0 && handle <= self.base, EBADF)?;
        self.handles.insert(handle, ino);
        self.own(handle, client);
        *self.counts.entry(ino).or_default() += 1;
        // Its mode was not kept across the restart: it may write.
        self.add_writer(ino, handle);
        Ok(())
    }

    fn own(&mut self, handle: u64, client: u64) {
        if client != 0 {
            self.owners.insert(handle, client);
            self.held_by.entry(client).or_default().insert(handle);
        }
    }

    /// The clients that hold handles under their id.
    pub fn holders(&self) -> impl Iterator<Item = u64> + '_ {
        self.held_by.keys().copied()
    }

    /// The handles `client` holds, with their inodes.
    fn held(&self, client: u64) -> Vec<(u64, u64)> {
        self.held_by.get(&client).map_or(Vec::new(), |hs| {
            hs.iter()
                .filter_map(|h| self.handles.get(h).map(|&ino| (*h, ino)))
                .collect()
        })
    }

    fn add_writer(&mut self, ino: u64, handle: u64) {
        self.writing.insert(handle);
        *self.writers.entry(ino).or_default() += 1;
        self.touched(ino);
    }

    /// `ino` may be written (or was truncated): a resync of it must start again.
    pub fn touched(&mut self, ino: u64) {
        if let Some(spoiled) = self.resyncs.get_mut(&ino) {
            *spoiled = true;
        }
    }

    /// A resync of `ino` starts: EBUSY while a handle may write it.
    fn resync_start(&mut self, ino: u64) -> Res<()> {
        need(!self.writers.contains_key(&ino), EBUSY)?;
        if self.resyncs.len() >= MAX_RESYNCS && !self.resyncs.contains_key(&ino) {
            let any = *self.resyncs.keys().next().expect("full");
            self.resyncs.remove(&any);
        }
        self.resyncs.insert(ino, false);
        Ok(())
    }

    /// Whether the resync of `ino` may mark a copy in sync: it started in this run and
    /// nothing could have written the file since (EBUSY: start again; EAGAIN: no resync
    /// of it started in this run).
    fn resync_clean(&self, ino: u64) -> Res<()> {
        match self.resyncs.get(&ino) {
            None => Err(Fail::Errno(EAGAIN)),
            Some(true) => Err(Fail::Errno(EBUSY)),
            Some(false) => need(!self.writers.contains_key(&ino), EBUSY),
        }
    }

    /// Whether `handle` is open on `ino` and may write it.
    pub fn is_writer(&self, ino: u64, handle: u64) -> bool {
        self.handles.get(&handle) == Some(&ino) && self.writing.contains(&handle)
    }

    /// Whether a handle that may write `ino` is open.
    pub fn has_writer(&self, ino: u64) -> bool {
        self.writers.contains_key(&ino)
    }

    pub fn is_open(&self, ino: u64) -> bool {
        self.counts.contains_key(&ino)
    }

    /// The inodes open now.
    pub fn inos(&self) -> std::collections::HashSet<u64> {
        self.counts.keys().copied().collect()
    }

    fn open(&mut self, ino: u64, writing: bool, client: u64) -> u64 {
        self.next += 1;
        self.handles.insert(self.next, ino);
        self.own(self.next, client);
        *self.counts.entry(ino).or_default() += 1;
        if writing {
            self.add_writer(ino, self.next);
        }
        self.next
    }

    /// Forgets `handle`; true if it was the last open of `ino`.
    fn close(&mut self, ino: u64, handle: u64) -> Res<bool> {
        need(self.handles.get(&handle) == Some(&ino), EBADF)?;
        self.handles.remove(&handle);
        if let Some(client) = self.owners.remove(&handle) {
            let held = self
                .held_by
                .get_mut(&client)
                .expect("owned with its handle");
            held.remove(&handle);
            if held.is_empty() {
                self.held_by.remove(&client);
            }
        }
        if self.writing.remove(&handle) {
            let w = self.writers.get_mut(&ino).expect("counted with its handle");
            *w -= 1;
            if *w == 0 {
                self.writers.remove(&ino);
            }
        }
        let n = self.counts.get_mut(&ino).expect("counted with its handle");
        *n -= 1;
        if *n == 0 {
            self.counts.remove(&ino);
            return Ok(true);
        }
        Ok(false)
    }
}

/// The state writing operations need beyond the store: id ranges, OST choice, the
/// default striping, open files. One value per MDT (no globals).
#[derive(Debug)]
pub struct Namespace {
    pub ids: IdRanges,
    pub osts: OstChooser,
    pub default_spec: StripeSpec,
    pub opens: Opens,
    /// In the recovery window after a restart, while clients replay their opens: a
    /// file losing its last link is kept as an orphan, since an open not replayed yet
    /// may hold it; [`Namespace::reclaim_orphans`] ends the window.
    pub recovering: bool,
    /// Files with a stale copy (shared with the rebuild).
    pub stale: super::service::StaleFiles,
    /// For the data mover, sent after the batch (`hsm::Noted`).
    pub noted: Vec<hsm::Noted>,
}

impl Namespace {
    pub fn new(osts: Vec<u32>, default_spec: StripeSpec, epoch: u64) -> Namespace {
        Namespace {
            ids: IdRanges::default(),
            osts: OstChooser::of_indices(&osts),
            default_spec,
            opens: Opens::for_epoch(epoch),
            recovering: false,
            stale: Default::default(),
            noted: Vec::new(),
        }
    }

    /// Executes one request in the batch's transaction.
    pub fn write(&mut self, w: &mut WriteTables<'_>, c: &Ctx<'_>, req: &Request) -> Res<Reply> {
        match req {
            Request::Create {
                parent,
                name,
                mode,
                flags,
                layout,
            } => self.create(w, c, *parent, name, *mode, *flags, layout.as_ref()),
            Request::Mkdir { parent, name, mode } => self.mkdir(w, c, *parent, name, *mode),
            Request::Symlink {
                parent,
                name,
                target,
            } => self.symlink(w, c, *parent, name, target),
            Request::Mknod {
                parent,
                name,
                kind,
                mode,
                rdev,
            } => self.mknod(w, c, (*parent, name), *kind, *mode, *rdev),
            Request::Link {
                ino,
                new_parent,
                new_name,
            } => self.link(w, c, *ino, *new_parent, new_name),
            Request::Unlink { parent, name } => self.unlink(w, c, *parent, name),
            Request::Rmdir { parent, name } => self.rmdir(w, c, *parent, name),
            Request::Rename {
                parent,
                name,
                new_parent,
                new_name,
                flags,
            } => self.rename(w, c, (*parent, name), (*new_parent, new_name), *flags),
            Request::Open { ino, flags } => self.open(w, c, *ino, *flags),
            Request::Close { ino, handle } => self.close(w, *ino, *handle),
            Request::CloseSized { ino, handle, size } => {
                // The handle's writes are what it may report: checked as a handle
                // open for writing, not against the mode now (a creator may write a
                // file whose mode denies it).
                need(self.opens.is_writer(*ino, *handle), EBADF)?;
                report_size_checked(w, c, *ino, *size)?;
                self.close(w, *ino, *handle)
            }
            Request::Reopen {
                ino,
                handle,
                client,
            } => {
                get(&w.view, *ino)?;
                self.opens
                    .reopen(*ino, *handle, *client)
                    .map(|_| Reply::Done)
            }
            Request::Setattr { ino, attr } => {
                if attr.mask & set::SIZE != 0 {
                    self.opens.touched(*ino);
                }
                setattr(w, c, *ino, attr)
            }
            Request::ResyncStart { ino } => self.resync_start(w, c, *ino),
            Request::SetLayout { ino, spec } => self.set_layout(w, c, *ino, spec),
            Request::ReportSize { ino, size } => report_size(w, c, *ino, *size),
            Request::MirrorState { ino, mirror, stale } => {
                if !*stale {
                    self.opens.resync_clean(*ino)?;
                }
                let reply = mirror_state(w, c, *ino, *mirror, *stale)?;
                if let Reply::Layout(l) = &reply {
                    let mut set = self.stale.lock().unwrap_or_else(|p| p.into_inner());
                    match l.mirrors.iter().any(|m| m.stale) {
                        true => set.insert(*ino),
                        false => {
                            // Every copy in sync: the resync is over.
                            self.opens.resyncs.remove(ino);
                            set.remove(ino)
                        }
                    };
                }
                Ok(reply)
            }
            read_only => read(&w.view, c, read_only),
        }
    }

    /// Checks that `name` may be added to `parent` by `c`; returns the parent.
    fn new_entry_parent(
        &self,
        w: &WriteTables<'_>,
        c: &Ctx<'_>,
        parent: u64,
        name: &[u8],
    ) -> Res<Inode> {
        let p = get_dir(&w.view, parent)?;
        need(may(c.creds, &p, W | X), EACCES)?;
        need(
            !is_dot(name) && w.view.dentry(parent, name)?.is_none(),
            EEXIST,
        )?;
        Ok(p)
    }

    pub(super) fn new_inode(
        &mut self,
        w: &mut WriteTables<'_>,
        c: &Ctx<'_>,
        kind: FileKind,
        mode: u32,
        p: &Inode,
    ) -> Res<Inode> {
        let ino = self.ids.take(w, IdSpace::Inode)?;
        let mut mode = mode & 0o7777;
        let gid = if p.mode & S_ISGID != 0 {
            p.gid
        } else {
            c.creds.gid
        };
        if kind == FileKind::Dir && p.mode & S_ISGID != 0 {
            mode |= S_ISGID;
        } else if c.creds.uid != 0 && !c.creds.in_group(gid) {
            mode &= !S_ISGID;
        }
        let used = w.view.meta_value("inodes")?.unwrap_or(0);
        w.put_meta("inodes", used + 1)?;
        Ok(Inode {
            ino,
            kind,
            flags: 0,
            mode,
            uid: c.creds.uid,
            gid,
            nlink: if kind == FileKind::Dir { 2 } else { 1 },
            size: 0,
            atime: c.now,
            mtime: c.now,
            ctime: c.now,
            parent: if kind == FileKind::Dir { p.ino } else { 0 },
            next_seq: 1,
            layout: Vec::new(),
            target: Vec::new(),
            hsm: None,
            rdev: 0,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn create(
        &mut self,
        w: &mut WriteTables<'_>,
        c: &Ctx<'_>,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: u32,
        spec: Option<&StripeSpec>,
    ) -> Res<Reply> {
        let p = get_dir(&w.view, parent)?;
        need(may(c.creds, &p, W | X), EACCES)?;
        need(!is_dot(name), EEXIST)?;
        if let Some(d) = w.view.dentry(parent, name)? {
            need(flags & CREATE_EXCL == 0, EEXIST)?;
            let i = get(&w.view, d.ino)?;
            need(!i.is_dir(), EISDIR)?;
            need(i.kind == FileKind::File, EEXIST)?;
            if flags & CREATE_OPEN != 0 {
                // An existing file is opened as any open would: permissions apply.
                return self.open(w, c, d.ino, flags >> CREATE_OPEN_SHIFT);
            }
            return Ok(Reply::Opened {
                attr: i.attr(),
                layout: i.file_layout(),
                handle: 0,
                created: false,
            });
        }
        let spec = spec
            .copied()
            .or(p.default_spec())
            .unwrap_or(self.default_spec);
        spec.validate().map_err(|_| Fail::Errno(EINVAL))?;
        let layout = resolve(w, &mut self.ids, &mut self.osts, &spec)?.map_err(Fail::Errno)?;
        let mut i = self.new_inode(w, c, FileKind::File, mode, &p)?;
        i.hsm = hsm::inherit(&p, name, FileKind::File);
        i.layout = layout.to_bytes();
        self.note_stale(i.ino, &layout);
        let open = flags & CREATE_OPEN != 0;
        let open_flags = flags >> CREATE_OPEN_SHIFT;
        if open && writes(open_flags) {
            i.flags |= WRITTEN; // as open marks a file opened for writing
        }
        w.put_inode(&i)?;
        add_to_dir(w, c, parent, name, &i)?;
        // The new file's creator opens it whatever its mode says (POSIX).
        let handle = match open {
            true => self.opens.open(i.ino, writes(open_flags), c.client),
            false => 0,
        };
        Ok(Reply::Opened {
            attr: i.attr(),
            layout: Some(layout),
            handle,
            created: true,
        })
    }

    pub(super) fn mkdir(
        &mut self,
        w: &mut WriteTables<'_>,
        c: &Ctx<'_>,
        parent: u64,
        name: &[u8],
        mode: u32,
    ) -> Res<Reply> {
        let p = self.new_entry_parent(w, c, parent, name)?;
        let mut i = self.new_inode(w, c, FileKind::Dir, mode, &p)?;
        i.layout = p.layout.clone(); // the default striping is inherited
        i.hsm = hsm::inherit(&p, name, FileKind::Dir);
        w.put_inode(&i)?;
        add_to_dir(w, c, parent, name, &i)?;
        Ok(Reply::Attr(i.attr()))
    }

    fn symlink(
        &mut self,
        w: &mut WriteTables<'_>,
        c: &Ctx<'_>,
        parent: u64,
        name: &[u8],
        target: &[u8],
    ) -> Res<Reply> {
        let p = self.new_entry_parent(w, c, parent, name)?;
        let mut i = self.new_inode(w, c, FileKind::Symlink, 0o777, &p)?;
        i.target = target.to_vec();
        i.size = target.len() as u64;
        w.put_inode(&i)?;
        add_to_dir(w, c, parent, name, &i)?;
        Ok(Reply::Attr(i.attr()))
    }

    /// A FIFO, socket or device node: an inode and a name, no data. Making a device
    /// node needs root, as on Linux (CAP_MKNOD); FIFOs and sockets do not.
    fn mknod(
        &mut self,
        w: &mut WriteTables<'_>,
        c: &Ctx<'_>,
        (parent, name): (u64, &[u8]),
        kind: FileKind,
        mode: u32,
        rdev: u64,
    ) -> Res<Reply> {
        need(kind.is_special(), EINVAL)?;
        let device = matches!(kind, FileKind::CharDevice | FileKind::BlockDevice);
        need(!device || c.creds.uid == 0, EPERM)?;
        let p = self.new_entry_parent(w, c, parent, name)?;
        let mut i = self.new_inode(w, c, kind, mode, &p)?;
        i.rdev = if device { rdev } else { 0 };
        w.put_inode(&i)?;
        add_to_dir(w, c, parent, name, &i)?;
        Ok(Reply::Attr(i.attr()))
    }

    fn link(
        &mut self,
        w: &mut WriteTables<'_>,
        c: &Ctx<'_>,
        ino: u64,
        new_parent: u64,
        name: &[u8],
    ) -> Res<Reply> {
        let mut i = get(&w.view, ino)?;
        need(!i.is_dir(), EPERM)?;
        need(i.nlink > 0, ENOENT)?;
        self.new_entry_parent(w, c, new_parent, name)?;
        need(i.nlink < LINK_MAX, EMLINK)?;
        i.nlink += 1;
        i.ctime = c.now;
        w.put_inode(&i)?;
        add_to_dir(w, c, new_parent, name, &i)?;
        Ok(Reply::Attr(i.attr()))
    }

    pub(super) fn unlink(
        &mut self,
        w: &mut WriteTables<'_>,
        c: &Ctx<'_>,
        parent: u64,
        name: &[u8],
    ) -> Res<Reply> {
        let p = get_dir(&w.view, parent)?;
        need(may(c.creds, &p, W | X), EACCES)?;
        need(!is_dot(name), EISDIR)?;
        let d = w.view.dentry(parent, name)?.ok_or(Fail::Errno(ENOENT))?;
        let victim = get(&w.view, d.ino)?;
        need(!victim.is_dir(), EISDIR)?;
        need(sticky_allows(c.creds, &p, &victim), EPERM)?;
        w.remove_entry(parent, name, d.seq)?;
        touch_dir(w, c, parent, 0)?;
        self.drop_link(w, c, victim)?;
        Ok(Reply::Done)
    }

    fn rmdir(
        &mut self,
        w: &mut WriteTables<'_>,
        c: &Ctx<'_>,
        parent: u64,
        name: &[u8],
    ) -> Res<Reply> {
        let p = get_dir(&w.view, parent)?;
        need(may(c.creds, &p, W | X), EACCES)?;
        need(name != b".", EINVAL)?;
        need(name != b"..", ENOTEMPTY)?;
        let d = w.view.dentry(parent, name)?.ok_or(Fail::Errno(ENOENT))?;
        let victim = get(&w.view, d.ino)?;
        need(victim.is_dir(), ENOTDIR)?;
        need(is_empty_dir(&w.view, victim.ino)?, ENOTEMPTY)?;
        need(sticky_allows(c.creds, &p, &victim), EPERM)?;
        w.remove_entry(parent, name, d.seq)?;
        touch_dir(w, c, parent, -1)?;
        destroy(w, &victim)?;
        Ok(Reply::Done)
    }

    fn rename(
        &mut self,
        w: &mut WriteTables<'_>,
        c: &Ctx<'_>,
        (parent, name): (u64, &[u8]),
        (new_parent, new_name): (u64, &[u8]),
        flags: u32,
    ) -> Res<Reply> {
        need(flags & !RENAME_NOREPLACE == 0, EINVAL)?;
        need(!is_dot(name) && !is_dot(new_name), EINVAL)?;
        let sp = get_dir(&w.view, parent)?;
        let dp = get_dir(&w.view, new_parent)?;
        need(may(c.creds, &sp, W | X) && may(c.creds, &dp, W | X), EACCES)?;
        let sd = w.view.dentry(parent, name)?.ok_or(Fail::Errno(ENOENT))?;
        let src = get(&w.view, sd.ino)?;
        need(sticky_allows(c.creds, &sp, &src), EPERM)?;
        if parent == new_parent && name == new_name {
            return Ok(Reply::Done);
        }
        let moved_hsm = hsm::renamed(&sp, &dp, &src, new_name)?;
        if src.is_dir() && parent != new_parent {
            need(may(c.creds, &src, W), EACCES)?; // its ".." changes
            need(!is_ancestor_or_self(&w.view, src.ino, new_parent)?, EINVAL)?;
        }
        let replaced = match w.view.dentry(new_parent, new_name)? {
            None => None,
            Some(dd) => {
                need(flags & RENAME_NOREPLACE == 0, EEXIST)?;
                if dd.ino == src.ino {
                    return Ok(Reply::Done); // two links to one file: POSIX says do nothing
                }
                let dst = get(&w.view, dd.ino)?;
                need(!src.is_dir() || dst.is_dir(), ENOTDIR)?;
                need(src.is_dir() || !dst.is_dir(), EISDIR)?;
                need(!dst.is_dir() || is_empty_dir(&w.view, dst.ino)?, ENOTEMPTY)?;
                need(sticky_allows(c.creds, &dp, &dst), EPERM)?;
                Some((dd, dst))
            }
        };
        // All checks passed: change things.
        if let Some((dd, dst)) = replaced {
            w.remove_entry(new_parent, new_name, dd.seq)?;
            if dst.is_dir() {
                touch_dir(w, c, new_parent, -1)?;
                destroy(w, &dst)?;
            } else {
                self.drop_link(w, c, dst)?;
            }
        }
        let moved_dir = i64::from(src.is_dir() && parent != new_parent);
        w.remove_entry(parent, name, sd.seq)?;
        touch_dir(w, c, parent, -moved_dir)?;
        let mut src = get(&w.view, src.ino)?;
        src.ctime = c.now;
        if src.is_dir() {
            src.parent = new_parent;
        }
        src.hsm = moved_hsm;
        // A file renamed in a linked tree is exported under its new name (if the
        // policy wants it) once nobody has it open.
        let renamed_dirty = src.hsm.as_ref().is_some_and(|h| h.flags & hsm::DIRTY != 0);
        if renamed_dirty && src.kind == FileKind::File && !self.opens.is_open(src.ino) {
            self.noted.push(hsm::Noted::Closed(src.ino));
        }
        w.put_inode(&src)?;
        add_to_dir(w, c, new_parent, new_name, &src)?;
        if moved_dir == 0 && src.is_dir() {
            touch_dir(w, c, new_parent, -1)?; // add_to_dir counted a new subdirectory
        }
        Ok(Reply::Done)
    }

    /// Removes one link of a non-directory; the last one destroys it unless it is open.
    fn drop_link(&mut self, w: &mut WriteTables<'_>, c: &Ctx<'_>, mut i: Inode) -> Res<()> {
        i.nlink -= 1;
        i.ctime = c.now;
        if i.nlink == 0 {
            hsm::note_gone(&mut self.noted, &i);
        }
        if i.nlink > 0 {
            w.put_inode(&i)?;
        } else if self.opens.is_open(i.ino) || self.recovering {
            i.flags |= ORPHAN;
            w.put_inode(&i)?;
            w.apply(Change::PutOrphan(i.ino))?;
        } else {
            destroy(w, &i)?;
        }
        Ok(())
    }

    fn open(&mut self, w: &mut WriteTables<'_>, c: &Ctx<'_>, ino: u64, flags: u32) -> Res<Reply> {
        let mut i = get(&w.view, ino)?;
        let acc = flags & O_ACCMODE;
        need(acc != O_ACCMODE, EINVAL)?;
        need(i.kind != FileKind::Symlink, EINVAL)?;
        // The kernel opens FIFOs, sockets and devices itself: no nacre handle serves them.
        need(!i.kind.is_special(), ENXIO)?;
        let writing = acc != O_RDONLY || flags & O_TRUNC != 0;
        need(!(i.is_dir() && writing), EISDIR)?;
        let mut want = if acc == O_RDONLY || acc == O_RDWR {
            R
        } else {
            0
        };
        if writing || acc == O_WRONLY {
            want |= W;
        }
        need(may(c.creds, &i, want), EACCES)?;
        let truncate = flags & O_TRUNC != 0 && i.size != 0;
        if writing && hsm::is_released(&i) {
            // A writer needs the data loaded first (the client asks and opens
            // again), unless it empties the file.
            need(flags & O_TRUNC != 0, ENODATA)?;
            hsm::unrelease(&mut i);
        }
        if writing && i.hsm.is_some() {
            hsm::touch_data(&mut i);
            w.put_inode(&i)?;
        }
        if (writing && i.flags & WRITTEN == 0) || truncate {
            i.flags |= WRITTEN;
            if truncate {
                i.size = 0;
                i.mtime = c.now;
                i.ctime = c.now;
            }
            w.put_inode(&i)?;
        }
        let handle = self.opens.open(ino, writing, c.client);
        Ok(Reply::Opened {
            attr: i.attr(),
            layout: i.file_layout(),
            handle,
            created: false,
        })
    }

    fn close(&mut self, w: &mut WriteTables<'_>, ino: u64, handle: u64) -> Res<Reply> {
        if self.opens.close(ino, handle)? {
            if let Some(i) = w.view.inode(ino)? {
                if i.flags & ORPHAN != 0 {
                    w.apply(Change::DelOrphan(ino))?;
                    destroy(w, &i)?;
                } else if i.hsm.as_ref().is_some_and(|h| h.flags & hsm::DIRTY != 0) {
                    self.noted.push(hsm::Noted::Closed(ino));
                }
            }
        }
        Ok(Reply::Done)
    }

    fn set_layout(
        &mut self,
        w: &mut WriteTables<'_>,
        c: &Ctx<'_>,
        ino: u64,
        spec: &StripeSpec,
    ) -> Res<Reply> {
        let mut i = get(&w.view, ino)?;
        need(is_owner(c.creds, &i), EPERM)?;
        spec.validate().map_err(|_| Fail::Errno(EINVAL))?;
        i.ctime = c.now;
        match i.kind {
            FileKind::Dir => {
                let mut bytes = Vec::new();
                spec.encode(&mut bytes);
                i.layout = bytes;
                w.put_inode(&i)?;
                Ok(Reply::DefaultLayout(*spec))
            }
            FileKind::File => {
                // Only before the first write: then no object holds data yet.
                need(i.size == 0 && i.flags & WRITTEN == 0, EBUSY)?;
                let layout =
                    resolve(w, &mut self.ids, &mut self.osts, spec)?.map_err(Fail::Errno)?;
                i.layout = layout.to_bytes();
                self.note_stale(ino, &layout);
                w.put_inode(&i)?;
                Ok(Reply::Layout(layout))
            }
            _ => Err(Fail::Errno(EINVAL)), // symlinks and special files hold no data
        }
    }

    /// A layout born with a stale copy (placed on an OST that is down) joins the set
    /// the rebuild walks.
    fn note_stale(&self, ino: u64, layout: &nacre_proto::layout::FileLayout) {
        if layout.mirrors.iter().any(|m| m.stale) {
            let mut set = self.stale.lock().unwrap_or_else(|p| p.into_inner());
            set.insert(ino);
        }
    }

    /// OST `ost` was replaced: every in-sync copy of `inos` with an object there is
    /// marked stale (the rebuild fills it again), but a file's last copy in sync,
    /// whose data is lost with the old target. Returns how many copies were marked.
    pub fn copies_lost(
        &mut self,
        w: &mut WriteTables<'_>,
        ost: u32,
        inos: &[u64],
        now: i64,
    ) -> Res<usize> {
        let mut marked = 0;
        for &ino in inos {
            let Some(mut i) = w.view.inode(ino)? else {
                continue;
            };
            let Some(mut layout) = i.file_layout() else {
                continue;
            };
            let mut changed = false;
            for m in 0..layout.mirrors.len() {
                let there = layout.mirrors[m]
                    .stripes
                    .objects
                    .iter()
                    .any(|o| o.ost == ost);
                if layout.mirrors[m].stale || !there {
                    continue;
                }
                layout.mirrors[m].stale = true;
                if layout.validate().is_ok() {
                    changed = true;
                    marked += 1;
                } else {
                    layout.mirrors[m].stale = false;
                    tracing::error!(
                        "inode {ino}: its last copy in sync was on OST{ost:04x}, which was \
                         replaced: that data is lost"
                    );
                }
            }
            if changed {
                i.layout = layout.to_bytes();
                i.ctime = now;
                w.put_inode(&i)?;
                self.note_stale(ino, &layout);
                // A resync under way may copy from the lost copy: it must not land.
                self.opens.touched(ino);
            }
        }
        Ok(marked)
    }

    /// A client starts copying a file's copies in sync over its stale ones.
    fn resync_start(&mut self, w: &mut WriteTables<'_>, c: &Ctx<'_>, ino: u64) -> Res<Reply> {
        let i = get(&w.view, ino)?;
        need(!i.is_dir(), EISDIR)?;
        need(i.kind == FileKind::File, EINVAL)?;
        need(is_owner(c.creds, &i) || may(c.creds, &i, W), EACCES)?;
        self.opens.resync_start(ino)?;
        Ok(Reply::Attr(i.attr()))
    }

    /// Closes every handle `client` holds, as its closes would (the last close of an
    /// unlinked file destroys it); the number closed.
    pub fn evict(&mut self, w: &mut WriteTables<'_>, client: u64) -> Res<usize> {
        let held = self.opens.held(client);
        for &(handle, ino) in &held {
            self.close(w, ino, handle)?;
        }
        Ok(held.len())
    }

    /// Ends the recovery window: destroys the orphans no client holds open (nor took
    /// back by open replay).
    pub fn reclaim_orphans(&mut self, w: &mut WriteTables<'_>) -> Res<usize> {
        self.recovering = false;
        let mut n = 0;
        for ino in w.orphans()? {
            if !self.opens.is_open(ino) {
                w.apply(Change::DelOrphan(ino))?;
                if let Some(i) = w.view.inode(ino)? {
                    destroy(w, &i)?;
                }
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Adds `name -> i` to `dir` with the directory's next sequence number, updating the
/// directory's times and (for a subdirectory) its link count.
pub(super) fn add_to_dir(
    w: &mut WriteTables<'_>,
    c: &Ctx<'_>,
    dir: u64,
    name: &[u8],
    i: &Inode,
) -> Res<()> {
    let mut p = get(&w.view, dir)?;
    let seq = p.next_seq;
    p.next_seq += 1;
    p.mtime = c.now;
    p.ctime = c.now;
    if i.is_dir() {
        p.nlink += 1;
    }
    w.put_inode(&p)?;
    w.add_entry(
        dir,
        name,
        Dentry {
            ino: i.ino,
            seq,
            kind: i.kind,
        },
    )?;
    Ok(())
}

/// Updates a directory's times and adds `links` to its link count.
fn touch_dir(w: &mut WriteTables<'_>, c: &Ctx<'_>, dir: u64, links: i64) -> Res<()> {
    let mut p = get(&w.view, dir)?;
    p.mtime = c.now;
    p.ctime = c.now;
    p.nlink = (i64::from(p.nlink) + links).max(0) as u32;
    w.put_inode(&p)?;
    Ok(())
}

pub(super) fn is_empty_dir(v: &impl View, dir: u64) -> Res<bool> {
    Ok(v.entries_after(dir, 0, 1)?.0.is_empty())
}

/// Whether `dir` is `ancestor` or lies below it (walks up the parent pointers).
fn is_ancestor_or_self(v: &impl View, ancestor: u64, dir: u64) -> Res<bool> {
    let mut at = dir;
    for _ in 0..MAX_DEPTH {
        if at == ancestor {
            return Ok(true);
        }
        if at == ROOT_INO {
            return Ok(false);
        }
        at = get(v, at)?.parent;
    }
    Err(Fail::Errno(EIO))
}

/// Removes an inode whose last link is gone; a file's objects go to the destroy list
/// the OSTs are cleaned from.
fn destroy(w: &mut WriteTables<'_>, i: &Inode) -> Res<()> {
    w.del_inode(i.ino)?;
    if i.kind == FileKind::File && !i.layout.is_empty() {
        w.apply(Change::PutDestroy(i.ino, i.layout.clone()))?;
    }
    let used = w.view.meta_value("inodes")?.unwrap_or(1);
    w.put_meta("inodes", used.saturating_sub(1))?;
    Ok(())
}

fn setattr(w: &mut WriteTables<'_>, c: &Ctx<'_>, ino: u64, a: &SetAttr) -> Res<Reply> {
    let mut i = get(&w.view, ino)?;
    let cr = c.creds;
    let owner = is_owner(cr, &i);
    let has = |bit| a.mask & bit != 0;
    // Checks first.
    need(!has(set::MODE) || owner, EPERM)?;
    need(!has(set::UID) || a.uid == i.uid || cr.uid == 0, EPERM)?;
    let gid_ok = cr.uid == 0 || (cr.uid == i.uid && cr.in_group(a.gid));
    need(!has(set::GID) || a.gid == i.gid || gid_ok, EPERM)?;
    need(!has(set::KILL_PRIV) || owner || may(cr, &i, W), EACCES)?;
    if has(set::SIZE) {
        need(!i.is_dir(), EISDIR)?;
        need(i.kind == FileKind::File, EINVAL)?;
        need(a.size <= i64::MAX as u64, EFBIG)?;
        need(may(cr, &i, W), EACCES)?;
        // A released file is loaded before any size but 0 (the client does it).
        need(a.size == 0 || !hsm::is_released(&i), ENODATA)?;
    }
    need(
        !(has(set::ATIME) || has(set::MTIME) || has(set::CTIME)) || owner,
        EPERM,
    )?;
    let now_ok = owner || may(cr, &i, W);
    need(
        !(has(set::ATIME_NOW) || has(set::MTIME_NOW)) || now_ok,
        EACCES,
    )?;
    // Then changes.
    if has(set::MODE) {
        i.mode = a.mode & 0o7777;
        if cr.uid != 0 && !cr.in_group(i.gid) {
            i.mode &= !S_ISGID;
        }
    }
    let chown = (has(set::UID) && a.uid != i.uid) || (has(set::GID) && a.gid != i.gid);
    if has(set::UID) {
        i.uid = a.uid;
    }
    if has(set::GID) {
        i.gid = a.gid;
    }
    // As Linux: chown drops setuid, and setgid when it means "group executable"; so
    // do a write and a truncate by a process without CAP_FSETID (here: not root).
    let unprivileged_write = (has(set::SIZE) || has(set::KILL_PRIV)) && cr.uid != 0;
    if (chown && !i.is_dir()) || (unprivileged_write && i.kind == FileKind::File) {
        i.mode &= !S_ISUID;
        if i.mode & 0o010 != 0 {
            i.mode &= !S_ISGID;
        }
    }
    if has(set::SIZE) {
        hsm::unrelease(&mut i);
        hsm::touch_data(&mut i);
        i.size = a.size;
        i.mtime = c.now;
        if a.size > 0 {
            i.flags |= WRITTEN;
        }
    }
    if has(set::ATIME_NOW) {
        i.atime = c.now;
    } else if has(set::ATIME) {
        i.atime = a.atime;
    }
    if has(set::MTIME_NOW) {
        i.mtime = c.now;
    } else if has(set::MTIME) {
        i.mtime = a.mtime;
    }
    i.ctime = if has(set::CTIME) { a.ctime } else { c.now };
    w.put_inode(&i)?;
    Ok(Reply::Attr(i.attr()))
}

/// A client reports where its writes ended: the size becomes the larger of the two.
fn report_size(w: &mut WriteTables<'_>, c: &Ctx<'_>, ino: u64, size: u64) -> Res<Reply> {
    let i = get(&w.view, ino)?;
    need(is_owner(c.creds, &i) || may(c.creds, &i, W), EACCES)?;
    report_size_checked(w, c, ino, size)
}

/// A size report the caller is known to be allowed (a handle open for writing).
fn report_size_checked(w: &mut WriteTables<'_>, c: &Ctx<'_>, ino: u64, size: u64) -> Res<Reply> {
    let mut i = get(&w.view, ino)?;
    need(!i.is_dir(), EISDIR)?;
    need(i.kind == FileKind::File, EINVAL)?;
    need(size <= i64::MAX as u64, EFBIG)?;
    if size > i.size || i.flags & WRITTEN == 0 || i.hsm.is_some() {
        hsm::touch_data(&mut i);
        i.size = i.size.max(size);
        i.flags |= WRITTEN;
        i.mtime = c.now;
        i.ctime = c.now;
        w.put_inode(&i)?;
    }
    Ok(Reply::Attr(i.attr()))
}

/// Whether an open with `flags` may write the file.
fn writes(flags: u32) -> bool {
    flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0
}

/// A client could not write a mirror (stale), or a resync brought it back (in sync).
/// Answers the layout as it is now; the last mirror in sync is never marked stale (EIO:
/// the write that wanted it has nowhere left to go).
fn mirror_state(
    w: &mut WriteTables<'_>,
    c: &Ctx<'_>,
    ino: u64,
    mirror: u32,
    stale: bool,
) -> Res<Reply> {
    let mut i = get(&w.view, ino)?;
    need(!i.is_dir(), EISDIR)?;
    need(is_owner(c.creds, &i) || may(c.creds, &i, W), EACCES)?;
    let mut layout = i.file_layout().ok_or(Fail::Errno(EINVAL))?;
    let m = layout
        .mirrors
        .get_mut(mirror as usize)
        .ok_or(Fail::Errno(EINVAL))?;
    if m.stale != stale {
        m.stale = stale;
        need(layout.validate().is_ok(), EIO)?;
        i.layout = layout.to_bytes();
        i.ctime = c.now;
        w.put_inode(&i)?;
    }
    Ok(Reply::Layout(layout))
}

/// The root directory of a new MDT: owned by root, 0755, its own parent.
pub fn root_inode(now: i64, default_spec: &StripeSpec) -> Inode {
    let mut layout = Vec::new();
    default_spec.encode(&mut layout);
    Inode {
        ino: ROOT_INO,
        kind: FileKind::Dir,
        flags: 0,
        mode: 0o755,
        uid: 0,
        gid: 0,
        nlink: 2,
        size: 0,
        atime: now,
        mtime: now,
        ctime: now,
        parent: ROOT_INO,
        next_seq: 1,
        layout,
        target: Vec::new(),
        hsm: None,
        rdev: 0,
    }
}
