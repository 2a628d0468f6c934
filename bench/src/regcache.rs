//! `nacre-bench regcache`: the caller's own buffers through the client library's object
//! calls, with the registration cache (`auto`) and with a registration per call (`off`),
//! alternating, on the same OSS. Prints both figures per block size and which is faster.
//! Last line: `cache_mib_s=<float> per_call_mib_s=<float>` (largest size).

use std::time::{Duration, Instant};

use nacre_client::objects::{IoOptions, OstRoute};
use nacre_client::{ClientEndpoint, RegCacheConfig, RegCacheMode, RpcConfig};
use nacre_fabric::Selection;
use nacre_mgc::{BootConfig, MgsClient};
use nacre_proto::bootstrap::{Role, RoleKind};

use crate::BenchError;

#[derive(clap::Args)]
pub struct RegCacheArgs {
    /// The MGS, HOST:PORT [env: NACRE_MGS].
    #[arg(long)]
    mgs: Option<String>,
    /// Calls per size and mode.
    #[arg(long, default_value_t = 400)]
    count: usize,
}

pub fn run(args: &RegCacheArgs) -> Result<(), BenchError> {
    let mgs = nacre_mgc::mgs_address(args.mgs.clone())
        .ok_or_else(|| BenchError::msg("no MGS: give --mgs HOST:PORT or set NACRE_MGS"))?;
    let mut boot = MgsClient::connect(&mgs, BootConfig::default())?;
    let (map, key) = (boot.fetch_map()?, boot.key().cloned());
    let role = Role {
        kind: RoleKind::Oss,
        index: 0,
    };
    let server = map
        .server(role)
        .ok_or_else(|| BenchError::msg(format!("no {role} in the map")))?;
    let route = OstRoute {
        ost: 0,
        epoch: server.epoch,
        cores: server.cores.clone(),
    };
    let opt = IoOptions::for_provider(&server.provider);
    let mut last = (0.0, 0.0);
    println!("bytes       cache MiB/s  per-call MiB/s  cache x");
    for bs in [16usize << 10, 256 << 10, 1 << 20, 4 << 20] {
        let buf = vec![0x3cu8; bs];
        let (mut cache, mut per_call) = (Vec::new(), Vec::new());
        for round in 0..3 {
            for mode in [RegCacheMode::Auto, RegCacheMode::Off] {
                let cfg = RpcConfig {
                    msg_size: 8192,
                    timeout: Duration::from_secs(30),
                    reg_cache: RegCacheConfig {
                        mode,
                        ..Default::default()
                    },
                    key: key.clone(),
                    ..Default::default()
                };
                let mib_s = writes(&server.provider, &route, cfg, &buf, args.count, round, opt)?;
                match mode {
                    RegCacheMode::Auto => cache.push(mib_s),
                    RegCacheMode::Off => per_call.push(mib_s),
                }
            }
        }
        let (c, p) = (median(&mut cache), median(&mut per_call));
        println!("{bs:<11} {c:>11.1} {p:>15.1} {:>8.3}", c / p);
        last = (c, p);
    }
    println!("cache_mib_s={:.2} per_call_mib_s={:.2}", last.0, last.1);
    Ok(())
}

/// `count` writes of `buf` through obj_write with the cache in `mode`; MiB/s.
fn writes(
    provider: &str,
    route: &OstRoute,
    cfg: RpcConfig,
    buf: &[u8],
    count: usize,
    round: usize,
    opt: IoOptions,
) -> Result<f64, BenchError> {
    let mode = cfg.reg_cache.mode;
    let mut c = ClientEndpoint::open(&Selection::provider(provider), cfg)?;
    // A fresh object per run: every run extends its object the same way.
    let object =
        1000 + 2 * round as u64 + (mode == RegCacheMode::Off) as u64 + (buf.len() as u64) * 16;
    c.obj_write(route, object, 0, buf, opt)?; // connect, warm up
    let start = Instant::now();
    for i in 0..count {
        c.obj_write(route, object, (i * buf.len()) as u64, buf, opt)?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((count * buf.len()) as f64 / secs / (1 << 20) as f64)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
