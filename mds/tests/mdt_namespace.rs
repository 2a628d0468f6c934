//! POSIX semantics of the MDT namespace through the core API.

mod common;
use common::*;
use nacre_proto::layout::{FirstOst, StripeCount, StripeSpec};
use nacre_proto::meta::{
    errno::*, set, Creds, FileKind, Head, Reply, Request, SetAttr, CREATE_EXCL, O_RDONLY, O_RDWR,
    O_TRUNC, RENAME_NOREPLACE,
};

fn rename(p: u64, n: &str, np: u64, nn: &str) -> Request {
    Request::Rename {
        parent: p,
        name: n.into(),
        new_parent: np,
        new_name: nn.into(),
        flags: 0,
    }
}

#[test]
fn create_lookup_getattr_and_exclusive_create() {
    let t = T::new("create");
    let f = t.create(ROOT, "a");
    assert_eq!(f.kind, FileKind::File);
    assert_eq!((f.mode, f.nlink, f.size), (0o644, 1, 0));
    assert_eq!(t.lookup(ROOT, "a").unwrap(), f);
    assert_eq!(t.getattr(f.ino).unwrap(), f);
    assert_eq!(t.lookup(ROOT, "b"), Err(ENOENT));
    let excl = Request::Create {
        parent: ROOT,
        name: "a".into(),
        mode: 0o600,
        flags: CREATE_EXCL,
        layout: None,
    };
    assert_eq!(t.call(excl), Err(EEXIST));
    assert_eq!(
        t.create(ROOT, "a").ino,
        f.ino,
        "create without EXCL returns the file"
    );
    assert_eq!(t.create_as(&Creds::root(), f.ino, "x", 0o644), Err(ENOTDIR));
    assert_eq!(
        t.create_as(&Creds::root(), 999_999, "x", 0o644),
        Err(ENOENT)
    );
    assert_eq!(t.lookup(ROOT, "..").unwrap().ino, ROOT);
    assert_eq!(t.create_as(&Creds::root(), ROOT, "a/b", 0o644), Err(EINVAL));
    assert_eq!(
        t.create_as(&Creds::root(), ROOT, &"n".repeat(256), 0o644),
        Err(ENAMETOOLONG)
    );
    assert_eq!(t.lookup(ROOT, ""), Err(EINVAL));
    let wrong_epoch = Head {
        creds: Creds::root(),
        epoch: EPOCH + 1,
        replay: None,
    };
    assert_eq!(
        t.sub.call(&wrong_epoch, Request::Getattr { ino: ROOT }),
        Err(ESTALE)
    );
    assert_eq!(
        t.sub.call(&wrong_epoch, create(ROOT, "z", 0o644)),
        Err(ESTALE)
    );
}

#[test]
fn mkdir_rmdir_unlink_and_link_counts() {
    let t = T::new("dirs");
    let root0 = t.getattr(ROOT).unwrap().nlink;
    let d = t.mkdir(ROOT, "d");
    assert_eq!(d.nlink, 2);
    assert_eq!(t.getattr(ROOT).unwrap().nlink, root0 + 1);
    assert_eq!(t.mkdir_as(&Creds::root(), ROOT, "d", 0o755), Err(EEXIST));
    let f = t.create(d.ino, "f");
    assert_eq!(
        t.call(Request::Rmdir {
            parent: ROOT,
            name: "d".into()
        }),
        Err(ENOTEMPTY)
    );
    assert_eq!(
        t.call(Request::Rmdir {
            parent: d.ino,
            name: "f".into()
        }),
        Err(ENOTDIR)
    );
    assert_eq!(
        t.call(Request::Unlink {
            parent: ROOT,
            name: "d".into()
        }),
        Err(EISDIR)
    );
    assert_eq!(
        t.call(Request::Unlink {
            parent: d.ino,
            name: "f".into()
        }),
        Ok(Reply::Done)
    );
    assert_eq!(t.getattr(f.ino), Err(ENOENT));
    assert_eq!(
        t.mdt.pending_destroys(10).unwrap().len(),
        1,
        "the file's objects are queued"
    );
    assert_eq!(
        t.call(Request::Rmdir {
            parent: ROOT,
            name: "d".into()
        }),
        Ok(Reply::Done)
    );
    assert_eq!(t.getattr(ROOT).unwrap().nlink, root0);
    assert_eq!(t.lookup(ROOT, "d"), Err(ENOENT));
    assert_eq!(
        t.call(Request::Rmdir {
            parent: ROOT,
            name: ".".into()
        }),
        Err(EINVAL)
    );
}

#[test]
fn hard_links_and_symlinks() {
    let t = T::new("links");
    let f = t.create(ROOT, "f");
    let d = t.mkdir(ROOT, "d");
    let l = t
        .attr_as(
            &Creds::root(),
            Request::Link {
                ino: f.ino,
                new_parent: d.ino,
                new_name: "g".into(),
            },
        )
        .unwrap();
    assert_eq!((l.ino, l.nlink), (f.ino, 2));
    assert_eq!(
        t.call(Request::Link {
            ino: d.ino,
            new_parent: ROOT,
            new_name: "dd".into()
        }),
        Err(EPERM)
    );
    assert_eq!(
        t.call(Request::Link {
            ino: f.ino,
            new_parent: ROOT,
            new_name: "f".into()
        }),
        Err(EEXIST)
    );
    t.call(Request::Unlink {
        parent: ROOT,
        name: "f".into(),
    })
    .unwrap();
    assert_eq!(t.lookup(d.ino, "g").unwrap().nlink, 1);
    let s = t
        .attr_as(
            &Creds::root(),
            Request::Symlink {
                parent: ROOT,
                name: "s".into(),
                target: "d/g".into(),
            },
        )
        .unwrap();
    assert_eq!((s.kind, s.size), (FileKind::Symlink, 3));
    assert_eq!(
        t.call(Request::Readlink { ino: s.ino }),
        Ok(Reply::Target(b"d/g".to_vec()))
    );
    assert_eq!(t.call(Request::Readlink { ino: d.ino }), Err(EINVAL));
}

#[test]
fn rename_cases() {
    let t = T::new("rename");
    let a = t.mkdir(ROOT, "a");
    let b = t.mkdir(ROOT, "b");
    let f = t.create(a.ino, "f");
    let g = t.create(b.ino, "g");
    // Within a directory, then across directories replacing a file.
    t.call(rename(a.ino, "f", a.ino, "f2")).unwrap();
    assert_eq!(t.lookup(a.ino, "f2").unwrap().ino, f.ino);
    assert_eq!(t.lookup(a.ino, "f"), Err(ENOENT));
    t.call(rename(a.ino, "f2", b.ino, "g")).unwrap();
    assert_eq!(t.lookup(b.ino, "g").unwrap().ino, f.ino);
    assert_eq!(t.getattr(g.ino), Err(ENOENT), "the replaced file is gone");
    // NOREPLACE.
    t.create(a.ino, "h");
    let noreplace = Request::Rename {
        parent: a.ino,
        name: "h".into(),
        new_parent: b.ino,
        new_name: "g".into(),
        flags: RENAME_NOREPLACE,
    };
    assert_eq!(t.call(noreplace), Err(EEXIST));
    // Type mismatches.
    let e = t.mkdir(ROOT, "e");
    assert_eq!(t.call(rename(a.ino, "h", ROOT, "e")), Err(EISDIR));
    assert_eq!(t.call(rename(ROOT, "e", a.ino, "h")), Err(ENOTDIR));
    // Directory over an empty directory, over a non-empty one, across parents.
    let sub = t.mkdir(a.ino, "sub");
    let root_links = t.getattr(ROOT).unwrap().nlink;
    let (a_links, e_links) = (
        t.getattr(a.ino).unwrap().nlink,
        t.getattr(e.ino).unwrap().nlink,
    );
    t.mkdir(e.ino, "target");
    assert_eq!(
        t.call(rename(a.ino, "sub", e.ino, "target")),
        Ok(Reply::Done)
    );
    assert_eq!(t.lookup(e.ino, "target").unwrap().ino, sub.ino);
    assert_eq!(t.getattr(a.ino).unwrap().nlink, a_links - 1);
    assert_eq!(t.getattr(e.ino).unwrap().nlink, e_links + 1);
    assert_eq!(
        t.lookup(sub.ino, "..").unwrap().ino,
        e.ino,
        "'..' follows the move"
    );
    t.create(b.ino, "x");
    assert_eq!(t.call(rename(ROOT, "e", ROOT, "b")), Err(ENOTEMPTY));
    // Into its own subtree.
    assert_eq!(t.call(rename(ROOT, "e", sub.ino, "loop")), Err(EINVAL));
    assert_eq!(t.call(rename(ROOT, "e", e.ino, "self")), Err(EINVAL));
    // Within one parent a directory keeps the parent's link count.
    t.call(rename(ROOT, "e", ROOT, "e2")).unwrap();
    assert_eq!(t.getattr(ROOT).unwrap().nlink, root_links);
    assert_eq!(t.call(rename(ROOT, "nope", ROOT, "x")), Err(ENOENT));
    // Renaming a link onto another link of the same file does nothing.
    t.call(Request::Link {
        ino: f.ino,
        new_parent: ROOT,
        new_name: "f-link".into(),
    })
    .unwrap();
    t.call(rename(ROOT, "f-link", b.ino, "g")).unwrap();
    assert_eq!(t.getattr(f.ino).unwrap().nlink, 2);
}

#[test]
fn permissions_search_write_sticky_and_ownership() {
    let t = T::new("perm");
    let alice = Creds::user(1000, 1000);
    let bob = Creds {
        uid: 1001,
        gid: 1001,
        groups: vec![50],
    };
    let shared = t.mkdir(ROOT, "shared");
    assert_eq!(
        t.create_as(&alice, ROOT, "x", 0o644),
        Err(EACCES),
        "root dir is 0755 root"
    );
    let set_mode = |ino, mode| Request::Setattr {
        ino,
        attr: SetAttr {
            mask: set::MODE,
            mode,
            ..Default::default()
        },
    };
    t.call(set_mode(shared.ino, 0o1777)).unwrap();
    let af = t.create_as(&alice, shared.ino, "af", 0o644).unwrap();
    assert_eq!((af.uid, af.gid), (1000, 1000));
    // Sticky: bob may not remove or rename alice's file; root and alice may.
    assert_eq!(
        t.call_as(
            &bob,
            Request::Unlink {
                parent: shared.ino,
                name: "af".into()
            }
        ),
        Err(EPERM)
    );
    assert_eq!(
        t.call_as(&bob, rename(shared.ino, "af", shared.ino, "b")),
        Err(EPERM)
    );
    t.call_as(&alice, rename(shared.ino, "af", shared.ino, "af2"))
        .unwrap();
    // Search permission.
    let private = t.mkdir_as(&alice, shared.ino, "private", 0o700).unwrap();
    t.create_as(&alice, private.ino, "secret", 0o644).unwrap();
    assert_eq!(t.lookup_as(&bob, private.ino, "secret"), Err(EACCES));
    assert!(
        t.lookup_as(&Creds::root(), private.ino, "secret").is_ok(),
        "root bypasses"
    );
    assert_eq!(
        t.call_as(
            &bob,
            Request::Readdir {
                dir: private.ino,
                cookie: 0,
                max: 10
            }
        ),
        Err(EACCES)
    );
    // Group access through a supplementary group.
    let grp = t.mkdir(ROOT, "grp");
    let chown = |ino, uid, gid| Request::Setattr {
        ino,
        attr: SetAttr {
            mask: set::UID | set::GID,
            uid,
            gid,
            ..Default::default()
        },
    };
    t.call(chown(grp.ino, 0, 50)).unwrap();
    t.call(set_mode(grp.ino, 0o770)).unwrap();
    assert!(t.create_as(&bob, grp.ino, "ok", 0o600).is_ok());
    assert_eq!(t.create_as(&alice, grp.ino, "no", 0o600), Err(EACCES));
    // chmod / chown rules.
    assert_eq!(t.call_as(&bob, set_mode(af.ino, 0o777)), Err(EPERM));
    t.call_as(&alice, set_mode(af.ino, 0o600)).unwrap();
    assert_eq!(
        t.call_as(&alice, chown(af.ino, 1001, 1000)),
        Err(EPERM),
        "only root gives files away"
    );
    let chgrp = |ino, gid| Request::Setattr {
        ino,
        attr: SetAttr {
            mask: set::GID,
            gid,
            ..Default::default()
        },
    };
    assert_eq!(
        t.call_as(&alice, chgrp(af.ino, 50)),
        Err(EPERM),
        "alice is not in group 50"
    );
    t.call(chown(af.ino, 1001, 1001)).unwrap();
    t.call_as(&bob, chgrp(af.ino, 50)).unwrap();
    // chown clears setuid.
    t.call(set_mode(af.ino, 0o4755)).unwrap();
    t.call(chown(af.ino, 1000, 1000)).unwrap();
    assert_eq!(t.getattr(af.ino).unwrap().mode, 0o755);
    // Open honours the mode; root bypasses read/write.
    t.call(set_mode(af.ino, 0o600)).unwrap();
    assert_eq!(
        t.call_as(
            &bob,
            Request::Open {
                ino: af.ino,
                flags: O_RDONLY
            }
        ),
        Err(EACCES)
    );
    assert!(t
        .call(Request::Open {
            ino: af.ino,
            flags: O_RDWR
        })
        .is_ok());
    // Times: anyone with write access may touch to "now"; explicit times need the owner.
    let touch = |mask| Request::Setattr {
        ino: af.ino,
        attr: SetAttr {
            mask,
            mtime: 5,
            ..Default::default()
        },
    };
    assert_eq!(t.call_as(&bob, touch(set::MTIME_NOW)), Err(EACCES));
    t.call(set_mode(af.ino, 0o666)).unwrap();
    assert!(t.call_as(&bob, touch(set::MTIME_NOW)).is_ok());
    assert_eq!(t.call_as(&bob, touch(set::MTIME)), Err(EPERM));
    assert_eq!(t.attr_as(&alice, touch(set::MTIME)).unwrap().mtime, 5);
}

#[test]
fn layouts_inherit_resolve_and_lock_after_first_write() {
    let t = T::new("layout");
    let wide = StripeSpec {
        stripe_size: 4 << 20,
        count: StripeCount::All,
        first: FirstOst::Index(2),
        mirrors: 1,
    };
    let d = t.mkdir(ROOT, "wide");
    assert_eq!(
        t.call(Request::SetLayout {
            ino: d.ino,
            spec: wide
        }),
        Ok(Reply::DefaultLayout(wide))
    );
    let f = t.create(d.ino, "f");
    let l = t.layout(f.ino);
    assert_eq!(l.stripe_size, 4 << 20);
    assert_eq!(
        l.objects.iter().map(|o| o.ost).collect::<Vec<_>>(),
        vec![2, 3, 0, 1]
    );
    let sub = t.mkdir(d.ino, "sub");
    assert_eq!(
        t.call(Request::GetLayout { ino: sub.ino }),
        Ok(Reply::DefaultLayout(wide)),
        "subdirs inherit"
    );
    // Explicit layout at create; round robin for "any".
    let two = StripeSpec {
        stripe_size: 1 << 20,
        count: StripeCount::Count(2),
        first: FirstOst::Any,
        mirrors: 1,
    };
    let c = Request::Create {
        parent: ROOT,
        name: "two".into(),
        mode: 0o644,
        flags: 0,
        layout: Some(two),
    };
    let Reply::Opened {
        attr,
        layout: Some(l2),
        created: true,
        ..
    } = t.call(c.clone()).unwrap()
    else {
        panic!()
    };
    assert_eq!(l2.objects().count(), 2);
    // The same create again finds the file: its answer says it made nothing.
    assert!(matches!(
        t.call(c),
        Ok(Reply::Opened { created: false, attr: a, .. }) if a.ino == attr.ino
    ));
    // Set on a file before its first write; refused after.
    let one = StripeSpec::default();
    assert!(
        matches!(t.call(Request::SetLayout { ino: attr.ino, spec: one }), Ok(Reply::Layout(l)) if l.objects().count() == 1)
    );
    t.call(Request::ReportSize {
        ino: attr.ino,
        size: 10,
    })
    .unwrap();
    assert_eq!(
        t.call(Request::SetLayout {
            ino: attr.ino,
            spec: one
        }),
        Err(EBUSY)
    );
    let g = t.create(ROOT, "g");
    t.call(Request::Open {
        ino: g.ino,
        flags: O_RDWR,
    })
    .unwrap();
    assert_eq!(
        t.call(Request::SetLayout {
            ino: g.ino,
            spec: one
        }),
        Err(EBUSY),
        "opened for write"
    );
    // Object ids are never handed out twice.
    let mut seen = std::collections::HashSet::new();
    for i in 0..200 {
        let f = t.create(d.ino, &format!("n{i}"));
        for o in t.layout(f.ino).objects {
            assert!(seen.insert(o), "object {o:?} handed out twice");
        }
    }
}

#[test]
fn size_reports_merge_with_max_and_truncate_sets_exactly() {
    let t = T::new("size");
    let f = t.create(ROOT, "f");
    let report = |size| {
        t.attr_as(&Creds::root(), Request::ReportSize { ino: f.ino, size })
            .unwrap()
            .size
    };
    assert_eq!(report(100), 100);
    assert_eq!(report(50), 100, "a smaller report does not shrink the file");
    assert_eq!(report(4096), 4096);
    let trunc = |size| Request::Setattr {
        ino: f.ino,
        attr: SetAttr {
            mask: set::SIZE,
            size,
            ..Default::default()
        },
    };
    assert_eq!(t.attr_as(&Creds::root(), trunc(10)).unwrap().size, 10);
    assert_eq!(t.getattr(f.ino).unwrap().size, 10);
    let Reply::Opened {
        attr,
        created: false,
        ..
    } = t
        .call(Request::Open {
            ino: f.ino,
            flags: O_RDWR | O_TRUNC,
        })
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(attr.size, 0);
    let d = t.mkdir(ROOT, "d");
    assert_eq!(
        t.call(Request::ReportSize {
            ino: d.ino,
            size: 1
        }),
        Err(EISDIR)
    );
}

/// A close after writes carries the size: one request reports it and closes, allowed
/// by the handle (open for writing), never by a read-only one.
#[test]
fn a_sized_close_reports_and_closes_in_one_request() {
    let t = T::new("close-sized");
    let f = t.create(ROOT, "f");
    let open = |flags| match t.call(Request::Open { ino: f.ino, flags }).unwrap() {
        Reply::Opened { handle, .. } => handle,
        other => panic!("{other:?}"),
    };
    let w = open(O_RDWR);
    let sized = |handle, size| Request::CloseSized {
        ino: f.ino,
        handle,
        size,
    };
    assert_eq!(t.call(sized(w, 3901)), Ok(Reply::Done));
    assert_eq!(t.getattr(f.ino).unwrap().size, 3901);
    assert_eq!(t.call(sized(w, 9999)), Err(EBADF), "closed already");
    assert_eq!(
        t.getattr(f.ino).unwrap().size,
        3901,
        "a refused close reports nothing"
    );
    let r = open(O_RDONLY);
    assert_eq!(
        t.call(sized(r, 5000)),
        Err(EBADF),
        "a read-only handle reports no size"
    );
    assert_eq!(t.getattr(f.ino).unwrap().size, 3901);
    assert_eq!(
        t.call(Request::Close {
            ino: f.ino,
            handle: r
        }),
        Ok(Reply::Done)
    );
    // A file whose mode denies its writer: the writer's handle still reports.
    let nobody = Creds {
        uid: 1000,
        gid: 1000,
        groups: vec![],
    };
    let public = t.mkdir(ROOT, "public");
    let all = SetAttr {
        mask: set::MODE,
        mode: 0o777,
        ..Default::default()
    };
    t.call(Request::Setattr {
        ino: public.ino,
        attr: all,
    })
    .unwrap();
    let ro = match t.call_as(
        &nobody,
        Request::Create {
            parent: public.ino,
            name: b"ro".to_vec(),
            mode: 0o444,
            flags: nacre_proto::meta::CREATE_OPEN
                | (O_RDWR << nacre_proto::meta::CREATE_OPEN_SHIFT),
            layout: None,
        },
    ) {
        Ok(Reply::Opened { attr, handle, .. }) => (attr.ino, handle),
        other => panic!("{other:?}"),
    };
    let close = Request::CloseSized {
        ino: ro.0,
        handle: ro.1,
        size: 7,
    };
    assert_eq!(t.call_as(&nobody, close), Ok(Reply::Done));
    assert_eq!(t.getattr(ro.0).unwrap().size, 7);
}

#[test]
fn unlinked_open_file_lives_until_last_close() {
    let t = T::new("orphan");
    let f = t.create(ROOT, "f");
    let open = || match t
        .call(Request::Open {
            ino: f.ino,
            flags: O_RDONLY,
        })
        .unwrap()
    {
        Reply::Opened { handle, .. } => handle,
        other => panic!("{other:?}"),
    };
    let (h1, h2) = (open(), open());
    t.call(Request::Unlink {
        parent: ROOT,
        name: "f".into(),
    })
    .unwrap();
    assert_eq!(t.lookup(ROOT, "f"), Err(ENOENT));
    assert_eq!(t.getattr(f.ino).unwrap().nlink, 0, "still there while open");
    t.call(Request::Close {
        ino: f.ino,
        handle: h1,
    })
    .unwrap();
    assert!(t.getattr(f.ino).is_ok());
    assert_eq!(
        t.call(Request::Close {
            ino: f.ino,
            handle: h1
        }),
        Err(EBADF)
    );
    t.call(Request::Close {
        ino: f.ino,
        handle: h2,
    })
    .unwrap();
    assert_eq!(t.getattr(f.ino), Err(ENOENT));
}

#[test]
fn state_survives_a_clean_reopen() {
    let dir = fresh_dir("reopen");
    let (f, objs) = {
        let t = T::open(config(&dir, nacre_mds::mdt::SyncMode::Default));
        let d = t.mkdir(ROOT, "d");
        let f = t.create(d.ino, "f");
        (f, t.layout(f.ino).objects)
    };
    let t = T::open(config(&dir, nacre_mds::mdt::SyncMode::Default));
    let d = t.lookup(ROOT, "d").unwrap();
    assert_eq!(t.lookup(d.ino, "f").unwrap(), f);
    let g = t.create(d.ino, "g");
    assert!(g.ino > f.ino);
    let new = t.layout(g.ino).objects[0];
    assert!(
        objs.iter().all(|o| o.ost != new.ost || o.oid < new.oid),
        "ids restart above the old range"
    );
    assert!(matches!(t.call(Request::Statfs), Ok(Reply::Statfs(s)) if s.inodes_used == 4));
}

#[test]
fn concurrent_size_reports_from_several_clients_keep_the_maximum() {
    let t = T::new("size-concurrent");
    let f = t.create(ROOT, "shared");
    std::thread::scope(|s| {
        for c in 0..8u64 {
            let sub = t.mdt.submitter();
            s.spawn(move || {
                let head = Head {
                    creds: Creds::root(),
                    epoch: EPOCH,
                    replay: None,
                };
                // Client c writes stripes c, c+8, ... and reports each end, in a shuffled order.
                for k in (0..50u64).rev().chain(0..50) {
                    let end = (k * 8 + c + 1) * 4096;
                    sub.call(
                        &head,
                        Request::ReportSize {
                            ino: f.ino,
                            size: end,
                        },
                    )
                    .unwrap();
                }
            });
        }
    });
    assert_eq!(t.getattr(f.ino).unwrap().size, (49 * 8 + 7 + 1) * 4096);
}

fn admin(t: &T, op: nacre_mds::mdt::Admin) {
    assert_eq!(t.admin(op), Ok(Reply::Done));
}

#[test]
fn orphans_survive_a_restart_until_reclaimed_and_destroys_are_listed() {
    use nacre_mds::mdt::Admin;
    let dir = fresh_dir("reclaim");
    let f = {
        let t = T::open(config(&dir, nacre_mds::mdt::SyncMode::Default));
        let f = t.create(ROOT, "f");
        t.call(Request::Open {
            ino: f.ino,
            flags: O_RDONLY,
        })
        .unwrap();
        t.call(Request::Unlink {
            parent: ROOT,
            name: "f".into(),
        })
        .unwrap();
        f
    };
    let t = T::open(config(&dir, nacre_mds::mdt::SyncMode::Default));
    assert_eq!(
        t.getattr(f.ino).unwrap().nlink,
        0,
        "kept for a client that re-opens it"
    );
    assert!(t.mdt.pending_destroys(10).unwrap().is_empty());
    admin(&t, Admin::ReclaimOrphans);
    assert_eq!(t.getattr(f.ino), Err(ENOENT));
    let destroys = t.mdt.pending_destroys(10).unwrap();
    assert_eq!(destroys.len(), 1);
    assert_eq!(destroys[0].0, f.ino);
    // Destroyed on the OSTs only once the unlink is durable (checkpointed), and a
    // cursor skips the rows before it.
    assert!(t.mdt.durable_destroys(10, None).unwrap().is_empty());
    admin(&t, Admin::Checkpoint);
    let durable = t.mdt.durable_destroys(10, None).unwrap();
    assert_eq!(durable, destroys);
    assert!(t.mdt.durable_destroys(10, Some(f.ino)).unwrap().is_empty());
    assert_eq!(
        t.mdt.durable_destroys(10, Some(f.ino - 1)).unwrap(),
        destroys
    );
    admin(&t, Admin::ForgetDestroyed(vec![f.ino]));
    assert!(t.mdt.pending_destroys(10).unwrap().is_empty());
    // Forgotten but not yet checkpointed: not offered again.
    assert!(t.mdt.durable_destroys(10, None).unwrap().is_empty());
    // A new cluster map: new files go to the OSTs it names.
    admin(&t, Admin::SetOsts(vec![nacre_mds::mdt::OstPlace::alone(9)]));
    let g = t.create(ROOT, "g");
    assert_eq!(t.layout(g.ino).objects[0].ost, 9);
    admin(&t, Admin::SetOsts(vec![]));
    assert_eq!(t.create_as(&Creds::root(), ROOT, "h", 0o644), Err(ENOSPC));
}

#[test]
fn several_mdts_live_side_by_side_in_one_process() {
    let a = T::new("side-a");
    let b = T::new("side-b");
    let fa = a.create(ROOT, "only-in-a");
    b.mkdir(ROOT, "only-in-b");
    assert_eq!(b.lookup(ROOT, "only-in-a"), Err(ENOENT));
    assert_eq!(a.lookup(ROOT, "only-in-b"), Err(ENOENT));
    assert_eq!(a.lookup(ROOT, "only-in-a").unwrap(), fa);
}

#[test]
fn mirrored_files_mark_stale_but_never_the_last_copy() {
    let t = T::new("mirrors");
    let spec = |mirrors| StripeSpec {
        stripe_size: 1 << 20,
        count: StripeCount::Count(2),
        first: FirstOst::Any,
        mirrors,
    };
    let create = |name: &str, mirrors| Request::Create {
        parent: ROOT,
        name: name.into(),
        mode: 0o644,
        flags: 0,
        layout: Some(spec(mirrors)),
    };
    let Ok(Reply::Opened {
        attr,
        layout: Some(l),
        ..
    }) = t.call(create("m", 2))
    else {
        panic!("a mirrored create")
    };
    assert_eq!(l.mirrors.len(), 2);
    for stripe in 0..2 {
        assert_ne!(
            l.mirrors[0].stripes.objects[stripe].ost, l.mirrors[1].stripes.objects[stripe].ost,
            "two copies of one stripe on one OST: {l:?}"
        );
    }
    let state = |mirror, stale| Request::MirrorState {
        ino: attr.ino,
        mirror,
        stale,
    };
    let Ok(Reply::Layout(after)) = t.call(state(1, true)) else {
        panic!("marking stale")
    };
    assert!(after.mirrors[1].stale && !after.mirrors[0].stale);
    // Idempotent, and what a later open sees.
    assert_eq!(t.call(state(1, true)), Ok(Reply::Layout(after.clone())));
    assert!(matches!(
        t.call(Request::GetLayout { ino: attr.ino }),
        Ok(Reply::Layout(l)) if l == after
    ));
    // The last copy in sync stays in sync; a mirror the file lacks is refused.
    assert_eq!(t.call(state(0, true)), Err(EIO));
    assert_eq!(t.call(state(2, true)), Err(EINVAL));
    // In sync again only through a resync that nothing could have disturbed: none
    // started (EAGAIN); one spoiled by a write open or a truncate (EBUSY); none while
    // a handle may write (EBUSY).
    assert_eq!(t.call(state(1, false)), Err(EAGAIN));
    let resync = Request::ResyncStart { ino: attr.ino };
    assert!(matches!(t.call(resync.clone()), Ok(Reply::Attr(_))));
    let Ok(Reply::Opened { handle, .. }) = t.call(Request::Open {
        ino: attr.ino,
        flags: O_RDWR,
    }) else {
        panic!("open for writing")
    };
    assert_eq!(t.call(state(1, false)), Err(EBUSY), "a writer came");
    assert_eq!(t.call(resync.clone()), Err(EBUSY), "a writer holds it");
    t.call(Request::Close {
        ino: attr.ino,
        handle,
    })
    .unwrap();
    assert!(t.call(resync.clone()).is_ok());
    t.call(Request::Setattr {
        ino: attr.ino,
        attr: SetAttr {
            mask: set::SIZE,
            size: 0,
            ..Default::default()
        },
    })
    .unwrap();
    assert_eq!(t.call(state(1, false)), Err(EBUSY), "a truncate came");
    // A reader does not disturb it.
    assert!(t.call(resync).is_ok());
    let Ok(Reply::Opened { handle, .. }) = t.call(Request::Open {
        ino: attr.ino,
        flags: O_RDONLY,
    }) else {
        panic!("open for reading")
    };
    let Ok(Reply::Layout(back)) = t.call(state(1, false)) else {
        panic!("back in sync")
    };
    assert_eq!(back, l);
    t.call(Request::Close {
        ino: attr.ino,
        handle,
    })
    .unwrap();
    // Another user without write permission may not change it.
    let other = Creds {
        uid: 1000,
        gid: 1000,
        groups: vec![],
    };
    assert_eq!(
        t.call_as(&other, state(1, true)),
        Err(EACCES),
        "a stranger marked a mirror stale"
    );
    // Four copies on four OSTs; five are more than a layout may have.
    assert!(t.call(create("four", 4)).is_ok());
    assert_eq!(t.call(create("five", 5)), Err(EINVAL));
}

#[test]
fn copies_placed_on_a_down_ost_are_born_stale() {
    use nacre_mds::mdt::OstPlace;
    let t = T::new("born-stale");
    // Two OSTs on two servers, the second down: a file of two copies still gets both,
    // the one on the OST that is down stale (the rebuild fills it once it is back).
    let mut down = OstPlace::alone(1);
    down.up = false;
    admin(
        &t,
        nacre_mds::mdt::Admin::SetOsts(vec![OstPlace::alone(0), down]),
    );
    let spec = StripeSpec {
        stripe_size: 1 << 20,
        count: StripeCount::Count(1),
        first: FirstOst::Any,
        mirrors: 2,
    };
    let Ok(Reply::Opened {
        attr,
        layout: Some(l),
        ..
    }) = t.call(Request::Create {
        parent: ROOT,
        name: "f".into(),
        mode: 0o644,
        flags: 0,
        layout: Some(spec),
    })
    else {
        panic!("a mirrored create while an OST is down")
    };
    assert_eq!(l.mirrors[0].stripes.objects[0].ost, 0, "{l:?}");
    assert!(!l.mirrors[0].stale, "{l:?}");
    assert_eq!(l.mirrors[1].stripes.objects[0].ost, 1, "{l:?}");
    assert!(l.mirrors[1].stale, "{l:?}");
    assert!(t.mdt.is_stale(attr.ino), "the rebuild will find it");
    // Three copies need three OSTs, up or down.
    let three = StripeSpec { mirrors: 3, ..spec };
    assert_eq!(
        t.call(Request::Create {
            parent: ROOT,
            name: "g".into(),
            mode: 0o644,
            flags: 0,
            layout: Some(three),
        }),
        Err(libc::ENOSPC)
    );
}

/// A directory everyone may write, in the root.
fn open_dir(t: &T, name: &str) -> u64 {
    let d = t.mkdir(ROOT, name);
    let all = SetAttr {
        mask: set::MODE,
        mode: 0o777,
        ..SetAttr::default()
    };
    t.call(Request::Setattr {
        ino: d.ino,
        attr: all,
    })
    .unwrap();
    d.ino
}

fn mknod(parent: u64, name: &str, kind: FileKind, rdev: u64) -> Request {
    Request::Mknod {
        parent,
        name: name.into(),
        kind,
        mode: 0o640,
        rdev,
    }
}

#[test]
fn special_files_are_inodes_with_their_device_kept_across_a_restart() {
    let dir = fresh_dir("mknod");
    let user = Creds::user(1000, 1000);
    let (fifo, dev) = {
        let t = T::open(config(&dir, nacre_mds::mdt::SyncMode::Default));
        let d = t.getattr(open_dir(&t, "d")).unwrap();
        // FIFOs and sockets for anyone who may write the directory; devices for root.
        let fifo = t
            .attr_as(&user, mknod(d.ino, "p", FileKind::Fifo, 7))
            .unwrap();
        assert_eq!((fifo.kind, fifo.rdev, fifo.uid), (FileKind::Fifo, 0, 1000));
        let sock = t.attr_as(&user, mknod(d.ino, "s", FileKind::Socket, 0));
        assert_eq!(sock.unwrap().kind, FileKind::Socket);
        let denied = t.attr_as(&user, mknod(d.ino, "c", FileKind::CharDevice, 0x103));
        assert_eq!(denied, Err(EPERM));
        let dev = t
            .attr_as(
                &Creds::root(),
                mknod(d.ino, "b", FileKind::BlockDevice, 0x801),
            )
            .unwrap();
        assert_eq!(
            (dev.kind, dev.rdev, dev.mode),
            (FileKind::BlockDevice, 0x801, 0o640)
        );
        assert_eq!(t.call(mknod(d.ino, "b", FileKind::Fifo, 0)), Err(EEXIST));
        // No nacre handle opens them (the kernel does), and they take no layout.
        let open = Request::Open {
            ino: fifo.ino,
            flags: O_RDONLY,
        };
        assert_eq!(t.call(open), Err(ENXIO));
        let spec = StripeSpec::default();
        let set_layout = Request::SetLayout { ino: dev.ino, spec };
        assert_eq!(t.call(set_layout), Err(EINVAL));
        (fifo, dev)
    };
    let t = T::open(config(&dir, nacre_mds::mdt::SyncMode::Default));
    let d = t.lookup(ROOT, "d").unwrap();
    assert_eq!(t.lookup(d.ino, "p").unwrap(), fifo);
    assert_eq!(t.lookup(d.ino, "b").unwrap(), dev);
    let names = t.list(d.ino, 100);
    assert_eq!(names, ["p", "s", "b"]);
    t.call(Request::Unlink {
        parent: d.ino,
        name: "b".into(),
    })
    .unwrap();
    assert_eq!(t.getattr(dev.ino), Err(ENOENT));
}

#[test]
fn writes_and_truncates_by_others_than_root_drop_setuid_and_setgid() {
    let t = T::new("killpriv");
    let user = Creds::user(1000, 1000);
    let w = open_dir(&t, "w");
    let f = t.create_as(&user, w, "f", 0o6775).unwrap();
    let g = t.create_as(&user, w, "g", 0o2644).unwrap();
    assert_eq!((f.mode, g.mode), (0o6775, 0o2644));
    let kill = SetAttr {
        mask: set::KILL_PRIV,
        ..SetAttr::default()
    };
    // setgid without group execute is mandatory locking, not a privilege: it stays.
    let f2 = t
        .attr_as(
            &user,
            Request::Setattr {
                ino: f.ino,
                attr: kill,
            },
        )
        .unwrap();
    let g2 = t
        .attr_as(
            &user,
            Request::Setattr {
                ino: g.ino,
                attr: kill,
            },
        )
        .unwrap();
    assert_eq!((f2.mode, g2.mode), (0o0775, 0o2644));
    // Root keeps them (CAP_FSETID); a truncate by the owner drops them.
    let h = t.create_as(&user, w, "h", 0o4755).unwrap();
    let by_root = t
        .attr_as(
            &Creds::root(),
            Request::Setattr {
                ino: h.ino,
                attr: kill,
            },
        )
        .unwrap();
    assert_eq!(by_root.mode, 0o4755);
    let trunc = SetAttr {
        mask: set::SIZE,
        size: 10,
        ..SetAttr::default()
    };
    let h2 = t
        .attr_as(
            &user,
            Request::Setattr {
                ino: h.ino,
                attr: trunc,
            },
        )
        .unwrap();
    assert_eq!((h2.mode, h2.size), (0o0755, 10));
    // Killing needs write access, as a write does.
    let other = Creds::user(2000, 2000);
    assert_eq!(
        t.attr_as(
            &other,
            Request::Setattr {
                ino: g.ino,
                attr: kill
            }
        ),
        Err(EACCES)
    );
}
