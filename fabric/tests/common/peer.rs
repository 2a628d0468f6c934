//! The far side of the fabric tests: an endpoint that echoes every message back to its
//! sender and keeps progressing so that RMA on its region advances (manual progress).
//! The same code runs in a thread ([`spawn_thread`]) or in a child process
//! ([`spawn_process`]), talking over text lines: `name HEX`, `region HEX` out, `peer HEX` in.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use nacre_fabric::{Access, BulkDesc, Completion, EndpointConfig, Memory, OpKind};

use super::{open, pattern};

/// Size of the peer's RMA region and the seed of its initial contents.
pub const REGION_LEN: usize = 32 << 20;
pub const REGION_SEED: u64 = 100;
/// Receive buffers the peer keeps posted, each large enough for the largest message.
const RECV_SLOTS: usize = 8;
pub const MAX_MSG: usize = 8 << 20;
/// A peer never outlives this, whatever the test does.
const LIFETIME: Duration = Duration::from_secs(300);
const ENV: &str = "NACRE_TEST_PEER_PROVIDER";

pub struct PeerInfo {
    pub name: Vec<u8>,
    pub region: BulkDesc,
}

/// Runs the peer until `input` closes or says `quit`; `output` gets its name and region.
pub fn run(provider: &str, input: Receiver<String>, output: Sender<String>) {
    let cfg = EndpointConfig {
        max_tx: 512,
        max_rx: 512,
        ..Default::default()
    };
    let mut ep = open(provider, &cfg);
    let region = ep
        .register(Memory::anonymous(REGION_LEN).unwrap(), Access::ALL)
        .unwrap();
    region
        .copy_in(0, &pattern(REGION_SEED, REGION_LEN))
        .unwrap();
    let recv = ep
        .register(
            Memory::anonymous(RECV_SLOTS * MAX_MSG).unwrap(),
            Access::LOCAL,
        )
        .unwrap();
    let _ = output.send(format!("name {}", hex(ep.name())));
    let _ = output.send(format!(
        "region {}",
        hex(&region.remote_all().unwrap().to_bytes())
    ));

    let mut sender = None;
    for slot in 0..RECV_SLOTS {
        ep.post_recv(recv.slice(slot * MAX_MSG, MAX_MSG).unwrap(), slot as u64)
            .unwrap();
    }
    let start = Instant::now();
    let mut out = [Completion {
        context: 0,
        kind: OpKind::Send,
        len: 0,
        source: None,
    }; 16];
    let mut spins = 0u32;
    loop {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(512) {
            match input.try_recv() {
                Ok(line) if line.starts_with("peer ") => {
                    sender = Some(ep.insert_peer(&unhex(&line[5..])).unwrap());
                    let _ = output.send("ready".into());
                }
                Ok(line) if line == "quit" => return,
                Ok(_) | Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return,
            }
            if start.elapsed() > LIFETIME {
                return;
            }
        }
        let n = match ep.poll(&mut out) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("peer: {e}");
                continue;
            }
        };
        for c in &out[..n] {
            let slot = (c.context & 0xffff) as usize;
            match c.kind {
                // Echo what arrived, from the same buffer; repost once the send completes.
                OpKind::Recv => {
                    let to = sender.expect("a message before the peer's address");
                    let src = recv.slice(slot * MAX_MSG, c.len).unwrap();
                    ep.post_send(src, to, slot as u64 | 1 << 32).unwrap();
                }
                OpKind::Send => {
                    let dst = recv.slice(slot * MAX_MSG, MAX_MSG).unwrap();
                    ep.post_recv(dst, slot as u64).unwrap();
                }
                _ => {}
            }
        }
    }
}

/// A peer in a thread of this process.
pub struct ThreadPeer {
    pub info: PeerInfo,
    input: Sender<String>,
    output: Receiver<String>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn spawn_thread(provider: &str) -> ThreadPeer {
    let (to_peer, input) = channel();
    let (output, from_peer) = channel();
    let provider = provider.to_string();
    let thread = std::thread::spawn(move || run(&provider, input, output));
    let info = read_info(|| from_peer.recv_timeout(Duration::from_secs(30)).ok());
    ThreadPeer {
        info,
        input: to_peer,
        output: from_peer,
        thread: Some(thread),
    }
}

impl ThreadPeer {
    /// Gives the peer our name and returns once it can answer us.
    pub fn connect(&self, my_name: &[u8]) {
        self.input.send(format!("peer {}", hex(my_name))).unwrap();
        let ready = self.output.recv_timeout(Duration::from_secs(30));
        assert_eq!(
            ready.as_deref(),
            Ok("ready"),
            "peer thread did not take our name"
        );
    }
}

impl Drop for ThreadPeer {
    fn drop(&mut self) {
        let _ = self.input.send("quit".into());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A peer in a child process (this test binary, re-run as [`process_main`]).
pub struct ProcessPeer {
    pub info: PeerInfo,
    pub child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

pub fn spawn_process(provider: &str) -> ProcessPeer {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "peer_process_main",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV, provider)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the peer process");
    let stdin = child.stdin.take().unwrap();
    // Every line the child prints, read by a thread of its own: its last lines must never
    // meet a closed pipe, and a peer that hangs while starting fails the test, not holds it.
    let (tx, rx) = channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        // The harness may have printed "test peer_process_main ... " on the same line.
        for line in stdout.lines().map_while(Result::ok) {
            if let Some(at) = line.find("NACRE ") {
                let _ = tx.send(line[at + 6..].to_string());
            }
        }
    });
    let info = read_info(|| rx.recv_timeout(Duration::from_secs(30)).ok());
    ProcessPeer {
        info,
        child,
        stdin,
        lines: rx,
    }
}

impl ProcessPeer {
    /// Gives the peer our name and returns once it can answer us.
    pub fn connect(&mut self, my_name: &[u8]) {
        writeln!(self.stdin, "peer {}", hex(my_name)).unwrap();
        let ready = self.lines.recv_timeout(Duration::from_secs(30));
        assert_eq!(
            ready.as_deref(),
            Ok("ready"),
            "peer process did not take our name"
        );
    }
}

impl Drop for ProcessPeer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Body of the child process: a no-op unless started by [`spawn_process`].
pub fn process_main() {
    let Ok(provider) = std::env::var(ENV) else {
        return;
    };
    let (to_peer, input) = channel();
    let (output, from_peer) = channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if to_peer.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for line in from_peer {
            println!("NACRE {line}");
        }
    });
    run(&provider, input, output);
}

fn read_info(mut next: impl FnMut() -> Option<String>) -> PeerInfo {
    let name = next().expect("peer's name");
    let region = next().expect("peer's region");
    PeerInfo {
        name: unhex(name.strip_prefix("name ").expect("name line")),
        region: BulkDesc::from_bytes(&unhex(region.strip_prefix("region ").expect("region line")))
            .unwrap(),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}
