//! Data repositories: where a linked directory's files live outside the file system.
//!
//! A [`Repository`] is an S3 bucket prefix (`s3://bucket/prefix`) or a local directory
//! (`file:///dir`), both spoken to through the `object_store` crate, behind a small
//! blocking interface for the MDS's threads (its own runtime does the async work):
//! listing in key order from a cursor (so an import resumes where it stopped), ranged
//! reads that fail if the object changed, multipart writes, POSIX metadata.
//!
//! POSIX metadata (mode, uid, gid, mtime) travels as FSx for Lustre stores it: in S3,
//! object user metadata (`file-permissions` in octal, `file-owner`, `file-group`,
//! `file-mtime` in nanoseconds with an `ns` suffix); in a local directory, the file's
//! own mode, owner and mtime.

mod local;
mod meta;
pub mod testing;
mod url;

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, PutPayload};

pub use meta::PosixMeta;
pub use url::{Access, RepoUrl};

/// Objects at most this big go up in one PUT; bigger ones in parts of this size.
pub const PART_SIZE: usize = 16 << 20;
/// Part uploads in flight at once for one object.
const PARTS_IN_FLIGHT: usize = 4;
/// Metadata lookups (S3 HEADs) in flight at once while listing.
const HEADS_IN_FLIGHT: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{0}")]
    Config(String),
    #[error("{what}: no such object or bucket")]
    NotFound { what: String },
    #[error("{what}: the object changed in the repository")]
    Changed { what: String },
    #[error("{what}: access denied (check the credentials)")]
    Denied { what: String },
    #[error("{what}: {why}")]
    Failed { what: String, why: String },
}

impl RepoError {
    fn of(what: &str, e: object_store::Error) -> RepoError {
        let what = what.to_string();
        match e {
            object_store::Error::NotFound { .. } => RepoError::NotFound { what },
            object_store::Error::Precondition { .. } | object_store::Error::NotModified { .. } => {
                RepoError::Changed { what }
            }
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => RepoError::Denied { what },
            other => {
                // A listing's HTTP status comes back as a generic error: told apart
                // by the S3 error codes its text carries.
                let text = other.to_string();
                let has = |codes: &[&str]| codes.iter().any(|c| text.contains(c));
                if has(&["NoSuchBucket", "404 Not Found"]) {
                    RepoError::NotFound { what }
                } else if has(&[
                    "AccessDenied",
                    "SignatureDoesNotMatch",
                    "InvalidAccessKeyId",
                    "403 Forbidden",
                ]) {
                    RepoError::Denied { what }
                } else {
                    RepoError::Failed {
                        what,
                        why: one_line(&text),
                    }
                }
            }
        }
    }
}

/// The first line of an error's text (object_store's carry whole HTTP bodies).
fn one_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    line.chars().take(300).collect()
}

/// One object of a listing, its key relative to the repository's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub size: u64,
    /// Last modification, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// The repository's version tag (S3's ETag; derived from inode, size and mtime
    /// for a local file): a change of content changes it.
    pub etag: String,
    pub meta: PosixMeta,
}

/// A listing under way, kept between pages.
pub struct Lister(Listing);

enum Listing {
    Local(local::Walk),
    S3(futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>>),
}

/// A linked repository.
pub struct Repository {
    url: RepoUrl,
    store: Arc<dyn ObjectStore>,
    /// The key prefix inside the store ("" for none).
    prefix: String,
    rt: Arc<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repository({})", self.url)
    }
}

impl Repository {
    /// Opens `url` (nothing is sent yet: [`Repository::check`] does).
    pub fn open(url: &str, access: &Access) -> Result<Repository, RepoError> {
        let url = RepoUrl::parse(url)?;
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match &url {
            RepoUrl::File { dir } => {
                std::fs::create_dir_all(dir).map_err(|e| RepoError::Failed {
                    what: dir.display().to_string(),
                    why: e.to_string(),
                })?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| RepoError::of(&dir.display().to_string(), e))?;
                (Arc::new(fs), String::new())
            }
            RepoUrl::S3 { bucket, prefix } => (Arc::new(access.s3(bucket)?), prefix.clone()),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("nacre-repo")
            .enable_all()
            .build()
            .map_err(|e| RepoError::Config(format!("starting the repository runtime: {e}")))?;
        Ok(Repository {
            url,
            store,
            prefix,
            rt: Arc::new(rt),
        })
    }

    pub fn url(&self) -> &RepoUrl {
        &self.url
    }

    fn path(&self, key: &str) -> Path {
        Path::from(format!("{}{key}", self.prefix))
    }

    fn relative(&self, p: &Path) -> Option<String> {
        p.as_ref().strip_prefix(&self.prefix).map(str::to_string)
    }

    /// Whether the repository answers with these credentials: one listing request. A
    /// missing bucket, refused credentials or an unreachable endpoint is an error here.
    pub fn check(&self) -> Result<(), RepoError> {
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        self.rt.block_on(async {
            let mut list = self.store.list(prefix.as_ref());
            match list.next().await {
                Some(Err(e)) => Err(RepoError::of(&self.url.to_string(), e)),
                _ => Ok(()),
            }
        })
    }

    /// Up to `max` objects after key `after` (None: from the start), in the
    /// repository's key order, with their POSIX metadata; fewer than `max` means the
    /// listing is over. Keys that name directories (ending in '/') are left out.
    pub fn list_after(&self, after: Option<&str>, max: usize) -> Result<Vec<Object>, RepoError> {
        let mut lister = self.lister(after)?;
        self.next_page(&mut lister, max)
    }

    /// A listing from after key `after`, kept between pages ([`Repository::next_page`]):
    /// one continuous listing (S3: one paginated request stream; a local directory: one
    /// walk), not one started again per page.
    pub fn lister(&self, after: Option<&str>) -> Result<Lister, RepoError> {
        Ok(Lister(match &self.url {
            // object_store lists a local directory in no set order: walked here, in
            // order, so that a cursor means the same after a restart.
            RepoUrl::File { dir } => {
                Listing::Local(local::Walk::new(dir, after).map_err(|e| self.failed(e))?)
            }
            RepoUrl::S3 { .. } => {
                let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
                let _rt = self.rt.enter();
                Listing::S3(match after {
                    Some(a) => self.store.list_with_offset(prefix.as_ref(), &self.path(a)),
                    None => self.store.list(prefix.as_ref()),
                })
            }
        }))
    }

    /// The next `max` objects of `lister` at most, with their POSIX metadata (fewer:
    /// the listing is over).
    pub fn next_page(&self, lister: &mut Lister, max: usize) -> Result<Vec<Object>, RepoError> {
        let keys = match &mut lister.0 {
            Listing::Local(walk) => walk.next_keys(max).map_err(|e| self.failed(e))?,
            Listing::S3(stream) => self.rt.block_on(async {
                let mut keys = Vec::new();
                while keys.len() < max {
                    match stream.next().await {
                        None => break,
                        Some(Err(e)) => return Err(RepoError::of(&self.url.to_string(), e)),
                        Some(Ok(m)) => {
                            if let Some(k) = self.relative(&m.location) {
                                if !k.is_empty() && !k.ends_with('/') {
                                    keys.push(k);
                                }
                            }
                        }
                    }
                }
                Ok(keys)
            })?,
        };
        // The user metadata is not in a listing: one HEAD per object, in parallel. An
        // object deleted meanwhile is left out.
        self.rt.block_on(async {
            let heads: Vec<Option<Object>> = futures::stream::iter(keys)
                .map(|key| async move { self.head_async(&key).await })
                .buffered(HEADS_IN_FLIGHT)
                .try_collect()
                .await?;
            Ok(heads.into_iter().flatten().collect())
        })
    }

    fn failed(&self, e: std::io::Error) -> RepoError {
        RepoError::Failed {
            what: self.url.to_string(),
            why: e.to_string(),
        }
    }

    /// The names of the objects directly below `dir` (a key prefix ending in '/', or
    /// "" for the top), as a listing with a delimiter gives them: one directory's
    /// worth in memory. A missing directory has none.
    pub fn names_in(&self, dir: &str) -> Result<std::collections::HashSet<String>, RepoError> {
        if let RepoUrl::File { dir: root } = &self.url {
            return local::names_in(&root.join(dir)).map_err(|e| RepoError::Failed {
                what: format!("{}{dir}", self.url),
                why: e.to_string(),
            });
        }
        let full = format!("{}{dir}", self.prefix);
        let prefix = (!full.is_empty()).then(|| Path::from(full.trim_end_matches('/')));
        let listed = self
            .rt
            .block_on(self.store.list_with_delimiter(prefix.as_ref()))
            .map_err(|e| RepoError::of(&format!("{}{dir}", self.url), e))?;
        Ok(listed
            .objects
            .iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect())
    }

    /// The object at `key`, or None.
    pub fn head(&self, key: &str) -> Result<Option<Object>, RepoError> {
        self.rt.block_on(self.head_async(key))
    }

    async fn head_async(&self, key: &str) -> Result<Option<Object>, RepoError> {
        let p = self.path(key);
        let found = match &self.url {
            RepoUrl::File { dir } => match self.store.head(&p).await {
                Ok(m) => local::posix_meta(dir, key).map(|meta| (m, meta)),
                Err(e) => Err(e),
            },
            RepoUrl::S3 { .. } => {
                let opts = GetOptions {
                    head: true,
                    ..GetOptions::default()
                };
                self.store
                    .get_opts(&p, opts)
                    .await
                    .map(|got| (got.meta, PosixMeta::from_attributes(&got.attributes)))
            }
        };
        match found {
            Ok((m, meta)) => Ok(Some(object_of(key.to_string(), &m, meta))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(RepoError::of(key, e)),
        }
    }

    /// Bytes `range` of the object at `key`, refused ([`RepoError::Changed`]) if its
    /// tag is no longer `etag` (the object was replaced since it was listed).
    pub fn read(&self, key: &str, range: Range<u64>, etag: &str) -> Result<Bytes, RepoError> {
        let p = self.path(key);
        let opts = GetOptions {
            if_match: (!etag.is_empty()).then(|| etag.to_string()),
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        self.rt.block_on(async {
            let got = self
                .store
                .get_opts(&p, opts)
                .await
                .map_err(|e| RepoError::of(key, e))?;
            // Also checked here: not every S3 server honours If-Match.
            if !etag.is_empty() && got.meta.e_tag.as_deref() != Some(etag) {
                return Err(RepoError::Changed {
                    what: key.to_string(),
                });
            }
            got.bytes().await.map_err(|e| RepoError::of(key, e))
        })
    }

    /// Writes an object of `size` bytes at `key`, its bytes taken in order from `fill`
    /// (called with the offset and a buffer to fill completely), with POSIX metadata
    /// `meta`: one PUT up to [`PART_SIZE`], a multipart upload above. Answers the
    /// object as the repository now lists it.
    pub fn write(
        &self,
        key: &str,
        size: u64,
        mut fill: impl FnMut(u64, &mut [u8]) -> std::io::Result<()>,
        meta: &PosixMeta,
    ) -> Result<Object, RepoError> {
        let p = self.path(key);
        // A local directory keeps the metadata on the file itself (below).
        let attributes = match &self.url {
            RepoUrl::File { .. } => object_store::Attributes::new(),
            RepoUrl::S3 { .. } => meta.to_attributes(),
        };
        if size as usize <= PART_SIZE {
            let mut buf = vec![0; size as usize];
            fill(0, &mut buf).map_err(|e| reading(key, e))?;
            let opts = object_store::PutOptions {
                attributes,
                ..Default::default()
            };
            self.rt
                .block_on(self.store.put_opts(&p, PutPayload::from(buf), opts))
                .map_err(|e| RepoError::of(key, e))?;
        } else {
            self.write_parts(&p, key, size, &mut fill, attributes)?;
        }
        if let RepoUrl::File { dir } = &self.url {
            local::set_posix_meta(dir, key, meta).map_err(|e| RepoError::Failed {
                what: key.to_string(),
                why: format!("setting its mode, owner and mtime: {e}"),
            })?;
        }
        self.head(key)?.ok_or_else(|| RepoError::NotFound {
            what: key.to_string(),
        })
    }

    fn write_parts(
        &self,
        p: &Path,
        key: &str,
        size: u64,
        fill: &mut impl FnMut(u64, &mut [u8]) -> std::io::Result<()>,
        attributes: object_store::Attributes,
    ) -> Result<(), RepoError> {
        let err = |e| RepoError::of(key, e);
        let opts = object_store::PutMultipartOptions {
            attributes,
            ..Default::default()
        };
        let mut upload = self
            .rt
            .block_on(self.store.put_multipart_opts(p, opts))
            .map_err(err)?;
        let mut flying = Vec::new();
        let mut at = 0;
        let mut send = || -> Result<(), RepoError> {
            while at < size {
                let len = (size - at).min(PART_SIZE as u64) as usize;
                let mut buf = vec![0; len];
                fill(at, &mut buf).map_err(|e| reading(key, e))?;
                flying.push(self.rt.spawn(upload.put_part(PutPayload::from(buf))));
                if flying.len() == PARTS_IN_FLIGHT {
                    self.rt.block_on(join_parts(&mut flying)).map_err(err)?;
                }
                at += len as u64;
            }
            self.rt.block_on(join_parts(&mut flying)).map_err(err)
        };
        let result = send().and_then(|()| self.rt.block_on(upload.complete()).map_err(err));
        if result.is_err() {
            let _ = self.rt.block_on(upload.abort());
        }
        result.map(drop)
    }

    /// Removes every object below the repository's prefix (batched where the store
    /// can: S3's multi-object delete).
    pub fn delete_all(&self) -> Result<(), RepoError> {
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        self.rt.block_on(async {
            let locations = self
                .store
                .list(prefix.as_ref())
                .map_ok(|m| m.location)
                .boxed();
            self.store
                .delete_stream(locations)
                .try_for_each(|_| async { Ok(()) })
                .await
                .map_err(|e| RepoError::of(&self.url.to_string(), e))
        })
    }

    /// Removes the object at `key` (gone already counts as done).
    pub fn delete(&self, key: &str) -> Result<(), RepoError> {
        let p = self.path(key);
        match self.rt.block_on(self.store.delete(&p)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(RepoError::of(key, e)),
        }
    }
}

async fn join_parts(
    flying: &mut Vec<tokio::task::JoinHandle<object_store::Result<()>>>,
) -> object_store::Result<()> {
    for part in flying.drain(..) {
        part.await.map_err(|e| object_store::Error::Generic {
            store: "upload",
            source: Box::new(e),
        })??;
    }
    Ok(())
}

fn reading(key: &str, e: std::io::Error) -> RepoError {
    RepoError::Failed {
        what: key.to_string(),
        why: format!("reading the file to export: {e}"),
    }
}

fn object_of(key: String, m: &ObjectMeta, meta: PosixMeta) -> Object {
    Object {
        key,
        size: m.size,
        mtime_ns: m.last_modified.timestamp_nanos_opt().unwrap_or(0),
        etag: m.e_tag.clone().unwrap_or_default(),
        meta,
    }
}
