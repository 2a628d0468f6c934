//! Metadata bodies: every request and reply round-trips; every truncation, bad name and
//! oversized field is an error, never a panic.

use nacre_proto::layout::{
    FileLayout, FirstOst, Mirror, ObjectRef, StripeCount, StripeSpec, StripedLayout,
};
use nacre_proto::meta::*;
use nacre_proto::Opcode;
use proptest::prelude::*;

fn name() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
        1..=255,
    )
}

fn spec() -> impl Strategy<Value = StripeSpec> {
    (
        1u32..64,
        prop_oneof![
            Just(StripeCount::All),
            (1u32..2000).prop_map(StripeCount::Count)
        ],
        prop_oneof![Just(FirstOst::Any), any::<u32>().prop_map(FirstOst::Index)],
    )
        .prop_map(|(units, count, first)| StripeSpec {
            stripe_size: units * 65536,
            count,
            first,
            mirrors: 1,
        })
}

fn head() -> impl Strategy<Value = Head> {
    (
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(any::<u32>(), 0..=32),
        any::<u64>(),
        proptest::option::of((1..=u64::MAX, any::<u32>(), any::<u64>())),
    )
        .prop_map(|(uid, gid, groups, epoch, replay)| Head {
            creds: Creds { uid, gid, groups },
            epoch,
            replay: replay.map(|(client, tag, xid)| ReplayKey { client, tag, xid }),
        })
}

fn request() -> impl Strategy<Value = Request> {
    let setattr = (any::<u32>(), any::<u32>(), any::<u64>(), any::<i64>()).prop_map(
        |(mode, uid, size, t)| SetAttr {
            mask: mode & set::ALL,
            mode,
            uid,
            gid: uid ^ 1,
            size,
            atime: t,
            mtime: t / 2,
            ctime: -t / 3,
        },
    );
    prop_oneof![
        (any::<u64>(), name()).prop_map(|(parent, name)| Request::Lookup { parent, name }),
        (
            any::<u64>(),
            name(),
            any::<u32>(),
            any::<u32>(),
            proptest::option::of(spec())
        )
            .prop_map(|(parent, name, mode, flags, layout)| Request::Create {
                parent,
                name,
                mode,
                flags,
                layout
            }),
        (any::<u64>(), any::<u32>()).prop_map(|(ino, flags)| Request::Open { ino, flags }),
        (any::<u64>(), any::<u64>()).prop_map(|(ino, handle)| Request::Close { ino, handle }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(ino, handle, client)| {
            Request::Reopen {
                ino,
                handle,
                client,
            }
        }),
        any::<u64>().prop_map(|client| Request::Ping { client }),
        any::<u64>().prop_map(|ino| Request::Getattr { ino }),
        (any::<u64>(), setattr).prop_map(|(ino, attr)| Request::Setattr { ino, attr }),
        (any::<u64>(), name(), any::<u32>()).prop_map(|(parent, name, mode)| Request::Mkdir {
            parent,
            name,
            mode
        }),
        (any::<u64>(), name()).prop_map(|(parent, name)| Request::Rmdir { parent, name }),
        (any::<u64>(), any::<u64>(), any::<u32>())
            .prop_map(|(dir, cookie, max)| Request::Readdir { dir, cookie, max }),
        (any::<u64>(), any::<u64>(), any::<u32>())
            .prop_map(|(dir, cookie, max)| Request::ReaddirPlus { dir, cookie, max }),
        (any::<u64>(), name()).prop_map(|(parent, name)| Request::Unlink { parent, name }),
        (any::<u64>(), name(), any::<u64>(), name(), any::<u32>()).prop_map(
            |(parent, name, new_parent, new_name, flags)| Request::Rename {
                parent,
                name,
                new_parent,
                new_name,
                flags
            }
        ),
        (
            any::<u64>(),
            name(),
            proptest::collection::vec(1u8..=255, 1..=4096)
        )
            .prop_map(|(parent, name, target)| Request::Symlink {
                parent,
                name,
                target
            }),
        any::<u64>().prop_map(|ino| Request::Readlink { ino }),
        (any::<u64>(), name(), 4u32..=7, any::<u32>(), any::<u64>()).prop_map(
            |(parent, name, kind, mode, rdev)| Request::Mknod {
                parent,
                name,
                kind: FileKind::from_u32(kind).unwrap(),
                mode,
                rdev,
            }
        ),
        (any::<u64>(), any::<u64>(), name()).prop_map(|(ino, new_parent, new_name)| {
            Request::Link {
                ino,
                new_parent,
                new_name,
            }
        }),
        Just(Request::Statfs),
        any::<u64>().prop_map(|ino| Request::GetLayout { ino }),
        (any::<u64>(), spec()).prop_map(|(ino, spec)| Request::SetLayout { ino, spec }),
        (any::<u64>(), any::<u64>()).prop_map(|(ino, size)| Request::ReportSize { ino, size }),
        (any::<u64>(), any::<u64>(), any::<u64>())
            .prop_map(|(ino, handle, size)| Request::CloseSized { ino, handle, size }),
        any::<u64>().prop_map(|ino| Request::ResyncStart { ino }),
        (any::<u64>(), 0u32..4, any::<bool>())
            .prop_map(|(ino, mirror, stale)| { Request::MirrorState { ino, mirror, stale } }),
        lock_request().prop_map(Request::Lock),
        (any::<[bool; 3]>(), any::<u32>()).prop_map(|([start, fix, keep_orphans], from)| {
            Request::Check {
                start,
                fix,
                keep_orphans,
                from,
            }
        }),
    ]
}

fn lock_request() -> impl Strategy<Value = LockRequest> {
    (
        (any::<u64>(), any::<u64>(), any::<u64>()),
        (any::<u64>(), any::<u64>()),
        (0u32..=3, any::<u32>()),
        (any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |((ino, client, owner), (a, b), (kind, pid), (test, replay, wait))| LockRequest {
                ino,
                client,
                owner,
                start: a.min(b),
                end: a.max(b),
                kind,
                pid,
                test,
                replay,
                wait,
            },
        )
}

fn attr(ino: u64) -> Attr {
    Attr {
        ino,
        kind: FileKind::File,
        mode: 0o644,
        uid: 1,
        gid: 2,
        nlink: 1,
        size: 9,
        atime: -1,
        mtime: 2,
        ctime: 3,
        rdev: 0x0801,
    }
}

proptest! {
    #[test]
    fn requests_round_trip_and_truncations_fail(h in head(), req in request()) {
        let mut body = Vec::new();
        req.encode(&h, &mut body);
        prop_assert_eq!(Request::decode(req.opcode(), &body).unwrap(), (h.clone(), req.clone()));
        for cut in [0, body.len() / 2, body.len() - 1] {
            prop_assert!(Request::decode(req.opcode(), &body[..cut]).is_err());
        }
        body.push(0);
        prop_assert!(matches!(Request::decode(req.opcode(), &body), Err(MetaError::Trailing(1))));
    }

    #[test]
    fn any_bytes_decode_without_panic(op in 0x100u16..=0x11b, bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Request::decode(Opcode(op), &bytes);
        let _ = Reply::decode(&bytes);
    }

    #[test]
    fn readdir_replies_round_trip(names in proptest::collection::vec(name(), 0..20), next in any::<u64>(), eof in any::<bool>()) {
        let entries: Vec<_> = names.into_iter().enumerate().map(|(i, name)| DirEntry {
            name, ino: i as u64 + 2, kind: FileKind::Dir, cookie: i as u64 + 1 }).collect();
        let reply = Reply::Dir { entries, next_cookie: next, eof };
        let mut body = Vec::new();
        reply.encode(&mut body);
        prop_assert_eq!(Reply::decode(&body).unwrap(), reply);
    }

    #[test]
    fn a_trimmed_readdirplus_page_fits_and_keeps_each_entry_with_its_attributes(
        names in proptest::collection::vec(name(), 1..40), max in 20usize..6000, eof in any::<bool>()
    ) {
        let entries: Vec<_> = names.into_iter().enumerate().map(|(i, name)| (DirEntry {
            name, ino: i as u64 + 2, kind: FileKind::File, cookie: i as u64 + 1 }, attr(i as u64 + 2))).collect();
        let whole = Reply::DirPlus { entries: entries.clone(), next_cookie: entries.len() as u64, eof };
        let mut body = Vec::new();
        whole.encode(&mut body);
        prop_assert_eq!(Reply::decode(&body).unwrap(), whole.clone());
        for cut in 0..body.len() {
            prop_assert!(Reply::decode(&body[..cut]).is_err());
        }
        let mut page = whole.clone();
        page.trim_to(max);
        let mut body = Vec::new();
        page.encode(&mut body);
        let Reply::DirPlus { entries: kept, next_cookie, eof: page_eof } = &page else { unreachable!() };
        prop_assert!(!kept.is_empty());
        prop_assert!(body.len() <= max || kept.len() == 1, "{} > {max}", body.len());
        prop_assert_eq!(&entries[..kept.len()], &kept[..]);
        if kept.len() < entries.len() {
            prop_assert_eq!(*next_cookie, kept.last().unwrap().0.cookie);
            prop_assert!(!page_eof);
        } else {
            prop_assert_eq!(&page, &whole);
        }
    }

    #[test]
    fn a_trimmed_readdir_page_fits_and_continues_where_it_stopped(
        names in proptest::collection::vec(name(), 1..40), max in 20usize..3000, eof in any::<bool>()
    ) {
        let entries: Vec<_> = names.into_iter().enumerate().map(|(i, name)| DirEntry {
            name, ino: i as u64 + 2, kind: FileKind::File, cookie: i as u64 + 1 }).collect();
        let whole = Reply::Dir { entries: entries.clone(), next_cookie: entries.len() as u64, eof };
        let mut page = whole.clone();
        page.trim_to(max);
        let mut body = Vec::new();
        page.encode(&mut body);
        let Reply::Dir { entries: kept, next_cookie, eof: page_eof } = &page else { unreachable!() };
        prop_assert!(!kept.is_empty());
        prop_assert!(body.len() <= max || kept.len() == 1, "{} > {max}", body.len());
        prop_assert_eq!(&entries[..kept.len()], &kept[..]);
        if kept.len() < entries.len() {
            prop_assert_eq!(*next_cookie, kept.last().unwrap().cookie);
            prop_assert!(!page_eof);
        } else {
            prop_assert_eq!(&page, &whole);
        }
    }
}

#[test]
fn every_reply_shape_round_trips() {
    let layout = FileLayout::from(StripedLayout {
        stripe_size: 1 << 20,
        objects: vec![ObjectRef { ost: 3, oid: 77 }],
    });
    let mut mirrored = layout.clone();
    mirrored.mirrors.push(Mirror {
        stripes: StripedLayout {
            stripe_size: 1 << 20,
            objects: vec![ObjectRef { ost: 5, oid: 78 }],
        },
        stale: true,
    });
    for reply in [
        Reply::Done,
        Reply::Attr(attr(5)),
        Reply::Opened {
            attr: attr(6),
            layout: Some(layout.clone()),
            handle: 9,
            created: true,
        },
        Reply::Opened {
            attr: attr(6),
            layout: None,
            handle: 0,
            created: false,
        },
        Reply::Target(b"../x".to_vec()),
        Reply::Statfs(MdtStatfs {
            inodes_used: 4,
            inodes_free: 5,
            name_max: 255,
            bytes_total: 1 << 40,
            bytes_free: 3 << 30,
            osts: 4,
        }),
        Reply::Layout(layout.clone()),
        Reply::Layout(mirrored),
        Reply::DefaultLayout(StripeSpec::default()),
        Reply::DefaultLayout(StripeSpec {
            mirrors: 2,
            ..StripeSpec::default()
        }),
        Reply::Check(CheckReport {
            run: 3,
            state: CheckState::Done,
            counts: CheckCounts {
                orphans: 1,
                dangling: 2,
                nlink: 3,
                size: 4,
                fixed: 5,
            },
            total: 9,
            findings: vec![b"orphan ost=0 oid=7 size=4096".to_vec(), Vec::new()],
        }),
    ] {
        let mut body = Vec::new();
        reply.encode(&mut body);
        assert_eq!(Reply::decode(&body).unwrap(), reply);
        for cut in 0..body.len() {
            assert!(Reply::decode(&body[..cut]).is_err());
        }
    }
}

#[test]
fn lock_flags_and_kinds_beyond_the_known_ones_are_refused() {
    let req = Request::Lock(LockRequest {
        ino: 1,
        client: 2,
        owner: 3,
        start: 0,
        end: 9,
        kind: lock::WRITE,
        pid: 4,
        test: true,
        replay: true,
        wait: true,
    });
    let mut body = Vec::new();
    req.encode(&Head::default(), &mut body);
    assert_eq!(Request::decode(Opcode::MDS_LOCK, &body).unwrap().1, req);
    // The flags are the body's last word; the kind the one before the pid.
    let n = body.len();
    let mut bad_flags = body.clone();
    bad_flags[n - 4..].copy_from_slice(&8u32.to_le_bytes());
    assert!(Request::decode(Opcode::MDS_LOCK, &bad_flags).is_err());
    let mut bad_kind = body;
    bad_kind[n - 12..n - 8].copy_from_slice(&4u32.to_le_bytes());
    assert!(Request::decode(Opcode::MDS_LOCK, &bad_kind).is_err());
}

#[test]
fn names_and_limits_are_enforced() {
    let h = Head::default();
    let enc = |req: &Request| {
        let mut b = Vec::new();
        req.encode(&h, &mut b);
        b
    };
    let long = Request::Lookup {
        parent: 1,
        name: vec![b'a'; 256],
    };
    let err = Request::decode(Opcode::MDS_LOOKUP, &enc(&long)).unwrap_err();
    assert_eq!(err.errno(), errno::ENAMETOOLONG);
    for bad in [&b""[..], b"a/b", b"a\0"] {
        let req = Request::Lookup {
            parent: 1,
            name: bad.to_vec(),
        };
        assert_eq!(
            Request::decode(Opcode::MDS_LOOKUP, &enc(&req)),
            Err(MetaError::BadName)
        );
    }
    let req = Request::Symlink {
        parent: 1,
        name: b"l".to_vec(),
        target: vec![b'x'; 4097],
    };
    assert_eq!(
        Request::decode(Opcode::MDS_SYMLINK, &enc(&req))
            .unwrap_err()
            .errno(),
        errno::ENAMETOOLONG
    );
    // mknod makes special files only: a regular file or directory kind is refused.
    for kind in [FileKind::File, FileKind::Dir, FileKind::Symlink] {
        let req = Request::Mknod {
            parent: 1,
            name: b"n".to_vec(),
            kind,
            mode: 0o644,
            rdev: 0,
        };
        assert!(Request::decode(Opcode::MDS_MKNOD, &enc(&req)).is_err());
    }
    let many = Head {
        creds: Creds {
            uid: 1,
            gid: 1,
            groups: vec![0; 33],
        },
        epoch: 0,
        replay: None,
    };
    let mut b = Vec::new();
    Request::Statfs.encode(&many, &mut b);
    assert_eq!(
        Request::decode(Opcode::MDS_STATFS, &b),
        Err(MetaError::TooManyGroups(33))
    );
    assert_eq!(
        Request::decode(Opcode::PING, &[]),
        Err(MetaError::NotMeta(1))
    );
    // A length field far beyond the body is refused without allocating it.
    let mut huge = enc(&Request::Lookup {
        parent: 1,
        name: b"a".to_vec(),
    });
    let at = huge.len() - 5;
    huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        Request::decode(Opcode::MDS_LOOKUP, &huge)
            .unwrap_err()
            .errno(),
        errno::ENAMETOOLONG
    );
}
