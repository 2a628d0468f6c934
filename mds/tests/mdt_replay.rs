//! Reply reconstruction: a changing request sent again with the same replay key (its
//! answer was lost) is answered from the reply cache, not applied twice; a new xid on
//! the same tag is a new request; the cache survives a restart of the MDT. (After a
//! crash the saved reply comes back from the operation log with the change it
//! answers: both are changes of one redo record, see `redo`'s round-trip test.)

mod common;

use common::{config, fresh_dir, EPOCH, T};
use nacre_mds::mdt::{SyncMode, ROOT_INO};
use nacre_proto::meta::{errno, Creds, Head, ReplayKey, Reply, Request};
use std::sync::atomic::Ordering;

fn keyed(t: &T, client: u64, tag: u32, xid: u64, req: Request) -> Result<Reply, i32> {
    let head = Head {
        creds: Creds::root(),
        epoch: EPOCH,
        replay: Some(ReplayKey { client, tag, xid }),
    };
    t.sub.call(&head, req)
}

fn mkdir(name: &str) -> Request {
    Request::Mkdir {
        parent: ROOT_INO,
        name: name.as_bytes().to_vec(),
        mode: 0o755,
    }
}

fn unlink(name: &str) -> Request {
    Request::Unlink {
        parent: ROOT_INO,
        name: name.as_bytes().to_vec(),
    }
}

fn replays(t: &T) -> u64 {
    t.mdt.stats().reconstructed.load(Ordering::Relaxed)
}

#[test]
fn a_retried_request_is_answered_from_the_cache_not_applied_again() {
    let t = T::new("replay-basic");
    let first = keyed(&t, 9, 0, 1, mkdir("a")).unwrap();
    // The same request again (its answer "lost"): the same answer, nothing applied.
    assert_eq!(keyed(&t, 9, 0, 1, mkdir("a")).unwrap(), first);
    assert_eq!(replays(&t), 1);
    // A new xid on the tag is a new request: the directory exists now.
    assert_eq!(keyed(&t, 9, 0, 2, mkdir("a")), Err(errno::EEXIST));
    // ... and its answer, an error, is what a retry of it gets.
    assert_eq!(keyed(&t, 9, 0, 2, mkdir("a")), Err(errno::EEXIST));
    // Other clients and tags have their own rows; without a key nothing is cached.
    assert_eq!(keyed(&t, 10, 0, 1, mkdir("a")), Err(errno::EEXIST));
    keyed(&t, 9, 1, 1, mkdir("b")).unwrap();
    assert_eq!(t.call(mkdir("b")), Err(errno::EEXIST));

    t.create(ROOT_INO, "f");
    assert_eq!(keyed(&t, 9, 1, 2, unlink("f")).unwrap(), Reply::Done);
    // Applied twice, an unlink would answer ENOENT: the retry gets Done.
    assert_eq!(keyed(&t, 9, 1, 2, unlink("f")).unwrap(), Reply::Done);
    assert_eq!(t.call(unlink("f")), Err(errno::ENOENT));
    assert_eq!(replays(&t), 3);
    // Reads are never cached (and never need to be).
    let look = Request::Lookup {
        parent: ROOT_INO,
        name: b"a".to_vec(),
    };
    keyed(&t, 9, 2, 1, look.clone()).unwrap();
    keyed(&t, 9, 2, 1, look).unwrap();
    assert_eq!(replays(&t), 3);
}

#[test]
fn the_reply_cache_survives_a_restart() {
    let dir = fresh_dir("replay-restart");
    let t = T::open(config(&dir, SyncMode::Sync));
    let made = keyed(&t, 5, 3, 77, mkdir("d")).unwrap();
    let T { mdt, sub } = t;
    drop(sub);
    mdt.shutdown().unwrap();
    let t = T::open(config(&dir, SyncMode::Sync));
    assert_eq!(keyed(&t, 5, 3, 77, mkdir("d")).unwrap(), made);
    assert_eq!(replays(&t), 1);
    assert_eq!(keyed(&t, 5, 3, 78, mkdir("d")), Err(errno::EEXIST));
}

#[test]
fn retried_size_reports_setattrs_and_closes_are_answered_not_applied() {
    use nacre_proto::meta::{set, SetAttr, O_RDWR};
    let dir = fresh_dir("replay-size-close");
    let t = T::open(config(&dir, SyncMode::Sync));
    let f = t.create(ROOT_INO, "f");
    let report = Request::ReportSize {
        ino: f.ino,
        size: 1 << 20,
    };
    keyed(&t, 4, 0, 1, report.clone()).unwrap();
    // A later truncate by another client...
    let truncate = |size| Request::Setattr {
        ino: f.ino,
        attr: SetAttr {
            mask: set::SIZE,
            size,
            ..SetAttr::default()
        },
    };
    t.call(truncate(100)).unwrap();
    // ... is not undone by the first report's retry (its answer was lost).
    keyed(&t, 4, 0, 1, report).unwrap();
    assert_eq!(t.getattr(f.ino).unwrap().size, 100);
    // Nor a retried truncate by a later writer's report.
    keyed(&t, 4, 1, 1, truncate(10)).unwrap();
    t.call(Request::ReportSize {
        ino: f.ino,
        size: 5000,
    })
    .unwrap();
    keyed(&t, 4, 1, 1, truncate(10)).unwrap();
    assert_eq!(t.getattr(f.ino).unwrap().size, 5000);
    assert_eq!(replays(&t), 2);

    // A close retried across a restart is answered from the cache; a handle of the
    // earlier run names no open of the new one (EBADF), even where its number would.
    let open = || match t_open(&t, f.ino, O_RDWR) {
        Reply::Opened { handle, .. } => handle,
        other => panic!("{other:?}"),
    };
    let (h1, h2) = (open(), open());
    let close = |h| Request::Close {
        ino: f.ino,
        handle: h,
    };
    keyed(&t, 4, 2, 1, close(h1)).unwrap();
    let T { mdt, sub } = t;
    drop(sub);
    mdt.shutdown().unwrap();
    let mut cfg = config(&dir, SyncMode::Sync);
    cfg.epoch = EPOCH + 1;
    let t = T::open(cfg);
    let head = |xid| Head {
        creds: Creds::root(),
        epoch: EPOCH + 1,
        replay: Some(ReplayKey {
            client: 4,
            tag: 2,
            xid,
        }),
    };
    assert_eq!(t.sub.call(&head(1), close(h1)), Ok(Reply::Done));
    let h3 = match t.sub.call(
        &Head {
            epoch: EPOCH + 1,
            ..Head::default()
        },
        Request::Open {
            ino: f.ino,
            flags: O_RDWR,
        },
    ) {
        Ok(Reply::Opened { handle, .. }) => handle,
        other => panic!("{other:?}"),
    };
    assert!(
        h3 != h1 && h3 != h2,
        "handles {h1} {h2} of the old run, {h3} now"
    );
    assert_eq!(t.sub.call(&head(2), close(h2)), Err(errno::EBADF));
}

fn t_open(t: &T, ino: u64, flags: u32) -> Reply {
    t.call(Request::Open { ino, flags }).unwrap()
}

/// Open replay: after a restart the MDS takes back the handles clients name again
/// (a retry too), refuses handles it cannot have given, and in its recovery window
/// keeps every file that loses its last link; closing the window destroys the
/// orphans nobody took back, and a replayed open keeps its file to its last close.
#[test]
fn opens_replayed_after_a_restart_keep_unlinked_files_alive() {
    use nacre_proto::meta::O_RDWR;
    let dir = fresh_dir("mdt-reopen");
    let t = T::open(config(&dir, SyncMode::Sync));
    let (f, g, h) = (
        t.create(ROOT_INO, "f"),
        t.create(ROOT_INO, "g"),
        t.create(ROOT_INO, "h"),
    );
    let handle = |r: Result<Reply, i32>| match r {
        Ok(Reply::Opened { handle, .. }) => handle,
        other => panic!("{other:?}"),
    };
    let hf = handle(t.call(Request::Open {
        ino: f.ino,
        flags: O_RDWR,
    }));
    t.call(unlink("f")).unwrap();
    assert_eq!(t.getattr(f.ino).unwrap().nlink, 0, "open: an orphan");
    let T { mdt, sub } = t;
    drop(sub);
    mdt.shutdown().unwrap();

    let mut cfg = config(&dir, SyncMode::Sync);
    cfg.epoch = EPOCH + 1;
    cfg.recovery = true;
    let t = T::open(cfg);
    let at = |req| {
        let head = Head {
            epoch: EPOCH + 1,
            ..Head::default()
        };
        t.sub.call(&head, req)
    };
    let getattr = |ino| match at(Request::Getattr { ino }) {
        Ok(Reply::Attr(a)) => Ok(a),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    };
    // In the window, a file losing its last link is kept, open or not.
    at(unlink("g")).unwrap();
    assert_eq!(getattr(g.ino).unwrap().nlink, 0);
    // f's opener names its handle again, twice (a retry); a handle this run did not
    // give, another inode's, or a file that is gone is refused.
    let reopen = |ino, handle| {
        at(Request::Reopen {
            ino,
            handle,
            client: 7,
        })
    };
    assert_eq!(reopen(f.ino, hf), Ok(Reply::Done));
    assert_eq!(reopen(f.ino, hf), Ok(Reply::Done));
    assert_eq!(reopen(h.ino, hf), Err(errno::EBADF));
    let hh = handle(at(Request::Open {
        ino: h.ino,
        flags: O_RDWR,
    }));
    assert!(hh > hf);
    assert_eq!(
        reopen(h.ino, hh),
        Ok(Reply::Done),
        "its own handle: a retry"
    );
    assert_eq!(reopen(h.ino, hh + 1), Err(errno::EBADF));
    assert_eq!(reopen(h.ino, 0), Err(errno::EBADF));
    assert_eq!(reopen(1 << 50, hf), Err(errno::ENOENT));
    // The window closes: g, which nobody took back, goes; f stays until its close.
    t.admin(nacre_mds::mdt::Admin::ReclaimOrphans).unwrap();
    assert_eq!(getattr(g.ino), Err(errno::ENOENT));
    assert_eq!(getattr(f.ino).unwrap().nlink, 0);
    let close = |ino, handle| at(Request::Close { ino, handle });
    assert_eq!(close(f.ino, hf), Ok(Reply::Done));
    assert_eq!(getattr(f.ino), Err(errno::ENOENT));
    // After the window, a file nobody holds open goes with its last link.
    assert_eq!(close(h.ino, hh), Ok(Reply::Done));
    at(unlink("h")).unwrap();
    assert_eq!(getattr(h.ino), Err(errno::ENOENT));
}

/// The open lease: the handles of a client the MDS has not heard from (no keyed
/// request, lock request or ping) for the lease are closed, so a killed client's
/// unlinked file goes; a client that pings keeps its files, and handles opened without
/// a client id (the server's own) are never taken.
#[test]
fn a_silent_clients_opens_are_closed_after_the_open_lease() {
    use nacre_mds::mdt::Admin;
    use nacre_proto::meta::O_RDWR;
    use std::time::Duration;
    let dir = fresh_dir("mdt-open-lease");
    let t = T::open(config(&dir, SyncMode::Default));
    let (dead, alive) = (0xdead_u64, 0xa11e_u64);
    let (f, g, h) = (
        t.create(ROOT_INO, "f"),
        t.create(ROOT_INO, "g"),
        t.create(ROOT_INO, "h"),
    );
    let open =
        |client, tag, ino| match keyed(&t, client, tag, 1, Request::Open { ino, flags: O_RDWR }) {
            Ok(Reply::Opened { handle, .. }) => handle,
            other => panic!("{other:?}"),
        };
    let hf = open(dead, 1, f.ino);
    let hg = open(alive, 1, g.ino);
    let hh = match t_open(&t, h.ino, O_RDWR) {
        Reply::Opened { handle, .. } => handle,
        other => panic!("{other:?}"),
    };
    for name in ["f", "g", "h"] {
        t.call(unlink(name)).unwrap();
    }
    let lease = Duration::from_millis(300);
    let evicted = || t.mdt.stats().evicted.load(Ordering::Relaxed);
    // Within the lease nothing goes.
    t.admin(Admin::EvictSilent(lease)).unwrap();
    assert_eq!(evicted(), 0);
    assert_eq!(t.getattr(f.ino).unwrap().nlink, 0, "still open: an orphan");
    // Past it, the client that pinged keeps its file; the silent one's is closed,
    // and as its last close it destroys the unlinked file.
    std::thread::sleep(lease + Duration::from_millis(100));
    assert_eq!(t.call(Request::Ping { client: alive }), Ok(Reply::Done));
    t.admin(Admin::EvictSilent(lease)).unwrap();
    assert_eq!(evicted(), 1);
    assert_eq!(
        t.getattr(f.ino),
        Err(errno::ENOENT),
        "the silent client's file"
    );
    assert_eq!(t.getattr(g.ino).unwrap().nlink, 0, "the live client's file");
    assert_eq!(
        t.getattr(h.ino).unwrap().nlink,
        0,
        "a handle without a client"
    );
    // The evicted client's close finds nothing to close.
    let close = |ino, handle| t.call(Request::Close { ino, handle });
    assert_eq!(close(f.ino, hf), Err(errno::EBADF));
    // Any request under a client's replay key says it lives too.
    std::thread::sleep(lease + Duration::from_millis(100));
    keyed(&t, alive, 2, 1, mkdir("d")).unwrap();
    t.admin(Admin::EvictSilent(lease)).unwrap();
    assert_eq!(evicted(), 1);
    // Silent in turn: its file goes; the handle without a client stays.
    std::thread::sleep(lease + Duration::from_millis(100));
    t.admin(Admin::EvictSilent(lease)).unwrap();
    assert_eq!(evicted(), 2);
    assert_eq!(t.getattr(g.ino), Err(errno::ENOENT));
    assert_eq!(close(g.ino, hg), Err(errno::EBADF));
    assert_eq!(close(h.ino, hh), Ok(Reply::Done));
    assert_eq!(t.getattr(h.ino), Err(errno::ENOENT));
}
