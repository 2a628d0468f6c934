//! File layouts: how a file's bytes map onto objects on OSTs.
//!
//! Two forms share one encoding. A [`StripeSpec`] is a template (what `setstripe` sets on a
//! directory or asks for at create): stripe size, stripe count (or "all OSTs"), first OST
//! (or "any"), mirror count. A [`StripedLayout`] is one resolved RAID-0 copy: the stripe
//! size and one `(ost, object id)` per stripe, in order. A [`FileLayout`] is what a file
//! carries: one or more such copies (mirrors, as Lustre FLR's `lfs mirror create -N`),
//! all of one geometry, each in sync or stale.
//!
//! Encoding (little-endian), room for mirrored and composite layouts later:
//!
//! | off | size | field                                              |
//! |-----|------|----------------------------------------------------|
//! | 0   | 2    | format version (1)                                 |
//! | 2   | 2    | kind: 1 RAID-0 spec, 2 RAID-0 resolved, 3 mirror, 4 composite |
//! | 4   | 4    | body length                                        |
//! | 8   | len  | body of that kind                                  |
//!
//! A RAID-0 spec body is stripe size (u32), count (i64, -1 for all), first OST (i64, -1
//! for any) and, when more than one, the mirror count (u32). A file of one mirror in
//! sync encodes as a bare RAID-0 layout (kind 2); a mirrored one as kind 3: mirror count
//! (u16), reserved (u16), then per mirror its flags (u32, bit 0: stale) and its nested
//! RAID-0 layout with its own header. Composite layouts (kind 4) and any unknown kind or
//! version are refused with [`LayoutError`].

use crate::body::BodyReader;

pub const LAYOUT_VERSION: u16 = 1;
/// Stripe sizes are multiples of 64 KiB, as in Lustre (page and O_DIRECT friendly).
pub const STRIPE_ALIGN: u32 = 64 * 1024;
/// Most stripes one file may have (Lustre's limit too).
pub const MAX_STRIPES: u32 = 2000;
/// Most mirrors (copies) one file may have.
pub const MAX_MIRRORS: u32 = 4;
/// Most objects one file may have over all its mirrors: its layout fits one MDS reply.
pub const MAX_OBJECTS: u32 = 2 * MAX_STRIPES;
/// The largest encoded layout: header, mirror table, and nested layouts of
/// [`MAX_OBJECTS`] objects in all.
pub const MAX_LAYOUT_BYTES: usize =
    8 + 4 + MAX_MIRRORS as usize * (4 + 8 + 8) + MAX_OBJECTS as usize * 12;

const KIND_RAID0_SPEC: u16 = 1;
const KIND_RAID0: u16 = 2;
const KIND_MIRROR: u16 = 3;
const KIND_COMPOSITE: u16 = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("layout truncated: {0}")]
    Short(#[from] crate::body::BodyError),
    #[error("layout format version {0} not supported (this build reads {LAYOUT_VERSION})")]
    Version(u16),
    #[error("layout kind {0} ({1}) not supported by this build")]
    UnsupportedKind(u16, &'static str),
    #[error("layout flags {0:#x} not supported by this build")]
    Flags(u16),
    #[error("layout kind {found}, expected {expected}")]
    WrongKind { found: u16, expected: u16 },
    #[error("stripe size {0} is not a non-zero multiple of 64 KiB")]
    StripeSize(u32),
    #[error("stripe count {0} out of range (1..={MAX_STRIPES}, or -1 for all OSTs)")]
    StripeCount(i64),
    #[error("layout body of {0} bytes exceeds the limit of {MAX_LAYOUT_BYTES}")]
    TooLong(usize),
    #[error("mirror count {0} out of range (1..={MAX_MIRRORS})")]
    MirrorCount(u32),
    #[error("a file of {0} objects over its mirrors exceeds the limit of {MAX_OBJECTS}")]
    TooManyObjects(u64),
    #[error("mirrors of one file differ in geometry (stripe size or count)")]
    MirrorGeometry,
    #[error("every mirror of the layout is stale")]
    NoMirrorInSync,
    #[error("{0} trailing bytes after the layout")]
    Trailing(usize),
    #[error("range at {offset} of {len} bytes overflows the file offset space")]
    RangeOverflow { offset: u64, len: u64 },
}

/// How many stripes a template asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeCount {
    /// Every OST of the cluster map at create time (`-c -1`).
    All,
    Count(u32),
}

/// Which OST holds stripe 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstOst {
    /// The MDS chooses (round robin over the OST set).
    Any,
    Index(u32),
}

impl StripeCount {
    /// As `lfs setstripe -c` writes it: -1 for every OST, else the count (>= 1).
    pub fn from_lfs(v: i64) -> Option<StripeCount> {
        match v {
            -1 => Some(StripeCount::All),
            c if c >= 1 => u32::try_from(c).ok().map(StripeCount::Count),
            _ => None,
        }
    }

    pub fn lfs(self) -> i64 {
        match self {
            StripeCount::All => -1,
            StripeCount::Count(c) => i64::from(c),
        }
    }
}

impl FirstOst {
    /// As `lfs setstripe -i` writes it: -1 for the MDS's choice, else the OST index.
    pub fn from_lfs(v: i64) -> Option<FirstOst> {
        match v {
            -1 => Some(FirstOst::Any),
            i if i >= 0 => u32::try_from(i).ok().map(FirstOst::Index),
            _ => None,
        }
    }

    pub fn lfs(self) -> i64 {
        match self {
            FirstOst::Any => -1,
            FirstOst::Index(i) => i64::from(i),
        }
    }
}

/// A striping template: what a directory passes to its new files, what create asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeSpec {
    pub stripe_size: u32,
    pub count: StripeCount,
    pub first: FirstOst,
    /// Copies of every byte (1..=[`MAX_MIRRORS`]), each on other OSTs.
    pub mirrors: u32,
}

impl Default for StripeSpec {
    /// 1 MiB stripes on one OST chosen by the MDS, one copy (Lustre's default).
    fn default() -> Self {
        StripeSpec {
            stripe_size: 1 << 20,
            count: StripeCount::Count(1),
            first: FirstOst::Any,
            mirrors: 1,
        }
    }
}

/// One object of a file: which OST, which object id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub ost: u32,
    pub oid: u64,
}

/// A resolved RAID-0 layout: stripe `i` lives in `objects[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripedLayout {
    pub stripe_size: u32,
    pub objects: Vec<ObjectRef>,
}

/// A contiguous piece of a file range that lies in one stripe chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub stripe: u32,
    pub file_offset: u64,
    pub object_offset: u64,
    pub len: u64,
}

/// The part of one object a file range touches (always contiguous in the object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectExtent {
    pub stripe: u32,
    pub object_offset: u64,
    pub len: u64,
}

fn check_stripe_size(size: u32) -> Result<(), LayoutError> {
    if size == 0 || !size.is_multiple_of(STRIPE_ALIGN) {
        return Err(LayoutError::StripeSize(size));
    }
    Ok(())
}

fn check_count(count: u32) -> Result<(), LayoutError> {
    if count == 0 || count > MAX_STRIPES {
        return Err(LayoutError::StripeCount(count.into()));
    }
    Ok(())
}

fn check_mirrors(mirrors: u32) -> Result<(), LayoutError> {
    if mirrors == 0 || mirrors > MAX_MIRRORS {
        return Err(LayoutError::MirrorCount(mirrors));
    }
    Ok(())
}

fn check_objects(stripes: u32, mirrors: u32) -> Result<(), LayoutError> {
    let n = u64::from(stripes) * u64::from(mirrors);
    if n > u64::from(MAX_OBJECTS) {
        return Err(LayoutError::TooManyObjects(n));
    }
    Ok(())
}

impl StripeSpec {
    pub fn validate(&self) -> Result<(), LayoutError> {
        check_stripe_size(self.stripe_size)?;
        check_mirrors(self.mirrors)?;
        if let StripeCount::Count(c) = self.count {
            check_count(c)?;
            check_objects(c, self.mirrors)?;
        }
        Ok(())
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let count: i64 = match self.count {
            StripeCount::All => -1,
            StripeCount::Count(c) => c.into(),
        };
        let first: i64 = match self.first {
            FirstOst::Any => -1,
            FirstOst::Index(i) => i.into(),
        };
        // One copy keeps the original 20-byte body.
        let extra = if self.mirrors > 1 { 4 } else { 0 };
        put_header(out, KIND_RAID0_SPEC, 4 + 8 + 8 + extra);
        out.extend_from_slice(&self.stripe_size.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&first.to_le_bytes());
        if self.mirrors > 1 {
            out.extend_from_slice(&self.mirrors.to_le_bytes());
        }
    }

    /// Decodes a template that fills `bytes` exactly.
    pub fn decode(bytes: &[u8]) -> Result<StripeSpec, LayoutError> {
        let mut r = BodyReader::new(bytes);
        let spec = Self::read(&mut r)?;
        no_trailing(&mut r)?;
        Ok(spec)
    }

    /// Reads one encoded template off `r`.
    pub fn read(r: &mut BodyReader<'_>) -> Result<StripeSpec, LayoutError> {
        let body = read_header(r, KIND_RAID0_SPEC)?;
        let mut b = BodyReader::new(body);
        let stripe_size = b.u32()?;
        let count = match b.u64()? as i64 {
            -1 => StripeCount::All,
            c if (1..=MAX_STRIPES as i64).contains(&c) => StripeCount::Count(c as u32),
            c => return Err(LayoutError::StripeCount(c)),
        };
        let first = match b.u64()? as i64 {
            -1 => FirstOst::Any,
            i => FirstOst::Index(u32::try_from(i).map_err(|_| LayoutError::StripeCount(i))?),
        };
        let mirrors = match b.left().is_empty() {
            true => 1,
            false => b.u32()?,
        };
        no_trailing(&mut b)?;
        let spec = StripeSpec {
            stripe_size,
            count,
            first,
            mirrors,
        };
        spec.validate()?;
        Ok(spec)
    }
}

impl StripedLayout {
    pub fn stripe_count(&self) -> u32 {
        self.objects.len() as u32
    }

    fn width(&self) -> u128 {
        u128::from(self.stripe_size) * self.objects.len() as u128
    }

    /// The stripe (index into `objects`) holding file byte `offset`.
    pub fn stripe_of(&self, offset: u64) -> u32 {
        ((offset / u64::from(self.stripe_size)) % self.objects.len() as u64) as u32
    }

    /// Where file byte `offset` lives inside its object.
    pub fn object_offset(&self, offset: u64) -> u64 {
        let s = u64::from(self.stripe_size);
        let row = u128::from(offset) / self.width();
        (row * u128::from(s)) as u64 + offset % s
    }

    /// The file range `[offset, offset + len)` cut at stripe edges, in file order.
    pub fn pieces(&self, offset: u64, len: u64) -> Result<Vec<Piece>, LayoutError> {
        let end = offset
            .checked_add(len)
            .ok_or(LayoutError::RangeOverflow { offset, len })?;
        let s = u64::from(self.stripe_size);
        let mut out = Vec::new();
        let mut at = offset;
        while at < end {
            let n = (s - at % s).min(end - at);
            out.push(Piece {
                stripe: self.stripe_of(at),
                file_offset: at,
                object_offset: self.object_offset(at),
                len: n,
            });
            at += n;
        }
        Ok(out)
    }

    /// The per-object extents a file range touches, at most one per stripe, in stripe
    /// order. A contiguous file range is contiguous inside each object, so the extent is
    /// from the object offset of its first byte to that of its last byte.
    pub fn object_extents(&self, offset: u64, len: u64) -> Result<Vec<ObjectExtent>, LayoutError> {
        let end = offset
            .checked_add(len)
            .ok_or(LayoutError::RangeOverflow { offset, len })?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let s = u64::from(self.stripe_size);
        let n = self.objects.len() as u64;
        let mut out = Vec::new();
        // The first chunk of stripe k at or after `offset` starts within n chunks.
        let first_chunk = offset / s;
        for c in first_chunk..first_chunk.saturating_add(n) {
            let start = if c == first_chunk { offset } else { c * s };
            if start >= end {
                break;
            }
            let stripe = (c % n) as u32;
            let last = self.last_byte_in_stripe(stripe, end - 1);
            let first_obj = self.object_offset(start);
            out.push(ObjectExtent {
                stripe,
                object_offset: first_obj,
                len: self.object_offset(last) - first_obj + 1,
            });
        }
        out.sort_by_key(|e| e.stripe);
        Ok(out)
    }

    /// The last file byte at or before `last` that lies in `stripe` (the caller knows one
    /// exists at or after the range start).
    fn last_byte_in_stripe(&self, stripe: u32, last: u64) -> u64 {
        let s = u64::from(self.stripe_size);
        let n = self.objects.len() as u64;
        let chunk = last / s;
        let back = (chunk % n + n - u64::from(stripe)) % n;
        if back == 0 {
            last
        } else {
            (chunk - back) * s + s - 1
        }
    }

    /// The file size implied by object `stripe` holding `object_size` bytes: one past
    /// the file offset of the object's last byte (0 for an empty object). Saturates at
    /// u64::MAX for sizes no file offset can express.
    pub fn file_size_from_object(&self, stripe: u32, object_size: u64) -> u64 {
        if object_size == 0 {
            return 0;
        }
        let s = u128::from(self.stripe_size);
        let last = u128::from(object_size - 1);
        let chunk = (last / s) * self.objects.len() as u128 + u128::from(stripe);
        let size = chunk * s + last % s + 1;
        u64::try_from(size).unwrap_or(u64::MAX)
    }

    /// The size object `stripe` has when the file is `file_size` bytes long (what a
    /// truncate leaves in each object).
    pub fn object_size_for_file(&self, stripe: u32, file_size: u64) -> u64 {
        if file_size == 0 {
            return 0;
        }
        let s = u64::from(self.stripe_size);
        let n = self.objects.len() as u64;
        let last = file_size - 1;
        let chunk = last / s;
        let row = chunk / n;
        let here = chunk % n;
        let stripe = u64::from(stripe);
        match here.cmp(&stripe) {
            std::cmp::Ordering::Equal => row * s + last % s + 1,
            std::cmp::Ordering::Greater => (row + 1) * s,
            std::cmp::Ordering::Less => row * s,
        }
    }

    pub fn validate(&self) -> Result<(), LayoutError> {
        check_stripe_size(self.stripe_size)?;
        check_count(self.objects.len() as u32)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let body = 4 + 4 + 12 * self.objects.len();
        put_header(out, KIND_RAID0, body as u32);
        out.extend_from_slice(&self.stripe_size.to_le_bytes());
        out.extend_from_slice(&(self.objects.len() as u32).to_le_bytes());
        for o in &self.objects {
            out.extend_from_slice(&o.ost.to_le_bytes());
            out.extend_from_slice(&o.oid.to_le_bytes());
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes a resolved layout that fills `bytes` exactly.
    pub fn decode(bytes: &[u8]) -> Result<StripedLayout, LayoutError> {
        let mut r = BodyReader::new(bytes);
        let layout = Self::read(&mut r)?;
        no_trailing(&mut r)?;
        Ok(layout)
    }

    /// Reads one encoded resolved layout off `r`.
    pub fn read(r: &mut BodyReader<'_>) -> Result<StripedLayout, LayoutError> {
        let body = read_header(r, KIND_RAID0)?;
        let mut b = BodyReader::new(body);
        let stripe_size = b.u32()?;
        check_stripe_size(stripe_size)?;
        let count = b.u32()?;
        check_count(count)?;
        let mut objects = Vec::with_capacity(count as usize);
        for _ in 0..count {
            objects.push(ObjectRef {
                ost: b.u32()?,
                oid: b.u64()?,
            });
        }
        no_trailing(&mut b)?;
        Ok(StripedLayout {
            stripe_size,
            objects,
        })
    }
}

/// One copy of a file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub stripes: StripedLayout,
    /// Missed writes (one of its OSTs was down when they were made): not read, not
    /// written, until a resync or rebuild brings it back in sync.
    pub stale: bool,
}

const MIRROR_STALE: u32 = 1;
/// Layout flag (the mirrored form's u16 after the count): the file's data is in its
/// data repository only (see `released`).
const LAYOUT_RELEASED: u16 = 1;

/// A file's layout: one or more mirrors of one geometry (stripe size and count), so a
/// file range maps to the same object offsets in each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLayout {
    pub mirrors: Vec<Mirror>,
    /// The file's data is in its data repository, not (or not all) in its objects, as
    /// Lustre's released layouts: a reader asks the MDS to load the ranges it needs
    /// first, a writer the whole file (see docs/repositories.md).
    pub released: bool,
}

impl From<StripedLayout> for FileLayout {
    fn from(stripes: StripedLayout) -> FileLayout {
        FileLayout {
            mirrors: vec![Mirror {
                stripes,
                stale: false,
            }],
            released: false,
        }
    }
}

impl FileLayout {
    /// The geometry every mirror shares (that of the first).
    pub fn geometry(&self) -> &StripedLayout {
        &self.mirrors[0].stripes
    }

    /// Every object of every mirror, stale or not.
    pub fn objects(&self) -> impl Iterator<Item = &ObjectRef> + '_ {
        self.mirrors.iter().flat_map(|m| m.stripes.objects.iter())
    }

    /// The indices of the mirrors in sync, in order (the first is read first).
    pub fn in_sync(&self) -> Vec<usize> {
        (0..self.mirrors.len())
            .filter(|&m| !self.mirrors[m].stale)
            .collect()
    }

    /// The mirror (index) that holds `ost`, if any.
    pub fn mirror_of(&self, ost: u32) -> Option<usize> {
        self.mirrors
            .iter()
            .position(|m| m.stripes.objects.iter().any(|o| o.ost == ost))
    }

    pub fn validate(&self) -> Result<(), LayoutError> {
        check_mirrors(self.mirrors.len() as u32)?;
        let g = self.geometry();
        for m in &self.mirrors {
            m.stripes.validate()?;
            if m.stripes.stripe_size != g.stripe_size || m.stripes.objects.len() != g.objects.len()
            {
                return Err(LayoutError::MirrorGeometry);
            }
        }
        check_objects(g.stripe_count(), self.mirrors.len() as u32)?;
        match self.mirrors.iter().all(|m| m.stale) {
            true => Err(LayoutError::NoMirrorInSync),
            false => Ok(()),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        if let (
            [Mirror {
                stripes,
                stale: false,
            }],
            false,
        ) = (self.mirrors.as_slice(), self.released)
        {
            return stripes.encode(out);
        }
        let at = out.len();
        put_header(out, KIND_MIRROR, 0);
        out.extend_from_slice(&(self.mirrors.len() as u16).to_le_bytes());
        let flags = if self.released { LAYOUT_RELEASED } else { 0 };
        out.extend_from_slice(&flags.to_le_bytes());
        for m in &self.mirrors {
            let flags = if m.stale { MIRROR_STALE } else { 0 };
            out.extend_from_slice(&flags.to_le_bytes());
            m.stripes.encode(out);
        }
        let body = (out.len() - at - 8) as u32;
        out[at + 4..at + 8].copy_from_slice(&body.to_le_bytes());
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes a file layout that fills `bytes` exactly.
    pub fn decode(bytes: &[u8]) -> Result<FileLayout, LayoutError> {
        let mut r = BodyReader::new(bytes);
        let layout = Self::read(&mut r)?;
        no_trailing(&mut r)?;
        Ok(layout)
    }

    /// Reads one encoded file layout (bare RAID-0 or mirrored) off `r`.
    pub fn read(r: &mut BodyReader<'_>) -> Result<FileLayout, LayoutError> {
        let mut peek = BodyReader::new(r.left());
        let head = peek.bytes(8)?;
        if u16::from_le_bytes([head[2], head[3]]) != KIND_MIRROR {
            return StripedLayout::read(r).map(FileLayout::from);
        }
        let body = read_header(r, KIND_MIRROR)?;
        let mut b = BodyReader::new(body);
        let count = u32::from(b.u16()?);
        check_mirrors(count)?;
        let flags = b.u16()?;
        if flags & !LAYOUT_RELEASED != 0 {
            return Err(LayoutError::Flags(flags));
        }
        let mut mirrors = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let flags = b.u32()?;
            mirrors.push(Mirror {
                stale: flags & MIRROR_STALE != 0,
                stripes: StripedLayout::read(&mut b)?,
            });
        }
        no_trailing(&mut b)?;
        let layout = FileLayout {
            mirrors,
            released: flags & LAYOUT_RELEASED != 0,
        };
        layout.validate()?;
        Ok(layout)
    }
}

fn put_header(out: &mut Vec<u8>, kind: u16, body_len: u32) {
    out.extend_from_slice(&LAYOUT_VERSION.to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&body_len.to_le_bytes());
}

/// Reads the 8-byte header, checks version and kind, returns the body.
fn read_header<'a>(r: &mut BodyReader<'a>, expected: u16) -> Result<&'a [u8], LayoutError> {
    let head = r.bytes(8)?;
    let version = u16::from_le_bytes([head[0], head[1]]);
    let kind = u16::from_le_bytes([head[2], head[3]]);
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if version != LAYOUT_VERSION {
        return Err(LayoutError::Version(version));
    }
    match kind {
        KIND_RAID0_SPEC | KIND_RAID0 | KIND_MIRROR if kind == expected => {}
        KIND_RAID0_SPEC | KIND_RAID0 | KIND_MIRROR => {
            return Err(LayoutError::WrongKind {
                found: kind,
                expected,
            })
        }
        KIND_COMPOSITE => return Err(LayoutError::UnsupportedKind(kind, "composite")),
        _ => return Err(LayoutError::UnsupportedKind(kind, "unknown")),
    }
    if len > MAX_LAYOUT_BYTES {
        return Err(LayoutError::TooLong(len));
    }
    Ok(r.bytes(len)?)
}

fn no_trailing(r: &mut BodyReader<'_>) -> Result<(), LayoutError> {
    match r.rest().len() {
        0 => Ok(()),
        n => Err(LayoutError::Trailing(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(count: u32) -> StripedLayout {
        StripedLayout {
            stripe_size: STRIPE_ALIGN,
            objects: (0..count)
                .map(|i| ObjectRef {
                    ost: i,
                    oid: 100 + u64::from(i),
                })
                .collect(),
        }
    }

    #[test]
    fn encodings_round_trip_and_refuse_other_kinds() {
        let l = layout(3);
        assert_eq!(StripedLayout::decode(&l.to_bytes()).unwrap(), l);
        let spec = StripeSpec {
            stripe_size: 4 << 20,
            count: StripeCount::All,
            first: FirstOst::Index(7),
            mirrors: 1,
        };
        let mut b = Vec::new();
        spec.encode(&mut b);
        assert_eq!(StripeSpec::decode(&b).unwrap(), spec);
        assert!(matches!(
            StripedLayout::decode(&b),
            Err(LayoutError::WrongKind {
                found: 1,
                expected: 2
            })
        ));
        let mut composite = l.to_bytes();
        composite[2] = 4;
        assert!(matches!(
            FileLayout::decode(&composite),
            Err(LayoutError::UnsupportedKind(4, "composite"))
        ));
        let mut v2 = l.to_bytes();
        v2[0] = 2;
        assert_eq!(StripedLayout::decode(&v2), Err(LayoutError::Version(2)));
        let bytes = l.to_bytes();
        for cut in 0..bytes.len() {
            assert!(StripedLayout::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn mirrored_layouts_round_trip_and_one_copy_stays_raid0() {
        let one = FileLayout::from(layout(2));
        assert_eq!(
            one.to_bytes(),
            layout(2).to_bytes(),
            "one mirror in sync is kind 2"
        );
        assert_eq!(FileLayout::decode(&layout(2).to_bytes()).unwrap(), one);
        let mut two = one.clone();
        let mut copy = layout(2);
        copy.objects.iter_mut().for_each(|o| o.ost += 10);
        two.mirrors.push(Mirror {
            stripes: copy,
            stale: true,
        });
        let bytes = two.to_bytes();
        assert_eq!(u16::from_le_bytes([bytes[2], bytes[3]]), 3);
        assert_eq!(FileLayout::decode(&bytes).unwrap(), two);
        assert_eq!(two.in_sync(), vec![0]);
        assert_eq!(two.mirror_of(11), Some(1));
        assert_eq!(two.objects().count(), 4);
        for cut in 0..bytes.len() {
            assert!(FileLayout::decode(&bytes[..cut]).is_err());
        }
        // A mirror of another geometry, or every mirror stale, is refused.
        let mut odd = two.clone();
        odd.mirrors[1].stripes.objects.pop();
        assert_eq!(
            FileLayout::decode(&odd.to_bytes()),
            Err(LayoutError::MirrorGeometry)
        );
        let mut dead = two.clone();
        dead.mirrors[0].stale = true;
        assert_eq!(
            FileLayout::decode(&dead.to_bytes()),
            Err(LayoutError::NoMirrorInSync)
        );
        // A template with mirrors keeps them; one without reads as one copy.
        let spec = StripeSpec {
            mirrors: 2,
            ..StripeSpec::default()
        };
        let mut b = Vec::new();
        spec.encode(&mut b);
        assert_eq!(StripeSpec::decode(&b).unwrap(), spec);
        let mut b = Vec::new();
        StripeSpec::default().encode(&mut b);
        assert_eq!(b.len(), 8 + 20);
        let bad = StripeSpec {
            mirrors: 5,
            ..StripeSpec::default()
        };
        assert_eq!(bad.validate(), Err(LayoutError::MirrorCount(5)));
    }

    #[test]
    fn released_layouts_keep_their_flag_and_unknown_flags_are_refused() {
        let mut one = FileLayout::from(layout(2));
        one.released = true;
        let bytes = one.to_bytes();
        assert_eq!(u16::from_le_bytes([bytes[2], bytes[3]]), KIND_MIRROR);
        assert_eq!(FileLayout::decode(&bytes).unwrap(), one);
        let mut odd = bytes.clone();
        odd[10] |= 2;
        assert_eq!(FileLayout::decode(&odd), Err(LayoutError::Flags(3)));
    }

    #[test]
    fn stripe_edges() {
        let l = layout(4);
        let s = u64::from(STRIPE_ALIGN);
        assert_eq!(l.stripe_of(s - 1), 0);
        assert_eq!(l.stripe_of(s), 1);
        assert_eq!(l.stripe_of(4 * s), 0);
        assert_eq!(l.object_offset(4 * s), s);
        assert_eq!(l.file_size_from_object(1, 1), s + 1);
        assert_eq!(l.file_size_from_object(0, s + 1), 4 * s + 1);
        assert_eq!(l.pieces(s - 1, 2).unwrap().len(), 2);
        assert!(l.pieces(u64::MAX, 1).is_err());
    }

    /// The model: RAID-0 byte by byte. File byte `b` is in chunk `b / S`, which goes to
    /// stripe `chunk % n` at row `chunk / n`, so at object offset `row * S + b % S`.
    fn model_place(s: u64, n: u64, b: u64) -> (u32, u64) {
        let chunk = b / s;
        ((chunk % n) as u32, (chunk / n) * s + b % s)
    }

    proptest::proptest! {
        #[test]
        fn pieces_and_sizes_match_the_byte_model(
            count in 1u32..6,
            units in 1u32..3,
            chunk in 0u64..40,
            edge in proptest::sample::select(vec![0i64, -1, 1, 4095, 30000]),
            len in 0u64..400_000,
        ) {
            let mut l = layout(count);
            l.stripe_size = STRIPE_ALIGN * units;
            let (s, n) = (u64::from(l.stripe_size), u64::from(count));
            let offset = (chunk * s).saturating_add_signed(edge);
            let pieces = l.pieces(offset, len).unwrap();
            // Pieces tile the range in order, never cross a stripe edge, and put every
            // byte (checked at both ends of each piece) where the model says.
            let mut at = offset;
            for p in &pieces {
                proptest::prop_assert_eq!(p.file_offset, at);
                proptest::prop_assert!(p.len > 0 && p.len <= s);
                proptest::prop_assert_eq!(p.file_offset / s, (p.file_offset + p.len - 1) / s);
                for b in [p.file_offset, p.file_offset + p.len - 1] {
                    let (stripe, obj) = model_place(s, n, b);
                    proptest::prop_assert_eq!(l.stripe_of(b), stripe);
                    proptest::prop_assert_eq!(p.stripe, stripe);
                    proptest::prop_assert_eq!(p.object_offset + (b - p.file_offset), obj);
                }
                at += p.len;
            }
            proptest::prop_assert_eq!(at, offset + len);
            // Each object's size for a file of `offset + len` bytes is one past the
            // last byte the model puts in it.
            let size = offset + len;
            for stripe in 0..count {
                let want = (0..size.min(n * s * 3))
                    .rev()
                    .map(|b| (b, model_place(s, n, b)))
                    .find(|(_, (st, _))| *st == stripe)
                    .map_or(0, |(_, (_, o))| o + 1);
                if size <= n * s * 3 {
                    proptest::prop_assert_eq!(l.object_size_for_file(stripe, size), want);
                }
            }
        }
    }
}
