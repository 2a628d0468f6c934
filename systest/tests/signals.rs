//! Every server stops cleanly on SIGINT and on SIGTERM however it was started, also as
//! a script's background job (SIGINT ignored, which exec keeps): it gives its roles
//! back, says `stopped` and exits 0. (nacre-mgs: mgs/tests/mgs_cli.rs.)

mod common;

use std::process::Command;
use std::time::Duration;

use common::process::*;
use nacre_fabric::testing::{with_sigint_ignored, workspace_bin, Proc};

fn stops_on(name: &str, cmd: &Command, sig: &str) {
    let mut p = Proc::spawn(name, with_sigint_ignored(cmd));
    p.expect(&format!("{name}: ready"), Duration::from_secs(30));
    p.signal(sig);
    p.expect(&format!("{name}: stopped"), Duration::from_secs(20));
    assert_eq!(
        p.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{name} after SIG{sig}"
    );
}

#[test]
fn mds_and_oss_stop_cleanly_on_sigint_and_sigterm_with_sigint_ignored() {
    let Some((dir, _mgs, addr)) = cluster("tcp", "signals") else {
        return;
    };
    for sig in ["INT", "TERM"] {
        let ost = dir.join("ost0");
        stops_on("nacre-oss", &oss_command("tcp", &addr, &[ost], &[]), sig);
        let mut mds = Command::new(workspace_bin("nacre-mds"));
        mds.args(["serve", "--mgs", &addr, "--provider", "tcp", "--no-pin"])
            .args(["--identity", "test-mds", "--dir"])
            .arg(dir.join("mdt"))
            .env("RUST_LOG", "warn")
            .env(nacre_auth::KEY_ENV, &key().0);
        stops_on("nacre-mds", &mds, sig);
    }
}
