//! The MDT's side of the consistency checker: the snapshot scan (objects named, pending
//! destroys, link counts, marks), the id fence, and the repairs.

mod common;

use common::*;
use nacre_mds::mdt::check::{scan, LinkMismatch, Scan};
use nacre_mds::mdt::{Admin, Repair};
use nacre_proto::meta::{FileKind, Reply, Request, O_RDONLY};

const ROOT: u64 = 1;

fn admin(t: &T, op: Admin) -> Result<Reply, i32> {
    t.admin(op)
}

fn snapshot(t: &T) -> Scan {
    let tx = t.mdt.check_snapshot().unwrap();
    scan(&tx).unwrap()
}

#[test]
fn a_sound_namespace_scans_clean_and_names_every_object() {
    let t = T::new("check-clean");
    let d = t.mkdir(ROOT, "d");
    let f = t.create(d.ino, "f");
    let g = t.create(ROOT, "g");
    t.call(Request::Link {
        ino: g.ino,
        new_parent: d.ino,
        new_name: "h".into(),
    })
    .unwrap();
    let gone = t.create(ROOT, "gone");
    let gone_layout = t.layout(gone.ino);
    t.call(Request::Unlink {
        parent: ROOT,
        name: "gone".into(),
    })
    .unwrap();
    let s = snapshot(&t);
    assert!(s.links.is_empty(), "{:?}", s.links);
    assert_eq!(s.files.len(), 2);
    for ino in [f.ino, g.ino] {
        for o in t.layout(ino).objects {
            assert!(s.named[&(o.ost, o.oid)].is_some());
        }
    }
    // A destroyed file's objects are named too (by the destroy waiting for them).
    for o in gone_layout.objects {
        assert_eq!(s.named[&(o.ost, o.oid)], None);
        assert!(o.oid < s.hwm[&o.ost]);
    }
}

#[test]
fn the_fence_puts_later_objects_above_the_marks() {
    let t = T::new("check-fence");
    let before = t.create(ROOT, "before");
    let _ = snapshot(&t);
    let fence = t.mdt.check_board().take_fence().expect("a fence");
    assert_eq!(fence.marks.len(), 4, "{:?}", fence.marks);
    for o in t.layout(before.ino).objects {
        assert!(o.oid < fence.marks[&o.ost]);
    }
    for name in ["a", "b", "c", "d"] {
        let f = t.create(ROOT, name);
        for o in t.layout(f.ino).objects {
            assert!(o.oid >= fence.marks[&o.ost], "{name}: {o:?}");
        }
    }
}

#[test]
fn wrong_link_counts_and_unnamed_inodes_are_found_and_repaired() {
    let t = T::new("check-links");
    let d = t.mkdir(ROOT, "d");
    let f = t.create(d.ino, "f");
    // A wrong count on a file and on a directory.
    for (ino, from, to) in [(f.ino, 1, 5), (d.ino, 2, 9)] {
        admin(&t, Admin::Repair(Repair::SetLinks { ino, from, to })).unwrap();
    }
    // A stale repair (the count moved since the scan) is refused.
    let stale = Repair::SetLinks {
        ino: f.ino,
        from: 1,
        to: 1,
    };
    assert_eq!(
        admin(&t, Admin::Repair(stale)),
        Err(nacre_proto::meta::errno::EAGAIN)
    );
    // An inode no name points at: a file unlinked while open whose count says 1.
    let lost = t.create(ROOT, "lost");
    t.call(Request::Open {
        ino: lost.ino,
        flags: O_RDONLY,
    })
    .unwrap();
    t.call(Request::Unlink {
        parent: ROOT,
        name: "lost".into(),
    })
    .unwrap();
    let s = snapshot(&t);
    assert!(
        s.links.iter().all(|m| m.ino != lost.ino),
        "an open orphan is sound: {:?}",
        s.links
    );
    admin(
        &t,
        Admin::Repair(Repair::SetLinks {
            ino: lost.ino,
            from: 0,
            to: 1,
        }),
    )
    .unwrap();
    let mut links = snapshot(&t).links;
    links.sort_by_key(|m| m.ino);
    let want = |ino, kind, stored, counted, unnamed| LinkMismatch {
        ino,
        kind,
        stored,
        counted,
        unnamed,
    };
    assert_eq!(
        links,
        vec![
            want(d.ino, FileKind::Dir, 9, 2, false),
            want(f.ino, FileKind::File, 5, 1, false),
            want(lost.ino, FileKind::File, 1, 0, true),
        ]
    );
    for r in [
        Repair::SetLinks {
            ino: d.ino,
            from: 9,
            to: 2,
        },
        Repair::SetLinks {
            ino: f.ino,
            from: 5,
            to: 1,
        },
        Repair::Adopt {
            ino: lost.ino,
            nlink: 1,
        },
    ] {
        admin(&t, Admin::Repair(r)).unwrap();
    }
    let s = snapshot(&t);
    assert!(s.links.is_empty(), "{:?}", s.links);
    let lf = t.lookup(ROOT, "lost+found").unwrap();
    assert_eq!(lf.mode & 0o777, 0o700);
    let adopted = t.lookup(lf.ino, &format!("#{}", lost.ino)).unwrap();
    assert_eq!((adopted.ino, adopted.nlink), (lost.ino, 1));
}

#[test]
fn orphan_objects_are_adopted_and_marks_raised() {
    let t = T::new("check-adopt");
    admin(
        &t,
        Admin::Repair(Repair::AdoptObject {
            ost: 2,
            oid: 77,
            size: 12345,
        }),
    )
    .unwrap();
    let lf = t.lookup(ROOT, "lost+found").unwrap();
    let a = t.lookup(lf.ino, &format!("ost2-{:016x}", 77)).unwrap();
    assert_eq!(a.size, 12345);
    let l = t.layout(a.ino);
    assert_eq!(
        (l.objects.len(), l.objects[0].ost, l.objects[0].oid),
        (1, 2, 77)
    );
    // The same object twice is refused (EEXIST), not a second file.
    let again = Repair::AdoptObject {
        ost: 2,
        oid: 77,
        size: 1,
    };
    assert!(admin(&t, Admin::Repair(again)).is_err());

    let far = 1 << 40;
    admin(&t, Admin::Repair(Repair::RaiseMark { ost: 1, oid: far })).unwrap();
    let s = snapshot(&t);
    assert!(s.hwm[&1] > far, "{:?}", s.hwm);
    let f = t.create(ROOT, "after");
    for o in t.layout(f.ino).objects.iter().filter(|o| o.ost == 1) {
        assert!(o.oid > far);
    }
}
