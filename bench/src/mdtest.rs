//! `nacre-bench mdtest`, in the spirit of mdtest: `-t TASKS` threads each create, stat,
//! list and remove `-n FILES_PER_TASK` empty files under `-d DIR`, in one shared
//! directory or one per task (`--unique-dir`), phase after phase; one line per phase:
//! `phase=<name> ops_per_s=<float>`. On nacre when an MGS is given (`--mgs` or
//! `NACRE_MGS`): each task has its own client endpoint and MDS session. With `--local`
//! (or no MGS), the same phases run with system calls on a local directory, so both
//! figures come from one tool.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use nacre_client::namespace::NamespaceClient;
use nacre_client::{ClientEndpoint, RpcConfig};
use nacre_fabric::Selection;
use nacre_mgc::{BootConfig, MgsClient};
use nacre_proto::bootstrap::{ClusterMap, Role, RoleKind};
use nacre_proto::meta::Creds;

use crate::BenchError;

#[derive(clap::Args, Clone)]
pub struct MdtestArgs {
    /// Files per task.
    #[arg(short = 'n', default_value_t = 1000)]
    files: usize,
    /// Tasks (threads), each with its own client.
    #[arg(short = 't', default_value_t = 1)]
    tasks: usize,
    /// Directory the test works in (a path in nacre, or a local path with --local).
    #[arg(short = 'd', default_value = "/mdtest")]
    dir: String,
    /// One directory per task instead of one shared directory.
    #[arg(long)]
    unique_dir: bool,
    /// The MGS, HOST:PORT [env: NACRE_MGS].
    #[arg(long)]
    mgs: Option<String>,
    /// Run on the local file system at `-d` with system calls.
    #[arg(long)]
    local: bool,
}

/// The operations of a phase, on nacre or on the local file system.
trait Fs {
    fn mkdir(&mut self, path: &str) -> Result<(), String>;
    fn create(&mut self, path: &str) -> Result<(), String>;
    fn stat(&mut self, path: &str) -> Result<(), String>;
    fn list(&mut self, path: &str) -> Result<usize, String>;
    fn remove(&mut self, path: &str) -> Result<(), String>;
}

struct Nacre(NamespaceClient);

impl Nacre {
    /// A failed operation, with the messages this client's endpoint dropped so far
    /// (replies that did not decode or answered nothing it waited for): a reply that
    /// never came was either never sent or dropped here.
    fn failed(&self, what: &str, path: &str, e: nacre_client::ClientError) -> String {
        format!(
            "{what} {path}: {e} ({} messages dropped by this client)",
            self.0.ep.dropped()
        )
    }
}

impl Fs for Nacre {
    fn mkdir(&mut self, path: &str) -> Result<(), String> {
        match self.0.mkdir(path, 0o755) {
            Err(nacre_client::ClientError::Status(libc::EEXIST)) => Ok(()),
            r => r.map(|_| ()).map_err(|e| self.failed("mkdir", path, e)),
        }
    }
    fn create(&mut self, path: &str) -> Result<(), String> {
        let r = self.0.create(path, 0o644);
        r.map(|_| ()).map_err(|e| self.failed("create", path, e))
    }
    fn stat(&mut self, path: &str) -> Result<(), String> {
        let r = self.0.stat(path);
        r.map(|_| ()).map_err(|e| self.failed("stat", path, e))
    }
    fn list(&mut self, path: &str) -> Result<usize, String> {
        let r = self.0.readdir(path);
        r.map(|v| v.len())
            .map_err(|e| self.failed("readdir", path, e))
    }
    fn remove(&mut self, path: &str) -> Result<(), String> {
        let r = self.0.unlink(path);
        r.map_err(|e| self.failed("unlink", path, e))
    }
}

struct Local;

impl Fs for Local {
    fn mkdir(&mut self, path: &str) -> Result<(), String> {
        std::fs::create_dir_all(path).map_err(|e| format!("mkdir {path}: {e}"))
    }
    fn create(&mut self, path: &str) -> Result<(), String> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map(|_| ())
            .map_err(|e| format!("create {path}: {e}"))
    }
    fn stat(&mut self, path: &str) -> Result<(), String> {
        std::fs::metadata(path)
            .map(|_| ())
            .map_err(|e| format!("stat {path}: {e}"))
    }
    fn list(&mut self, path: &str) -> Result<usize, String> {
        Ok(std::fs::read_dir(path)
            .map_err(|e| format!("readdir {path}: {e}"))?
            .count())
    }
    fn remove(&mut self, path: &str) -> Result<(), String> {
        std::fs::remove_file(path).map_err(|e| format!("unlink {path}: {e}"))
    }
}

/// Makes a task's client on the task's own thread (fabric endpoints stay on the
/// thread that opened them).
type Factory = Arc<dyn Fn() -> Result<Box<dyn Fs>, String> + Send + Sync>;

const PHASES: [&str; 4] = ["create", "stat", "readdir", "remove"];

pub fn run(args: &MdtestArgs) -> Result<(), BenchError> {
    if args.files == 0 || args.tasks == 0 {
        return Err(BenchError::msg("-n and -t must be positive"));
    }
    let mgs = nacre_mgc::mgs_address(args.mgs.clone());
    let on_nacre = mgs.is_some() && !args.local;
    let factory: Factory = match (&mgs, on_nacre) {
        (Some(mgs), true) => {
            let mut boot = MgsClient::connect(mgs, BootConfig::default())?;
            let (map, key) = (boot.fetch_map()?, boot.key().cloned());
            let mgs = mgs.clone();
            Arc::new(move || {
                nacre_client(&map, &mgs, key.clone())
                    .map(|n| Box::new(Nacre(n)) as Box<dyn Fs>)
                    .map_err(|e| e.0)
            })
        }
        _ => Arc::new(|| Ok(Box::new(Local) as Box<dyn Fs>)),
    };
    let mut setup = factory().map_err(BenchError)?;
    setup.mkdir(&args.dir).map_err(BenchError)?;
    let dirs: Vec<String> = (0..args.tasks)
        .map(|t| match args.unique_dir {
            true => format!("{}/task{t}", args.dir),
            false => args.dir.clone(),
        })
        .collect();
    for d in &dirs {
        setup.mkdir(d).map_err(BenchError)?;
    }
    println!(
        "nacre-bench mdtest on {}: {} task(s) x {} files in {} ({})",
        if on_nacre { "nacre" } else { "local" },
        args.tasks,
        args.files,
        args.dir,
        if args.unique_dir {
            "a directory per task"
        } else {
            "one shared directory"
        }
    );
    let start_line = Arc::new(Barrier::new(args.tasks + 1));
    let (tx, rx) = std::sync::mpsc::channel();
    let threads: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(t, dir)| {
            let (factory, go, tx, dir, files) = (
                factory.clone(),
                start_line.clone(),
                tx.clone(),
                dir.clone(),
                args.files,
            );
            std::thread::spawn(move || {
                let mut fs = factory();
                for phase in PHASES {
                    go.wait();
                    let r = match &mut fs {
                        Ok(fs) => task(fs.as_mut(), &dir, t, files, phase),
                        Err(e) => Err(e.clone()),
                    };
                    let _ = tx.send(r);
                }
            })
        })
        .collect();
    let mut failed = None;
    for phase in PHASES {
        start_line.wait();
        let start = Instant::now();
        let mut ops = 0u64;
        for _ in 0..args.tasks {
            match rx.recv() {
                Ok(Ok(n)) => ops += n,
                Ok(Err(e)) => failed = failed.or(Some(e)),
                Err(_) => failed = failed.or(Some("a task died".into())),
            }
        }
        let secs = start.elapsed().as_secs_f64();
        if failed.is_none() {
            println!("phase={phase} ops_per_s={:.2}", ops as f64 / secs);
        }
    }
    for t in threads {
        let _ = t.join();
    }
    match failed {
        Some(e) => Err(BenchError(e)),
        None => Ok(()),
    }
}

/// A namespace client of the MDS in `map`, serving from the address that routes to
/// the MGS at `mgs` (`NACRE_SOURCE` when set), as the client library does.
fn nacre_client(
    map: &ClusterMap,
    mgs: &str,
    key: Option<nacre_auth::Key>,
) -> Result<NamespaceClient, BenchError> {
    let role = Role {
        kind: RoleKind::Mds,
        index: 0,
    };
    let provider = map
        .server(role)
        .map(|s| s.provider.clone())
        .ok_or_else(|| BenchError::msg("no MDS in the cluster map"))?;
    let cfg = RpcConfig {
        msg_size: nacre_proto::meta::MSG_SIZE,
        timeout: Duration::from_secs(30),
        key,
        ..Default::default()
    };
    let source = std::env::var("NACRE_SOURCE").ok().filter(|s| !s.is_empty());
    let ep = ClientEndpoint::open(&Selection::toward(&provider, source, mgs), cfg)?;
    Ok(NamespaceClient::connect(ep, map, Creds::root())?)
}

fn task(fs: &mut dyn Fs, dir: &str, t: usize, files: usize, phase: &str) -> Result<u64, String> {
    let name = |i: usize| format!("{dir}/f.{t}.{i}");
    match phase {
        "create" => (0..files).try_for_each(|i| fs.create(&name(i)))?,
        "stat" => (0..files).try_for_each(|i| fs.stat(&name(i)))?,
        "remove" => (0..files).try_for_each(|i| fs.remove(&name(i)))?,
        _ => {
            // Every task lists the directory once; an op per entry seen, as mdtest counts.
            return fs.list(dir).map(|n| n as u64);
        }
    }
    Ok(files as u64)
}
