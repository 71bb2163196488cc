//! HTTP sessions for the integration tests: the FastMCP and
//! `server-everything` HTTP servers, the SDK clients' HTTP sessions, and the
//! rows events are compared by.

use std::process::{Command, Stdio};

use serde_json::Value;

use std::time::Duration;

use crate::{
    assert_same, clients_dir, count, free_port, observed_rows, python, self_signed, status_bounded, wait_listening,
    wait_port, Certificate, Monitor, Server, TempDir, Transcript,
};

/// The FastMCP test server over plain HTTP on `port`.
pub fn fastmcp_http(port: u16) -> Server {
    fastmcp_server(port, None)
}

/// The FastMCP test server on `port`, over HTTPS with `tls` when given.
pub fn fastmcp_server(port: u16, tls: Option<&Certificate>) -> Server {
    fastmcp_server_with(port, tls, false, "")
}

/// [`fastmcp_server`] with other tool definitions (`MCP_TEST_VARIANT` of
/// tests/clients/fastmcp_server.py: `v2`, `poisoned`).
pub fn fastmcp_server_variant(port: u16, tls: Option<&Certificate>, variant: &str) -> Server {
    fastmcp_server_with(port, tls, false, variant)
}

/// An MCP server on `Bun.serve` over HTTPS (tests/clients/bun_server.mjs:
/// the TypeScript SDK's web-standard transport, Bun's own HTTPS server and
/// BoringSSL), with the tools the Python SDK client calls.
pub fn bun_server(port: u16, tls: &Certificate) -> Server {
    let child = Command::new(crate::bun_exe())
        .current_dir(clients_dir())
        .arg("bun_server.mjs")
        .env("MCP_TEST_HTTP_PORT", port.to_string())
        .env("MCP_TEST_TLS_CERT", &tls.cert)
        .env("MCP_TEST_TLS_KEY", &tls.key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the Bun server");
    wait_port(port);
    Server(child)
}

/// The FastMCP test server under Hypercorn, which speaks HTTP/2: h2 by
/// ALPN over HTTPS with `tls`, h2c (prior knowledge) without.
pub fn fastmcp_h2_server(port: u16, tls: Option<&Certificate>) -> Server {
    fastmcp_server_with(port, tls, true, "")
}

/// [`fastmcp_server`] over HTTPS, waited for without connecting to it
/// ([`wait_listening`]): its first TLS connection is the test's.
pub fn fastmcp_server_untouched(port: u16, tls: &Certificate) -> Server {
    let server = spawn_fastmcp(port, Some(tls), false, "");
    wait_listening(port);
    server
}

fn fastmcp_server_with(port: u16, tls: Option<&Certificate>, h2: bool, variant: &str) -> Server {
    let server = spawn_fastmcp(port, tls, h2, variant);
    wait_port(port);
    server
}

fn spawn_fastmcp(port: u16, tls: Option<&Certificate>, h2: bool, variant: &str) -> Server {
    let mut cmd = Command::new(python());
    cmd.arg(clients_dir().join("fastmcp_server.py"))
        .env("MCP_TEST_HTTP_PORT", port.to_string())
        .env("MCP_TEST_VARIANT", variant);
    if h2 {
        cmd.env("MCP_TEST_H2", "1");
    }
    if let Some(c) = tls {
        cmd.env("MCP_TEST_TLS_CERT", &c.cert).env("MCP_TEST_TLS_KEY", &c.key);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the FastMCP HTTP server");
    Server(child)
}

/// Runs the SDK client; returns its pid.
pub fn session(port: u16, big: usize) -> u32 {
    session_with(port, big, None)
}

/// Runs the SDK client, over HTTPS trusting `tls` when given.
pub fn session_with(port: u16, big: usize, tls: Option<&Certificate>) -> u32 {
    session_full(port, big, tls, &[])
}

/// Runs the SDK client speaking HTTP/2 only (h2 over HTTPS with `tls`, h2c
/// without), its echo call sending `echo`.
pub fn session_h2(port: u16, big: usize, tls: Option<&Certificate>, echo: &str) -> u32 {
    session_full(port, big, tls, &[("MCP_TEST_HTTP2", "1"), ("MCP_TEST_ECHO", echo)])
}

/// Runs the SDK client whose last call is `tool` (`MCP_TEST_BIG_TOOL`)
/// asking for `big` bytes.
pub fn session_calling(port: u16, big: usize, tls: Option<&Certificate>, tool: &str) -> u32 {
    session_full(port, big, tls, &[("MCP_TEST_BIG_TOOL", tool)])
}

fn session_full(port: u16, big: usize, tls: Option<&Certificate>, env: &[(&str, &str)]) -> u32 {
    let dir = TempDir::new("http");
    let t = dir.path().join("t.json");
    let mut cmd = Command::new(python());
    cmd.arg(clients_dir().join("py_http_session.py"))
        .arg(&t)
        .envs(env.iter().copied());
    match tls {
        Some(c) => cmd
            .arg(format!("https://127.0.0.1:{port}/mcp"))
            .env("MCP_TEST_CA", &c.cert),
        None => cmd.arg(format!("http://127.0.0.1:{port}/mcp")),
    };
    let st = status_bounded(cmd.arg(big.to_string()), "the Python SDK HTTP session");
    assert!(st.success(), "the Python SDK HTTP session failed");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&t).unwrap()).unwrap();
    assert_eq!(v["steps"][3]["bytes"], big, "the client got the whole result");
    v["client_pid"].as_u64().unwrap() as u32
}

/// The events of one end of a local session over `transport`: the server's
/// view (its pid), or the client's (no server pid: the server is remote to
/// it).
pub fn view(ev: &[Value], transport: &str, server_pid: u32, client_pid: u32, server_side: bool) -> Vec<Value> {
    ev.iter()
        .filter(|e| e["transport"] == transport)
        .filter(|e| {
            if server_side {
                e["server"]["pid"] == server_pid
            } else {
                e["server"]["pid"].is_null() && e["client"]["pid"] == client_pid
            }
        })
        .cloned()
        .collect()
}

/// One line per event of `transport`, for a failure's message: who is at
/// each end as the agent saw it, and what went by (a failed view shows
/// whether the messages were missing or attributed to someone else).
pub fn transport_summary(ev: &[Value], transport: &str) -> String {
    let mut out = String::new();
    for e in ev.iter().filter(|e| e["transport"] == transport) {
        let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
        out.push_str(&format!(
            "  server {} client {} {} {} {} session {} local {} remote {}\n",
            e["server"]["pid"],
            e["client"]["pid"],
            s(&e["direction"]),
            s(&e["type"]),
            s(&e["method"]),
            s(&e["session"]),
            s(&e["http"]["local"]),
            s(&e["http"]["remote"]),
        ));
    }
    if out.is_empty() {
        out.push_str("  (none)\n");
    }
    out
}

/// (direction, type, method, tool) of events.
pub fn rows(events: &[&Value]) -> Rows {
    events
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
            (s("direction"), s("type"), s("method"), s("tool"))
        })
        .collect()
}

/// Comparable rows: (direction, type, method, tool).
pub type Rows = Vec<(String, String, String, String)>;

/// The FastMCP session after its opening: tools/list, echo, big.
pub const TOOL_ROWS: &[(&str, &str, &str, &str)] = &[
    ("client_to_server", "request", "tools/list", ""),
    ("server_to_client", "response", "tools/list", ""),
    ("client_to_server", "request", "tools/call", "echo"),
    ("server_to_client", "response", "tools/call", "echo"),
    ("client_to_server", "request", "tools/call", "big"),
    ("server_to_client", "response", "tools/call", "big"),
];

/// `opening` then [`TOOL_ROWS`], as comparable rows.
pub fn session_rows(opening: &[(&str, &str, &str, &str)]) -> Rows {
    opening
        .iter()
        .chain(TOOL_ROWS)
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect()
}

/// The Python SDK session with the initialize handshake.
pub fn expected() -> Rows {
    session_rows(&[
        ("client_to_server", "request", "initialize", ""),
        ("server_to_client", "response", "initialize", ""),
        ("client_to_server", "notification", "notifications/initialized", ""),
    ])
}

/// `server-everything` in one of its HTTP modes (`streamableHttp`, `sse`).
pub fn everything_http(mode: &str, port: u16) -> Server {
    let child = Command::new("node")
        .current_dir(clients_dir())
        .arg("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
        .arg(mode)
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server-everything (is Node.js installed?)");
    wait_port(port);
    Server(child)
}

/// Runs tests/clients/http_session.mjs (the TypeScript SDK client) and
/// returns its transcript.
pub fn ts_session(mode: &str, url: &str, big: usize, env: &[(&str, &std::ffi::OsStr)]) -> Transcript {
    ts_session_under(std::ffi::OsStr::new("node"), mode, url, big, env)
}

/// The TypeScript SDK client under `runtime` (node, Bun) against FastMCP
/// over HTTPS (a fresh certificate, a result of `big` bytes), watched by
/// `m`: both ends' events are the client's transcript, message for
/// message, and the last one carries the whole result (twice `big`: the
/// echo and the large result). Returns the client's end's events and the
/// server's port.
pub fn ts_https_seen_from_both_ends(m: &Monitor, runtime: &std::ffi::OsStr, big: usize) -> (Vec<Value>, u16) {
    let cert = self_signed();
    let port = free_port();
    let server = fastmcp_server(port, Some(&cert));
    let server_pid = server.0.id();
    let t = ts_session_under(
        runtime,
        "streamableHttp",
        &format!("https://127.0.0.1:{port}/mcp"),
        big,
        &[
            ("NODE_EXTRA_CA_CERTS", cert.cert.as_os_str()),
            ("MCP_TEST_TOOLS", std::ffi::OsStr::new("fastmcp")),
        ],
    );
    let expected = t.expected(false);
    let n = count(&expected);
    let of = |ev: &[Value], server_side: bool| view(ev, "https", server_pid, t.client_pid, server_side);
    let events = m.wait_events(Duration::from_secs(20), |ev| {
        of(ev, true).len() >= n && of(ev, false).len() >= n
    });
    for server_side in [true, false] {
        let mine = of(&events, server_side);
        assert_same(&expected, &observed_rows(&mine));
        let last = mine.last().unwrap();
        assert!(last["bytes"].as_u64().unwrap() > 2 * big as u64, "{}", last["bytes"]);
    }
    drop(server);
    (of(&events, false), port)
}

/// [`ts_session`] under another JavaScript runtime (`runtime`: Bun).
pub fn ts_session_under(
    runtime: &std::ffi::OsStr,
    mode: &str,
    url: &str,
    big: usize,
    env: &[(&str, &std::ffi::OsStr)],
) -> Transcript {
    let dir = TempDir::new("ts-http");
    let t = dir.path().join("t.json");
    let st = status_bounded(
        Command::new(runtime)
            .current_dir(clients_dir())
            .arg("http_session.mjs")
            .arg(mode)
            .arg(url)
            .arg(&t)
            .arg(big.to_string())
            .envs(env.iter().copied()),
        "the TypeScript SDK HTTP session",
    );
    assert!(st.success(), "the TypeScript SDK HTTP session failed");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&t).unwrap()).unwrap();
    assert!(
        v["big_result_bytes"].as_u64().unwrap() >= big as u64,
        "the client got the whole result"
    );
    Transcript::load(&t)
}
