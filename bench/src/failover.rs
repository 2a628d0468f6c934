//! `nacre-bench failover`: a persistent file system losing a server under load. The
//! bench brings up a file system of its own (`nacre up --deployment persistent` in a
//! directory of its own), keeps a workload of whole-file writes and reads going, each
//! read checked against the last write acknowledged, and kills one server (the first
//! OSS, or the MDS) with SIGKILL. `nacre up` starts it again; once it serves, the
//! workload stops, the copies that went stale are resynced (the rebuild), and every
//! file is read back one last time.
//!
//! With `--mgs ADDR` the workload runs against that file system instead, and the bench
//! kills nothing: whoever runs it does (the tests across network namespaces kill,
//! pause and cut off servers on other hosts). It runs until SIGINT or SIGTERM, or
//! `--before` + `--after` seconds, then waits for the MDS's rebuild to bring every copy
//! in sync (`rebuild_s`) and reads every file back.
//!
//! Last line: `pause_ms=N lost_ops=N corrupt=N rebuild_s=N`. `pause_ms` is the longest
//! call (open, write, read, close) of the workload, which is the kill's pause;
//! `lost_ops` counts writes acknowledged whose bytes the last read does not find;
//! `corrupt` reads during the run that returned other bytes than the last write;
//! `rebuild_s` the time the resync of every file took. The line before gives the
//! counts of operations and errors. The exit status is 1 unless lost_ops, corrupt and
//! the errors are all 0.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nacre_client::{Client, ClientConfig, Layout, OpenOptions};
use nacre_proto::bootstrap::{ClusterMap, RoleKind};

use crate::BenchError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Victim {
    Oss,
    Mds,
}

#[derive(clap::Args)]
pub struct FailoverArgs {
    /// libfabric provider of the file system.
    #[arg(long, default_value = "shm")]
    provider: String,
    /// The server killed: the first OSS, or the MDS.
    #[arg(long, value_enum, default_value_t = Victim::Oss)]
    kill: Victim,
    /// Files the workload writes and reads, in turn.
    #[arg(long, default_value_t = 8)]
    files: usize,
    /// Size of each file, MiB.
    #[arg(long, default_value_t = 4)]
    file_mib: usize,
    /// Seconds of workload before the kill.
    #[arg(long, default_value_t = 3.0)]
    before: f64,
    /// Seconds of workload once the killed server serves again.
    #[arg(long, default_value_t = 3.0)]
    after: f64,
    /// Where the file system lives (made fresh; on a disk, not tmpfs).
    #[arg(long, default_value = "nacre-failover")]
    dir: PathBuf,
    /// Run the workload against this file system (its MGS's address) until SIGINT or
    /// SIGTERM, or `--before` + `--after` seconds; the bench kills nothing.
    #[arg(long)]
    mgs: Option<String>,
}

/// `nacre up`, its servers' pids, and its output lines.
pub(crate) struct Up {
    child: Child,
    lines: Receiver<String>,
    pub(crate) mgs: String,
    /// The file system key it printed (`NACRE_KEY=`).
    pub(crate) key: std::path::PathBuf,
    /// Each server's pid, from `nacre up: NAME (pid N) logs to ...`.
    pids: std::collections::HashMap<String, u32>,
}

impl Up {
    /// `nacre up --dir DIR` with `args`, once it said where its MGS is.
    pub(crate) fn start(dir: &Path, args: &[&str]) -> Result<Up, BenchError> {
        let nacre = sibling("nacre")?;
        let mut child = Command::new(nacre)
            .args(["up", "--dir"])
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::msg(format!("starting nacre up: {e}")))?;
        let out = child.stdout.take().expect("piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut up = Up {
            child,
            lines,
            mgs: String::new(),
            key: Default::default(),
            pids: Default::default(),
        };
        let line = up.wait_for("NACRE_MGS=", Duration::from_secs(120))?;
        up.mgs = line["NACRE_MGS=".len()..].trim().to_string();
        let line = up.wait_for("NACRE_KEY=", Duration::from_secs(10))?;
        up.key = line["NACRE_KEY=".len()..].trim().into();
        Ok(up)
    }

    /// A library client's configuration for this file system (its key).
    pub(crate) fn client_config(&self) -> ClientConfig {
        ClientConfig {
            keys: nacre_auth::KeySource::new(Some(self.key.clone())),
            ..Default::default()
        }
    }

    /// The first line from now on that contains `what`; the pids of servers said on
    /// the way go to `pids`.
    pub(crate) fn wait_for(&mut self, what: &str, timeout: Duration) -> Result<String, BenchError> {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let started = l
                        .strip_prefix("nacre up: ")
                        .and_then(|r| r.split_once(" (pid "))
                        .and_then(|(n, r)| Some((n, r.split_once(')')?.0.parse().ok()?)));
                    if let Some((name, pid)) = started {
                        self.pids.insert(name.to_string(), pid);
                    }
                    if l.contains(what) {
                        return Ok(l);
                    }
                }
                Err(_) => {
                    return Err(BenchError::msg(format!(
                        "nacre up: no line with {what:?} within {timeout:?}"
                    )))
                }
            }
        }
    }

    /// The pid of server `name`, as `nacre up` last said it.
    pub(crate) fn pid_of(&self, name: &str) -> Result<u32, BenchError> {
        self.pids
            .get(name)
            .copied()
            .ok_or_else(|| BenchError::msg(format!("nacre up started no {name}")))
    }

    pub(crate) fn stop(mut self) {
        let _ = nacre_fabric::testing::send_signal(self.child.id(), "TERM");
        let _ = self.child.wait();
    }
}

/// A binary of the workspace beside this one.
fn sibling(name: &str) -> Result<PathBuf, BenchError> {
    let p = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.exists());
    p.ok_or_else(|| BenchError::msg(format!("{name} not found beside nacre-bench")))
}

/// A call slower than this is said on stderr.
const SLOW: Duration = Duration::from_secs(2);

/// What the workload counted.
#[derive(Default)]
struct Counts {
    ops: AtomicU64,
    errors: AtomicU64,
    corrupt: AtomicU64,
    /// The longest call, nanoseconds.
    longest: AtomicU64,
}

impl Counts {
    fn timed<R>(&self, what: &str, f: impl FnOnce() -> std::io::Result<R>) -> Option<R> {
        let t = Instant::now();
        let r = f();
        let ns = t.elapsed().as_nanos() as u64;
        if ns > SLOW.as_nanos() as u64 {
            // When, to read beside the servers' logs.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            eprintln!(
                "failover: {what} took {} ms, until {:.3} s past the minute",
                ns / 1_000_000,
                now.as_secs_f64() % 60.0
            );
        }
        self.longest.fetch_max(ns, Ordering::Relaxed);
        self.ops.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("failover: {e}");
                self.errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// The bytes of version `v` of file `i`.
fn content(i: usize, v: u64, len: usize) -> Vec<u8> {
    nacre_fabric::testing::pattern((i as u64 + 1) ^ v.wrapping_mul(0xD6E8_FEB8_6659_FD93), len)
}

/// Writes and reads the files in turn until `stop`; returns the last version of each
/// whose write was acknowledged.
fn workload(client: &Client, a: &FailoverArgs, counts: &Counts, stop: &AtomicBool) -> Vec<u64> {
    let len = a.file_mib << 20;
    let mut acked = vec![0u64; a.files];
    let mut v = 0;
    while !stop.load(Ordering::Relaxed) {
        v += 1;
        for (i, last) in acked.iter_mut().enumerate() {
            let path = format!("/failover/f{i}");
            let data = content(i, v, len);
            let wrote = counts.timed(&format!("write of {path}"), || {
                let f = client.open(&path, &OpenOptions::create())?;
                f.write_at(&data, 0)?;
                f.close()
            });
            if wrote.is_some() {
                *last = v;
            }
            let mut back = vec![0u8; len];
            let read = counts.timed(&format!("read of {path}"), || {
                let f = client.open(&path, &OpenOptions::read())?;
                let n = f.read_at(&mut back, 0)?;
                f.close()?;
                Ok(n)
            });
            if read.is_some_and(|n| n != len || back != content(i, *last, len)) {
                counts.corrupt.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    acked
}

/// Kills the victim with SIGKILL and waits until `nacre up` started it again and every
/// target serves.
fn kill_and_wait(a: &FailoverArgs, up: &mut Up, client: &Client) -> Result<(), BenchError> {
    let name = match a.kill {
        Victim::Oss => "oss0",
        Victim::Mds => "mds",
    };
    let pid = up.pid_of(name)?;
    let killed = Instant::now();
    nacre_fabric::testing::send_signal(pid, "KILL")
        .map_err(|e| BenchError::msg(format!("kill -9 {pid}: {e}")))?;
    up.wait_for(
        &format!("nacre up: {name} restarted"),
        Duration::from_secs(60),
    )?;
    while !all_serving(&*client.refresh_map()?) {
        if killed.elapsed() > Duration::from_secs(120) {
            return Err(BenchError::msg("the file system did not serve again"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "failover: {name} (pid {pid}) killed; every target serving again after {:.1} s",
        killed.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits (two minutes at most) until no copy of the workload's files is stale: the
/// MDS's background rebuild. Returns how many copies were stale at first.
fn wait_in_sync(client: &Client, files: usize) -> Result<usize, BenchError> {
    let stale = |i: usize| -> Result<usize, BenchError> {
        Ok(match client.get_layout(&format!("/failover/f{i}"))? {
            Layout::File(l) => l.mirrors.iter().filter(|m| m.stale).count(),
            _ => 0,
        })
    };
    let first = (0..files).map(stale).sum::<Result<usize, _>>()?;
    let until = Instant::now() + Duration::from_secs(120);
    while (0..files).map(stale).sum::<Result<usize, _>>()? > 0 {
        if Instant::now() > until {
            return Err(BenchError::msg("copies still stale two minutes on"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(first)
}

/// Whether `map` shows a server for each OST and the MDS, every target up.
fn all_serving(map: &ClusterMap) -> bool {
    map.targets.iter().all(|t| map.serves(t.role))
        && map.servers.iter().any(|s| s.role.kind == RoleKind::Mds)
}

pub fn run(a: &FailoverArgs) -> Result<(), BenchError> {
    if let Some(mgs) = &a.mgs {
        // Before any thread starts: the signals end the workload, not the process.
        let stop = nacre_fabric::signals::stop_on_signals()
            .map_err(|e| BenchError::msg(format!("taking SIGINT/SIGTERM: {e}")))?;
        return drive(a, mgs, ClientConfig::default(), Killer::Outside(&stop));
    }
    let _ = std::fs::remove_dir_all(&a.dir);
    std::fs::create_dir_all(&a.dir).map_err(|e| BenchError::msg(e.to_string()))?;
    let mut up = Up::start(
        &a.dir.join("fs"),
        &[
            "--provider",
            &a.provider,
            "--listen",
            "127.0.0.1:0",
            "--deployment",
            "persistent",
        ],
    )?;
    let mgs = up.mgs.clone();
    let cfg = up.client_config();
    let outcome = drive(a, &mgs, cfg, Killer::Bench(&mut up));
    up.stop();
    outcome
}

/// Who fails a server during the workload.
enum Killer<'a> {
    /// The bench, in the file system it brought up.
    Bench(&'a mut Up),
    /// Someone else; the workload ends when this flag rises (or after its time).
    Outside(&'a AtomicBool),
}

fn drive(
    a: &FailoverArgs,
    mgs: &str,
    cfg: ClientConfig,
    killer: Killer<'_>,
) -> Result<(), BenchError> {
    let client = Client::connect(mgs, cfg)?;
    match client.mkdir("/failover", 0o755) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) && a.mgs.is_some() => {}
        other => {
            other?;
        }
    }
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let outside = matches!(killer, Killer::Outside(_));
    let acked = std::thread::scope(|s| -> Result<Vec<u64>, BenchError> {
        let w = s.spawn(|| workload(&client, a, &counts, &stop));
        let outcome = match killer {
            Killer::Bench(up) => {
                std::thread::sleep(Duration::from_secs_f64(a.before));
                let outcome = kill_and_wait(a, up, &client);
                if outcome.is_ok() {
                    std::thread::sleep(Duration::from_secs_f64(a.after));
                }
                outcome
            }
            Killer::Outside(signalled) => {
                let until = Instant::now() + Duration::from_secs_f64(a.before + a.after);
                while !signalled.load(Ordering::Relaxed) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(())
            }
        };
        // Whatever happened, the workload stops before the scope ends.
        stop.store(true, Ordering::Relaxed);
        let acked = w.join().expect("the workload thread");
        outcome.map(|()| acked)
    })?;
    // The rebuild: every stale copy resynced, by this client in a file system of the
    // bench's own, by the MDS's background rebuild in another.
    let rebuild = Instant::now();
    let resynced = match outside {
        false => {
            let mut n = 0;
            for i in 0..a.files {
                n += client.resync(&format!("/failover/f{i}"))?.len();
            }
            n
        }
        true => wait_in_sync(&client, a.files)?,
    };
    let rebuild_s = rebuild.elapsed().as_secs_f64();
    let len = a.file_mib << 20;
    let mut lost = 0;
    for (i, &v) in acked.iter().enumerate() {
        let f = client.open(&format!("/failover/f{i}"), &OpenOptions::read())?;
        let mut back = vec![0u8; len];
        let n = f.read_at(&mut back, 0)?;
        if v > 0 && (n != len || back != content(i, v, len)) {
            lost += 1;
        }
    }
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "kill={} provider={} files={} ops={} errors={} copies_resynced={resynced}",
        match (outside, a.kill) {
            (true, _) => "outside",
            (false, Victim::Oss) => "oss",
            (false, Victim::Mds) => "mds",
        },
        match outside {
            // The file system's own, as its map says.
            true => client
                .map()
                .servers
                .first()
                .map_or("?".to_string(), |s| s.provider.clone()),
            false => a.provider.clone(),
        },
        a.files,
        n(&counts.ops),
        n(&counts.errors)
    );
    println!(
        "pause_ms={} lost_ops={lost} corrupt={} rebuild_s={rebuild_s:.2}",
        n(&counts.longest) / 1_000_000,
        n(&counts.corrupt)
    );
    if lost + n(&counts.corrupt) + n(&counts.errors) > 0 {
        return Err(BenchError::msg("lost, corrupt or failed operations"));
    }
    Ok(())
}
