//! Opening files: by path (with O_CREAT, created and opened in one MDS request), and
//! by inode for a mount.

use std::io;

use nacre_proto::layout::StripeSpec;
use nacre_proto::meta::{self, Creds, Reply, Request};

use super::errors::protocol;
use super::{Client, File, OpenOptions};

impl Client {
    /// Opens (and with O_CREAT creates) the file at `path`.
    pub fn open(&self, path: &str, opt: &OpenOptions) -> io::Result<File> {
        let flags = opt.flags;
        if flags & libc::O_CREAT == 0 {
            let ino = self.with_conn(true, |c| c.ns.resolve(path))?;
            return self.open_ino(ino, flags);
        }
        // Created and opened in one request: the creator may write a file whose new
        // mode denies it (POSIX), and nothing is left behind by a refused open.
        let ino_of = || self.with_conn(true, |c| c.ns.resolve(path));
        let opened = self.loaded_first(ino_of, || {
            self.modify(|c| {
                let (parent, name) = c.ns.parent_of(path)?;
                let req = create_open_request(parent, &name, opt.mode, flags, opt.layout);
                c.ns.call(&req)
            })
        })?;
        let ino = match &opened {
            Reply::Opened { attr, .. } => attr.ino,
            other => return Err(protocol(format!("expected an open handle, got {other:?}"))),
        };
        self.file_from(ino, flags, opened)
    }

    /// Opens inode `ino` (found by [`Client::request_as`] lookups, as a mount does)
    /// with open `flags`; O_TRUNC empties it.
    pub fn open_ino(&self, ino: u64, flags: i32) -> io::Result<File> {
        // Under a replay key: a retried open must not leave a second handle behind.
        let opened = self.loaded_first(
            || Ok(ino),
            || self.modify(|c| c.ns.call(&open_request(ino, flags))),
        )?;
        self.file_from(ino, flags, opened)
    }

    /// As [`Client::open_ino`], as `creds` (a mount's caller).
    pub fn open_ino_as(&self, creds: &Creds, ino: u64, flags: i32) -> io::Result<File> {
        let opened = self.loaded_first(
            || Ok(ino),
            || self.request_as(creds, &open_request(ino, flags)),
        )?;
        self.file_from(ino, flags, opened)
    }

    /// Creates `name` in directory `parent` as `creds` and opens it with `flags` in
    /// one MDS request (a mount's create): the creator may write a file whose new
    /// mode denies it, as POSIX has it. O_EXCL fails on an existing name; without it
    /// an existing file is opened (and with O_TRUNC emptied).
    pub fn create_open(
        &self,
        creds: &Creds,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
        layout: Option<StripeSpec>,
    ) -> io::Result<File> {
        let req = create_open_request(parent, name, mode, flags, layout);
        let lookup = Request::Lookup {
            parent,
            name: name.to_vec(),
        };
        let ino_of = || match self.request_as(creds, &lookup)? {
            Reply::Attr(a) => Ok(a.ino),
            other => Err(protocol(format!("expected attributes, got {other:?}"))),
        };
        let opened = self.loaded_first(ino_of, || self.request_as(creds, &req))?;
        let ino = match &opened {
            Reply::Opened { attr, .. } => attr.ino,
            other => return Err(protocol(format!("expected an open handle, got {other:?}"))),
        };
        self.file_from(ino, flags, opened)
    }

    /// Creates `path` exclusively and opens it for reading and writing.
    pub fn create(&self, path: &str, mode: u32, layout: Option<StripeSpec>) -> io::Result<File> {
        let opt = OpenOptions {
            flags: libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            mode,
            layout,
        };
        self.open(path, &opt)
    }
}

fn open_request(ino: u64, flags: i32) -> Request {
    Request::Open {
        ino,
        flags: (flags as u32) & (meta::O_ACCMODE | meta::O_TRUNC),
    }
}

/// The create-and-open request of `name` in `parent` for open `flags`.
fn create_open_request(
    parent: u64,
    name: &[u8],
    mode: u32,
    flags: i32,
    layout: Option<StripeSpec>,
) -> Request {
    let open_flags = (flags as u32) & (meta::O_ACCMODE | meta::O_TRUNC);
    let mut create = meta::CREATE_OPEN | (open_flags << meta::CREATE_OPEN_SHIFT);
    if flags & libc::O_EXCL != 0 {
        create |= meta::CREATE_EXCL;
    }
    Request::Create {
        parent,
        name: name.to_vec(),
        mode,
        flags: create,
        layout,
    }
}
