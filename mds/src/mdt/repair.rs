//! Repairs the consistency checker asks of the committer (`Admin::SetLinks`, `Adopt`,
//! `AdoptObject`, `RaiseMark`): each one transaction step like any operation, each
//! re-checking what it can against the live namespace, since the checker found the
//! problem in an older snapshot.

use super::alloc::IdSpace;
use super::inode::{ORPHAN, WRITTEN};
use super::ns::{add_to_dir, get, get_dir, need, Ctx, Fail, Namespace, Res, ROOT_INO};
use super::redo::Change;
use super::store::{View, WriteTables};
use nacre_proto::layout::{ObjectRef, StripeSpec, StripedLayout};
use nacre_proto::meta::errno::{EAGAIN, EEXIST, EIO, ENOTDIR};
use nacre_proto::meta::{FileKind, Reply};

/// Where the checker puts what no name points at, as `e2fsck` and Lustre's lfsck do.
pub const LOST_FOUND: &[u8] = b"lost+found";

impl Namespace {
    /// `/lost+found`, made (root's, 0700) when missing.
    fn lost_found(&mut self, w: &mut WriteTables<'_>, c: &Ctx<'_>) -> Res<u64> {
        if let Some(d) = w.view.dentry(ROOT_INO, LOST_FOUND)? {
            need(d.kind == FileKind::Dir, ENOTDIR)?;
            return Ok(d.ino);
        }
        match self.mkdir(w, c, ROOT_INO, LOST_FOUND, 0o700)? {
            Reply::Attr(a) => Ok(a.ino),
            _ => Err(Fail::Errno(EIO)),
        }
    }

    /// Sets the link count of `ino` to `to` if it still is `from` (EAGAIN if a change
    /// since the scan moved it: the next run looks again).
    pub fn set_links(
        &mut self,
        w: &mut WriteTables<'_>,
        ino: u64,
        from: u32,
        to: u32,
    ) -> Res<Reply> {
        let mut i = get(&w.view, ino)?;
        need(i.nlink == from, EAGAIN)?;
        i.nlink = to;
        w.put_inode(&i)?;
        Ok(Reply::Done)
    }

    /// Links `ino`, which no name points at, as `/lost+found/#<ino>` with link count
    /// `nlink` (1 for a file; a directory's 2 + subdirectories).
    pub fn adopt(
        &mut self,
        w: &mut WriteTables<'_>,
        c: &Ctx<'_>,
        ino: u64,
        nlink: u32,
    ) -> Res<Reply> {
        let mut i = get(&w.view, ino)?;
        let dir = self.lost_found(w, c)?;
        let name = format!("#{ino}");
        need(w.view.dentry(dir, name.as_bytes())?.is_none(), EEXIST)?;
        if i.is_dir() {
            i.parent = dir;
        }
        if i.flags & ORPHAN != 0 {
            // Named again: no longer destroyed at its last close.
            i.flags &= !ORPHAN;
            w.apply(Change::DelOrphan(ino))?;
        }
        i.nlink = nlink;
        i.ctime = c.now;
        w.put_inode(&i)?;
        add_to_dir(w, c, dir, name.as_bytes(), &i)?;
        Ok(Reply::Done)
    }

    /// Makes `/lost+found/ost<ost>-<oid as 16 hex digits>`, a file of one stripe whose
    /// only object is the orphan `oid` on `ost`, `size` bytes long.
    pub fn adopt_object(
        &mut self,
        w: &mut WriteTables<'_>,
        c: &Ctx<'_>,
        ost: u32,
        oid: u64,
        size: u64,
    ) -> Res<Reply> {
        let dir = self.lost_found(w, c)?;
        let p = get_dir(&w.view, dir)?;
        let name = format!("ost{ost}-{oid:016x}");
        need(w.view.dentry(dir, name.as_bytes())?.is_none(), EEXIST)?;
        let mut i = self.new_inode(w, c, FileKind::File, 0o600, &p)?;
        i.layout = StripedLayout {
            stripe_size: StripeSpec::default().stripe_size,
            objects: vec![ObjectRef { ost, oid }],
        }
        .to_bytes();
        i.size = size;
        i.flags |= WRITTEN;
        w.put_inode(&i)?;
        add_to_dir(w, c, dir, name.as_bytes(), &i)?;
        Ok(Reply::Done)
    }

    /// Moves `ost`'s id mark above `oid`, which a file names: never handed out again.
    pub fn raise_mark(&mut self, w: &mut WriteTables<'_>, ost: u32, oid: u64) -> Res<Reply> {
        self.ids.raise_above(w, IdSpace::Ost(ost), oid)?;
        Ok(Reply::Done)
    }
}
