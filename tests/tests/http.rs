//! MCP over HTTP, captured from the kernel: a FastMCP Streamable HTTP server
//! and the official Python SDK client on this host, both seen (the server's
//! reads and writes, and the client's), with a tool result split over many
//! TCP reads; the same over HTTPS with a self-signed certificate, seen at
//! the TLS library (Python's libssl, and node's statically linked OpenSSL);
//! the TypeScript `server-everything` in its Streamable HTTP and legacy
//! HTTP+SSE modes with the TypeScript SDK client, compared message by
//! message with the client's transcript on both ends; and a non-MCP HTTP
//! exchange that yields no MCP event.

use std::{
    net::TcpStream,
    process::{Command, Stdio},
    time::Duration,
};

use mcp_monitor_tests::*;
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(20);

fn fastmcp_http(port: u16) -> Server {
    fastmcp_server(port, None)
}

fn fastmcp_server(port: u16, tls: Option<&Certificate>) -> Server {
    let mut cmd = Command::new(python());
    cmd.arg(clients_dir().join("fastmcp_server.py"))
        .env("MCP_TEST_HTTP_PORT", port.to_string());
    if let Some(c) = tls {
        cmd.env("MCP_TEST_TLS_CERT", &c.cert).env("MCP_TEST_TLS_KEY", &c.key);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the FastMCP HTTP server");
    wait_port(port);
    Server(child)
}

/// Runs the SDK client; returns its pid.
fn session(port: u16, big: usize) -> u32 {
    session_with(port, big, None)
}

/// Runs the SDK client, over HTTPS trusting `tls` when given.
fn session_with(port: u16, big: usize, tls: Option<&Certificate>) -> u32 {
    let dir = TempDir::new("http");
    let t = dir.path().join("t.json");
    let mut cmd = Command::new(python());
    cmd.arg(clients_dir().join("py_http_session.py")).arg(&t);
    match tls {
        Some(c) => cmd
            .arg(format!("https://127.0.0.1:{port}/mcp"))
            .env("MCP_TEST_CA", &c.cert),
        None => cmd.arg(format!("http://127.0.0.1:{port}/mcp")),
    };
    let st = cmd.arg(big.to_string()).status().unwrap();
    assert!(st.success(), "the Python SDK HTTP session failed");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&t).unwrap()).unwrap();
    assert_eq!(v["steps"][3]["bytes"], big, "the client got the whole result");
    v["client_pid"].as_u64().unwrap() as u32
}

/// The events of one end of a local session over `transport`: the server's
/// view (its pid), or the client's (no server pid: the server is remote to
/// it).
fn view(ev: &[Value], transport: &str, server_pid: u32, client_pid: u32, server_side: bool) -> Vec<Value> {
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

/// (direction, type, method, tool) of events.
fn rows(events: &[&Value]) -> Rows {
    events
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
            (s("direction"), s("type"), s("method"), s("tool"))
        })
        .collect()
}

type Rows = Vec<(String, String, String, String)>;

/// The FastMCP session after its opening: tools/list, echo, big.
const TOOL_ROWS: &[(&str, &str, &str, &str)] = &[
    ("client_to_server", "request", "tools/list", ""),
    ("server_to_client", "response", "tools/list", ""),
    ("client_to_server", "request", "tools/call", "echo"),
    ("server_to_client", "response", "tools/call", "echo"),
    ("client_to_server", "request", "tools/call", "big"),
    ("server_to_client", "response", "tools/call", "big"),
];

/// `opening` then [`TOOL_ROWS`], as comparable rows.
fn session_rows(opening: &[(&str, &str, &str, &str)]) -> Rows {
    opening
        .iter()
        .chain(TOOL_ROWS)
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect()
}

/// The Python SDK session with the initialize handshake.
fn expected() -> Rows {
    session_rows(&[
        ("client_to_server", "request", "initialize", ""),
        ("server_to_client", "response", "initialize", ""),
        ("client_to_server", "notification", "notifications/initialized", ""),
    ])
}

/// The MCP Inspector CLI over Streamable HTTP against FastMCP: its whole
/// exchange from both ends.
#[test]
fn inspector_cli_over_streamable_http_seen_from_both_ends() {
    require_root();
    let port = free_port();
    let server = fastmcp_http(port);
    inspector_cli_seen_from_both_ends(&server, &format!("http://127.0.0.1:{port}/mcp"), "http", "http");
}

/// The MCP Inspector CLI over the legacy HTTP+SSE transport, against
/// `server-everything` in its `sse` mode.
#[test]
fn inspector_cli_over_legacy_sse_seen_from_both_ends() {
    require_root();
    let port = free_port();
    let server = everything_http("sse", port);
    inspector_cli_seen_from_both_ends(&server, &format!("http://127.0.0.1:{port}/sse"), "sse", "sse");
}

/// The MCP Inspector CLI over HTTPS (node's static OpenSSL) against
/// FastMCP (libssl): every new TLS connection's first messages name the
/// client process in the server's view too.
#[test]
fn inspector_cli_over_https_seen_from_both_ends() {
    require_root();
    let cert = self_signed();
    let port = free_port();
    let server = fastmcp_server(port, Some(&cert));
    let env = [("NODE_EXTRA_CA_CERTS", cert.cert.to_str().unwrap())];
    for _ in 0..3 {
        inspector_cli_seen_from_both_ends_with(
            &server,
            &format!("https://127.0.0.1:{port}/mcp"),
            "http",
            "https",
            &env,
        );
    }
}

/// Runs the Inspector CLI's `tools/list` against `url` with its
/// `--transport cli_transport`; both ends' events (`transport`) are its
/// whole exchange.
fn inspector_cli_seen_from_both_ends(server: &Server, url: &str, cli_transport: &str, transport: &str) {
    inspector_cli_seen_from_both_ends_with(server, url, cli_transport, transport, &[]);
}

/// [`inspector_cli_seen_from_both_ends`], the CLI with more environment.
fn inspector_cli_seen_from_both_ends_with(
    server: &Server,
    url: &str,
    cli_transport: &str,
    transport: &str,
    env: &[(&str, &str)],
) {
    let m = Monitor::start(&[]);
    let (cli, out) = inspector_cli_with_env(&[url, "--transport", cli_transport, "--method", "tools/list"], env);
    assert!(out.contains("\"tools\""), "{out}");
    let want: Rows = [
        ("client_to_server", "request", "initialize", ""),
        ("server_to_client", "response", "initialize", ""),
        ("client_to_server", "notification", "notifications/initialized", ""),
        ("client_to_server", "request", "tools/list", ""),
        ("server_to_client", "response", "tools/list", ""),
    ]
    .iter()
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
    .collect();
    let spid = server.0.id();
    // Until both ends have the last message, the tools/list response.
    let done = |v: Vec<Value>| v.iter().any(|e| e["type"] == "response" && e["method"] == "tools/list");
    let ev = m.wait_events(SETTLE, |ev| {
        done(view(ev, transport, spid, cli, true)) && done(view(ev, transport, spid, cli, false))
    });
    let mut both = Vec::new();
    for server_side in [true, false] {
        let v = view(&ev, transport, spid, cli, server_side);
        let all = rows(&v.iter().collect::<Vec<_>>());
        // Notifications the server sends on its own (server-everything:
        // tools/list_changed) are not part of the CLI's exchange; both
        // ends must still agree on them.
        let exchange: Rows = all
            .iter()
            .filter(|r| !(r.0 == "server_to_client" && r.1 == "notification"))
            .cloned()
            .collect();
        assert_eq!(exchange, want, "server side: {server_side}");
        assert!(
            v.iter().all(|e| e["client"]["pid"] == cli),
            "server side: {server_side}: {v:?}"
        );
        assert_eq!(v[0]["client"]["name"], "inspector-cli", "server side: {server_side}");
        both.push(all);
    }
    // Per direction: across directions the order depends on which end
    // looks (the legacy transport answers on another connection).
    for dir in ["client_to_server", "server_to_client"] {
        let [server_view, client_view] =
            [&both[0], &both[1]].map(|rows| rows.iter().filter(|r| r.0 == dir).cloned().collect::<Rows>());
        assert_eq!(server_view, client_view, "the two ends saw different messages ({dir})");
    }
}

/// mcp-remote, the stdio-to-HTTP bridge desktop agents use for remote
/// servers: a node client speaks stdio to it, it speaks Streamable HTTP to
/// FastMCP after its OAuth discovery requests (plain-text 404s on the same
/// keep-alive connection). Both hops are seen message for message, and
/// both name the bridge process, so they can be joined.
#[test]
fn mcp_remote_bridge_seen_on_both_hops() {
    require_root();
    mcp_remote_bridge(None);
}

/// The same bridge to an HTTPS server (self-signed, trusted through
/// NODE_EXTRA_CA_CERTS): the HTTP hop is seen at the TLS libraries, node's
/// static OpenSSL on the bridge's side and libssl on the server's.
#[test]
fn mcp_remote_bridge_to_https_seen_on_both_hops() {
    require_root();
    mcp_remote_bridge(Some(&self_signed()));
}

fn mcp_remote_bridge(tls: Option<&Certificate>) {
    let port = free_port();
    let server = fastmcp_server(port, tls);
    let m = Monitor::start(&[]);
    let (scheme, transport) = if tls.is_some() {
        ("https", "https")
    } else {
        ("http", "http")
    };
    let url = format!("{scheme}://127.0.0.1:{port}/mcp");
    let env: Vec<(&str, &str)> = tls
        .map(|c| vec![("NODE_EXTRA_CA_CERTS", c.cert.to_str().unwrap())])
        .unwrap_or_default();
    let t = Driver::node_with_env("remote", &[&url], &env).finish();
    let bridge = t.server_pid;
    // The stdio hop, by the client's own transcript.
    let expected = t.expected(false);
    let n = count(&expected);
    // Rows as events name them: a response carries its request's method
    // and tool.
    let asked: std::collections::HashMap<String, (String, String)> = t
        .messages
        .iter()
        .filter(|s| s.kind == "request")
        .map(|s| {
            let what = (s.method.clone().unwrap_or_default(), s.tool.clone().unwrap_or_default());
            (s.id.to_string(), what)
        })
        .collect();
    let want: Rows = t
        .messages
        .iter()
        .map(|s| {
            let (method, tool) = match s.kind.as_str() {
                "response" | "error" => asked.get(&s.id.to_string()).cloned().unwrap_or_default(),
                _ => (s.method.clone().unwrap_or_default(), s.tool.clone().unwrap_or_default()),
            };
            let dir = if s.dir == "c2s" {
                "client_to_server"
            } else {
                "server_to_client"
            };
            (dir.to_string(), s.kind.clone(), method, tool)
        })
        .collect();
    let spid = server.0.id();
    let ev = m.wait_events(SETTLE, |ev| count(&observed(ev, bridge)) >= n);
    assert_same(&expected, &observed(&ev, bridge));
    // The HTTP hop carries the same messages, from both of its ends, and
    // names the bridge as the client; before them, the bridge's own
    // transport probe (an initialize as `mcp-remote-fallback-test`, on the
    // connection of its OAuth discovery requests, where the server is first
    // seen in the middle of a response).
    let mut want = want;
    for (d, k, m) in [
        ("client_to_server", "request", "initialize"),
        ("server_to_client", "response", "initialize"),
        ("client_to_server", "notification", "notifications/initialized"),
    ] {
        want.push((d.into(), k.into(), m.into(), String::new()));
    }
    want.sort();
    let n = want.len();
    let ev = m.wait_events(SETTLE, |ev| {
        view(ev, transport, spid, bridge, true).len() >= n && view(ev, transport, spid, bridge, false).len() >= n
    });
    for server_side in [true, false] {
        let v = view(&ev, transport, spid, bridge, server_side);
        let mut got = rows(&v.iter().collect::<Vec<_>>());
        got.sort();
        assert_eq!(got, want, "HTTP hop, server side: {server_side}");
        assert!(
            v.iter().any(|e| e["client"]["name"] == "mcp-remote-fallback-test"),
            "server side: {server_side}"
        );
        // The probe and the real session are two sessions, though they
        // share a keep-alive connection and every POST has `Mcp-Method`.
        let session_of = |probe: bool| -> std::collections::HashSet<&str> {
            v.iter()
                .filter(|e| (e["client"]["name"] == "mcp-remote-fallback-test") == probe)
                .map(|e| e["session"].as_str().unwrap())
                .collect()
        };
        let (probe, real) = (session_of(true), session_of(false));
        assert_eq!(probe.len(), 1, "server side {server_side}: {probe:?}");
        assert_eq!(real.len(), 1, "server side {server_side}: {real:?}");
        assert_ne!(
            probe, real,
            "server side {server_side}: the probe and the session are one"
        );
        // Both ends are on this host: the server's view names the bridge
        // from the first message on.
        assert!(
            v.iter().all(|e| e["client"]["pid"] == bridge),
            "server side {server_side}: {v:?}"
        );
    }
    assert!(
        m.metric("mcp_monitor_prelude_frames_total", &[]) >= 1.0,
        "the OAuth discovery exchanges were not seen"
    );
    assert_eq!(
        m.metric("mcp_monitor_streams_total", &[("verdict", "rejected:not_json")]),
        0.0
    );
}

/// The evasion over HTTP: more throwaway requests than the prelude budget
/// on one keep-alive connection to a server the monitor already tracks,
/// then MCP on that connection. The connection is judged not MCP on the
/// throwaway exchanges; after a pause (the kernel ignores it by then) the
/// kernel's re-look resumes it at the first POST, and the server's view
/// has every message.
#[test]
fn throwaway_requests_before_mcp_on_one_connection_do_not_blind_the_monitor() {
    require_root();
    let m = Monitor::start(&[]);
    let port = free_port();
    let server = fastmcp_http(port);
    let server_pid = server.0.id();
    // A first session gets the server discovered, hence tracked.
    let first_client = session(port, 10);
    m.wait_events(SETTLE, |ev| view(ev, "http", server_pid, first_client, true).len() >= 9);
    let dir = TempDir::new("keepalive");
    let path = dir.path().join("t.json");
    let st = Command::new(python())
        .arg(clients_dir().join("py_keepalive_session.py"))
        .arg(format!("http://127.0.0.1:{port}/mcp"))
        .arg(&path)
        .arg("12")
        // Time for the agent to have the kernel ignore the connection.
        .arg(scaled(Duration::from_secs(1)).as_secs_f64().to_string())
        .status()
        .unwrap();
    assert!(st.success(), "the keep-alive client failed");
    let t = Transcript::load(&path);
    let expected = t.expected(false);
    let second = |ev: &[Value]| {
        observed_rows(ev.iter().filter(|e| {
            e["transport"] == "http" && e["server"]["pid"] == server_pid && e["client"]["pid"] != first_client
        }))
    };
    let events = m.wait_events(SETTLE, |ev| count(&second(ev)) >= count(&expected));
    assert_same(&expected, &second(&events));
    let text = m.metrics_text();
    assert!(
        m.resumed_by_kernel(SETTLE),
        "the connection was judged not MCP, then resumed:\n{text}"
    );
    drop(server);
}

#[test]
fn streamable_http_seen_from_both_ends() {
    require_root();
    // Default configuration: the server's 600 KB response is one send,
    // beyond the 256 KiB capture cap; the kernel sends it in pieces.
    let m = Monitor::start(&[]);
    let port = free_port();
    let server = fastmcp_http(port);
    let server_pid = server.0.id();
    let client_pid = session(port, 300_000);
    let of = |ev: &[Value], server_side: bool| view(ev, "http", server_pid, client_pid, server_side);
    let events = m.wait_events(SETTLE, |ev| of(ev, true).len() >= 9 && of(ev, false).len() >= 9);
    for server_side in [true, false] {
        let mine = of(&events, server_side);
        let refs: Vec<&Value> = mine.iter().collect();
        assert_eq!(rows(&refs), expected(), "server side: {server_side}");
        // Both ends are on this host: each view names the client process,
        // and the connection's ends.
        assert!(mine.iter().all(|e| e["client"]["pid"] == client_pid), "{mine:?}");
        let end = if server_side { "local" } else { "remote" };
        assert!(mine
            .iter()
            .all(|e| e["http"][end] == format!("127.0.0.1:{port}").as_str()));
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

    // A multi-megabyte result on both sides: many reads of the client, and
    // one send of the server that the kernel splits into pieces.
    let client_pid = session(port, 3_000_000);
    let events = m.wait_events(SETTLE, |ev| {
        ev.iter()
            .filter(|e| e["client"]["pid"] == client_pid && e["tool"] == "big" && e["type"] == "response")
            .count()
            >= 2
    });
    for server_side in [true, false] {
        let mine: Vec<&Value> = events
            .iter()
            .filter(|e| e["client"]["pid"] == client_pid && e["server"]["pid"].is_null() != server_side)
            .collect();
        assert_eq!(rows(&mine), expected(), "server side: {server_side}");
        assert!(mine.last().unwrap()["bytes"].as_u64().unwrap() > 6_000_000);
    }
    drop(server);
}

#[test]
fn https_seen_from_both_ends_at_the_tls_library() {
    require_root();
    // Default configuration: the 6 MB result is one SSL_write of the
    // server, beyond the 256 KiB capture cap; the kernel sends it in pieces.
    let m = Monitor::start(&[]);
    let cert = self_signed();
    let port = free_port();
    let server = fastmcp_server(port, Some(&cert));
    let server_pid = server.0.id();
    let client_pid = session_with(port, 3_000_000, Some(&cert));
    let of = |ev: &[Value], server_side: bool| view(ev, "https", server_pid, client_pid, server_side);
    let events = m.wait_events(SETTLE, |ev| of(ev, true).len() >= 9 && of(ev, false).len() >= 9);
    let port_text = format!("127.0.0.1:{port}");
    for server_side in [true, false] {
        let mine = of(&events, server_side);
        let refs: Vec<&Value> = mine.iter().collect();
        assert_eq!(rows(&refs), expected(), "server side: {server_side}");
        let sessions: std::collections::HashSet<&str> = mine.iter().map(|e| e["session"].as_str().unwrap()).collect();
        assert_eq!(sessions.len(), 1, "{sessions:?}");
        assert!(sessions.iter().all(|s| s.starts_with("https:")));
        assert!(mine.iter().all(|e| e["http"]["path"] == "/mcp"));
        assert_eq!(mine[1]["server"]["name"], "pyserver");
        let big = mine.last().unwrap();
        assert!(big["bytes"].as_u64().unwrap() > 6_000_000, "{}", big["bytes"]);
        // Connection endpoints: the server's own end is its port; the
        // client's remote end is the server's port (the first SSL calls
        // of a process that just became tracked may have none).
        let end = if server_side { "local" } else { "remote" };
        assert_eq!(big["http"][end], port_text.as_str(), "{big}");
    }
    // Both ends are on this host: the server's view names the client
    // process at the other end of the connection, from the first message
    // on (the client's first writes have no socket yet: it was not tracked
    // during its handshake).
    let server_side = of(&events, true);
    for e in &server_side {
        assert_eq!(e["client"]["pid"], client_pid, "{e}");
    }
    // The client's view is not judged again: no shadowing alert from two
    // views of one server.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        m.alerts().iter().all(|a| a["rule"] != "tool_integrity.shadowing"),
        "{:?}",
        m.alerts()
    );
    assert!(m.metric("mcp_monitor_tls_probe_targets", &[]) >= 1.0);
    assert_eq!(
        m.metric("mcp_monitor_capture_dropped_total", &[("reason", "tail_call_failed")]),
        0.0
    );
    // The ciphertext on the sockets left capture after its first chunk.
    assert!(m.metric("mcp_monitor_streams_total", &[("verdict", "rejected:not_http")]) >= 2.0);
    drop(server);
}

/// `server-everything` in one of its HTTP modes (`streamableHttp`, `sse`).
fn everything_http(mode: &str, port: u16) -> Server {
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
fn ts_session(mode: &str, url: &str, big: usize, env: &[(&str, &std::ffi::OsStr)]) -> Transcript {
    let dir = TempDir::new("ts-http");
    let t = dir.path().join("t.json");
    let st = Command::new("node")
        .current_dir(clients_dir())
        .arg("http_session.mjs")
        .arg(mode)
        .arg(url)
        .arg(&t)
        .arg(big.to_string())
        .envs(env.iter().copied())
        .status()
        .expect("run node");
    assert!(st.success(), "the TypeScript SDK HTTP session failed");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&t).unwrap()).unwrap();
    assert!(
        v["big_result_bytes"].as_u64().unwrap() >= big as u64,
        "the client got the whole result"
    );
    Transcript::load(&t)
}

/// Both ends of one TypeScript SDK session with `server-everything` over
/// `transport` (`http`, or `sse` for the legacy transport): each end's
/// events equal the client's transcript, message by message.
fn everything_seen_from_both_ends(mode: &str, path: &str, transport: &str) {
    require_root();
    let m = Monitor::start(&[]);
    let port = free_port();
    let server = everything_http(mode, port);
    let server_pid = server.0.id();
    // 3 MiB: the argument is one large writev of the client, the result one
    // of the server; both beyond the 256 KiB capture cap.
    let big = 3 << 20;
    let t = ts_session(mode, &format!("http://127.0.0.1:{port}{path}"), big, &[]);
    let expected = t.expected(false);
    let n = count(&expected);
    let of = |ev: &[Value], server_side: bool| view(ev, transport, server_pid, t.client_pid, server_side);
    let events = m.wait_events(SETTLE, |ev| of(ev, true).len() >= n && of(ev, false).len() >= n);
    for server_side in [true, false] {
        let mine = of(&events, server_side);
        assert_same(&expected, &observed_rows(&mine));
        let sessions: std::collections::HashSet<&str> = mine.iter().map(|e| e["session"].as_str().unwrap()).collect();
        assert_eq!(sessions.len(), 1, "server side {server_side}: {sessions:?}");
        assert!(sessions.iter().all(|s| s.starts_with(&format!("{transport}:"))));
        // Both ends on this host: each view names the client process.
        assert!(mine.iter().all(|e| e["client"]["pid"] == t.client_pid), "{mine:?}");
        assert!(mine.iter().all(|e| e["http"]["session_id_hash"]
            .as_str()
            .is_some_and(|h| h.starts_with("sha256:"))
            || e["method"] == "initialize"));
        let big_call = mine
            .iter()
            .find(|e| e["type"] == "request" && e["bytes"].as_u64().unwrap() > big as u64)
            .expect("the large call");
        assert_eq!(big_call["http"]["method"], "POST");
        // Legacy: the session id in the endpoint's query never leaves.
        let p = big_call["http"]["path"].as_str().unwrap();
        assert!(!p.contains('?') || p.ends_with("=[REDACTED]"), "{p}");
    }
    assert_eq!(m.metric("mcp_monitor_capture_truncated_total", &[]), 0.0);
    assert_eq!(
        m.metric("mcp_monitor_capture_dropped_total", &[("reason", "tail_call_failed")]),
        0.0
    );
    drop(server);
}

#[test]
fn typescript_streamable_http_seen_from_both_ends() {
    everything_seen_from_both_ends("streamableHttp", "/mcp", "http");
}

#[test]
fn typescript_legacy_http_sse_seen_from_both_ends() {
    everything_seen_from_both_ends("sse", "/sse", "sse");
}

#[test]
fn https_of_a_node_client_seen_at_its_static_openssl() {
    require_root();
    // node links OpenSSL statically: its own binary is probed
    // (capture.tls_executables).
    let m = Monitor::start(&[]);
    let cert = self_signed();
    let port = free_port();
    let server = fastmcp_server(port, Some(&cert));
    let server_pid = server.0.id();
    let t = ts_session(
        "streamableHttp",
        &format!("https://127.0.0.1:{port}/mcp"),
        3_000_000,
        &[
            ("NODE_EXTRA_CA_CERTS", cert.cert.as_os_str()),
            ("MCP_TEST_TOOLS", std::ffi::OsStr::new("fastmcp")),
        ],
    );
    let expected = t.expected(false);
    let n = count(&expected);
    let of = |ev: &[Value], server_side: bool| view(ev, "https", server_pid, t.client_pid, server_side);
    let events = m.wait_events(SETTLE, |ev| of(ev, true).len() >= n && of(ev, false).len() >= n);
    for server_side in [true, false] {
        let mine = of(&events, server_side);
        assert_same(&expected, &observed_rows(&mine));
        let last = mine.last().unwrap();
        assert!(last["bytes"].as_u64().unwrap() > 6_000_000, "{}", last["bytes"]);
    }
    // The client's chunks came through node's own SSL_read/SSL_write.
    let client_side = of(&events, false);
    assert!(
        client_side[0]["client"]["exe"]
            .as_str()
            .is_some_and(|e| e.contains("node")),
        "{}",
        client_side[0]
    );
    drop(server);
}

#[test]
fn stateless_revision_seen_from_both_ends_and_lying_headers_alerted() {
    require_root();
    let m = Monitor::start(&[]);
    let port = free_port();
    let server = fastmcp_http(port);
    let server_pid = server.0.id();
    let dir = TempDir::new("stateless");
    let t = dir.path().join("t.json");
    let st = Command::new(python())
        .arg(clients_dir().join("py_stateless_session.py"))
        .arg(&t)
        .arg(format!("http://127.0.0.1:{port}/mcp"))
        .arg("3000000")
        .status()
        .unwrap();
    assert!(st.success(), "the Python SDK stateless session failed");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&t).unwrap()).unwrap();
    assert_eq!(v["steps"][2]["bytes"], 3_000_000, "the client got the whole result");
    let client_pid = v["client_pid"].as_u64().unwrap() as u32;
    // No handshake in this revision: a discover probe opens it.
    let want = session_rows(&[
        ("client_to_server", "request", "server/discover", ""),
        ("server_to_client", "response", "server/discover", ""),
    ]);
    let of = |ev: &[Value], server_side: bool| view(ev, "http", server_pid, client_pid, server_side);
    let events = m.wait_events(SETTLE, |ev| of(ev, true).len() >= 8 && of(ev, false).len() >= 8);
    for server_side in [true, false] {
        let mine = of(&events, server_side);
        let refs: Vec<&Value> = mine.iter().collect();
        assert_eq!(rows(&refs), want, "server side: {server_side}");
        // No session id in this revision: the requests of one client to one
        // server are one session all the same.
        let sessions: std::collections::HashSet<&str> = mine.iter().map(|e| e["session"].as_str().unwrap()).collect();
        assert_eq!(sessions.len(), 1, "{sessions:?}");
        assert!(mine.iter().all(|e| e["http"]["session_id_hash"].is_null()));
        assert!(mine.iter().all(|e| e["http"]["header_mismatch"].is_null()));
        // Identity from the discover result's and the requests' _meta.
        assert_eq!(mine.last().unwrap()["server"]["name"], "pyserver");
        assert!(mine.last().unwrap()["bytes"].as_u64().unwrap() > 6_000_000);
    }
    // A request whose Mcp-Name shows another tool than its body calls.
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"send_message","arguments":{"to":"x@example.org","text":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: echo\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut conn, request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut conn, &mut answer);
    let alerts = m.wait_alerts(SETTLE, |a| a.iter().any(|a| a["rule"] == "protocol.header_mismatch"));
    let a = alerts.iter().find(|a| a["rule"] == "protocol.header_mismatch").unwrap();
    assert_eq!(a["evidence"]["headers"], serde_json::json!(["mcp-name"]), "{a}");
    assert_eq!(a["evidence"]["tool"], "send_message");
    // Counted per end seen (this test process is a client on this host too);
    // alerted once, from the server's view.
    assert!(m.metric("mcp_monitor_http_header_mismatch_total", &[("header", "mcp-name")]) >= 1.0);
    std::thread::sleep(Duration::from_secs(1));
    let n = m
        .alerts()
        .iter()
        .filter(|a| a["rule"] == "protocol.header_mismatch")
        .count();
    assert_eq!(n, 1, "{:?}", m.alerts());
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

/// Many new TLS connections to one server from new client processes, of
/// two TLS stacks (node's static OpenSSL, Python's libssl): the server's
/// view names the client process of every message, the first exchange of
/// each connection included (the field report: 6–7 of 26 events had none).
#[test]
fn https_server_side_names_the_client_of_every_new_connection() {
    require_root();
    let cert = self_signed();
    let port = free_port();
    let server = fastmcp_server(port, Some(&cert));
    let spid = server.0.id();
    let m = Monitor::start(&[]);
    let env = [("NODE_EXTRA_CA_CERTS", cert.cert.to_str().unwrap())];
    let url = format!("https://127.0.0.1:{port}/mcp");
    let mut clients = Vec::new();
    // The Inspector's tools/list is 5 messages, the Python session 9.
    let mut expected = 0;
    for i in 0..10 {
        if i % 2 == 0 {
            let (cli, out) = inspector_cli_with_env(&[&url, "--transport", "http", "--method", "tools/list"], &env);
            assert!(out.contains("\"tools\""), "{out}");
            clients.push(cli);
            expected += 5;
        } else {
            clients.push(session_with(port, 10, Some(&cert)));
            expected += 9;
        }
    }
    let server_side = |ev: &[Value]| -> Vec<Value> {
        ev.iter()
            .filter(|e| e["transport"] == "https" && e["server"]["pid"] == spid)
            .cloned()
            .collect()
    };
    let ev = m.wait_events(SETTLE, |ev| server_side(ev).len() >= expected);
    let seen = server_side(&ev);
    assert_eq!(seen.len(), expected);
    let unnamed: Vec<&Value> = seen
        .iter()
        .filter(|e| !clients.iter().any(|c| e["client"]["pid"] == *c))
        .collect();
    assert!(
        unnamed.is_empty(),
        "{} of {} server-side events name no client of this test: {unnamed:?}",
        unnamed.len(),
        seen.len()
    );
    drop(server);
}
