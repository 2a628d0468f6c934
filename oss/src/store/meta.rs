//! Metadata calls on an object's file (synchronous, off the per-byte path): its length,
//! the logical size in an xattr, punching holes.

use std::path::Path;

use nacre_engine::{FileId, Storage};

use super::plan;
use crate::Errno;

pub(super) fn file_of(storage: &Storage, file: FileId) -> Result<&std::fs::File, Errno> {
    storage.file(file).ok_or(Errno::EIO)
}

pub(super) fn set_len(storage: &Storage, file: FileId, size: u64) -> Result<(), Errno> {
    rustix::fs::ftruncate(file_of(storage, file)?, size).map_err(|e| Errno(e.raw_os_error()))
}

/// The xattr holding an object's logical size (8 bytes, little-endian).
pub const SIZE_XATTR: &str = "user.nacre.size";

/// The logical size stored with an object (open file or path); `file_len` if it has
/// none (no write to it ever completed).
pub(super) fn stored_size<F: rustix::fd::AsFd>(file: F, file_len: u64) -> Result<u64, Errno> {
    let mut v = [0u8; 8];
    parse_size(
        rustix::fs::fgetxattr(file, SIZE_XATTR, &mut v[..]),
        v,
        file_len,
    )
}

pub(super) fn stored_size_at(path: &Path, file_len: u64) -> Result<u64, Errno> {
    let mut v = [0u8; 8];
    parse_size(
        rustix::fs::getxattr(path, SIZE_XATTR, &mut v[..]),
        v,
        file_len,
    )
}

pub(super) fn parse_size(
    r: rustix::io::Result<usize>,
    v: [u8; 8],
    file_len: u64,
) -> Result<u64, Errno> {
    match r {
        Ok(8) => Ok(u64::from_le_bytes(v)),
        Ok(n) => {
            tracing::error!("size xattr of {n} bytes, not 8");
            Err(Errno::EIO)
        }
        Err(rustix::io::Errno::NODATA) => Ok(file_len),
        Err(e) => Err(Errno(e.raw_os_error())),
    }
}

pub(super) fn set_stored_size(storage: &Storage, file: FileId, size: u64) -> Result<(), Errno> {
    rustix::fs::fsetxattr(
        file_of(storage, file)?,
        SIZE_XATTR,
        &size.to_le_bytes(),
        rustix::fs::XattrFlags::empty(),
    )
    .map_err(|e| Errno(e.raw_os_error()))
}

/// Makes `size` the logical end on disk: the file ends on the block boundary after it
/// and the rest of that block is zeroed. Files never end inside a block: an O_DIRECT
/// read stopped short there would be resumed at an unaligned offset, which the kernel
/// refuses (EINVAL) if a concurrent write has meanwhile extended the file.
pub(super) fn cut_to(storage: &Storage, file: FileId, size: u64) -> Result<(), Errno> {
    let end = plan::align_up(size);
    set_len(storage, file, end)?;
    if end > size {
        punch_hole(storage, file, size, end - size)?;
    }
    Ok(())
}

pub(super) fn punch_hole(
    storage: &Storage,
    file: FileId,
    offset: u64,
    len: u64,
) -> Result<(), Errno> {
    use rustix::fs::FallocateFlags;
    rustix::fs::fallocate(
        file_of(storage, file)?,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        offset,
        len,
    )
    .map_err(|e| Errno(e.raw_os_error()))
}
