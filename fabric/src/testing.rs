//! Helpers for the test suites of the crates above this one.

use std::io::Write;

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
