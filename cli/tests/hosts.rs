//! Three hosts made of network namespaces joined by a bridge, in the shape of the
//! example in docs/operations.md: A (10.201.0.1) runs `nacre up --config` with the MGS
//! and the MDS, B (10.201.0.2) one OSS with two OSTs whose `mgs_address` points at A,
//! C (10.201.0.3) only clients. No server or client is told which address to serve
//! from: each takes the one that routes to the MGS. From C, `nacre status` shows every
//! target up, `nacre cp` writes a file striped over B's OSTs and reads it back byte
//! for byte, and a FUSE mount made on C writes and reads through the kernel. Over
//! tcp;ofi_rxm and sockets; the addresses live inside the namespaces only.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::hosts::{servers, Hosts, MGS};
use common::{nacre_bin, tmp, Mount};
use nacre_fabric::testing::pattern;

fn three_hosts(provider: &str) {
    if !common::have(provider, "three hosts") {
        return;
    }
    let name = provider.split(';').next().unwrap();
    let hosts = match Hosts::new(name) {
        Ok(h) => h,
        Err(e) => {
            nacre_fabric::testing::skip(&format!("three hosts on {provider}: {e}"));
            return;
        }
    };
    let dir = tmp(&format!("hosts-{name}"));
    let (a, b) = servers(&hosts, &dir, provider);

    // From C: every target up, the servers serving from their hosts' addresses.
    let up = |s: &str| {
        s.lines()
            .filter(|l| l.split_whitespace().nth(2) == Some("up"))
            .count()
    };
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let s = hosts.ok(2, &["status"]);
        if up(&s) >= 3 || Instant::now() > until {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(up(&status), 3, "mdt0, ost0 and ost1 up:\n{status}");

    // A file striped over both of B's OSTs, written from C and read back.
    let data = pattern(7, (3 << 20) + 4321);
    let local = dir.join("data");
    std::fs::write(&local, &data).unwrap();
    hosts.ok(2, &["setstripe", "-c", "2", "-S", "1048576", "/"]);
    hosts.ok(2, &["cp", local.to_str().unwrap(), "nacre:/f"]);
    let back = dir.join("back");
    hosts.ok(2, &["cp", "nacre:/f", back.to_str().unwrap()]);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "bytes differ after the round trip"
    );
    let stripes = hosts.ok(2, &["getstripe", "/f"]);
    assert!(stripes.contains("lmm_stripe_count:  2"), "{stripes}");

    // A FUSE mount made on C: the kernel's requests go to a daemon in C's network
    // namespace (entered with nsenter: `ip netns exec` would give the daemon a mount
    // namespace of its own, where the mount would stay).
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", hosts.hosts[2]))
        .arg(nacre_bin())
        .args(["mount", mnt.to_str().unwrap()])
        .env("NACRE_MGS", MGS)
        .env("NACRE_KEY", hosts.key())
        .env_remove("NACRE_SOURCE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mounted = Mount::made(mnt.clone(), &String::from_utf8_lossy(&out.stdout));
    let through = mnt.join("through-the-mount");
    std::fs::write(&through, &data).unwrap();
    assert!(std::fs::read(&through).unwrap() == data);
    assert!(
        std::fs::read(mnt.join("f")).unwrap() == data,
        "/f through the mount"
    );
    let listed = hosts.ok(2, &["ls", "/"]);
    assert!(listed.contains("through-the-mount"), "{listed}");
    drop(mounted);
    b.stop();
    a.stop();
    drop(hosts);
}

#[test]
fn three_hosts_over_tcp() {
    three_hosts("tcp;ofi_rxm");
}

#[test]
fn three_hosts_over_sockets() {
    three_hosts("sockets");
}
