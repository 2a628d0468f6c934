//! The redb tables of an MDT and typed access to them.
//!
//! | table      | key                 | value                                  |
//! |------------|---------------------|----------------------------------------|
//! | `inodes`   | ino u64             | [`Inode`] record                       |
//! | `dentries` | (dir ino, name)     | [`Dentry`]: ino, seq, kind             |
//! | `dirseq`   | (dir ino, seq)      | ino u64, kind u8, name (readdir order) |
//! | `meta`     | &str                | u64: `format`, `inodes`, `hwm.ino`, `hwm.ost.<i>` |
//! | `orphans`  | ino u64             | (): unlinked while open                |
//! | `destroy`  | ino u64             | layout of a destroyed file, objects to remove on the OSTs (or a fresh id: a released file's old objects) |
//! | `repos`    | id u32              | a data repository association (`hsm::RepoRecord`) |
//!
//! Every change goes through [`WriteTables`], which also records it in a redo buffer:
//! the operation log holds these physical records, so replaying them after a crash
//! reproduces exactly the state the replies described.

use super::inode::{CorruptInode, Dentry, Inode};
use super::redo::{Change, Redo};
use nacre_proto::meta::FileKind;
use redb::{ReadableTable, TableDefinition};

pub const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
pub const DENTRIES: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("dentries");
pub const DIRSEQ: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("dirseq");
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const ORPHANS: TableDefinition<u64, ()> = TableDefinition::new("orphans");
pub const DESTROY: TableDefinition<u64, &[u8]> = TableDefinition::new("destroy");
pub const REPOS: TableDefinition<u32, &[u8]> = TableDefinition::new("repos");
/// (client, tag) -> the saved reply of its last changing request (see `replies`).
pub const REPLIES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("replies");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata store: {0}")]
    Redb(#[from] redb::Error),
    #[error(transparent)]
    Corrupt(#[from] CorruptInode),
    #[error("corrupt {0}")]
    CorruptRecord(&'static str),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Redb(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);

/// One readdir row.
#[derive(Debug, Clone)]
pub struct SeqEntry {
    pub seq: u64,
    pub ino: u64,
    pub kind: FileKind,
    pub name: Vec<u8>,
}

pub(crate) fn encode_seq(ino: u64, kind: FileKind, name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + name.len());
    v.extend_from_slice(&ino.to_le_bytes());
    v.push(kind as u8);
    v.extend_from_slice(name);
    v
}

pub(crate) fn decode_dentry(row: &[u8]) -> Result<Dentry, StoreError> {
    Dentry::decode(row).ok_or(StoreError::CorruptRecord("dentry"))
}

pub(crate) fn decode_seq(seq: u64, b: &[u8]) -> Result<SeqEntry, StoreError> {
    let bad = StoreError::CorruptRecord("dirseq row");
    if b.len() < 9 {
        return Err(bad);
    }
    Ok(SeqEntry {
        seq,
        ino: u64::from_le_bytes(
            b[..8]
                .try_into()
                .map_err(|_| StoreError::CorruptRecord("dirseq"))?,
        ),
        kind: FileKind::from_u32(b[8].into()).map_err(|_| bad)?,
        name: b[9..].to_vec(),
    })
}

/// Read access shared by read and write transactions.
pub trait View {
    fn inode(&self, ino: u64) -> Result<Option<Inode>, StoreError>;
    fn dentry(&self, dir: u64, name: &[u8]) -> Result<Option<Dentry>, StoreError>;
    /// Up to `max` entries of `dir` with a sequence number above `after`, in order, and
    /// whether more follow.
    fn entries_after(
        &self,
        dir: u64,
        after: u64,
        max: usize,
    ) -> Result<(Vec<SeqEntry>, bool), StoreError>;
    fn meta_value(&self, key: &str) -> Result<Option<u64>, StoreError>;
}

/// The tables opened in one transaction (read-only or writable).
pub struct Tables<I, D, S, M> {
    pub inodes: I,
    pub dentries: D,
    pub dirseq: S,
    pub meta: M,
}

impl<I, D, S, M> View for Tables<I, D, S, M>
where
    I: ReadableTable<u64, &'static [u8]>,
    D: ReadableTable<(u64, &'static [u8]), &'static [u8]>,
    S: ReadableTable<(u64, u64), &'static [u8]>,
    M: ReadableTable<&'static str, u64>,
{
    fn inode(&self, ino: u64) -> Result<Option<Inode>, StoreError> {
        match self.inodes.get(ino)? {
            None => Ok(None),
            Some(v) => Ok(Some(Inode::decode(ino, v.value())?)),
        }
    }

    fn dentry(&self, dir: u64, name: &[u8]) -> Result<Option<Dentry>, StoreError> {
        match self.dentries.get((dir, name))? {
            None => Ok(None),
            Some(v) => decode_dentry(v.value()).map(Some),
        }
    }

    fn entries_after(
        &self,
        dir: u64,
        after: u64,
        max: usize,
    ) -> Result<(Vec<SeqEntry>, bool), StoreError> {
        let Some(from) = after.checked_add(1) else {
            return Ok((Vec::new(), false));
        };
        let mut out = Vec::new();
        for row in self.dirseq.range((dir, from)..=(dir, u64::MAX))? {
            let (k, v) = row?;
            if out.len() == max {
                return Ok((out, true));
            }
            out.push(decode_seq(k.value().1, v.value())?);
        }
        Ok((out, false))
    }

    fn meta_value(&self, key: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.meta.get(key)?.map(|v| v.value()))
    }
}

pub type ReadTables = Tables<
    redb::ReadOnlyTable<u64, &'static [u8]>,
    redb::ReadOnlyTable<(u64, &'static [u8]), &'static [u8]>,
    redb::ReadOnlyTable<(u64, u64), &'static [u8]>,
    redb::ReadOnlyTable<&'static str, u64>,
>;

impl ReadTables {
    pub fn open(tx: &redb::ReadTransaction) -> Result<ReadTables, StoreError> {
        Ok(Tables {
            inodes: tx.open_table(INODES)?,
            dentries: tx.open_table(DENTRIES)?,
            dirseq: tx.open_table(DIRSEQ)?,
            meta: tx.open_table(META)?,
        })
    }
}

/// The namespace tables as opened in a write transaction.
pub type WriteView<'t> = Tables<
    redb::Table<'t, u64, &'static [u8]>,
    redb::Table<'t, (u64, &'static [u8]), &'static [u8]>,
    redb::Table<'t, (u64, u64), &'static [u8]>,
    redb::Table<'t, &'static str, u64>,
>;

/// The writable tables of one write transaction; every change is also recorded as redo.
pub struct WriteTables<'t> {
    pub view: WriteView<'t>,
    orphans: redb::Table<'t, u64, ()>,
    destroy: redb::Table<'t, u64, &'static [u8]>,
    replies: redb::Table<'t, (u64, u32), &'static [u8]>,
    repos: redb::Table<'t, u32, &'static [u8]>,
    pub redo: Redo,
    /// The changes applied since the caller last took them (for the readers' overlay).
    pub applied: Vec<Change>,
}

impl<'t> WriteTables<'t> {
    pub fn open(tx: &'t redb::WriteTransaction) -> Result<WriteTables<'t>, StoreError> {
        Ok(WriteTables {
            view: Tables {
                inodes: tx.open_table(INODES)?,
                dentries: tx.open_table(DENTRIES)?,
                dirseq: tx.open_table(DIRSEQ)?,
                meta: tx.open_table(META)?,
            },
            orphans: tx.open_table(ORPHANS)?,
            destroy: tx.open_table(DESTROY)?,
            replies: tx.open_table(REPLIES)?,
            repos: tx.open_table(REPOS)?,
            redo: Redo::default(),
            applied: Vec::new(),
        })
    }

    /// Applies one change (from an operation or from the log) and records it.
    pub fn apply(&mut self, c: Change) -> Result<(), StoreError> {
        let v = &mut self.view;
        match &c {
            Change::PutInode(ino, rec) => drop(v.inodes.insert(*ino, rec.as_slice())?),
            Change::DelInode(ino) => drop(v.inodes.remove(*ino)?),
            Change::PutDentry(dir, name, d) => {
                drop(v.dentries.insert((*dir, name.as_slice()), d.as_slice())?)
            }
            Change::DelDentry(dir, name) => drop(v.dentries.remove((*dir, name.as_slice()))?),
            Change::PutSeq(dir, seq, row) => drop(v.dirseq.insert((*dir, *seq), row.as_slice())?),
            Change::DelSeq(dir, seq) => drop(v.dirseq.remove((*dir, *seq))?),
            Change::PutMeta(key, val) => drop(v.meta.insert(key.as_str(), *val)?),
            Change::PutOrphan(ino) => drop(self.orphans.insert(*ino, ())?),
            Change::DelOrphan(ino) => drop(self.orphans.remove(*ino)?),
            Change::PutDestroy(ino, layout) => drop(self.destroy.insert(*ino, layout.as_slice())?),
            Change::DelDestroy(ino) => drop(self.destroy.remove(*ino)?),
            Change::PutReply(client, tag, row) => {
                drop(self.replies.insert((*client, *tag), row.as_slice())?)
            }
            Change::DelReply(client, tag) => drop(self.replies.remove((*client, *tag))?),
            Change::PutRepo(id, rec) => drop(self.repos.insert(*id, rec.as_slice())?),
            Change::DelRepo(id) => drop(self.repos.remove(*id)?),
        }
        self.redo.push(&c);
        self.applied.push(c);
        Ok(())
    }

    pub fn put_inode(&mut self, ino: &Inode) -> Result<(), StoreError> {
        self.apply(Change::PutInode(ino.ino, ino.encode()))
    }

    pub fn del_inode(&mut self, ino: u64) -> Result<(), StoreError> {
        self.apply(Change::DelInode(ino))
    }

    /// Adds `name -> ino` to `dir` with readdir sequence number `seq`.
    pub fn add_entry(&mut self, dir: u64, name: &[u8], d: Dentry) -> Result<(), StoreError> {
        self.apply(Change::PutDentry(dir, name.to_vec(), d.encode().to_vec()))?;
        self.apply(Change::PutSeq(dir, d.seq, encode_seq(d.ino, d.kind, name)))
    }

    pub fn remove_entry(&mut self, dir: u64, name: &[u8], seq: u64) -> Result<(), StoreError> {
        self.apply(Change::DelDentry(dir, name.to_vec()))?;
        self.apply(Change::DelSeq(dir, seq))
    }

    pub fn put_meta(&mut self, key: &str, val: u64) -> Result<(), StoreError> {
        self.apply(Change::PutMeta(key.to_string(), val))
    }

    /// The saved reply row of (client, tag), if any.
    pub fn saved_reply(&self, client: u64, tag: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.replies.get((client, tag))?.map(|v| v.value().to_vec()))
    }

    /// Every (client, tag) whose saved reply `is_old` says is due for removal.
    pub fn old_replies(
        &self,
        is_old: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<(u64, u32)>, StoreError> {
        let mut out = Vec::new();
        for row in self.replies.iter()? {
            let (k, v) = row?;
            if is_old(v.value()) {
                out.push(k.value());
            }
        }
        Ok(out)
    }

    /// Association `id`, if any.
    pub fn repo(&self, id: u32) -> Result<Option<super::hsm::RepoRecord>, StoreError> {
        match self.repos.get(id)? {
            None => Ok(None),
            Some(v) => super::hsm::RepoRecord::decode(v.value())
                .map(Some)
                .map_err(|_| StoreError::CorruptRecord("repository association")),
        }
    }

    pub fn orphans(&self) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        for row in self.orphans.iter()? {
            out.push(row?.0.value());
        }
        Ok(out)
    }
}
