//! `nacre-bench mgs`: load on a management service. Simulated servers (one thread and one
//! connection each) claim a role and renew its lease as fast as the MGS answers, while
//! one client fetches the map in a loop and times every fetch.
//! Last line: `renewals_per_s=<float> map_fetch_p99_us=<float>`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::Args;
use nacre_client::mgs::{BootConfig, MgsClient};
use nacre_proto::bootstrap::{ClaimRequest, RoleKind, TargetReport, TargetState};

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
    let start = Arc::new(Barrier::new(args.servers + 2));
    let mut threads = Vec::with_capacity(args.servers);
    for i in 0..args.servers {
        let (stop, renewals, start) = (stop.clone(), renewals.clone(), start.clone());
        let req = ClaimRequest {
            kind: RoleKind::Oss,
            want: None,
            node: format!("bench-{}-{i}", std::process::id()),
            provider: "tcp".into(),
            cores: (0..args.cores).map(|c| vec![c as u8; 32]).collect(),
        };
        let addr = args.mgs.clone();
        let period =
            (args.rate > 0.0).then(|| Duration::from_secs_f64(args.servers as f64 / args.rate));
        threads.push(std::thread::spawn(move || {
            simulated_server(&addr, &req, period, &stop, &renewals, &start)
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

fn simulated_server(
    addr: &str,
    req: &ClaimRequest,
    period: Option<Duration>,
    stop: &AtomicBool,
    renewals: &AtomicU64,
    start: &Barrier,
) -> Result<(), BenchError> {
    let mut c = MgsClient::new(addr, BootConfig::default());
    let claimed = c.claim(req);
    start.wait();
    let g = claimed?;
    let report = TargetReport {
        state: TargetState::Up,
        capacity: 1 << 40,
        free: 1 << 39,
    };
    let mut n = 0u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(p) = period {
            // Paced: a thread that falls behind catches up without sleeping, so the
            // rate asked is the rate offered as long as the MGS keeps up.
            next += p;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        c.renew(g.role, g.epoch, report)?;
        n += 1;
        if n.is_multiple_of(64) {
            renewals.fetch_add(64, Ordering::Relaxed);
        }
    }
    renewals.fetch_add(n % 64, Ordering::Relaxed);
    // Leave the role free for the next run.
    c.release(g.role, g.epoch)?;
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
