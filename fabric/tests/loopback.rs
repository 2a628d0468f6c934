//! An endpoint and a peer in a thread of the same process, on each provider: the API
//! end to end, and the error paths that need no second process.

mod common;

use common::checks::*;
use common::peer::spawn_thread;
use common::*;
use nacre_fabric::{Access, EndpointConfig, ErrorKind, Memory};

fn with_thread_peer(
    test: &str,
    body: impl Fn(&str, &mut nacre_fabric::Endpoint, nacre_fabric::PeerAddr, &common::peer::PeerInfo),
) {
    for provider in PROVIDERS {
        if available(provider, test).is_none() {
            continue;
        }
        let cfg = EndpointConfig {
            max_tx: 512,
            max_rx: 512,
            ..Default::default()
        };
        let mut ep = open(provider, &cfg);
        let peer = spawn_thread(provider);
        peer.connect(ep.name());
        let addr = ep.insert_peer(&peer.info.name).unwrap();
        body(provider, &mut ep, addr, &peer.info);
    }
}

#[test]
fn messages_rma_and_many_in_flight_with_a_thread_peer() {
    with_thread_peer(
        "messages_rma_and_many_in_flight_with_a_thread_peer",
        |p, ep, addr, info| {
            messages_echo(ep, addr, p);
            rma_read_write(ep, addr, info, p);
            many_in_flight(ep, addr, info, p);
        },
    );
}

#[test]
fn bad_rma_key_gives_an_error_completion() {
    with_thread_peer(
        "bad_rma_key_gives_an_error_completion",
        |p, ep, addr, info| bad_key(ep, addr, info, p),
    );
}

#[test]
fn small_messages_by_inject() {
    with_thread_peer("small_messages_by_inject", |provider, ep, addr, _| {
        let rx = ep
            .register(Memory::anonymous(4096).unwrap(), Access::LOCAL)
            .unwrap();
        let n = ep.inject_size().min(64);
        let data = pattern(3, n);
        ep.post_recv(rx.slice(0, 4096).unwrap(), 1).unwrap();
        ep.inject(&data, addr).unwrap();
        let done = collect(ep, 1);
        assert_eq!(done[0].len, n, "{provider}");
        let mut got = vec![0; n];
        rx.copy_out(0, &mut got).unwrap();
        assert_eq!(got, data, "{provider}: injected bytes echoed");
        let too_big = vec![0u8; ep.inject_size() + 1];
        let err = ep.inject(&too_big, addr).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::TooLarge { .. }), "{err}");
    });
}

#[test]
fn local_errors_are_caught_before_posting() {
    for provider in PROVIDERS {
        if available(provider, "local_errors_are_caught_before_posting").is_none() {
            continue;
        }
        let cfg = EndpointConfig::default();
        let mut a = open(provider, &cfg);
        let mut b = open(provider, &cfg);
        let mut c = open(provider, &cfg);
        let b_at_a = a.insert_peer(b.name()).unwrap();
        let ma = a
            .register(Memory::anonymous(8192).unwrap(), Access::ALL)
            .unwrap();
        let mb = b
            .register(Memory::anonymous(8192).unwrap(), Access::ALL)
            .unwrap();
        let remote_b = mb.remote(0, 4096).unwrap();

        // A range outside the local registration.
        let err = ma.slice(4096, 8192).err().unwrap();
        assert!(matches!(err.kind(), ErrorKind::OutOfBounds { .. }), "{err}");
        // A remote range outside what the peer described.
        let err = a
            .post_read(ma.slice(0, 4096).unwrap(), b_at_a, &remote_b, 1, 1)
            .unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::OutOfBounds { what: "remote", .. }),
            "{err}"
        );
        // A peer address from another endpoint's address vector.
        let err = c.post_send(ma.slice(0, 1).unwrap(), b_at_a, 2).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                ErrorKind::UnknownPeer(_) | ErrorKind::ForeignRegion
            ),
            "{err}"
        );
        let mc = c
            .register(Memory::anonymous(4096).unwrap(), Access::ALL)
            .unwrap();
        let err = c.post_send(mc.slice(0, 1).unwrap(), b_at_a, 3).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::UnknownPeer(0)), "{err}");
        // Memory registered in another domain.
        let err = a.post_send(mc.slice(0, 1).unwrap(), b_at_a, 4).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::ForeignRegion), "{err}");
        // Names that are no fabric address.
        for name in [&[][..], &[0u8; 300][..]] {
            let err = c.insert_peer(name).unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::BadPeerName { .. }), "{err}");
        }
        assert_eq!(
            a.in_flight(),
            0,
            "failed posts must not be counted in flight"
        );
        // A registration is released only when nothing is in flight.
        let mr = a
            .register(Memory::anonymous(4096).unwrap(), Access::LOCAL)
            .unwrap();
        a.post_recv(mr.slice(0, 4096).unwrap(), 9).unwrap();
        let err = a.deregister(&mr).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Busy(1)), "{err}");
        drop(a); // closing the endpoint cancels the receive; the memory outlives it
        let err = c.post_send(mr.slice(0, 1).unwrap(), b_at_a, 5).unwrap_err();
        assert!(matches!(
            err.kind(),
            ErrorKind::ForeignRegion | ErrorKind::UnknownPeer(_)
        ));
        // Contexts are the caller's whole u64; a region is released once nothing posted
        // on it is in flight, whatever is posted on other regions.
        c.post_recv(mc.slice(0, 1).unwrap(), u64::MAX).unwrap();
        let idle = c
            .register(Memory::anonymous(4096).unwrap(), Access::ALL)
            .unwrap();
        c.deregister(&idle).unwrap();
        assert_eq!(mc.busy(), 1);
        let err = c.deregister(&mc).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Busy(1)), "{err}");
    }
}

/// Moves bytes by RMA between two endpoints of this thread (both progressed by the
/// loop): `owner` registers and describes the region, `initiator` reads and writes it.
/// Returns false when the owner's provider refuses to bind a registration to an
/// endpoint (FI_MR_ENDPOINT forced on a provider that does not implement it).
fn rma_between(owner: &mut nacre_fabric::Endpoint, initiator: &mut nacre_fabric::Endpoint) -> bool {
    use nacre_fabric::Completion;
    let len = 1 << 20;
    let region = match owner.register(Memory::anonymous(len).unwrap(), Access::ALL) {
        Ok(r) => r,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::Call {
                    call: "fi_mr_bind",
                    ..
                }
            ) =>
        {
            return false;
        }
        Err(e) => panic!("register: {e}"),
    };
    region.copy_in(0, &pattern(7, len)).unwrap();
    let desc = region.remote_all().unwrap();
    let local = initiator
        .register(Memory::anonymous(len).unwrap(), Access::ALL)
        .unwrap();
    let at = initiator.insert_peer(owner.name()).unwrap();
    let run = |initiator: &mut nacre_fabric::Endpoint, owner: &mut nacre_fabric::Endpoint| {
        let mut out = [Completion {
            context: 0,
            kind: nacre_fabric::OpKind::Send,
            len: 0,
            source: None,
        }; 4];
        let start = std::time::Instant::now();
        loop {
            owner.progress().unwrap();
            if initiator.poll(&mut out).unwrap() > 0 {
                return;
            }
            assert!(start.elapsed() < WAIT, "RMA made no progress");
        }
    };
    // Both endpoints live on this thread: a post that must wait (connection set-up needs
    // the owner's progress too) returns Again, and the owner is progressed in between.
    let post =
        |initiator: &mut nacre_fabric::Endpoint,
         owner: &mut nacre_fabric::Endpoint,
         op: &dyn Fn(&mut nacre_fabric::Endpoint) -> nacre_fabric::Result<()>| {
            let start = std::time::Instant::now();
            loop {
                match op(initiator) {
                    Ok(()) => return,
                    Err(e) if matches!(e.kind(), ErrorKind::Again(_)) => owner.progress().unwrap(),
                    Err(e) => panic!("post: {e}"),
                }
                assert!(start.elapsed() < WAIT, "post made no progress");
            }
        };
    post(initiator, owner, &|i| {
        i.post_read(local.slice(0, len).unwrap(), at, &desc, 0, 1)
    });
    run(initiator, owner);
    let mut got = vec![0; len];
    local.copy_out(0, &mut got).unwrap();
    assert!(got == pattern(7, len), "read bytes");
    local.copy_in(0, &pattern(8, len / 2)).unwrap();
    post(initiator, owner, &|i| {
        i.post_write(local.slice(0, len / 2).unwrap(), at, &desc, 4096, 2)
    });
    run(initiator, owner);
    let mut got = vec![0; len / 2];
    region.copy_out(4096, &mut got).unwrap();
    assert!(got == pattern(8, len / 2), "written bytes");
    true
}

/// Every mr_mode branch the layer has, on every provider here. Addressing by virtual
/// address (shm) and by offset (tcp, sockets) are the providers' own choices; the
/// provider's key (FI_MR_PROV_KEY) and per-endpoint binding (FI_MR_ENDPOINT), which no
/// provider here asks for, are forced so that their code runs too. No provider here
/// implements fi_mr_bind to an endpoint (tcp and shm say ENOSYS, sockets EINVAL): forced
/// binding must then fail cleanly at registration, never succeed silently.
#[test]
fn rma_works_under_every_mr_mode_branch() {
    use nacre_sys::{FI_MR_ENDPOINT, FI_MR_PROV_KEY, FI_MR_VIRT_ADDR};
    let mut addressing = Vec::new();
    for provider in PROVIDERS {
        let Some(info) = available(provider, "rma_works_under_every_mr_mode_branch") else {
            continue;
        };
        addressing.push(info.mr_mode() & FI_MR_VIRT_ADDR != 0);
        for force in [
            0,
            FI_MR_PROV_KEY,
            FI_MR_ENDPOINT,
            FI_MR_PROV_KEY | FI_MR_ENDPOINT,
        ] {
            let cfg = EndpointConfig {
                force_mr_mode: force,
                post_timeout: std::time::Duration::ZERO,
                ..Default::default()
            };
            let mut owner = open(provider, &cfg);
            let mut initiator = open(provider, &cfg);
            assert_eq!(owner.mr_mode() & force, force);
            let moved = rma_between(&mut owner, &mut initiator);
            assert!(
                moved || force & FI_MR_ENDPOINT != 0,
                "{provider} {force:#x}"
            );
            if !moved {
                println!("NOTE {provider}: fi_mr_bind to an endpoint is not implemented");
            }
        }
    }
    if addressing.len() == PROVIDERS.len() {
        assert!(addressing.contains(&true), "virtual-address RMA (shm) ran");
        assert!(addressing.contains(&false), "offset RMA (tcp, sockets) ran");
    }
}
