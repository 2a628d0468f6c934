//! Hosts made of network namespaces joined by a bridge, for tests of clients and
//! servers on different hosts: the shape of docs/operations.md's example, with private
//! addresses that live inside the namespaces only. Removed on drop.

use std::path::Path;
use std::process::{Command, Output};

use super::{nacre_bin, Up};

/// The MGS of a three-host cluster, on host A.
pub const MGS: &str = "10.201.0.1:7450";

/// The namespaces (a bridge's and one per host), removed on drop.
pub struct Hosts {
    bridge: String,
    pub hosts: Vec<String>,
    /// The file system key of the cluster on these hosts, once its MGS made one: tests
    /// of other clusters on the same private addresses run beside, so the MGS address
    /// alone does not say which key.
    pub key: std::sync::Mutex<Option<String>>,
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
    #[allow(dead_code)]
    pub fn new(tag: &str) -> Result<Hosts, String> {
        Hosts::named(tag, &["a", "b", "c"])
    }

    /// One host per name, at 10.201.0.1, .2... on a bridge, in that order.
    pub fn named(tag: &str, names: &[&str]) -> Result<Hosts, String> {
        let bridge = format!("nbr-{tag}");
        let mut h = Hosts {
            bridge: bridge.clone(),
            hosts: Vec::new(),
            key: std::sync::Mutex::new(None),
        };
        ip(&["netns", "add", &bridge])?;
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
        for (i, host) in names.iter().enumerate() {
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

    /// Cuts host `i` off the bridge (`up`: false), as a failed switch port or a host
    /// gone would: its packets and those sent to it are dropped, nobody is told.
    #[allow(dead_code)]
    pub fn link(&self, i: usize, up: bool) {
        // Host "x" is namespace "nx-TAG", its bridge port "px".
        let ns = &self.hosts[i];
        let port = format!("p{}", &ns[1..ns.find('-').unwrap()]);
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.bridge, "link", "set", &port, state]).unwrap();
    }

    /// `ip netns exec` into host `i` (0 = a).
    pub fn prefix(&self, i: usize) -> Vec<&str> {
        vec!["ip", "netns", "exec", self.hosts[i].as_str()]
    }

    /// `nacre ARGS` on host `i`, against the MGS on A.
    pub fn nacre(&self, i: usize, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.hosts[i]])
            .arg(nacre_bin())
            .args(args)
            .env("NACRE_MGS", MGS)
            .env("NACRE_KEY", self.key())
            .env_remove("NACRE_SOURCE")
            .output()
            .expect("running nacre")
    }

    /// The key of the cluster on these hosts (set by [`servers`], or by a test that
    /// brings its servers up itself with [`Hosts::set_key`]).
    pub fn key(&self) -> String {
        let k = self.key.lock().unwrap_or_else(|p| p.into_inner());
        k.clone().expect("no file system on these hosts yet")
    }

    pub fn set_key(&self, key: &str) {
        *self.key.lock().unwrap_or_else(|p| p.into_inner()) = Some(key.to_string());
    }

    pub fn ok(&self, i: usize, args: &[&str]) -> String {
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

pub fn write_config(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Host A (MGS and MDS) and host B (one OSS, two OSTs) of `hosts` up over `provider`,
/// their data under `dir`: the servers of a three-host cluster whose host C is left for
/// clients.
pub fn servers(hosts: &Hosts, dir: &Path, provider: &str) -> (Up, Up) {
    std::fs::create_dir_all(dir).unwrap();
    let d = dir.display();
    let a_cfg = write_config(
        &dir.join("a.toml"),
        &format!("[mgs]\nlisten = \"{MGS}\"\n[mds]\ndir = \"{d}/a/mdt\"\n"),
    );
    let a = Up::start_via(
        &hosts.prefix(0),
        &dir.join("a"),
        provider,
        &["--config", &a_cfg],
    );
    hosts.set_key(&a.key);
    let b_cfg = write_config(
        &dir.join("b.toml"),
        &format!(
            "mgs_address = \"{MGS}\"\nkey = \"{}\"\n[[oss]]\nosts = [\"{d}/b/ost0\", \"{d}/b/ost1\"]\n",
            a.key
        ),
    );
    let b = Up::start_via(
        &hosts.prefix(1),
        &dir.join("b"),
        provider,
        &["--config", &b_cfg],
    );
    assert_eq!(a.mgs, MGS);
    (a, b)
}
