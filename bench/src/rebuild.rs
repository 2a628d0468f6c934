//! `nacre-bench rebuild`: what a client keeps of its bandwidth while the MDS rebuilds
//! a lost OSS's copies. The bench brings up a persistent file system of its own
//! (`nacre up --config`: the MGS, the MDS rebuilding at `--rebuild-mib-s`, two OSS
//! processes of one OST each, so every file has a copy on each), writes `--stale-mib`
//! of files, and measures a client's write bandwidth (a fresh file of `--probe-mib`
//! in 1 MiB calls, twice). Then it pauses the first OSS (SIGSTOP) past its lease and
//! writes the files again: their copies there go stale. On SIGCONT that OSS steps down
//! and `nacre up` starts it again; while the MDS copies the stale copies back (the map
//! shows the OST `rebuilding`), the bench measures the same bandwidth again.
//!
//! Last line: `before_mib_s=N during_mib_s=N ratio=R rebuild_s=N`. `ratio` is during
//! over before (the target is 0.5 at least); `rebuild_s` how long the
//! rebuild took from the OSS's return. A probe that outlasted the rebuild says so on
//! stderr (raise `--stale-mib`): it then measured less rebuild than it claims.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nacre_client::{Client, OpenOptions};
use nacre_proto::bootstrap::{ClusterMap, RoleKind};

use crate::failover::Up;
use crate::BenchError;

#[derive(clap::Args)]
pub struct RebuildArgs {
    /// libfabric provider of the file system.
    #[arg(long, default_value = "shm")]
    provider: String,
    /// MiB of files whose copies on the paused OSS go stale: what the rebuild copies.
    #[arg(long, default_value_t = 2048)]
    stale_mib: usize,
    /// MiB each bandwidth probe writes, in 1 MiB calls.
    #[arg(long, default_value_t = 256)]
    probe_mib: usize,
    /// The MDS's rebuild rate, MiB/s (its default is 100).
    #[arg(long, default_value_t = 100)]
    rebuild_mib_s: u64,
    /// Where the file system lives (made fresh; on a disk, not tmpfs).
    #[arg(long, default_value = "nacre-rebuild")]
    dir: PathBuf,
}

const MIB: usize = 1 << 20;
/// Size of each file of the stale set.
const FILE_MIB: usize = 64;

pub fn run(a: &RebuildArgs) -> Result<(), BenchError> {
    let _ = std::fs::remove_dir_all(&a.dir);
    std::fs::create_dir_all(&a.dir).map_err(|e| BenchError::msg(e.to_string()))?;
    let d = a.dir.display();
    let config = a.dir.join("up.toml");
    std::fs::write(
        &config,
        format!(
            "[mgs]\nlisten = \"127.0.0.1:0\"\ndeployment = \"persistent\"\n\
             [mds]\nrebuild_mib_s = {}\n\
             [[oss]]\nosts = [\"{d}/oss0/ost\"]\n[[oss]]\nosts = [\"{d}/oss1/ost\"]\n",
            a.rebuild_mib_s
        ),
    )
    .map_err(|e| BenchError::msg(e.to_string()))?;
    let mut up = Up::start(
        &a.dir.join("fs"),
        &[
            "--provider",
            &a.provider,
            "--config",
            config.to_str().unwrap_or_default(),
        ],
    )?;
    let outcome = drive(a, &mut up);
    up.stop();
    outcome
}

fn drive(a: &RebuildArgs, up: &mut Up) -> Result<(), BenchError> {
    let client = Client::connect(&up.mgs, up.client_config())?;
    client.mkdir("/stale", 0o755)?;
    let files = a.stale_mib.div_ceil(FILE_MIB);
    write_set(&client, files, 1)?;
    let before =
        (probe(&client, a.probe_mib, "before-1")? + probe(&client, a.probe_mib, "before-2")?) / 2.0;
    eprintln!("rebuild: before the failure {before:.0} MiB/s");

    // oss0 paused past its lease: the set written again goes stale on its OST.
    let ost = ost_of(&*client.refresh_map()?, "/oss0/")?;
    let pid = up.pid_of("oss0")?;
    signal(pid, "STOP")?;
    let paused = Instant::now();
    let outcome = (|| {
        while !client.refresh_map()?.target_down(oss_role(ost)) {
            std::thread::sleep(Duration::from_millis(100));
            if paused.elapsed() > Duration::from_secs(60) {
                return Err(BenchError::msg("the paused OSS's target never went down"));
            }
        }
        write_set(&client, files, 2)
    })();
    signal(pid, "CONT")?;
    outcome?;
    // It steps down on hearing the MGS again, and `nacre up` starts it again.
    up.wait_for("nacre up: oss0 restarted", Duration::from_secs(60))?;
    let back = Instant::now();
    wait_until(&client, Duration::from_secs(60), |m| {
        m.serves(oss_role(ost)) && m.rebuild_of(ost).is_some()
    })?;
    let during = probe(&client, a.probe_mib, "during")?;
    if client.refresh_map()?.rebuild_of(ost).is_none() {
        eprintln!(
            "rebuild: the rebuild ended during the probe: raise --stale-mib for a figure \
             taken wholly during the rebuild"
        );
    }
    eprintln!("rebuild: during the rebuild {during:.0} MiB/s");
    wait_until(&client, Duration::from_secs(600), |m| {
        m.rebuild_of(ost).is_none()
    })?;
    let rebuild_s = back.elapsed().as_secs_f64();
    println!(
        "provider={} stale_mib={} probe_mib={} rebuild_mib_s={}",
        a.provider,
        files * FILE_MIB,
        a.probe_mib,
        a.rebuild_mib_s
    );
    println!(
        "before_mib_s={before:.0} during_mib_s={during:.0} ratio={:.2} rebuild_s={rebuild_s:.1}",
        during / before
    );
    Ok(())
}

/// Writes version `v` of every file of the stale set, 4 MiB a call.
fn write_set(client: &Client, files: usize, v: u8) -> Result<(), BenchError> {
    let chunk = vec![v; 4 * MIB];
    for i in 0..files {
        let f = client.open(&format!("/stale/f{i}"), &OpenOptions::create())?;
        for k in 0..FILE_MIB / 4 {
            f.write_at(&chunk, (k * 4 * MIB) as u64)?;
        }
        f.close()?;
    }
    Ok(())
}

/// Writes a fresh file of `mib` MiB in 1 MiB calls; MiB/s.
fn probe(client: &Client, mib: usize, name: &str) -> Result<f64, BenchError> {
    let path = format!("/probe-{name}");
    let buf = vec![0x5a; MIB];
    let f = client.open(&path, &OpenOptions::create())?;
    let t = Instant::now();
    for k in 0..mib {
        f.write_at(&buf, (k * MIB) as u64)?;
    }
    f.fsync()?;
    let secs = t.elapsed().as_secs_f64();
    f.close()?;
    client.unlink(&path)?;
    Ok(mib as f64 / secs)
}

fn oss_role(ost: u32) -> nacre_proto::bootstrap::Role {
    nacre_proto::bootstrap::Role {
        kind: RoleKind::Oss,
        index: ost,
    }
}

/// The OST served from the directory containing `dir`.
fn ost_of(map: &ClusterMap, dir: &str) -> Result<u32, BenchError> {
    map.servers
        .iter()
        .find(|s| s.role.kind == RoleKind::Oss && s.node.contains(dir))
        .map(|s| s.role.index)
        .ok_or_else(|| BenchError::msg(format!("no OST served from {dir}")))
}

fn wait_until(
    client: &Client,
    within: Duration,
    ready: impl Fn(&ClusterMap) -> bool,
) -> Result<(), BenchError> {
    let until = Instant::now() + within;
    while !ready(&*client.refresh_map()?) {
        if Instant::now() > until {
            return Err(BenchError::msg(format!(
                "the rebuild did not reach the expected state within {within:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn signal(pid: u32, sig: &str) -> Result<(), BenchError> {
    nacre_fabric::testing::send_signal(pid, sig)
        .map_err(|e| BenchError::msg(format!("kill -{sig} {pid}: {e}")))
}
