//! The values metadata requests and replies carry: who asks, inode attributes,
//! directory entries, file-system figures and byte-range locks.

use super::MetaError;

/// Who asks: uid, primary gid, supplementary gids (at most [`MAX_GROUPS`](super::MAX_GROUPS)).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Creds {
    pub fn root() -> Creds {
        Creds::default()
    }

    pub fn user(uid: u32, gid: u32) -> Creds {
        Creds {
            uid,
            gid,
            groups: Vec::new(),
        }
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// What every request starts with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Head {
    pub creds: Creds,
    /// The MDS epoch (fencing token) from the client's cluster map.
    pub epoch: u64,
    /// For a request that changes the namespace: who sent it, so that a retry of it is
    /// answered from the MDS's reply cache instead of being applied twice.
    pub replay: Option<ReplayKey>,
}

/// Names one changing request for reply reconstruction (Lustre's idea): a client
/// (random id, stable for its life) holds `tag` while the request is in flight and
/// reuses a tag only after its answer came, so the MDS keeps one reply per (client,
/// tag); `xid` tells a retry of the same request from the tag's next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplayKey {
    pub client: u64,
    pub tag: u32,
    pub xid: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    File = 1,
    Dir = 2,
    Symlink = 3,
    /// The special files (mknod): only metadata in nacre; the kernel opens them.
    Fifo = 4,
    Socket = 5,
    CharDevice = 6,
    BlockDevice = 7,
}

impl FileKind {
    /// A FIFO, socket or device node: an inode with no data of its own.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            FileKind::Fifo | FileKind::Socket | FileKind::CharDevice | FileKind::BlockDevice
        )
    }

    /// The kind in words, as messages and `nacre stat` name it.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::CharDevice => "character device",
            FileKind::BlockDevice => "block device",
        }
    }

    /// The kind of an `S_IFMT` file type, for mknod (regular files come by create).
    pub fn special_from_mode(mode: u32) -> Option<FileKind> {
        match mode & 0o170000 {
            0o010000 => Some(FileKind::Fifo),
            0o140000 => Some(FileKind::Socket),
            0o020000 => Some(FileKind::CharDevice),
            0o060000 => Some(FileKind::BlockDevice),
            _ => None,
        }
    }

    pub fn from_u32(v: u32) -> Result<FileKind, MetaError> {
        match v {
            1 => Ok(FileKind::File),
            2 => Ok(FileKind::Dir),
            3 => Ok(FileKind::Symlink),
            4 => Ok(FileKind::Fifo),
            5 => Ok(FileKind::Socket),
            6 => Ok(FileKind::CharDevice),
            7 => Ok(FileKind::BlockDevice),
            value => Err(MetaError::BadValue {
                what: "file kind",
                value,
            }),
        }
    }
}

/// Inode attributes. Times are nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    /// Permission bits with setuid, setgid, sticky (0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
    /// The device a character or block device node names (Linux's encoding of
    /// major and minor, as `stat` shows it); 0 for other kinds.
    pub rdev: u64,
}

/// Setattr values; only the fields named in `mask` (see [`set`](super::set)) are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetAttr {
    pub mask: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    pub kind: FileKind,
    /// The cookie that resumes a readdir after this entry.
    pub cookie: u64,
}

/// The file system as the MDS sees it (MDS_STATFS): its MDT's inodes, and the bytes of
/// the OSTs in its last cluster map. One OST's own figures are an
/// [`OstStatfs`](crate::object::OstStatfs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MdtStatfs {
    pub inodes_used: u64,
    pub inodes_free: u64,
    pub name_max: u32,
    /// Bytes over the OSTs the MDS last saw in the cluster map (their servers report
    /// capacity and free space to the MGS with every lease renewal).
    pub bytes_total: u64,
    pub bytes_free: u64,
    /// OSTs counted in the bytes: those up or degraded in that map.
    pub osts: u32,
}

/// A byte-range lock request: `owner` of client `client` asks for `kind` on bytes
/// `start..=end` of `ino` (`end` u64::MAX: to the end of the file, however long). With
/// `test`, nothing changes and the reply describes a conflicting lock (F_GETLK). With
/// `replay`, the client takes again a lock it held before the MDS restarted. With
/// `wait`, the owner waits for the lock (F_SETLKW) and asks again after EAGAIN, so
/// the MDS can see a deadlock among waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockRequest {
    pub ino: u64,
    pub client: u64,
    pub owner: u64,
    pub start: u64,
    pub end: u64,
    pub kind: u32,
    pub pid: u32,
    pub test: bool,
    pub replay: bool,
    pub wait: bool,
}

/// A lock as F_GETLK reports it (`kind` UNLOCK: no conflict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockDesc {
    pub kind: u32,
    pub start: u64,
    pub end: u64,
    pub pid: u32,
}

/// Where a consistency check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckState {
    /// No check since the MDS started.
    #[default]
    Idle = 0,
    Running = 1,
    Done = 2,
    /// Stopped before the end (the reason is the last finding).
    Failed = 3,
}

impl CheckState {
    pub fn from_u32(v: u32) -> Result<CheckState, MetaError> {
        match v {
            0 => Ok(CheckState::Idle),
            1 => Ok(CheckState::Running),
            2 => Ok(CheckState::Done),
            3 => Ok(CheckState::Failed),
            value => Err(MetaError::BadValue {
                what: "check state",
                value,
            }),
        }
    }
}

/// The counts of a consistency check (`nacre check`), by kind of finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckCounts {
    /// Objects on an OST that no file names.
    pub orphans: u64,
    /// Layout entries that cannot be served: an OST the map lacks, an object id the
    /// OST's allocator would hand out again.
    pub dangling: u64,
    /// Inodes whose link count disagrees with the names pointing at them.
    pub nlink: u64,
    /// Files whose objects hold data past the recorded size.
    pub size: u64,
    /// Findings repaired.
    pub fixed: u64,
}

/// A check's report: its run number (0: none yet), state, counts, how many findings it
/// has so far and those from the request's `from` on (one line of text each).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckReport {
    pub run: u64,
    pub state: CheckState,
    pub counts: CheckCounts,
    pub total: u32,
    pub findings: Vec<Vec<u8>>,
}
