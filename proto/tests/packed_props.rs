//! Properties of `nacre_proto::packed`, for every layout the schemes use: every in-range
//! value round-trips, every out-of-range field is refused (naming the field and its
//! limit), and decoding an arbitrary u64 never panics: it errors or re-encodes to the
//! same word.

use nacre_proto::packed::{io_tag, route, session, slot, PackError, WordLayout};
use proptest::prelude::*;

/// Values in range of every field of `layout`, from raw random words.
fn clamp<const N: usize>(layout: &WordLayout<N>, raw: [u64; N]) -> [u64; N] {
    let mut v = raw;
    for (x, f) in v.iter_mut().zip(layout.fields()) {
        *x &= f.max();
    }
    v
}

fn round_trips<const N: usize>(layout: &WordLayout<N>, raw: [u64; N]) -> Result<(), TestCaseError> {
    let v = clamp(layout, raw);
    let word = layout
        .pack(v)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(layout.is(word));
    prop_assert_eq!(word & !layout.mask(), 0);
    prop_assert_eq!(layout.unpack(word), Ok(v));
    Ok(())
}

/// Field `i` pushed past its limit (by `excess`, from 1), the others in range.
fn rejects<const N: usize>(
    layout: &WordLayout<N>,
    raw: [u64; N],
    i: usize,
    excess: u64,
) -> Result<(), TestCaseError> {
    let i = i % N;
    let f = layout.fields()[i];
    prop_assume!(f.max() < u64::MAX);
    let mut v = clamp(layout, raw);
    v[i] = f.max() + 1 + excess % (u64::MAX - f.max());
    match layout.pack(v) {
        Err(
            e @ PackError::OutOfRange {
                field, value, max, ..
            },
        ) => {
            prop_assert_eq!(field, f.name);
            prop_assert_eq!(value, v[i]);
            prop_assert_eq!(max, f.max());
            let text = e.to_string();
            prop_assert!(text.contains(f.name) && text.contains(&max.to_string()));
        }
        other => prop_assert!(false, "{:?} packed to {:?}", v, other),
    }
    Ok(())
}

fn decodes_or_errs<const N: usize>(layout: &WordLayout<N>, word: u64) -> Result<(), TestCaseError> {
    match layout.unpack(word) {
        Ok(v) => prop_assert_eq!(layout.pack(v), Ok(word)),
        Err(PackError::StrayBits { stray, .. }) => {
            prop_assert!(stray != 0 && stray & layout.mask() == 0);
            prop_assert_eq!(stray, word & !layout.mask());
        }
        Err(PackError::WrongKind { kind, expected, .. }) => {
            prop_assert!(!layout.is(word));
            prop_assert_ne!(kind, expected);
        }
        Err(e) => prop_assert!(false, "unexpected {e}"),
    }
    Ok(())
}

/// Words near the layouts' kinds and edges, and anything at all.
fn words() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        any::<u32>().prop_map(u64::from),
        (0u64..8, any::<u64>()).prop_map(|(k, w)| k << 56 | (w & 0xff_ffff_ffff_ffff)),
        (0u64..4, any::<u64>()).prop_map(|(k, w)| k << 48 | (w & 0xffff_ffff)),
        (any::<bool>(), any::<u32>()).prop_map(|(s, i)| u64::from(s) << 32 | u64::from(i)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn in_range_values_round_trip(a in any::<u64>(), b in any::<u64>(), c in any::<u64>(), d in any::<u64>()) {
        round_trips(&route::RECV, [a])?;
        round_trips(&route::REPLY, [a])?;
        round_trips(&route::BULK, [a, b, c])?;
        round_trips(&slot::RECV, [a])?;
        round_trips(&slot::SEND, [a])?;
        round_trips(&io_tag::TAG, [a, b, c, d])?;
        round_trips(&session::ID, [a, b])?;
    }

    #[test]
    fn out_of_range_fields_are_refused(raw in any::<[u64; 4]>(), i in 0usize..4, excess in any::<u64>()) {
        rejects(&route::RECV, [raw[0]], i, excess)?;
        rejects(&route::REPLY, [raw[0]], i, excess)?;
        rejects(&route::BULK, [raw[0], raw[1], raw[2]], i, excess)?;
        rejects(&slot::RECV, [raw[0]], i, excess)?;
        rejects(&slot::SEND, [raw[0]], i, excess)?;
        rejects(&io_tag::TAG, raw, i, excess)?;
        rejects(&session::ID, [raw[0], raw[1]], i, excess)?;
    }

    #[test]
    fn any_word_decodes_to_itself_or_errs(word in words()) {
        decodes_or_errs(&route::RECV, word)?;
        decodes_or_errs(&route::REPLY, word)?;
        decodes_or_errs(&route::BULK, word)?;
        decodes_or_errs(&slot::RECV, word)?;
        decodes_or_errs(&slot::SEND, word)?;
        decodes_or_errs(&io_tag::TAG, word)?;
        decodes_or_errs(&session::ID, word)?;
        // At most one layout of a scheme takes a word.
        let route_hits = [route::RECV.is(word), route::REPLY.is(word), route::BULK.is(word)];
        prop_assert!(route_hits.iter().filter(|&&h| h).count() <= 1);
        prop_assert!(slot::RECV.is(word) != slot::SEND.is(word));
    }
}
