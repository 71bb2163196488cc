//! MCP over HTTP, captured from the kernel: a FastMCP Streamable HTTP server
//! and the official Python SDK client on this host, both seen (the server's
//! reads and writes, and the client's), with a tool result split over many
//! TCP reads; and a non-MCP HTTP exchange that yields no MCP event.

use std::{
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mcp_monitor_tests::*;
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(20);

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16) {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fastmcp_http(port: u16) -> Server {
    let child = Command::new(python())
        .arg(clients_dir().join("fastmcp_server.py"))
        .env("MCP_TEST_HTTP_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the FastMCP HTTP server");
    wait_port(port);
    Server(child)
}

/// Runs the SDK client; returns its pid.
fn session(port: u16, big: usize) -> u32 {
    let dir = TempDir::new("http");
    let t = dir.path().join("t.json");
    let st = Command::new(python())
        .arg(clients_dir().join("py_http_session.py"))
        .arg(&t)
        .arg(format!("http://127.0.0.1:{port}/mcp"))
        .arg(big.to_string())
        .status()
        .unwrap();
    assert!(st.success(), "the Python SDK HTTP session failed");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&t).unwrap()).unwrap();
    assert_eq!(v["steps"][3]["bytes"], big, "the client got the whole result");
    v["client_pid"].as_u64().unwrap() as u32
}

/// (direction, type, method, tool) of events.
fn rows(events: &[&Value]) -> Vec<(String, String, String, String)> {
    events
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
            (s("direction"), s("type"), s("method"), s("tool"))
        })
        .collect()
}

fn expected() -> Vec<(String, String, String, String)> {
    [
        ("client_to_server", "request", "initialize", ""),
        ("server_to_client", "response", "initialize", ""),
        ("client_to_server", "notification", "notifications/initialized", ""),
        ("client_to_server", "request", "tools/list", ""),
        ("server_to_client", "response", "tools/list", ""),
        ("client_to_server", "request", "tools/call", "echo"),
        ("server_to_client", "response", "tools/call", "echo"),
        ("client_to_server", "request", "tools/call", "big"),
        ("server_to_client", "response", "tools/call", "big"),
    ]
    .iter()
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
    .collect()
}

#[test]
fn streamable_http_seen_from_both_ends() {
    require_root();
    // Sends larger than the capture cap are cut (README, Limits): the
    // server's 600 KB response fits within the 1 MiB maximum.
    let dir = TempDir::new("hcfg");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[capture]\ncapture_cap_bytes = 1048576\n").unwrap();
    let m = Monitor::start(&["--config", cfg.to_str().unwrap()]);
    let port = free_port();
    let server = fastmcp_http(port);
    let server_pid = server.0.id();
    let client_pid = session(port, 300_000);
    let of = |ev: &[Value], server_side: bool| -> Vec<Value> {
        ev.iter()
            .filter(|e| e["transport"] == "http")
            .filter(|e| {
                if server_side {
                    e["server"]["pid"] == server_pid
                } else {
                    e["client"]["pid"] == client_pid
                }
            })
            .cloned()
            .collect()
    };
    let events = m.wait_events(SETTLE, |ev| of(ev, true).len() >= 9 && of(ev, false).len() >= 9);
    for server_side in [true, false] {
        let mine = of(&events, server_side);
        let refs: Vec<&Value> = mine.iter().collect();
        assert_eq!(rows(&refs), expected(), "server side: {server_side}");
        for e in &mine {
            assert_eq!(e["http"]["method"], "POST", "{e}");
            assert_eq!(e["http"]["path"], "/mcp");
        }
        let responses: Vec<&Value> = mine.iter().filter(|e| e["type"] == "response").collect();
        assert!(responses.iter().all(|e| e["http"]["status"] == 200));
        assert!(responses.iter().all(|e| e["latency_ms"].as_f64().is_some()));
        // One session per side from initialize on, keyed by the session id
        // (hashed: the id itself appears nowhere).
        let sessions: std::collections::HashSet<&str> = mine.iter().map(|e| e["session"].as_str().unwrap()).collect();
        assert_eq!(sessions.len(), 1, "{sessions:?}");
        assert!(mine[1]["http"]["session_id_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"));
        assert_eq!(mine[1]["server"]["name"], "pyserver");
        assert_eq!(mine[1]["client"]["name"], "mcp");
        let big = mine.last().unwrap();
        assert!(big["bytes"].as_u64().unwrap() > 600_000, "{}", big["bytes"]);
    }
    let server_side = of(&events, true);
    assert_eq!(
        server_side[0]["server"]["exe"].as_str().map(|e| e.contains("python")),
        Some(true)
    );
    // The client's reads of the large result: many TCP reads, one message.
    assert!(m.metric("mcp_monitor_capture_syscall_events_total", &[]) > 20.0);

    // A multi-megabyte result, on the client side (its reads are at most
    // its buffer size; the server writes it in one send, beyond the cap).
    let client_pid = session(port, 3_000_000);
    let events = m.wait_events(SETTLE, |ev| {
        ev.iter()
            .any(|e| e["client"]["pid"] == client_pid && e["tool"] == "big" && e["type"] == "response")
    });
    let mine: Vec<&Value> = events.iter().filter(|e| e["client"]["pid"] == client_pid).collect();
    assert_eq!(rows(&mine), expected());
    assert!(mine.last().unwrap()["bytes"].as_u64().unwrap() > 6_000_000);
    drop(server);
}

#[test]
fn ordinary_http_gives_no_mcp_events() {
    require_root();
    let m = Monitor::start(&[]);
    let port = free_port();
    let dir = TempDir::new("www");
    std::fs::write(dir.path().join("index.html"), "<html>hello</html>").unwrap();
    let child = Command::new("python3")
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Server(child);
    wait_port(port);
    let url = format!("http://127.0.0.1:{port}/index.html");
    for args in [
        vec!["-s", url.as_str()],
        // JSON-RPC, but not MCP (and the server answers 501).
        vec![
            "-s",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#,
            url.as_str(),
        ],
    ] {
        let out = Command::new("curl").args(&args).output().unwrap();
        assert!(out.status.success());
    }
    std::thread::sleep(Duration::from_secs(3));
    let events = m.events();
    assert!(events.iter().all(|e| e["transport"] != "http"), "{events:?}");
}
