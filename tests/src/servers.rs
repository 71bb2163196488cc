//! Peers the tests start themselves: a child process killed on drop, a
//! port to wait for, and a self-signed certificate for 127.0.0.1.

use std::{
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

use crate::*;

/// A server process, killed and reaped when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something accepts connections on 127.0.0.1:`port`; fails
/// the test after 30 s (scaled).
pub fn wait_port(port: u16) {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until a TCP socket listens on `port` (IPv4), as `/proc/net/tcp`
/// shows it: unlike [`wait_port`], no connection is made, so the server has
/// accepted none when this returns.
pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        // "sl local_address rem_address st ...": state 0A is LISTEN.
        let listening = table.lines().skip(1).any(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 3
                && f[3] == "0A"
                && f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
        });
        if listening {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A self-signed certificate for 127.0.0.1: `cert` and `key` PEM files, in
/// a directory removed on drop.
pub struct Certificate {
    /// The directory holding both files.
    pub dir: TempDir,
    /// The certificate (also the CA a client must trust).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Makes a [`Certificate`] with openssl (`cargo xtask setup` installs it).
pub fn self_signed() -> Certificate {
    let dir = TempDir::new("tls");
    openssl(
        dir.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ],
    );
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    Certificate { dir, cert, key }
}
