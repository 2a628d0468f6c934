//! The OST superblock: a small versioned TOML file at the root of a target that says
//! which file system and which OST index the directory belongs to. Written atomically
//! (temporary file, fsync, rename, fsync of the directory); a target whose format version
//! is newer than this build's is refused rather than misread.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layout;

/// The file at the root of a target.
pub const SUPERBLOCK_FILE: &str = "nacre-ost.toml";
/// On-disk format this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Superblock {
    pub format_version: u32,
    /// File system name, shared by every target of one file system (written as
    /// `fsid` by the first builds: still read).
    #[serde(alias = "fsid")]
    pub fsname: String,
    /// This target's OST index within the file system.
    pub index: u32,
    pub label: String,
    /// Seconds since the Unix epoch when the target was formatted.
    pub created: u64,
    /// The generation of the target's data (the MGS raises it when the target is
    /// replaced: see `Grant::generation`); 1 in superblocks written before it existed.
    #[serde(default = "first_generation")]
    pub generation: u64,
}

fn first_generation() -> u64 {
    1
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: not an OST (no {SUPERBLOCK_FILE}): format it with `nacre-oss format`")]
    NotFormatted(PathBuf),
    #[error("{path}: bad superblock: {msg}")]
    Corrupt { path: PathBuf, msg: String },
    #[error(
        "{path}: format version {found} is newer than this build understands ({FORMAT_VERSION})"
    )]
    TooNew { path: PathBuf, found: u32 },
    #[error(
        "{path} already holds {label} (file system {fsname}, index {index}): \
         refusing to format it without --force"
    )]
    Occupied {
        path: PathBuf,
        fsname: String,
        index: u32,
        label: String,
    },
    #[error(
        "{path}: the file system does not keep user extended attributes ({source}); \
         objects store their size in one (ext4 and xfs do)"
    )]
    NoXattr {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad {what} {value:?}: {why}")]
    BadName {
        what: &'static str,
        value: String,
        why: &'static str,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TargetError + '_ {
    move |source| TargetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `format` is asked to create.
#[derive(Debug, Clone)]
pub struct FormatRequest {
    pub fsname: String,
    pub index: u32,
    /// None: `<fsname>-OST<index as 4 hex digits>`, as Lustre names targets.
    pub label: Option<String>,
    /// The generation the MGS serves the target at (1 when formatted by hand).
    pub generation: u64,
    /// Format even over a target of another file system or index (its objects go).
    pub force: bool,
}

/// What `format` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Formatted {
    New(Superblock),
    /// The directory already was this very target (same fsname and index): left as is.
    AlreadyThere(Superblock),
}

/// Names go into paths, logs and the cluster map: keep them plain.
pub fn check_name(what: &'static str, value: &str) -> Result<(), TargetError> {
    let bad = |why| TargetError::BadName {
        what,
        value: value.to_string(),
        why,
    };
    if value.is_empty() || value.len() > 64 {
        return Err(bad("must be 1 to 64 characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(bad("only letters, digits, '-', '_' and '.' are allowed"));
    }
    Ok(())
}

/// Formats `dir` (created if missing) as an OST.
pub fn format(dir: &Path, req: &FormatRequest) -> Result<Formatted, TargetError> {
    check_name("file system name", &req.fsname)?;
    let label = req
        .label
        .clone()
        .unwrap_or_else(|| format!("{}-OST{:04x}", req.fsname, req.index));
    check_name("label", &label)?;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    match read(dir) {
        Ok(old) if old.fsname == req.fsname && old.index == req.index && !req.force => {
            return Ok(Formatted::AlreadyThere(old));
        }
        Ok(old) if !req.force => {
            return Err(TargetError::Occupied {
                path: dir.to_path_buf(),
                fsname: old.fsname,
                index: old.index,
                label: old.label,
            });
        }
        Ok(_) | Err(TargetError::NotFormatted(_)) => {}
        Err(e) if req.force => tracing::warn!("formatting over an unreadable target: {e}"),
        Err(e) => return Err(e),
    }
    layout::wipe(dir)?;
    layout::create_dirs(dir)?;
    let sb = Superblock {
        format_version: FORMAT_VERSION,
        fsname: req.fsname.clone(),
        index: req.index,
        label,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        generation: req.generation.max(1),
    };
    write(dir, &sb)?;
    probe_xattr(&dir.join(SUPERBLOCK_FILE))?;
    Ok(Formatted::New(sb))
}

/// Objects keep their logical size in a `user.` xattr: check the file system has them.
fn probe_xattr(path: &Path) -> Result<(), TargetError> {
    let name = "user.nacre.probe";
    rustix::fs::setxattr(path, name, b"1", rustix::fs::XattrFlags::empty())
        .and_then(|()| rustix::fs::removexattr(path, name))
        .map_err(|e| TargetError::NoXattr {
            path: path.to_path_buf(),
            source: e.into(),
        })
}

/// Reads and checks the superblock of `dir`.
pub fn read(dir: &Path) -> Result<Superblock, TargetError> {
    let path = dir.join(SUPERBLOCK_FILE);
    let text = match std::fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TargetError::NotFormatted(dir.to_path_buf()))
        }
        r => r.map_err(io_err(&path))?,
    };
    // Check the version before the rest: a newer format may have changed any field.
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    let corrupt = |e: toml::de::Error| TargetError::Corrupt {
        path: path.clone(),
        msg: e.message().to_string(),
    };
    let v: Version = toml::from_str(&text).map_err(corrupt)?;
    if v.format_version > FORMAT_VERSION {
        return Err(TargetError::TooNew {
            path,
            found: v.format_version,
        });
    }
    let sb: Superblock = toml::from_str(&text).map_err(corrupt)?;
    check_name("file system name", &sb.fsname)?;
    check_name("label", &sb.label)?;
    Ok(sb)
}

/// Replaces the superblock atomically and durably.
pub fn write(dir: &Path, sb: &Superblock) -> Result<(), TargetError> {
    let path = dir.join(SUPERBLOCK_FILE);
    let tmp = dir.join(format!("{SUPERBLOCK_FILE}.tmp"));
    let text = toml::to_string(sb).expect("a superblock always serializes");
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/oss-unit")
            .join(format!("sb-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn req(fsname: &str, index: u32) -> FormatRequest {
        FormatRequest {
            fsname: fsname.into(),
            index,
            label: None,
            generation: 1,
            force: false,
        }
    }

    #[test]
    fn format_then_read_then_refuse_another_fs() {
        let d = dir("refuse");
        let Formatted::New(sb) = format(&d, &req("alpha", 3)).unwrap() else {
            panic!("fresh directory")
        };
        assert_eq!(sb.label, "alpha-OST0003");
        assert_eq!(read(&d).unwrap(), sb);
        assert!(matches!(
            format(&d, &req("alpha", 3)).unwrap(),
            Formatted::AlreadyThere(_)
        ));
        assert!(matches!(
            format(&d, &req("beta", 3)),
            Err(TargetError::Occupied { .. })
        ));
        let forced = FormatRequest {
            force: true,
            ..req("beta", 3)
        };
        assert!(matches!(format(&d, &forced).unwrap(), Formatted::New(_)));
        assert_eq!(read(&d).unwrap().fsname, "beta");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_superblock_written_with_fsid_is_read() {
        let d = dir("old-key");
        format(&d, &req("alpha", 3)).unwrap();
        let p = d.join(SUPERBLOCK_FILE);
        let old = std::fs::read_to_string(&p)
            .unwrap()
            .replace("fsname =", "fsid =");
        std::fs::write(&p, old).unwrap();
        let sb = read(&d).unwrap();
        assert_eq!((sb.fsname.as_str(), sb.index), ("alpha", 3));
    }

    #[test]
    fn newer_version_and_garbage_are_refused() {
        let d = dir("newer");
        format(&d, &req("alpha", 0)).unwrap();
        let p = d.join(SUPERBLOCK_FILE);
        std::fs::write(&p, "format_version = 99\nsomething_else = 1\n").unwrap();
        assert!(matches!(
            read(&d),
            Err(TargetError::TooNew { found: 99, .. })
        ));
        std::fs::write(&p, "not toml at all [[[").unwrap();
        assert!(matches!(read(&d), Err(TargetError::Corrupt { .. })));
        assert!(matches!(
            format(&d, &req("alpha", 0)),
            Err(TargetError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&d).unwrap();
        assert!(matches!(read(&d), Err(TargetError::NotFormatted(_))));
    }

    #[test]
    fn bad_names_are_refused() {
        let d = dir("names");
        assert!(matches!(
            format(&d, &req("a/b", 0)),
            Err(TargetError::BadName { .. })
        ));
        assert!(matches!(
            format(&d, &req("", 0)),
            Err(TargetError::BadName { .. })
        ));
    }
}
