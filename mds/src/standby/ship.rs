//! The active MDS's side: a TCP listener (its address is in the MDS's claim, so the map
//! tells standbys where to follow) and a thread that serves one standby at a time: a
//! snapshot of the MDT, then every batch's redo record as the committer appends it,
//! and the standby's acknowledgements back to the MDT ([`Replication`]).

use std::io::{BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::wire::Frame;
use crate::mdt::replication::{dump, Replication};
use crate::mdt::Mdt;

/// Records the committer may run ahead of a standby before it is dropped.
const DEPTH: usize = 16384;
/// A beat this often when there is nothing to send.
const BEAT_EVERY: Duration = Duration::from_millis(200);
/// A standby silent this long (no acknowledgement of a beat) is dropped.
const SILENT: Duration = Duration::from_secs(3);
/// ... or this long while it loads the snapshot.
const LOADING: Duration = Duration::from_secs(120);

/// Ships the MDT to one standby at a time; stops when dropped.
pub struct Shipper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    stop: AtomicBool,
    /// The standby that caught up (empty: none), for the MDS's heartbeats.
    standby: Mutex<String>,
    /// The file system key a standby must prove it holds (None: servers built without
    /// one, by tests).
    key: Option<nacre_auth::Key>,
    /// Standby addresses whose refusal was logged (once each).
    refused: Mutex<std::collections::HashSet<std::net::IpAddr>>,
}

impl Shipper {
    /// Serves standbys that connect to `listener` and prove they hold `key`; `sync`:
    /// the MDT's sync mode (each record on the standby's stable storage before it is
    /// acknowledged).
    pub fn start(
        listener: TcpListener,
        mdt: Arc<Mdt>,
        sync: bool,
        key: Option<nacre_auth::Key>,
    ) -> std::io::Result<Shipper> {
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            standby: Mutex::default(),
            key,
            refused: Mutex::default(),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("mds-ship".into())
                .spawn(move || accept(&listener, &mdt, &shared, sync))?
        };
        Ok(Shipper {
            shared,
            thread: Some(thread),
        })
    }

    /// The node of the standby that holds every acknowledged operation (empty: none):
    /// what the MDS's heartbeats name.
    pub fn standby(&self) -> String {
        self.shared
            .standby
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept(listener: &TcpListener, mdt: &Mdt, shared: &Shared, sync: bool) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, peer)) => {
                let repl = mdt.replication();
                match serve(conn, peer, mdt, shared, sync) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        let mut logged = shared.refused.lock().unwrap_or_else(|p| p.into_inner());
                        if logged.len() < 1024 && logged.insert(peer.ip()) {
                            tracing::warn!("standby at {peer} refused: {e} (logged once)");
                        }
                    }
                    Err(e) => tracing::warn!("standby at {peer}: {e}"),
                }
                repl.unsubscribe();
                set_standby(shared, String::new());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                tracing::warn!("standby listener: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn set_standby(shared: &Shared, node: String) {
    *shared.standby.lock().unwrap_or_else(|p| p.into_inner()) = node;
}

/// One standby, until its connection fails, it falls behind or the server stops.
fn serve(
    conn: TcpStream,
    peer: SocketAddr,
    mdt: &Mdt,
    shared: &Shared,
    sync: bool,
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    // A standby that stops reading (paused) must not hold this thread in a write: the
    // next standby waits for it, and so does the server's stop.
    conn.set_write_timeout(Some(LOADING))?;
    let node = match Frame::read_from(&mut &conn)? {
        Frame::Hello { node } => node,
        other => return Err(invalid(format!("expected a hello, got {other:?}"))),
    };
    if let Some(key) = &shared.key {
        super::auth::check_standby(&mut &conn, key, &node)?;
    }
    println!("nacre-mds: standby {node} ({peer}) follows: sending a snapshot");
    let repl: &Arc<Replication> = mdt.replication();
    // Subscribed before the snapshot: every record after it reaches the standby, and
    // those the snapshot holds already replay harmlessly over it.
    let (records, mut sent) = repl.subscribe(DEPTH);
    let mut out = BufWriter::with_capacity(1 << 20, conn.try_clone()?);
    let tx = mdt.snapshot().map_err(|e| invalid(e.to_string()))?;
    dump(&tx, 1 << 20, |chunk| {
        Frame::Snap(chunk.to_vec()).write_to(&mut out)
    })
    .map_err(|e| invalid(e.to_string()))?;
    drop(tx);
    Frame::SnapEnd { sync }.write_to(&mut out)?;
    out.flush()?;
    let acks = Acks::start(conn.try_clone()?, repl.clone())?;
    let mut stage = Stage::Loading(repl.seq());
    while !shared.stop.load(Ordering::SeqCst) {
        match records.recv_timeout(BEAT_EVERY) {
            // With whatever else is queued, in one go.
            Ok(first) => {
                for (seq, bytes) in std::iter::once(first).chain(records.try_iter()) {
                    Frame::write_record(&mut out, seq, &bytes)?;
                    sent = seq;
                }
            }
            Err(RecvTimeoutError::Timeout) => Frame::Beat { seq: sent }.write_to(&mut out)?,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(invalid("it fell behind".into()));
            }
        }
        out.flush()?;
        let patience = match stage {
            Stage::Loading(_) => LOADING,
            _ => SILENT,
        };
        if acks.silent_for() > patience {
            return Err(invalid(format!("no acknowledgement for {patience:?}")));
        }
        stage = match stage {
            // Caught up with the snapshot and what followed it: from now on sync-mode
            // replies wait for the standby...
            Stage::Loading(target) if acks.heard() && repl.acked() >= target => {
                conn.set_write_timeout(Some(SILENT))?;
                repl.name();
                Stage::Naming(repl.seq())
            }
            // ...and once it holds every record up to then, it holds every operation
            // acknowledged: the MGS may hear of it.
            Stage::Naming(target) if repl.acked() >= target => {
                println!("nacre-mds: standby {node} in sync (record {target})");
                set_standby(shared, node.clone());
                Stage::InSync
            }
            other => other,
        };
    }
    Ok(())
}

/// How far a standby has come.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Loading the snapshot and the records after it, up to this one.
    Loading(u64),
    /// Sync-mode replies wait for it; it holds everything once it acknowledged this.
    Naming(u64),
    /// Named in the heartbeats.
    InSync,
}

fn invalid(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why)
}

/// The standby's acknowledgements, read on a thread of their own.
struct Acks {
    last: Arc<Mutex<std::time::Instant>>,
    /// An acknowledgement came (the standby loaded the snapshot before it).
    heard: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    conn: TcpStream,
}

impl Acks {
    fn start(conn: TcpStream, repl: Arc<Replication>) -> std::io::Result<Acks> {
        let last = Arc::new(Mutex::new(std::time::Instant::now()));
        let heard = Arc::new(AtomicBool::new(false));
        conn.set_read_timeout(None)?;
        let reader = conn.try_clone()?;
        let thread = {
            let last = last.clone();
            let heard = heard.clone();
            std::thread::Builder::new()
                .name("mds-ship-acks".into())
                .spawn(move || {
                    while let Ok(Frame::Ack { seq }) = Frame::read_from(&mut &reader) {
                        repl.ack(seq);
                        heard.store(true, Ordering::SeqCst);
                        *last.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
                    }
                })?
        };
        Ok(Acks {
            last,
            heard,
            thread: Some(thread),
            conn,
        })
    }

    fn heard(&self) -> bool {
        self.heard.load(Ordering::SeqCst)
    }

    fn silent_for(&self) -> Duration {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}

impl Drop for Acks {
    fn drop(&mut self) {
        // Ends the reader's blocking read.
        let _ = self.conn.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
