//! Helpers for the test suites of the crates above this one.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// Deterministic bytes that differ per seed and per position (catches shifted, stale or
/// mixed-up data), for tests that compare what they wrote with what they read.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Says why a test skips something (a provider missing on this machine, ...), on stdout
/// and, when `NACRE_SKIP_LOG` names a file, appended there too: libtest hides the output
/// of passing tests, and scripts/test prints that file so that no skip goes unseen.
pub fn skip(why: &str) {
    println!("SKIP {why}");
    let Some(path) = std::env::var_os("NACRE_SKIP_LOG") else {
        return;
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "SKIP {why}");
    }
}

/// A child process whose stdout lines arrive on a channel; killed (by pid) on drop.
pub struct Proc {
    pub child: Child,
    pub lines: Receiver<String>,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        let tag = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first line containing `what` within `within`.
    pub fn expect(&self, what: &str, within: Duration) -> String {
        self.try_expect(what, within)
            .unwrap_or_else(|| panic!("{}: no line with {what:?} within {within:?}", self.name))
    }

    pub fn try_expect(&self, what: &str, within: Duration) -> Option<String> {
        let until = Instant::now() + within;
        loop {
            let left = until.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(what) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Sends `sig` ("TERM", "STOP", "CONT", ...) to the child; panics if it cannot.
    pub fn signal(&self, sig: &str) {
        if let Err(e) = send_signal(self.pid(), sig) {
            panic!("{}: signal {sig} to pid {}: {e}", self.name, self.pid());
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Exit code within `within`, or None if still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Proc {
    /// A stopped child is continued first, so that the kill is not left pending.
    fn drop(&mut self) {
        let _ = send_signal(self.pid(), "CONT");
        self.kill9();
    }
}

/// Sends the signal named `sig` (without its SIG prefix: "KILL", "TERM", "STOP", "CONT",
/// ...) to `pid` with kill(2): tests must not need procps's `kill`, which a minimal
/// system lacks.
pub fn send_signal(pid: u32, sig: &str) -> std::io::Result<()> {
    use nix::sys::signal::{kill, Signal};
    let signal: Signal = format!("SIG{sig}")
        .parse()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no such signal"))?;
    let pid = i32::try_from(pid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    kill(nix::unistd::Pid::from_raw(pid), signal).map_err(std::io::Error::from)
}

/// `cmd` as a shell script starts a background job: with SIGINT ignored, which exec
/// keeps (a server must stop on SIGINT all the same).
pub fn with_sigint_ignored(cmd: &Command) -> Command {
    let mut sh = Command::new("sh");
    sh.args(["-c", "trap '' INT; exec \"$0\" \"$@\""])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    sh
}

/// A binary of this workspace (`nacre-oss`, `nacre`, ...) for the tests of another
/// package, which cargo gives no `CARGO_BIN_EXE_` for: the one built beside the test
/// (`cargo build --workspace --bins`, which scripts/test runs before the tests).
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join(name))
        .expect("a test binary lives in target/PROFILE/deps");
    assert!(
        bin.exists(),
        "{} is not built: run `cargo build --workspace --bins` first (scripts/test does)",
        bin.display()
    );
    bin
}

/// A child process that is killed (SIGKILL) and reaped when the guard drops, so that a
/// test that fails half-way leaves no server running; [`KillOnDrop::into_inner`] takes
/// the child back for a test that waits for it itself.
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    pub fn new(child: Child) -> KillOnDrop {
        KillOnDrop(Some(child))
    }

    pub fn child(&mut self) -> &mut Child {
        self.0
            .as_mut()
            .expect("the child is there until into_inner")
    }

    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("the child is there until into_inner")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Ends the whole test process, with a message naming the test, when a test runs past
/// `limit`: a provider call that never returns (seen once in CI, inside a peer-killed
/// test) would otherwise hold the suite until CI's own deadline. Disarmed on drop.
pub struct Watchdog {
    _disarm: std::sync::mpsc::Sender<()>,
}

impl Watchdog {
    pub fn arm(test: &'static str, limit: Duration) -> Watchdog {
        let (tx, rx) = channel::<()>();
        std::thread::spawn(move || {
            // Ok or Disconnected: the test ended (the guard dropped) in time.
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!(
                    "WATCHDOG {test}: still running after {} s; ending the test process",
                    limit.as_secs()
                );
                std::process::abort();
            }
        });
        Watchdog { _disarm: tx }
    }
}
