//! `nacre mount` and `nacre umount`: the FUSE mount (crate nacre-mount) as a command.
//!
//! `nacre mount MOUNTPOINT` checks the mountpoint, then starts itself again in the
//! foreground (`-f`) in a session of its own and returns once the mount is there (or
//! with the daemon's error). The foreground process mounts, says so, and serves until
//! SIGINT or SIGTERM, then unmounts. A mount whose process died leaves a mountpoint
//! that answers ENOTCONN: `nacre umount` clears it (fusermount3 -u, else a lazy
//! umount as root).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nacre_client::ClientConfig;
use nacre_mount::MountConfig;

use crate::CliError;

#[derive(Debug, clap::Args)]
pub struct MountArgs {
    /// An empty directory to mount on.
    pub mountpoint: PathBuf,
    /// FUSE mount options, comma-separated (e.g. `-o ro`).
    #[arg(short = 'o', value_delimiter = ',')]
    pub options: Vec<String>,
    /// Stay in the foreground (Ctrl-C unmounts).
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// FUSE session threads, which serve namespace requests [default: one per two
    /// CPUs, 1 to 4].
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Whether `dir` is a mount point now (from /proc/self/mountinfo).
pub fn is_mounted(dir: &Path) -> bool {
    let Ok(dir) = std::fs::canonicalize(dir).or_else(|_| absolute(dir)) else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape(m) == dir.to_string_lossy())
}

fn absolute(dir: &Path) -> std::io::Result<PathBuf> {
    std::path::absolute(dir)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
pub fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Refuses a missing, non-directory, busy or non-empty mountpoint.
fn check_mountpoint(dir: &Path) -> Result<(), CliError> {
    let shown = dir.display();
    if is_mounted(dir) {
        return Err(CliError::msg(format!(
            "{shown}: already a mount point (if its process died: nacre umount {shown})"
        )));
    }
    let meta = std::fs::metadata(dir).map_err(|e| CliError::msg(format!("{shown}: {e}")))?;
    if !meta.is_dir() {
        return Err(CliError::msg(format!("{shown}: not a directory")));
    }
    let mut entries = std::fs::read_dir(dir).map_err(|e| CliError::msg(format!("{shown}: {e}")))?;
    if entries.next().is_some() {
        return Err(CliError::msg(format!("{shown}: not empty")));
    }
    Ok(())
}

pub fn mount(mgs: &str, a: &MountArgs, cfg: ClientConfig) -> Result<(), CliError> {
    check_mountpoint(&a.mountpoint)?;
    match a.foreground {
        true => foreground(mgs, a, cfg),
        false => daemon(mgs, a, &cfg),
    }
}

fn foreground(mgs: &str, a: &MountArgs, cfg: ClientConfig) -> Result<(), CliError> {
    // First, before any thread starts (see nacre_fabric::signals).
    let stop = nacre_fabric::signals::stop_on_signals()
        .map_err(|e| CliError::msg(format!("taking SIGINT/SIGTERM: {e}")))?;
    let client =
        nacre_client::Client::connect(mgs, cfg).map_err(|e| crate::connect_error(mgs, e))?;
    let cfg = MountConfig {
        fsname: format!("nacre:{}", client.map().fsname),
        options: a.options.clone(),
        threads: a
            .threads
            .unwrap_or_else(nacre_mount::session_threads)
            .max(1),
    };
    let session = nacre_mount::mount(client, &a.mountpoint, &cfg)
        .map_err(|e| CliError::io(&format!("mounting on {}", a.mountpoint.display()), e))?;
    println!(
        "nacre mount: {} mounted on {} (pid {})",
        cfg.fsname,
        a.mountpoint.display(),
        std::process::id()
    );
    nacre_mount::serve_until(session, &stop, &a.mountpoint);
    println!("nacre mount: {} unmounted", a.mountpoint.display());
    Ok(())
}

/// Starts `nacre mount -f` in a session of its own, its output to a log; returns
/// once the mount shows, or with the daemon's last words if it ended first.
fn daemon(mgs: &str, a: &MountArgs, cfg: &ClientConfig) -> Result<(), CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::msg(format!("nacre: {e}")))?;
    let log = std::env::temp_dir().join(format!(
        "nacre-mount-{}.log",
        a.mountpoint.display().to_string().replace('/', "_")
    ));
    let out = std::fs::File::create(&log)
        .map_err(|e| CliError::msg(format!("{}: {e}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| CliError::msg(format!("{}: {e}", log.display())))?;
    let mut cmd = Command::new("setsid");
    cmd.arg(exe).args(["--mgs", mgs, "mount", "-f"]);
    if let Some(src) = &cfg.source {
        cmd.args(["--source", src]);
    }
    if let Some(key) = &cfg.keys.file {
        cmd.arg("--key").arg(key);
    }
    if !a.options.is_empty() {
        cmd.arg("-o").arg(a.options.join(","));
    }
    cmd.arg(&a.mountpoint)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let mut child = cmd
        .spawn()
        .map_err(|e| CliError::msg(format!("starting the mount daemon: {e}")))?;
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if is_mounted(&a.mountpoint) {
            println!(
                "nacre mount: mounted on {} (daemon pid {}, log {})",
                a.mountpoint.display(),
                child.id(),
                log.display()
            );
            return Ok(());
        }
        if let Ok(Some(_)) = child.try_wait() {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            let last = said
                .lines()
                .last()
                .unwrap_or("no output")
                .trim_start_matches("nacre: ");
            return Err(CliError::msg(format!("mount failed: {last}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    Err(CliError::msg(format!(
        "{}: not mounted within 60 s (see {})",
        a.mountpoint.display(),
        log.display()
    )))
}

/// Unmounts `dir`: fusermount3 -u, else (a busy or stale mount, as root) a lazy umount.
pub fn umount(dir: &Path) -> Result<(), CliError> {
    if !is_mounted(dir) {
        return Err(CliError::msg(format!("{}: not mounted", dir.display())));
    }
    let quiet = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
    };
    let first = quiet("fusermount3", &["-u"]);
    if matches!(&first, Ok(o) if o.status.success()) {
        return Ok(());
    }
    let lazy = quiet("umount", &["-l"]);
    match lazy {
        Ok(o) if o.status.success() => Ok(()),
        _ => {
            let why = first
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "fusermount3 -u failed".into());
            Err(CliError::msg(format!("{}: {why}", dir.display())))
        }
    }
}
