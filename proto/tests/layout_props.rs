//! Striping math against a naive byte-by-byte model.

use nacre_proto::layout::{ObjectRef, StripedLayout, STRIPE_ALIGN};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn layout(count: u32, size_units: u32) -> StripedLayout {
    StripedLayout {
        stripe_size: STRIPE_ALIGN * size_units,
        objects: (0..count)
            .map(|i| ObjectRef {
                ost: i,
                oid: u64::from(i),
            })
            .collect(),
    }
}

/// The model: walk chunks from 0, handing them to stripes in turn.
fn naive(l: &StripedLayout, offset: u64) -> (u32, u64) {
    let s = u64::from(l.stripe_size);
    let n = l.objects.len() as u64;
    let chunk = offset / s;
    let stripe = chunk % n;
    let chunks_before_in_object = chunk / n;
    (stripe as u32, chunks_before_in_object * s + offset % s)
}

/// Offsets near stripe edges are where the bugs live: pick edge +- a little.
fn offset_near_edge() -> impl Strategy<Value = u64> {
    (0u64..5000, -3i64..=3)
        .prop_map(|(chunk, d)| (chunk * u64::from(STRIPE_ALIGN)).saturating_add_signed(d))
}

proptest! {
    #[test]
    fn stripe_of_and_object_offset_match_the_model(
        count in 1u32..9, units in 1u32..4, off in prop_oneof![offset_near_edge(), any::<u64>()]
    ) {
        let l = layout(count, units);
        prop_assert_eq!((l.stripe_of(off), l.object_offset(off)), naive(&l, off));
    }

    #[test]
    fn pieces_cover_the_range_in_order(
        count in 1u32..9, units in 1u32..3, off in offset_near_edge(), len in 0u64..600_000
    ) {
        let l = layout(count, units);
        let pieces = l.pieces(off, len).unwrap();
        let mut at = off;
        for p in &pieces {
            prop_assert_eq!(p.file_offset, at);
            prop_assert!(p.len > 0);
            // Every byte of a piece is in the same stripe, at consecutive object offsets.
            prop_assert_eq!(naive(&l, at), (p.stripe, p.object_offset));
            prop_assert_eq!(naive(&l, at + p.len - 1), (p.stripe, p.object_offset + p.len - 1));
            at += p.len;
        }
        prop_assert_eq!(at, off + len);
    }

    #[test]
    fn object_extents_are_the_union_of_pieces(
        count in 1u32..9, units in 1u32..3, off in offset_near_edge(), len in 0u64..900_000
    ) {
        let l = layout(count, units);
        let mut model: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for p in l.pieces(off, len).unwrap() {
            let e = model.entry(p.stripe).or_insert((p.object_offset, p.object_offset));
            prop_assert_eq!(e.1, p.object_offset.max(e.0), "object range must be contiguous");
            e.1 = p.object_offset + p.len;
        }
        let got: Vec<_> = l.object_extents(off, len).unwrap()
            .into_iter().map(|e| (e.stripe, (e.object_offset, e.object_offset + e.len))).collect();
        let want: Vec<_> = model.into_iter().collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn file_size_from_objects_matches_the_model(
        count in 1u32..9, units in 1u32..3, size in prop_oneof![offset_near_edge(), 0u64..1_000_000]
    ) {
        let l = layout(count, units);
        // Object sizes a file of `size` bytes has, and back: the max contribution is the size.
        let mut back = 0;
        for stripe in 0..count {
            let obj = l.object_size_for_file(stripe, size);
            // Model: count bytes of the file that land in this stripe.
            let model = if size == 0 { 0 } else {
                let (s_last, o_last) = naive(&l, size - 1);
                let s = u64::from(l.stripe_size);
                match s_last.cmp(&stripe) {
                    std::cmp::Ordering::Equal => o_last + 1,
                    std::cmp::Ordering::Greater => (o_last / s + 1) * s,
                    std::cmp::Ordering::Less => (o_last / s) * s,
                }
            };
            prop_assert_eq!(obj, model);
            back = back.max(l.file_size_from_object(stripe, obj));
        }
        prop_assert_eq!(back, size);
    }

    #[test]
    fn size_contribution_is_one_past_the_last_byte(
        count in 1u32..9, stripe_pick in 0u32..9, obj_size in 1u64..2_000_000
    ) {
        let l = layout(count, 1);
        let stripe = stripe_pick % count;
        let end = l.file_size_from_object(stripe, obj_size);
        prop_assert_eq!(naive(&l, end - 1), (stripe, obj_size - 1));
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = StripedLayout::decode(&bytes);
        let _ = nacre_proto::layout::StripeSpec::decode(&bytes);
    }
}
