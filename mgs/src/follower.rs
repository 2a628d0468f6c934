//! A follower MGS: while another MGS leads (etcd store), every request that arrives here
//! is relayed to the leader and its reply relayed back, so clients and servers may use
//! any MGS address. Nothing is decided here.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nacre_proto::bootstrap::{
    errno, BootHeader, BootReply, BOOT_HEADER_LEN, MAX_REPLY_BODY, MAX_REQUEST_BODY,
};

use super::config::MgsConfig;
use super::server::read_full;

/// Where the leader is, as the campaign loop last saw it.
pub type LeaderAddr = Arc<Mutex<Option<String>>>;

pub struct Follower {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Follower {
    /// Relays on a clone of `listener` until [`Follower::stop`].
    pub fn start(
        listener: &TcpListener,
        leader: LeaderAddr,
        cfg: &MgsConfig,
    ) -> io::Result<Follower> {
        let l = listener.try_clone()?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, cfg) = (stop.clone(), cfg.clone());
            std::thread::spawn(move || accept(l, &stop, &leader, &cfg))
        };
        Ok(Follower {
            stop,
            addr,
            thread: Some(thread),
        })
    }

    /// Stops accepting; relaying connections close at their next request.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept(l: TcpListener, stop: &Arc<AtomicBool>, leader: &LeaderAddr, cfg: &MgsConfig) {
    let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for s in l.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(s) = s else { continue };
        if conns.load(Ordering::SeqCst) >= cfg.max_connections {
            continue;
        }
        conns.fetch_add(1, Ordering::SeqCst);
        let (stop, leader, cfg, conns) = (stop.clone(), leader.clone(), cfg.clone(), conns.clone());
        std::thread::spawn(move || {
            let _ = relay(s, &stop, &leader, &cfg);
            conns.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn relay(
    mut s: TcpStream,
    stop: &AtomicBool,
    leader: &LeaderAddr,
    cfg: &MgsConfig,
) -> io::Result<()> {
    s.set_nodelay(true)?;
    let me = s.local_addr()?.to_string();
    let deadline = Duration::from_millis(cfg.request_deadline_ms);
    s.set_write_timeout(Some(deadline))?;
    let mut upstream: Option<TcpStream> = None;
    // Over TLS the client's proof binds its session with whoever terminates it: a relay
    // would break it. Clients are sent to the leader (they hold every MGS address).
    let tls = cfg.key.is_some() && cfg.tls.applies(s.local_addr()?);
    loop {
        let mut head = [0u8; BOOT_HEADER_LEN];
        let idle = Instant::now() + Duration::from_millis(cfg.idle_timeout_ms);
        read_full(&mut s, &mut head[..1], idle)?;
        // Once a request starts it must arrive whole in time, as at the leader.
        let until = Instant::now() + deadline;
        read_full(&mut s, &mut head[1..], until)?;
        if stop.load(Ordering::SeqCst) {
            return Ok(()); // this MGS leads now: the client reconnects to it
        }
        let Ok(h) = BootHeader::decode(&head, MAX_REQUEST_BODY) else {
            return Ok(());
        };
        let mut frame = head.to_vec();
        frame.resize(BOOT_HEADER_LEN + h.body_len as usize, 0);
        read_full(&mut s, &mut frame[BOOT_HEADER_LEN..], until)?;
        let mut target = leader.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if target.as_deref() == Some(me.as_str()) {
            target = None; // our own key from a previous run, not expired yet
        }
        if tls {
            let reply = BootReply::Failed {
                errno: errno::EAGAIN,
                message: format!(
                    "this MGS follows, and relays no TLS: connect to the leader ({})",
                    target.as_deref().unwrap_or("not known yet")
                ),
            };
            s.write_all(&reply.encode(h.op))?;
            return Ok(());
        }
        // A long poll may wait up to its own deadline at the leader.
        let wait = Duration::from_secs(61);
        match forward(&mut upstream, target.as_deref(), &frame, wait) {
            Ok(reply) => s.write_all(&reply)?,
            Err(why) => {
                let reply = BootReply::Failed {
                    errno: errno::EAGAIN,
                    message: format!("this MGS follows; the leader is not reachable: {why}"),
                };
                s.write_all(&reply.encode(h.op))?;
                // The client's authentication was with the lost upstream: it connects
                // (and proves itself) again.
                return Ok(());
            }
        }
    }
}

fn forward(
    upstream: &mut Option<TcpStream>,
    leader: Option<&str>,
    frame: &[u8],
    wait: Duration,
) -> Result<Vec<u8>, String> {
    let leader = leader.ok_or("no leader known")?;
    if upstream.is_none() {
        let sa: SocketAddr = leader.parse().map_err(|e| format!("{leader}: {e}"))?;
        let s = TcpStream::connect_timeout(&sa, Duration::from_secs(1))
            .map_err(|e| format!("{leader}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        *upstream = Some(s);
    }
    let up = upstream.as_mut().expect("connected");
    let until = Instant::now() + wait;
    up.write_all(frame).map_err(|e| format!("{leader}: {e}"))?;
    let mut head = [0u8; BOOT_HEADER_LEN];
    read_full(up, &mut head, until).map_err(|e| format!("{leader}: {e}"))?;
    let h = BootHeader::decode(&head, MAX_REPLY_BODY).map_err(|e| format!("{leader}: {e}"))?;
    let mut reply = head.to_vec();
    reply.resize(BOOT_HEADER_LEN + h.body_len as usize, 0);
    read_full(up, &mut reply[BOOT_HEADER_LEN..], until).map_err(|e| format!("{leader}: {e}"))?;
    Ok(reply)
}
