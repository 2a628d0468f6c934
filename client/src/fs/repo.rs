//! Data repositories from the client: `nacre repo`'s calls, and the loads that reads
//! and writes of released files ask for (docs/repositories.md).
//!
//! A released file's layout says so. A read asks the MDS to load the range it reads
//! first (answered once that range is in the objects); a write open, or a truncate to
//! another size than 0, is refused by the MDS with ENODATA until the whole file is
//! loaded, which the client asks for, then it tries again. The application sees
//! neither, only the time the load takes.

use std::io;
use std::time::Duration;

use nacre_proto::meta::hsm::{FileHsm, HsmReply, HsmRequest, RepoInfo, RepoSpec, TaskInfo};
use nacre_proto::meta::{Reply, Request};

use super::errors::protocol;
use super::Client;

/// A load or an export may take this long per try (a repository that does not
/// answer fails sooner: its own retries are bounded).
const LONG: Duration = Duration::from_secs(600);
/// Tries of an operation the MDS answers ENODATA (load first) or EAGAIN (the file
/// changed while it loaded: ask again).
const TRIES: usize = 4;

impl Client {
    fn hsm(&self, req: HsmRequest, timeout: Option<Duration>) -> io::Result<HsmReply> {
        let req = Request::Hsm(req);
        let reply = match timeout {
            Some(t) => self.call_patiently(&req, t)?,
            None => self.meta(true, &req)?,
        };
        match reply {
            Reply::Hsm(h) => Ok(h),
            other => Err(protocol(format!(
                "expected a repository reply, got {other:?}"
            ))),
        }
    }

    fn ino_of(&self, path: &str) -> io::Result<u64> {
        self.with_conn(true, |c| c.ns.resolve(path))
    }

    /// Links directory `path` (empty) to the repository `spec` names (root only).
    pub fn repo_link(&self, path: &str, spec: RepoSpec) -> io::Result<()> {
        let dir = self.ino_of(path)?;
        self.hsm(
            HsmRequest::Link { dir, spec },
            Some(Duration::from_secs(120)),
        )
        .map(drop)
    }

    /// Forgets the association of directory `path` (root only).
    pub fn repo_unlink(&self, path: &str) -> io::Result<()> {
        let dir = self.ino_of(path)?;
        self.hsm(HsmRequest::Unlink { dir }, None).map(drop)
    }

    /// The associations, and the tasks running or just finished.
    pub fn repo_list(&self) -> io::Result<(Vec<RepoInfo>, Vec<TaskInfo>)> {
        match self.hsm(HsmRequest::List, None)? {
            HsmReply::List { repos, tasks } => Ok((repos, tasks)),
            other => Err(protocol(format!("expected a listing, got {other:?}"))),
        }
    }

    /// Loads all of a released file (`hsm_restore`); nothing for a file that is not.
    pub fn repo_restore(&self, path: &str) -> io::Result<()> {
        let ino = self.ino_of(path)?;
        self.load(ino, 0, 0).map(drop)
    }

    /// Writes a new or changed file back to its repository.
    pub fn repo_export(&self, path: &str) -> io::Result<()> {
        let ino = self.ino_of(path)?;
        self.hsm(HsmRequest::Export { ino }, Some(LONG)).map(drop)
    }

    /// Frees the OST space of an exported, unchanged, closed file.
    pub fn repo_release(&self, path: &str) -> io::Result<()> {
        let ino = self.ino_of(path)?;
        self.hsm(HsmRequest::Release { ino }, Some(Duration::from_secs(120)))
            .map(drop)
    }

    pub fn repo_state(&self, path: &str) -> io::Result<FileHsm> {
        let ino = self.ino_of(path)?;
        self.repo_state_ino(ino)
    }

    /// A file's repository state (a mount's `nacre.hsm` attribute).
    pub fn repo_state_ino(&self, ino: u64) -> io::Result<FileHsm> {
        match self.hsm(HsmRequest::State { ino }, None)? {
            HsmReply::State(s) => Ok(s),
            other => Err(protocol(format!("expected a file state, got {other:?}"))),
        }
    }

    /// Has the MDS load `len` bytes at `offset` (0: all) of released file `ino`; true
    /// once the whole file is loaded (no more loads needed).
    pub(super) fn load(&self, ino: u64, offset: u64, len: u64) -> io::Result<bool> {
        let req = HsmRequest::Restore { ino, offset, len };
        for _ in 1..TRIES {
            match self.hsm(req.clone(), Some(LONG)) {
                Ok(HsmReply::Loaded { whole }) => return Ok(whole),
                Ok(other) => return Err(protocol(format!("expected a load, got {other:?}"))),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
                Err(e) => return Err(e),
            }
        }
        match self.hsm(req, Some(LONG))? {
            HsmReply::Loaded { whole } => Ok(whole),
            other => Err(protocol(format!("expected a load, got {other:?}"))),
        }
    }

    /// Runs `op` (a write open, a truncate) and, while the MDS answers that the file
    /// must be loaded first, loads the file `ino` names and runs it again.
    pub(super) fn loaded_first<R>(
        &self,
        ino: impl Fn() -> io::Result<u64>,
        mut op: impl FnMut() -> io::Result<R>,
    ) -> io::Result<R> {
        for _ in 1..TRIES {
            match op() {
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {
                    self.load(ino()?, 0, 0)?;
                }
                other => return other,
            }
        }
        op()
    }
}
