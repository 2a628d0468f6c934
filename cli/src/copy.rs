//! `nacre cp`: a file into nacre (`nacre:/path` as the destination), out of it
//! (`nacre:/path` as the source), or within it. Several threads copy chunks at once,
//! each through the client's striped parallel path; a progress bar shows on a terminal
//! for copies of 64 MiB and more.

use std::fs::File as LocalFile;
use std::io::IsTerminal;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressStyle};
use nacre_client::{Client, File, OpenOptions};
use nacre_proto::meta::FileKind;

use crate::commands::{fs_path, StripeArgs};
use crate::CliError;

/// Bytes each thread moves at a time.
const CHUNK: u64 = 8 << 20;
/// Threads copying at once.
const THREADS: u64 = 4;
/// Copies at least this long show a progress bar (on a terminal).
const PROGRESS_MIN: u64 = 64 << 20;

#[derive(Debug, clap::Args)]
pub struct CpArgs {
    /// Striping of the new file [default: the directory's].
    #[command(flatten)]
    stripe: StripeArgs,
    /// Source: a local path, or nacre:/path.
    src: String,
    /// Destination: a local path, or nacre:/path (an existing directory gets the
    /// source's name inside it).
    dst: String,
}

/// One end of a copy.
enum End {
    Local(LocalFile),
    // Boxed: an open nacre file is much larger than a local one.
    Nacre(Box<File>),
}

impl End {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        match self {
            End::Local(f) => f.read_at(buf, off),
            End::Nacre(f) => f.read_at(buf, off),
        }
    }

    fn write_all_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        match self {
            End::Local(f) => f.write_all_at(buf, off),
            End::Nacre(f) => f.write_at(buf, off).map(|_| ()),
        }
    }
}

pub fn cp(c: &Client, a: &CpArgs) -> Result<(), CliError> {
    let striping = a.stripe.given();
    let spec = match striping {
        true => Some(a.stripe.spec(&c.map().layout)?),
        false => None,
    };
    let src_name = a
        .src
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(&a.src);
    let (src, len) = open_source(c, &a.src)?;
    let dst = open_dest(c, &a.dst, src_name, spec)?;
    let done = AtomicU64::new(0);
    let next = AtomicU64::new(0);
    let bar = progress(len);
    let chunks = len.div_ceil(CHUNK);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS.min(chunks.max(1)))
            .map(|_| {
                s.spawn(|| -> Result<(), CliError> {
                    let mut buf = vec![0u8; CHUNK as usize];
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= chunks {
                            return Ok(());
                        }
                        let off = i * CHUNK;
                        let n = CHUNK.min(len - off) as usize;
                        read_full(&src, &mut buf[..n], off, &a.src)?;
                        dst.write_all_at(&buf[..n], off)
                            .map_err(|e| CliError::io(&a.dst, e))?;
                        let total = done.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                        if let Some(b) = &bar {
                            b.set_position(total);
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("copy thread panicked"))
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match dst {
        End::Nacre(f) => f.close().map_err(|e| CliError::io(&a.dst, e)),
        End::Local(f) => {
            f.set_len(len).map_err(|e| CliError::io(&a.dst, e))?;
            f.sync_all().map_err(|e| CliError::io(&a.dst, e))
        }
    }
}

/// Reads exactly `buf.len()` bytes at `off` (the source is not expected to shrink).
fn read_full(src: &End, buf: &mut [u8], off: u64, name: &str) -> Result<(), CliError> {
    let mut got = 0;
    while got < buf.len() {
        match src.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => return Err(CliError::msg(format!("{name}: shrank while being copied"))),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CliError::io(name, e)),
        }
    }
    Ok(())
}

fn open_source(c: &Client, src: &str) -> Result<(End, u64), CliError> {
    if src.starts_with("nacre:") {
        let path = fs_path(src)?;
        let f = c
            .open(path, &OpenOptions::read())
            .map_err(|e| CliError::io(path, e))?;
        let len = f.stat().map_err(|e| CliError::io(path, e))?.size;
        return Ok((End::Nacre(Box::new(f)), len));
    }
    let f = LocalFile::open(src).map_err(|e| CliError::io(src, e))?;
    let meta = f.metadata().map_err(|e| CliError::io(src, e))?;
    if !meta.is_file() {
        return Err(CliError::msg(format!("{src}: not a regular file")));
    }
    Ok((End::Local(f), meta.len()))
}

fn open_dest(
    c: &Client,
    dst: &str,
    src_name: &str,
    spec: Option<nacre_proto::layout::StripeSpec>,
) -> Result<End, CliError> {
    if dst.starts_with("nacre:") {
        let mut path = fs_path(dst)?.to_string();
        if let Ok(a) = c.stat(&path) {
            if a.kind == FileKind::Dir {
                path = format!("{}/{src_name}", path.trim_end_matches('/'));
            }
        }
        let mut opt = OpenOptions::create().flags(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC);
        opt.layout = spec;
        let f = c.open(&path, &opt).map_err(|e| CliError::io(&path, e))?;
        return Ok(End::Nacre(Box::new(f)));
    }
    if spec.is_some() {
        return Err(CliError::msg(
            "striping options apply to a destination in nacre (nacre:/path)",
        ));
    }
    let mut path = std::path::PathBuf::from(dst);
    if path.is_dir() {
        path.push(src_name);
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| CliError::io(&path.display().to_string(), e))?;
    Ok(End::Local(f))
}

fn progress(len: u64) -> Option<ProgressBar> {
    if len < PROGRESS_MIN || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}
