//! Two processes on loopback, on each provider: the peer is this test binary re-run as
//! `peer_process_main`. Transfers across a real process boundary, and a peer that is
//! killed (SIGKILL) in the middle of a stream of RMA reads.

mod common;

use std::time::{Duration, Instant};

use common::checks::*;
use common::peer::{process_main, spawn_process};
use common::*;
use nacre_fabric::testing::Watchdog;
use nacre_fabric::{Access, Completion, EndpointConfig, Error, Memory, OpKind};

/// Not a test of its own: the body of the peer process (a no-op when run by the harness).
#[test]
fn peer_process_main() {
    process_main();
}

fn config() -> EndpointConfig {
    EndpointConfig {
        max_tx: 512,
        max_rx: 512,
        ..Default::default()
    }
}

#[test]
fn transfers_between_two_processes() {
    let _watchdog = Watchdog::arm("transfers_between_two_processes", Duration::from_secs(240));
    for provider in PROVIDERS {
        if available(provider, "transfers_between_two_processes").is_none() {
            continue;
        }
        let mut ep = open(provider, &config());
        let mut peer = spawn_process(provider);
        peer.connect(ep.name());
        let addr = ep.insert_peer(&peer.info.name).unwrap();
        messages_echo(&mut ep, addr, provider);
        rma_read_write(&mut ep, addr, &peer.info, provider);
        many_in_flight(&mut ep, addr, &peer.info, provider);
        bad_key(&mut ep, addr, &peer.info, provider);
    }
}

#[test]
fn peer_killed_mid_transfer_gives_an_error_not_a_hang() {
    let _watchdog = Watchdog::arm(
        "peer_killed_mid_transfer_gives_an_error_not_a_hang",
        Duration::from_secs(300),
    );
    for provider in PROVIDERS {
        if available(
            provider,
            "peer_killed_mid_transfer_gives_an_error_not_a_hang",
        )
        .is_none()
        {
            continue;
        }
        let mut cfg = config();
        cfg.post_timeout = Duration::from_secs(20);
        let mut ep = open(provider, &cfg);
        let mut peer = spawn_process(provider);
        peer.connect(ep.name());
        let addr = ep.insert_peer(&peer.info.name).unwrap();
        const CHUNK: usize = 1 << 20;
        const WINDOW: usize = 16;
        let local = ep
            .register(Memory::anonymous(WINDOW * CHUNK).unwrap(), Access::LOCAL)
            .unwrap();
        let region = peer.info.region;
        let mut out = [Completion {
            context: 0,
            kind: OpKind::Send,
            len: 0,
            source: None,
        }; 32];
        let (mut posted, mut done) = (0u64, 0u64);
        let mut killed_at: Option<Instant> = None;
        let start = Instant::now();
        let outcome: Error = 'run: loop {
            // Keep the window full; after the kill, posting itself may fail.
            while ep.in_flight() < WINDOW {
                let slot = (posted % WINDOW as u64) as usize;
                let dst = local.slice(slot * CHUNK, CHUNK).unwrap();
                let at = (posted % 16) * CHUNK as u64;
                if let Err(e) = ep.post_read(dst, addr, &region, at, posted) {
                    break 'run e;
                }
                posted += 1;
            }
            match ep.poll(&mut out) {
                Ok(n) => done += n as u64,
                Err(e) => break e,
            }
            if killed_at.is_none() && done >= 64 {
                peer.child.kill().expect("kill -9 the peer");
                peer.child.wait().unwrap();
                killed_at = Some(Instant::now());
            }
            if let Some(t) = killed_at {
                assert!(
                    t.elapsed() < Duration::from_secs(60),
                    "{provider}: 60 s after the peer died, still no error ({done} reads done)"
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{provider}: stalled"
            );
        };
        let after = killed_at.map(|t| t.elapsed().as_secs_f64()).unwrap_or(-1.0);
        assert!(
            killed_at.is_some(),
            "{provider}: failed before the kill: {outcome}"
        );
        println!("{provider}: peer killed after {done} reads; {after:.2} s later: {outcome}");
        // The endpoint stays usable for other work: drain what is left without panicking.
        // shm never completes the reads that were in flight to the dead peer (they stay
        // counted; the engine's own deadlines end such operations), hence the bound.
        let drain_start = Instant::now();
        while ep.in_flight() > 0 && drain_start.elapsed() < Duration::from_secs(5) {
            let _ = ep.poll(&mut out);
        }
    }
}
