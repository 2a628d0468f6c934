//! `nacre run [--mount DIR] -- CMD ARGS...`: runs CMD with the interception library
//! (libnacre_preload.so, docs/preload.md) loaded, so that its calls on paths under
//! the nacre mounts of this machine go from the process straight to the servers.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::CliError;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Serve only this mount (by default every nacre mount of the file system).
    #[arg(long)]
    mount: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<OsString>,
}

/// The library's name; found through NACRE_PRELOAD_LIB, else beside the `nacre`
/// binary (as cargo builds both), else in ../lib from it (an install prefix).
const LIB: &str = "libnacre_preload.so";

fn library() -> Result<PathBuf, CliError> {
    if let Some(p) = std::env::var_os("NACRE_PRELOAD_LIB").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return match p.is_file() {
            true => Ok(p),
            false => Err(CliError::msg(format!(
                "NACRE_PRELOAD_LIB={}: no such file",
                p.display()
            ))),
        };
    }
    let exe = std::env::current_exe().map_err(|e| CliError::msg(format!("nacre: {e}")))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    [dir.join(LIB), dir.join("../lib").join(LIB)]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CliError::msg(format!(
                "{LIB} is not beside {} (build it: cargo build --release -p nacre-preload; \
                 or set NACRE_PRELOAD_LIB)",
                exe.display()
            ))
        })
}

/// The nacre mounts of this machine (source `nacre:NAME`, type fuse, in /proc/mounts).
fn nacre_mounts() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let ours = f.len() > 2 && f[0].starts_with("nacre:") && f[2].starts_with("fuse");
            ours.then(|| crate::mount::unescape(f[1]))
        })
        .collect()
}

/// Replaces this process with the command; returns only on failure.
pub fn run(
    mgs: &str,
    a: &RunArgs,
    key: Option<&Path>,
    source: Option<&str>,
) -> Result<(), CliError> {
    let mounts = nacre_mounts();
    let only = match &a.mount {
        Some(m) => {
            let abs = std::fs::canonicalize(m)
                .map_err(|e| CliError::msg(format!("{}: {e}", m.display())))?;
            let shown = abs.to_string_lossy().into_owned();
            if !mounts.contains(&shown) {
                return Err(CliError::msg(format!("{}: not a nacre mount", m.display())));
            }
            Some(shown)
        }
        None if mounts.is_empty() => {
            return Err(CliError::msg(
                "no nacre mount on this machine: the library serves paths under one \
                 (nacre mount DIR first)",
            ))
        }
        None => None,
    };
    let lib = library()?;
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(old) if !old.is_empty() => format!("{}:{old}", lib.display()),
        _ => lib.display().to_string(),
    };
    let mut cmd = Command::new(&a.cmd[0]);
    cmd.args(&a.cmd[1..])
        .env("LD_PRELOAD", preload)
        .env("NACRE_MGS", mgs);
    if let Some(m) = only {
        cmd.env("NACRE_PRELOAD_MOUNT", m);
    }
    if let Some(k) = key {
        cmd.env("NACRE_KEY", k);
    }
    if let Some(s) = source {
        cmd.env("NACRE_SOURCE", s);
    }
    let e = cmd.exec();
    Err(CliError::io(&a.cmd[0].to_string_lossy(), e))
}
