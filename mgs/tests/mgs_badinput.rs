//! Bad input on the MGS's TCP port: malformed, truncated and oversized frames get an
//! error reply or a closed connection, never a crash; silent and slow clients do not
//! hold up others; connections are bounded.

mod mgs_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mgs_support::*;
use nacre_proto::bootstrap::*;

fn mgs(name: &str, extra: &[&str]) -> Mgs {
    let dir = tmpdir(name);
    format(&dir, "bad");
    Mgs::serve(&dir, "127.0.0.1:0", extra)
}

fn connect(m: &Mgs) -> TcpStream {
    let s = TcpStream::connect(&m.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A connection that proved it holds `m`'s key (the challenge and response by hand).
fn authenticated(m: &Mgs) -> TcpStream {
    let mut s = connect(m);
    let key = nacre_auth::Key::load(&key_of(&m.addr)).unwrap();
    let client_nonce = [7u8; NONCE_LEN];
    s.write_all(&BootRequest::AuthBegin { client_nonce }.encode().unwrap())
        .unwrap();
    let (status, body) = reply(&mut s).unwrap();
    let BootReply::Challenge {
        fsname,
        server_nonce,
        required: true,
        tls: false,
    } = BootReply::decode(BootOp::AuthBegin, status, &body).unwrap()
    else {
        panic!("no challenge");
    };
    let ex = nacre_auth::proof::mgs(&fsname, key.principal(), &client_nonce, &server_nonce, b"");
    let prove = BootRequest::AuthProve {
        principal: key.principal().encode(),
        proof: key.prove(nacre_auth::Side::Client, &ex),
    };
    s.write_all(&prove.encode().unwrap()).unwrap();
    assert_eq!(reply(&mut s).unwrap().0, 0, "authenticated");
    s
}

/// The reply to what was sent: Some((status, body)), or None if the MGS closed.
fn reply(s: &mut TcpStream) -> Option<(i32, Vec<u8>)> {
    let mut head = [0u8; BOOT_HEADER_LEN];
    s.read_exact(&mut head).ok()?;
    let h = BootHeader::decode(&head, MAX_REPLY_BODY).expect("the MGS sends good frames");
    let mut body = vec![0; h.body_len as usize];
    s.read_exact(&mut body).ok()?;
    Some((h.status, body))
}

fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// The MGS still answers a well-formed request at once.
fn alive(m: &Mgs) {
    let t = Instant::now();
    m.client().fetch_map().expect("the MGS answers");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "slow: {:?}",
        t.elapsed()
    );
}

#[test]
fn malformed_truncated_and_oversized_frames_get_an_error_or_a_close() {
    let mut m = mgs("malformed", &SHORT);
    // Garbage header: closed.
    let mut s = connect(&m);
    s.write_all(&[0xab; 64]).unwrap();
    assert!(closed(&mut s));
    // Wrong version: closed.
    let mut f = BootRequest::FetchMap.encode().unwrap();
    f[4] = 9;
    let mut s = connect(&m);
    s.write_all(&f).unwrap();
    assert!(closed(&mut s));
    // Unknown opcode: closed.
    let mut f = BootRequest::FetchMap.encode().unwrap();
    f[6] = 77;
    let mut s = connect(&m);
    s.write_all(&f).unwrap();
    assert!(closed(&mut s));
    // Oversized: refused before any body is read.
    let mut f = encode_frame(BootOp::Claim, 0, &[]);
    f[12..16].copy_from_slice(&(MAX_REQUEST_BODY + 1).to_le_bytes());
    let mut s = connect(&m);
    s.write_all(&f).unwrap();
    assert!(closed(&mut s));
    // Nothing is served before the connection authenticated, nor after a wrong proof.
    let mut s = connect(&m);
    s.write_all(&BootRequest::FetchMap.encode().unwrap())
        .unwrap();
    let (status, msg) = reply(&mut s).expect("a refusal");
    assert_eq!(status, -errno::EACCES);
    assert!(String::from_utf8_lossy(&msg).contains("authentication required"));
    s.write_all(
        &BootRequest::AuthBegin {
            client_nonce: [1; NONCE_LEN],
        }
        .encode()
        .unwrap(),
    )
    .unwrap();
    assert_eq!(reply(&mut s).unwrap().0, 0, "a challenge");
    let wrong = BootRequest::AuthProve {
        principal: nacre_auth::Principal::FileSystem.encode(),
        proof: [0; PROOF_LEN],
    };
    s.write_all(&wrong.encode().unwrap()).unwrap();
    assert_eq!(reply(&mut s).unwrap().0, -errno::EACCES);
    s.write_all(&BootRequest::FetchMap.encode().unwrap())
        .unwrap();
    assert_eq!(reply(&mut s).unwrap().0, -errno::EACCES, "still a stranger");
    // A well-framed but malformed body: an error reply, and the connection serves on.
    let mut s = authenticated(&m);
    s.write_all(&encode_frame(BootOp::Claim, 0, &[1, 2, 3]))
        .unwrap();
    let (status, msg) = reply(&mut s).expect("an error reply");
    assert_eq!(status, -errno::EBADMSG);
    assert!(String::from_utf8_lossy(&msg).contains("malformed"));
    let mut body = Vec::new();
    body.extend_from_slice(&2u32.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&u32::MAX.to_le_bytes()); // a node name of 4 GiB
    s.write_all(&encode_frame(BootOp::Claim, 0, &body)).unwrap();
    assert_eq!(reply(&mut s).unwrap().0, -errno::EBADMSG);
    s.write_all(&BootRequest::FetchMap.encode().unwrap())
        .unwrap();
    assert_eq!(reply(&mut s).unwrap().0, 0);
    // Truncated: the rest never comes; the deadline closes it (request_deadline_ms).
    let mut s = connect(&m);
    let f = BootRequest::FetchMap.encode().unwrap();
    s.write_all(&f[..10]).unwrap();
    let t = Instant::now();
    assert!(closed(&mut s));
    assert!(t.elapsed() < Duration::from_secs(5));
    // Random frames with a valid header and random bodies, for every opcode.
    let mut x = 0x9e3779b97f4a7c15u64;
    for i in 0..300u32 {
        let op = BootOp::from_u16((i % 8 + 1) as u16).unwrap();
        let len = (i % 97) as usize;
        let body: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut s = connect(&m);
        // (A body that happens to be a valid long poll would wait: do not.)
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s.write_all(&encode_frame(op, 0, &body)).unwrap();
        let _ = reply(&mut s);
    }
    alive(&m);
    assert!(
        m.proc.wait_exit(Duration::ZERO).is_none(),
        "the MGS is still running"
    );
}

#[test]
fn silent_and_slow_clients_do_not_hold_up_others() {
    let m = mgs(
        "slow",
        &["--request-deadline-ms", "500", "--idle-timeout-ms", "2000"],
    );
    // Fifty connections that never send anything.
    let silent: Vec<TcpStream> = (0..50).map(|_| connect(&m)).collect();
    // One that sends a byte every 300 ms: it never completes a header in time.
    let mut slow = connect(&m);
    let f = BootRequest::FetchMap.encode().unwrap();
    let slow_thread = std::thread::spawn(move || {
        let t = Instant::now();
        for b in &f {
            if slow.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        (closed(&mut slow), t.elapsed())
    });
    for _ in 0..20 {
        alive(&m);
    }
    let (was_closed, after) = slow_thread.join().unwrap();
    assert!(was_closed, "the slow client was cut off");
    assert!(after < Duration::from_secs(6), "{after:?}");
    // The silent ones are closed at the idle timeout.
    let t = Instant::now();
    for mut s in silent {
        assert!(closed(&mut s));
    }
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn connections_are_bounded() {
    let m = mgs("bounded", &["--max-connections", "8"]);
    let held: Vec<TcpStream> = (0..8).map(|_| connect(&m)).collect();
    std::thread::sleep(Duration::from_millis(200));
    // The ninth is accepted and closed at once.
    let mut ninth = connect(&m);
    assert!(closed(&mut ninth));
    drop(held);
    // Slots come back once the held ones go.
    let until = Instant::now() + Duration::from_secs(5);
    while try_client(&m.addr, nacre_mgc::BootConfig::default())
        .and_then(|mut c| c.fetch_map())
        .is_err()
    {
        assert!(Instant::now() < until, "slots never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}
