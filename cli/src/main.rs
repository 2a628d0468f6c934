//! `nacre`: bring a file system up and use it. Every command but `up` reaches the file
//! system through `--mgs HOST:PORT` or NACRE_MGS. Paths inside nacre are absolute
//! (`/dir/file`, optionally written `nacre:/dir/file`); `cp` tells local paths from
//! nacre paths by that `nacre:` prefix. Errors are one line on stderr and exit code 1.

mod check;
mod commands;
mod copy;
mod mount;
mod repo;
mod run;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(String);

impl CliError {
    pub fn msg(m: impl Into<String>) -> CliError {
        CliError(m.into())
    }

    /// `what: the error`, the errno's words when there is one.
    pub fn io(what: &str, e: std::io::Error) -> CliError {
        CliError(format!("{what}: {e}"))
    }
}

#[derive(Parser)]
#[command(name = "nacre", version, about = "nacre parallel file system")]
struct Cli {
    /// The MGS, HOST:PORT [env: NACRE_MGS].
    #[arg(long, global = true)]
    mgs: Option<String>,
    /// The local address this client serves from, for the providers addressed by IP
    /// (servers push data to it) [env: NACRE_SOURCE; default: the address that routes
    /// to the MGS].
    #[arg(long, global = true)]
    source: Option<String>,
    /// The key this client proves itself with [env: NACRE_KEY; default:
    /// /etc/nacre/FSNAME.key].
    #[arg(long, global = true)]
    key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring up the servers of a file system (by default all of them, on this machine).
    Up(up::UpArgs),
    /// The cluster map: targets, owners, epochs, states, map version.
    Status,
    /// List directories.
    Ls(commands::LsArgs),
    /// A path's attributes.
    Stat { paths: Vec<String> },
    /// Make directories.
    Mkdir(commands::MkdirArgs),
    /// Remove files (and with -r, directories and what they hold).
    Rm(commands::RmArgs),
    /// Rename.
    Mv { from: String, to: String },
    /// Copy a file into (`nacre:/path`) or out of nacre, in parallel.
    Cp(copy::CpArgs),
    /// Set the striping of a new file (created empty) or a directory's default.
    Setstripe(commands::SetstripeArgs),
    /// Show a file's objects or a directory's default striping.
    Getstripe { paths: Vec<String> },
    /// Usage per target, as `lfs df` shows it.
    Df(commands::DfArgs),
    /// Mirrored files, as `lfs mirror`: `resync` copies a copy in sync over the stale
    /// ones.
    #[command(subcommand)]
    Mirror(commands::MirrorCmd),
    /// Check the namespace against the OSTs' objects (root; online) and, with --fix,
    /// repair it. Last line: `orphans=N dangling=N nlink=N size=N fixed=N`.
    Check(check::CheckArgs),
    /// Data repositories: link a directory to S3 or a local directory, import,
    /// export, release, restore, status.
    #[command(subcommand)]
    Repo(repo::RepoCmd),
    /// Mount the file system through FUSE (a daemon; -f stays in the foreground).
    Mount(mount::MountArgs),
    /// Run a command with the interception library: its calls on paths under the
    /// nacre mounts go from the process straight to the servers (docs/preload.md).
    Run(run::RunArgs),
    /// Unmount a nacre mount (also one whose process died).
    Umount { mountpoint: std::path::PathBuf },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nacre: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    if let Cmd::Up(args) = &cli.cmd {
        return up::run(args, cli.key.clone());
    }
    if let Cmd::Umount { mountpoint } = &cli.cmd {
        return mount::umount(mountpoint);
    }
    let mgs = nacre_mgc::mgs_address(cli.mgs.clone())
        .ok_or_else(|| CliError::msg("no MGS: give --mgs HOST:PORT or set NACRE_MGS"))?;
    let mut cfg = nacre_client::ClientConfig::default();
    if cli.source.is_some() {
        cfg.source = cli.source.clone();
    }
    cfg.keys = nacre_auth::KeySource::new(cli.key.clone());
    match &cli.cmd {
        Cmd::Status => return commands::status(&mgs, cfg.keys),
        Cmd::Mount(a) => return mount::mount(&mgs, a, cfg),
        Cmd::Run(a) => return run::run(&mgs, a, cli.key.as_deref(), cli.source.as_deref()),
        _ => {}
    }
    let client = nacre_client::Client::connect(&mgs, cfg).map_err(|e| connect_error(&mgs, e))?;
    match cli.cmd {
        Cmd::Up(_) | Cmd::Status | Cmd::Mount(_) | Cmd::Run(_) | Cmd::Umount { .. } => {
            unreachable!("handled above")
        }
        Cmd::Ls(a) => commands::ls(&client, &a),
        Cmd::Stat { paths } => commands::stat(&client, &paths),
        Cmd::Mkdir(a) => commands::mkdir(&client, &a),
        Cmd::Rm(a) => commands::rm(&client, &a),
        Cmd::Mv { from, to } => commands::mv(&client, &from, &to),
        Cmd::Cp(a) => copy::cp(&client, &a),
        Cmd::Setstripe(a) => commands::setstripe(&client, &a),
        Cmd::Getstripe { paths } => commands::getstripe(&client, &paths),
        Cmd::Df(a) => commands::df(&client, &a),
        Cmd::Mirror(m) => commands::mirror(&client, &m),
        Cmd::Check(a) => check::check(&client, &a),
        Cmd::Repo(r) => repo::run(&client, &r),
    }
}

/// A failed connection, said plainly: `authentication failed: ...` stands alone (the
/// key, not the address, is what to fix).
pub fn connect_error(mgs: &str, e: std::io::Error) -> CliError {
    let text = e.to_string();
    match text.starts_with("authentication failed") {
        true => CliError::msg(text),
        false => CliError::io(&format!("connecting to {mgs}"), e),
    }
}
