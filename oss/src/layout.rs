//! Where objects live in a target: `O/<hh>/<id as 16 hex digits>`, `hh` being the top
//! byte of a multiplicative hash of the id, so that the sequential ids the MDS hands out
//! spread over 256 directories instead of piling into one (ext4 directories stay small
//! and their locks uncontended). The directories are made at format time.

use std::path::{Path, PathBuf};

use crate::superblock::TargetError;

/// Objects' top directory inside a target.
pub const OBJECTS_DIR: &str = "O";
/// Number of hashed subdirectories (`00` .. `ff`).
pub const FANOUT: usize = 256;

/// Object ids are given by the MDS; 0 is never a valid one.
pub type ObjectId = u64;

/// The hashed directory of an object: top byte of id * 2^64/phi (Fibonacci hashing).
/// Part of the on-disk format: changing it is a format version change.
pub fn bucket(id: ObjectId) -> u8 {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// The path of an object's file relative to the target's root.
pub fn object_path(root: &Path, id: ObjectId) -> PathBuf {
    root.join(OBJECTS_DIR)
        .join(format!("{:02x}", bucket(id)))
        .join(format!("{id:016x}"))
}

pub(crate) fn create_dirs(root: &Path) -> Result<(), TargetError> {
    for b in 0..FANOUT {
        let d = root.join(OBJECTS_DIR).join(format!("{b:02x}"));
        std::fs::create_dir_all(&d).map_err(|source| TargetError::Io { path: d, source })?;
    }
    Ok(())
}

/// Removes every object of a target (before a forced format).
pub(crate) fn wipe(root: &Path) -> Result<(), TargetError> {
    let d = root.join(OBJECTS_DIR);
    match std::fs::remove_dir_all(&d) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(TargetError::Io { path: d, source: e })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_buckets() {
        let mut seen = [0u32; FANOUT];
        for id in 1..=4096u64 {
            seen[bucket(id) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (8..=24).contains(&n)), "{seen:?}");
        assert_eq!(
            object_path(Path::new("/t"), 0x1234),
            PathBuf::from(format!("/t/O/{:02x}/0000000000001234", bucket(0x1234)))
        );
    }
}
