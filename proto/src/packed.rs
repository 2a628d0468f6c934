//! Packed u64 values: completion contexts, storage tags and session ids, encoded and
//! decoded in one place.
//!
//! Several parts of nacre hand a u64 to someone else and get it back later: the fabric
//! returns an operation's context in its completion (engine [`route`]s, client
//! [`slot`]s), io_uring returns an SQE's user_data in its CQE (the OSS's [`io_tag`]), a
//! client carries the session id a core gave it ([`session`]). Each packs a few small
//! fields into the word. A [`WordLayout`] describes where each field sits; [`WordLayout::pack`]
//! refuses a value that does not fit its field (in release builds too: never a silent
//! mask), and [`WordLayout::unpack`] refuses a word that is not an encoding of the layout
//! (bits set outside its fields, another kind tag). Both are allocation-free and
//! inline: they run once per completion.
//!
//! A layout may carry a *kind tag*: a field with a fixed value, so that several layouts
//! share one word (a receive, a reply, a bulk chunk). [`Field::get`] reads the kind to
//! choose the layout; [`PackError::UnknownKind`] is what a scheme answers for a kind it
//! has no layout for.
//!
//! Layouts are `const`: a field wider than 64 bits, fields that overlap or a kind tag
//! that does not fit its field fail at compile time.

/// Why a value could not be packed, or a word unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    /// A field's value does not fit its bits (a programming error at the encoder).
    #[error("{layout}: field `{field}` = {value} is out of range (at most {max})")]
    OutOfRange {
        layout: &'static str,
        field: &'static str,
        value: u64,
        max: u64,
    },
    /// The word sets bits that no field of the layout covers.
    #[error("{layout}: {word:#x} sets bits {stray:#x} outside the layout")]
    StrayBits {
        layout: &'static str,
        word: u64,
        stray: u64,
    },
    /// The word's kind tag is another layout's.
    #[error("{layout}: {word:#x} has kind {kind}, not {expected}")]
    WrongKind {
        layout: &'static str,
        word: u64,
        kind: u64,
        expected: u64,
    },
    /// The word's kind tag names no layout of the scheme.
    #[error("{scheme}: {word:#x} has unknown kind {kind}")]
    UnknownKind {
        scheme: &'static str,
        word: u64,
        kind: u64,
    },
}

/// A bit field: `bits` bits from bit `shift` (0 is the least significant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub shift: u32,
    pub bits: u32,
}

impl Field {
    /// A field of `bits` bits (1..=64) from bit `shift`; fails at compile time in a
    /// `const` when it does not fit in 64 bits.
    pub const fn new(name: &'static str, shift: u32, bits: u32) -> Field {
        assert!(bits >= 1 && bits <= 64, "a field has 1 to 64 bits");
        assert!(
            shift < 64 && shift + bits <= 64,
            "a field ends within 64 bits"
        );
        Field { name, shift, bits }
    }

    /// The largest value the field holds.
    #[inline]
    pub const fn max(self) -> u64 {
        u64::MAX >> (64 - self.bits)
    }

    /// The field's bits, in place.
    #[inline]
    pub const fn mask(self) -> u64 {
        self.max() << self.shift
    }

    /// The field's value in `word`.
    #[inline]
    pub const fn get(self, word: u64) -> u64 {
        (word >> self.shift) & self.max()
    }
}

/// Where the `N` fields of a packed u64 sit, and its kind tag if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WordLayout<const N: usize> {
    name: &'static str,
    fields: [Field; N],
    /// The kind field and the value it has in this layout.
    kind: Option<(Field, u64)>,
    /// Every bit of the layout (fields and kind).
    mask: u64,
}

impl<const N: usize> WordLayout<N> {
    /// A layout of `fields`; fails at compile time in a `const` when fields overlap.
    pub const fn new(name: &'static str, fields: [Field; N]) -> WordLayout<N> {
        let mut mask = 0u64;
        let mut i = 0;
        while i < N {
            let m = fields[i].mask();
            assert!(mask & m == 0, "fields of a layout do not overlap");
            mask |= m;
            i += 1;
        }
        WordLayout {
            name,
            fields,
            kind: None,
            mask,
        }
    }

    /// This layout with kind tag `value` in field `kind`: packing sets it, unpacking
    /// checks it.
    pub const fn tagged(self, kind: Field, value: u64) -> WordLayout<N> {
        assert!(self.kind.is_none(), "one kind tag per layout");
        assert!(
            self.mask & kind.mask() == 0,
            "the kind field overlaps a field"
        );
        assert!(value <= kind.max(), "the kind tag fits its field");
        WordLayout {
            kind: Some((kind, value)),
            mask: self.mask | kind.mask(),
            ..self
        }
    }

    pub const fn name(&self) -> &'static str {
        self.name
    }

    pub const fn fields(&self) -> &[Field; N] {
        &self.fields
    }

    /// The kind field and its value in this layout, if the layout has one.
    pub const fn kind(&self) -> Option<(Field, u64)> {
        self.kind
    }

    /// Every bit an encoding of this layout may set.
    pub const fn mask(&self) -> u64 {
        self.mask
    }

    /// Whether `word` carries this layout's kind tag (always, without one).
    #[inline]
    pub const fn is(&self, word: u64) -> bool {
        match self.kind {
            Some((field, value)) => field.get(word) == value,
            None => true,
        }
    }

    /// `values` (one per field, in the order of the fields) packed into a word, with
    /// the kind tag; a value too large for its field is an error, never masked.
    #[inline]
    pub fn pack(&self, values: [u64; N]) -> Result<u64, PackError> {
        let mut word = match self.kind {
            Some((field, value)) => value << field.shift,
            None => 0,
        };
        for (f, &v) in self.fields.iter().zip(values.iter()) {
            if v > f.max() {
                return Err(PackError::OutOfRange {
                    layout: self.name,
                    field: f.name,
                    value: v,
                    max: f.max(),
                });
            }
            word |= v << f.shift;
        }
        Ok(word)
    }

    /// The fields of `word`, in the order of the fields; a word with another kind tag,
    /// or with bits set outside the layout, is an error.
    #[inline]
    pub fn unpack(&self, word: u64) -> Result<[u64; N], PackError> {
        if let Some((field, expected)) = self.kind {
            let kind = field.get(word);
            if kind != expected {
                return Err(PackError::WrongKind {
                    layout: self.name,
                    word,
                    kind,
                    expected,
                });
            }
        }
        let stray = word & !self.mask;
        if stray != 0 {
            return Err(PackError::StrayBits {
                layout: self.name,
                word,
                stray,
            });
        }
        let mut out = [0u64; N];
        for (o, f) in out.iter_mut().zip(self.fields.iter()) {
            *o = f.get(word);
        }
        Ok(out)
    }
}

/// The engine's fabric completion contexts (`nacre_engine`'s `Route`): a kind in the top
/// byte, then a receive or transmit slot, or a bulk transfer's chunk.
pub mod route {
    use super::{Field, WordLayout};

    pub const SCHEME: &str = "engine route";
    /// Which of the layouts below a context is.
    pub const KIND: Field = Field::new("kind", 56, 8);
    pub const RECV_KIND: u64 = 1;
    pub const REPLY_KIND: u64 = 2;
    pub const BULK_KIND: u64 = 3;
    /// A receive slot of the reactor.
    pub const RECV: WordLayout<1> =
        WordLayout::new("engine route (receive)", [Field::new("slot", 0, 32)])
            .tagged(KIND, RECV_KIND);
    /// A transmit slot carrying a reply.
    pub const REPLY: WordLayout<1> =
        WordLayout::new("engine route (reply)", [Field::new("slot", 0, 32)])
            .tagged(KIND, REPLY_KIND);
    /// Chunk `chunk` of bulk transfer `op` (a table index) of generation `gen`.
    pub const BULK: WordLayout<3> = WordLayout::new(
        "engine route (bulk)",
        [
            Field::new("op", 0, 16),
            Field::new("gen", 16, 32),
            Field::new("chunk", 48, 8),
        ],
    )
    .tagged(KIND, BULK_KIND);
}

/// The client endpoint's fabric completion contexts (`nacre_client`'s `Slot`): bit 32
/// says a transmit slot, the low 32 bits are the slot's index.
pub mod slot {
    use super::{Field, WordLayout};

    pub const SCHEME: &str = "client slot";
    pub const KIND: Field = Field::new("send", 32, 1);
    pub const RECV_KIND: u64 = 0;
    pub const SEND_KIND: u64 = 1;
    /// A receive slot.
    pub const RECV: WordLayout<1> =
        WordLayout::new("client slot (receive)", [Field::new("index", 0, 32)])
            .tagged(KIND, RECV_KIND);
    /// A transmit slot.
    pub const SEND: WordLayout<1> =
        WordLayout::new("client slot (send)", [Field::new("index", 0, 32)]).tagged(KIND, SEND_KIND);
}

/// The user_data of the OSS object store's storage operations: bit 63 marks the
/// store's (the core keeps it clear in its own), then the store's id, the piece's
/// class, the piece and the operation.
pub mod io_tag {
    use super::{Field, WordLayout};

    pub const SCHEME: &str = "OSS io tag";
    /// Set in every tag of an object store.
    pub const OWNER: Field = Field::new("store-owned", 63, 1);
    /// Fields: store id, class, piece, operation.
    pub const TAG: WordLayout<4> = WordLayout::new(
        "OSS io tag",
        [
            Field::new("store", 56, 7),
            Field::new("class", 48, 8),
            Field::new("piece", 32, 16),
            Field::new("op", 0, 32),
        ],
    )
    .tagged(OWNER, 1);
}

/// Session ids of an engine core (`nacre_engine`'s sessions): the slot number plus one
/// in the low 16 bits (0 is no session), the slot's generation in the high 16, so a
/// reaped id never names the slot's next owner. Ids travel as u32.
pub mod session {
    use super::{Field, WordLayout};

    /// Fields: slot + 1, generation.
    pub const ID: WordLayout<2> = WordLayout::new(
        "session id",
        [
            Field::new("slot+1", 0, 16),
            Field::new("generation", 16, 16),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_keep_their_wire_values() {
        assert_eq!(route::RECV.pack([5]), Ok(1 << 56 | 5));
        assert_eq!(
            route::BULK.pack([7, 9, 3]),
            Ok(3 << 56 | 3 << 48 | 9 << 16 | 7)
        );
        assert_eq!(slot::SEND.pack([4]), Ok(1 << 32 | 4));
        assert_eq!(
            io_tag::TAG.pack([5, 1, 2, 42]),
            Ok(1 << 63 | 5 << 56 | 1 << 48 | 2 << 32 | 42)
        );
        assert_eq!(session::ID.pack([1, 1]), Ok(1 << 16 | 1));
    }

    #[test]
    fn errors_name_the_field_and_its_limit() {
        let e = io_tag::TAG.pack([128, 0, 0, 0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "OSS io tag: field `store` = 128 is out of range (at most 127)"
        );
        assert!(matches!(
            route::RECV.unpack(2 << 56),
            Err(PackError::WrongKind { kind: 2, .. })
        ));
        assert!(matches!(
            route::RECV.unpack(1 << 56 | 1 << 40),
            Err(PackError::StrayBits {
                stray: 0x100_0000_0000,
                ..
            })
        ));
    }
}
