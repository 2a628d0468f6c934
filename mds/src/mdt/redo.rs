//! Redo records and the operation log.
//!
//! A redo record is the list of physical table changes one batch of operations made
//! (puts and deletes of whole values). Replaying a record onto any earlier state that
//! lacks some of its effects yields the state the batch produced, so replaying a log
//! over a store that already holds part of it is harmless.
//!
//! The log file (`mdt.log`) is a sequence of `[u32 len][u32 crc32c(payload)][payload]`.
//! A record is appended with write(2) before any reply of its batch is sent (it is then
//! in the kernel's hands and survives the process being killed), and fdatasync'd before
//! the replies in sync mode. After a durable store commit the log is truncated. On open,
//! records are replayed until the first torn or corrupt one: such a tail was never
//! acknowledged as durable (sync mode) or was lost with the machine (default mode).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

/// One change to one table row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    PutInode(u64, Vec<u8>),
    DelInode(u64),
    PutDentry(u64, Vec<u8>, Vec<u8>),
    DelDentry(u64, Vec<u8>),
    PutSeq(u64, u64, Vec<u8>),
    DelSeq(u64, u64),
    PutMeta(String, u64),
    PutOrphan(u64),
    DelOrphan(u64),
    PutDestroy(u64, Vec<u8>),
    DelDestroy(u64),
    /// (client, tag, saved reply row).
    PutReply(u64, u32, Vec<u8>),
    DelReply(u64, u32),
    /// A data repository association (id, `hsm::RepoRecord`).
    PutRepo(u32, Vec<u8>),
    DelRepo(u32),
}

/// Encoded changes, in order.
#[derive(Debug, Default, Clone)]
pub struct Redo {
    pub bytes: Vec<u8>,
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

impl Redo {
    pub fn push(&mut self, c: &Change) {
        let out = &mut self.bytes;
        let u64s = |out: &mut Vec<u8>, tag: u8, vals: &[u64]| {
            out.push(tag);
            for v in vals {
                out.extend_from_slice(&v.to_le_bytes());
            }
        };
        match c {
            Change::PutInode(i, rec) => {
                u64s(out, 1, &[*i]);
                put_bytes(out, rec);
            }
            Change::DelInode(i) => u64s(out, 2, &[*i]),
            Change::PutDentry(d, name, val) => {
                u64s(out, 3, &[*d]);
                put_bytes(out, name);
                put_bytes(out, val);
            }
            Change::DelDentry(d, name) => {
                u64s(out, 4, &[*d]);
                put_bytes(out, name);
            }
            Change::PutSeq(d, s, row) => {
                u64s(out, 5, &[*d, *s]);
                put_bytes(out, row);
            }
            Change::DelSeq(d, s) => u64s(out, 6, &[*d, *s]),
            Change::PutMeta(k, v) => {
                u64s(out, 7, &[*v]);
                put_bytes(out, k.as_bytes());
            }
            Change::PutOrphan(i) => u64s(out, 8, &[*i]),
            Change::DelOrphan(i) => u64s(out, 9, &[*i]),
            Change::PutDestroy(i, l) => {
                u64s(out, 10, &[*i]);
                put_bytes(out, l);
            }
            Change::DelDestroy(i) => u64s(out, 11, &[*i]),
            Change::PutReply(client, tag, row) => {
                u64s(out, 12, &[*client]);
                out.extend_from_slice(&tag.to_le_bytes());
                put_bytes(out, row);
            }
            Change::DelReply(client, tag) => {
                u64s(out, 13, &[*client]);
                out.extend_from_slice(&tag.to_le_bytes());
            }
            Change::PutRepo(id, rec) => {
                u64s(out, 14, &[u64::from(*id)]);
                put_bytes(out, rec);
            }
            Change::DelRepo(id) => u64s(out, 15, &[u64::from(*id)]),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Decodes the changes of one record.
    pub fn decode(bytes: &[u8]) -> Result<Vec<Change>, &'static str> {
        let mut r = nacre_proto::BodyReader::new(bytes);
        let mut out = Vec::new();
        let e = |_| "truncated redo record";
        while let Ok(tag) = r.bytes(1) {
            let c = match tag[0] {
                1 => {
                    let i = r.u64().map_err(e)?;
                    Change::PutInode(i, read_blob(&mut r)?)
                }
                2 => Change::DelInode(r.u64().map_err(e)?),
                3 => {
                    let d = r.u64().map_err(e)?;
                    let name = read_blob(&mut r)?;
                    Change::PutDentry(d, name, read_blob(&mut r)?)
                }
                4 => {
                    let d = r.u64().map_err(e)?;
                    Change::DelDentry(d, read_blob(&mut r)?)
                }
                5 => {
                    let (d, s) = (r.u64().map_err(e)?, r.u64().map_err(e)?);
                    Change::PutSeq(d, s, read_blob(&mut r)?)
                }
                6 => Change::DelSeq(r.u64().map_err(e)?, r.u64().map_err(e)?),
                7 => {
                    let v = r.u64().map_err(e)?;
                    let k = String::from_utf8(read_blob(&mut r)?).map_err(|_| "meta key")?;
                    Change::PutMeta(k, v)
                }
                8 => Change::PutOrphan(r.u64().map_err(e)?),
                9 => Change::DelOrphan(r.u64().map_err(e)?),
                10 => {
                    let i = r.u64().map_err(e)?;
                    Change::PutDestroy(i, read_blob(&mut r)?)
                }
                11 => Change::DelDestroy(r.u64().map_err(e)?),
                12 => {
                    let (client, tag) = (r.u64().map_err(e)?, r.u32().map_err(e)?);
                    Change::PutReply(client, tag, read_blob(&mut r)?)
                }
                13 => Change::DelReply(r.u64().map_err(e)?, r.u32().map_err(e)?),
                14 => {
                    let id = u32::try_from(r.u64().map_err(e)?).map_err(|_| "repo id")?;
                    Change::PutRepo(id, read_blob(&mut r)?)
                }
                15 => Change::DelRepo(u32::try_from(r.u64().map_err(e)?).map_err(|_| "repo id")?),
                _ => return Err("unknown redo tag"),
            };
            out.push(c);
        }
        Ok(out)
    }
}

fn read_blob(r: &mut nacre_proto::BodyReader<'_>) -> Result<Vec<u8>, &'static str> {
    let n = r.u32().map_err(|_| "truncated redo record")? as usize;
    Ok(r.bytes(n).map_err(|_| "truncated redo record")?.to_vec())
}

/// The append-only operation log.
#[derive(Debug)]
pub struct OpLog {
    file: File,
    len: u64,
}

impl OpLog {
    pub fn open(path: &Path) -> std::io::Result<OpLog> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let len = file.metadata()?.len();
        Ok(OpLog { file, len })
    }

    /// The payloads of all intact records, in order, and how many bytes of torn or
    /// corrupt tail were found after them.
    pub fn records(&mut self) -> std::io::Result<(Vec<Vec<u8>>, u64)> {
        let mut all = Vec::new();
        let mut f = &self.file;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0))?;
        f.read_to_end(&mut all)?;
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(head) = all.get(at..at + 8) {
            let len = u32::from_le_bytes(head[..4].try_into().expect("4")) as usize;
            let crc = u32::from_le_bytes(head[4..].try_into().expect("4"));
            let Some(payload) = all.get(at + 8..at + 8 + len) else {
                break;
            };
            if crc32c::crc32c(payload) != crc {
                break;
            }
            out.push(payload.to_vec());
            at += 8 + len;
        }
        Ok((out, (all.len() - at) as u64))
    }

    /// Appends one record with a single write(2).
    pub fn append(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let mut rec = Vec::with_capacity(8 + payload.len());
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        rec.extend_from_slice(payload);
        self.file.write_all(&rec)?;
        self.len += rec.len() as u64;
        Ok(())
    }

    /// A second handle on the log file, for a thread that only fdatasyncs it.
    pub fn sync_handle(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    /// Empties the log once the store holds everything in it durably.
    pub fn truncate(&mut self) -> std::io::Result<()> {
        if self.len > 0 {
            self.file.set_len(0)?;
            self.len = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip() {
        let all = vec![
            Change::PutInode(1, vec![1, 2]),
            Change::DelInode(2),
            Change::PutDentry(3, b"a".to_vec(), vec![9; 17]),
            Change::DelDentry(3, b"b".to_vec()),
            Change::PutSeq(3, 4, vec![5]),
            Change::DelSeq(3, 4),
            Change::PutMeta("hwm.ino".into(), 7),
            Change::PutOrphan(8),
            Change::DelOrphan(8),
            Change::PutDestroy(9, vec![1]),
            Change::PutReply(10, 3, vec![4; 30]),
            Change::DelReply(10, 3),
            Change::DelDestroy(9),
        ];
        let mut r = Redo::default();
        for c in &all {
            r.push(c);
        }
        assert_eq!(Redo::decode(&r.bytes).unwrap(), all);
        assert!(Redo::decode(&r.bytes[..r.bytes.len() - 1]).is_err());
    }

    #[test]
    fn log_keeps_intact_records_and_stops_at_a_torn_tail() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/mdt-unit/oplog");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mdt.log");
        let mut log = OpLog::open(&path).unwrap();
        log.append(b"one").unwrap();
        log.append(b"two").unwrap();
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[50, 0, 0, 0, 1, 2]).unwrap();
        let mut log = OpLog::open(&path).unwrap();
        let (recs, torn) = log.records().unwrap();
        assert_eq!(recs, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(torn, 6);
        log.truncate().unwrap();
        assert!(log.records().unwrap().0.is_empty());
    }
}
