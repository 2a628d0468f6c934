//! The out-of-band side of a bench run: a TCP control connection (server listens on
//! `-B`, client connects to `-P`), exchange of fabric names, and small sync messages.
//! Fabric addresses are opaque (EFA), so they travel here, not over the fabric.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use nacre_fabric::{Endpoint, EndpointConfig, PeerAddr, Selection};

pub const DEFAULT_PORT: u16 = 47592;

/// Who we are in the run, from the command line.
pub struct Side {
    /// The server's address; None: we are the server.
    pub server: Option<String>,
    /// Control port the server binds (`-B`).
    pub src_port: Option<u16>,
    /// Control port the client connects to (`-P`).
    pub dst_port: Option<u16>,
    /// Address the server binds and serves the fabric from (`-s`).
    pub src_addr: String,
}

pub struct Control {
    stream: TcpStream,
    pub is_server: bool,
}

impl Control {
    pub fn establish(role: &Side) -> io::Result<Control> {
        match &role.server {
            None => {
                let port = role.src_port.unwrap_or(DEFAULT_PORT);
                let ip: IpAddr = role.src_addr.parse().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "-s takes an IP address")
                })?;
                let listener = TcpListener::bind(SocketAddr::new(ip, port))?;
                let (stream, _) = listener.accept()?;
                stream.set_nodelay(true)?;
                Ok(Control {
                    stream,
                    is_server: true,
                })
            }
            Some(host) => {
                let port = role.dst_port.unwrap_or(DEFAULT_PORT);
                let stream = connect_retrying(host, port)?;
                stream.set_nodelay(true)?;
                Ok(Control {
                    stream,
                    is_server: false,
                })
            }
        }
    }

    /// The local IP of the control connection: the client serves its fabric endpoint from
    /// the interface that reaches the server.
    pub fn local_ip(&self) -> io::Result<IpAddr> {
        Ok(self.stream.local_addr()?.ip())
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(&(bytes.len() as u32).to_be_bytes())?;
        self.stream.write_all(bytes)
    }

    pub fn recv(&mut self) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > 1 << 16 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "control message too long",
            ));
        }
        let mut buf = vec![0; len];
        self.stream.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Both sides call this; it returns when both have reached it. The fabric keeps
    /// progressing meanwhile: with manual progress, an injected message may still sit in
    /// our provider until we poll again.
    pub fn sync(&mut self, ep: &mut Endpoint) -> Result<(), crate::BenchError> {
        if self.is_server {
            expect(&self.recv_progressing(ep)?, b"q")?;
            Ok(self.send(b"a")?)
        } else {
            self.send(b"q")?;
            Ok(expect(&self.recv_progressing(ep)?, b"a")?)
        }
    }

    /// Waits for a control message while driving the fabric.
    pub fn recv_progressing(&mut self, ep: &mut Endpoint) -> Result<Vec<u8>, crate::BenchError> {
        loop {
            if let Some(msg) = self.try_recv()? {
                return Ok(msg);
            }
            for _ in 0..256 {
                ep.progress()?;
            }
        }
    }

    /// Non-blocking check for a message (the server polls the fabric meanwhile).
    pub fn try_recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.stream.set_nonblocking(true)?;
        let mut probe = [0u8; 1];
        let ready = match self.stream.peek(&mut probe) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed control",
            )),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        };
        self.stream.set_nonblocking(false)?;
        if ready? {
            self.recv().map(Some)
        } else {
            Ok(None)
        }
    }
}

fn expect(got: &[u8], want: &[u8]) -> io::Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control: unexpected message",
        ))
    }
}

/// The server may still be starting: retry for a few seconds, as scripts start both at once.
fn connect_retrying(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = None;
    for _ in 0..100 {
        match TcpStream::connect((host, port)) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(last.expect("at least one attempt"))
}

/// The start of every fabric bench: the control connection, then our endpoint with the
/// peer's address in it.
pub fn connect(
    args: &crate::CommonArgs,
    cfg: &EndpointConfig,
) -> Result<(Control, Endpoint, PeerAddr), crate::BenchError> {
    let role = args.role();
    let mut ctl = Control::establish(&role)?;
    let (ep, peer) = connect_fabric(
        args.provider.as_deref(),
        args.domain.as_deref(),
        &mut ctl,
        &role,
        cfg,
    )?;
    Ok((ctl, ep, peer))
}

/// Opens our endpoint and exchanges names with the peer (server first, as fi_pingpong).
fn connect_fabric(
    provider: Option<&str>,
    domain: Option<&str>,
    ctl: &mut Control,
    role: &Side,
    cfg: &EndpointConfig,
) -> Result<(Endpoint, PeerAddr), crate::BenchError> {
    let node = if ctl.is_server {
        role.src_addr.clone()
    } else {
        ctl.local_ip()?.to_string()
    };
    let sel = Selection {
        provider: provider.map(str::to_string),
        node: Some(node),
        service: None,
        domain: domain.map(str::to_string),
        sources: false,
    };
    let mut ep = nacre_fabric::open(&sel, cfg)?;
    let peer_name = if ctl.is_server {
        ctl.send(ep.name())?;
        ctl.recv()?
    } else {
        let name = ctl.recv()?;
        ctl.send(ep.name())?;
        name
    };
    let peer = ep.insert_peer(&peer_name)?;
    Ok((ep, peer))
}
