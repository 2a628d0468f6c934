//! A local directory as a repository: listing in order, and POSIX metadata kept on the
//! files themselves. Reads and writes go through object_store's `LocalFileSystem`.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use crate::PosixMeta;

/// Up to `max` keys of regular files below `root` that come after `after`, in order:
/// a depth-first walk with each directory's names sorted, so keys compare component
/// by component ("a/b" before "a.b", unlike S3's byte order; a cursor is only ever
/// compared by the walk that made it). Names that are not UTF-8, and object_store's
/// staging files (`name#N`), are skipped.
pub fn keys_after(root: &Path, after: Option<&str>, max: usize) -> io::Result<Vec<String>> {
    let after: Option<Vec<&str>> = after.map(|a| a.split('/').collect());
    let mut out = Vec::new();
    walk(root, "", after.as_deref(), max, &mut out)?;
    Ok(out)
}

fn walk(
    dir: &Path,
    prefix: &str,
    mut after: Option<&[&str]>,
    max: usize,
    out: &mut Vec<String>,
) -> io::Result<()> {
    let mut names: Vec<(String, fs::FileType)> = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let Ok(name) = e.file_name().into_string() else {
            tracing::warn!("{}: a name that is not UTF-8, skipped", dir.display());
            continue;
        };
        if is_staging(&name) {
            continue;
        }
        names.push((name, e.file_type()?));
    }
    names.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (name, kind) in names {
        if out.len() >= max {
            return Ok(());
        }
        let below = match after {
            Some([first, rest @ ..]) => match name.as_str().cmp(first) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal if kind.is_dir() && !rest.is_empty() => Some(rest),
                std::cmp::Ordering::Equal => continue,
                std::cmp::Ordering::Greater => {
                    after = None;
                    None
                }
            },
            _ => None,
        };
        let key = format!("{prefix}{name}");
        if kind.is_dir() {
            walk(&dir.join(&name), &format!("{key}/"), below, max, out)?;
        } else if kind.is_file() {
            out.push(key);
        }
    }
    Ok(())
}

/// The regular files directly in `dir` (none if it does not exist).
pub fn names_in(dir: &Path) -> io::Result<std::collections::HashSet<String>> {
    let mut out = std::collections::HashSet::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if let Ok(name) = e.file_name().into_string() {
            if e.file_type()?.is_file() && !is_staging(&name) {
                out.insert(name);
            }
        }
    }
    Ok(out)
}

/// object_store's local multipart uploads stage parts as `name#N`.
fn is_staging(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The mode, owner and mtime of the file at `key`.
pub fn posix_meta(root: &Path, key: &str) -> object_store::Result<PosixMeta> {
    let m = fs::metadata(root.join(key)).map_err(|e| store_err(key, e))?;
    Ok(PosixMeta {
        mode: Some(m.mode()),
        uid: Some(m.uid()),
        gid: Some(m.gid()),
        mtime_ns: Some(m.mtime() * 1_000_000_000 + m.mtime_nsec()),
    })
}

/// Gives the file at `key` the metadata `meta` has (what it lacks stays as it is; an
/// owner change needs root, so EPERM leaves the owner).
pub fn set_posix_meta(root: &Path, key: &str, meta: &PosixMeta) -> io::Result<()> {
    let path = root.join(key);
    if let Some(mode) = meta.mode {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))?;
    }
    if meta.uid.is_some() || meta.gid.is_some() {
        match std::os::unix::fs::chown(&path, meta.uid, meta.gid) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
            other => other?,
        }
    }
    if let Some(ns) = meta.mtime_ns.filter(|&ns| ns >= 0) {
        let f = fs::File::options().write(true).open(&path)?;
        f.set_modified(UNIX_EPOCH + Duration::from_nanos(ns as u64))?;
    }
    Ok(())
}

fn store_err(key: &str, e: io::Error) -> object_store::Error {
    match e.kind() {
        io::ErrorKind::NotFound => object_store::Error::NotFound {
            path: key.to_string(),
            source: Box::new(e),
        },
        _ => object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_in_walk_order_and_resume_after_a_cursor() {
        let d = tempfile::tempdir().unwrap();
        for k in ["a.b", "a/b", "a/c/d", "b", "c#1", "z/y"] {
            let p = d.path().join(k);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, k).unwrap();
        }
        fs::create_dir(d.path().join("empty")).unwrap();
        let all = keys_after(d.path(), None, 100).unwrap();
        assert_eq!(all, ["a/b", "a/c/d", "a.b", "b", "z/y"]);
        for (i, k) in all.iter().enumerate() {
            assert_eq!(keys_after(d.path(), Some(k), 100).unwrap(), all[i + 1..]);
            assert_eq!(
                keys_after(d.path(), Some(k), 1).unwrap(),
                all[i + 1..].iter().take(1).cloned().collect::<Vec<_>>()
            );
        }
        // A cursor whose object is gone still resumes after it.
        assert_eq!(keys_after(d.path(), Some("a/bb"), 100).unwrap(), all[1..]);
    }
}
