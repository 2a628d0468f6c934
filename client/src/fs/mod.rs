//! The file system as an application sees it: a [`Client`] connected through the MGS,
//! paths and open files, and striped parallel I/O straight from and into the caller's
//! buffers. Errors are `io::Error`s carrying the errno.
//!
//! Threads: a `Client` is `Send + Sync` and cheap to clone; every thread that uses it
//! gets its own fabric endpoint (libfabric endpoints here are single-threaded by
//! design, as the engine's cores are), opened on first use and closed when the thread
//! exits or the client is dropped. Threads therefore never wait for one another on the
//! data path; what they share is the cluster map.
//!
//! Recovery: a request the server refuses as stale (ESTALE: the role changed owner), or
//! that gets no answer, makes the client refetch the cluster map, waiting for a newer
//! version for up to [`ClientConfig::recovery`], and retry on the server the map names
//! now. After a lost answer, reads (lookups, getattr, layouts, object reads) and object
//! writes are sent again as they are; namespace changes, opens, setattr, size reports
//! and closes are sent again under their replay key, which the MDS answers from its
//! reply cache if the first try was applied (docs/client.md, "Recovery").
//!
//! Here: the configuration and the public types of the API. [`Client`] and its
//! connections are in `client`, its namespace calls in `calls`, opening files in `open`,
//! an open [`File`] in `file`, data repositories in `repo`, errors in `errors`.

mod calls;
mod client;
mod errors;
mod file;
mod mirrors;
mod open;
mod repo;

use std::time::Duration;

use nacre_proto::bootstrap::{TargetKind, TargetState};
use nacre_proto::layout::{FileLayout, StripeSpec};
use nacre_proto::meta::{self, Creds};

pub use client::Client;
pub(crate) use client::Inner;
pub use errors::{errno, errno_of, Failure};
pub use file::File;

/// How a client talks to the file system.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Who the client acts as (checked by the MDS).
    pub creds: Creds,
    /// Deadline of each request.
    pub timeout: Duration,
    /// How long a failed request keeps being retried on a newer cluster map.
    pub recovery: Duration,
    /// Requests each thread keeps in flight at most.
    pub depth: usize,
    /// crc32c of bulk data: `None` is the provider's default (on everywhere but shm).
    pub checksum: Option<bool>,
    /// The local address this client's endpoints serve from (servers push to it), for
    /// the providers addressed by IP: by default `NACRE_SOURCE`, else the address that
    /// routes to the MGS (loopback when the MGS is on loopback).
    pub source: Option<String>,
    /// Where the key this client proves itself with comes from: by default
    /// `NACRE_KEY`, else `/etc/nacre/FSNAME.key`.
    pub keys: nacre_auth::KeySource,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            creds: process_creds(),
            timeout: Duration::from_secs(10),
            recovery: Duration::from_secs(60),
            depth: 64,
            checksum: None,
            source: std::env::var("NACRE_SOURCE").ok().filter(|s| !s.is_empty()),
            keys: nacre_auth::KeySource::new(None),
        }
    }
}

/// The calling process's effective uid, gid and supplementary groups (from
/// /proc/self/status; nobody (65534) if it cannot be read, never root).
pub fn process_creds() -> Creds {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    // Uid: and Gid: list real, effective, saved and file-system ids.
    const NOBODY: u32 = 65534;
    let uid = field("Uid:").get(1).copied().unwrap_or(NOBODY);
    let gid = field("Gid:").get(1).copied().unwrap_or(NOBODY);
    let mut groups = field("Groups:");
    groups.truncate(meta::MAX_GROUPS);
    Creds { uid, gid, groups }
}

/// What a path's layout is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// A file's objects.
    File(FileLayout),
    /// A directory's default striping for new files.
    Dir(StripeSpec),
}

/// One target's usage, as `nacre df` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUsage {
    pub name: String,
    pub kind: TargetKind,
    pub index: u32,
    pub state: TargetState,
    /// Bytes (OST) or inodes (MDT).
    pub total: u64,
    pub free: u64,
}

/// The file system's totals (`statfs`): inodes at the MDT, and bytes over the OSTs that
/// serve, as the MDS last saw them in the cluster map (a second or two old).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsStat {
    pub bytes_total: u64,
    pub bytes_free: u64,
    pub files_total: u64,
    pub files_free: u64,
    pub name_max: u32,
}

/// An open flag of nacre's own, beside Linux's: the handle gathers small writes in
/// order and reads ahead, a window of 1 MiB at a time. Not a bit Linux
/// gives to open(2). What it trades: writes reach other clients when the handle
/// reads, syncs or closes, or a window of gathered writes fills; a buffered handle
/// sees other clients' writes that were synced before its open or its last fsync.
pub const O_BUFFERED: i32 = 0x4000_0000;

/// Flags and mode of an open, with the layout of a file it creates.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Linux open flags (O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_TRUNC, O_APPEND),
    /// and [`O_BUFFERED`].
    pub flags: i32,
    pub mode: u32,
    pub layout: Option<StripeSpec>,
}

impl OpenOptions {
    pub fn read() -> OpenOptions {
        OpenOptions {
            flags: libc::O_RDONLY,
            mode: 0o644,
            layout: None,
        }
    }

    /// Create or truncate for writing (`fopen(path, "w")`).
    pub fn create() -> OpenOptions {
        OpenOptions {
            flags: libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC,
            mode: 0o644,
            layout: None,
        }
    }

    pub fn flags(mut self, flags: i32) -> OpenOptions {
        self.flags = flags;
        self
    }

    pub fn mode(mut self, mode: u32) -> OpenOptions {
        self.mode = mode;
        self
    }

    pub fn layout(mut self, spec: StripeSpec) -> OpenOptions {
        self.layout = Some(spec);
        self
    }
}

/// The name `lfs df` gives a target: MDT0000, OST0003.
pub fn target_name(kind: TargetKind, index: u32) -> String {
    match kind {
        TargetKind::Mdt => format!("MDT{index:04x}"),
        TargetKind::Ost => format!("OST{index:04x}"),
    }
}
