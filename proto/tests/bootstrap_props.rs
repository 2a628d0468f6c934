//! Property tests of the bootstrap protocol: arbitrary bytes never panic a decoder, and
//! whatever is encoded decodes to the same value.

use nacre_proto::bootstrap::*;
use proptest::prelude::*;

fn role() -> impl Strategy<Value = Role> {
    (
        prop_oneof![Just(RoleKind::Mds), Just(RoleKind::Oss)],
        any::<u32>(),
    )
        .prop_map(|(kind, index)| Role { kind, index })
}

fn state() -> impl Strategy<Value = TargetState> {
    prop_oneof![
        Just(TargetState::Up),
        Just(TargetState::Down),
        Just(TargetState::Degraded)
    ]
}

fn cores() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)
}

fn request() -> impl Strategy<Value = BootRequest> {
    prop_oneof![
        (
            role(),
            proptest::option::of(0u32..1000),
            "[a-z0-9.-]{0,40}",
            "[a-z;_]{0,20}",
            cores(),
            any::<bool>(),
            any::<u64>()
        )
            .prop_map(|(r, want, node, provider, cores, empty, generation)| {
                BootRequest::Claim(ClaimRequest {
                    kind: r.kind,
                    want,
                    replication: provider.chars().rev().collect(),
                    node,
                    provider,
                    cores,
                    empty,
                    generation,
                })
            }),
        (
            role(),
            any::<u64>(),
            state(),
            any::<u64>(),
            any::<u64>(),
            rebuild(),
            settled()
        )
            .prop_map(|(role, epoch, state, capacity, free, rebuild, settled)| {
                BootRequest::Renew(RenewRequest {
                    role,
                    epoch,
                    report: TargetReport {
                        rebuild,
                        standby: format!("node-{}", settled.len()),
                        settled,
                        state,
                        capacity,
                        free,
                    },
                })
            }),
        (role(), any::<u64>()).prop_map(|(role, epoch)| BootRequest::Release { role, epoch }),
        Just(BootRequest::FetchMap),
        (any::<u64>(), any::<u32>()).prop_map(|(newer_than, wait_ms)| BootRequest::WaitMap {
            newer_than,
            wait_ms
        }),
        any::<[u8; 32]>().prop_map(|client_nonce| BootRequest::AuthBegin { client_nonce }),
        (
            proptest::collection::vec(any::<u8>(), 0..128),
            any::<[u8; 32]>()
        )
            .prop_map(|(principal, proof)| BootRequest::AuthProve { principal, proof }),
        proptest::option::of((any::<u32>(), any::<u32>())).prop_map(BootRequest::SetRootSquash),
    ]
}

fn map() -> impl Strategy<Value = ClusterMap> {
    let server = (
        role(),
        "[a-z0-9]{0,12}",
        any::<u64>(),
        "[a-z]{0,8}",
        cores(),
    )
        .prop_map(|(role, node, epoch, provider, cores)| ServerEntry {
            role,
            replication: format!("{node}:7451"),
            node,
            epoch,
            provider,
            cores,
        });
    let target = (
        role(),
        "[a-z0-9]{0,12}",
        any::<u64>(),
        state(),
        any::<u64>(),
        any::<u64>(),
        (any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(role, owner, epoch, state, capacity, free, (generation, settled))| Target {
                kind: role.kind.target_kind(),
                index: role.index,
                role,
                owner,
                epoch,
                state,
                capacity,
                free,
                generation,
                settled,
            },
        );
    (
        any::<u64>(),
        "[a-z]{0,16}",
        any::<u64>(),
        proptest::collection::vec(target, 0..6),
        proptest::collection::vec(server, 0..6),
        rebuild(),
        proptest::option::of((any::<u32>(), any::<u32>())),
    )
        .prop_map(
            |(version, fsname, fsid, targets, servers, rebuild, root_squash)| ClusterMap {
                rebuild,
                version,
                fsname,
                fsid,
                layout: LayoutDefaults::default(),
                root_squash,
                targets,
                servers,
            },
        )
}

fn rebuild() -> impl Strategy<Value = Vec<RebuildProgress>> {
    proptest::collection::vec(
        (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(ost, left, total)| RebuildProgress {
            ost,
            left,
            total,
        }),
        0..4,
    )
}

fn settled() -> impl Strategy<Value = Vec<Settled>> {
    proptest::collection::vec(
        (any::<u32>(), any::<u64>()).prop_map(|(ost, generation)| Settled { ost, generation }),
        0..4,
    )
}

fn decode_request(frame: &[u8]) -> Result<BootRequest, BootError> {
    let h = BootHeader::decode(frame, MAX_REQUEST_BODY)?;
    let body = frame
        .get(BOOT_HEADER_LEN..BOOT_HEADER_LEN + h.body_len as usize)
        .ok_or(BootError::Short {
            at: 0,
            want: h.body_len as usize,
            left: frame.len(),
        })?;
    BootRequest::decode(h.op, body)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn requests_round_trip(req in request()) {
        let frame = req.encode().unwrap();
        prop_assert_eq!(decode_request(&frame).unwrap(), req);
    }

    #[test]
    fn maps_round_trip(m in map()) {
        let frame = BootReply::Map(m.clone()).encode(BootOp::WaitMap);
        let h = BootHeader::decode(&frame, MAX_REPLY_BODY).unwrap();
        prop_assert_eq!(
            BootReply::decode(h.op, h.status, &frame[BOOT_HEADER_LEN..]).unwrap(),
            BootReply::Map(m)
        );
    }

    /// Any bytes, as any opcode's request or reply body, give a value or an error.
    #[test]
    fn arbitrary_bodies_never_panic(op in 1u16..=5, status in any::<i32>(),
                                    bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let op = BootOp::from_u16(op).unwrap();
        let _ = BootRequest::decode(op, &bytes);
        let _ = BootReply::decode(op, status, &bytes);
        let _ = ClusterMap::decode(&bytes);
        let _ = BootHeader::decode(&bytes, MAX_REQUEST_BODY);
    }

    /// A valid request with a byte changed or cut still decodes to a value or an error;
    /// a cut one is always an error.
    #[test]
    fn mutated_requests_are_handled(req in request(), at in any::<usize>(), byte in any::<u8>(),
                                    cut in any::<usize>()) {
        let frame = req.encode().unwrap();
        let mut changed = frame.clone();
        let i = at % changed.len();
        changed[i] = byte;
        let _ = decode_request(&changed);
        let short = &frame[..cut % frame.len()];
        let h = BootHeader::decode(short, MAX_REQUEST_BODY);
        if let Ok(h) = h {
            prop_assert!(short.len() < BOOT_HEADER_LEN + h.body_len as usize
                || BootRequest::decode(h.op, &short[BOOT_HEADER_LEN..]).is_err());
        }
    }
}
