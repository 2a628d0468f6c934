//! The C ABI as C programs use it: nacre.h and nacre.pc (filled in for the build tree)
//! compile `tests/c/abi_test.c` against libnacre.so and libnacre.a, and
//! `examples/mpi_shared_file.c` with mpicc, run with `mpirun -np 4`, against a file
//! system from `nacre up`. Everything runs in a network namespace of its own with
//! only loopback, since mpirun listens on every address.

#[path = "../../cli/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{tmp, Up};
use nacre_fabric::testing::skip;

const CRATE: &str = env!("CARGO_MANIFEST_DIR");

/// Where cargo put libnacre.so and libnacre.a: beside this test's deps/ directory.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    for lib in ["libnacre.so", "libnacre.a"] {
        assert!(
            dir.join(lib).exists(),
            "{lib} not built in {}: `cargo build -p nacre-capi` first (scripts/test does)",
            dir.display()
        );
    }
    dir
}

/// nacre.pc for the build tree, from the template that installs use.
fn pkg_config_dir(work: &Path) -> PathBuf {
    let lib = lib_dir();
    let template = std::fs::read_to_string(Path::new(CRATE).join("nacre.pc.in")).unwrap();
    let pc = template
        .replace("@PREFIX@", &lib.display().to_string())
        .replace("@LIBDIR@", &lib.display().to_string())
        .replace("@INCLUDEDIR@", &format!("{CRATE}/include"))
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"));
    let dir = work.join("pkgconfig");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("nacre.pc"), pc).unwrap();
    dir
}

fn pkg_config(pc_dir: &Path, args: &[&str]) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("nacre")
        .env("PKG_CONFIG_PATH", pc_dir)
        .output()
        .expect("pkg-config");
    assert!(out.status.success(), "pkg-config {args:?}: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn compile(cc: &str, src: &Path, out: &Path, link: &[String]) {
    let status = Command::new(cc)
        .args(["-Wall", "-Werror", "-O1", "-o"])
        .arg(out)
        .arg(src)
        .args(link)
        .status()
        .unwrap_or_else(|e| panic!("{cc}: {e}"));
    assert!(status.success(), "{cc} {}", src.display());
}

/// The link line against the shared library (with an rpath: no LD_LIBRARY_PATH).
fn shared_link(pc: &Path) -> Vec<String> {
    let mut args = pkg_config(pc, &["--cflags", "--libs"]);
    args.push(format!("-Wl,-rpath,{}", lib_dir().display()));
    args.push("-lpthread".into());
    args
}

/// The link line against libnacre.a, with the private libraries nacre.pc lists.
fn static_link(pc: &Path) -> Vec<String> {
    let mut args = pkg_config(pc, &["--cflags"]);
    args.extend([
        "-Wl,-Bstatic".into(),
        "-lnacre".into(),
        "-Wl,-Bdynamic".into(),
    ]);
    args.extend(
        pkg_config(pc, &["--static", "--libs"])
            .into_iter()
            .filter(|a| a != "-lnacre"),
    );
    args
}

fn have_tool(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `prog` inside `up`'s network namespace with NACRE_MGS set; its stdout.
fn run_beside(up: &Up, prog: &[&str]) -> String {
    let out = Command::new("nsenter")
        .args(["-t", &up.proc.pid().to_string(), "-n", "--"])
        .args(prog)
        .env("NACRE_MGS", &up.mgs)
        .env("NACRE_KEY", &up.key)
        .output()
        .expect("nsenter");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{prog:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn c_programs(provider: &str) {
    if !common::have(provider, "C ABI and MPI example") {
        return;
    }
    if !nix_root() {
        skip("C ABI and MPI example: need root for a private network namespace");
        return;
    }
    let name = provider.split(';').next().unwrap();
    let work = tmp(&format!("capi-{name}"));
    let pc = pkg_config_dir(&work);
    let abi_src = Path::new(CRATE).join("tests/c/abi_test.c");
    let shared = work.join("abi_test_shared");
    let fixed = work.join("abi_test_static");
    compile("cc", &abi_src, &shared, &shared_link(&pc));
    compile("cc", &abi_src, &fixed, &static_link(&pc));

    let up = Up::start_in_netns(&work.join("data"), provider);
    for prog in [&shared, &fixed] {
        let out = run_beside(&up, &[prog.to_str().unwrap(), &up.mgs]);
        assert!(out.contains("abi_test: ok"), "{out}");
    }

    if !(have_tool("mpicc") && have_tool("mpirun")) {
        skip("MPI example: mpicc/mpirun not installed (scripts/deps installs openmpi-bin)");
    } else {
        let example = Path::new(CRATE).join("../examples/mpi_shared_file.c");
        let mpi_prog = work.join("mpi_shared_file");
        compile("mpicc", &example, &mpi_prog, &shared_link(&pc));
        let mut mpirun = MPIRUN.to_vec();
        mpirun.push(mpi_prog.to_str().unwrap());
        let out = run_beside(&up, &mpirun);
        assert!(out.contains("mpi_shared_file: 4 ranks"), "{out}");
        assert!(out.contains(": OK"), "{out}");
        assert!(out.contains("4 stripes of 1048576 bytes"), "{out}");
    }
    up.stop();
}

/// The MPI example on a client host of its own: three hosts made of network
/// namespaces (MGS and MDS on A, an OSS on B, the MPI job on C), over tcp: the ranks'
/// endpoints serve from C's address, which routes to the MGS.
#[test]
fn mpi_example_on_a_client_host() {
    let provider = "tcp;ofi_rxm";
    if !common::have(provider, "MPI example on a client host") {
        return;
    }
    if !(have_tool("mpicc") && have_tool("mpirun")) {
        skip("MPI example on a client host: mpicc/mpirun not installed (scripts/deps)");
        return;
    }
    let hosts = match common::hosts::Hosts::new("mpi") {
        Ok(h) => h,
        Err(e) => return skip(&format!("MPI example on a client host: {e}")),
    };
    let work = tmp("capi-hosts");
    let pc = pkg_config_dir(&work);
    let example = Path::new(CRATE).join("../examples/mpi_shared_file.c");
    let mpi_prog = work.join("mpi_shared_file");
    compile("mpicc", &example, &mpi_prog, &shared_link(&pc));
    let (a, b) = common::hosts::servers(&hosts, &work.join("data"), provider);
    // nsenter into C's network namespace only: mpirun's daemons and ranks share it.
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", hosts.hosts[2]))
        .args(MPIRUN)
        .arg(&mpi_prog)
        .env("NACRE_MGS", common::hosts::MGS)
        .env("NACRE_KEY", hosts.key())
        .env_remove("NACRE_SOURCE")
        .output()
        .expect("nsenter");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("mpi_shared_file: 4 ranks"), "{stdout}");
    assert!(stdout.contains(": OK"), "{stdout}");
    b.stop();
    a.stop();
}

/// mpirun as the tests run it: 4 ranks on this machine, shared memory between them.
const MPIRUN: &[&str] = &[
    "mpirun",
    "--allow-run-as-root",
    "--oversubscribe",
    "-np",
    "4",
    "--mca",
    "pml",
    "ob1",
    "--mca",
    "btl",
    "self,vader",
    "-x",
    "NACRE_MGS",
    "-x",
    "NACRE_KEY",
];

/// Root can make a network namespace (unshare -n) and enter it (nsenter).
fn nix_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

#[test]
fn c_abi_and_mpi_example_on_tcp() {
    c_programs("tcp;ofi_rxm");
}

#[test]
fn c_abi_and_mpi_example_on_shm() {
    c_programs("shm");
}

/// nacre's IOR backend (bench/io500/aiori-NACRE.c): IOR, mdtest and io500 built with
/// it by bench/io500/build, then a small IOR (2 ranks, a file each, written, read back
/// and checked) and a small mdtest through it, on shm.
#[test]
fn ior_and_mdtest_through_the_nacre_backend() {
    let provider = "shm";
    if !common::have(provider, "IOR backend") {
        return;
    }
    if !nix_root() {
        skip("IOR backend: need root for a private network namespace");
        return;
    }
    let script = Path::new(CRATE).join("../bench/io500/build");
    let out = Command::new(&script)
        .arg("--debug")
        .output()
        .expect("bench/io500/build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(2) {
        // Neither the vendored tarballs nor the network: nothing to build from.
        skip(&format!(
            "IOR backend: no IOR sources here: {}",
            stderr.trim()
        ));
        return;
    }
    assert!(out.status.success(), "bench/io500/build: {stderr}");
    let bin = PathBuf::from(
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .lines()
            .last()
            .unwrap(),
    );
    let work = tmp("ior-backend");
    let up = Up::start_in_netns(&work.join("data"), provider);
    let ior = bin.join("ior").display().to_string();
    let mut run = MPIRUN.to_vec();
    run[4] = "2";
    let ior_args = [
        &ior,
        "-a",
        "NACRE",
        "-t",
        "1m",
        "-b",
        "4m",
        "-F",
        "-w",
        "-r",
        "-W",
        "-R",
        "-C",
        "-k",
        "-o",
        "/ior/test",
    ];
    let nacre = common::nacre_bin().display().to_string();
    let cli = |args: &[&str]| run_beside(&up, &[&[nacre.as_str()][..], args].concat());
    cli(&["mkdir", "/ior"]);
    let out = run_beside(&up, &[run.as_slice(), &ior_args].concat());
    assert!(out.contains("api                 : NACRE"), "{out}");
    for op in ["write", "read"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(op) && l.contains("NACRE")),
            "no {op} summary: {out}"
        );
    }
    assert!(!out.contains("ERROR"), "{out}");
    // The files are in the file system, with the bytes IOR wrote (-k kept them).
    for rank in 0..2 {
        let stat = cli(&["stat", &format!("/ior/test.0000000{rank}")]);
        assert!(stat.contains("Size: 4194304"), "{stat}");
    }
    let mdtest = bin.join("mdtest").display().to_string();
    let md_args = [&mdtest, "-a", "NACRE", "-n", "50", "-d", "/md", "-u"];
    let out = run_beside(&up, &[run.as_slice(), &md_args].concat());
    for phase in [
        "File creation",
        "File stat",
        "File removal",
        "Directory creation",
    ] {
        let line = out.lines().find(|l| l.trim_start().starts_with(phase));
        let rate: f64 = line
            .and_then(|l| l.split_whitespace().nth(phase.split(' ').count()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {phase} rate: {out}"));
        assert!(rate > 0.0, "{phase}: {rate}");
    }
    // mdtest removed what it made, its directory too.
    let left = cli(&["ls", "/"]);
    assert!(!left.lines().any(|l| l.ends_with(" md")), "{left}");
    up.stop();
}
