//! The client's metadata half at the level of paths: a [`NamespaceClient`] resolves paths
//! component by component against the MDS, with a small dentry cache, and runs the
//! namespace operations with the caller's credentials. Errors are the MDS's errno.
//!
//! Dentry cache: positive entries only (a name that was found), kept for
//! [`DENTRY_TTL`] and dropped at once by this client's own unlink, rmdir and rename.
//! Another client's rename or unlink can therefore be seen up to one TTL late by path
//! resolution here (the operation on the stale inode then fails with ENOENT, or acts on
//! the inode the name pointed to a moment ago); no negative entries are kept, so a name
//! created elsewhere is seen at once. Attributes are never cached: stat always asks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nacre_proto::bootstrap::{ClusterMap, Role, RoleKind};
use nacre_proto::layout::StripeSpec;
use nacre_proto::meta::{
    Attr, Creds, DirEntry, FileKind, Head, ReplayKey, Reply, Request, CREATE_EXCL, NAME_MAX,
    PATH_MAX, READDIR_MAX_ENTRIES,
};

use crate::rpc::{ClientEndpoint, ClientError, SessionId};

/// How long a resolved name is trusted without asking the MDS again.
pub const DENTRY_TTL: Duration = Duration::from_secs(1);
/// Entries the dentry cache holds at most (cleared when full: a bound, not an LRU).
const DENTRY_MAX: usize = 65_536;
/// The namespace's root inode.
pub const ROOT: u64 = 1;

/// Paths and namespace operations over one MDS session: the client side of the
/// namespace that the MDS keeps (`nacre_mds::mdt::Namespace`).
pub struct NamespaceClient {
    pub ep: ClientEndpoint,
    mds: SessionId,
    head: Head,
    dentries: HashMap<(u64, Vec<u8>), (u64, Instant)>,
    /// The replay key for the next changing request (see [`NamespaceClient::replay_next`]).
    replay: Option<ReplayKey>,
}

impl NamespaceClient {
    /// Connects to the MDS that `map` names (role mds0), as `creds`.
    pub fn connect(
        mut ep: ClientEndpoint,
        map: &ClusterMap,
        creds: Creds,
    ) -> Result<NamespaceClient, ClientError> {
        let role = Role {
            kind: RoleKind::Mds,
            index: 0,
        };
        let server = map
            .server(role)
            .ok_or_else(|| ClientError::Protocol("no MDS (mds0) in the cluster map".into()))?;
        let core = server
            .cores
            .first()
            .ok_or_else(|| ClientError::Protocol("the MDS has no core in the map".into()))?;
        let mds = ep.connect(core)?;
        Ok(NamespaceClient {
            ep,
            mds,
            head: Head {
                creds,
                epoch: server.epoch,
                replay: None,
            },
            dentries: HashMap::new(),
            replay: None,
        })
    }

    /// Sends the next changing request under `key`, so that the MDS answers a retry
    /// of it from its reply cache rather than applying it twice. Used once: a second
    /// changing request goes without a key.
    pub fn replay_next(&mut self, key: Option<ReplayKey>) {
        self.replay = key;
    }

    /// One request to the MDS with this namespace's credentials and epoch.
    pub fn call(&mut self, req: &Request) -> Result<Reply, ClientError> {
        let mut head = self.head.clone();
        if !req.is_read_only() {
            head.replay = self.replay.take();
        }
        self.ep.meta(self.mds, &head, req)
    }

    /// One request as `creds` instead of this namespace's own (a mount serves many
    /// users through one client).
    pub fn call_as(&mut self, creds: &Creds, req: &Request) -> Result<Reply, ClientError> {
        let own = std::mem::replace(&mut self.head.creds, creds.clone());
        let out = self.call(req);
        self.head.creds = own;
        out
    }

    /// The inode `path` names (absolute, '/'-separated).
    pub fn resolve(&mut self, path: &str) -> Result<u64, ClientError> {
        let mut ino = ROOT;
        for name in components(path)? {
            ino = self.lookup(ino, name)?;
        }
        Ok(ino)
    }

    /// The parent directory's inode and the last name of `path`.
    pub fn parent_of(&mut self, path: &str) -> Result<(u64, Vec<u8>), ClientError> {
        self.parent(path)
    }

    fn parent(&mut self, path: &str) -> Result<(u64, Vec<u8>), ClientError> {
        let parts = components(path)?;
        let (last, dirs) = parts
            .split_last()
            .ok_or(ClientError::Status(libc::EINVAL))?;
        let mut ino = ROOT;
        for name in dirs {
            ino = self.lookup(ino, name)?;
        }
        Ok((ino, last.to_vec()))
    }

    fn lookup(&mut self, dir: u64, name: &[u8]) -> Result<u64, ClientError> {
        let key = (dir, name.to_vec());
        if let Some(&(ino, at)) = self.dentries.get(&key) {
            if at.elapsed() < DENTRY_TTL {
                return Ok(ino);
            }
        }
        let req = Request::Lookup {
            parent: dir,
            name: name.to_vec(),
        };
        let ino = attr_of(self.call(&req)?)?.ino;
        self.remember(key.0, key.1, ino);
        Ok(ino)
    }

    fn remember(&mut self, dir: u64, name: Vec<u8>, ino: u64) {
        if self.dentries.len() >= DENTRY_MAX {
            self.dentries.clear();
        }
        self.dentries.insert((dir, name), (ino, Instant::now()));
    }

    fn forget(&mut self, dir: u64, name: &[u8]) {
        self.dentries.remove(&(dir, name.to_vec()));
    }

    /// The attributes of `path`, always from the MDS: one lookup of the last name
    /// (its reply carries the attributes) under a parent resolved through the cache.
    pub fn stat(&mut self, path: &str) -> Result<Attr, ClientError> {
        if components(path)?.is_empty() {
            return attr_of(self.call(&Request::Getattr { ino: ROOT })?);
        }
        let (parent, name) = self.parent(path)?;
        let req = Request::Lookup {
            parent,
            name: name.clone(),
        };
        let attr = attr_of(self.call(&req)?)?;
        self.remember(parent, name, attr.ino);
        Ok(attr)
    }

    pub fn mkdir(&mut self, path: &str, mode: u32) -> Result<Attr, ClientError> {
        let (parent, name) = self.parent(path)?;
        attr_of(self.call(&Request::Mkdir { parent, name, mode })?)
    }

    /// Creates a regular file (EEXIST if the name exists: exclusive).
    pub fn create(&mut self, path: &str, mode: u32) -> Result<Attr, ClientError> {
        self.create_with(path, mode, true, None)
    }

    /// Creates a regular file with `layout` (else the directory's default); without
    /// `excl`, an existing file of that name is returned instead.
    pub fn create_with(
        &mut self,
        path: &str,
        mode: u32,
        excl: bool,
        layout: Option<StripeSpec>,
    ) -> Result<Attr, ClientError> {
        let (parent, name) = self.parent(path)?;
        let req = Request::Create {
            parent,
            name: name.clone(),
            mode,
            flags: if excl { CREATE_EXCL } else { 0 },
            layout,
        };
        let attr = attr_of(self.call(&req)?)?;
        self.remember(parent, name, attr.ino);
        Ok(attr)
    }

    /// A symbolic link at `path` to `target`.
    pub fn symlink(&mut self, target: &[u8], path: &str) -> Result<Attr, ClientError> {
        let (parent, name) = self.parent(path)?;
        let req = Request::Symlink {
            parent,
            name,
            target: target.to_vec(),
        };
        attr_of(self.call(&req)?)
    }

    /// A FIFO, socket or device node at `path` (`kind` one of the special kinds; `rdev`
    /// the device number of a device node). Device nodes need root, as on Linux.
    pub fn mknod(
        &mut self,
        path: &str,
        kind: FileKind,
        mode: u32,
        rdev: u64,
    ) -> Result<Attr, ClientError> {
        let (parent, name) = self.parent(path)?;
        let req = Request::Mknod {
            parent,
            name: name.clone(),
            kind,
            mode,
            rdev,
        };
        let attr = attr_of(self.call(&req)?)?;
        self.remember(parent, name, attr.ino);
        Ok(attr)
    }

    pub fn readlink(&mut self, path: &str) -> Result<Vec<u8>, ClientError> {
        let ino = self.resolve(path)?;
        match self.call(&Request::Readlink { ino })? {
            Reply::Target(t) => Ok(t),
            other => Err(ClientError::Protocol(format!(
                "expected a link target, got {other:?}"
            ))),
        }
    }

    /// A hard link at `new` to the inode at `existing`.
    pub fn link(&mut self, existing: &str, new: &str) -> Result<Attr, ClientError> {
        let ino = self.resolve(existing)?;
        let (new_parent, new_name) = self.parent(new)?;
        let req = Request::Link {
            ino,
            new_parent,
            new_name,
        };
        attr_of(self.call(&req)?)
    }

    pub fn unlink(&mut self, path: &str) -> Result<(), ClientError> {
        let (parent, name) = self.parent(path)?;
        self.forget(parent, &name);
        self.call(&Request::Unlink { parent, name }).map(|_| ())
    }

    pub fn rmdir(&mut self, path: &str) -> Result<(), ClientError> {
        let (parent, name) = self.parent(path)?;
        self.forget(parent, &name);
        self.call(&Request::Rmdir { parent, name }).map(|_| ())
    }

    /// Renames `from` to `to`; `flags` may hold RENAME_NOREPLACE.
    pub fn rename(&mut self, from: &str, to: &str, flags: u32) -> Result<(), ClientError> {
        let (parent, name) = self.parent(from)?;
        let (new_parent, new_name) = self.parent(to)?;
        self.forget(parent, &name);
        self.forget(new_parent, &new_name);
        let req = Request::Rename {
            parent,
            name,
            new_parent,
            new_name,
            flags,
        };
        self.call(&req).map(|_| ())
    }

    /// Every entry of the directory at `path`, page by page.
    pub fn readdir(&mut self, path: &str) -> Result<Vec<DirEntry>, ClientError> {
        let dir = self.resolve(path)?;
        let (mut cookie, mut out) = (0, Vec::new());
        loop {
            let req = Request::Readdir {
                dir,
                cookie,
                max: READDIR_MAX_ENTRIES,
            };
            let Reply::Dir {
                entries,
                next_cookie,
                eof,
            } = self.call(&req)?
            else {
                return Err(ClientError::Protocol("readdir answered no page".into()));
            };
            out.extend(entries);
            if eof {
                return Ok(out);
            }
            cookie = next_cookie;
        }
    }
}

fn attr_of(reply: Reply) -> Result<Attr, ClientError> {
    match reply {
        Reply::Attr(a) => Ok(a),
        Reply::Opened { attr, .. } => Ok(attr),
        other => Err(ClientError::Protocol(format!(
            "expected attributes, got {other:?}"
        ))),
    }
}

/// The names of an absolute path, checked: at most PATH_MAX bytes, each name 1 to
/// NAME_MAX bytes; "." is skipped and ".." refused (paths are resolved as given).
fn components(path: &str) -> Result<Vec<&[u8]>, ClientError> {
    if path.len() > PATH_MAX {
        return Err(ClientError::Status(libc::ENAMETOOLONG));
    }
    if !path.starts_with('/') || path.contains('\0') {
        return Err(ClientError::Status(libc::EINVAL));
    }
    let mut out = Vec::new();
    for name in path.split('/').filter(|n| !n.is_empty() && *n != ".") {
        if name == ".." {
            return Err(ClientError::Status(libc::EINVAL));
        }
        if name.len() > NAME_MAX {
            return Err(ClientError::Status(libc::ENAMETOOLONG));
        }
        out.push(name.as_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_checked_names() {
        assert_eq!(components("/").unwrap(), Vec::<&[u8]>::new());
        assert_eq!(
            components("/a//b/./c/").unwrap(),
            vec![&b"a"[..], b"b", b"c"]
        );
        assert!(matches!(
            components("a/b"),
            Err(ClientError::Status(libc::EINVAL))
        ));
        assert!(matches!(
            components("/a/../b"),
            Err(ClientError::Status(libc::EINVAL))
        ));
        let long = format!("/{}", "x".repeat(256));
        assert!(matches!(
            components(&long),
            Err(ClientError::Status(libc::ENAMETOOLONG))
        ));
        let deep = "/x".repeat(2049);
        assert!(matches!(
            components(&deep),
            Err(ClientError::Status(libc::ENAMETOOLONG))
        ));
    }
}
