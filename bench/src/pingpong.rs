//! `nacre-bench pingpong`: fabtests' fi_pingpong on nacre-fabric. Same options, same
//! columns, same method: one receive always posted, inject below the provider's
//! inject size, busy polling, per-size sync over the control socket, wall time of the
//! loop only.

use std::time::Instant;

use nacre_fabric::{
    Access, Completion, Endpoint, EndpointConfig, Memory, MemoryRegion, OpKind, PeerAddr,
};

use crate::control::{connect, Control};
use crate::format::{parse_sizes, row, HEADER};
use crate::{BenchError, CommonArgs};

const RX: u64 = 1;
const TX: u64 = 2;
const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

pub fn run(args: &CommonArgs, check: bool) -> Result<(), BenchError> {
    let cfg = EndpointConfig {
        max_tx: 16,
        max_rx: 16,
        ..Default::default()
    };
    let (mut ctl, ep, peer) = connect(args, &cfg)?;
    let sizes = parse_sizes(args.sizes.as_deref(), ep.max_msg_size() as u64).map_err(BenchError)?;
    let max = sizes.iter().copied().max().unwrap_or(0).max(64) as usize;
    let mut pp = Pingpong::new(ep, peer, max, check)?;
    let iterations = args.iterations.unwrap_or(10);
    if iterations == 0 {
        return Ok(());
    }
    println!("{HEADER}");
    for size in sizes {
        ctl.sync(&mut pp.ep)?;
        let start = Instant::now();
        let acked = if ctl.is_server {
            pp.serve(size as usize, iterations)?
        } else {
            pp.ping(size as usize, iterations)?
        };
        let micros = start.elapsed().as_secs_f64() * 1e6;
        let acked = exchange_counts(&mut ctl, &mut pp.ep, acked)?;
        println!("{}", row(size, iterations, acked, micros));
    }
    ctl.sync(&mut pp.ep)?; // neither side closes while the other may still be sending
    Ok(())
}

/// The client's count of pongs is the one both sides print.
fn exchange_counts(ctl: &mut Control, ep: &mut Endpoint, mine: u64) -> Result<u64, BenchError> {
    if ctl.is_server {
        let theirs = ctl.recv_progressing(ep)?;
        let theirs: [u8; 8] = theirs
            .try_into()
            .map_err(|_| BenchError::msg("bad count"))?;
        ctl.send(b"cnt ok")?;
        Ok(u64::from_le_bytes(theirs))
    } else {
        ctl.send(&mine.to_le_bytes())?;
        ctl.recv_progressing(ep)?;
        Ok(mine)
    }
}

struct Pingpong {
    ep: Endpoint,
    peer: PeerAddr,
    mr: MemoryRegion,
    max: usize,
    tx_off: usize,
    /// Source of injected messages: inject copies, so any memory will do.
    inject_buf: Vec<u8>,
    check: bool,
    fill_count: u64,
    check_count: u64,
    done: [Completion; 2],
    /// Completions seen and not yet waited for: [RX, TX].
    arrived: [u32; 2],
}

impl Pingpong {
    fn new(mut ep: Endpoint, peer: PeerAddr, max: usize, check: bool) -> Result<Self, BenchError> {
        let half = max.div_ceil(4096) * 4096;
        let mr = ep.register(Memory::anonymous(2 * half)?, Access::LOCAL)?;
        let inject_buf = vec![0; ep.inject_size()];
        let mut pp = Pingpong {
            ep,
            peer,
            mr,
            max,
            tx_off: half,
            inject_buf,
            check,
            fill_count: 0,
            check_count: 0,
            done: [Completion {
                context: 0,
                kind: OpKind::Send,
                len: 0,
                source: None,
            }; 2],
            arrived: [0; 2],
        };
        pp.post_rx()?;
        Ok(pp)
    }

    fn post_rx(&mut self) -> Result<(), BenchError> {
        Ok(self.ep.post_recv(self.mr.slice(0, self.max)?, RX)?)
    }

    /// Client: ping, wait for the pong; returns the pongs received.
    fn ping(&mut self, size: usize, iterations: u64) -> Result<u64, BenchError> {
        let mut acked = 0;
        for _ in 0..iterations {
            self.send(size)?;
            self.recv(size)?;
            acked += 1;
        }
        Ok(acked)
    }

    /// Server: wait for the ping, pong it back.
    fn serve(&mut self, size: usize, iterations: u64) -> Result<u64, BenchError> {
        let mut received = 0;
        for _ in 0..iterations {
            self.recv(size)?;
            received += 1;
            self.send(size)?;
        }
        Ok(received)
    }

    fn send(&mut self, size: usize) -> Result<(), BenchError> {
        if self.check {
            self.fill(size)?;
        }
        if size < self.ep.inject_size() {
            return Ok(self.ep.inject(&self.inject_buf[..size], self.peer)?);
        }
        self.ep
            .post_send(self.mr.slice(self.tx_off, size)?, self.peer, TX)?;
        self.wait(TX)
    }

    fn recv(&mut self, size: usize) -> Result<(), BenchError> {
        self.wait(RX)?;
        if self.check {
            self.verify(size)?;
        }
        self.post_rx()
    }

    /// Busy-polls until a completion `which` has arrived (now or while waiting for the
    /// other kind: a pong may complete before its ping's send completion is read).
    fn wait(&mut self, which: u64) -> Result<(), BenchError> {
        let index = (which - 1) as usize;
        while self.arrived[index] == 0 {
            let n = self.ep.poll(&mut self.done)?;
            for c in &self.done[..n] {
                self.arrived[(c.context - 1) as usize] += 1;
            }
        }
        self.arrived[index] -= 1;
        Ok(())
    }

    fn fill(&mut self, size: usize) -> Result<(), BenchError> {
        let data = pattern(self.fill_count, size);
        self.fill_count += 1;
        if size < self.ep.inject_size() {
            self.inject_buf[..size].copy_from_slice(&data);
        } else {
            self.mr.copy_in(self.tx_off, &data)?;
        }
        Ok(())
    }

    fn verify(&mut self, size: usize) -> Result<(), BenchError> {
        let want = pattern(self.check_count, size);
        self.check_count += 1;
        let mut got = vec![0; size];
        self.mr.copy_out(0, &mut got)?;
        match got.iter().zip(&want).position(|(a, b)| a != b) {
            None => Ok(()),
            Some(byte) => Err(BenchError::msg(format!(
                "Error at iteration={} size={size} byte={byte}",
                self.check_count
            ))),
        }
    }
}

/// fi_pingpong's integrity pattern: message k starts at (k * 7) % 62 of the alphabet.
fn pattern(k: u64, size: usize) -> Vec<u8> {
    let start = (k * 7 % ALPHABET.len() as u64) as usize;
    (0..size)
        .map(|i| ALPHABET[(start + i) % ALPHABET.len()])
        .collect()
}
