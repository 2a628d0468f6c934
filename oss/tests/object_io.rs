//! Object I/O on real files (ext4 under the target dir), io_uring and pread/pwrite.

mod common;

use common::*;
use nacre_engine::Backend;
use nacre_oss::Errno;

const OFFSETS: [u64; 7] = [0, 1, 511, 4095, 4096, 4097, (1 << 20) + 1];
const LENS: [usize; 8] = [
    1,
    511,
    4095,
    4096,
    4097,
    8192,
    (1 << 20) + 1,
    (2 << 20) + 4097,
];

fn name(b: Backend, what: &str) -> String {
    format!("{what}-{b:?}")
}

#[test]
fn every_alignment_class_round_trips() {
    for b in BACKENDS {
        let mut h = Harness::new(&name(b, "align"), b);
        let mut obj = 1;
        for &off in &OFFSETS {
            for &len in &LENS {
                // Over old data (so edges must keep it) and into a fresh object.
                let mut model = Model::default();
                let old = pattern(obj * 7, off as usize + len + 5000);
                h.write(obj, 0, &old).unwrap();
                model.write(0, &old);
                let data = pattern(obj, len);
                assert_eq!(h.write(obj, off, &data), Ok(len), "off {off} len {len}");
                model.write(off, &data);
                let all = h.read(obj, 0, model.0.len() + 10).unwrap();
                assert!(all == model.0, "{b:?} off {off} len {len}: content differs");
                let part = h.read(obj, off, len).unwrap();
                assert!(part == data, "{b:?} read back at off {off} len {len}");
                let fresh = obj + 10_000;
                h.write(fresh, off, &data).unwrap();
                let mut m2 = Model::default();
                m2.write(off, &data);
                assert!(h.read(fresh, 0, m2.0.len() + 4096).unwrap() == m2.0);
                assert_eq!(h.store.getattr(fresh).unwrap().size, off + len as u64);
                obj += 1;
            }
        }
        h.assert_pool_full();
    }
}

#[test]
fn randomized_against_a_model() {
    for b in BACKENDS {
        let mut h = Harness::new(&name(b, "model"), b);
        let mut rng = Rng(0x5eed_0000 + b as u64);
        let mut models = vec![Model::default(); 4];
        for step in 0..400 {
            let o = rng.below(models.len() as u64) as usize;
            let obj = o as u64 + 1;
            let m = &mut models[o];
            let off = rng.below(3 << 20);
            let len = match rng.below(4) {
                0 => rng.below(64) as usize,
                1 => rng.below(9000) as usize,
                _ => rng.below(300_000) as usize,
            };
            match rng.below(10) {
                0..=4 => {
                    let data = pattern(step, len);
                    assert_eq!(h.write(obj, off, &data), Ok(len));
                    m.write(off, &data);
                }
                5..=6 => {
                    let got = h.read(obj, off, len);
                    if m.0.is_empty() && got == Err(Errno::ENOENT) {
                        continue; // never written: no object yet
                    }
                    assert!(got.unwrap() == m.read(off, len), "step {step} read");
                }
                7 => {
                    let size = rng.below(3 << 20);
                    match h.truncate(obj, size) {
                        Err(Errno::ENOENT) if m.0.is_empty() => continue,
                        r => assert_eq!(r, Ok(0)),
                    }
                    m.truncate(size);
                }
                8 => match h.punch(obj, off, len as u64) {
                    Err(Errno::ENOENT) if m.0.is_empty() => continue,
                    r => {
                        assert_eq!(r, Ok(0));
                        m.punch(off, len as u64);
                    }
                },
                _ => {
                    if !m.0.is_empty() {
                        assert_eq!(h.store.getattr(obj).unwrap().size, m.0.len() as u64);
                    }
                }
            }
        }
        h.assert_pool_full();
        // A fresh store (objects reopened from disk) sees the same sizes and bytes.
        let dir = h.dir.clone();
        drop(h);
        let mut h = Harness::open(&dir, b, 16);
        for (o, m) in models.iter().enumerate() {
            if m.0.is_empty() {
                continue;
            }
            let obj = o as u64 + 1;
            assert_eq!(
                h.store.getattr(obj).unwrap().size,
                m.0.len() as u64,
                "obj {obj}"
            );
            assert!(
                h.read(obj, 0, m.0.len() + 1).unwrap() == m.0,
                "obj {obj} after reopen"
            );
        }
    }
}

#[test]
fn holes_read_as_zeros_and_reads_past_the_end_are_short() {
    for b in BACKENDS {
        let mut h = Harness::new(&name(b, "holes"), b);
        let data = pattern(9, 10);
        let at = (4 << 20) + 5;
        h.write(1, at, &data).unwrap();
        let attr = h.store.getattr(1).unwrap();
        assert_eq!(attr.size, at + 10);
        assert!(attr.blocks <= 64, "sparse: {} blocks", attr.blocks);
        let got = h.read(1, (1 << 20) - 3, 8 << 20).unwrap();
        assert_eq!(got.len() as u64, at + 10 - ((1 << 20) - 3));
        assert!(got[..got.len() - 10].iter().all(|&x| x == 0));
        assert_eq!(&got[got.len() - 10..], &data[..]);
        assert_eq!(h.read(1, at + 10, 100).unwrap().len(), 0);
        assert_eq!(h.read(1, at + 5000, 100).unwrap().len(), 0);
        assert_eq!(h.read(2, 0, 100), Err(Errno::ENOENT));
        assert_eq!(h.read(0, 0, 100), Err(Errno::ENOENT));
        assert_eq!(h.store.getattr(2), Err(Errno::ENOENT));
        // Punch in the middle of data: zeros there, size unchanged.
        let d2 = pattern(10, 3 << 20);
        h.write(3, 0, &d2).unwrap();
        h.punch(3, 100, 2 << 20).unwrap();
        let got = h.read(3, 0, 4 << 20).unwrap();
        assert_eq!(got.len(), 3 << 20);
        assert!(got[100..100 + (2 << 20)].iter().all(|&x| x == 0));
        assert_eq!(&got[..100], &d2[..100]);
        assert_eq!(&got[100 + (2 << 20)..], &d2[100 + (2 << 20)..]);
        // Truncate down then extend: the cut part reads back as zeros.
        h.truncate(3, 5).unwrap();
        h.truncate(3, 9000).unwrap();
        let got = h.read(3, 0, 10_000).unwrap();
        assert_eq!(got.len(), 9000);
        assert_eq!(&got[..5], &d2[..5]);
        assert!(got[5..].iter().all(|&x| x == 0));
        // Destroy: gone, and a second destroy says so.
        assert_eq!(h.destroy(3), Ok(0));
        assert_eq!(h.read(3, 0, 10), Err(Errno::ENOENT));
        assert_eq!(h.destroy(3), Err(Errno::ENOENT));
        assert_eq!(h.sync(1), Ok(0));
        assert_eq!(h.write_sync(1, 3, b"abc"), Ok(3));
        let st = h.store.statfs().unwrap();
        assert!(st.bytes_total > 0 && st.bytes_avail <= st.bytes_total);
        h.assert_pool_full();
    }
}

#[test]
fn concurrent_writers_to_one_object() {
    for b in BACKENDS {
        let mut h = Harness::new(&name(b, "concurrent"), b);
        h.write(1, 0, &pattern(1, 200_000)).unwrap();
        let mut model = Model::default();
        model.write(0, &pattern(1, 200_000));
        // Neighbours that share edge blocks but not bytes: every one must land (a lost
        // read-modify-write would undo a neighbour).
        let mut tags = Vec::new();
        for i in 0..40u64 {
            let off = 3 + i * 1000;
            let data = pattern(100 + i, 1000);
            model.write(off, &data);
            tags.push(h.submit_write(1, off, &data));
        }
        // Overlapping pairs, submitted together: the result is one of the serial orders.
        let pairs: Vec<(u64, usize, u64, usize)> = vec![
            (100_000, 10_000, 105_000, 10_000),
            (130_001, 1, 130_001, 4095),
            (150_000, 8192, 150_100, 50),
        ];
        for (i, &(o1, l1, o2, l2)) in pairs.iter().enumerate() {
            h.submit_write(1, o1, &pattern(500 + i as u64, l1));
            h.submit_write(1, o2, &pattern(600 + i as u64, l2));
        }
        let done = h.drain();
        assert_eq!(done.len(), 40 + 2 * pairs.len());
        for c in done {
            let len_ok = c.result.is_ok();
            assert!(len_ok, "{:?}", c.result);
            let _ = h.give_back(c);
        }
        let got = h.read(1, 0, 200_000).unwrap();
        for (i, &(o1, l1, o2, l2)) in pairs.iter().enumerate() {
            let (a, bb) = (pattern(500 + i as u64, l1), pattern(600 + i as u64, l2));
            let mut first_a = model.clone();
            first_a.write(o1, &a);
            first_a.write(o2, &bb);
            let mut first_b = model.clone();
            first_b.write(o2, &bb);
            first_b.write(o1, &a);
            let lo = o1.min(o2) as usize;
            let hi = (o1 + l1 as u64).max(o2 + l2 as u64) as usize;
            assert!(
                got[lo..hi] == first_a.0[lo..hi] || got[lo..hi] == first_b.0[lo..hi],
                "{b:?} pair {i}: not a serial order"
            );
            // Apply the order that happened so later checks compare the rest.
            model = if got[lo..hi] == first_a.0[lo..hi] {
                first_a
            } else {
                first_b
            };
        }
        assert!(
            got == model.0[..200_000],
            "{b:?}: a disjoint write was lost"
        );
        h.assert_pool_full();
    }
}

#[test]
fn an_empty_pool_is_back_pressure() {
    let mut h = Harness::new("backpressure", Backend::IoUring);
    h.write(1, 0, &pattern(3, 100_000)).unwrap();
    let bufs = h.bulk(10, &pattern(4, 50));
    // Hold every other 4 KiB slab: writes with unaligned edges and small reads must wait.
    let mut held = Vec::new();
    while let Some(b) = h.pool.get(4096) {
        held.push(b);
    }
    let t = h.tag();
    h.store
        .write(1, 10, 50, bufs, nacre_oss::WriteMode::Async, t);
    let t2 = h.tag();
    h.store.read(1, 0, 100, t2);
    let mut out = Vec::new();
    for _ in 0..10 {
        let mut io = nacre_oss::Io {
            storage: &mut h.storage,
            pool: &mut h.pool,
        };
        h.store.progress(&mut io);
        h.store.reap(&mut out);
    }
    assert!(out.is_empty(), "nothing can run without slabs");
    assert_eq!(h.store.pending(), 2);
    for b in held {
        h.pool.put(b).unwrap();
    }
    let done = h.drain();
    assert_eq!(done.len(), 2);
    for c in done {
        let read = c.kind == nacre_oss::OpKind::Read;
        let (r, data) = h.give_back(c);
        assert!(r.is_ok());
        if read {
            assert_eq!(&data[10..60], &pattern(4, 50)[..]);
        }
    }
    h.assert_pool_full();
}

#[test]
fn inline_writes_copy_once_and_wait_for_slabs() {
    for b in BACKENDS {
        let mut h = Harness::new(&name(b, "inline"), b);
        let t = h.tag();
        h.store.write_inline(
            &mut h.pool,
            5,
            4090,
            b"hello, world",
            nacre_oss::WriteMode::Sync,
            t,
        );
        assert_eq!(h.one(), Ok(12));
        // No 4 KiB slab free: the payload waits (held in the request) and lands later.
        let mut held = Vec::new();
        while let Some(s) = h.pool.get(4096) {
            held.push(s);
        }
        let t = h.tag();
        h.store
            .write_inline(&mut h.pool, 5, 1, b"abc", nacre_oss::WriteMode::Async, t);
        let mut out = Vec::new();
        let mut io = nacre_oss::Io {
            storage: &mut h.storage,
            pool: &mut h.pool,
        };
        h.store.progress(&mut io);
        h.store.reap(&mut out);
        assert!(out.is_empty());
        for s in held {
            h.pool.put(s).unwrap();
        }
        assert_eq!(h.one(), Ok(3));
        let mut want = vec![0u8; 4102];
        want[1..4].copy_from_slice(b"abc");
        want[4090..].copy_from_slice(b"hello, world");
        assert!(h.read(5, 0, 10_000).unwrap() == want);
        assert_eq!(h.read(5, 5000, 10).unwrap().len(), 0);
        h.assert_pool_full();
    }
}

/// Batches of overlapping writes, punches and truncates submitted together: the store
/// orders conflicting operations by arrival and runs the rest in parallel, so the result
/// equals applying each batch in submission order.
#[test]
fn concurrent_batches_equal_submission_order() {
    for b in BACKENDS {
        let mut h = Harness::new(&name(b, "batches"), b);
        let mut rng = Rng(0xba7c_4000 + b as u64);
        let mut models = vec![Model::default(); 2];
        for round in 0..40u64 {
            for i in 0..24u64 {
                let o = rng.below(2) as usize;
                let obj = o as u64 + 1;
                let off = rng.below(96 << 10);
                let max = if rng.below(3) == 0 { 40_000 } else { 3000 };
                let len = 1 + rng.below(max) as usize;
                let t = h.tag();
                match rng.below(12) {
                    0 if !models[o].0.is_empty() => {
                        let size = rng.below(96 << 10);
                        h.store.truncate(obj, size, t);
                        models[o].truncate(size);
                    }
                    1 if !models[o].0.is_empty() => {
                        h.store.punch(obj, off, len as u64, t);
                        models[o].punch(off, len as u64);
                    }
                    _ => {
                        let data = pattern(round * 100 + i, len);
                        let bufs = h.bulk(off, &data);
                        h.store
                            .write(obj, off, len, bufs, nacre_oss::WriteMode::Async, t);
                        models[o].write(off, &data);
                    }
                }
            }
            for c in h.drain() {
                let kind = c.kind;
                let (r, _) = h.give_back(c);
                assert!(r.is_ok(), "round {round}: {kind:?} {r:?}");
            }
            for (o, m) in models.iter().enumerate() {
                let obj = o as u64 + 1;
                if m.0.is_empty() && h.store.getattr(obj).is_err() {
                    continue;
                }
                let got = h.read(obj, 0, 1 << 20).unwrap();
                assert!(got == m.0, "{b:?} round {round} object {obj} differs");
            }
        }
        h.assert_pool_full();
    }
}

#[test]
fn destroy_fails_what_queued_behind_it_and_slots_are_shared() {
    for b in BACKENDS {
        let mut h = Harness::new(&name(b, "destroy"), b);
        h.write(1, 0, &pattern(1, 9000)).unwrap();
        let w = h.submit_write(1, 10, &pattern(2, 100));
        let t = h.tag();
        h.store.destroy(1, t);
        let r = h.tag();
        h.store.read(1, 0, 100, r);
        let mut results = std::collections::HashMap::new();
        for c in h.drain() {
            let tag = c.tag;
            let (res, _) = h.give_back(c);
            results.insert(tag, res);
        }
        assert_eq!(results[&w], Ok(100), "queued before the destroy: done");
        assert_eq!(results[&t], Ok(0));
        assert_eq!(results[&r], Err(Errno::ENOENT), "queued behind the destroy");
        h.assert_pool_full();

        // Two open-file slots for 6 objects written at once: operations wait for a
        // slot, none fails.
        let dir = h.dir.clone();
        drop(h);
        let mut h = Harness::open(&dir, b, 16);
        h.store = nacre_oss::ObjectStore::open(
            &dir,
            nacre_oss::StoreConfig {
                max_open: 2,
                ..Default::default()
            },
        )
        .unwrap();
        for round in 0..3u64 {
            for obj in 10..16u64 {
                h.submit_write(obj, round * 5000 + 1, &pattern(obj + round, 5000));
            }
        }
        for c in h.drain() {
            assert!(h.give_back(c).0.is_ok());
        }
        for obj in 10..16u64 {
            let got = h.read(obj, 0, 20_000).unwrap();
            assert_eq!(got.len(), 15_001);
            for round in 0..3u64 {
                let at = (round * 5000 + 1) as usize;
                assert!(got[at..at + 5000] == pattern(obj + round, 5000)[..]);
            }
        }
        h.assert_pool_full();
    }
}

#[test]
fn listing_walks_every_object_once_with_its_size() {
    let b = BACKENDS[0];
    let mut h = Harness::new(&name(b, "list"), b);
    let ids: Vec<u64> = (1..=300).chain([u64::MAX - 1]).collect();
    for &id in &ids {
        h.write(id, id % 5000, b"x").unwrap();
    }
    // Not an object: left out.
    let stray = h.dir.join("O").join("00").join("notes.txt");
    std::fs::write(&stray, b"not an object").unwrap();
    let mut seen = Vec::new();
    for dir in 0..=255u8 {
        let mut after = 0;
        loop {
            let (page, eof) = h.store.list(dir, after, 2).unwrap();
            assert!(page.len() <= 2);
            for o in &page {
                assert_eq!(nacre_oss::layout::bucket(o.oid), dir);
                assert_eq!(o.size, o.oid % 5000 + 1, "object {}", o.oid);
                assert!(o.oid > after);
                after = o.oid;
                seen.push(o.oid);
            }
            if eof {
                break;
            }
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, ids);
    // Destroyed objects are gone from the listing.
    h.store.destroy(7, 1);
    h.drain();
    let dir = nacre_oss::layout::bucket(7);
    let (page, _) = h.store.list(dir, 0, 1000).unwrap();
    assert!(page.iter().all(|o| o.oid != 7));
}

#[test]
fn no_change_reaches_the_disk_once_the_lease_lapsed() {
    use nacre_mgs::role::ServingEpoch;
    let b = BACKENDS[0];
    let mut h = Harness::new(&name(b, "fence"), b);
    let serving = ServingEpoch::new(3);
    h.store.set_fence(serving.clone());
    let first = pattern(1, 10_000);
    h.write(1, 0, &first).unwrap();
    // The lease lapses (a stopped server resumed, or the keeper lost it): writes,
    // punches, truncates and destroys queued from now on fail before their I/O.
    serving.serve_until(std::time::Duration::ZERO);
    assert_eq!(h.write(1, 0, &pattern(2, 10_000)), Err(Errno::ESTALE));
    assert_eq!(h.write(2, 0, b"new"), Err(Errno::ESTALE));
    let tag = h.tag();
    h.store.truncate(1, 5, tag);
    assert_eq!(h.one(), Err(Errno::ESTALE));
    let tag = h.tag();
    h.store.destroy(1, tag);
    assert_eq!(h.one(), Err(Errno::ESTALE));
    // Nothing changed: the old bytes read back (reads are the service's to refuse).
    assert_eq!(h.read(1, 0, 10_000).unwrap(), first);
    assert_eq!(h.store.getattr(2), Err(Errno::ENOENT));
    // Served again under a new epoch (the role re-granted): writes land again.
    serving.set(4);
    serving.serve_until(std::time::Duration::from_secs(60));
    h.write(1, 0, b"again").unwrap();
    assert_eq!(&h.read(1, 0, 5).unwrap()[..], b"again");
}
