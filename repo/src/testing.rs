//! For tests and benches: a real S3 server (`s3s-fs`, which `scripts/deps` installs)
//! on a free loopback port, serving a directory whose subdirectories are its buckets.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Access;

/// The credentials the server accepts (the secret: [`S3Server::SECRET`]).
pub const ACCESS_KEY_ID: &str = "nacre";

/// A running s3s-fs, killed and reaped when dropped.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl S3Server {
    pub const SECRET: &'static str = "secret";

    /// Starts s3s-fs over `root` and waits until it listens; Err says why it cannot
    /// run here (not installed), for the caller to report as a skip.
    pub fn start(root: &Path) -> Result<S3Server, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY_ID, "--secret-key", Self::SECRET])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("s3s-fs: {e} (scripts/deps installs it)"))?;
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > until {
                return Err(format!("s3s-fs did not listen on {port} within 20 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// How to reach it, with `secret` as the secret key (a wrong one to test refusals).
    pub fn access(&self, secret: &str) -> Access {
        Access {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some(ACCESS_KEY_ID.into()),
            secret_access_key: Some(secret.into()),
        }
    }

    /// Kills the server now (a repository that stops answering).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
