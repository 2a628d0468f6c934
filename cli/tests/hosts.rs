//! Three hosts made of network namespaces joined by a bridge, in the shape of the
//! example in docs/operations.md: A (10.201.0.1) runs `nacre up --config` with the MGS
//! and the MDS, B (10.201.0.2) one OSS with two OSTs whose `mgs_address` points at A,
//! C (10.201.0.3) only clients. No server or client is told which address to serve
//! from: each takes the one that routes to the MGS. From C, `nacre status` shows every
//! target up, `nacre cp` writes a file striped over B's OSTs and reads it back byte
//! for byte, and a FUSE mount made on C writes and reads through the kernel. Over
//! tcp;ofi_rxm and sockets; the addresses live inside the namespaces only.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{nacre_bin, tmp, Up};
use nacre_fabric::testing::pattern;

const MGS: &str = "10.201.0.1:7450";

/// The namespaces (a bridge's and one per host), removed on drop.
struct Hosts {
    bridge: String,
    hosts: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

impl Hosts {
    /// Hosts a, b, c at 10.201.0.1..3/24 on a bridge, names tagged with `tag`.
    fn new(tag: &str) -> Result<Hosts, String> {
        let bridge = format!("nbr-{tag}");
        let mut h = Hosts {
            bridge: bridge.clone(),
            hosts: Vec::new(),
        };
        ip(&["netns", "add", &bridge])?;
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
        for (i, host) in ["a", "b", "c"].iter().enumerate() {
            let ns = format!("n{host}-{tag}");
            ip(&["netns", "add", &ns])?;
            h.hosts.push(ns.clone());
            let port = format!("p{host}");
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &bridge,
            ])?;
            let addr = format!("10.201.0.{}/24", i + 1);
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &bridge, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &bridge, "link", "set", &port, "up"])?;
        }
        Ok(h)
    }

    /// `ip netns exec` into host `i` (0 = a).
    fn prefix(&self, i: usize) -> Vec<&str> {
        vec!["ip", "netns", "exec", self.hosts[i].as_str()]
    }

    /// `nacre ARGS` on host `i`, against the MGS on A.
    fn nacre(&self, i: usize, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.hosts[i]])
            .arg(nacre_bin())
            .args(args)
            .env("NACRE_MGS", MGS)
            .env_remove("NACRE_SOURCE")
            .output()
            .expect("running nacre")
    }

    fn ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.nacre(i, args);
        assert!(
            out.status.success(),
            "nacre {args:?} on host {i} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain([&self.bridge]) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A mount unmounted on drop, also when the test fails half-way.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let out = Command::new(nacre_bin())
            .arg("umount")
            .arg(&self.0)
            .output();
        if let Some(out) = out.ok().filter(|o| !o.status.success()) {
            eprintln!(
                "umount {}: {}",
                self.0.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn write_config(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_string()
}

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
    let d = dir.display();
    let a_cfg = write_config(
        &dir.join("a.toml"),
        &format!("[mgs]\nlisten = \"{MGS}\"\n[mds]\ndir = \"{d}/a/mdt\"\n"),
    );
    let b_cfg = write_config(
        &dir.join("b.toml"),
        &format!("mgs_address = \"{MGS}\"\n[[oss]]\nosts = [\"{d}/b/ost0\", \"{d}/b/ost1\"]\n"),
    );
    let a = Up::start_via(
        &hosts.prefix(0),
        &dir.join("a"),
        provider,
        &["--config", &a_cfg],
    );
    let b = Up::start_via(
        &hosts.prefix(1),
        &dir.join("b"),
        provider,
        &["--config", &b_cfg],
    );
    assert_eq!(a.mgs, MGS);

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
        .env_remove("NACRE_SOURCE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mounted = Unmount(mnt.clone());
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
