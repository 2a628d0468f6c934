//! Changes applied but not yet committed to redb, seen by readers over the last commit.
//!
//! The committer keeps one redb write transaction open across many batches and commits
//! it every few milliseconds (or sooner, see `service`): a redb commit costs about as
//! much as the operations of a small batch, so committing per batch made every create
//! pay for one. An operation is acknowledged once its batch is in the operation log, as
//! before; to keep it visible to every reader from then on, the committer records the
//! batch's namespace changes here before replying, and clears them only under the same
//! lock that it holds while the transaction commits. A reader takes the lock (shared),
//! then opens its read transaction: it sees either the changes here over the commit
//! before them, or an empty overlay over the commit that holds them.

use std::collections::{BTreeMap, HashMap};

use super::inode::{Dentry, Inode};
use super::redo::Change;
use super::store::{decode_dentry, decode_seq, SeqEntry, StoreError, View};

/// The namespace tables' uncommitted rows: Some(row) written, None removed.
#[derive(Debug, Default)]
pub struct Overlay {
    inodes: HashMap<u64, Option<Vec<u8>>>,
    /// By directory, then name (looked up by `&[u8]`, with no allocation per lookup).
    dentries: HashMap<u64, HashMap<Vec<u8>, Option<Vec<u8>>>>,
    dirseq: BTreeMap<(u64, u64), Option<Vec<u8>>>,
    meta: HashMap<String, u64>,
    /// Files whose objects await removal on the OSTs.
    destroy: BTreeMap<u64, Option<Vec<u8>>>,
    /// Data repository associations.
    repos: BTreeMap<u32, Option<Vec<u8>>>,
}

impl Overlay {
    /// Takes one applied change (the tables readers do not see are skipped).
    pub fn record(&mut self, c: Change) {
        match c {
            Change::PutInode(ino, rec) => drop(self.inodes.insert(ino, Some(rec))),
            Change::DelInode(ino) => drop(self.inodes.insert(ino, None)),
            Change::PutDentry(dir, name, d) => {
                self.dentries.entry(dir).or_default().insert(name, Some(d));
            }
            Change::DelDentry(dir, name) => {
                self.dentries.entry(dir).or_default().insert(name, None);
            }
            Change::PutSeq(dir, seq, row) => drop(self.dirseq.insert((dir, seq), Some(row))),
            Change::DelSeq(dir, seq) => drop(self.dirseq.insert((dir, seq), None)),
            Change::PutMeta(key, val) => drop(self.meta.insert(key, val)),
            Change::PutDestroy(ino, layout) => drop(self.destroy.insert(ino, Some(layout))),
            Change::DelDestroy(ino) => drop(self.destroy.insert(ino, None)),
            Change::PutRepo(id, rec) => drop(self.repos.insert(id, Some(rec))),
            Change::DelRepo(id) => drop(self.repos.insert(id, None)),
            Change::PutOrphan(_)
            | Change::DelOrphan(_)
            | Change::PutReply(..)
            | Change::DelReply(..) => {}
        }
    }

    pub fn clear(&mut self) {
        self.inodes.clear();
        self.dentries.clear();
        self.dirseq.clear();
        self.meta.clear();
        self.destroy.clear();
        self.repos.clear();
    }

    /// The association rows written (Some) or removed (None) since the last commit.
    pub fn repos(&self) -> &BTreeMap<u32, Option<Vec<u8>>> {
        &self.repos
    }

    /// The destroy rows written (Some) or removed (None) since the last commit.
    pub fn destroys(&self) -> &BTreeMap<u64, Option<Vec<u8>>> {
        &self.destroy
    }
}

/// `overlay` seen over `base` (a read transaction's tables).
pub struct Layered<'a, V> {
    pub overlay: &'a Overlay,
    pub base: &'a V,
}

impl<V: View> View for Layered<'_, V> {
    fn inode(&self, ino: u64) -> Result<Option<Inode>, StoreError> {
        match self.overlay.inodes.get(&ino) {
            Some(Some(rec)) => Ok(Some(Inode::decode(ino, rec)?)),
            Some(None) => Ok(None),
            None => self.base.inode(ino),
        }
    }

    fn dentry(&self, dir: u64, name: &[u8]) -> Result<Option<Dentry>, StoreError> {
        match self.overlay.dentries.get(&dir).and_then(|d| d.get(name)) {
            Some(Some(row)) => decode_dentry(row).map(Some),
            Some(None) => Ok(None),
            None => self.base.dentry(dir, name),
        }
    }

    /// The base's entries after `after` with the overlay's rows of `dir` merged in:
    /// removed ones dropped, written ones added, in sequence order. The base is asked
    /// for enough more to make up for what the overlay removes; past the base's last
    /// entry (when it has more), overlay rows wait for the next page so that none of the
    /// base's is skipped.
    fn entries_after(
        &self,
        dir: u64,
        after: u64,
        max: usize,
    ) -> Result<(Vec<SeqEntry>, bool), StoreError> {
        let Some(from) = after.checked_add(1) else {
            return Ok((Vec::new(), false));
        };
        let rows: Vec<(u64, &Option<Vec<u8>>)> = self
            .overlay
            .dirseq
            .range((dir, from)..=(dir, u64::MAX))
            .map(|(&(_, seq), row)| (seq, row))
            .collect();
        if rows.is_empty() {
            return self.base.entries_after(dir, after, max);
        }
        let removed = rows.iter().filter(|(_, r)| r.is_none()).count();
        let (base, base_more) = self.base.entries_after(dir, after, max + removed)?;
        let last = match (base_more, base.last()) {
            (true, Some(e)) => e.seq,
            _ => u64::MAX,
        };
        let mut merged: BTreeMap<u64, SeqEntry> = base.into_iter().map(|e| (e.seq, e)).collect();
        for (seq, row) in rows {
            if seq > last {
                break;
            }
            match row {
                Some(row) => drop(merged.insert(seq, decode_seq(seq, row)?)),
                None => drop(merged.remove(&seq)),
            }
        }
        let more = base_more || merged.len() > max;
        Ok((merged.into_values().take(max).collect(), more))
    }

    fn meta_value(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self.overlay.meta.get(key) {
            Some(v) => Ok(Some(*v)),
            None => self.base.meta_value(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdt::store::encode_seq;
    use nacre_proto::meta::FileKind;

    /// A base of readdir rows only.
    struct Rows(BTreeMap<u64, Vec<u8>>);

    impl View for Rows {
        fn inode(&self, _: u64) -> Result<Option<Inode>, StoreError> {
            Ok(None)
        }
        fn dentry(&self, _: u64, _: &[u8]) -> Result<Option<Dentry>, StoreError> {
            Ok(None)
        }
        fn entries_after(
            &self,
            _: u64,
            after: u64,
            max: usize,
        ) -> Result<(Vec<SeqEntry>, bool), StoreError> {
            let mut rows = self.0.range(after + 1..);
            let page = rows
                .by_ref()
                .take(max)
                .map(|(&s, r)| decode_seq(s, r).unwrap())
                .collect();
            Ok((page, rows.next().is_some()))
        }
        fn meta_value(&self, _: &str) -> Result<Option<u64>, StoreError> {
            Ok(None)
        }
    }

    fn row(seq: u64) -> Vec<u8> {
        encode_seq(seq * 10, FileKind::File, format!("n{seq}").as_bytes())
    }

    /// Every page size through base rows with overlay removals, replacements and
    /// additions (before, between and after the base's) lists the merged rows once each.
    #[test]
    fn paging_through_an_overlay_lists_each_row_once() {
        let base = Rows(
            (1..=20)
                .filter(|s| s % 7 != 0)
                .map(|s| (s, row(s)))
                .collect(),
        );
        let mut overlay = Overlay::default();
        let mut model: BTreeMap<u64, Vec<u8>> = base.0.clone();
        for s in [3, 4, 5, 19] {
            overlay.record(Change::DelSeq(1, s));
            model.remove(&s);
        }
        for s in [7, 8, 21, 30] {
            let r = encode_seq(s * 100, FileKind::Dir, b"new");
            overlay.record(Change::PutSeq(1, s, r.clone()));
            model.insert(s, r);
        }
        // Another directory's rows never show.
        overlay.record(Change::PutSeq(2, 9, row(9)));
        let view = Layered {
            overlay: &overlay,
            base: &base,
        };
        let want: Vec<u64> = model.keys().copied().collect();
        for max in 1..=25 {
            let (mut got, mut after) = (Vec::new(), 0);
            loop {
                let (page, more) = view.entries_after(1, after, max).unwrap();
                assert!(page.len() <= max);
                for e in &page {
                    assert_eq!(decode_seq(e.seq, &model[&e.seq]).unwrap().ino, e.ino);
                }
                got.extend(page.iter().map(|e| e.seq));
                match (more, page.last()) {
                    (true, Some(e)) => after = e.seq,
                    (true, None) => panic!("more, but an empty page (max {max})"),
                    (false, _) => break,
                }
            }
            assert_eq!(got, want, "pages of {max}");
        }
    }
}
