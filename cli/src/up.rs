//! `nacre up`: start the servers one host runs (by default a whole file system on one
//! machine: an MGS, an MDS and two OSSs with two OSTs each, on 127.0.0.1), wait until
//! the cluster map shows them serving, print `NACRE_MGS=host:port` and on the next line
//! `NACRE_KEY=PATH` (the file system key: `nacre-mgs format` writes it in the MGS's
//! directory; a host without the MGS is given it), and on SIGINT or SIGTERM stop them
//! in order (MDS, then OSSs, then MGS), each cleanly.
//!
//! The servers are the real binaries (`nacre-mgs`, `nacre-mds`, `nacre-oss`), found
//! next to this executable or in PATH, each in its own process group (a Ctrl-C at the
//! terminal reaches `nacre up` alone, which then stops them in order), each logging to
//! `<dir>/logs/<name>.log`. Started again on the same directory, the MGS keeps its map,
//! and the MDS and OSSs reclaim their roles by identity (host and target directory) and
//! serve the same targets.
//!
//! A server that dies is started again (`--restart on-failure`, the default), after a
//! back-off that doubles from 1 s to 30 s while it keeps dying and starts over once it
//! ran a minute; each restart is said on the output and in the server's log. With
//! `--restart never`, a server that dies stops every other one and `nacre up` fails.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nacre_mgc::{BootConfig, MgsClient};
use nacre_proto::bootstrap::{ClusterMap, RoleKind, TargetKind, TargetState};
use serde::Deserialize;

use crate::CliError;

/// What one host runs. With no file, the one-machine default (see [`HostConfig::local`]).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Where targets and logs live unless a section says otherwise.
    pub dir: Option<PathBuf>,
    /// libfabric provider of the MDS and OSSs: tcp, sockets, shm, efa... or auto.
    pub provider: Option<String>,
    /// The MGS every server of this host talks to (required when this host runs no MGS).
    pub mgs_address: Option<String>,
    /// The node address the MDS and OSS cores serve from (default: the provider's).
    pub listen: Option<String>,
    /// The file system key file, for a host that runs no MGS (default: `--key`, else
    /// NACRE_KEY, else /etc/nacre/FSNAME.key). With the MGS here: the one it made.
    pub key: Option<PathBuf>,
    /// Run the MGS here.
    pub mgs: Option<MgsSection>,
    /// Run the MDS here.
    pub mds: Option<MdsSection>,
    /// One OSS process per entry.
    #[serde(default)]
    pub oss: Vec<OssSection>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MgsSection {
    /// HOST:PORT the MGS listens on.
    pub listen: Option<String>,
    pub fsname: Option<String>,
    /// `scratch` (default) or `persistent`: set when the MGS is formatted.
    pub deployment: Option<String>,
    pub stripe_count: Option<u32>,
    pub stripe_size: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MdsSection {
    /// The MDT directory (default `<dir>/mdt`).
    pub dir: Option<PathBuf>,
    /// Reply only once an operation is committed (group commit).
    #[serde(default)]
    pub sync: bool,
    /// MiB per second the rebuild of stale copies may copy (0: none) [default: 100].
    pub rebuild_mib_s: Option<u64>,
    /// Run a standby: follow the MDS serving mds0 (on another host) and take over when
    /// its lease lapses (`nacre-mds serve --standby`).
    #[serde(default)]
    pub standby: bool,
    /// Seconds the object capabilities handed with layouts hold [default: 3600].
    pub capability_lifetime: Option<u64>,
    /// Seconds a silent client's open files stay open [default: 60; at least 5].
    pub open_lease: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OssSection {
    /// OST directories this OSS serves.
    pub osts: Vec<PathBuf>,
    /// Engine cores (default 1).
    pub cores: Option<usize>,
}

/// The default MGS address of `nacre up`.
pub const DEFAULT_MGS: &str = "127.0.0.1:7450";

impl HostConfig {
    /// One machine: MGS on 127.0.0.1:7450, MDS, two OSSs with two OSTs each under `dir`.
    pub fn local(dir: &Path) -> HostConfig {
        let oss = |i: usize| OssSection {
            osts: (0..2)
                .map(|t| dir.join(format!("oss{i}")).join(format!("target{t}")))
                .collect(),
            cores: None,
        };
        HostConfig {
            dir: Some(dir.to_path_buf()),
            provider: None,
            mgs_address: None,
            listen: None,
            key: None,
            mgs: Some(MgsSection::default()),
            mds: Some(MdsSection::default()),
            oss: vec![oss(0), oss(1)],
        }
    }

    pub fn from_file(path: &Path) -> Result<HostConfig, CliError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::msg(format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| CliError::msg(format!("{}: {e}", path.display())))
    }
}

/// Flags of `nacre up`; they override the file's values.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Where data and logs live [default: ./nacre-data].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// libfabric provider: tcp, sockets, shm, or auto (shm when present, else tcp).
    #[arg(long)]
    pub provider: Option<String>,
    /// HOST:PORT the MGS listens on [default: 127.0.0.1:7450]; port 0 picks a free one.
    #[arg(long)]
    pub listen: Option<String>,
    /// What this host runs (TOML; see docs/operations.md); without it, a whole file
    /// system on this machine.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Pin engine cores to CPUs (off by default: on one machine the servers and the
    /// clients share the CPUs).
    #[arg(long)]
    pub pin: bool,
    /// Start, print the connect string, stop cleanly: a check that everything comes up.
    #[arg(long)]
    pub check: bool,
    /// scratch (one copy of every byte, the default) or persistent (every file
    /// mirrored on two OSTs of different OSSs): fixed when the file system is made.
    #[arg(long)]
    pub deployment: Option<nacre_proto::bootstrap::Deployment>,
    /// on-failure: start a server that dies again, with back-off; never: stop every
    /// server when one dies, and fail.
    #[arg(long, value_enum, default_value_t = Restart::OnFailure)]
    pub restart: Restart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Restart {
    OnFailure,
    Never,
}

/// The first wait before starting a dead server again, and the longest.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A server that ran this long before it died starts over at the first back-off.
const BACKOFF_RESET: Duration = Duration::from_secs(60);

/// A running server process and the lines it printed on stdout.
struct Server {
    name: String,
    child: Child,
    lines: Receiver<String>,
    log: PathBuf,
    /// How it was started, to start it again.
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    started: Instant,
    /// The wait before the next restart, and when a dead server is due to start again.
    backoff: Duration,
    due: Option<Instant>,
    restarts: u32,
}

pub fn run(args: &UpArgs, key: Option<PathBuf>) -> Result<(), CliError> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("nacre-data"));
    let mut cfg = match &args.config {
        Some(p) => HostConfig::from_file(p)?,
        None => HostConfig::local(&dir),
    };
    if args.dir.is_some() || cfg.dir.is_none() {
        cfg.dir = Some(dir);
    }
    if let Some(p) = &args.provider {
        cfg.provider = Some(p.clone());
    }
    if let (Some(l), Some(m)) = (&args.listen, cfg.mgs.as_mut()) {
        m.listen = Some(l.clone());
    }
    if let (Some(d), Some(m)) = (args.deployment, cfg.mgs.as_mut()) {
        m.deployment = Some(d.name().to_string());
    }
    // First, before any thread starts: see nacre_fabric::signals for why.
    let stop = nacre_fabric::signals::stop_on_signals()
        .map_err(|e| CliError::msg(format!("taking SIGINT/SIGTERM: {e}")))?;
    if matches!(cfg.provider.as_deref(), None | Some("auto")) {
        cfg.provider = Some(best_local_provider());
    }
    let key = key.or_else(|| cfg.key.clone()).or_else(|| {
        std::env::var_os(nacre_auth::KEY_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let mut up = Up {
        cfg,
        key,
        servers: Vec::new(),
        stop,
        pin: args.pin,
        restart: args.restart,
    };
    let started = up.start();
    let outcome = match started {
        Ok((addr, key)) => {
            println!("NACRE_MGS={addr}");
            println!("NACRE_KEY={}", key.display());
            let _ = std::io::stdout().flush();
            match args.check {
                true => Ok(()),
                false => up.watch(),
            }
        }
        Err(e) => Err(e),
    };
    up.stop_all();
    outcome
}

struct Up {
    cfg: HostConfig,
    /// The file system key every server here proves itself with (NACRE_KEY in their
    /// environment); None until known (the MGS here makes it).
    key: Option<PathBuf>,
    servers: Vec<Server>,
    stop: Arc<AtomicBool>,
    pin: bool,
    restart: Restart,
}

impl Up {
    fn dir(&self) -> PathBuf {
        self.cfg.dir.clone().expect("set by run")
    }

    fn provider(&self) -> String {
        self.cfg.provider.clone().expect("resolved by run")
    }

    /// Starts every server this host runs; returns the MGS address and the key file
    /// once they serve.
    fn start(&mut self) -> Result<(String, PathBuf), CliError> {
        let dir = self.dir();
        std::fs::create_dir_all(dir.join("logs"))
            .map_err(|e| CliError::msg(format!("{}: {e}", dir.display())))?;
        let provider = self.provider();
        println!(
            "nacre up: data under {}, provider {provider}",
            dir.display()
        );
        let mut mgs = self.cfg.mgs_address.clone();
        if let Some(section) = self.cfg.mgs.clone() {
            mgs = Some(self.start_mgs(&section)?);
        }
        let mgs = mgs.ok_or_else(|| {
            CliError::msg("this host runs no MGS: give mgs_address in the config file")
        })?;
        // OSSs first, so the MDS finds OSTs to stripe new files over.
        let mut osts = 0;
        for (i, oss) in self.cfg.oss.clone().iter().enumerate() {
            self.start_oss(i, oss, &mgs, &provider)?;
            osts += oss.osts.len();
        }
        for i in 0..self.cfg.oss.len() {
            self.wait_line(&format!("oss{i}"), "nacre-oss: ready")?;
        }
        if let Some(mds) = self.cfg.mds.clone() {
            self.start_mds(&mds, &mgs, &provider)?;
            let ready = match mds.standby {
                true => "nacre-mds: standby for",
                false => "nacre-mds: ready",
            };
            self.wait_line("mds", ready)?;
        }
        let fsname = self.wait_map(&mgs, osts)?;
        let key = self
            .key
            .clone()
            .unwrap_or_else(|| Path::new(nacre_auth::key::KEY_DIR).join(format!("{fsname}.key")));
        Ok((mgs, key))
    }

    fn start_mgs(&mut self, s: &MgsSection) -> Result<String, CliError> {
        let dir = self.dir().join("mgs");
        let listen = s.listen.clone().unwrap_or_else(|| DEFAULT_MGS.into());
        if !dir.join("mgs.redb").exists() {
            let mut cmd = Command::new(binary("nacre-mgs")?);
            cmd.args(["format", "--dir"])
                .arg(&dir)
                .args(["--fsname", s.fsname.as_deref().unwrap_or("nacre")]);
            if let Some(c) = s.stripe_count {
                cmd.args(["--stripe-count", &c.to_string()]);
            }
            if let Some(d) = &s.deployment {
                cmd.args(["--deployment", d]);
            }
            if let Some(z) = s.stripe_size {
                cmd.args(["--stripe-size", &z.to_string()]);
            }
            run_once(cmd, "nacre-mgs format")?;
        }
        self.key = Some(mgs_key(&dir)?);
        let mut cmd = Command::new(binary("nacre-mgs")?);
        cmd.args(["serve", "--dir"])
            .arg(&dir)
            .args(["--listen", &listen]);
        self.spawn("mgs", cmd)?;
        let line = self.wait_line("mgs", "nacre-mgs: serving")?;
        let addr = line
            .split(" on ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .map(str::to_string)
            .ok_or_else(|| CliError::msg(format!("mgs: no address in {line:?}")))?;
        // Started again, it must listen where every server and client knows it (port 0
        // would pick another).
        let mgs = self.servers.last_mut().expect("just started");
        if let Some(at) = mgs.args.iter().position(|a| a == "--listen") {
            mgs.args[at + 1] = addr.clone().into();
        }
        Ok(addr)
    }

    fn start_oss(
        &mut self,
        i: usize,
        s: &OssSection,
        mgs: &str,
        provider: &str,
    ) -> Result<(), CliError> {
        if s.osts.is_empty() {
            return Err(CliError::msg(format!("oss{i}: no OST directories")));
        }
        let mut cmd = Command::new(binary("nacre-oss")?);
        cmd.args(["serve", "--mgs", mgs, "--provider", provider]);
        for ost in &s.osts {
            std::fs::create_dir_all(ost)
                .map_err(|e| CliError::msg(format!("{}: {e}", ost.display())))?;
            cmd.arg("--ost").arg(ost);
        }
        cmd.args(["--cores", &s.cores.unwrap_or(1).to_string()]);
        self.server_flags(&mut cmd);
        self.spawn(&format!("oss{i}"), cmd)
    }

    fn start_mds(&mut self, s: &MdsSection, mgs: &str, provider: &str) -> Result<(), CliError> {
        let dir = s.dir.clone().unwrap_or_else(|| self.dir().join("mdt"));
        let mut cmd = Command::new(binary("nacre-mds")?);
        cmd.args(["serve", "--dir"])
            .arg(&dir)
            .args(["--mgs", mgs, "--provider", provider]);
        if s.sync {
            cmd.arg("--sync");
        }
        if s.standby {
            cmd.arg("--standby");
        }
        if let Some(r) = s.rebuild_mib_s {
            cmd.args(["--rebuild-mib-s", &r.to_string()]);
        }
        if let Some(t) = s.capability_lifetime {
            cmd.args(["--capability-lifetime", &t.to_string()]);
        }
        if let Some(t) = s.open_lease {
            cmd.args(["--open-lease", &t.to_string()]);
        }
        self.server_flags(&mut cmd);
        self.spawn("mds", cmd)
    }

    fn server_flags(&self, cmd: &mut Command) {
        if !self.pin {
            cmd.arg("--no-pin");
        }
        if let Some(l) = &self.cfg.listen {
            cmd.args(["--listen", l]);
        }
    }

    /// Starts `cmd` (a program and its arguments) as server `name`.
    fn spawn(&mut self, name: &str, cmd: Command) -> Result<(), CliError> {
        let program = PathBuf::from(cmd.get_program());
        let args: Vec<_> = cmd.get_args().map(|a| a.to_os_string()).collect();
        let (child, lines, log) = self.launch(name, &program, &args)?;
        self.servers.push(Server {
            name: name.to_string(),
            child,
            lines,
            log,
            program,
            args,
            started: Instant::now(),
            backoff: BACKOFF_FIRST,
            due: None,
            restarts: 0,
        });
        Ok(())
    }

    /// Runs `program args` in its own process group, stdout and stderr to the log of
    /// server `name`; stdout lines are also passed on so `up` can wait for the server's
    /// "ready".
    fn launch(
        &self,
        name: &str,
        program: &Path,
        args: &[std::ffi::OsString],
    ) -> Result<(Child, Receiver<String>, PathBuf), CliError> {
        use std::os::unix::process::CommandExt;
        let log = self.dir().join("logs").join(format!("{name}.log"));
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| CliError::msg(format!("{}: {e}", log.display())))
        };
        let (err, mut out_log) = (open()?, open()?);
        let mut cmd = Command::new(program);
        if let Some(key) = &self.key {
            cmd.env(nacre_auth::KEY_ENV, key);
        }
        cmd.args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err);
        let mut child = cmd
            .spawn()
            .map_err(|e| CliError::msg(format!("{name}: cannot start: {e}")))?;
        let out = child.stdout.take().expect("piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = writeln!(out_log, "{line}");
                let _ = tx.send(line);
            }
        });
        println!(
            "nacre up: {name} (pid {}) logs to {}",
            child.id(),
            log.display()
        );
        Ok((child, lines, log))
    }

    /// The first line of server `name` that contains `what`; an error if the server
    /// exits, the wait is stopped by a signal, or a minute passes.
    fn wait_line(&mut self, name: &str, what: &str) -> Result<String, CliError> {
        let until = Instant::now() + Duration::from_secs(60);
        let s = self
            .servers
            .iter_mut()
            .find(|s| s.name == name)
            .expect("started");
        while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
            match s.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.contains(what) => return Ok(l),
                Ok(_) => {}
                Err(_) => {
                    if let Ok(Some(st)) = s.child.try_wait() {
                        return Err(CliError::msg(format!(
                            "{name} exited ({st}) before it was ready: see {}",
                            s.log.display()
                        )));
                    }
                }
            }
        }
        Err(CliError::msg(match self.stop.load(Ordering::Relaxed) {
            true => "stopped by a signal while starting".to_string(),
            false => format!("{name} not ready within 60 s: see {}", s.log.display()),
        }))
    }

    /// Waits until the map shows this host's MDS (if it runs one) and `osts` OSTs of
    /// this host's servers up; returns the file system's name.
    fn wait_map(&mut self, mgs: &str, osts: usize) -> Result<String, CliError> {
        let until = Instant::now() + Duration::from_secs(60);
        let keys = nacre_auth::KeySource::new(self.key.clone());
        let mut client = MgsClient::connect_with(mgs, BootConfig::default(), keys)
            .map_err(|e| CliError::msg(format!("MGS {mgs}: {e}")))?;
        let want_mds = self.cfg.mds.is_some();
        loop {
            let map = client
                .fetch_map()
                .map_err(|e| CliError::msg(format!("MGS {mgs}: {e}")))?;
            if serving(&map, want_mds, osts) {
                self.say_deployment(&map);
                return Ok(map.fsname);
            }
            if Instant::now() > until || self.stop.load(Ordering::Relaxed) {
                return Err(CliError::msg(
                    "the cluster map did not show every server up within 60 s",
                ));
            }
            self.check_alive()?;
            let _ = client.wait_map(map.version, Duration::from_millis(500));
        }
    }

    /// Says the file system's deployment type, and that a different one asked for does
    /// not change a file system already made.
    fn say_deployment(&self, map: &ClusterMap) {
        let has = nacre_proto::bootstrap::Deployment::of(&map.layout).name();
        println!("nacre up: {has} file system {}", map.fsname);
        let asked = self.cfg.mgs.as_ref().and_then(|m| m.deployment.as_deref());
        if let Some(asked) = asked.filter(|a| *a != has) {
            println!(
                "nacre up: note: {} was made {has}; --deployment {asked} applies when a \
                 file system is made (an empty --dir)",
                map.fsname
            );
        }
    }

    fn check_alive(&mut self) -> Result<(), CliError> {
        for s in &mut self.servers {
            if let Ok(Some(st)) = s.child.try_wait() {
                return Err(CliError::msg(format!(
                    "{} exited ({st}): see {}",
                    s.name,
                    s.log.display()
                )));
            }
        }
        Ok(())
    }

    /// Runs until a signal. A server that exits on its own is started again after its
    /// back-off, or with `--restart never` ends the run (an error).
    fn watch(&mut self) -> Result<(), CliError> {
        println!("nacre up: serving; Ctrl-C stops every server cleanly");
        let _ = std::io::stdout().flush();
        while !self.stop.load(Ordering::Relaxed) {
            match self.restart {
                Restart::Never => self.check_alive()?,
                Restart::OnFailure => self.restart_dead()?,
            }
            let _ = std::io::stdout().flush();
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Notes servers that died (each restart waits its back-off) and starts again those
    /// whose back-off has passed.
    fn restart_dead(&mut self) -> Result<(), CliError> {
        let now = Instant::now();
        for i in 0..self.servers.len() {
            let s = &mut self.servers[i];
            // Lines of a running server are in its log already: drop them here.
            while s.lines.try_recv().is_ok() {}
            if s.due.is_none() {
                let Ok(Some(st)) = s.child.try_wait() else {
                    continue;
                };
                if s.started.elapsed() >= BACKOFF_RESET {
                    s.backoff = BACKOFF_FIRST;
                }
                s.due = Some(now + s.backoff);
                let line = format!(
                    "nacre up: {} exited ({st}); starting it again in {:?} (see {})",
                    s.name,
                    s.backoff,
                    s.log.display()
                );
                println!("{line}");
                append_line(&s.log, &line);
                s.backoff = (s.backoff * 2).min(BACKOFF_MAX);
            }
            if self.servers[i].due.is_some_and(|d| now >= d) {
                self.relaunch(i)?;
            }
        }
        Ok(())
    }

    /// Starts dead server `i` again as it was first started.
    fn relaunch(&mut self, i: usize) -> Result<(), CliError> {
        let (name, program, args) = {
            let s = &self.servers[i];
            (s.name.clone(), s.program.clone(), s.args.clone())
        };
        let (child, lines, _) = self.launch(&name, &program, &args)?;
        let s = &mut self.servers[i];
        s.restarts += 1;
        let line = format!("nacre up: {name} restarted (restart {})", s.restarts);
        println!("{line}");
        append_line(&s.log, &line);
        s.child = child;
        s.lines = lines;
        s.started = Instant::now();
        s.due = None;
        Ok(())
    }

    /// Stops the servers: MDS first (no new files), then the OSSs, then the MGS.
    fn stop_all(&mut self) {
        let rank = |n: &str| match n {
            "mds" => 0,
            "mgs" => 2,
            _ => 1,
        };
        self.servers.sort_by_key(|s| rank(&s.name));
        for s in &mut self.servers {
            stop_server(s);
        }
        println!("nacre up: stopped");
    }
}

/// Adds `line` to a server's log (what `nacre up` did to it, among its own lines).
/// The file system key in the MGS directory `dir` (`nacre-mgs format` writes one,
/// FSNAME.key), as an absolute path: servers and clients run from elsewhere.
fn mgs_key(dir: &Path) -> Result<PathBuf, CliError> {
    let keys: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| CliError::msg(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
        .collect();
    match keys.as_slice() {
        [one] => {
            std::path::absolute(one).map_err(|e| CliError::msg(format!("{}: {e}", one.display())))
        }
        [] => Err(CliError::msg(format!(
            "{}: no file system key (FSNAME.key): the MGS directory was made before keys; \
             `nacre-mgs format --force` makes a new file system with one",
            dir.display()
        ))),
        _ => Err(CliError::msg(format!(
            "{}: more than one .key file: keep only the file system's",
            dir.display()
        ))),
    }
}

fn append_line(log: &Path, line: &str) {
    if let Ok(mut f) = OpenOptions::new().append(true).open(log) {
        let _ = writeln!(f, "{line}");
    }
}

/// SIGTERM, then up to 20 s for a clean exit, then SIGKILL.
fn stop_server(s: &mut Server) {
    if let Ok(Some(_)) = s.child.try_wait() {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(s.child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if let Ok(Some(st)) = s.child.try_wait() {
            println!("nacre up: {} stopped ({st})", s.name);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("nacre up: {} did not stop within 20 s: killing it", s.name);
    let _ = s.child.kill();
    let _ = s.child.wait();
}

/// Whether `map` shows mds0 (if wanted) and at least `osts` OSTs up.
fn serving(map: &ClusterMap, mds: bool, osts: usize) -> bool {
    let up = |kind: TargetKind| {
        map.targets
            .iter()
            .filter(|t| t.kind == kind && t.state == TargetState::Up)
            .filter(|t| map.server(t.role).is_some())
            .count()
    };
    let mds_ok = !mds
        || map
            .servers
            .iter()
            .any(|s| s.role.kind == RoleKind::Mds && up(TargetKind::Mdt) > 0);
    mds_ok && up(TargetKind::Ost) >= osts
}

/// shm when the machine's libfabric has it (one host: memory copies between
/// processes), else tcp.
pub fn best_local_provider() -> String {
    let has = |p: &str| nacre_fabric::Info::find(&nacre_fabric::Selection::provider(p)).is_ok();
    match has("shm") {
        true => "shm".into(),
        false => "tcp".into(),
    }
}

/// A server binary: next to this executable, else in PATH.
fn binary(name: &str) -> Result<PathBuf, CliError> {
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.exists());
    if let Some(p) = here {
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .ok_or_else(|| {
            CliError::msg(format!(
                "{name} not found next to nacre or in PATH: build every binary with \
                 `cargo build --release --bins`"
            ))
        })
}

fn run_once(mut cmd: Command, what: &str) -> Result<(), CliError> {
    let out = cmd
        .output()
        .map_err(|e| CliError::msg(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(CliError::msg(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
