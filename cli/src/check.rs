//! `nacre check`: the consistency checker (Lustre's lfsck in miniature). The MDS runs
//! it (`mds/src/checker.rs`) while the file system serves; this command starts a run,
//! prints its findings as they come, and ends with the counts:
//! `orphans=N dangling=N nlink=N size=N fixed=N`.

use std::time::Duration;

use nacre_client::Client;
use nacre_proto::meta::{CheckReport, CheckState};

use crate::CliError;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Repair what is found: orphan objects destroyed, link counts and sizes set,
    /// unnamed inodes linked under /lost+found.
    #[arg(long)]
    pub fix: bool,
    /// With --fix: link orphan objects under /lost+found instead of destroying them.
    #[arg(long, requires = "fix")]
    pub keep_orphans: bool,
}

/// How often the run's report is fetched.
const POLL: Duration = Duration::from_millis(100);

pub fn check(c: &Client, a: &CheckArgs) -> Result<(), CliError> {
    let ask = |start, from| {
        c.check(start, a.fix, a.keep_orphans, from)
            .map_err(|e| CliError::io("check", e))
    };
    let first = ask(true, 0)?;
    let run = first.run;
    let mut shown = 0u32;
    let mut report = first;
    loop {
        shown = print_new(&report, shown);
        if report.state != CheckState::Running {
            break;
        }
        std::thread::sleep(POLL);
        report = ask(false, shown)?;
        if report.run != run {
            return Err(CliError::msg(format!(
                "check run {run} was replaced by run {} (did the MDS restart?)",
                report.run
            )));
        }
    }
    let c = report.counts;
    println!(
        "orphans={} dangling={} nlink={} size={} fixed={}",
        c.orphans, c.dangling, c.nlink, c.size, c.fixed
    );
    match report.state {
        CheckState::Done => Ok(()),
        _ => Err(CliError::msg("the check did not finish (see above)")),
    }
}

/// Prints the findings of `r` past the `shown` first; how many are shown now.
fn print_new(r: &CheckReport, shown: u32) -> u32 {
    for f in &r.findings {
        println!("{}", String::from_utf8_lossy(f));
    }
    shown + r.findings.len() as u32
}
