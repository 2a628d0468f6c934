//! `nacre-bench repo --url URL`: a data repository's three rates, each against what
//! the repository itself does from this machine in the same run.
//!
//! The bench brings up a file system of its own (`nacre up` in `--dir`), then under a
//! fresh prefix of URL (`nacre-bench-<time>/`):
//! - **reference**: `--load-mib` of `--file-mib` files written straight to the
//!   repository (its PUT rate, through the same object_store client and part size
//!   the MDS's export uses), then read back straight (its GET rate: whole objects,
//!   as many at once as the MDS has movers);
//! - **load**: those objects imported into a linked directory and read through the
//!   client library (each file by one thread, `--threads` at once): the MDS loads
//!   every byte from the repository on first read;
//! - **export**: as many bytes written into another linked directory, then exported
//!   (`--threads` files at once);
//! - **import**: `--import-objects` empty objects written straight to the repository,
//!   then linked with `--import-metadata`, timed until the last one is listed.
//!
//! Last line: `import_objs_per_s=N load_ratio=R export_ratio=R` (load over GET,
//! export over PUT; the issue's targets are 0.8). The prefix is deleted afterwards.
//! An S3 URL takes its endpoint, region and credentials from the AWS_* variables.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nacre_client::{Client, OpenOptions};
use nacre_proto::meta::hsm::RepoSpec;
use nacre_repo::{Access, PosixMeta, Repository};

use crate::failover::Up;
use crate::BenchError;

#[derive(clap::Args)]
pub struct RepoArgs {
    /// The repository: s3://bucket/prefix or file:///dir.
    #[arg(long)]
    url: String,
    /// libfabric provider of the file system.
    #[arg(long, default_value = "shm")]
    provider: String,
    /// MiB loaded and exported.
    #[arg(long, default_value_t = 1024)]
    load_mib: usize,
    /// Size of each file, MiB.
    #[arg(long, default_value_t = 64)]
    file_mib: usize,
    /// Files read or exported at once (and objects the reference moves at once).
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Objects of the import.
    #[arg(long, default_value_t = 100_000)]
    import_objects: usize,
    /// Where the file system lives (made fresh; on a disk, not tmpfs).
    #[arg(long, default_value = "nacre-repo-bench")]
    dir: PathBuf,
}

const MIB: usize = 1 << 20;

pub fn run(a: &RepoArgs) -> Result<(), BenchError> {
    let _ = std::fs::remove_dir_all(&a.dir);
    std::fs::create_dir_all(&a.dir)?;
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let base = format!("{}/nacre-bench-{stamp}", a.url.trim_end_matches('/'));
    let access = Access {
        endpoint: std::env::var("AWS_ENDPOINT_URL").ok(),
        region: std::env::var("AWS_REGION").ok(),
        access_key_id: std::env::var("AWS_ACCESS_KEY_ID").ok(),
        secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").ok(),
    };
    let mut up = Up::start(
        &a.dir.join("fs"),
        &["--provider", &a.provider, "--listen", "127.0.0.1:0"],
    )?;
    let outcome = drive(a, &mut up, &base, &access);
    up.stop();
    for part in ["load", "export", "import", ""] {
        if let Err(e) = clean(&format!("{base}/{part}"), &access) {
            eprintln!("repo: could not delete {base}/{part}: {}", e.0);
        }
    }
    outcome
}

fn drive(a: &RepoArgs, up: &mut Up, base: &str, access: &Access) -> Result<(), BenchError> {
    let files = a.load_mib.div_ceil(a.file_mib);
    let size = a.file_mib * MIB;
    let bytes = (files * size) as f64;
    let client = Client::connect(&up.mgs, up.client_config())?;
    let spec = |url: &str, path: &str| RepoSpec {
        url: url.to_string(),
        path: path.to_string(),
        endpoint: access.endpoint.clone().unwrap_or_default(),
        region: access.region.clone().unwrap_or_default(),
        access_key_id: access.access_key_id.clone().unwrap_or_default(),
        secret_access_key: access.secret_access_key.clone().unwrap_or_default(),
        import_now: true,
        ..RepoSpec::default()
    };

    // The repository alone.
    let load_url = format!("{base}/load");
    let repo = Repository::open(&load_url, access)?;
    repo.check()?;
    let data = vec![0x5a_u8; size];
    let put = timed(files, a.threads, |i| {
        repo.write(
            &format!("f{i}"),
            size as u64,
            |at, buf| {
                buf.copy_from_slice(&data[at as usize..at as usize + buf.len()]);
                Ok(())
            },
            &PosixMeta::default(),
        )
        .map(drop)
        .map_err(|e| e.to_string())
    })?;
    let get = timed(files, a.threads, |i| {
        let key = format!("f{i}");
        let o = repo
            .head(&key)
            .map_err(|e| e.to_string())?
            .ok_or("object gone")?;
        let got = repo
            .read(&key, 0..o.size, &o.etag)
            .map_err(|e| e.to_string())?;
        match got.len() == size && got[0] == 0x5a && got[size - 1] == 0x5a {
            true => Ok(()),
            false => Err(format!("{key}: {} bytes, not the ones written", got.len())),
        }
    })?;
    let (put_mib_s, get_mib_s) = (mib_s(bytes, put), mib_s(bytes, get));
    eprintln!("repo: the repository alone: PUT {put_mib_s:.0} MiB/s, GET {get_mib_s:.0} MiB/s");

    // Lazy load through the file system.
    client.mkdir("/load", 0o755)?;
    client.repo_link("/load", spec(&load_url, "/load"))?;
    wait_imported(&client, files as u64, Duration::from_secs(120))?;
    let load = timed(files, a.threads, |i| {
        let f = client
            .open(&format!("/load/f{i}"), &OpenOptions::read())
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 8 * MIB];
        let mut at = 0;
        while at < size {
            let n = f.read_at(&mut buf, at as u64).map_err(|e| e.to_string())?;
            // As cheap a check as the reference's (comparing every byte would cost
            // the reader more CPU than the repository's reader spends).
            if n == 0 || buf[0] != 0x5a || buf[n - 1] != 0x5a {
                return Err(format!("f{i}: wrong bytes at {at}"));
            }
            at += n;
        }
        f.close().map_err(|e| e.to_string())
    })?;
    let load_mib_s = mib_s(bytes, load);
    eprintln!("repo: lazy load {load_mib_s:.0} MiB/s");

    // Export.
    client.mkdir("/export", 0o755)?;
    client.repo_link(
        "/export",
        RepoSpec {
            import_now: false,
            ..spec(&format!("{base}/export"), "/export")
        },
    )?;
    for i in 0..files {
        let f = client.open(&format!("/export/f{i}"), &OpenOptions::create())?;
        for k in 0..size / (8 * MIB) {
            f.write_at(&data[..8 * MIB], (k * 8 * MIB) as u64)?;
        }
        f.close()?;
    }
    let export = timed(files, a.threads, |i| {
        client
            .repo_export(&format!("/export/f{i}"))
            .map_err(|e| e.to_string())
    })?;
    let export_mib_s = mib_s(bytes, export);
    eprintln!("repo: export {export_mib_s:.0} MiB/s");

    // Import.
    let import_url = format!("{base}/import");
    let small = Repository::open(&import_url, access)?;
    let n = a.import_objects;
    timed(n, 32, |i| {
        small
            .write(
                &format!("d{}/o{i}", i % 100),
                0,
                |_, _| Ok(()),
                &PosixMeta::default(),
            )
            .map(drop)
            .map_err(|e| e.to_string())
    })?;
    client.mkdir("/import", 0o755)?;
    let started = Instant::now();
    client.repo_link("/import", spec(&import_url, "/import"))?;
    wait_imported(&client, n as u64, Duration::from_secs(1800))?;
    let import_objs_per_s = n as f64 / started.elapsed().as_secs_f64();
    println!(
        "provider={} load_mib={} file_mib={} threads={} import_objects={n}",
        a.provider,
        files * a.file_mib,
        a.file_mib,
        a.threads
    );
    println!(
        "get_mib_s={get_mib_s:.0} load_mib_s={load_mib_s:.0} put_mib_s={put_mib_s:.0} \
         export_mib_s={export_mib_s:.0}"
    );
    println!(
        "import_objs_per_s={import_objs_per_s:.0} load_ratio={:.2} export_ratio={:.2}",
        load_mib_s / get_mib_s,
        export_mib_s / put_mib_s
    );
    Ok(())
}

/// Runs `f(0..n)` on `threads` threads; the time it took.
fn timed(
    n: usize,
    threads: usize,
    f: impl Fn(usize) -> Result<(), String> + Sync,
) -> Result<Duration, BenchError> {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let errors: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return None;
                    }
                    if let Err(e) = f(i) {
                        next.store(n, Ordering::Relaxed);
                        return Some(e);
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().ok().flatten())
            .collect()
    });
    match errors.into_iter().next() {
        Some(e) => Err(BenchError(e)),
        None => Ok(started.elapsed()),
    }
}

fn mib_s(bytes: f64, took: Duration) -> f64 {
    bytes / MIB as f64 / took.as_secs_f64()
}

/// Waits until the associations' imports count `n` objects and none runs.
fn wait_imported(client: &Client, n: u64, limit: Duration) -> Result<(), BenchError> {
    let until = Instant::now() + limit;
    loop {
        let (repos, tasks) = client.repo_list()?;
        let running = tasks.iter().any(|t| t.kind == "import" && !t.finished);
        if let Some(e) = tasks
            .iter()
            .find(|t| t.kind == "import" && !t.error.is_empty())
        {
            return Err(BenchError(format!("import failed: {}", e.error)));
        }
        if !running && repos.iter().any(|r| r.imported == n) {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(BenchError(format!(
                "import of {n} objects not over in {limit:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Deletes every object below `url`.
fn clean(url: &str, access: &Access) -> Result<(), BenchError> {
    if let Some(dir) = url.strip_prefix("file://") {
        return match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        };
    }
    Ok(Repository::open(url, access)?.delete_all()?)
}
