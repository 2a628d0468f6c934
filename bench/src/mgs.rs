//! `nacre-bench mgs`: load on a management service. Simulated servers (one connection,
//! role and epoch each, driven by a few threads) claim a role and renew its lease at the
//! rate asked, while one client (the real `MgsClient`) fetches the map in a loop and times
//! every fetch.
//! Last line: `renewals_per_s=<float> map_fetch_p99_us=<float>`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::Args;
use nacre_mgc::{BootConfig, MgsClient};
use nacre_proto::bootstrap::{
    BootHeader, BootOp, BootReply, BootRequest, ClaimRequest, RenewRequest, Role, RoleKind,
    TargetReport, TargetState, BOOT_HEADER_LEN, MAX_REPLY_BODY,
};

use crate::BenchError;

#[derive(Args)]
pub struct MgsArgs {
    /// The MGS (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:7600")]
    mgs: String,
    /// Simulated servers, each renewing on its own connection.
    #[arg(long, default_value_t = 100)]
    servers: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    runtime: f64,
    /// Fabric addresses each simulated server publishes (32 bytes each, as EFA's).
    #[arg(long, default_value_t = 4)]
    cores: usize,
    /// Threads driving the simulated servers (each drives its share of connections).
    #[arg(long, default_value_t = 10)]
    threads: usize,
    /// Renewals per second asked of all servers together, paced evenly (0: as fast as
    /// the MGS answers, which measures its capacity but queues the map fetches too).
    #[arg(long, default_value_t = 25_000.0)]
    rate: f64,
}

pub fn run(args: &MgsArgs) -> Result<(), BenchError> {
    if args.servers == 0 || args.runtime.is_nan() || args.runtime <= 0.0 || args.rate.is_nan() {
        return Err(BenchError::msg("--servers and --runtime must be positive"));
    }
    let cfg = BootConfig::default();
    // Fail early, naming the address, if the MGS is not there.
    MgsClient::connect(&args.mgs, cfg)?.fetch_map()?;
    let stop = Arc::new(AtomicBool::new(false));
    let renewals = Arc::new(AtomicU64::new(0));
    let reqs: Vec<ClaimRequest> = (0..args.servers)
        .map(|i| ClaimRequest {
            kind: RoleKind::Oss,
            want: None,
            node: format!("bench-{}-{i}", std::process::id()),
            provider: "tcp".into(),
            cores: (0..args.cores).map(|c| vec![c as u8; 32]).collect(),
            empty: false,
            generation: 1,
            replication: String::new(),
        })
        .collect();
    let groups = args.threads.clamp(1, args.servers);
    let per = args.servers.div_ceil(groups);
    let chunks: Vec<Vec<ClaimRequest>> = reqs.chunks(per).map(<[_]>::to_vec).collect();
    let start = Arc::new(Barrier::new(chunks.len() + 2));
    let mut threads = Vec::with_capacity(chunks.len());
    let groups = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let (stop, renewals, start) = (stop.clone(), renewals.clone(), start.clone());
        let addr = args.mgs.clone();
        // Each round renews every server of the group once.
        let round =
            (args.rate > 0.0).then(|| Duration::from_secs_f64(args.servers as f64 / args.rate));
        // Groups renew out of phase, as independent servers do, not in one burst.
        let phase = round.map_or(Duration::ZERO, |r| r * i as u32 / groups as u32);
        threads.push(std::thread::spawn(move || {
            drive_group(&addr, &chunk, round, phase, &stop, &renewals, &start)
        }));
    }
    let fetcher = {
        let (stop, start, addr) = (stop.clone(), start.clone(), args.mgs.clone());
        std::thread::spawn(move || fetch_loop(&addr, &stop, &start))
    };
    start.wait();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.runtime));
    stop.store(true, Ordering::SeqCst);
    let elapsed = t0.elapsed().as_secs_f64();
    let done = renewals.load(Ordering::SeqCst);
    for t in threads {
        t.join()
            .map_err(|_| BenchError::msg("a simulated server panicked"))??;
    }
    let mut lat = fetcher
        .join()
        .map_err(|_| BenchError::msg("the map fetcher panicked"))??;
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    let rate = done as f64 / elapsed;
    println!(
        "mgs {}: {} servers x {} cores, asked {} renewals/s, {:.1} s: {} renewals, {} map fetches (p50 {:.1} us, p99 {:.1} us, max {:.1} us)",
        args.mgs,
        args.servers,
        args.cores,
        if args.rate > 0.0 { format!("{:.0}", args.rate) } else { "max".into() },
        elapsed,
        done,
        lat.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!("renewals_per_s={rate:.1} map_fetch_p99_us={:.1}", pct(0.99));
    Ok(())
}

/// A simulated server: its own connection, role and epoch.
struct Sim {
    stream: TcpStream,
    renew: Vec<u8>,
    role: Role,
    epoch: u64,
}

/// Sends one request frame and reads its reply.
fn call(s: &mut TcpStream, frame: &[u8], op: BootOp) -> Result<BootReply, BenchError> {
    s.write_all(frame)?;
    read_reply(s, op)
}

fn read_reply(s: &mut TcpStream, op: BootOp) -> Result<BootReply, BenchError> {
    let mut head = [0u8; BOOT_HEADER_LEN];
    s.read_exact(&mut head)?;
    let h = BootHeader::decode(&head, MAX_REPLY_BODY)?;
    let mut body = vec![0u8; h.body_len as usize];
    s.read_exact(&mut body)?;
    match BootReply::decode(op, h.status, &body)? {
        BootReply::Failed { errno, message } => Err(BenchError(format!(
            "the MGS refused: {message} (errno {errno})"
        ))),
        r => Ok(r),
    }
}

fn claim(addr: &str, req: &ClaimRequest) -> Result<Sim, BenchError> {
    let mut stream = TcpStream::connect(addr)
        .map_err(|e| BenchError(format!("cannot reach the MGS at {addr}: {e}")))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let frame = BootRequest::Claim(req.clone()).encode()?;
    let BootReply::Granted(g) = call(&mut stream, &frame, BootOp::Claim)? else {
        return Err(BenchError::msg("a claim got no grant"));
    };
    let report = TargetReport {
        rebuild: Vec::new(),
        settled: Vec::new(),
        standby: String::new(),
        state: TargetState::Up,
        capacity: 1 << 40,
        free: 1 << 39,
    };
    let renew = BootRequest::Renew(RenewRequest {
        role: g.role,
        epoch: g.epoch,
        report,
    })
    .encode()?;
    Ok(Sim {
        stream,
        renew,
        role: g.role,
        epoch: g.epoch,
    })
}

/// Drives a group of simulated servers from one thread: each round sends one renewal on
/// every connection, then reads every reply (servers renew independently; one thread
/// per server would make the bench, not the MGS, the bottleneck on a small machine).
fn drive_group(
    addr: &str,
    reqs: &[ClaimRequest],
    round: Option<Duration>,
    phase: Duration,
    stop: &AtomicBool,
    renewals: &AtomicU64,
    start: &Barrier,
) -> Result<(), BenchError> {
    let sims: Result<Vec<Sim>, BenchError> = reqs.iter().map(|r| claim(addr, r)).collect();
    start.wait();
    let mut sims = sims?;
    let mut next = Instant::now() + phase;
    while !stop.load(Ordering::Relaxed) {
        if let Some(p) = round {
            // Paced: a group that falls behind catches up without sleeping, so the rate
            // asked is the rate offered as long as the MGS keeps up.
            next += p;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        for s in &mut sims {
            s.stream.write_all(&s.renew)?;
        }
        for s in &mut sims {
            read_reply(&mut s.stream, BootOp::Renew)?;
        }
        renewals.fetch_add(sims.len() as u64, Ordering::Relaxed);
    }
    // Leave the roles free for the next run.
    for s in &mut sims {
        let frame = BootRequest::Release {
            role: s.role,
            epoch: s.epoch,
        }
        .encode()?;
        call(&mut s.stream, &frame, BootOp::Release)?;
    }
    Ok(())
}

/// Map fetch latencies in nanoseconds.
fn fetch_loop(addr: &str, stop: &AtomicBool, start: &Barrier) -> Result<Vec<u64>, BenchError> {
    let mut c = MgsClient::new(addr, BootConfig::default());
    let warm = c.fetch_map();
    start.wait();
    warm?;
    let mut lat = Vec::with_capacity(1 << 16);
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        c.fetch_map()?;
        lat.push(t.elapsed().as_nanos() as u64);
        // A client's pace, not a flood: the renewals are the load.
        std::thread::sleep(Duration::from_micros(200));
    }
    if lat.is_empty() {
        return Err(BenchError::msg("no map fetch finished"));
    }
    Ok(lat)
}
