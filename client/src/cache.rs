//! Write-behind and read-ahead for a buffered handle ([`crate::O_BUFFERED`]).
//!
//! A handle that moves small pieces (IOR's 47008-byte transfers, a `cp` with a small
//! buffer, a log appender) pays a whole round trip, and at the OSS a read-modify-write
//! of its unaligned edge blocks, for every piece. A buffered handle gathers its writes
//! into a window of [`WINDOW`] bytes aligned on the file, and sends what the window
//! holds (one range, or up to [`MAX_RANGES`] disjoint ones for a strided writer) in
//! one parallel batch when a write lands in another window or the window's end is
//! written. It reads a whole aligned window ahead when a read starts where the last
//! one ended or less than a window further on (a stream, or a stride), and serves
//! the pieces from memory. Transfers of a window or more go straight through.
//!
//! What it trades, as MPI-IO's default (non-atomic) mode does: writes reach the
//! servers, and other clients, at the latest when the handle is synced, closed or
//! dropped, or when it reads; read-ahead may serve bytes another client overwrote
//! after they were read, until this handle's next fsync. A write that fails on its
//! way out is reported by the call that sent it (a later write, a read, fsync or
//! close), and its bytes are dropped, as the kernel's write-back reports errors.

use std::io;
use std::ops::Range;

use nacre_fabric::Memory;

/// Bytes gathered before a write goes out, and read ahead at once: one stripe of
/// the default layout, so a window is aligned requests to one object.
pub const WINDOW: usize = 1 << 20;

/// Disjoint ranges a window gathers before it is sent anyway: a strided writer's
/// pieces of one window, each one request at the OSS.
pub const MAX_RANGES: usize = 64;

/// The direct path under the cache: one handle's reads and writes at the servers.
pub trait Backing {
    /// Writes `ranges` of `window`, which holds the file's bytes from `base`, in
    /// parallel.
    fn write_ranges(&self, window: &[u8], base: u64, ranges: &[Range<usize>]) -> io::Result<()>;
    fn write_direct(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.write_ranges(data, offset, std::slice::from_ref(&(0..data.len())))
    }
    /// Short only at the end of the file.
    fn read_direct(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

/// The buffers of one handle: allocated at the first buffered transfer.
#[derive(Default)]
pub struct Cache {
    /// One mapping: the write window, then the read-ahead window.
    mem: Option<Memory>,
    dirty: Dirty,
    ahead: Ahead,
}

/// The `ranges` (sorted, disjoint, not touching) of the window at `base` hold writes
/// not sent yet.
#[derive(Default)]
struct Dirty {
    base: u64,
    ranges: Vec<Range<usize>>,
}

impl Dirty {
    /// Whether a write of `pos..end` of the window at `base` can be gathered here.
    fn takes(&self, base: u64, pos: usize, end: usize) -> bool {
        if self.ranges.is_empty() {
            return true;
        }
        let touches = |r: &Range<usize>| pos <= r.end && end >= r.start;
        base == self.base && (self.ranges.len() < MAX_RANGES || self.ranges.iter().any(touches))
    }

    /// Adds `pos..end`, merging the ranges it overlaps or touches.
    fn add(&mut self, base: u64, pos: usize, end: usize) {
        self.base = base;
        let first = self.ranges.partition_point(|r| r.end < pos);
        let last = self.ranges.partition_point(|r| r.start <= end);
        let mut merged = pos..end;
        if first < last {
            merged.start = merged.start.min(self.ranges[first].start);
            merged.end = merged.end.max(self.ranges[last - 1].end);
        }
        self.ranges.splice(first..last, std::iter::once(merged));
    }

    /// Whether the last range reaches the window's end: a stream moved on.
    fn at_end(&self) -> bool {
        self.ranges.last().is_some_and(|r| r.end == WINDOW)
    }

    /// Drops what lies at or past `keep` bytes of the window.
    fn cut(&mut self, keep: usize) {
        self.ranges.retain_mut(|r| {
            r.end = r.end.min(keep);
            r.start < r.end
        });
    }
}

/// The first `len` bytes of the read-ahead window at `base` are the file's (`len`
/// short of a window at the end of the file); `next` is where the last read ended.
#[derive(Default, Clone, Copy)]
struct Ahead {
    base: u64,
    len: usize,
    next: u64,
}

impl Ahead {
    fn holds(&self, at: u64) -> bool {
        at >= self.base && at < self.base + self.len as u64
    }

    /// Forgets the window if it overlaps `offset..offset + len`.
    fn forget_range(&mut self, offset: u64, len: usize) {
        if self.len > 0 && offset < self.base + self.len as u64 && offset + len as u64 > self.base {
            self.len = 0;
        }
    }

    /// Whether a read at `offset` continues the last one: at its end, or less than
    /// a window past it.
    fn continued_by(&self, offset: u64) -> bool {
        offset >= self.next && offset - self.next < WINDOW as u64
    }
}

fn window_of(at: u64) -> u64 {
    at & !(WINDOW as u64 - 1)
}

impl Cache {
    /// The write window and the read-ahead window.
    fn windows(&mut self) -> io::Result<(&mut [u8], &mut [u8])> {
        if self.mem.is_none() {
            let mem = Memory::anonymous_huge(2 * WINDOW)
                .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e.to_string()))?;
            self.mem = Some(mem);
        }
        let bytes = self.mem.as_mut().expect("just mapped").bytes_mut();
        let (w, rest) = bytes.split_at_mut(WINDOW);
        Ok((w, &mut rest[..WINDOW]))
    }

    /// Writes `data` at `offset`: gathered in the window it falls in; the window is
    /// sent when a write lands in another one or its end is written.
    pub fn write(&mut self, b: &impl Backing, data: &[u8], offset: u64) -> io::Result<()> {
        self.ahead.forget_range(offset, data.len());
        if data.len() >= WINDOW {
            // Already as large as a gathered write: send it as it is, after what
            // came before it.
            self.flush(b)?;
            return b.write_direct(data, offset);
        }
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let (base, pos) = (window_of(at), (at - window_of(at)) as usize);
            let n = (WINDOW - pos).min(data.len() - done);
            if !self.dirty.takes(base, pos, pos + n) {
                self.flush(b)?;
            }
            let (w, _) = self.windows()?;
            w[pos..pos + n].copy_from_slice(&data[done..done + n]);
            self.dirty.add(base, pos, pos + n);
            done += n;
            if self.dirty.at_end() {
                self.flush(b)?;
            }
        }
        Ok(())
    }

    /// Sends the gathered writes. Their bytes are dropped even when sending fails:
    /// the error goes to this caller.
    pub fn flush(&mut self, b: &impl Backing) -> io::Result<()> {
        let d = std::mem::take(&mut self.dirty);
        if d.ranges.is_empty() {
            return Ok(());
        }
        let (w, _) = self.windows()?;
        b.write_ranges(w, d.base, &d.ranges)
    }

    /// Reads into `buf` at `offset` (short only at the end of the file): from the
    /// read-ahead window, filled for a read that continues the last one; other reads
    /// go straight to the servers. Gathered writes are sent first, so a handle reads
    /// what it wrote.
    pub fn read(&mut self, b: &impl Backing, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.flush(b)?;
        if buf.len() >= WINDOW {
            return b.read_direct(buf, offset);
        }
        let continues = self.ahead.continued_by(offset);
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            if self.ahead.holds(at) {
                let pos = (at - self.ahead.base) as usize;
                let n = (self.ahead.len - pos).min(buf.len() - done);
                let (_, r) = self.windows()?;
                buf[done..done + n].copy_from_slice(&r[pos..pos + n]);
                done += n;
                continue;
            }
            // Fill the window at `at` for a read that continues the last one; the
            // rest of anything else (and a read past a short window) goes direct.
            let fill = continues && (done == 0 || at.is_multiple_of(WINDOW as u64));
            if !fill {
                done += b.read_direct(&mut buf[done..], at)?;
                break;
            }
            let base = window_of(at);
            self.ahead.len = 0;
            let (_, r) = self.windows()?;
            self.ahead.len = b.read_direct(r, base)?;
            self.ahead.base = base;
            if !self.ahead.holds(at) {
                break; // the end of the file
            }
        }
        self.ahead.next = offset + done as u64;
        Ok(done)
    }

    /// Drops what was read ahead: after fsync, the handle reads what other clients
    /// synced before it.
    pub fn forget_reads(&mut self) {
        self.ahead.len = 0;
    }

    /// The file was cut to `size`: gathered bytes at or past it are dropped, as the
    /// truncate that came after them would have dropped them.
    pub fn truncated(&mut self, size: u64) {
        self.ahead.len = 0;
        let keep = size.saturating_sub(self.dirty.base).min(WINDOW as u64);
        self.dirty.cut(keep as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A file in memory that counts the requests it gets.
    #[derive(Default)]
    struct Model {
        bytes: RefCell<Vec<u8>>,
        writes: RefCell<usize>,
        batches: RefCell<usize>,
        reads: RefCell<usize>,
        /// The next batch of gathered writes fails with ENOSPC.
        full: RefCell<bool>,
    }

    impl Backing for Model {
        fn write_direct(&self, data: &[u8], offset: u64) -> io::Result<()> {
            *self.writes.borrow_mut() += 1;
            let mut f = self.bytes.borrow_mut();
            let end = offset as usize + data.len();
            if f.len() < end {
                f.resize(end, 0);
            }
            f[offset as usize..end].copy_from_slice(data);
            Ok(())
        }
        fn write_ranges(
            &self,
            window: &[u8],
            base: u64,
            ranges: &[Range<usize>],
        ) -> io::Result<()> {
            *self.batches.borrow_mut() += 1;
            if self.full.replace(false) {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            for r in ranges {
                self.write_direct(&window[r.clone()], base + r.start as u64)?;
            }
            Ok(())
        }
        fn read_direct(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            *self.reads.borrow_mut() += 1;
            let f = self.bytes.borrow();
            let start = (offset as usize).min(f.len());
            let n = (f.len() - start).min(buf.len());
            buf[..n].copy_from_slice(&f[start..start + n]);
            Ok(n)
        }
    }

    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        (0..len as u64)
            .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
            .collect()
    }

    #[test]
    fn sequential_small_writes_go_out_a_window_at_a_time() {
        let (m, mut c) = (Model::default(), Cache::default());
        let data = pattern(4 * WINDOW, 1);
        for (i, piece) in data.chunks(47008).enumerate() {
            c.write(&m, piece, (i * 47008) as u64).unwrap();
        }
        assert_eq!(*m.writes.borrow(), 4, "one request per window");
        c.flush(&m).unwrap();
        assert_eq!(*m.bytes.borrow(), data);
    }

    #[test]
    fn sequential_small_reads_come_a_window_at_a_time() {
        let (m, mut c) = (Model::default(), Cache::default());
        let data = pattern(3 * WINDOW + 1000, 2);
        m.write_direct(&data, 0).unwrap();
        let mut got = vec![0u8; data.len()];
        let mut at = 0;
        while at < data.len() {
            let end = (at + 47008).min(data.len());
            let n = c.read(&m, &mut got[at..end], at as u64).unwrap();
            assert_eq!(n, end - at);
            at = end;
        }
        assert_eq!(got, data);
        // The first read goes direct; then one per window (the last one short).
        assert!(*m.reads.borrow() <= 5, "{} reads", m.reads.borrow());
    }

    #[test]
    fn a_strided_writer_and_reader_move_a_window_at_a_time() {
        // Every other 47008-byte piece, as one task of IOR's hard pattern moves.
        let (m, mut c) = (Model::default(), Cache::default());
        let (piece, stride) = (47008usize, 2 * 47008usize);
        let data = pattern(piece, 4);
        let pieces = 4 * WINDOW / stride;
        for i in 0..pieces {
            c.write(&m, &data, (i * stride) as u64).unwrap();
        }
        c.flush(&m).unwrap();
        assert!(*m.batches.borrow() <= 5, "{} batches", m.batches.borrow());
        // One range per piece, two for a piece across a window's edge.
        assert!(
            *m.writes.borrow() <= pieces + 4,
            "{} ranges",
            m.writes.borrow()
        );
        let mut buf = vec![0u8; piece];
        for i in 0..pieces {
            assert_eq!(c.read(&m, &mut buf, (i * stride) as u64).unwrap(), piece);
            assert_eq!(buf, data, "piece {i}");
        }
        assert!(*m.reads.borrow() <= 6, "{} reads", m.reads.borrow());
    }

    #[test]
    fn a_handle_reads_its_own_writes_and_sync_drops_read_ahead() {
        let (m, mut c) = (Model::default(), Cache::default());
        m.write_direct(&pattern(WINDOW, 3), 0).unwrap();
        let mut buf = vec![0u8; 100];
        c.read(&m, &mut buf, 0).unwrap();
        c.read(&m, &mut buf, 100).unwrap(); // in order: the window is read ahead
        c.write(&m, &[7; 100], 200).unwrap();
        c.read(&m, &mut buf, 200).unwrap();
        assert_eq!(buf, vec![7; 100], "the handle's own write");
        // Another client overwrites; after fsync (forget_reads) this handle sees it.
        m.write_direct(&[9; 100], 300).unwrap();
        c.forget_reads();
        c.read(&m, &mut buf, 300).unwrap();
        assert_eq!(buf, vec![9; 100]);
    }

    #[test]
    fn a_failed_send_fails_the_call_that_sent_it_and_drops_its_bytes() {
        let (m, mut c) = (Model::default(), Cache::default());
        c.write(&m, &[1; 100], 0).unwrap();
        *m.full.borrow_mut() = true;
        // The write that moves to another window sends the first one, and fails.
        let e = c.write(&m, &[2; 100], WINDOW as u64).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        // What failed is gone, not sent again; the failed call's own bytes were not
        // taken, and taking them again works.
        c.flush(&m).unwrap();
        assert!(m.bytes.borrow().is_empty(), "nothing landed");
        c.write(&m, &[2; 100], WINDOW as u64).unwrap();
        c.flush(&m).unwrap();
        let f = m.bytes.borrow();
        assert!(
            f[..100].iter().all(|&b| b == 0),
            "the failed bytes never landed"
        );
        assert_eq!(&f[WINDOW..WINDOW + 100], &[2; 100]);
    }

    #[test]
    fn a_window_takes_at_most_max_ranges_disjoint_pieces() {
        let (m, mut c) = (Model::default(), Cache::default());
        for i in 0..=MAX_RANGES {
            c.write(&m, &[3; 10], (i * 100) as u64).unwrap();
        }
        assert_eq!(
            *m.batches.borrow(),
            1,
            "the piece past the limit sent the rest"
        );
        assert_eq!(*m.writes.borrow(), MAX_RANGES);
        // Pieces that touch merge into one range.
        c.write(&m, &[4; 90], (MAX_RANGES * 100 + 10) as u64)
            .unwrap();
        c.flush(&m).unwrap();
        assert_eq!(*m.writes.borrow(), MAX_RANGES + 1);
    }

    #[test]
    fn truncate_drops_gathered_bytes_past_the_new_end() {
        let (m, mut c) = (Model::default(), Cache::default());
        c.write(&m, &[5; 1000], 0).unwrap();
        c.truncated(600);
        c.flush(&m).unwrap();
        assert_eq!(*m.bytes.borrow(), vec![5; 600]);
    }

    #[test]
    fn random_operations_match_a_plain_file() {
        // A small xorshift: a reproducible mix of writes, reads, syncs and cuts.
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % n
        };
        let (m, mut c) = (Model::default(), Cache::default());
        let noise = pattern(2 * WINDOW + 251, 7);
        let mut want: Vec<u8> = Vec::new();
        let mut read_end = 0;
        for round in 0..3000u64 {
            // Half the reads continue the last one, as a streaming reader's do.
            let at = match next(2) {
                0 => read_end,
                _ => next(3 * WINDOW as u64),
            };
            let len = match next(4) {
                0 => next(64) + 1,
                1 => next(70_000) + 1,
                2 => next(2 * WINDOW as u64) + 1,
                _ => 47008,
            } as usize;
            match next(10) {
                0..=4 => {
                    let data = &noise[(round % 251) as usize..][..len];
                    c.write(&m, data, at).unwrap();
                    let end = at as usize + len;
                    if want.len() < end {
                        want.resize(end, 0);
                    }
                    want[at as usize..end].copy_from_slice(data);
                    // The caller's file size: what a handle tracks without the cache.
                    let mut f = m.bytes.borrow_mut();
                    if f.len() < end {
                        f.resize(end, 0);
                    }
                }
                5..=7 => {
                    let mut buf = vec![0u8; len];
                    let n = c.read(&m, &mut buf, at).unwrap();
                    read_end = at + n as u64;
                    let start = (at as usize).min(want.len());
                    let expect = &want[start..(start + len).min(want.len())];
                    assert_eq!(&buf[..n], expect, "round {round}: read {len} at {at}");
                }
                8 => {
                    c.flush(&m).unwrap();
                    c.forget_reads();
                    assert_eq!(*m.bytes.borrow(), want, "round {round}: after sync");
                }
                _ => {
                    let size = next(3 * WINDOW as u64) as usize;
                    c.truncated(size as u64);
                    want.resize(size, 0);
                    m.bytes.borrow_mut().resize(size, 0);
                }
            }
        }
    }
}
