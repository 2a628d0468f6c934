//! `nacre-bench soak`: clients that come and go, under mixed metadata and I/O, with
//! every byte checked. The bench keeps `--clients` client processes running for
//! `--minutes`: each lives a few seconds to a few tens of seconds in a directory of its
//! own, creating, writing, overwriting, truncating, reading, renaming, listing and
//! removing files and directories against a model of what they should hold, and every
//! `--kill-every` seconds one of them, at random, is killed with SIGKILL. Each client
//! reports its counts once a second; a killed client's last report counts.
//!
//! Last line: `ops=N lost_replies=N timeouts=N corrupt=N`, where `lost_replies` are
//! requests whose answer did not come within the request timeout (each try; with every
//! server alive, a reply lost), `timeouts` operations that failed for want of an answer
//! after recovery, and `corrupt` reads, sizes and listings that differ from the model.
//! The line before says `clients=N killed=N errors=N` (errors: any other failure). The
//! exit status is 1 unless the last four counts and the errors are all 0.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nacre_client::{errno, Client, OpenOptions};
use nacre_proto::layout::{FirstOst, StripeCount, StripeSpec};

use crate::BenchError;

#[derive(clap::Args)]
pub struct SoakArgs {
    /// The MGS, HOST:PORT [env: NACRE_MGS].
    #[arg(long)]
    mgs: Option<String>,
    /// Client processes running at once.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// How long to run (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Seconds between SIGKILLs of a random client (0: none).
    #[arg(long, default_value_t = 5.0)]
    kill_every: f64,
    /// Directory in nacre the run works under (a fresh subdirectory per run).
    #[arg(long, default_value = "/soak")]
    dir: String,
    /// Seed of the clients' choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
}

/// One client process of a soak (started by `soak`, not by hand).
#[derive(clap::Args)]
pub struct SoakClientArgs {
    #[arg(long)]
    mgs: String,
    /// Its own directory in nacre (made fresh).
    #[arg(long)]
    dir: String,
    #[arg(long)]
    seconds: f64,
    #[arg(long)]
    seed: u64,
}

/// What a client counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    ops: u64,
    lost_replies: u64,
    timeouts: u64,
    corrupt: u64,
    errors: u64,
}

impl Counts {
    fn line(&self) -> String {
        format!(
            "ops={} lost_replies={} timeouts={} corrupt={} errors={}",
            self.ops, self.lost_replies, self.timeouts, self.corrupt, self.errors
        )
    }

    fn parse(line: &str) -> Option<Counts> {
        let mut c = Counts::default();
        for field in line.split_whitespace() {
            let (k, v) = field.split_once('=')?;
            let v: u64 = v.parse().ok()?;
            match k {
                "ops" => c.ops = v,
                "lost_replies" => c.lost_replies = v,
                "timeouts" => c.timeouts = v,
                "corrupt" => c.corrupt = v,
                "errors" => c.errors = v,
                _ => {}
            }
        }
        Some(c)
    }

    fn add(&mut self, o: Counts) {
        self.ops += o.ops;
        self.lost_replies += o.lost_replies;
        self.timeouts += o.timeouts;
        self.corrupt += o.corrupt;
        self.errors += o.errors;
    }
}

/// xorshift64*: every choice of a client follows from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// A running client process and its last report.
struct Running {
    child: Child,
    last: Arc<Mutex<Counts>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

pub fn run(a: &SoakArgs) -> Result<(), BenchError> {
    let mgs = nacre_mgc::mgs_address(a.mgs.clone())
        .ok_or_else(|| BenchError::msg("no MGS: give --mgs HOST:PORT or set NACRE_MGS"))?;
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let client = Client::connect(&mgs, Default::default())?;
    match client.mkdir(&a.dir, 0o755) {
        Err(e) if errno(&e) != libc::EEXIST => return Err(e.into()),
        _ => {}
    }
    let run_dir = format!(
        "{}/run-{}-{seed:x}",
        a.dir.trim_end_matches('/'),
        std::process::id()
    );
    client.mkdir(&run_dir, 0o755)?;
    // Striped over two OSTs in small stripes, so that most files span objects.
    client.set_layout(
        &run_dir,
        StripeSpec {
            stripe_size: 64 << 10,
            count: StripeCount::Count(2),
            first: FirstOst::Any,
            mirrors: 1,
        },
    )?;
    println!(
        "soak: {} clients for {} min under {run_dir}, seed {seed:#x}",
        a.clients, a.minutes
    );
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.minutes * 60.0);
    let kill_every = (a.kill_every > 0.0).then(|| Duration::from_secs_f64(a.kill_every));
    let mut next_kill = kill_every.map(|d| start + d);
    let mut running: Vec<Running> = Vec::new();
    let (mut total, mut started, mut killed) = (Counts::default(), 0u64, 0u64);
    while Instant::now() < deadline {
        while running.len() < a.clients {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_secs_f64();
            let life = (3.0 + rng.below(27) as f64).min(left.max(1.0));
            let dir = format!("{run_dir}/c{started}");
            running.push(spawn(&mgs, &dir, life, rng.below(u64::MAX))?);
            started += 1;
        }
        if next_kill.is_some_and(|t| Instant::now() >= t) && !running.is_empty() {
            let i = rng.below(running.len() as u64) as usize;
            let pid = running[i].child.id();
            // SAFETY: kill(2) on the pid of a child this process started and has not
            // reaped (so the pid is still ours).
            if unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
                killed += 1;
            }
            next_kill = kill_every.map(|d| Instant::now() + d);
        }
        reap(&mut running, &mut total, false);
        std::thread::sleep(Duration::from_millis(50));
    }
    // The last clients end on their own (their lifetimes end by the deadline).
    let grace = Instant::now() + Duration::from_secs(120);
    while !running.is_empty() && Instant::now() < grace {
        reap(&mut running, &mut total, false);
        std::thread::sleep(Duration::from_millis(50));
    }
    for r in &mut running {
        let _ = r.child.kill();
    }
    reap(&mut running, &mut total, true);
    println!("clients={started} killed={killed} errors={}", total.errors);
    println!(
        "ops={} lost_replies={} timeouts={} corrupt={}",
        total.ops, total.lost_replies, total.timeouts, total.corrupt
    );
    match total.lost_replies + total.timeouts + total.corrupt + total.errors {
        0 => Ok(()),
        _ => Err(BenchError::msg(
            "the soak saw lost replies, timeouts, corruption or errors",
        )),
    }
}

fn spawn(mgs: &str, dir: &str, seconds: f64, seed: u64) -> Result<Running, BenchError> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["soak-client", "--mgs", mgs, "--dir", dir])
        .args([
            "--seconds",
            &format!("{seconds:.1}"),
            "--seed",
            &seed.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let out = child.stdout.take().expect("piped");
    let last = Arc::new(Mutex::new(Counts::default()));
    let reader = {
        let last = last.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(c) = line.strip_prefix("counts ").and_then(Counts::parse) {
                    *last.lock().unwrap_or_else(|p| p.into_inner()) = c;
                }
            }
        })
    };
    Ok(Running {
        child,
        last,
        reader: Some(reader),
    })
}

/// Collects the clients that ended (all of them with `all`): their last counts, and an
/// error for one that failed other than by our SIGKILL.
fn reap(running: &mut Vec<Running>, total: &mut Counts, all: bool) {
    let mut i = 0;
    while i < running.len() {
        let status = match all {
            true => running[i].child.wait().ok(),
            false => running[i].child.try_wait().ok().flatten(),
        };
        let Some(status) = status else {
            i += 1;
            continue;
        };
        let mut r = running.swap_remove(i);
        if let Some(t) = r.reader.take() {
            let _ = t.join();
        }
        let mut c = *r.last.lock().unwrap_or_else(|p| p.into_inner());
        use std::os::unix::process::ExitStatusExt;
        if status.signal().is_none() && !status.success() {
            eprintln!("soak: a client exited with {status}");
            c.errors += 1;
        }
        total.add(c);
    }
}

/// A client process: its own directory, a model of what it should hold, random
/// operations checked against it until its time is up; counts on stdout every second.
pub fn client(a: &SoakClientArgs) -> Result<(), BenchError> {
    let c = Client::connect(&a.mgs, Default::default())?;
    let mut w = Worker {
        c: &c,
        dir: a.dir.clone(),
        rng: Rng::new(a.seed),
        files: BTreeMap::new(),
        subdirs: Vec::new(),
        counts: Counts::default(),
        next: 0,
    };
    let made = c.mkdir(&a.dir, 0o755).map(|_| ());
    w.count("mkdir", made);
    let until = Instant::now() + Duration::from_secs_f64(a.seconds);
    let mut report = Instant::now();
    while Instant::now() < until {
        w.step();
        if report.elapsed() >= Duration::from_secs(1) {
            w.report(&c);
            report = Instant::now();
        }
    }
    w.clean_up();
    w.report(&c);
    Ok(())
}

/// Files kept at most per client, and their largest size.
const MAX_FILES: usize = 24;
const MAX_LEN: usize = 512 << 10;

struct Worker<'a> {
    c: &'a Client,
    dir: String,
    rng: Rng,
    /// name -> what the file holds.
    files: BTreeMap<String, Vec<u8>>,
    subdirs: Vec<String>,
    counts: Counts,
    next: u64,
}

impl Worker<'_> {
    fn report(&mut self, c: &Client) {
        self.counts.lost_replies = c.unanswered();
        println!("counts {}", self.counts.line());
        let _ = std::io::stdout().flush();
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let seed = self.rng.below(u64::MAX);
        nacre_fabric::testing::pattern(seed, len)
    }

    /// A length: mostly small, sometimes up to [`MAX_LEN`].
    fn len(&mut self) -> usize {
        match self.rng.below(4) {
            0 => self.rng.below(MAX_LEN as u64) as usize,
            _ => self.rng.below(16 << 10) as usize,
        }
    }

    fn pick(&mut self) -> Option<String> {
        let n = self.files.len() as u64;
        (n > 0).then(|| {
            let i = self.rng.below(n) as usize;
            self.files.keys().nth(i).cloned().expect("in range")
        })
    }

    /// Counts an operation's outcome.
    fn count(&mut self, what: &str, r: std::io::Result<()>) {
        match r {
            Ok(()) => self.counts.ops += 1,
            Err(e) if errno(&e) == libc::ETIMEDOUT => {
                eprintln!("soak client: {what}: {e}");
                self.counts.timeouts += 1;
            }
            Err(e) => {
                eprintln!("soak client: {what}: {e}");
                self.counts.errors += 1;
            }
        }
    }

    fn corrupt(&mut self, what: String) {
        eprintln!("soak client: CORRUPT: {what}");
        self.counts.corrupt += 1;
    }

    fn step(&mut self) {
        match self.rng.below(20) {
            0..=4 if self.files.len() < MAX_FILES => self.create(),
            0..=6 => self.overwrite(),
            7 => self.truncate(),
            8..=12 => self.verify(),
            13 => self.rename(),
            14 | 15 => self.remove(),
            16 => self.list(),
            17 => self.dirs(),
            _ => self.stat(),
        }
    }

    fn create(&mut self) {
        self.next += 1;
        let name = format!("f{}", self.next);
        let len = self.len();
        let data = self.bytes(len);
        let path = self.path(&name);
        let r = (|| {
            let f = self.c.create(&path, 0o644, None)?;
            f.write_at(&data, 0)?;
            f.close()
        })();
        let ok = r.is_ok();
        self.count("create", r);
        if ok {
            self.files.insert(name, data);
        }
    }

    fn overwrite(&mut self) {
        let Some(name) = self.pick() else { return };
        let len = self.files[&name].len();
        // Somewhere in the file or just past its end (a hole between), never past
        // MAX_LEN.
        let at = (self.rng.below(len as u64 + 4096) as usize).min(MAX_LEN - 1);
        let n = 1 + self.rng.below(64 << 10) as usize;
        let n = n.min(MAX_LEN - at);
        let data = self.bytes(n);
        let path = self.path(&name);
        let r = (|| {
            let f = self
                .c
                .open(&path, &OpenOptions::read().flags(libc::O_RDWR))?;
            f.write_at(&data, at as u64)?;
            f.close()
        })();
        let ok = r.is_ok();
        self.count("overwrite", r);
        if ok {
            let model = self.files.get_mut(&name).expect("picked");
            if model.len() < at + n {
                model.resize(at + n, 0);
            }
            model[at..at + n].copy_from_slice(&data);
        }
    }

    fn truncate(&mut self) {
        let Some(name) = self.pick() else { return };
        let size = self.rng.below(MAX_LEN as u64) as usize;
        let r = self.c.truncate(&self.path(&name), size as u64);
        let ok = r.is_ok();
        self.count("truncate", r);
        if ok {
            self.files.get_mut(&name).expect("picked").resize(size, 0);
        }
    }

    fn verify(&mut self) {
        let Some(name) = self.pick() else { return };
        let path = self.path(&name);
        let r = (|| {
            // Read to the end, whatever the model says the length is: a file longer
            // than the model is as wrong as a shorter one.
            let f = self.c.open(&path, &OpenOptions::read())?;
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 128 << 10];
            loop {
                let n = f.read_at(&mut chunk, buf.len() as u64)?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            f.close()?;
            Ok(buf)
        })();
        match r {
            Ok(buf) => {
                self.counts.ops += 1;
                let want = &self.files[&name];
                if &buf != want {
                    let at = buf.iter().zip(want.iter()).position(|(a, b)| a != b);
                    self.corrupt(format!(
                        "{path}: read {} bytes, the model holds {} (first difference at {at:?})",
                        buf.len(),
                        want.len()
                    ));
                }
            }
            Err(e) => self.count("read", Err(e)),
        }
    }

    fn stat(&mut self) {
        let Some(name) = self.pick() else { return };
        let path = self.path(&name);
        match self.c.stat(&path) {
            Ok(a) => {
                self.counts.ops += 1;
                let want = self.files[&name].len() as u64;
                if a.size != want {
                    self.corrupt(format!(
                        "{path}: size {} by stat, {want} in the model",
                        a.size
                    ));
                }
            }
            Err(e) => self.count("stat", Err(e)),
        }
    }

    fn rename(&mut self) {
        let Some(name) = self.pick() else { return };
        self.next += 1;
        let to = format!("f{}", self.next);
        let r = self.c.rename(&self.path(&name), &self.path(&to));
        let ok = r.is_ok();
        self.count("rename", r);
        if ok {
            let data = self.files.remove(&name).expect("picked");
            self.files.insert(to, data);
        }
    }

    fn remove(&mut self) {
        let Some(name) = self.pick() else { return };
        let r = self.c.unlink(&self.path(&name));
        let ok = r.is_ok();
        self.count("unlink", r);
        if ok {
            self.files.remove(&name);
        }
    }

    fn list(&mut self) {
        match self.c.readdir(&self.dir) {
            Ok(entries) => {
                self.counts.ops += 1;
                let mut got: Vec<String> = entries
                    .iter()
                    .map(|e| String::from_utf8_lossy(&e.name).into_owned())
                    .filter(|n| n != "." && n != "..")
                    .collect();
                got.sort();
                let mut want: Vec<String> = self.files.keys().cloned().collect();
                want.extend(self.subdirs.iter().cloned());
                want.sort();
                if got != want {
                    self.corrupt(format!("{}: lists {got:?}, the model {want:?}", self.dir));
                }
            }
            Err(e) => self.count("readdir", Err(e)),
        }
    }

    fn dirs(&mut self) {
        if self.subdirs.is_empty() || self.rng.below(2) == 0 {
            self.next += 1;
            let name = format!("d{}", self.next);
            let r = self.c.mkdir(&self.path(&name), 0o755).map(|_| ());
            let ok = r.is_ok();
            self.count("mkdir", r);
            if ok {
                self.subdirs.push(name);
            }
        } else {
            let name = self.subdirs.pop().expect("not empty");
            let r = self.c.rmdir(&self.path(&name));
            let failed = r.is_err();
            self.count("rmdir", r);
            if failed {
                self.subdirs.push(name);
            }
        }
    }

    /// Removes what this client made (the space comes back at the servers).
    fn clean_up(&mut self) {
        for name in std::mem::take(&mut self.files).into_keys() {
            let r = self.c.unlink(&self.path(&name));
            self.count("unlink", r);
        }
        for name in std::mem::take(&mut self.subdirs) {
            let r = self.c.rmdir(&self.path(&name));
            self.count("rmdir", r);
        }
        let r = self.c.rmdir(&self.dir);
        self.count("rmdir", r);
    }
}
