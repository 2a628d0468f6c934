//! Bounds-checked readers and writers for frame bodies, and the bulk descriptor.

/// A peer's registered memory as it describes it on the wire: where its bytes are (a
/// virtual address or an offset, per the provider's mr_mode), how many, and the key to
/// reach them by RMA. The one type for it: nacre-fabric posts RMA against it after a
/// bounds check, and bodies carry it as 24 little-endian bytes (addr, len, key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkDesc {
    pub addr: u64,
    pub len: u64,
    pub key: u64,
}

impl BulkDesc {
    pub const LEN: usize = 24;

    /// Decodes exactly [`BulkDesc::LEN`] bytes; refuses a range that overflows.
    pub fn from_bytes(bytes: &[u8]) -> Result<BulkDesc, BodyError> {
        if bytes.len() != Self::LEN {
            return Err(BodyError::Short {
                at: 0,
                want: Self::LEN,
                left: bytes.len(),
            });
        }
        BodyReader::new(bytes).bulk()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A sub-range `[offset, offset+len)` of this one, or None when it does not fit.
    pub fn sub(&self, offset: u64, len: u64) -> Option<BulkDesc> {
        let end = offset.checked_add(len)?;
        (end <= self.len).then_some(BulkDesc {
            addr: self.addr + offset,
            len,
            key: self.key,
        })
    }

    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        out[..8].copy_from_slice(&self.addr.to_le_bytes());
        out[8..16].copy_from_slice(&self.len.to_le_bytes());
        out[16..].copy_from_slice(&self.key.to_le_bytes());
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body too short: wanted {want} more bytes at offset {at}, {left} left")]
    Short { at: usize, want: usize, left: usize },
    #[error("bulk descriptor of {len} bytes at {addr:#x} overflows the address space")]
    BadBulk { addr: u64, len: u64 },
    #[error("body buffer full: {0} bytes do not fit")]
    Full(usize),
}

/// Reads fields off a body, each one checked against what is left.
#[derive(Debug)]
pub struct BodyReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> BodyReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        BodyReader { bytes, at: 0 }
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], BodyError> {
        let left = self.bytes.len() - self.at;
        if n > left {
            return Err(BodyError::Short {
                at: self.at,
                want: n,
                left,
            });
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    pub fn u16(&mut self) -> Result<u16, BodyError> {
        Ok(u16::from_le_bytes(
            self.bytes(2)?.try_into().expect("2 bytes"),
        ))
    }

    pub fn u32(&mut self) -> Result<u32, BodyError> {
        Ok(u32::from_le_bytes(
            self.bytes(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn u64(&mut self) -> Result<u64, BodyError> {
        Ok(u64::from_le_bytes(
            self.bytes(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub fn bulk(&mut self) -> Result<BulkDesc, BodyError> {
        let desc = BulkDesc {
            addr: self.u64()?,
            len: self.u64()?,
            key: self.u64()?,
        };
        if desc.addr.checked_add(desc.len).is_none() {
            return Err(BodyError::BadBulk {
                addr: desc.addr,
                len: desc.len,
            });
        }
        Ok(desc)
    }

    /// What is not read yet, left unread.
    pub fn left(&self) -> &'a [u8] {
        &self.bytes[self.at..]
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.bytes[self.at..];
        self.at = self.bytes.len();
        out
    }
}

/// Writes fields into a caller-provided buffer (no allocation).
#[derive(Debug)]
pub struct BodyWriter<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl<'a> BodyWriter<'a> {
    pub fn new(out: &'a mut [u8]) -> Self {
        BodyWriter { out, at: 0 }
    }

    pub fn bytes(&mut self, data: &[u8]) -> Result<&mut Self, BodyError> {
        let end = self.at + data.len();
        let dst = self
            .out
            .get_mut(self.at..end)
            .ok_or(BodyError::Full(data.len()))?;
        dst.copy_from_slice(data);
        self.at = end;
        Ok(self)
    }

    pub fn u32(&mut self, v: u32) -> Result<&mut Self, BodyError> {
        self.bytes(&v.to_le_bytes())
    }

    pub fn u64(&mut self, v: u64) -> Result<&mut Self, BodyError> {
        self.bytes(&v.to_le_bytes())
    }

    pub fn bulk(&mut self, d: &BulkDesc) -> Result<&mut Self, BodyError> {
        self.bytes(&d.to_bytes())
    }

    pub fn len(&self) -> usize {
        self.at
    }

    pub fn is_empty(&self) -> bool {
        self.at == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_short_bodies_fail() {
        let mut buf = [0u8; 64];
        let d = BulkDesc {
            addr: 0x1000,
            len: 1 << 20,
            key: 9,
        };
        let mut w = BodyWriter::new(&mut buf);
        w.u32(5).unwrap().u64(6).unwrap().bulk(&d).unwrap();
        let n = w.len();
        assert_eq!(n, 36);
        let mut r = BodyReader::new(&buf[..n]);
        assert_eq!((r.u32().unwrap(), r.u64().unwrap()), (5, 6));
        assert_eq!(r.bulk().unwrap(), d);
        assert!(matches!(r.u32(), Err(BodyError::Short { .. })));
        let mut small = [0u8; 3];
        assert!(BodyWriter::new(&mut small).u32(1).is_err());
        let mut bad = [0xffu8; 24];
        bad[8..16].copy_from_slice(&1u64.to_le_bytes());
        assert!(matches!(
            BodyReader::new(&bad).bulk(),
            Err(BodyError::BadBulk { .. })
        ));
    }
}
