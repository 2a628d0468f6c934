//! The standby's side: follow the MDS that serves the role (the map names its
//! replication address), keep a copy of its MDT in this server's directory (snapshot,
//! then every record, each acknowledged once on disk, on stable storage in sync mode),
//! and claim the role when its lease lapses. The MGS gives it only to the standby the
//! last owner named in its heartbeats (docs/mds.md, "Standby MDS").

use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nacre_mgc::MgsClient;
use nacre_proto::bootstrap::{ClaimRequest, Grant, Role, RoleKind, TargetState};

use super::wire::Frame;
use crate::mdt::replication::StandbyStore;

/// How often the map is looked at.
const POLL: Duration = Duration::from_millis(200);

/// What the receiving thread has done.
#[derive(Default)]
struct Copy {
    stop: AtomicBool,
    /// A whole snapshot is in the directory (with the records after it).
    whole: AtomicBool,
    /// The connection ended.
    ended: AtomicBool,
}

/// Follows the MDS serving `role` until this server takes it over (the grant and when
/// its claim was sent) or `stop` is set (None). `claim` is the claim to send, with
/// `want` set to the role.
pub fn follow(
    mgs: &mut MgsClient,
    dir: &Path,
    claim: &ClaimRequest,
    stop: &AtomicBool,
) -> Result<Option<(Grant, Instant)>, nacre_mgc::MgsError> {
    let role = Role {
        kind: RoleKind::Mds,
        index: claim.want.unwrap_or(0),
    };
    let mut receiver: Option<Receiver> = None;
    let mut refused = String::new();
    // A copy left by an earlier run (or this server's own MDT) may take over only if
    // the MGS allows it; a receiver replaces it with a fresh one.
    let mut have_copy = dir.join(crate::mdt::DB_FILE).exists();
    println!("nacre-mds: standby for {role}");
    while !stop.load(Ordering::Relaxed) {
        let map = match mgs.fetch_map() {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("standby: fetching the map: {e}");
                std::thread::sleep(POLL);
                continue;
            }
        };
        if let Some(r) = &receiver {
            have_copy = r.copy.whole.load(Ordering::SeqCst);
            if r.copy.ended.load(Ordering::SeqCst) {
                receiver = None;
            }
        }
        let owner = map.server(role).filter(|s| s.node != claim.node);
        let down = map
            .target(role)
            .is_none_or(|t| t.state == TargetState::Down);
        if down && have_copy {
            if let Some(r) = receiver.take() {
                r.stop();
            }
            let sent = Instant::now();
            match mgs.claim(claim) {
                Ok(grant) => return Ok(Some((grant, sent))),
                Err(e) => {
                    let why = e.to_string();
                    if why != refused {
                        println!("nacre-mds: standby: taking {role} over refused: {why}");
                        refused = why;
                    }
                }
            }
        } else if receiver.is_none() {
            if let Some(addr) = owner
                .map(|s| s.replication.clone())
                .filter(|a| !a.is_empty())
            {
                match Receiver::start(&addr, dir, &claim.node, mgs.key()) {
                    Ok(r) => {
                        println!("nacre-mds: standby: following {role} at {addr}");
                        receiver = Some(r);
                    }
                    Err(e) => tracing::debug!("standby: connecting to {addr}: {e}"),
                }
            }
        }
        std::thread::sleep(POLL);
    }
    if let Some(r) = receiver {
        r.stop();
    }
    Ok(None)
}

/// The thread that receives the copy.
struct Receiver {
    copy: Arc<Copy>,
    conn: TcpStream,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(
        addr: &str,
        dir: &Path,
        node: &str,
        key: Option<&nacre_auth::Key>,
    ) -> std::io::Result<Receiver> {
        let sock = addr
            .parse::<std::net::SocketAddr>()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let conn = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
        conn.set_nodelay(true)?;
        Frame::Hello {
            node: node.to_string(),
        }
        .write_to(&mut &conn)?;
        if let Some(key) = key {
            conn.set_read_timeout(Some(Duration::from_secs(5)))?;
            super::auth::prove_standby(&mut &conn, key, node)?;
            conn.set_read_timeout(None)?;
        }
        let copy = Arc::new(Copy::default());
        let thread = {
            let (copy, conn, dir) = (copy.clone(), conn.try_clone()?, dir.to_path_buf());
            std::thread::Builder::new()
                .name("mds-standby".into())
                .spawn(move || {
                    if let Err(e) = receive(&conn, &dir, &copy) {
                        if !copy.stop.load(Ordering::SeqCst) {
                            println!("nacre-mds: standby: the copy stopped: {e}");
                        }
                    }
                    copy.ended.store(true, Ordering::SeqCst);
                })?
        };
        Ok(Receiver {
            copy,
            conn,
            thread: Some(thread),
        })
    }

    /// Stops receiving; the copy stays as it is.
    fn stop(mut self) {
        self.copy.stop.store(true, Ordering::SeqCst);
        let _ = self.conn.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn receive(conn: &TcpStream, dir: &Path, copy: &Copy) -> Result<(), String> {
    let mut input = std::io::BufReader::with_capacity(1 << 20, conn);
    let mut store = StandbyStore::create(dir).map_err(|e| e.to_string())?;
    let mut sync = false;
    let mut records: u64 = 0;
    let started = Instant::now();
    // Group commit: the records that arrived together are synced once, and the last
    // of them acknowledged.
    let (mut unsynced, mut unacked) = (false, None);
    loop {
        if input.buffer().is_empty() {
            if std::mem::take(&mut unsynced) && sync {
                store.sync().map_err(|e| e.to_string())?;
            }
            if let Some(seq) = unacked.take() {
                Frame::Ack { seq }
                    .write_to(&mut &*conn)
                    .map_err(|e| e.to_string())?;
            }
        }
        let frame = Frame::read_from(&mut input).map_err(|e| e.to_string())?;
        if copy.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        match frame {
            Frame::Snap(chunk) => store.load(&chunk).map_err(|e| e.to_string())?,
            Frame::SnapEnd { sync: s } => {
                store.end_snapshot().map_err(|e| e.to_string())?;
                sync = s;
                copy.whole.store(true, Ordering::SeqCst);
                println!(
                    "nacre-mds: standby: snapshot loaded in {:?} ({} mode)",
                    started.elapsed(),
                    if sync { "sync" } else { "default" }
                );
            }
            Frame::Rec { seq, bytes } => {
                store.append(&bytes).map_err(|e| e.to_string())?;
                records += 1;
                unsynced = true;
                unacked = Some(seq);
            }
            Frame::Beat { seq } => unacked = Some(unacked.unwrap_or(0).max(seq)),
            other => return Err(format!("unexpected {other:?} after {records} records")),
        }
    }
}
