//! The namespace and administration commands: ls, stat, mkdir, rm, mv, setstripe,
//! getstripe, df, status.

use nacre_client::{Client, Layout, OpenOptions};
use nacre_mgc::{BootConfig, MgsClient};
use nacre_proto::bootstrap::{
    ClusterMap, Deployment, LayoutDefaults, Target, TargetKind, TargetState,
};
use nacre_proto::layout::{FirstOst, StripeCount, StripeSpec};
use nacre_proto::meta::{Attr, FileKind};

use crate::CliError;

/// A nacre path as the commands take it: absolute, `nacre:` prefix optional.
pub fn fs_path(p: &str) -> Result<&str, CliError> {
    let p = p.strip_prefix("nacre:").unwrap_or(p);
    match p.starts_with('/') {
        true => Ok(p),
        false => Err(CliError::msg(format!(
            "{p}: nacre paths are absolute (/dir/file or nacre:/dir/file)"
        ))),
    }
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Long listing: mode, links, owner, group, size, name.
    #[arg(short)]
    long: bool,
    #[arg(default_value = "/")]
    paths: Vec<String>,
}

pub fn ls(c: &Client, a: &LsArgs) -> Result<(), CliError> {
    for (i, p) in a.paths.iter().enumerate() {
        let path = fs_path(p)?;
        let attr = c.stat(path).map_err(|e| CliError::io(path, e))?;
        if attr.kind != FileKind::Dir {
            print_entry(a.long, &attr, path);
            continue;
        }
        if a.paths.len() > 1 {
            println!("{}{path}:", if i > 0 { "\n" } else { "" });
        }
        let mut entries = c.readdir(path).map_err(|e| CliError::io(path, e))?;
        entries.sort_by(|x, y| x.name.cmp(&y.name));
        for e in entries {
            let name = String::from_utf8_lossy(&e.name).into_owned();
            if !a.long {
                println!("{name}");
                continue;
            }
            // An entry removed meanwhile is skipped, as ls does.
            if let Ok(attr) = c.stat(&join(path, &name)) {
                print_entry(true, &attr, &name);
            }
        }
    }
    Ok(())
}

fn print_entry(long: bool, a: &Attr, name: &str) {
    if !long {
        println!("{name}");
        return;
    }
    println!(
        "{} {:>3} {:>5} {:>5} {:>12} {name}",
        mode_string(a),
        a.nlink,
        a.uid,
        a.gid,
        a.size
    );
}

fn mode_string(a: &Attr) -> String {
    let t = match a.kind {
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::File => '-',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
        FileKind::CharDevice => 'c',
        FileKind::BlockDevice => 'b',
    };
    let mut s = String::from(t);
    // setuid, setgid and sticky show in the execute column, as ls shows them.
    for (shift, special, letter) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (a.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (a.mode & special != 0, bits & 1 != 0) {
            (true, true) => letter,
            (true, false) => letter.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

pub fn stat(c: &Client, paths: &[String]) -> Result<(), CliError> {
    for p in paths {
        let path = fs_path(p)?;
        let a = c.stat(path).map_err(|e| CliError::io(path, e))?;
        println!("  File: {path}");
        println!(
            "  Size: {:<12} Type: {}  Inode: {}  Links: {}",
            a.size,
            a.kind.name(),
            a.ino,
            a.nlink
        );
        if matches!(a.kind, FileKind::CharDevice | FileKind::BlockDevice) {
            let (major, minor) = (libc::major(a.rdev), libc::minor(a.rdev));
            println!("Device type: {major},{minor}");
        }
        println!(
            "Access: ({:04o}/{})  Uid: {}  Gid: {}",
            a.mode & 0o7777,
            mode_string(&a),
            a.uid,
            a.gid
        );
        for (what, t) in [
            ("Access", a.atime),
            ("Modify", a.mtime),
            ("Change", a.ctime),
        ] {
            println!(
                "{what}: {}.{:09}",
                t.div_euclid(1_000_000_000),
                t.rem_euclid(1_000_000_000)
            );
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct MkdirArgs {
    /// Make parents as needed; no error if a directory exists.
    #[arg(short)]
    parents: bool,
    /// Permission bits (octal).
    #[arg(short, long, default_value = "755")]
    mode: String,
    #[arg(required = true)]
    paths: Vec<String>,
}

pub fn mkdir(c: &Client, a: &MkdirArgs) -> Result<(), CliError> {
    let mode = u32::from_str_radix(&a.mode, 8)
        .map_err(|_| CliError::msg(format!("{}: not an octal mode", a.mode)))?;
    for p in &a.paths {
        let path = fs_path(p)?;
        if !a.parents {
            c.mkdir(path, mode).map_err(|e| CliError::io(path, e))?;
            continue;
        }
        let mut at = String::new();
        for name in path.split('/').filter(|n| !n.is_empty()) {
            at = join(&at, name);
            match c.mkdir(&at, mode) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    let kind = c.stat(&at).map_err(|e| CliError::io(&at, e))?.kind;
                    if kind != FileKind::Dir {
                        return Err(CliError::msg(format!(
                            "{at}: exists and is not a directory"
                        )));
                    }
                }
                Err(e) => return Err(CliError::io(&at, e)),
            }
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Remove directories and what they hold.
    #[arg(short)]
    recursive: bool,
    #[arg(required = true)]
    paths: Vec<String>,
}

pub fn rm(c: &Client, a: &RmArgs) -> Result<(), CliError> {
    for p in &a.paths {
        let path = fs_path(p)?;
        remove(c, path, a.recursive)?;
    }
    Ok(())
}

fn remove(c: &Client, path: &str, recursive: bool) -> Result<(), CliError> {
    let attr = c.stat(path).map_err(|e| CliError::io(path, e))?;
    if attr.kind != FileKind::Dir {
        return c.unlink(path).map_err(|e| CliError::io(path, e));
    }
    if !recursive {
        return Err(CliError::msg(format!("{path}: is a directory (use -r)")));
    }
    for e in c.readdir(path).map_err(|e| CliError::io(path, e))? {
        let name = String::from_utf8_lossy(&e.name).into_owned();
        remove(c, &join(path, &name), true)?;
    }
    c.rmdir(path).map_err(|e| CliError::io(path, e))
}

pub fn mv(c: &Client, from: &str, to: &str) -> Result<(), CliError> {
    let (from, to) = (fs_path(from)?, fs_path(to)?);
    // Into an existing directory, as mv does.
    let to = match c.stat(to) {
        Ok(a) if a.kind == FileKind::Dir => {
            let name = from
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(from);
            join(to, name)
        }
        _ => to.to_string(),
    };
    c.rename(from, &to)
        .map_err(|e| CliError::io(&format!("{from} -> {to}"), e))
}

/// `-c`, `-S`, `-i` as `lfs setstripe` takes them, and `-N` as `lfs mirror create`
/// (for `setstripe` and `cp`).
#[derive(Debug, clap::Args)]
pub struct StripeArgs {
    /// Stripe count (-1: every OST).
    #[arg(short = 'c', long = "stripe-count", allow_hyphen_values = true)]
    count: Option<i64>,
    /// Stripe size (bytes, or with k/m/g; a multiple of 64 KiB).
    #[arg(short = 'S', long = "stripe-size")]
    size: Option<String>,
    /// The OST of the first stripe (-1: the MDS chooses).
    #[arg(short = 'i', long = "stripe-index", allow_hyphen_values = true)]
    index: Option<i64>,
    /// Copies of every byte, each on other OSTs (1 to 4; a persistent file system's
    /// default is 2, a scratch one's 1).
    #[arg(short = 'N', long = "mirror-count")]
    mirrors: Option<u32>,
}

impl StripeArgs {
    pub fn given(&self) -> bool {
        self.count.is_some()
            || self.size.is_some()
            || self.index.is_some()
            || self.mirrors.is_some()
    }

    /// A stripe template from the flags; what is not given keeps the file system's
    /// default (`fs`, from the cluster map).
    pub fn spec(&self, fs: &LayoutDefaults) -> Result<StripeSpec, CliError> {
        let mut spec = StripeSpec {
            count: StripeCount::Count(fs.stripe_count),
            mirrors: fs.mirror_count,
            ..StripeSpec::default()
        };
        if let Ok(size) = u32::try_from(fs.stripe_size) {
            if size > 0 && size % nacre_proto::layout::STRIPE_ALIGN == 0 {
                spec.stripe_size = size;
            }
        }
        if let Some(n) = self.mirrors {
            spec.mirrors = n;
        }
        if let Some(c) = self.count {
            spec.count = StripeCount::from_lfs(c)
                .ok_or_else(|| CliError::msg(format!("stripe count {c}: give -1 or 1 and up")))?;
        }
        if let Some(s) = &self.size {
            let bytes = parse_size(s)?;
            spec.stripe_size = u32::try_from(bytes)
                .map_err(|_| CliError::msg(format!("stripe size {s} is too large")))?;
        }
        if let Some(i) = self.index {
            spec.first = FirstOst::from_lfs(i)
                .ok_or_else(|| CliError::msg(format!("stripe index {i}: give -1 or 0 and up")))?;
        }
        spec.validate()
            .map_err(|e| CliError::msg(format!("bad striping: {e}")))?;
        Ok(spec)
    }
}

#[derive(Debug, clap::Args)]
pub struct SetstripeArgs {
    #[command(flatten)]
    stripe: StripeArgs,
    path: String,
}

pub fn setstripe(c: &Client, a: &SetstripeArgs) -> Result<(), CliError> {
    let path = fs_path(&a.path)?;
    let spec = a.stripe.spec(&c.map().layout)?;
    match c.stat(path) {
        Ok(_) => c.set_layout(path, spec).map_err(|e| CliError::io(path, e)),
        // A new path becomes an empty file with that layout, as `lfs setstripe` does.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            let opt = OpenOptions::create().flags(libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL);
            let f = c
                .open(path, &opt.layout(spec))
                .map_err(|e| CliError::io(path, e))?;
            f.close().map_err(|e| CliError::io(path, e))
        }
        Err(e) => Err(CliError::io(path, e)),
    }
}

/// Bytes from `123`, `64k`, `1m`, `2g` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, CliError> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (&t[..], 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| CliError::msg(format!("{s}: not a size (bytes, or with k, m, g)")))
}

pub fn getstripe(c: &Client, paths: &[String]) -> Result<(), CliError> {
    for p in paths {
        let path = fs_path(p)?;
        println!("{path}");
        match c.get_layout(path).map_err(|e| CliError::io(path, e))? {
            Layout::Dir(spec) => {
                println!(
                    "stripe_count:  {} stripe_size:   {} pattern:       raid0 stripe_offset: {}",
                    spec.count.lfs(),
                    spec.stripe_size,
                    spec.first.lfs()
                );
                if spec.mirrors > 1 {
                    println!("mirror_count:  {}", spec.mirrors);
                }
            }
            Layout::File(l) if l.mirrors.len() == 1 => print_stripes(&l.mirrors[0].stripes),
            Layout::File(l) => {
                // As `lfs getstripe` shows a mirrored (FLR) file: one component each.
                println!("  lcm_mirror_count:  {}", l.mirrors.len());
                for (k, m) in l.mirrors.iter().enumerate() {
                    println!("  lcme_mirror_id:    {}", k + 1);
                    println!(
                        "  lcme_flags:        init{}",
                        if m.stale { ",stale" } else { "" }
                    );
                    print_stripes(&m.stripes);
                }
            }
        }
    }
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
pub enum MirrorCmd {
    /// Bring the stale copies of files back in sync (as `lfs mirror resync`); refused
    /// while the file is open for writing. Prints `PATH: mirror K resynced` per copy.
    Resync { paths: Vec<String> },
}

pub fn mirror(c: &Client, cmd: &MirrorCmd) -> Result<(), CliError> {
    let MirrorCmd::Resync { paths } = cmd;
    for p in paths {
        let path = fs_path(p)?;
        let done = c.resync(path).map_err(|e| CliError::io(path, e))?;
        if done.is_empty() {
            println!("{path}: no stale copy");
        }
        for m in done {
            println!("{path}: mirror {} resynced", m + 1);
        }
    }
    Ok(())
}

/// One RAID-0 layout's lines, as `lfs getstripe` prints them.
fn print_stripes(l: &nacre_proto::layout::StripedLayout) {
    println!("lmm_stripe_count:  {}", l.objects.len());
    println!("lmm_stripe_size:   {}", l.stripe_size);
    println!("lmm_pattern:       raid0");
    println!(
        "lmm_stripe_offset: {}",
        l.objects.first().map_or(0, |o| o.ost)
    );
    println!("\tobdidx\t\t objid\t\t objid");
    for o in &l.objects {
        println!("\t{:>6}\t{:>14}\t{:>#14x}", o.ost, o.oid, o.oid);
    }
}

#[derive(Debug, clap::Args)]
pub struct DfArgs {
    /// Sizes in powers of 1024 (K, M, G, T).
    #[arg(short = 'H', long)]
    human: bool,
}

pub fn df(c: &Client, a: &DfArgs) -> Result<(), CliError> {
    let usage = c.df().map_err(|e| CliError::io("df", e))?;
    let fsname = c.map().fsname.clone();
    let show = |bytes: u64| match a.human {
        true => human(bytes),
        false => (bytes / 1024).to_string(),
    };
    let head = if a.human { "bytes" } else { "1K-blocks" };
    println!(
        "{:<22} {:>12} {:>12} {:>12} {:>5} {:<}",
        "UUID", head, "Used", "Available", "Use%", "Mounted on"
    );
    let (mut total, mut free) = (0u64, 0u64);
    for t in &usage {
        let (tot, fr, name) = match t.kind {
            // The MDT counts inodes, not bytes (its key-value store has no fixed
            // size): the byte columns stay empty and the inodes in use are named.
            TargetKind::Mdt => {
                println!(
                    "{:<22} {:>12} {:>12} {:>12} {:>5} {}[MDT:{}] {}, {} inodes used",
                    format!("{}_UUID", t.name),
                    "-",
                    "-",
                    "-",
                    "-",
                    fsname,
                    t.index,
                    health(t.state),
                    t.total - t.free,
                );
                continue;
            }
            TargetKind::Ost => (t.total, t.free, &t.name),
        };
        total += tot;
        free += fr;
        println!(
            "{:<22} {:>12} {:>12} {:>12} {:>4}% {}[OST:{}] {}",
            format!("{name}_UUID"),
            show(tot),
            show(tot - fr),
            show(fr),
            pct(tot - fr, tot),
            fsname,
            t.index,
            health(t.state)
        );
    }
    println!(
        "\n{:<22} {:>12} {:>12} {:>12} {:>4}% {}",
        "filesystem_summary:",
        show(total),
        show(total - free),
        show(free),
        pct(total - free, total),
        fsname
    );
    Ok(())
}

fn pct(used: u64, total: u64) -> u64 {
    match total {
        0 => 0,
        t => (used as u128 * 100).div_ceil(t as u128) as u64,
    }
}

fn human(bytes: u64) -> String {
    let units = ["", "K", "M", "G", "T", "P"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1}{}", units[i])
}

/// A target's state as `nacre status` shows it. An OST that is down while its files
/// have other copies (a persistent file system, or stale copies the MDS counts on it)
/// is `degraded`: its files are still served. One that serves again while the MDS
/// copies its stale copies back is `rebuilding N%`. `FAILED` is a target whose device
/// returned errors; `DOWN`, one whose files are unavailable.
fn state(map: &ClusterMap, t: &Target) -> String {
    let rebuild = match t.kind {
        TargetKind::Ost => map.rebuild_of(t.index),
        TargetKind::Mdt => None,
    };
    match (t.state, rebuild) {
        (TargetState::Up, Some(r)) => format!("rebuilding {}%", r.percent()),
        (TargetState::Up, None) => "up".into(),
        (TargetState::Down, r)
            if t.kind == TargetKind::Ost && (r.is_some() || map.layout.mirror_count > 1) =>
        {
            "degraded".into()
        }
        (s, _) => health(s).into(),
    }
}

/// A target's state as its server reports it.
fn health(s: TargetState) -> &'static str {
    match s {
        TargetState::Up => "up",
        TargetState::Down => "DOWN",
        TargetState::Degraded => "FAILED",
    }
}

/// The cluster map as the MGS holds it now.
pub fn status(mgs: &str, keys: nacre_auth::KeySource) -> Result<(), CliError> {
    let map = MgsClient::connect_with(mgs, BootConfig::default(), keys)
        .and_then(|mut c| c.fetch_map())
        .map_err(|e| match e {
            nacre_mgc::MgsError::Auth(_) => CliError::msg(e.to_string()),
            e => CliError::msg(format!("MGS {mgs}: {e}")),
        })?;
    println!(
        "file system {} (fsid {:#018x}), map version {}, default striping: count {} size {}",
        map.fsname, map.fsid, map.version, map.layout.stripe_count, map.layout.stripe_size
    );
    println!(
        "deployment: {} ({} cop{} of every file)",
        Deployment::of(&map.layout).name(),
        map.layout.mirror_count,
        if map.layout.mirror_count == 1 {
            "y"
        } else {
            "ies"
        }
    );
    match map.root_squash {
        Some((uid, gid)) => println!("root squash: {uid}:{gid}"),
        None => println!("root squash: off"),
    }
    println!(
        "{:<10} {:<6} {:<15} {:>6} {:>16} {:>16}  owner",
        "target", "role", "state", "epoch", "capacity", "free"
    );
    for t in &map.targets {
        println!(
            "{:<10} {:<6} {:<15} {:>6} {:>16} {:>16}  {}",
            nacre_client::fs::target_name(t.kind, t.index),
            t.role.to_string(),
            state(&map, t),
            t.epoch,
            t.capacity,
            t.free,
            t.owner
        );
    }
    for s in &map.servers {
        println!(
            "server {} on {} (epoch {}): {} core(s) over {}",
            s.role,
            s.node,
            s.epoch,
            s.cores.len(),
            s.provider
        );
    }
    Ok(())
}
