//! `nacre repo`: data repository associations, as FSx for Lustre's (link a directory
//! to an S3 prefix or a local directory, import, export, release) with Lustre's HSM
//! verbs (`restore`, `release`, `status` as `hsm_state`). See docs/repositories.md.

use std::io::Write;

use clap::{Args, Subcommand};
use nacre_client::Client;
use nacre_proto::meta::hsm::{policy, FileState, RepoSpec, TaskInfo};
use nacre_proto::meta::FileKind;

use crate::commands::fs_path;
use crate::CliError;

#[derive(Subcommand)]
pub enum RepoCmd {
    /// Link an empty directory to a repository: s3://bucket/prefix (endpoint, region
    /// and credentials from the flags, else AWS_ENDPOINT_URL, AWS_REGION,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or file:///dir. Root only.
    Link(LinkArgs),
    /// The associations, and the import, export and load tasks.
    List,
    /// Forget a directory's association (its files stay). Root only.
    Unlink { path: String },
    /// Load released files (a directory: every file below it), as `lfs hsm_restore`.
    Restore { paths: Vec<String> },
    /// Write new and changed files back to their repository.
    Export { paths: Vec<String> },
    /// Free the OST space of exported, unchanged files; the next read loads them.
    Release { paths: Vec<String> },
    /// Each file's state (released, cached, dirty, exported) and the tasks running.
    Status { paths: Vec<String> },
}

#[derive(Args)]
pub struct LinkArgs {
    pub path: String,
    pub url: String,
    /// Import the repository's listing now (files appear released).
    #[arg(long)]
    pub import_metadata: bool,
    /// Changes in the repository applied automatically: new,changed,deleted.
    #[arg(long, default_value = "")]
    pub auto_import: String,
    /// Changes here written back automatically: new,changed,deleted.
    #[arg(long, default_value = "")]
    pub auto_export: String,
    /// Seconds between automatic imports' listings [default: 60].
    #[arg(long, default_value_t = 0)]
    pub interval: u32,
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint: Option<String>,
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub secret_access_key: Option<String>,
}

pub fn run(c: &Client, cmd: &RepoCmd) -> Result<(), CliError> {
    match cmd {
        RepoCmd::Link(a) => link(c, a),
        RepoCmd::List => list(c),
        RepoCmd::Unlink { path } => c
            .repo_unlink(fs_path(path)?)
            .map_err(|e| said(path, e, "unlink")),
        RepoCmd::Restore { paths } => each_file(c, paths, "restore", |p| c.repo_restore(p)),
        RepoCmd::Export { paths } => each_file(c, paths, "export", |p| c.repo_export(p)),
        RepoCmd::Release { paths } => each_file(c, paths, "release", |p| c.repo_release(p)),
        RepoCmd::Status { paths } => status(c, paths),
    }
}

fn link(c: &Client, a: &LinkArgs) -> Result<(), CliError> {
    let path = fs_path(&a.path)?;
    c.stat(path).map_err(|e| CliError::io(path, e))?;
    let bad = |what: &str, e: String| CliError::msg(format!("--{what}: {e}"));
    let spec = RepoSpec {
        url: a.url.clone(),
        path: path.to_string(),
        endpoint: a.endpoint.clone().unwrap_or_default(),
        region: a.region.clone().unwrap_or_default(),
        access_key_id: a.access_key_id.clone().unwrap_or_default(),
        secret_access_key: a.secret_access_key.clone().unwrap_or_default(),
        import_now: a.import_metadata,
        auto_import: policy::parse(&a.auto_import).map_err(|e| bad("auto-import", e))?,
        auto_export: policy::parse(&a.auto_export).map_err(|e| bad("auto-export", e))?,
        interval_secs: a.interval,
    };
    c.repo_link(path, spec)
        .map_err(|e| said(&format!("{path} -> {}", a.url), e, "link"))?;
    println!("linked {path} to {}", a.url);
    Ok(())
}

/// An error of `verb` on `what`, in the words the errno means there.
fn said(what: &str, e: std::io::Error, verb: &str) -> CliError {
    let why = match (verb, e.raw_os_error().unwrap_or(0)) {
        ("link", libc::ENOENT) => "no such bucket or directory in the repository".into(),
        ("link", libc::EACCES) => "the repository refused the credentials".into(),
        ("link", libc::EHOSTUNREACH) => "the repository does not answer".into(),
        ("link", libc::EINVAL) => "not a repository URL (s3://bucket/prefix or file:///dir)".into(),
        ("link", libc::ENOTEMPTY) => "the directory is not empty".into(),
        ("link", libc::EEXIST) => "the directory is linked already, or below a linked one".into(),
        (_, libc::EPERM) => "only root may do that".into(),
        (_, libc::ENOSYS) => "the MDS has no data mover (an older version?)".into(),
        ("export", libc::EEXIST) => "conflict: the repository's object changed since this file \
                                     was imported or exported; nothing was overwritten"
            .into(),
        ("export", libc::EAGAIN) => {
            "the file changed while it was exported: export it again".into()
        }
        ("release", libc::EBUSY) => {
            "not exported since it changed, or open: export it first".into()
        }
        ("release", libc::ESTALE) => {
            "the repository's copy changed or is gone: export it first".into()
        }
        ("restore", libc::EIO) => "the repository could not be read (see the MDS log)".into(),
        (_, libc::EINVAL) => "not below a linked directory".into(),
        _ => e.to_string(),
    };
    CliError::msg(format!("{what}: {why}"))
}

fn list(c: &Client) -> Result<(), CliError> {
    let (repos, tasks) = c.repo_list().map_err(|e| CliError::io("repo list", e))?;
    if repos.is_empty() {
        println!("no associations");
    }
    for r in &repos {
        println!(
            "{}\t{}\t{}\timport={} export={} interval={}s\timported={} exported={}{}",
            r.id,
            r.path,
            r.url,
            policy::show(r.auto_import),
            policy::show(r.auto_export),
            if r.interval_secs == 0 {
                60
            } else {
                r.interval_secs
            },
            r.imported,
            r.exported,
            match r.error.is_empty() {
                true => String::new(),
                false => format!("\tlast error: {}", r.error),
            }
        );
    }
    print_tasks(&tasks);
    Ok(())
}

/// Runs `f` on every file `paths` name (directories: every file below them); the
/// first error stops it.
fn each_file(
    c: &Client,
    paths: &[String],
    verb: &str,
    f: impl Fn(&str) -> std::io::Result<()>,
) -> Result<(), CliError> {
    if paths.is_empty() {
        return Err(CliError::msg(format!("repo {verb}: no path given")));
    }
    for p in paths {
        walk(c, fs_path(p)?, &mut |file| {
            f(file).map_err(|e| said(file, e, verb))
        })?;
    }
    Ok(())
}

/// Calls `f` on `path` if it is a file, on every file below it if a directory.
fn walk(
    c: &Client,
    path: &str,
    f: &mut dyn FnMut(&str) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let attr = c.stat(path).map_err(|e| CliError::io(path, e))?;
    if attr.kind != FileKind::Dir {
        return match attr.kind {
            FileKind::File => f(path),
            _ => Ok(()),
        };
    }
    let entries = c.readdir(path).map_err(|e| CliError::io(path, e))?;
    for e in entries {
        let name = String::from_utf8_lossy(&e.name);
        if name == "." || name == ".." {
            continue;
        }
        let child = format!("{}/{name}", path.trim_end_matches('/'));
        match e.kind {
            FileKind::Dir => walk(c, &child, f)?,
            FileKind::File => f(&child)?,
            _ => {} // symlinks and special files hold no data
        }
    }
    Ok(())
}

fn status(c: &Client, paths: &[String]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    for p in paths {
        walk(c, fs_path(p)?, &mut |file| {
            let s = c.repo_state(file).map_err(|e| CliError::io(file, e))?;
            let state = match s.state {
                FileState::None => "-",
                other => other.name(),
            };
            let conflict = if s.conflict { "\tconflict" } else { "" };
            let _ = writeln!(out, "{state}\t{file}{conflict}");
            Ok(())
        })?;
    }
    drop(out);
    let (_, tasks) = c.repo_list().map_err(|e| CliError::io("repo status", e))?;
    print_tasks(&tasks);
    Ok(())
}

fn print_tasks(tasks: &[TaskInfo]) {
    for t in tasks.iter().filter(|t| !t.finished || !t.error.is_empty()) {
        let progress = match t.total {
            0 => format!("{}", t.done),
            total => format!("{} {}/{}", bar(t.done, total), t.done, total),
        };
        let state = match (t.finished, t.error.is_empty()) {
            (false, _) => "running".to_string(),
            (true, true) => "done".to_string(),
            (true, false) => format!("failed: {}", t.error),
        };
        println!("task {}\t{}\t{progress}\t{state}", t.kind, t.what);
    }
}

/// `[#####.....] 50%`
fn bar(done: u64, total: u64) -> String {
    let pct = (done.min(total) * 100 / total.max(1)) as usize;
    let filled = pct / 5;
    format!(
        "[{}{}] {pct:>3}%",
        "#".repeat(filled),
        ".".repeat(20 - filled)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bar_fills_with_the_count() {
        assert_eq!(super::bar(0, 10), "[....................]   0%");
        assert_eq!(super::bar(5, 10), "[##########..........]  50%");
        assert_eq!(super::bar(12, 10), "[####################] 100%");
    }
}
