//! Readdir cookies stay valid while entries come and go: every entry present throughout
//! a listing is returned exactly once.

mod common;
use common::*;
use nacre_proto::meta::{Reply, Request};
use std::collections::HashMap;

#[test]
fn paging_under_concurrent_creates_and_removes() {
    let t = T::new("readdir");
    let d = t.mkdir(ROOT, "d");
    for i in 0..300 {
        t.create(d.ino, &format!("keep{i}"));
        if i % 3 == 0 {
            t.create(d.ino, &format!("churn{i}"));
        }
    }
    let mut seen: HashMap<String, u32> = HashMap::new();
    let (mut cookie, mut round) = (0, 0);
    loop {
        let Reply::Dir {
            entries,
            next_cookie,
            eof,
        } = t
            .call(Request::Readdir {
                dir: d.ino,
                cookie,
                max: 7,
            })
            .unwrap()
        else {
            panic!("not a dir reply")
        };
        for e in &entries {
            *seen
                .entry(String::from_utf8(e.name.clone()).unwrap())
                .or_default() += 1;
        }
        // Between pages another client removes some entries and adds new ones.
        round += 1;
        let victim = format!("churn{}", (round * 3) % 300);
        let _ = t.call(Request::Unlink {
            parent: d.ino,
            name: victim.into(),
        });
        t.create(d.ino, &format!("new{round}"));
        cookie = next_cookie;
        if eof {
            break;
        }
        assert!(round < 10_000, "listing does not end");
    }
    for i in 0..300 {
        assert_eq!(
            seen.get(&format!("keep{i}")),
            Some(&1),
            "keep{i} lost or repeated"
        );
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "an entry was returned twice"
    );
    // A full listing afterwards agrees with lookups.
    let all = t.list(d.ino, 1000);
    assert!(all.len() >= 300);
    for name in &all {
        assert!(t.lookup(d.ino, name).is_ok());
    }
}

#[test]
fn big_pages_respect_the_reply_byte_budget() {
    let t = T::new("readdir-budget");
    let long = "x".repeat(250);
    for i in 0..400 {
        t.create(ROOT, &format!("{long}{i:03}"));
    }
    let Reply::Dir { entries, eof, .. } = t
        .call(Request::Readdir {
            dir: ROOT,
            cookie: 0,
            max: 1024,
        })
        .unwrap()
    else {
        panic!()
    };
    assert!(
        !eof && entries.len() < 400,
        "{} entries in one reply",
        entries.len()
    );
    let mut body = Vec::new();
    Reply::Dir {
        entries,
        next_cookie: 0,
        eof,
    }
    .encode(&mut body);
    assert!(body.len() <= 64 * 1024);
    assert_eq!(t.list(ROOT, 1024).len(), 400);
}

/// ReaddirPlus pages hold the same entries as Readdir pages, each with the attributes
/// getattr gives, and page by cookie the same way.
#[test]
fn readdir_plus_gives_each_entry_its_attributes() {
    let t = T::new("readdirplus");
    let d = t.mkdir(ROOT, "d");
    let sub = t.mkdir(d.ino, "sub");
    for i in 0..40 {
        t.create(d.ino, &format!("f{i}"));
    }
    let (mut cookie, mut seen) = (0, 0);
    loop {
        let plain = t.call(Request::Readdir {
            dir: d.ino,
            cookie,
            max: 9,
        });
        let Ok(Reply::DirPlus {
            entries,
            next_cookie,
            eof,
        }) = t.call(Request::ReaddirPlus {
            dir: d.ino,
            cookie,
            max: 9,
        })
        else {
            panic!("not a readdirplus page")
        };
        let Ok(Reply::Dir {
            entries: names,
            next_cookie: plain_next,
            eof: plain_eof,
        }) = plain
        else {
            panic!("not a readdir page")
        };
        assert_eq!((next_cookie, eof), (plain_next, plain_eof));
        assert_eq!(
            entries.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>(),
            names
        );
        for (e, a) in &entries {
            assert_eq!(*a, t.getattr(e.ino).unwrap());
            assert_eq!(a.kind, e.kind);
        }
        seen += entries.len();
        cookie = next_cookie;
        if eof {
            break;
        }
    }
    assert_eq!(seen, 41);
    assert!(t.getattr(sub.ino).unwrap().nlink == 2);
    // Permissions as readdir's: a directory the caller may not read.
    let private = nacre_proto::meta::SetAttr {
        mask: nacre_proto::meta::set::MODE,
        mode: 0o700,
        ..Default::default()
    };
    t.call(Request::Setattr {
        ino: d.ino,
        attr: private,
    })
    .unwrap();
    let user = nacre_proto::meta::Creds::user(1000, 1000);
    let req = Request::ReaddirPlus {
        dir: d.ino,
        cookie: 0,
        max: 10,
    };
    assert_eq!(t.call_as(&user, req), Err(nacre_proto::meta::errno::EACCES));
}
