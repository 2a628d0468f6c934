//! Wire helpers shared by requests and replies: little-endian integers,
//! length-prefixed strings checked against their limits, and the no-trailing-bytes rule.

use super::{validate_name, validate_target, MetaError, NAME_MAX, PATH_MAX};
use crate::body::BodyReader;

/// Reads a length-prefixed string, refusing one longer than `max` before reading it.
pub(super) fn read_string(r: &mut BodyReader<'_>, max: usize) -> Result<Vec<u8>, MetaError> {
    let len = r.u32()? as usize;
    if len > max {
        return Err(if max == NAME_MAX {
            MetaError::NameTooLong(len)
        } else {
            MetaError::PathTooLong(len)
        });
    }
    Ok(r.bytes(len)?.to_vec())
}

pub(super) fn read_name(r: &mut BodyReader<'_>) -> Result<Vec<u8>, MetaError> {
    let name = read_string(r, NAME_MAX)?;
    validate_name(&name)?;
    Ok(name)
}

pub(super) fn read_target(r: &mut BodyReader<'_>) -> Result<Vec<u8>, MetaError> {
    let target = read_string(r, PATH_MAX)?;
    validate_target(&target)?;
    Ok(target)
}

pub(super) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(super) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(super) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

pub(super) fn put_name_at(out: &mut Vec<u8>, parent: u64, name: &[u8]) {
    put_u64(out, parent);
    put_bytes(out, name);
}

pub(super) fn no_trailing(r: &mut BodyReader<'_>) -> Result<(), MetaError> {
    match r.rest().len() {
        0 => Ok(()),
        n => Err(MetaError::Trailing(n)),
    }
}
