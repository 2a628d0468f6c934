//! `nacre-bench rma`: the bandwidth of the RMA the data path uses (the server pulls a
//! client's buffer with fi_read for a write, pushes with fi_write for a read), with a
//! window of operations in flight. The target keeps polling its CQ meanwhile: on tcp and
//! sockets, progress is manual at the target too.

use std::time::Instant;

use nacre_fabric::{Access, BulkDesc, Completion, EndpointConfig, Memory, OpKind};

use crate::control::connect;
use crate::format::{cnt_str, parse_sizes, size_str, HEADER};
use crate::{BenchError, CommonArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RmaOp {
    Read,
    Write,
}

/// Default sizes: where bulk transfers live.
const DEFAULT_SIZES: &str = "65536,262144,1048576,4194304";

pub fn run(args: &CommonArgs, op: RmaOp, window: usize, distinct: bool) -> Result<(), BenchError> {
    let window = window.max(1);
    let cfg = EndpointConfig {
        max_tx: window,
        max_rx: 4,
        ..Default::default()
    };
    let (mut ctl, mut ep, peer) = connect(args, &cfg)?;
    let sizes = parse_sizes(
        Some(args.sizes.as_deref().unwrap_or(DEFAULT_SIZES)),
        ep.max_msg_size() as u64,
    )
    .map_err(BenchError)?;
    let max = sizes.iter().copied().max().unwrap_or(0).max(4096) as usize;
    let max = max.div_ceil(4096) * 4096;

    if ctl.is_server {
        // The target: one region the client reads from or writes to; progress until done.
        let region = ep.register(Memory::anonymous(max)?, Access::ALL)?;
        region.fill(0, max, 0x5a)?;
        ctl.send(&region.remote_all()?.to_bytes())?;
        let mut spins = 0u32;
        loop {
            ep.progress()?;
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) && ctl.try_recv()?.is_some() {
                return Ok(());
            }
        }
    }

    let remote = BulkDesc::from_bytes(&ctl.recv()?)?;
    // Like fabtests' fi_rma_bw, every operation of the window uses one local buffer unless
    // asked otherwise: the figure is the fabric's, not the CPU cache's.
    let buffers = if distinct { window } else { 1 };
    let local = ep.register(Memory::anonymous(buffers * max)?, Access::LOCAL)?;
    let iterations = args.iterations.unwrap_or(1000).max(1);
    println!("# nacre-bench rma {op:?}, window {window}, {buffers} local buffer(s)");
    println!("{HEADER}");
    let mut done = [Completion {
        context: 0,
        kind: OpKind::Send,
        len: 0,
        source: None,
    }; 32];
    for size in sizes {
        let size = size as usize;
        let start = Instant::now();
        let (mut posted, mut completed) = (0u64, 0u64);
        while completed < iterations {
            while posted < iterations && posted - completed < window as u64 {
                let slot = (posted % buffers as u64) as usize;
                let buf = local.slice(slot * max, size)?;
                match op {
                    RmaOp::Read => ep.post_read(buf, peer, &remote, 0, posted)?,
                    RmaOp::Write => ep.post_write(buf, peer, &remote, 0, posted)?,
                }
                posted += 1;
            }
            completed += ep.poll(&mut done)? as u64;
        }
        let micros = start.elapsed().as_secs_f64() * 1e6;
        let bytes = iterations * size as u64;
        let usec = micros / iterations as f64;
        println!(
            "{:<8}{:<8}={:<8}{:<8}{:8.2}s{:10.2}{:11.2}{:11.2}",
            size_str(size as u64),
            cnt_str(iterations),
            cnt_str(completed),
            size_str(bytes),
            micros / 1e6,
            bytes as f64 / micros,
            usec,
            1.0 / usec
        );
    }
    ctl.send(b"done")?;
    Ok(())
}
