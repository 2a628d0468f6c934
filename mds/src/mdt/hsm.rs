//! Data repositories in the MDT: each inode's repository record, the associations
//! table, and the namespace changes the server's data mover asks for (import, loaded,
//! exported, release). See docs/repositories.md.
//!
//! A linked directory and every directory below it carry a record naming the
//! association and their key prefix, so a file made below one knows its key without a
//! walk up the tree; renaming a directory into, out of or inside a linked tree is
//! refused with EXDEV (`mv` then copies), so those prefixes never go stale. A file's
//! record has its key (where an export writes it), the key and tag of the repository
//! copy it matches (`stored`, `etag`), a data version that every write open, truncate
//! and size report raises, and flags.

use super::alloc::resolve;
use super::inode::Inode;
use super::ns::{get, need, Ctx, Fail, Namespace, Res};
use super::redo::Change;
use super::store::{View, WriteTables};
use nacre_proto::layout::{FileLayout, FirstOst, StripeCount, StripeSpec};
use nacre_proto::meta::hsm::FileState;
use nacre_proto::meta::{errno::*, Creds, FileKind, Reply, CREATE_EXCL};
use nacre_proto::BodyReader;

/// Changed since the repository copy (or never exported).
pub const DIRTY: u8 = 1;
/// The repository's object changed while the file was dirty: neither overwritten.
pub const CONFLICT: u8 = 2;
/// The repository copy came from an import (state `cached`), not an export.
pub const IMPORTED: u8 = 4;

/// One inode's standing with its data repository.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HsmRecord {
    /// The association (its id in the `repos` table).
    pub repo: u32,
    pub flags: u8,
    /// Raised by every change of the file's data: an export or a load marks the file
    /// only if it is still the version it started from.
    pub version: u64,
    /// The file's key below the association's prefix (a directory's ends in '/'; the
    /// linked directory's is empty).
    pub key: String,
    /// The key of the repository copy the file's data matches, and its tag (empty:
    /// none, a file made here and never exported).
    pub stored: String,
    pub etag: String,
}

#[derive(Debug, thiserror::Error)]
#[error("corrupt repository record: {0}")]
pub struct CorruptHsm(&'static str);

impl HsmRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.key.len() + self.stored.len());
        out.extend_from_slice(&self.repo.to_le_bytes());
        out.push(self.flags);
        out.extend_from_slice(&self.version.to_le_bytes());
        for s in [&self.key, &self.stored, &self.etag] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<HsmRecord, CorruptHsm> {
        let mut r = BodyReader::new(b);
        let short = |_| CorruptHsm("truncated");
        let repo = r.u32().map_err(short)?;
        let flags = r.bytes(1).map_err(short)?[0];
        let version = r.u64().map_err(short)?;
        let mut text = || -> Result<String, CorruptHsm> {
            let n = r.u32().map_err(short)? as usize;
            let bytes = r.bytes(n).map_err(short)?;
            String::from_utf8(bytes.to_vec()).map_err(|_| CorruptHsm("key not UTF-8"))
        };
        let (key, stored, etag) = (text()?, text()?, text()?);
        if !r.rest().is_empty() {
            return Err(CorruptHsm("trailing bytes"));
        }
        Ok(HsmRecord {
            repo,
            flags,
            version,
            key,
            stored,
            etag,
        })
    }
}

/// The record a new entry `name` of kind `kind` in directory `p` starts with: none
/// outside linked trees, for symlinks, and for names that are not UTF-8 (which no
/// repository key can hold); otherwise dirty, never exported.
pub fn inherit(p: &Inode, name: &[u8], kind: FileKind) -> Option<HsmRecord> {
    let dir = p.hsm.as_ref()?;
    let name = std::str::from_utf8(name).ok()?;
    let key = match kind {
        FileKind::Dir => format!("{}{name}/", dir.key),
        FileKind::File => format!("{}{name}", dir.key),
        _ => return None, // symlinks and special files: no data to keep in a repository
    };
    Some(HsmRecord {
        repo: dir.repo,
        flags: DIRTY,
        key,
        ..HsmRecord::default()
    })
}

/// The file's data changes (a write open, a truncate, a size report): dirty, at a
/// new version.
pub fn touch_data(i: &mut Inode) {
    if let Some(h) = i.hsm.as_mut().filter(|_| i.kind == FileKind::File) {
        h.flags |= DIRTY;
        h.version += 1;
    }
}

/// Whether `i` is a released file. Only files of linked trees can be: the layout is
/// decoded for those alone, not on every write open of every file.
pub fn is_released(i: &Inode) -> bool {
    i.hsm.is_some() && i.file_layout().is_some_and(|l| l.released)
}

/// Clears a released file's mark when its data is about to be replaced whole (a
/// truncate to 0, O_TRUNC): its objects were never written or were emptied on
/// release, so nothing needs loading.
pub fn unrelease(i: &mut Inode) {
    if i.hsm.is_none() {
        return;
    }
    if let Some(mut l) = i.file_layout().filter(|l| l.released) {
        l.released = false;
        i.layout = l.to_bytes();
    }
}

/// What `nacre repo status` and the `nacre.hsm` attribute say of `i`.
pub fn state(i: &Inode) -> FileState {
    let Some(h) = &i.hsm else {
        return FileState::None;
    };
    if i.kind != FileKind::File {
        return FileState::None;
    }
    if is_released(i) {
        FileState::Released
    } else if h.flags & DIRTY != 0 || h.stored.is_empty() {
        FileState::Dirty
    } else if h.flags & IMPORTED != 0 {
        FileState::Cached
    } else {
        FileState::Exported
    }
}

/// Whether a rename of `src` from directory `sp` to `dp` may go ahead, and the record
/// the moved file gets: directories do not move into, out of or inside linked trees
/// (EXDEV: `mv` copies them, each file then re-keyed), nor do released files out of
/// their association (their data would have no source).
pub fn renamed(sp: &Inode, dp: &Inode, src: &Inode, new_name: &[u8]) -> Res<Option<HsmRecord>> {
    if src.kind == FileKind::Dir {
        need(sp.hsm.is_none() && dp.hsm.is_none(), EXDEV)?;
        return Ok(src.hsm.clone());
    }
    let same = sp.hsm.as_ref().map(|h| h.repo) == dp.hsm.as_ref().map(|h| h.repo);
    let Some(mut moved) = inherit(dp, new_name, src.kind) else {
        need(!is_released(src), EXDEV)?;
        return Ok(None);
    };
    match (&src.hsm, same) {
        (Some(old), true) => {
            // Same association: the repository copy still holds its data; the new
            // name is exported (dirty) unless it is the copy's own key.
            moved.stored = old.stored.clone();
            moved.etag = old.etag.clone();
            moved.version = old.version;
            moved.flags = old.flags & !DIRTY;
            if old.flags & DIRTY != 0 || moved.key != old.stored {
                moved.flags |= DIRTY;
            }
            Ok(Some(moved))
        }
        _ => {
            need(!is_released(src), EXDEV)?;
            Ok(Some(moved))
        }
    }
}

/// What the namespace tells the data mover after a batch: a dirty file's last
/// close (automatic export), a repository copy whose file is gone (deletions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Noted {
    Closed(u64),
    /// The copy at `key` with tag `etag`: deleted only if it is still that copy (an
    /// export of another file to the same key may have replaced it meanwhile).
    Deleted {
        repo: u32,
        key: String,
        etag: String,
    },
}

/// Notes what the mover may act on when `i` loses its last name.
pub fn note_gone(noted: &mut Vec<Noted>, i: &Inode) {
    if let Some(h) = i.hsm.as_ref().filter(|h| !h.stored.is_empty()) {
        if i.kind == FileKind::File {
            noted.push(Noted::Deleted {
                repo: h.repo,
                key: h.stored.clone(),
                etag: h.etag.clone(),
            });
        }
    }
}

/// One association as the `repos` table keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RepoRecord {
    pub dir: u64,
    /// The path the linker named (for listings; the directory may be renamed since).
    pub path: String,
    pub url: String,
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub auto_import: u32,
    pub auto_export: u32,
    pub interval_secs: u32,
    /// The import's position: the last key it applied (resumes after it).
    pub cursor: String,
    /// Whether an import pass is under way (resumed after a restart).
    pub importing: bool,
    pub imported: u64,
    pub exported: u64,
}

impl RepoRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.dir.to_le_bytes());
        for s in [
            &self.path,
            &self.url,
            &self.endpoint,
            &self.region,
            &self.access_key_id,
            &self.secret_access_key,
            &self.cursor,
        ] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        for v in [self.auto_import, self.auto_export, self.interval_secs] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(self.importing as u8);
        out.extend_from_slice(&self.imported.to_le_bytes());
        out.extend_from_slice(&self.exported.to_le_bytes());
        out
    }

    pub fn decode(b: &[u8]) -> Result<RepoRecord, CorruptHsm> {
        let mut r = BodyReader::new(b);
        let short = |_| CorruptHsm("association truncated");
        let dir = r.u64().map_err(short)?;
        let mut text = || -> Result<String, CorruptHsm> {
            let n = r.u32().map_err(short)? as usize;
            let bytes = r.bytes(n).map_err(short)?;
            String::from_utf8(bytes.to_vec()).map_err(|_| CorruptHsm("association text"))
        };
        let (path, url, endpoint, region) = (text()?, text()?, text()?, text()?);
        let (access_key_id, secret_access_key, cursor) = (text()?, text()?, text()?);
        Ok(RepoRecord {
            dir,
            path,
            url,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            cursor,
            auto_import: r.u32().map_err(short)?,
            auto_export: r.u32().map_err(short)?,
            interval_secs: r.u32().map_err(short)?,
            importing: r.bytes(1).map_err(short)?[0] != 0,
            imported: r.u64().map_err(short)?,
            exported: r.u64().map_err(short)?,
        })
    }
}

/// One object an import applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportEntry {
    pub key: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub etag: String,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// The data mover's changes to the namespace (`Admin::Hsm`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HsmAdmin {
    /// Adds (or rewrites) association `id`; a new one marks its directory, which must
    /// be empty and outside any linked tree.
    PutRepo { id: u32, rec: RepoRecord, new: bool },
    /// Forgets association `id` and unmarks its directory.
    DelRepo { id: u32 },
    /// Applies a page of a listing below association `repo`, then keeps `cursor`
    /// (and whether the pass is over) in its record.
    Import {
        repo: u32,
        entries: Vec<ImportEntry>,
        cursor: String,
        finished: bool,
    },
    /// A released file's data is all loaded from version `version`.
    Loaded { ino: u64, version: u64 },
    /// A file was exported at version `version` to `key`, now tagged `etag`.
    Exported {
        ino: u64,
        version: u64,
        key: String,
        etag: String,
    },
    /// Frees an exported, unchanged, closed file's objects.
    Release { ino: u64 },
    /// The repository's object of a dirty file changed: a conflict.
    Conflict { ino: u64 },
    /// An automatic import found the object of file `ino` (named `name` in `dir`,
    /// imported or exported with tag `etag`) deleted from the repository: the file
    /// goes too if it is clean and closed; a dirty one is a conflict.
    Vanished {
        dir: u64,
        name: Vec<u8>,
        ino: u64,
        etag: String,
    },
}

const ROOT: Creds = Creds {
    uid: 0,
    gid: 0,
    groups: Vec::new(),
};

impl Namespace {
    pub(super) fn hsm_admin(
        &mut self,
        w: &mut WriteTables<'_>,
        now: i64,
        op: &HsmAdmin,
    ) -> Res<Reply> {
        let c = Ctx {
            creds: &ROOT,
            now,
            client: 0,
        };
        match op {
            HsmAdmin::PutRepo { id, rec, new } => {
                let mut dir = super::ns::get_dir(&w.view, rec.dir)?;
                if *new {
                    need(dir.hsm.is_none(), EEXIST)?;
                    need(super::ns::is_empty_dir(&w.view, dir.ino)?, ENOTEMPTY)?;
                    dir.hsm = Some(HsmRecord {
                        repo: *id,
                        ..HsmRecord::default()
                    });
                    w.put_inode(&dir)?;
                }
                w.apply(Change::PutRepo(*id, rec.encode()))?;
                Ok(Reply::Done)
            }
            HsmAdmin::DelRepo { id } => {
                let rec = w.repo(*id)?.ok_or(Fail::Errno(ENOENT))?;
                if let Some(mut dir) = w.view.inode(rec.dir)? {
                    dir.hsm = None;
                    w.put_inode(&dir)?;
                }
                w.apply(Change::DelRepo(*id))?;
                Ok(Reply::Done)
            }
            HsmAdmin::Import {
                repo,
                entries,
                cursor,
                finished,
            } => {
                let mut rec = w.repo(*repo)?.ok_or(Fail::Errno(ENOENT))?;
                let mut applied = 0;
                for e in entries {
                    if self.import_one(w, &c, *repo, rec.dir, e)? {
                        applied += 1;
                    }
                }
                rec.cursor = cursor.clone();
                rec.importing = !finished;
                rec.imported += applied;
                w.apply(Change::PutRepo(*repo, rec.encode()))?;
                Ok(Reply::Done)
            }
            HsmAdmin::Loaded { ino, version } => {
                let mut i = get(&w.view, *ino)?;
                let h = i.hsm.as_ref().ok_or(Fail::Errno(EINVAL))?;
                need(h.version == *version, EAGAIN)?;
                unrelease(&mut i);
                w.put_inode(&i)?;
                Ok(Reply::Done)
            }
            HsmAdmin::Exported {
                ino,
                version,
                key,
                etag,
            } => {
                let mut i = get(&w.view, *ino)?;
                let writers = self.opens.has_writer(*ino);
                let h = i.hsm.as_mut().ok_or(Fail::Errno(EINVAL))?;
                need(h.version == *version && !writers, EAGAIN)?;
                h.flags &= !(DIRTY | CONFLICT | IMPORTED);
                h.stored = key.clone();
                h.etag = etag.clone();
                w.put_inode(&i)?;
                let mut rec = w.repo(h_repo(&i))?.ok_or(Fail::Errno(ENOENT))?;
                rec.exported += 1;
                w.apply(Change::PutRepo(h_repo(&i), rec.encode()))?;
                Ok(Reply::Done)
            }
            HsmAdmin::Release { ino } => self.release(w, *ino),
            HsmAdmin::Vanished {
                dir,
                name,
                ino,
                etag,
            } => {
                if w.view.dentry(*dir, name)?.map(|d| d.ino) != Some(*ino) {
                    return Ok(Reply::Done); // renamed or gone meanwhile
                }
                let mut i = get(&w.view, *ino)?;
                let Some(h) = i.hsm.as_mut() else {
                    return Ok(Reply::Done);
                };
                if h.flags & DIRTY != 0 {
                    h.flags |= CONFLICT;
                    w.put_inode(&i)?;
                    return Ok(Reply::Done);
                }
                if h.etag != *etag || self.opens.is_open(*ino) {
                    return Ok(Reply::Done); // changed since, or in use: next pass
                }
                self.unlink(w, &c, *dir, name)
            }
            HsmAdmin::Conflict { ino } => {
                let mut i = get(&w.view, *ino)?;
                if let Some(h) = i.hsm.as_mut() {
                    h.flags |= CONFLICT;
                    w.put_inode(&i)?;
                }
                Ok(Reply::Done)
            }
        }
    }

    /// Makes (or brings up to date) the released file of one listed object, and the
    /// directories above it. Whether anything changed.
    fn import_one(
        &mut self,
        w: &mut WriteTables<'_>,
        c: &Ctx<'_>,
        repo: u32,
        root: u64,
        e: &ImportEntry,
    ) -> Res<bool> {
        let mut parts: Vec<&str> = e.key.split('/').collect();
        let Some(name) = parts.pop() else {
            return Ok(false);
        };
        let mut dir = root;
        for part in parts {
            if !importable(part) {
                return Ok(false); // "a//b", "..": no such path here
            }
            dir = match w.view.dentry(dir, part.as_bytes())? {
                Some(d) if d.kind == FileKind::Dir => d.ino,
                Some(_) => return Ok(false), // a file where the key wants a directory
                None => match self.mkdir(w, c, dir, part.as_bytes(), 0o755)? {
                    Reply::Attr(a) => a.ino,
                    _ => return Err(Fail::Errno(EIO)),
                },
            };
        }
        if !importable(name) {
            return Ok(false);
        }
        if let Some(d) = w.view.dentry(dir, name.as_bytes())? {
            return self.reimport(w, c, d.ino, e);
        }
        let mode = e.mode.map_or(0o644, |m| m & 0o7777);
        let ino = match self.create(w, c, dir, name.as_bytes(), mode, CREATE_EXCL, None)? {
            Reply::Opened { attr, .. } => attr.ino,
            _ => return Err(Fail::Errno(EIO)),
        };
        let mut i = get(&w.view, ino)?;
        fill_from(&mut i, e);
        let mut l = i.file_layout().ok_or(Fail::Errno(EIO))?;
        l.released = true;
        i.layout = l.to_bytes();
        i.hsm = Some(HsmRecord {
            repo,
            flags: IMPORTED,
            version: 0,
            key: e.key.clone(),
            stored: e.key.clone(),
            etag: e.etag.clone(),
        });
        w.put_inode(&i)?;
        Ok(true)
    }

    /// An object listed again: unchanged (same tag) leaves the file; changed replaces
    /// a clean file's data by the new object's (released again); a dirty file is a
    /// conflict, and neither side is touched.
    fn reimport(
        &mut self,
        w: &mut WriteTables<'_>,
        c: &Ctx<'_>,
        ino: u64,
        e: &ImportEntry,
    ) -> Res<bool> {
        let mut i = get(&w.view, ino)?;
        if i.kind != FileKind::File {
            return Ok(false);
        }
        let Some(h) = i.hsm.clone() else {
            return Ok(false);
        };
        if h.stored == e.key && h.etag == e.etag {
            return Ok(false);
        }
        if h.flags & DIRTY != 0 || self.opens.is_open(ino) {
            let h = i.hsm.as_mut().expect("checked");
            h.flags |= CONFLICT;
            w.put_inode(&i)?;
            return Ok(false);
        }
        self.free_objects(w, &mut i)?;
        fill_from(&mut i, e);
        i.ctime = c.now;
        let h = i.hsm.as_mut().expect("checked");
        h.flags = IMPORTED;
        h.version += 1;
        h.stored = e.key.clone();
        h.etag = e.etag.clone();
        w.put_inode(&i)?;
        Ok(true)
    }

    fn release(&mut self, w: &mut WriteTables<'_>, ino: u64) -> Res<Reply> {
        let mut i = get(&w.view, ino)?;
        need(i.kind == FileKind::File, EINVAL)?;
        let h = i.hsm.as_ref().ok_or(Fail::Errno(ENODATA))?;
        // Only a copy the repository holds, unchanged, and nobody using the objects.
        need(h.flags & DIRTY == 0 && !h.stored.is_empty(), EBUSY)?;
        need(!self.opens.is_open(ino), EBUSY)?;
        if is_released(&i) {
            return Ok(Reply::Done);
        }
        self.free_objects(w, &mut i)?;
        w.put_inode(&i)?;
        Ok(Reply::Done)
    }

    /// Gives the file new, empty objects of the same geometry, marked released, and
    /// hands the old ones to the destroyer (under a fresh key of the destroy table:
    /// its objects are not the file's any more, so a load into the new ones never
    /// races their destruction).
    fn free_objects(&mut self, w: &mut WriteTables<'_>, i: &mut Inode) -> Res<()> {
        let old = i.file_layout().ok_or(Fail::Errno(EINVAL))?;
        let g = old.geometry();
        let spec = StripeSpec {
            stripe_size: g.stripe_size,
            count: StripeCount::Count(g.objects.len() as u32),
            first: FirstOst::Any,
            mirrors: old.mirrors.len() as u32,
        };
        let layout: FileLayout =
            resolve(w, &mut self.ids, &mut self.osts, &spec)?.map_err(Fail::Errno)?;
        let key = self.ids.take(w, super::alloc::IdSpace::Inode)?;
        w.apply(Change::PutDestroy(key, i.layout.clone()))?;
        i.layout = FileLayout {
            released: true,
            ..layout
        }
        .to_bytes();
        Ok(())
    }
}

/// Whether a key's component can be a name here.
fn importable(part: &str) -> bool {
    nacre_proto::meta::validate_name(part.as_bytes()).is_ok() && part != "." && part != ".."
}

fn h_repo(i: &Inode) -> u32 {
    i.hsm.as_ref().map_or(0, |h| h.repo)
}

/// Size, times, and the POSIX metadata the object carries.
fn fill_from(i: &mut Inode, e: &ImportEntry) {
    i.size = e.size;
    i.mtime = e.mtime_ns;
    i.atime = e.mtime_ns;
    if let Some(m) = e.mode {
        i.mode = m & 0o7777;
    }
    if let Some(u) = e.uid {
        i.uid = u;
    }
    if let Some(g) = e.gid {
        i.gid = g;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let h = HsmRecord {
            repo: 1,
            flags: DIRTY | CONFLICT,
            version: 9,
            key: "a/b".into(),
            stored: "a/c".into(),
            etag: "e".into(),
        };
        assert_eq!(HsmRecord::decode(&h.encode()).unwrap(), h);
        let r = RepoRecord {
            dir: 5,
            url: "s3://b/p/".into(),
            cursor: "x/y".into(),
            importing: true,
            imported: 3,
            auto_export: 7,
            ..RepoRecord::default()
        };
        assert_eq!(RepoRecord::decode(&r.encode()).unwrap(), r);
        let b = h.encode();
        for cut in 0..b.len() {
            assert!(HsmRecord::decode(&b[..cut]).is_err());
        }
    }
}
