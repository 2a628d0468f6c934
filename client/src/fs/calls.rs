//! The client's namespace calls: by path for applications (names, attributes,
//! layouts, usage), and by inode as a mount's caller.

use std::io;

use nacre_proto::bootstrap::TargetKind;
use nacre_proto::layout::{FileLayout, StripeSpec};
use nacre_proto::meta::{self, Attr, CheckReport, Creds, DirEntry, Reply, Request, SetAttr};

use super::errors::{attr_of, protocol};
use super::mirrors::MirrorSet;
use super::{target_name, Client, FsStat, Layout, TargetUsage};
use crate::objects::OstStatfs;
use crate::rpc::ClientError;

impl Client {
    pub fn stat(&self, path: &str) -> io::Result<Attr> {
        self.with_conn(true, |c| c.ns.stat(path))
    }

    pub fn mkdir(&self, path: &str, mode: u32) -> io::Result<Attr> {
        self.modify(|c| c.ns.mkdir(path, mode))
    }

    pub fn rmdir(&self, path: &str) -> io::Result<()> {
        self.modify(|c| c.ns.rmdir(path))
    }

    pub fn unlink(&self, path: &str) -> io::Result<()> {
        self.modify(|c| c.ns.unlink(path))
    }

    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.modify(|c| c.ns.rename(from, to, 0))
    }

    /// Renames `from` to `to` unless `to` exists (EEXIST).
    pub fn rename_noreplace(&self, from: &str, to: &str) -> io::Result<()> {
        self.modify(|c| c.ns.rename(from, to, meta::RENAME_NOREPLACE))
    }

    pub fn readdir(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        self.with_conn(true, |c| c.ns.readdir(path))
    }

    /// Creates a symbolic link at `link` pointing to `target`.
    pub fn symlink(&self, target: &str, link: &str) -> io::Result<Attr> {
        self.modify(|c| c.ns.symlink(target.as_bytes(), link))
    }

    pub fn readlink(&self, path: &str) -> io::Result<Vec<u8>> {
        self.with_conn(true, |c| c.ns.readlink(path))
    }

    /// A hard link `new` to the file at `existing`.
    pub fn link(&self, existing: &str, new: &str) -> io::Result<Attr> {
        self.modify(|c| c.ns.link(existing, new))
    }

    /// Changes the attributes `attr.mask` names; a size change truncates the objects.
    pub fn setattr(&self, path: &str, attr: SetAttr) -> io::Result<Attr> {
        let ino = self.with_conn(true, |c| c.ns.resolve(path))?;
        self.setattr_ino(ino, attr)
    }

    /// The MDS first (it checks permissions and records the size), then the objects:
    /// a refused truncate must not have trimmed data. A crash in between leaves the
    /// objects longer than the size, which reads never pass.
    pub(super) fn setattr_ino(&self, ino: u64, attr: SetAttr) -> io::Result<Attr> {
        let req = Request::Setattr { ino, attr };
        let out = attr_of(self.loaded_first(|| Ok(ino), || self.modify(|c| c.ns.call(&req)))?)?;
        self.trim_to(ino, &attr)?;
        Ok(out)
    }

    /// Sets the objects' lengths for a setattr that changed the size.
    fn trim_to(&self, ino: u64, attr: &SetAttr) -> io::Result<()> {
        if attr.mask & meta::set::SIZE != 0 {
            if let Some(layout) = self.file_layout(ino)? {
                let set = MirrorSet::new(layout, &self.map());
                self.truncate_objects(ino, &set, attr.size)?;
            }
        }
        Ok(())
    }

    pub fn truncate(&self, path: &str, size: u64) -> io::Result<()> {
        let attr = SetAttr {
            mask: meta::set::SIZE,
            size,
            ..Default::default()
        };
        self.setattr(path, attr).map(|_| ())
    }

    /// Sets each object's size, in every mirror in sync, so file `ino` is `size` bytes
    /// long (a mirror with a down OST is marked stale).
    pub(super) fn truncate_objects(&self, ino: u64, set: &MirrorSet, size: u64) -> io::Result<()> {
        let per = set.geometry().objects.len();
        let count = (per * set.mirrors()) as u64;
        self.change_objects(count, |c, keys| {
            c.each_mirror(ino, set, |c, m, layout| {
                c.truncate_stripes(layout, size, keys, m * per)
            })
        })
    }

    fn file_layout(&self, ino: u64) -> io::Result<Option<FileLayout>> {
        match self.meta(true, &Request::GetLayout { ino })? {
            Reply::Layout(l) => Ok(Some(l)),
            _ => Ok(None),
        }
    }

    /// Sets the striping of a file (before its first write) or a directory's default.
    pub fn set_layout(&self, path: &str, spec: StripeSpec) -> io::Result<()> {
        let ino = self.with_conn(true, |c| c.ns.resolve(path))?;
        // Under a replay key: on a file, a second application would allocate new objects.
        self.modify(|c| c.ns.call(&Request::SetLayout { ino, spec }))
            .map(|_| ())
    }

    /// A file's objects or a directory's default striping (ENODATA: none set).
    pub fn get_layout(&self, path: &str) -> io::Result<Layout> {
        let ino = self.with_conn(true, |c| c.ns.resolve(path))?;
        match self.meta(true, &Request::GetLayout { ino })? {
            Reply::Layout(l) => Ok(Layout::File(l)),
            Reply::DefaultLayout(s) => Ok(Layout::Dir(s)),
            other => Err(protocol(format!("expected a layout, got {other:?}"))),
        }
    }

    /// Usage of every target: the MDT's inodes, and each OST's bytes asked of its server
    /// (a target that does not answer shows what its last heartbeat told the MGS).
    pub fn df(&self) -> io::Result<Vec<TargetUsage>> {
        let map = self.refresh_map()?;
        let mut out = Vec::new();
        for t in &map.targets {
            let (total, free) = match t.kind {
                TargetKind::Mdt => match self.meta(true, &Request::Statfs)? {
                    Reply::Statfs(s) => (s.inodes_used + s.inodes_free, s.inodes_free),
                    other => return Err(protocol(format!("expected statfs, got {other:?}"))),
                },
                TargetKind::Ost => match self.ost_statfs(t.index) {
                    Ok(s) => (s.bytes_total, s.bytes_avail),
                    Err(_) => (t.capacity, t.free),
                },
            };
            out.push(TargetUsage {
                name: format!("{}-{}", map.fsname, target_name(t.kind, t.index)),
                kind: t.kind,
                index: t.index,
                state: t.state,
                total,
                free,
            });
        }
        Ok(out)
    }

    fn ost_statfs(&self, ost: u32) -> Result<OstStatfs, ClientError> {
        self.on_conn(|c| {
            let route = c.route(ost)?;
            c.ns.ep.ost_statfs(&route)
        })
    }

    /// The file system's totals in one MDS round trip: the MDS adds up the OSTs' space
    /// from the cluster map, as Lustre's MDT aggregates its OSTs' statfs, so that a
    /// `df` (or any statfs on a mount) does not ask every OST. `df` asks them live.
    pub fn statfs(&self) -> io::Result<FsStat> {
        match self.meta(true, &Request::Statfs)? {
            Reply::Statfs(s) => Ok(FsStat {
                bytes_total: s.bytes_total,
                bytes_free: s.bytes_free,
                files_total: s.inodes_used + s.inodes_free,
                files_free: s.inodes_free,
                name_max: s.name_max,
            }),
            other => Err(protocol(format!("expected statfs, got {other:?}"))),
        }
    }

    /// The consistency checker (`nacre check`; root only): starts a run when `start` and
    /// none is running, and returns the current or last run's report with its findings
    /// from index `from` on.
    pub fn check(
        &self,
        start: bool,
        fix: bool,
        keep_orphans: bool,
        from: u32,
    ) -> io::Result<CheckReport> {
        let req = Request::Check {
            start,
            fix,
            keep_orphans,
            from,
        };
        match self.meta(true, &req)? {
            Reply::Check(r) => Ok(r),
            other => Err(protocol(format!("expected a check report, got {other:?}"))),
        }
    }

    /// One MDS request by inode, as `creds` (a mount's caller): reads retried as
    /// idempotent, changes under a replay key. Setting a file's size here changes
    /// only the MDS's record: [`Client::setattr_as`] also trims the objects.
    pub fn request_as(&self, creds: &Creds, req: &Request) -> io::Result<Reply> {
        match req.is_read_only() {
            true => self.with_conn(true, |c| c.ns.call_as(creds, req)),
            false => self.modify(|c| c.ns.call_as(creds, req)),
        }
    }

    /// Sets inode `ino`'s attributes as `creds` (a mount's caller); a new size then
    /// trims or extends the objects, as [`Client::setattr`] does.
    pub fn setattr_as(&self, creds: &Creds, ino: u64, attr: SetAttr) -> io::Result<Attr> {
        let req = Request::Setattr { ino, attr };
        let out = attr_of(self.loaded_first(|| Ok(ino), || self.request_as(creds, &req))?)?;
        self.trim_to(ino, &attr)?;
        Ok(out)
    }
}
