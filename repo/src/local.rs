//! A local directory as a repository: listing in order, and POSIX metadata kept on the
//! files themselves. Reads and writes go through object_store's `LocalFileSystem`.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use crate::PosixMeta;

/// A walk over the regular files below a directory, in order, that a listing keeps
/// between pages: depth first, each directory's names sorted, so keys compare
/// component by component ("a/b" before "a.b", unlike S3's byte order; a cursor is
/// only ever compared by the walk that made it). It holds the names left of each
/// directory on the way down, never the whole tree. Names that are not UTF-8, and
/// object_store's staging files (`name#N`), are skipped.
pub struct Walk {
    stack: Vec<Level>,
}

struct Level {
    dir: PathBuf,
    prefix: String,
    /// Names still to visit, and whether each is a directory.
    names: VecDeque<(String, bool)>,
}

impl Walk {
    /// A walk that starts after key `after` (None: at the beginning).
    pub fn new(root: &Path, after: Option<&str>) -> io::Result<Walk> {
        let comps: Vec<&str> = after.map_or_else(Vec::new, |a| a.split('/').collect());
        let mut stack = Vec::new();
        let (mut dir, mut prefix) = (root.to_path_buf(), String::new());
        let mut rest: &[&str] = &comps;
        loop {
            let mut names = sorted_names(&dir)?;
            let Some((first, more)) = rest.split_first() else {
                stack.push(Level { dir, prefix, names });
                break;
            };
            while names.front().is_some_and(|(n, _)| n.as_str() < *first) {
                names.pop_front();
            }
            // The cursor's own entry is done, unless it is a directory it goes into.
            let descend = match names.front() {
                Some((n, is_dir)) if n == first => {
                    let d = *is_dir && !more.is_empty();
                    names.pop_front();
                    d
                }
                _ => false,
            };
            stack.push(Level {
                dir: dir.clone(),
                prefix: prefix.clone(),
                names,
            });
            if !descend {
                break;
            }
            dir = dir.join(first);
            prefix = format!("{prefix}{first}/");
            rest = more;
        }
        Ok(Walk { stack })
    }

    /// The next `max` keys at most (fewer: the walk is over).
    pub fn next_keys(&mut self, max: usize) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(top) = self.stack.last_mut() else {
                break;
            };
            match top.names.pop_front() {
                None => drop(self.stack.pop()),
                Some((name, false)) => out.push(format!("{}{name}", top.prefix)),
                Some((name, true)) => {
                    let dir = top.dir.join(&name);
                    let prefix = format!("{}{name}/", top.prefix);
                    let names = match sorted_names(&dir) {
                        Ok(n) => n,
                        // Removed since it was listed: nothing below it.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => VecDeque::new(),
                        Err(e) => return Err(e),
                    };
                    self.stack.push(Level { dir, prefix, names });
                }
            }
        }
        Ok(out)
    }
}

/// The directories and regular files in `dir`, sorted by name.
fn sorted_names(dir: &Path) -> io::Result<VecDeque<(String, bool)>> {
    let mut names: Vec<(String, bool)> = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let Ok(name) = e.file_name().into_string() else {
            tracing::warn!("{}: a name that is not UTF-8, skipped", dir.display());
            continue;
        };
        let kind = e.file_type()?;
        if (kind.is_dir() || kind.is_file()) && !is_staging(&name) {
            names.push((name, kind.is_dir()));
        }
    }
    names.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(names.into())
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

    fn keys_after(root: &Path, after: Option<&str>, max: usize) -> io::Result<Vec<String>> {
        Walk::new(root, after)?.next_keys(max)
    }

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
        // One walk, page by page, gives the same keys.
        let mut w = Walk::new(d.path(), None).unwrap();
        let mut paged = Vec::new();
        loop {
            let page = w.next_keys(2).unwrap();
            paged.extend(page.iter().cloned());
            if page.len() < 2 {
                break;
            }
        }
        assert_eq!(paged, all);
    }
}
