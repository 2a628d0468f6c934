//! Data repositories (FSx for Lustre's data repository associations, Lustre's HSM):
//! the requests of opcode `MDS_HSM` and their replies. The body after the common head
//! starts with a u32 naming the operation.

use super::wire::{put_bytes, put_u32, put_u64, read_string};
use super::{MetaError, PATH_MAX};
use crate::body::BodyReader;

/// Automatic import and export policies: which changes are carried over.
pub mod policy {
    pub const NEW: u32 = 1;
    pub const CHANGED: u32 = 2;
    pub const DELETED: u32 = 4;
    pub const ALL: u32 = NEW | CHANGED | DELETED;

    /// "new,changed,deleted" (any subset, in any order; "" or "none" is none).
    pub fn parse(s: &str) -> Result<u32, String> {
        let mut bits = 0;
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            bits |= match word {
                "new" => NEW,
                "changed" => CHANGED,
                "deleted" => DELETED,
                "none" => 0,
                other => return Err(format!("{other:?}: expected new, changed or deleted")),
            };
        }
        Ok(bits)
    }

    pub fn show(bits: u32) -> String {
        let words: Vec<&str> = [(NEW, "new"), (CHANGED, "changed"), (DELETED, "deleted")]
            .iter()
            .filter(|(b, _)| bits & b != 0)
            .map(|(_, w)| *w)
            .collect();
        match words.is_empty() {
            true => "none".into(),
            false => words.join(","),
        }
    }
}

/// Longest URL, endpoint, region or credential string.
pub const STRING_MAX: usize = PATH_MAX;
/// Most associations and tasks one list reply carries.
pub const LIST_MAX: usize = 64;

/// What a link asks for: where the repository is, how to reach it, and what to keep in
/// step. Empty strings mean "not given" (the MDS's own environment then applies).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoSpec {
    /// `s3://bucket/prefix` or `file:///dir`.
    pub url: String,
    /// The linked directory's path as the linker named it (shown by listings).
    pub path: String,
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Import the listing now (`--import-metadata`).
    pub import_now: bool,
    pub auto_import: u32,
    pub auto_export: u32,
    /// Seconds between automatic imports' listings (0: the MDS's default).
    pub interval_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HsmRequest {
    /// Links directory `dir` (empty, or made by the import) to a repository. Root only.
    Link { dir: u64, spec: RepoSpec },
    /// Forgets the association of `dir`; the files stay (released ones stay released
    /// and can no longer be read: unlink restores nothing). Root only.
    Unlink { dir: u64 },
    /// The associations and the tasks running.
    List,
    /// Loads `len` bytes at `offset` (len 0: the whole file) of a released file from
    /// its repository into its objects; answered once they are there. The rest of the
    /// file goes on loading in the background.
    Restore { ino: u64, offset: u64, len: u64 },
    /// Writes a file that changed back to its repository.
    Export { ino: u64 },
    /// Frees the objects of an exported, unchanged, closed file.
    Release { ino: u64 },
    /// A file's repository state.
    State { ino: u64 },
}

const OP_LINK: u32 = 1;
const OP_UNLINK: u32 = 2;
const OP_LIST: u32 = 3;
const OP_RESTORE: u32 = 4;
const OP_EXPORT: u32 = 5;
const OP_RELEASE: u32 = 6;
const OP_STATE: u32 = 7;

impl HsmRequest {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            HsmRequest::Link { dir, spec } => {
                put_u32(out, OP_LINK);
                put_u64(out, *dir);
                for s in [
                    &spec.url,
                    &spec.path,
                    &spec.endpoint,
                    &spec.region,
                    &spec.access_key_id,
                    &spec.secret_access_key,
                ] {
                    put_bytes(out, s.as_bytes());
                }
                for v in [
                    spec.import_now as u32,
                    spec.auto_import,
                    spec.auto_export,
                    spec.interval_secs,
                ] {
                    put_u32(out, v);
                }
            }
            HsmRequest::Unlink { dir } => {
                put_u32(out, OP_UNLINK);
                put_u64(out, *dir);
            }
            HsmRequest::List => put_u32(out, OP_LIST),
            HsmRequest::Restore { ino, offset, len } => {
                put_u32(out, OP_RESTORE);
                for v in [*ino, *offset, *len] {
                    put_u64(out, v);
                }
            }
            HsmRequest::Export { ino } => ino_op(out, OP_EXPORT, *ino),
            HsmRequest::Release { ino } => ino_op(out, OP_RELEASE, *ino),
            HsmRequest::State { ino } => ino_op(out, OP_STATE, *ino),
        }
    }

    pub fn read(r: &mut BodyReader<'_>) -> Result<HsmRequest, MetaError> {
        Ok(match r.u32()? {
            OP_LINK => {
                let dir = r.u64()?;
                let mut s = || read_text(r);
                let (url, path, endpoint) = (s()?, s()?, s()?);
                let (region, access_key_id, secret_access_key) = (s()?, s()?, s()?);
                let import_now = match r.u32()? {
                    v @ (0 | 1) => v == 1,
                    value => return Err(bad("import flag", value)),
                };
                let (auto_import, auto_export) = (read_policy(r)?, read_policy(r)?);
                HsmRequest::Link {
                    dir,
                    spec: RepoSpec {
                        url,
                        path,
                        endpoint,
                        region,
                        access_key_id,
                        secret_access_key,
                        import_now,
                        auto_import,
                        auto_export,
                        interval_secs: r.u32()?,
                    },
                }
            }
            OP_UNLINK => HsmRequest::Unlink { dir: r.u64()? },
            OP_LIST => HsmRequest::List,
            OP_RESTORE => HsmRequest::Restore {
                ino: r.u64()?,
                offset: r.u64()?,
                len: r.u64()?,
            },
            OP_EXPORT => HsmRequest::Export { ino: r.u64()? },
            OP_RELEASE => HsmRequest::Release { ino: r.u64()? },
            OP_STATE => HsmRequest::State { ino: r.u64()? },
            value => return Err(bad("repository operation", value)),
        })
    }
}

fn ino_op(out: &mut Vec<u8>, op: u32, ino: u64) {
    put_u32(out, op);
    put_u64(out, ino);
}

fn bad(what: &'static str, value: u32) -> MetaError {
    MetaError::BadValue { what, value }
}

fn read_policy(r: &mut BodyReader<'_>) -> Result<u32, MetaError> {
    match r.u32()? {
        v if v & !policy::ALL == 0 => Ok(v),
        value => Err(bad("repository policy", value)),
    }
}

fn read_text(r: &mut BodyReader<'_>) -> Result<String, MetaError> {
    String::from_utf8(read_string(r, STRING_MAX)?).map_err(|_| MetaError::BadValue {
        what: "repository string (not UTF-8)",
        value: 0,
    })
}

/// A file's state with respect to its repository (`nacre repo status`, the
/// `nacre.hsm` extended attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum FileState {
    /// Not under a linked directory.
    None = 0,
    /// Listed, data in the repository only.
    Released = 1,
    /// Loaded from the repository, unchanged since.
    Cached = 2,
    /// New or changed since it was imported or exported.
    Dirty = 3,
    /// Written here and exported, unchanged since.
    Exported = 4,
}

impl FileState {
    pub fn from_u32(v: u32) -> Option<FileState> {
        Some(match v {
            0 => FileState::None,
            1 => FileState::Released,
            2 => FileState::Cached,
            3 => FileState::Dirty,
            4 => FileState::Exported,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FileState::None => "none",
            FileState::Released => "released",
            FileState::Cached => "cached",
            FileState::Dirty => "dirty",
            FileState::Exported => "exported",
        }
    }
}

/// One file's repository state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHsm {
    pub state: FileState,
    /// The association (0: none).
    pub repo: u32,
    /// Its object's key below the association's prefix.
    pub key: String,
    /// The repository's object changed while the file was dirty: neither side was
    /// overwritten (cleared by an export that finds them equal again, or by deleting
    /// the file).
    pub conflict: bool,
}

/// One association, as `nacre repo list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    pub id: u32,
    pub dir: u64,
    pub path: String,
    pub url: String,
    pub auto_import: u32,
    pub auto_export: u32,
    pub interval_secs: u32,
    /// Objects imported so far (all passes), and files exported.
    pub imported: u64,
    pub exported: u64,
    /// The last repository error, or empty.
    pub error: String,
}

/// A task running or just finished (import, export, restore).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub kind: String,
    /// The file or association it works on.
    pub what: String,
    pub done: u64,
    /// 0 when not known yet.
    pub total: u64,
    pub finished: bool,
    /// Why it failed, or empty.
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HsmReply {
    /// Link, unlink, export, release.
    Done,
    /// Restore: the ranges asked are in the objects; `whole` says the file is not
    /// released any more (its readers need ask no more).
    Loaded {
        whole: bool,
    },
    State(FileHsm),
    List {
        repos: Vec<RepoInfo>,
        tasks: Vec<TaskInfo>,
    },
}

const H_DONE: u32 = 0;
const H_LOADED: u32 = 1;
const H_STATE: u32 = 2;
const H_LIST: u32 = 3;

impl HsmReply {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            HsmReply::Done => put_u32(out, H_DONE),
            HsmReply::Loaded { whole } => {
                put_u32(out, H_LOADED);
                put_u32(out, *whole as u32);
            }
            HsmReply::State(s) => {
                put_u32(out, H_STATE);
                put_u32(out, s.state as u32);
                put_u32(out, s.repo);
                put_bytes(out, s.key.as_bytes());
                put_u32(out, s.conflict as u32);
            }
            HsmReply::List { repos, tasks } => {
                put_u32(out, H_LIST);
                put_u32(out, repos.len() as u32);
                for r in repos {
                    put_u32(out, r.id);
                    put_u64(out, r.dir);
                    put_bytes(out, r.path.as_bytes());
                    put_bytes(out, r.url.as_bytes());
                    for v in [r.auto_import, r.auto_export, r.interval_secs] {
                        put_u32(out, v);
                    }
                    put_u64(out, r.imported);
                    put_u64(out, r.exported);
                    put_bytes(out, r.error.as_bytes());
                }
                put_u32(out, tasks.len() as u32);
                for t in tasks {
                    put_bytes(out, t.kind.as_bytes());
                    put_bytes(out, t.what.as_bytes());
                    put_u64(out, t.done);
                    put_u64(out, t.total);
                    put_u32(out, t.finished as u32);
                    put_bytes(out, t.error.as_bytes());
                }
            }
        }
    }

    pub fn read(r: &mut BodyReader<'_>) -> Result<HsmReply, MetaError> {
        Ok(match r.u32()? {
            H_DONE => HsmReply::Done,
            H_LOADED => HsmReply::Loaded {
                whole: r.u32()? != 0,
            },
            H_STATE => {
                let v = r.u32()?;
                let state = FileState::from_u32(v).ok_or_else(|| bad("file state", v))?;
                HsmReply::State(FileHsm {
                    state,
                    repo: r.u32()?,
                    key: read_text(r)?,
                    conflict: r.u32()? != 0,
                })
            }
            H_LIST => {
                let n = count(r)?;
                let mut repos = Vec::with_capacity(n);
                for _ in 0..n {
                    repos.push(RepoInfo {
                        id: r.u32()?,
                        dir: r.u64()?,
                        path: read_text(r)?,
                        url: read_text(r)?,
                        auto_import: r.u32()?,
                        auto_export: r.u32()?,
                        interval_secs: r.u32()?,
                        imported: r.u64()?,
                        exported: r.u64()?,
                        error: read_text(r)?,
                    });
                }
                let n = count(r)?;
                let mut tasks = Vec::with_capacity(n);
                for _ in 0..n {
                    tasks.push(TaskInfo {
                        kind: read_text(r)?,
                        what: read_text(r)?,
                        done: r.u64()?,
                        total: r.u64()?,
                        finished: r.u32()? != 0,
                        error: read_text(r)?,
                    });
                }
                HsmReply::List { repos, tasks }
            }
            value => return Err(bad("repository reply", value)),
        })
    }
}

fn count(r: &mut BodyReader<'_>) -> Result<usize, MetaError> {
    match r.u32()? {
        n if n as usize <= LIST_MAX => Ok(n as usize),
        value => Err(bad("repository list length", value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(req: HsmRequest) {
        let mut b = Vec::new();
        req.encode(&mut b);
        assert_eq!(HsmRequest::read(&mut BodyReader::new(&b)).unwrap(), req);
        for cut in 0..b.len() {
            assert!(HsmRequest::read(&mut BodyReader::new(&b[..cut])).is_err());
        }
    }

    #[test]
    fn requests_and_replies_round_trip() {
        round(HsmRequest::Link {
            dir: 7,
            spec: RepoSpec {
                url: "s3://b/p".into(),
                endpoint: "http://127.0.0.1:9000".into(),
                import_now: true,
                auto_import: policy::NEW | policy::DELETED,
                interval_secs: 5,
                ..RepoSpec::default()
            },
        });
        round(HsmRequest::Restore {
            ino: 1,
            offset: 2,
            len: 3,
        });
        round(HsmRequest::State { ino: 9 });
        let reply = HsmReply::List {
            repos: vec![RepoInfo {
                id: 1,
                dir: 2,
                path: "/data".into(),
                url: "file:///x".into(),
                auto_import: 1,
                auto_export: 7,
                interval_secs: 60,
                imported: 5,
                exported: 6,
                error: String::new(),
            }],
            tasks: vec![TaskInfo {
                kind: "import".into(),
                what: "/data".into(),
                done: 1,
                total: 0,
                finished: false,
                error: "x".into(),
            }],
        };
        let mut b = Vec::new();
        reply.encode(&mut b);
        assert_eq!(HsmReply::read(&mut BodyReader::new(&b)).unwrap(), reply);
    }

    #[test]
    fn bad_values_are_refused() {
        let mut b = Vec::new();
        put_u32(&mut b, 99);
        assert!(HsmRequest::read(&mut BodyReader::new(&b)).is_err());
        assert_eq!(policy::parse("new,deleted"), Ok(5));
        assert!(policy::parse("new,old").is_err());
        assert_eq!(policy::show(policy::ALL), "new,changed,deleted");
    }
}
