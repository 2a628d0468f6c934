//! Coherence across clients: once fsync or close returns in one mount, another mount
//! and a library client see the new size and data. Random writes, truncates, fsyncs
//! and reopens on one mount, against a shadow copy in memory, checked through the other
//! mount and the library after every fsync and close; then the other way round.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{tmp, Mount, Up};
use nacre_client::{Client, OpenOptions};
use nacre_fabric::testing::skip;

/// Operations per direction.
const OPS: usize = 1000;
/// Files kept at most this long, written at most this much at a time.
const MAX_SIZE: u64 = 1 << 20;
const MAX_WRITE: u64 = 16 << 10;
const FILES: usize = 2;

/// xorshift64*: reproducible from its seed, which a failure prints.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

fn open_rw(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Reads the whole file through the library (a fresh open, as a new reader would).
fn read_lib(c: &Client, path: &str) -> Vec<u8> {
    let f = c.open(path, &OpenOptions::read()).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = f.read_at(&mut buf, out.len() as u64).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// What the other mount and the library see of file `i`, against `shadow`.
fn check(other: &Mount, c: &Client, i: usize, shadow: &[u8], when: &str, with_stat: bool) {
    let name = format!("coh/f{i}");
    let through_mount = std::fs::read(other.dir.join(&name)).unwrap();
    assert!(
        through_mount == shadow,
        "{when}: the other mount reads {} bytes, the writer wrote {} (first difference at {:?})",
        through_mount.len(),
        shadow.len(),
        through_mount.iter().zip(shadow).position(|(a, b)| a != b)
    );
    let path = format!("/{name}");
    assert_eq!(
        c.stat(&path).unwrap().size,
        shadow.len() as u64,
        "{when}: library stat"
    );
    assert!(read_lib(c, &path) == shadow, "{when}: library read differs");
    if with_stat {
        // Past the attribute timeout of whatever the other mount cached before.
        std::thread::sleep(nacre_mount::ATTR_TTL + Duration::from_millis(100));
        let len = std::fs::metadata(other.dir.join(&name)).unwrap().len();
        assert_eq!(len, shadow.len() as u64, "{when}: stat on the other mount");
    }
}

/// `OPS` random operations on `writer`'s files, checked through `other` and `c`.
fn run(writer: &Mount, other: &Mount, c: &Client, seed: u64) {
    let mut rng = Rng(seed);
    let paths: Vec<PathBuf> = (0..FILES)
        .map(|i| writer.dir.join(format!("coh/f{i}")))
        .collect();
    let mut shadows: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_default())
        .collect();
    let mut files: Vec<std::fs::File> = paths.iter().map(|p| open_rw(p)).collect();
    let mut checks = 0;
    for op in 0..OPS {
        let i = rng.below(FILES as u64) as usize;
        let (f, shadow) = (&mut files[i], &mut shadows[i]);
        let when = format!("seed {seed:#x} op {op} file {i}");
        match rng.below(10) {
            0..=5 => {
                let at = rng.below(MAX_SIZE - MAX_WRITE);
                let len = 1 + rng.below(MAX_WRITE) as usize;
                let data: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
                f.write_all_at(&data, at).unwrap();
                let end = at as usize + len;
                if shadow.len() < end {
                    shadow.resize(end, 0);
                }
                shadow[at as usize..end].copy_from_slice(&data);
            }
            6 => {
                let size = rng.below(MAX_SIZE);
                f.set_len(size).unwrap();
                shadow.resize(size as usize, 0);
            }
            7 | 8 => {
                f.sync_all().unwrap();
                checks += 1;
                check(
                    other,
                    c,
                    i,
                    shadow,
                    &format!("{when} after fsync"),
                    checks % 100 == 0,
                );
            }
            _ => {
                drop(std::mem::replace(f, open_rw(&paths[i])));
                // The old descriptor is closed once the new one is open; close(2) is
                // done when drop returns.
                checks += 1;
                check(other, c, i, shadow, &format!("{when} after close"), false);
            }
        }
    }
    for (i, f) in files.into_iter().enumerate() {
        drop(f);
        check(
            other,
            c,
            i,
            &shadows[i],
            &format!("seed {seed:#x} at the end"),
            true,
        );
    }
}

#[test]
fn what_one_mount_syncs_the_other_and_the_library_see() {
    if !Path::new("/dev/fuse").exists() {
        return skip("coherence across mounts: no /dev/fuse");
    }
    if !common::have("tcp;ofi_rxm", "coherence across mounts") {
        return;
    }
    let work = tmp("coherence");
    let up = Up::start(&work.join("data"), "tcp;ofi_rxm", &[]);
    up.ok(&["mkdir", "/coh"]);
    up.ok(&["setstripe", "-c", "2", "-S", "64k", "/coh"]);
    let m1 = Mount::new(&up, work.join("m1"));
    let m2 = Mount::new(&up, work.join("m2"));
    let c = Client::connect(&up.mgs, common::client_config(&up.mgs)).unwrap();
    run(&m1, &m2, &c, 0x5eed_0001);
    run(&m2, &m1, &c, 0x5eed_0002);
    drop((m1, m2));
    up.stop();
}
