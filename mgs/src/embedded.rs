//! The embedded store: one redb file, `mgs.redb`, in the MGS directory.
//!
//! Tables: `meta` (fsname, fsid, layout defaults, format version, map version) and
//! `roles` (role key -> record, see `store::encode_record`). Every commit is one redb
//! write transaction, durable when it returns.

use std::path::{Path, PathBuf};

use nacre_proto::bootstrap::{LayoutDefaults, Role, MAX_FSNAME_LEN};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::state::{Changes, FsIdent, Persisted};
use super::store::{decode_record, encode_record, Store, StoreError};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const ROLES: TableDefinition<u64, &[u8]> = TableDefinition::new("roles");
pub const FORMAT_VERSION: u32 = 1;
pub const FILE_NAME: &str = "mgs.redb";

pub struct EmbeddedStore {
    db: Database,
    dir: String,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn role_key(r: Role) -> u64 {
    ((r.kind as u64) << 32) | u64::from(r.index)
}

impl EmbeddedStore {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE_NAME)
    }

    /// Creates the management target in `dir`; refuses to replace one unless `force`.
    pub fn format(
        dir: &Path,
        fsname: &str,
        layout: LayoutDefaults,
        force: bool,
    ) -> Result<FsIdent, StoreError> {
        if fsname.is_empty() || fsname.len() > MAX_FSNAME_LEN {
            return Err(StoreError::Backend(format!(
                "fsname must be 1 to {MAX_FSNAME_LEN} bytes"
            )));
        }
        let path = Self::path(dir);
        if path.exists() {
            if !force {
                let fsname = match EmbeddedStore::open(dir).and_then(|mut s| s.load()) {
                    Ok(p) => p.fs.fsname,
                    Err(e) => format!("unreadable: {e}"),
                };
                return Err(StoreError::Exists {
                    dir: dir.display().to_string(),
                    fsname,
                });
            }
            std::fs::remove_file(&path)?;
        }
        std::fs::create_dir_all(dir)?;
        let fs = FsIdent {
            fsname: fsname.to_string(),
            fsid: random_u64()?,
            layout,
            root_squash: None,
        };
        let db = Database::create(&path).map_err(backend)?;
        let txn = db.begin_write().map_err(backend)?;
        {
            let mut meta = txn.open_table(META).map_err(backend)?;
            let put = |m: &mut redb::Table<&str, &[u8]>, k: &str, v: &[u8]| {
                m.insert(k, v).map(|_| ()).map_err(backend)
            };
            put(&mut meta, "format_version", &FORMAT_VERSION.to_le_bytes())?;
            put(&mut meta, "fsname", fs.fsname.as_bytes())?;
            put(&mut meta, "fsid", &fs.fsid.to_le_bytes())?;
            put(
                &mut meta,
                "stripe_count",
                &layout.stripe_count.to_le_bytes(),
            )?;
            put(&mut meta, "stripe_size", &layout.stripe_size.to_le_bytes())?;
            put(
                &mut meta,
                "mirror_count",
                &layout.mirror_count.to_le_bytes(),
            )?;
            put(&mut meta, "version", &1u64.to_le_bytes())?;
            txn.open_table(ROLES).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        Ok(fs)
    }

    /// Opens the management target in `dir`.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        let path = Self::path(dir);
        if !path.exists() {
            return Err(StoreError::NotFormatted {
                dir: dir.display().to_string(),
            });
        }
        Ok(EmbeddedStore {
            db: Database::open(&path).map_err(backend)?,
            dir: dir.display().to_string(),
        })
    }
}

pub(crate) fn random_u64() -> Result<u64, StoreError> {
    use std::io::Read;
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// A root squash setting as stored: uid, gid.
pub(crate) fn squash_bytes((uid, gid): (u32, u32)) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&uid.to_le_bytes());
    b[4..].copy_from_slice(&gid.to_le_bytes());
    b
}

pub(crate) fn squash_of(b: [u8; 8]) -> (u32, u32) {
    let word = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    (word(0), word(4))
}

fn fixed<const N: usize>(key: &str, v: Option<Vec<u8>>) -> Result<[u8; N], StoreError> {
    v.and_then(|v| v.try_into().ok())
        .ok_or(StoreError::Corrupt {
            key: key.into(),
            why: format!("missing or not {N} bytes"),
        })
}

impl Store for EmbeddedStore {
    fn load(&mut self) -> Result<Persisted, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        let get = |k: &str| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(meta.get(k).map_err(backend)?.map(|v| v.value().to_vec()))
        };
        let found = u32::from_le_bytes(fixed("format_version", get("format_version")?)?);
        if found != FORMAT_VERSION {
            return Err(StoreError::FormatVersion {
                dir: self.dir.clone(),
                found,
                want: FORMAT_VERSION,
            });
        }
        let fsname = String::from_utf8(get("fsname")?.unwrap_or_default()).map_err(|_| {
            StoreError::Corrupt {
                key: "fsname".into(),
                why: "not UTF-8".into(),
            }
        })?;
        let fs = FsIdent {
            fsname,
            fsid: u64::from_le_bytes(fixed("fsid", get("fsid")?)?),
            layout: LayoutDefaults {
                stripe_count: u32::from_le_bytes(fixed("stripe_count", get("stripe_count")?)?),
                stripe_size: u64::from_le_bytes(fixed("stripe_size", get("stripe_size")?)?),
                // Absent in targets formatted before deployment types: scratch.
                mirror_count: match get("mirror_count")? {
                    None => 1,
                    v => u32::from_le_bytes(fixed("mirror_count", v)?),
                },
            },
            root_squash: get("root_squash")?
                .map(|v| fixed::<8>("root_squash", Some(v)).map(squash_of))
                .transpose()?,
        };
        let version = u64::from_le_bytes(fixed("version", get("version")?)?);
        let roles_table = txn.open_table(ROLES).map_err(backend)?;
        let mut roles = Vec::new();
        for entry in roles_table.iter().map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let rec = decode_record(v.value()).map_err(|e| StoreError::Corrupt {
                key: format!("role {:#x}", k.value()),
                why: e.to_string(),
            })?;
            roles.push(rec);
        }
        Ok(Persisted {
            fs,
            version,
            roles,
            lease_lost: Vec::new(),
        })
    }

    fn commit(&mut self, changes: &Changes) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(backend)?;
        {
            let mut roles = txn.open_table(ROLES).map_err(backend)?;
            for r in &changes.roles {
                roles
                    .insert(role_key(r.server.role), encode_record(r).as_slice())
                    .map_err(backend)?;
            }
            let mut meta = txn.open_table(META).map_err(backend)?;
            if let Some(v) = changes.version {
                meta.insert("version", v.to_le_bytes().as_slice())
                    .map_err(backend)?;
            }
            match changes.root_squash {
                None => {}
                Some(None) => drop(meta.remove("root_squash").map_err(backend)?),
                Some(Some(sq)) => drop(
                    meta.insert("root_squash", squash_bytes(sq).as_slice())
                        .map_err(backend)?,
                ),
            }
        }
        txn.commit().map_err(backend)
    }
}
