//! Real Go peers (tests/go): an MCP server and client, and an HTTPS
//! service that is not MCP, built from Go's standard library only, stripped (`-s -w`) as Go programs ship, with
//! Debian's Go toolchain (`cargo xtask setup` unpacks it under
//! `.tools/go`).

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::Mutex,
};

use serde_json::Value;

use crate::*;

/// The executables, built with one Go version.
pub struct GoPeers {
    /// The Go version (`1.24`).
    pub version: &'static str,
    /// Built with the symbol table and DWARF (no `-s -w`).
    pub symbols: bool,
    /// `tests/go/mcpserver`.
    pub server: PathBuf,
    /// `tests/go/mcpclient`.
    pub client: PathBuf,
    /// `tests/go/httpsload`: an HTTPS service that is not MCP, with its
    /// load client.
    pub https_service: PathBuf,
}

/// The peers built with Debian's Go `version` (`1.24`, `1.19`, `1.15`):
/// prebuilt where `MCP_TEST_GO_PEERS` names their directory (`cargo xtask
/// test` builds them first), else built now with the toolchain `cargo
/// xtask setup` unpacked under `.tools/go/`.
pub fn go_peers(version: &'static str) -> &'static GoPeers {
    go_peers_built(version, false)
}

/// The peers built with Debian's Go `version` without `-s -w`: the symbol
/// table and DWARF kept (always built here, never prebuilt).
pub fn go_peers_with_symbols(version: &'static str) -> &'static GoPeers {
    go_peers_built(version, true)
}

fn go_peers_built(version: &'static str, symbols: bool) -> &'static GoPeers {
    static PEERS: Mutex<Vec<&'static GoPeers>> = Mutex::new(Vec::new());
    let mut built = PEERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.iter().find(|p| p.version == version && p.symbols == symbols) {
        return p;
    }
    let prebuilt = std::env::var_os("MCP_TEST_GO_PEERS").filter(|_| !symbols);
    let dir = match prebuilt {
        Some(d) => PathBuf::from(d).join(version),
        None => {
            let go = workspace().join(format!(".tools/go/{version}/root/usr/lib/go-{version}/bin/go"));
            let name = if symbols {
                format!("{version}-symbols")
            } else {
                version.to_owned()
            };
            let out = workspace().join("target/go-peers").join(name);
            let target = workspace().join("target");
            std::fs::create_dir_all(&out).unwrap();
            let ldflags = if symbols { "-ldflags=" } else { "-ldflags=-s -w" };
            let st = Command::new(&go)
                .args(["build", "-trimpath", ldflags, "-o"])
                .arg(format!("{}/", out.display()))
                .args(["./mcpserver", "./mcpclient", "./httpsload"])
                .current_dir(workspace().join("tests/go"))
                .env("GOTOOLCHAIN", "local")
                .env("GOPROXY", "off")
                .env("GOFLAGS", "-mod=mod")
                .env("GOCACHE", target.join("go-cache").join(version))
                .env("GOPATH", target.join("go-path"))
                .status()
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: {e} (run `cargo xtask setup`, which unpacks Debian's Go)",
                        go.display()
                    )
                });
            assert!(st.success(), "building tests/go with Go {version} failed");
            out
        }
    };
    let peers: &'static GoPeers = Box::leak(Box::new(GoPeers {
        version,
        symbols,
        server: dir.join("mcpserver"),
        client: dir.join("mcpclient"),
        https_service: dir.join("httpsload"),
    }));
    built.push(peers);
    peers
}

/// The Go MCP server on 127.0.0.1:`port` over HTTPS with `cert`, appending
/// each answer to `record`.
pub fn go_server(peers: &GoPeers, port: u16, cert: &Certificate, record: &Path) -> Server {
    let child = Command::new(&peers.server)
        .arg("-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert.cert)
        .arg("-key")
        .arg(&cert.key)
        .arg("-record")
        .arg(record)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the Go MCP server");
    let server = Server(child);
    wait_port(port);
    server
}

/// The server's record: one object per answer or notification.
pub fn go_record(record: &Path) -> Vec<Value> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("record line"))
        .collect()
}

/// The Go MCP client, started and waiting (it has printed `ready`) until
/// [`GoClient::run`].
pub struct GoClient {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    transcript: PathBuf,
    _dir: TempDir,
}

impl GoClient {
    /// Starts the client for `url`, trusting `ca`, asking echo for `text`.
    pub fn start(peers: &GoPeers, url: &str, ca: &Path, text: &str) -> GoClient {
        let dir = TempDir::new("goc");
        let transcript = dir.path().join("transcript.json");
        let mut child = Command::new(&peers.client)
            .args(["-wait", "-url", url, "-text", text, "-ca"])
            .arg(ca)
            .arg("-transcript")
            .arg(&transcript)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the Go MCP client");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let dog = Watchdog::new(child.id(), "the Go MCP client (starting)");
        let _ = stdout.read_line(&mut line);
        dog.check();
        assert_eq!(line.trim(), "ready", "the Go client did not start");
        GoClient {
            child,
            stdin,
            stdout,
            transcript,
            _dir: dir,
        }
    }

    /// The client's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets it run its session; returns what it received.
    pub fn run(mut self) -> Vec<Value> {
        let mut stdin = self.stdin.take().unwrap();
        writeln!(stdin, "go").unwrap();
        drop(stdin);
        let mut line = String::new();
        let dog = Watchdog::new(self.child.id(), "the Go MCP client");
        let _ = self.stdout.read_line(&mut line);
        dog.check();
        let st = wait_bounded(&mut self.child, "the Go MCP client");
        assert!(st.success() && line.trim() == "done", "the Go client failed: {st}");
        serde_json::from_str(&std::fs::read_to_string(&self.transcript).unwrap()).unwrap()
    }
}

impl Drop for GoClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
