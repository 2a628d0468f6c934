//! The fallback backend: pread/pwrite on the calling thread, completions queued for the
//! next reap. Slower (one syscall per operation, no overlap) but always there.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;

use super::{FileId, Files, IoCompletion, IoKind, Op, StorageConfig, StorageError};

pub(crate) struct SyncStorage {
    files: Files,
    done: VecDeque<IoCompletion>,
    depth: usize,
}

impl SyncStorage {
    pub(crate) fn new(cfg: &StorageConfig) -> SyncStorage {
        SyncStorage {
            files: Files::new(cfg.max_files),
            done: VecDeque::with_capacity(cfg.queue_depth as usize),
            depth: cfg.queue_depth as usize,
        }
    }

    pub(crate) fn add_file(&mut self, file: File) -> Result<FileId, StorageError> {
        self.files.add(file).map(FileId)
    }

    pub(crate) fn remove_file(&mut self, id: u32) -> Result<(), StorageError> {
        self.files.remove(id).map(drop)
    }

    pub(crate) fn file(&self, id: u32) -> Option<&File> {
        self.files.get(id)
    }

    pub(crate) fn push(&mut self, mut op: Op) -> Result<(), (StorageError, Op)> {
        if self.done.len() >= self.depth {
            return Err((StorageError::QueueFull(self.depth), op));
        }
        let Some(file) = self.files.get(op.file) else {
            return Err((StorageError::BadFile(op.file), op));
        };
        let result = run(file, &mut op);
        self.done.push_back(IoCompletion {
            user_data: op.user_data,
            kind: op.kind,
            result,
            buf: op.buf,
        });
        Ok(())
    }

    pub(crate) fn reap(&mut self, out: &mut Vec<IoCompletion>) -> usize {
        let n = self.done.len();
        out.extend(self.done.drain(..));
        n
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.done.len()
    }
}

/// Runs one operation to the end: short transfers continue, EINTR/EAGAIN retry (inside
/// std's read_at/write_at loop), end of file ends a read early.
fn run(file: &File, op: &mut Op) -> Result<usize, i32> {
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    match op.kind {
        IoKind::Fsync => file.sync_all().map(|_| 0).map_err(errno),
        IoKind::Fdatasync => file.sync_data().map(|_| 0).map_err(errno),
        IoKind::Read | IoKind::Write => {
            let buf = op.buf.as_ref().expect("reads and writes carry a buffer");
            while op.done < op.len {
                // SAFETY: [ptr, ptr+len) lies in the slab this op owns; nothing else
                // touches it until the completion hands the buffer back.
                let bytes = unsafe {
                    std::slice::from_raw_parts_mut(buf.as_ptr().add(op.done), op.len - op.done)
                };
                let at = op.offset + op.done as u64;
                let r = if op.kind == IoKind::Read {
                    file.read_at(bytes, at)
                } else {
                    file.write_at(bytes, at)
                };
                match r {
                    Ok(0) if op.kind == IoKind::Read => break, // end of file
                    Ok(0) => return Err(libc::EIO),
                    // Off a block boundary a read stopped at the end of the file (see
                    // the io_uring backend).
                    Ok(n)
                        if op.kind == IoKind::Read
                            && !(op.done + n).is_multiple_of(super::ALIGN) =>
                    {
                        op.done += n;
                        break;
                    }
                    Ok(n) => op.done += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                    Err(e) => return Err(errno(e)),
                }
            }
            Ok(op.done)
        }
    }
}
