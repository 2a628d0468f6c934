//! The standby's proof that it holds the file system key, and the MDS's answer
//! (`wire`'s Challenge, Proof and Welcome): challenge and response under the file
//! system key, bound to both nonces and the standby's node (`nacre_auth::proof`).

use std::io::{Read, Write};

use nacre_auth::{Exchange, Key, Principal, Side};

use super::wire::Frame;

fn exchange<'a>(
    key: &'a Key,
    node: &'a str,
    client_nonce: &'a [u8; 32],
    server_nonce: &'a [u8; 32],
) -> Exchange<'a> {
    Exchange {
        context: "standby",
        fsname: key.fsname(),
        principal: &Principal::FileSystem,
        client_nonce,
        server_nonce,
        binding: node.as_bytes(),
    }
}

fn refused(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, why)
}

fn random() -> std::io::Result<[u8; 32]> {
    nacre_auth::random_bytes().map_err(|e| std::io::Error::other(e.to_string()))
}

/// The MDS's side, after the standby's Hello from `node`.
pub fn check_standby(conn: &mut (impl Read + Write), key: &Key, node: &str) -> std::io::Result<()> {
    let server_nonce = random()?;
    Frame::Challenge {
        nonce: server_nonce,
    }
    .write_to(conn)?;
    let (client_nonce, proof) = match Frame::read_from(conn)? {
        Frame::Proof { nonce, proof } => (nonce, proof),
        other => return Err(refused(format!("expected a proof, got {other:?}"))),
    };
    let ex = exchange(key, node, &client_nonce, &server_nonce);
    key.check(Side::Client, &ex, &proof)
        .map_err(|e| refused(format!("authentication failed: {e}")))?;
    let proof = key
        .prove_to(Side::Server, &ex)
        .map_err(|e| refused(e.to_string()))?;
    Frame::Welcome { proof }.write_to(conn)
}

/// The standby's side, after its Hello as `node`.
pub fn prove_standby(conn: &mut (impl Read + Write), key: &Key, node: &str) -> std::io::Result<()> {
    let server_nonce = match Frame::read_from(conn)? {
        Frame::Challenge { nonce } => nonce,
        other => return Err(refused(format!("expected a challenge, got {other:?}"))),
    };
    let client_nonce = random()?;
    let ex = exchange(key, node, &client_nonce, &server_nonce);
    let proof = key.prove(Side::Client, &ex);
    Frame::Proof {
        nonce: client_nonce,
        proof,
    }
    .write_to(conn)?;
    match Frame::read_from(conn)? {
        Frame::Welcome { proof } => key
            .check_server(&ex, &proof)
            .map_err(|e| refused(format!("the MDS: {e}"))),
        other => Err(refused(format!("expected a welcome, got {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn run(mds_key: Key, standby_key: Key) -> (std::io::Result<()>, std::io::Result<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mds = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            check_standby(&mut c, &mds_key, "host:/mdt")
        });
        let mut c = TcpStream::connect(addr).unwrap();
        let standby = prove_standby(&mut c, &standby_key, "host:/mdt");
        drop(c);
        (mds.join().unwrap(), standby)
    }

    #[test]
    fn only_a_holder_of_the_key_follows() {
        let key = Key::generate("fs").unwrap();
        let (a, b) = run(key.clone(), key.clone());
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        let (a, b) = run(key, Key::generate("fs").unwrap());
        assert!(a.is_err(), "a stranger's proof is refused");
        assert!(b.is_err(), "and it gets no welcome");
    }
}
