//! HTTPS through the TLS uprobes: requests per second with and without the
//! agent, for FastMCP with the Python SDK (OpenSSL, HTTP/1.1), for a
//! `Bun.serve` server with the same client (Bun's BoringSSL) and for the Go
//! peers of the tests (`crypto/tls`, HTTP/2).

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::*;

const HTTPS_ROUNDS: usize = 3;
const HTTPS_SECONDS: f64 = 4.0;

/// One load run against the HTTPS server: requests per second.
fn https_load(url: &str, ca: &Path, concurrency: u32) -> Result<f64> {
    let out = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/clients/https_load.py"))
        .args([url, &HTTPS_SECONDS.to_string(), &concurrency.to_string()])
        .env("MCP_TEST_CA", ca)
        .stderr(Stdio::inherit())
        .output()
        .context("running tests/clients/https_load.py (cargo xtask setup installs the Python SDK)")?;
    if !out.status.success() {
        bail!("the HTTPS load client failed");
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("reading the load client's result")?;
    Ok(v["rps"].as_f64().unwrap_or(0.0))
}

/// One load run of the Go client (tests/go, `-load`): requests per second.
fn go_load(client: &Path, url: &str, ca: &Path, concurrency: u32) -> Result<f64> {
    let out = Command::new(client)
        .args([
            "-url",
            url,
            "-load",
            &HTTPS_SECONDS.to_string(),
            "-conc",
            &concurrency.to_string(),
            "-ca",
        ])
        .arg(ca)
        .stderr(Stdio::inherit())
        .output()
        .context("running the Go load client")?;
    if !out.status.success() {
        bail!("the Go load client failed");
    }
    let last = out
        .stdout
        .split(|b| *b == b'\n')
        .rfind(|l| !l.is_empty())
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(last).context("reading the Go load client's result")?;
    Ok(v["rps"].as_f64().unwrap_or(0.0))
}

/// Rows of interleaved rounds without and with the agent, per concurrency.
fn rounds(port: u16, mut load: impl FnMut(u32) -> Result<f64>, what: &str) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    for concurrency in [1u32, 8, 32] {
        step(&format!(
            "{what} requests/s at concurrency {concurrency}: {HTTPS_ROUNDS} interleaved rounds without / with the monitor"
        ));
        let (mut without, mut with) = (Vec::new(), Vec::new());
        let (mut drops, mut captured) = (0.0, 0.0);
        for _ in 0..HTTPS_ROUNDS {
            without.push(load(concurrency)?);
            let agent = Agent::start(port)?;
            with.push(load(concurrency)?);
            std::thread::sleep(Duration::from_millis(500));
            drops += agent.metric("mcp_monitor_capture_dropped_total", "");
            captured += agent.metric("mcp_monitor_messages_total", "transport=\"https\"");
            agent.stop();
        }
        let (w, m) = (median(without.clone()), median(with.clone()));
        rows.push(json!({
            "concurrency": concurrency,
            "without_rps": without,
            "with_rps": with,
            "median_without_rps": w,
            "median_with_rps": m,
            "ratio": m / w,
            "drops_with_monitor": drops,
            "https_messages_captured": captured,
        }));
    }
    Ok(rows)
}

/// The Go server and client (Go 1.24, stripped) over HTTPS with HTTP/2:
/// what the `crypto/tls` probes cost per call.
pub(super) fn https_go(port: u16) -> Result<Value> {
    let (cert, key) = certificate()?;
    let peers = root().join("target/go-peers");
    crate::go_toolchain::build_peers(&peers)?;
    let (server_bin, client) = (peers.join("1.24/mcpserver"), peers.join("1.24/mcpclient"));
    let server_port = 18_444u16;
    let mut server = Command::new(&server_bin)
        .arg("-addr")
        .arg(format!("127.0.0.1:{server_port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .arg("-record")
        .arg("/dev/null")
        .stdout(Stdio::null())
        .spawn()
        .context("starting the Go HTTPS server")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", server_port)).is_err() {
        if Instant::now() > deadline {
            let _ = server.kill();
            bail!("the Go HTTPS server did not listen on {server_port}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("https://127.0.0.1:{server_port}/mcp");
    let result = rounds(port, |c| go_load(&client, &url, &cert, c), "HTTPS (Go, HTTP/2)");
    let _ = server.kill();
    let _ = server.wait();
    Ok(Value::Array(result?))
}

/// A self-signed certificate for 127.0.0.1 in target/bench-https.
pub(super) fn certificate() -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let dir = root().join("target/bench-https");
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    sh(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null()))?;
    Ok((cert, key))
}

/// The Python SDK's load client against an HTTPS MCP server started by
/// `server` on `server_port`, rounds without and with the agent.
fn python_load_against(port: u16, server_port: u16, mut server: Command, what: &str) -> Result<Value> {
    let (cert, key) = certificate()?;
    let mut server = server
        .env("MCP_TEST_HTTP_PORT", server_port.to_string())
        .env("MCP_TEST_TLS_CERT", &cert)
        .env("MCP_TEST_TLS_KEY", &key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting the {what} server"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", server_port)).is_err() {
        if Instant::now() > deadline {
            let _ = server.kill();
            bail!("the {what} server did not listen on {server_port}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("https://127.0.0.1:{server_port}/mcp");
    let result = rounds(port, |c| https_load(&url, &cert, c), what);
    let _ = server.kill();
    let _ = server.wait();
    Ok(Value::Array(result?))
}

/// FastMCP (Python, OpenSSL) with the Python SDK client.
pub(super) fn https(port: u16) -> Result<Value> {
    let mut server = Command::new(root().join(".venv/bin/python"));
    server.arg(root().join("tests/clients/fastmcp_server.py"));
    python_load_against(port, 18_443, server, "HTTPS (FastMCP)")
}

/// A `Bun.serve` server (tests/clients/bun_server.mjs: Bun's BoringSSL,
/// probed at the offsets found in its machine code) with the Python SDK
/// client: what the BoringSSL probes cost per call.
pub(super) fn https_bun(port: u16) -> Result<Value> {
    let clients = root().join("tests/clients");
    let mut server = Command::new(clients.join("node_modules/bun/bin/bun.exe"));
    server.current_dir(&clients).arg("bun_server.mjs");
    python_load_against(port, 18_445, server, "HTTPS (Bun.serve)")
}
