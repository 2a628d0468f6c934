//! TLS on the bootstrap (docs/security.md): the map and everything after the challenge
//! travel encrypted, a client that does not start TLS gets nothing, and a proof is bound
//! to its TLS session.

mod mgs_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mgs_support::*;
use nacre_mgc::BootConfig;
use nacre_proto::bootstrap::*;

/// A TCP relay from a local port to `to` that records what the MGS sent.
fn recording_relay(to: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for client in l.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = TcpStream::connect(&to) else {
                return;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
            });
            let record = record.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = server.read(&mut buf) {
                    if n == 0 || client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    record.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (addr, seen)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// The map fetched through a recording relay: how often the file system's name went by
/// in the clear (the challenge names it; a plaintext map names it again).
fn names_in_the_clear(mgs: &Mgs, fsname: &str) -> usize {
    let (relay, seen) = recording_relay(mgs.addr.clone());
    // The relay's address is not the MGS's: the key goes by the MGS's.
    let keys = nacre_auth::KeySource::new(Some(key_of(&mgs.addr)));
    let mut c = nacre_mgc::MgsClient::connect_with(&relay, BootConfig::default(), keys).unwrap();
    let map = c.fetch_map().unwrap();
    assert_eq!(map.fsname, fsname);
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    let seen = seen.lock().unwrap();
    count(&seen, fsname.as_bytes())
}

#[test]
fn the_bootstrap_runs_tls_when_asked_and_nothing_passes_around_it() {
    let dir = tmpdir("tls");
    format(&dir, "tlsfs-name");
    let plain = Mgs::serve(&dir, "127.0.0.1:0", &SHORT);
    assert_eq!(
        names_in_the_clear(&plain, "tlsfs-name"),
        2,
        "challenge and map"
    );
    drop(plain);

    let mut args = SHORT.to_vec();
    args.extend(["--tls", "on"]);
    let mgs = Mgs::serve(&dir, "127.0.0.1:0", &args);
    assert_eq!(
        names_in_the_clear(&mgs, "tlsfs-name"),
        1,
        "the challenge only"
    );
    assert!(mgs.client().fetch_map().is_ok());

    // A client that goes on in the clear after the challenge gets nothing.
    let mut s = TcpStream::connect(&mgs.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let begin = BootRequest::AuthBegin {
        client_nonce: [9; NONCE_LEN],
    };
    s.write_all(&begin.encode().unwrap()).unwrap();
    let mut head = [0u8; BOOT_HEADER_LEN];
    s.read_exact(&mut head).unwrap();
    let h = BootHeader::decode(&head, MAX_REPLY_BODY).unwrap();
    let mut body = vec![0u8; h.body_len as usize];
    s.read_exact(&mut body).unwrap();
    let challenge = BootReply::decode(BootOp::AuthBegin, h.status, &body).unwrap();
    assert!(matches!(challenge, BootReply::Challenge { tls: true, .. }));
    s.write_all(&BootRequest::FetchMap.encode().unwrap())
        .unwrap();
    let mut b = [0u8; 64];
    let n = s.read(&mut b).unwrap_or(0);
    assert!(
        n == 0 || count(&b[..n], b"tlsfs-name") == 0,
        "a plaintext request after the challenge was answered with the map"
    );
}
