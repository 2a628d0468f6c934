//! The client library against a whole file system from `nacre up` (real processes):
//! striped reads and writes checked against an in-memory model at every stripe
//! boundary, holes, truncation, and one shared file written by several clients and
//! threads (the MPI-IO pattern), read back by each of them; the same through buffered
//! handles (O_BUFFERED), and what other clients see of a buffered handle's writes.

mod common;

use std::sync::Arc;

use common::{tmp, Up};
use nacre_client::{errno, Client, OpenOptions, O_BUFFERED};
use nacre_fabric::testing::pattern;
use nacre_proto::bootstrap::TargetKind;
use nacre_proto::layout::{FirstOst, StripeCount, StripeSpec};

const STRIPE: u32 = 64 * 1024;

fn spec(count: u32, size: u32) -> StripeSpec {
    StripeSpec {
        stripe_size: size,
        count: StripeCount::Count(count),
        first: FirstOst::Any,
        mirrors: 1,
    }
}

/// xorshift: reproducible offsets and lengths.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    /// An offset on, beside or between stripe boundaries of a file of `span` bytes.
    fn offset(&mut self, span: u64) -> u64 {
        let unit = STRIPE as u64;
        match self.below(3) {
            0 => self.below(span),
            1 => (self.below(span / unit) * unit).saturating_sub(self.below(2)),
            _ => self.below(span / unit) * unit + 1,
        }
    }

    fn len(&mut self) -> usize {
        let unit = STRIPE as u64;
        (match self.below(4) {
            0 => 1 + self.below(16),
            1 => unit,
            2 => 1 + self.below(5 * unit),
            _ => unit * 4 + self.below(3) - 1,
        }) as usize
    }
}

const CREATE: i32 = libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC;

/// Random writes, reads and truncations of a 4-stripe file through a handle opened
/// with `flags`, each checked against a Vec<u8> with the same operations applied.
fn matches_the_model(client: &Client, path: &str, flags: i32) {
    let f = client
        .open(
            path,
            &OpenOptions::create().flags(flags).layout(spec(4, STRIPE)),
        )
        .unwrap();
    let mut model: Vec<u8> = Vec::new();
    let mut rng = Rng(0x5eed);
    let span = 24 * STRIPE as u64;
    for op in 0..160u64 {
        match rng.below(10) {
            0..=4 => {
                let (at, data) = (rng.offset(span), pattern(op, rng.len()));
                assert_eq!(f.write_at(&data, at).unwrap(), data.len(), "op {op}");
                let end = at as usize + data.len();
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[at as usize..end].copy_from_slice(&data);
            }
            5..=8 => {
                let (at, len) = (rng.offset(span + STRIPE as u64), rng.len());
                let mut buf = vec![0xEE; len];
                let n = f.read_at(&mut buf, at).unwrap();
                let want = model.get(at as usize..).map_or(0, |t| t.len().min(len));
                assert_eq!(n, want, "op {op}: read of {len} at {at}");
                if n > 0 {
                    let at = at as usize;
                    assert!(buf[..n] == model[at..at + n], "op {op}: bytes");
                }
            }
            _ => {
                let size = rng.offset(span);
                f.set_len(size).unwrap();
                model.resize(size as usize, 0);
            }
        }
    }
    assert_eq!(f.stat().unwrap().size, model.len() as u64);
    f.close().unwrap();
    // A fresh open (another handle, the size from the MDS) sees the same bytes.
    let g = client.open(path, &OpenOptions::read()).unwrap();
    let mut all = vec![0; model.len() + 100];
    assert_eq!(g.read_at(&mut all, 0).unwrap(), model.len());
    assert!(all[..model.len()] == model[..]);
}

/// Reads `len` bytes at 0 in pieces of `piece`, in order.
fn read_in_pieces(f: &nacre_client::File, len: usize, piece: usize) -> Vec<u8> {
    let mut got = vec![0; len];
    for (i, chunk) in got.chunks_mut(piece).enumerate() {
        let n = f.read_at(chunk, (i * piece) as u64).unwrap();
        assert_eq!(n, chunk.len(), "piece {i}");
    }
    got
}

/// What a buffered handle's writes look like from its own reads and from other
/// clients: gathered 47008-byte writes read back in order by the writer, by another
/// client after fsync, and after a drop; a buffered reader sees another client's
/// synced overwrite once it syncs itself; a truncate drops gathered bytes past it.
fn buffered_handles(mgs: &str, client: &Client) {
    let other = Client::connect(mgs, common::client_config(mgs)).unwrap();
    let buffered = OpenOptions::create()
        .flags(CREATE | O_BUFFERED)
        .layout(spec(2, 1 << 20));
    let want = pattern(47, 3 * (1 << 20) + 12345);
    let w = client.open("/buffered", &buffered).unwrap();
    for (i, piece) in want.chunks(47008).enumerate() {
        w.write_at(piece, (i * 47008) as u64).unwrap();
    }
    assert!(
        read_in_pieces(&w, want.len(), 47008) == want,
        "the writer's own reads"
    );
    w.fsync().unwrap();
    assert_eq!(other.stat("/buffered").unwrap().size, want.len() as u64);
    let plain = other.open("/buffered", &OpenOptions::read()).unwrap();
    assert!(
        read_in_pieces(&plain, want.len(), 1 << 20) == want,
        "after fsync"
    );

    // Gathered bytes go out when the handle is dropped.
    w.write_at(b"appended", want.len() as u64).unwrap();
    drop(w);
    let mut tail = [0u8; 8];
    assert_eq!(plain.read_at(&mut tail, want.len() as u64).unwrap(), 8);
    assert_eq!(&tail, b"appended");

    // A buffered reader and another client's overwrite, synced.
    let r = client
        .open(
            "/buffered",
            &OpenOptions::read().flags(libc::O_RDONLY | O_BUFFERED),
        )
        .unwrap();
    assert!(read_in_pieces(&r, 100_000, 1000)[..] == want[..100_000]);
    let ow = other
        .open("/buffered", &OpenOptions::read().flags(libc::O_RDWR))
        .unwrap();
    ow.write_at(&[0xAB; 4096], 50_000).unwrap();
    ow.fsync().unwrap();
    r.fsync().unwrap();
    let mut got = [0u8; 4096];
    assert_eq!(r.read_at(&mut got, 50_000).unwrap(), 4096);
    assert_eq!(got, [0xAB; 4096], "a buffered reader after its fsync");

    // Gathered bytes past a truncate are dropped; those before it stay.
    let t = client
        .open(
            "/buffered",
            &OpenOptions::read().flags(libc::O_RDWR | O_BUFFERED),
        )
        .unwrap();
    t.write_at(&[0xCD; 3000], 10_000).unwrap();
    t.set_len(11_000).unwrap();
    t.close().unwrap();
    let fresh = other.open("/buffered", &OpenOptions::read()).unwrap();
    let mut all = vec![0u8; 20_000];
    assert_eq!(fresh.read_at(&mut all, 0).unwrap(), 11_000);
    assert!(all[10_000..11_000].iter().all(|&b| b == 0xCD));
}

/// A write far past the end leaves a hole that reads as zeros, in objects never written.
fn holes_read_as_zeros(client: &Client) {
    let f = client
        .open("/sparse", &OpenOptions::create().layout(spec(4, STRIPE)))
        .unwrap();
    let far = 40 * STRIPE as u64 + 17;
    f.write_at(b"tail", far).unwrap();
    f.fsync().unwrap();
    assert_eq!(client.stat("/sparse").unwrap().size, far + 4);
    let mut buf = vec![0xAA; far as usize + 10];
    assert_eq!(f.read_at(&mut buf, 0).unwrap(), far as usize + 4);
    assert!(buf[..far as usize].iter().all(|&b| b == 0), "hole is zeros");
    assert_eq!(&buf[far as usize..far as usize + 4], b"tail");
    // Reads at or past the end return nothing; writes to a read-only handle fail.
    assert_eq!(f.read_at(&mut buf, far + 4).unwrap(), 0);
    let ro = client.open("/sparse", &OpenOptions::read()).unwrap();
    assert_eq!(errno(&ro.write_at(b"x", 0).unwrap_err()), libc::EBADF);
}

/// O_TRUNC empties the objects of a file that was there (what was past the new end does
/// not come back when the file grows again), and a create with O_TRUNC makes a new file.
fn truncating_opens(client: &Client) {
    let opts = OpenOptions::create().flags(CREATE).layout(spec(4, STRIPE));
    let f = client.open("/trunc", &opts).unwrap();
    assert!(f.created());
    f.write_at(&vec![0xEE; 3 * STRIPE as usize], 0).unwrap();
    drop(f);
    let f = client.open("/trunc", &opts).unwrap();
    assert!(!f.created());
    assert_eq!(f.attr().size, 0);
    f.write_at(b"x", 0).unwrap();
    f.set_len(3 * STRIPE as u64).unwrap();
    let mut all = vec![0xAA; 3 * STRIPE as usize];
    assert_eq!(f.read_at(&mut all, 0).unwrap(), all.len());
    assert_eq!(all[0], b'x');
    assert!(
        all[1..].iter().all(|&b| b == 0),
        "O_TRUNC left old data in the objects"
    );
}

/// `clients` clients, each with `threads` threads, write interleaved disjoint blocks of
/// one file (block i by writer i % writers); then every client reads it all back.
fn shared_file(mgs: &str, clients: usize, threads: usize, block: usize, blocks: usize, flags: i32) {
    let path = format!("/shared-{block}-{flags:x}");
    let first = Client::connect(mgs, common::client_config(mgs)).unwrap();
    first
        .open(&path, &OpenOptions::create().layout(spec(4, 1 << 20)))
        .unwrap()
        .close()
        .unwrap();
    let writers = clients * threads;
    let want: Arc<Vec<u8>> = Arc::new(pattern(block as u64, block * blocks));
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (mgs, path, want) = (mgs.to_string(), path.clone(), want.clone());
            std::thread::spawn(move || {
                let client = Client::connect(&mgs, common::client_config(&mgs)).unwrap();
                let rw = OpenOptions::read().flags(libc::O_RDWR | flags);
                let file = Arc::new(client.open(&path, &rw).unwrap());
                std::thread::scope(|s| {
                    for t in 0..threads {
                        let (file, want) = (file.clone(), want.clone());
                        s.spawn(move || {
                            let me = c * threads + t;
                            for i in (me..blocks).step_by(writers) {
                                let at = i * block;
                                let n = file.write_at(&want[at..at + block], at as u64).unwrap();
                                assert_eq!(n, block);
                            }
                        });
                    }
                });
                file.fsync().unwrap();
                (client, file)
            })
        })
        .collect();
    let clients: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, (client, file)) in clients.iter().enumerate() {
        assert_eq!(client.stat(&path).unwrap().size, want.len() as u64);
        let mut got = vec![0; want.len()];
        assert_eq!(file.read_at(&mut got, 0).unwrap(), want.len());
        assert!(got == *want, "client {i} reads what all wrote");
    }
}

/// statfs, one MDS request, gives what `df` finds by asking every target: the MDT's
/// inodes and the bytes of all four OSTs (free space from the OSTs' last heartbeats).
fn statfs_adds_up_the_osts(client: &Client) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let st = client.statfs().unwrap();
        let df = client.df().unwrap();
        let osts: Vec<_> = df.iter().filter(|t| t.kind == TargetKind::Ost).collect();
        let mdt = df.iter().find(|t| t.kind == TargetKind::Mdt).unwrap();
        let total: u64 = osts.iter().map(|t| t.total).sum();
        let free: u64 = osts.iter().map(|t| t.free).sum();
        assert_eq!(osts.len(), 4);
        assert_eq!((st.files_total, st.name_max), (mdt.total, 255));
        // Until every OST has renewed its lease once, the map may lack its space.
        if st.bytes_total == total && st.bytes_free.abs_diff(free) < total / 100 {
            assert!(st.bytes_free <= st.bytes_total);
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "statfs {st:?} never matched df {df:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn striped_io(provider: &str) {
    if !common::have(provider, "striped client I/O") {
        return;
    }
    let name = provider.split(';').next().unwrap();
    let up = Up::start(&tmp(&format!("io-{name}")), provider, &[]);
    let client = Client::connect(&up.mgs, common::client_config(&up.mgs)).unwrap();
    matches_the_model(&client, "/model", CREATE);
    matches_the_model(&client, "/model-buffered", CREATE | O_BUFFERED);
    holes_read_as_zeros(&client);
    truncating_opens(&client);
    statfs_adds_up_the_osts(&client);
    buffered_handles(&up.mgs, &client);
    shared_file(&up.mgs, 3, 2, 47008, 96, 0);
    shared_file(&up.mgs, 3, 2, 47008, 96, O_BUFFERED);
    shared_file(&up.mgs, 2, 2, 1 << 20, 12, 0);
    up.stop();
}

#[test]
fn striped_io_on_tcp() {
    striped_io("tcp;ofi_rxm");
}

#[test]
fn striped_io_on_shm() {
    striped_io("shm");
}
