//! The same scenario against a local directory and a real S3 server (`s3s-fs`, which
//! `scripts/deps` installs) on loopback: writes with metadata, ordered listings that
//! resume, ranged reads that notice a replaced object, deletes, and the errors a link
//! must report at once.

use std::time::{Duration, Instant};

use nacre_repo::testing::S3Server;
use nacre_repo::{Access, PosixMeta, RepoError, Repository, PART_SIZE};

/// Fills `buf` as the bytes at `at` of a known pattern (a write's source).
fn pattern(at: u64, buf: &mut [u8]) -> std::io::Result<()> {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = ((at + i as u64) % 251) as u8;
    }
    Ok(())
}

fn scenario(repo: &Repository) {
    repo.check().unwrap();
    let meta = PosixMeta {
        mode: Some(0o100640),
        uid: Some(0),
        gid: Some(0),
        mtime_ns: Some(1_600_000_000_000_000_000),
    };
    let big = PART_SIZE as u64 + 3 * 65536 + 7;
    for (key, size) in [("d/big", big), ("d/e/small", 5), ("a", 0), ("z", 1)] {
        let o = repo.write(key, size, pattern, &meta).unwrap();
        assert_eq!((o.key.as_str(), o.size), (key, size));
        assert_eq!(o.meta, meta, "{key}");
    }
    let all = repo.list_after(None, 100).unwrap();
    let keys: Vec<&str> = all.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    for (i, k) in keys.iter().enumerate() {
        let rest = repo.list_after(Some(k), 100).unwrap();
        assert_eq!(rest.len(), 3 - i, "after {k}");
        let page = repo.list_after(Some(k), 1).unwrap();
        assert_eq!(
            page.first().map(|o| o.key.as_str()),
            keys.get(i + 1).copied()
        );
    }
    // One directory's names, as the automatic import's deletions sweep reads them.
    let names = |d: &str| {
        let mut v: Vec<String> = repo.names_in(d).unwrap().into_iter().collect();
        v.sort();
        v
    };
    assert_eq!(names(""), ["a", "z"]);
    assert_eq!(names("d/"), ["big"]);
    assert_eq!(names("d/e/"), ["small"]);
    assert!(names("nowhere/").is_empty());
    let o = all.iter().find(|o| o.key == "d/big").unwrap();
    let got = repo.read("d/big", big - 10..big, &o.etag).unwrap();
    let mut want = vec![0; 10];
    pattern(big - 10, &mut want).unwrap();
    assert_eq!(&got[..], &want[..]);
    // Replaced: the old tag no longer reads.
    repo.write("d/big", 3, pattern, &meta).unwrap();
    match repo.read("d/big", 0..3, &o.etag) {
        Err(RepoError::Changed { .. }) => {}
        other => panic!("a replaced object read as {other:?}"),
    }
    repo.delete("d/big").unwrap();
    repo.delete("d/big").unwrap();
    assert_eq!(repo.head("d/big").unwrap(), None);
}

#[test]
fn a_local_directory() {
    let d = tempfile::tempdir().unwrap();
    let url = format!("file://{}", d.path().join("repo").display());
    scenario(&Repository::open(&url, &Access::default()).unwrap());
}

#[test]
fn an_s3_server() {
    let d = tempfile::tempdir().unwrap();
    let server = match S3Server::start(d.path()) {
        Ok(s) => s,
        Err(why) => return nacre_fabric::testing::skip(&why),
    };
    let access = |secret: &str| server.access(secret);
    std::fs::create_dir(d.path().join("bucket")).unwrap();
    let repo = Repository::open("s3://bucket/some/prefix", &access(S3Server::SECRET)).unwrap();
    scenario(&repo);

    // The errors a link reports at once.
    let missing = Repository::open("s3://nobucket/p", &access(S3Server::SECRET)).unwrap();
    let e = missing.check().unwrap_err();
    assert!(matches!(e, RepoError::NotFound { .. }), "{e}");
    let wrong = Repository::open("s3://bucket/p", &access("wrong")).unwrap();
    let e = wrong.check().unwrap_err();
    assert!(matches!(e, RepoError::Denied { .. }), "{e}");
    let unreachable = Access {
        endpoint: Some("http://127.0.0.1:1".into()),
        ..access(S3Server::SECRET)
    };
    let gone = Repository::open("s3://bucket/p", &unreachable);
    let started = Instant::now();
    assert!(gone.unwrap().check().is_err());
    assert!(started.elapsed() < Duration::from_secs(60));
}
