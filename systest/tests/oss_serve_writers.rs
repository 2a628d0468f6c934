//! Several clients writing one object through a real `nacre-oss serve` process, over
//! tcp;ofi_rxm and shm: disjoint unaligned ranges that share blocks (the server's
//! read-modify-write of an edge block must never lose a neighbour's bytes) and fully
//! overlapping ranges (every byte ends as some writer's); and a bulk transfer corrupted
//! between the client's checksum and the server's pull, caught and refused.

mod common;

use std::sync::{Arc, Barrier};

use common::process::*;
use nacre_client::objects::{IoOptions, OstRoute};
use nacre_fabric::testing::pattern;
use nacre_fabric::{Access, Memory};
use nacre_proto::object::{Data, IoReply, ObjFlags, ObjTarget, ReadReq, WriteReq};
use nacre_proto::Opcode;

const WRITERS: usize = 4;
/// Rounds of the interleaved pieces: each writer writes ROUNDS small and ROUNDS large.
const ROUNDS: usize = 12;
/// Inline, and not a multiple of any block: neighbours share a block at both ends.
const SMALL: usize = 3001;
/// Bulk (beyond the inline limit), with unaligned edges.
const LARGE: usize = 300_007;

/// Piece `j` of writer `w` in a region of pieces of `len` bytes starting at `base`:
/// the pieces of all writers interleave, so every boundary is between two writers.
fn piece(base: u64, len: usize, w: usize, j: usize) -> u64 {
    base + ((j * WRITERS + w) * len) as u64
}

fn seed(w: usize, j: usize, len: usize) -> u64 {
    (w * 1000 + j) as u64 ^ len as u64
}

/// Runs `body(writer, route)` on WRITERS threads, each with its own client endpoint,
/// started together.
fn together(provider: &str, route: &OstRoute, body: impl Fn(usize, &mut Writer) + Sync) {
    let start = Arc::new(Barrier::new(WRITERS));
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (start, body, route) = (start.clone(), &body, route.clone());
            s.spawn(move || {
                let mut writer = Writer {
                    c: client(provider),
                    route,
                };
                start.wait();
                body(w, &mut writer);
            });
        }
    });
}

struct Writer {
    c: nacre_client::ClientEndpoint,
    route: OstRoute,
}

impl Writer {
    fn write(&mut self, object: u64, offset: u64, data: &[u8]) {
        let n = self
            .c
            .obj_write(&self.route, object, offset, data, IoOptions::default())
            .unwrap_or_else(|e| panic!("write of {} at {offset}: {e}", data.len()));
        assert_eq!(n, data.len());
    }
}

fn read_all(provider: &str, route: &OstRoute, object: u64, len: usize) -> Vec<u8> {
    let mut back = vec![0xeeu8; len + 10];
    let mut c = client(provider);
    let n = c
        .obj_read(route, object, 0, &mut back, IoOptions::default())
        .unwrap();
    assert_eq!(n, len, "object {object} size");
    back.truncate(n);
    back
}

fn concurrent_writers(provider: &str) {
    let name = format!("writers-{}", provider.split(';').next().unwrap());
    let Some(fs) = two_osts(provider, &name, None) else {
        return;
    };
    let route = route(&fs.map, 0);

    // Disjoint: small pieces from offset 5, then large pieces after them, all interleaved.
    let small_base = 5u64;
    let large_base = piece(small_base, SMALL, 0, ROUNDS);
    together(provider, &route, |w, writer| {
        for j in 0..ROUNDS {
            let at = piece(small_base, SMALL, w, j);
            writer.write(1, at, &pattern(seed(w, j, SMALL), SMALL));
            let at = piece(large_base, LARGE, w, j);
            writer.write(1, at, &pattern(seed(w, j, LARGE), LARGE));
        }
    });
    let end = piece(large_base, LARGE, 0, ROUNDS) as usize;
    let mut model = vec![0u8; end];
    for w in 0..WRITERS {
        for j in 0..ROUNDS {
            for (base, len) in [(small_base, SMALL), (large_base, LARGE)] {
                let at = piece(base, len, w, j) as usize;
                model[at..at + len].copy_from_slice(&pattern(seed(w, j, len), len));
            }
        }
    }
    let back = read_all(provider, &route, 1, end);
    if let Some(i) = (0..end).find(|&i| back[i] != model[i]) {
        panic!(
            "{provider}: disjoint writers: byte {i} is {} not {}",
            back[i], model[i]
        );
    }

    // Overlapping: every writer writes the same unaligned range, over and over, filled
    // with its own byte; each byte must end as one writer's, none left unwritten.
    let (at, len) = (123u64, (1 << 20) + 777);
    together(provider, &route, |w, writer| {
        let fill = vec![w as u8 + 1; len];
        for _ in 0..6 {
            writer.write(2, at, &fill);
        }
    });
    let back = read_all(provider, &route, 2, at as usize + len);
    assert!(
        back[..at as usize].iter().all(|&b| b == 0),
        "before the range"
    );
    let stray = back[at as usize..]
        .iter()
        .position(|&b| b == 0 || b as usize > WRITERS);
    assert_eq!(
        stray, None,
        "{provider}: overlapping writers left a stray byte"
    );
    println!(
        "{provider}: {WRITERS} writers, {} disjoint pieces and {} overlapping writes",
        2 * WRITERS * ROUNDS,
        6 * WRITERS
    );
}

#[test]
fn concurrent_writers_to_one_object_on_tcp() {
    concurrent_writers("tcp");
}

#[test]
fn concurrent_writers_to_one_object_on_shm() {
    concurrent_writers("shm");
}

/// A bulk write whose bytes change after the client computed their crc32c (what a
/// corrupting link would do) is refused with EILSEQ and nothing of it lands; a bulk
/// read's reply carries the crc32c of the bytes pushed, so a byte flipped on the way is
/// seen. The checksum is asked for explicitly, so shm (off by default) is covered too.
fn corrupted_bulk(provider: &str) {
    let name = format!("corrupt-{}", provider.split(';').next().unwrap());
    let Some(fs) = two_osts(provider, &name, None) else {
        return;
    };
    let route = route(&fs.map, 1);
    let mut c = client(provider);
    let object = 4u64;
    let sid = c.connect(&route.cores[(object % 2) as usize]).unwrap();
    let len = 3 << 20;
    let good = pattern(9, len);
    c.obj_write(&route, object, 0, &good, IoOptions::default())
        .unwrap();

    let mut mem = Memory::anonymous(len).unwrap();
    let sent = pattern(10, len);
    mem.bytes_mut().copy_from_slice(&sent);
    let crc = crc32c::crc32c(&sent);
    mem.bytes_mut()[len / 2 + 1] ^= 0x10; // after the crc: corrupted in flight
    let mr = c.endpoint().register(mem, Access::ALL).unwrap();
    let target = ObjTarget {
        ost: route.ost,
        flags: ObjFlags::CHECKSUM.with(ObjFlags::BULK),
        epoch: route.epoch,
        object,
        cap: None,
    };
    let req = WriteReq {
        target,
        offset: 4096,
        len: len as u64,
        crc,
        data: Data::Bulk(mr.remote(0, len).unwrap()),
        key: None,
    };
    let mut body = [0u8; 128];
    let n = req.encode(&mut body).unwrap();
    let r = c.request(sid, Opcode::OBJ_WRITE, &body[..n]).unwrap();
    assert_eq!(r.header.status, -libc::EILSEQ, "{provider}: corrupted bulk");
    assert!(
        read_all(provider, &route, object, len) == good,
        "{provider}: nothing of the refused write landed"
    );

    // The read: the reply's crc covers exactly the bytes pushed into our memory.
    let req = ReadReq {
        target,
        offset: 0,
        len: len as u64,
        bulk: Some(mr.remote(0, len).unwrap()),
    };
    let n = req.encode(&mut body).unwrap();
    let r = c.request(sid, Opcode::OBJ_READ, &body[..n]).unwrap();
    assert_eq!(r.header.status, 0);
    let reply = IoReply::decode(&r.body).unwrap();
    assert_eq!(reply.len, len as u64);
    let mut landed = vec![0u8; len];
    mr.copy_out(0, &mut landed).unwrap();
    assert!(landed == good);
    assert_eq!(reply.crc, crc32c::crc32c(&landed), "{provider}: read crc");
    landed[len - 1] ^= 1;
    assert_ne!(reply.crc, crc32c::crc32c(&landed), "a flipped byte is seen");
}

#[test]
fn a_corrupted_bulk_transfer_is_caught_on_tcp() {
    corrupted_bulk("tcp");
}

#[test]
fn a_corrupted_bulk_transfer_is_caught_on_shm() {
    corrupted_bulk("shm");
}
