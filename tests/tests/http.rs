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

/// Runs tests/clients/py_keepalive_session.py against `url` with `args`
/// (throwaway requests, pause, `reconnect`); returns its transcript.
fn keepalive_session(url: &str, args: &[&str]) -> Transcript {
    let dir = TempDir::new("keepalive");
    let path = dir.path().join("t.json");
    let st = Command::new(python())
        .arg(clients_dir().join("py_keepalive_session.py"))
        .arg(url)
        .arg(&path)
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "the keep-alive client failed");
    Transcript::load(&path)
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
    // Time for the agent to have the kernel ignore the connection.
    let pause = scaled(Duration::from_secs(1)).as_secs_f64().to_string();
    let t = keepalive_session(&format!("http://127.0.0.1:{port}/mcp"), &["12", &pause]);
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

/// An untracked client's busy TLS connection that carries no MCP (300
/// requests over Python's libssl) is looked at less and less, at both ends
/// (counted); MCP on the next connection, opened at once after that one
/// is closed (its `SSL` object freed, whose address the new one often
/// takes), is seen whole from both ends: `SSL_free` forgets the old
/// connection's looks, so the new one is looked at from its first call.
#[test]
fn a_busy_tls_connection_without_mcp_is_thinned_and_the_next_seen_whole() {
    require_root();
    let m = Monitor::start(&[]);
    let cert = self_signed();
    let port = free_port();
    // Nothing connects before the client: the server's first TLS
    // connection is the busy one, and its object, freed when the client
    // closes it, is the one the next connection's often reuses.
    let server = fastmcp_server_untouched(port, &cert);
    let server_pid = server.0.id();
    let t = keepalive_session(&format!("https://127.0.0.1:{port}/mcp"), &["300", "0", "reconnect"]);
    let expected = t.expected(false);
    let of = |ev: &[Value], server_side: bool| {
        observed_rows(view(ev, "https", server_pid, t.client_pid, server_side).iter())
    };
    let events = m.wait_events(SETTLE, |ev| {
        count(&of(ev, true)) >= count(&expected) && count(&of(ev, false)) >= count(&expected)
    });
    assert_same(&expected, &of(&events, true));
    assert_same(&expected, &of(&events, false));
    // 300 requests and answers on each of the four streams (two ends, two
    // directions); each stream's first 8 calls and a few more are looked at.
    let deferred = m.wait_metric(SETTLE, "mcp_monitor_tls_discovery_deferred_total", &[], 600.0);
    assert!(
        deferred >= 600.0,
        "{deferred} TLS calls deferred:\n{}",
        m.metrics_text()
    );
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
        assert_eq!(
            rows(&refs),
            expected(),
            "server side: {server_side} (client pid {client_pid}, server pid {server_pid})\n\
             every https event:\n{}the agent's loss counters:\n{}\nthe agent's log:\n{}",
            transport_summary(&events, "https"),
            m.loss_metrics(),
            m.stderr_tail(60),
        );
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

/// The Python SDK client (httpx on anyio) decrypts in its tasks what its
/// event loop read from the sockets before (TLS over a memory BIO, no
/// `SSL_set_fd`), so the kernel names each `SSL` object's socket after the
/// last socket the thread read. While a 6 MB result arrives on a POST
/// connection, the server sends resource updates on the session's GET
/// stream, whose socket the loop reads between the POST socket's reads and
/// the result's `SSL_read`s. The kernel keeps the POST connection's socket
/// and stream (the socket is still open: not an `SSL` object freed and
/// reused) and counts the interleaving. Before, it forgot the connection
/// in the middle of the result: the client's view lost the result, and
/// the rest of the connection was rejected as not HTTP.
#[test]
fn https_result_read_while_the_get_stream_carries_notifications() {
    require_root();
    let m = Monitor::start(&[]);
    let cert = self_signed();
    let port = free_port();
    let server = fastmcp_server_variant(port, Some(&cert), "notifying");
    let server_pid = server.0.id();
    let client_pid = session_calling(port, 3_000_000, Some(&cert), "big_while_notifying");
    const UPDATE: &str = "notifications/resources/updated";
    let calls = |ev: &[Value], server_side: bool| -> Vec<Value> {
        view(ev, "https", server_pid, client_pid, server_side)
            .into_iter()
            .filter(|e| e["method"] != UPDATE)
            .collect()
    };
    let events = m.wait_events(SETTLE, |ev| calls(ev, true).len() >= 9 && calls(ev, false).len() >= 9);
    let expected: Rows = expected()
        .into_iter()
        .map(|(d, t, method, tool)| {
            let tool = if tool == "big" {
                "big_while_notifying".to_owned()
            } else {
                tool
            };
            (d, t, method, tool)
        })
        .collect();
    let port_text = format!("127.0.0.1:{port}");
    let mut results = Vec::new();
    for server_side in [true, false] {
        let mine = calls(&events, server_side);
        let refs: Vec<&Value> = mine.iter().collect();
        assert_eq!(
            rows(&refs),
            expected,
            "server side: {server_side} (client pid {client_pid}, server pid {server_pid})\n\
             the agent's loss counters:\n{}\nthe agent's log:\n{}",
            m.loss_metrics(),
            m.stderr_tail(40),
        );
        let result = mine.last().unwrap().clone();
        assert!(result["bytes"].as_u64().unwrap() > 6_000_000, "{}", result["bytes"]);
        let end = if server_side { "local" } else { "remote" };
        assert_eq!(result["http"][end], port_text.as_str(), "{result}");
        results.push(result);
    }
    // The client's view of the result keeps its own connection's socket,
    // not the GET stream's: its local end is the one the server saw.
    let (server_result, client_result) = (&results[0], &results[1]);
    assert_eq!(
        client_result["http"]["local"], server_result["http"]["remote"],
        "{client_result}\n{server_result}"
    );
    // The updates went by on the GET stream, another connection, and the
    // client's view has them.
    let updates: Vec<Value> = view(&events, "https", server_pid, client_pid, false)
        .into_iter()
        .filter(|e| e["method"] == UPDATE)
        .collect();
    assert!(!updates.is_empty(), "no resource update seen by the client");
    assert!(
        updates
            .iter()
            .all(|u| u["http"]["local"] != client_result["http"]["local"]),
        "{:?}",
        updates.iter().map(|u| &u["http"]).collect::<Vec<_>>()
    );
    // The GET stream's socket was read between the result's socket and an
    // SSL_read of the result, and the kernel kept the result's connection.
    let interleaved = m.wait_metric(SETTLE, "mcp_monitor_tls_reads_interleaved_total", &[], 1.0);
    assert!(interleaved >= 1.0, "{}", m.metrics_text());
    drop(server);
}

/// HTTP/2 over TLS (Hypercorn serving FastMCP, the Python SDK client on
/// httpx with h2 only), seen at Python's libssl from both ends: frames,
/// a header table per direction, responses paired by stream. The kernel
/// discovers each process on its first DATA frame of JSON, so the first
/// connection of each is joined in progress: its bodies are whole, and
/// the header fields sent from then on are known. A credential the echo
/// tool returns raises an alert and is exported nowhere.
#[test]
fn https_h2_seen_from_both_ends() {
    require_root();
    let m = Monitor::start(&[]);
    let cert = self_signed();
    let port = free_port();
    let server = fastmcp_h2_server(port, Some(&cert));
    let server_pid = server.0.id();
    // A fake GitHub token (checksum valid), returned by the echo tool.
    let secret = "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";
    let clients = [
        session_h2(port, 1_000_000, Some(&cert), "first session"),
        session_h2(port, 1_000_000, Some(&cert), &format!("token: {secret}")),
    ];
    let of = |ev: &[Value], client: u32, server_side: bool| {
        let mut v = view(ev, "https", server_pid, client, server_side);
        v.retain(|e| e["client"]["pid"] == client);
        v
    };
    let events = m.wait_events(SETTLE, |ev| {
        clients
            .iter()
            .all(|&c| of(ev, c, true).len() >= 9 && of(ev, c, false).len() >= 9)
    });
    for (n, &client) in clients.iter().enumerate() {
        for server_side in [true, false] {
            let mine = of(&events, client, server_side);
            let refs: Vec<&Value> = mine.iter().collect();
            assert_eq!(rows(&refs), expected(), "session {n}, server side: {server_side}");
            assert!(mine.iter().all(|e| e["http"]["version"] == "2"), "{mine:?}");
            let sessions: std::collections::HashSet<&str> =
                mine.iter().map(|e| e["session"].as_str().unwrap()).collect();
            assert_eq!(sessions.len(), 1, "{sessions:?}");
            let big = mine.last().unwrap();
            assert!(big["bytes"].as_u64().unwrap() > 1_000_000, "{big}");
            // Responses carry their status; from the server's answer to
            // initialize on, every message its session id.
            for e in &mine {
                if e["direction"] == "server_to_client" {
                    assert_eq!(e["http"]["status"], 200, "{e}");
                }
            }
            let hashes: std::collections::HashSet<&str> = mine[1..]
                .iter()
                .filter_map(|e| e["http"]["session_id_hash"].as_str())
                .collect();
            assert_eq!(hashes.len(), 1, "session {n}, server side {server_side}: {mine:?}");
        }
    }
    // The server's second connection was seen from its first byte: every
    // head is whole, responses take their request's method and path.
    let second = of(&events, clients[1], true);
    assert!(
        second
            .iter()
            .all(|e| e["http"]["method"] == "POST" && e["http"]["path"] == "/mcp"),
        "{second:?}"
    );
    assert_eq!(
        second
            .iter()
            .filter(|e| e["http"]["session_id_hash"].is_string())
            .count(),
        8,
        "all but the initialize request carry the session id: {second:?}"
    );
    let alerts = m.wait_alerts(SETTLE, |a| a.iter().any(|a| a["rule"] == "credential.exposure"));
    let exposure = alerts.iter().find(|a| a["rule"] == "credential.exposure").unwrap();
    assert_eq!(
        exposure["evidence"]["findings"][0]["rule"], "github-pat-classic",
        "{exposure}"
    );
    let everything = format!("{:?}{:?}{}", m.events(), m.alerts(), m.stderr());
    assert!(!everything.contains(&secret[4..20]), "the token is exported nowhere");
    assert_eq!(m.metric("mcp_monitor_frame_errors_total", &[("reason", "h2_gap")]), 0.0);
    drop(server);
}

/// Only the client's end on this host, as with a remote server: the
/// server's process is excluded (`--exclude-pid`), so its end is never
/// reported. The client's view alone (HTTP/2 over TLS, at its libssl) gives
/// every message of the session, and detection runs on it: the credential
/// the server returns raises the alert, exported nowhere.
#[test]
fn https_h2_client_end_alone_raises_the_alerts() {
    require_root();
    let cert = self_signed();
    let port = free_port();
    let server = fastmcp_h2_server(port, Some(&cert));
    let server_pid = server.0.id();
    let m = Monitor::start(&["--exclude-pid", &server_pid.to_string()]);
    // A fake GitHub token (checksum valid), returned by the echo tool.
    let secret = "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";
    let client = session_h2(port, 1_000_000, Some(&cert), &format!("token: {secret}"));
    let events = m.wait_events(SETTLE, |ev| view(ev, "https", server_pid, client, false).len() >= 9);
    let mine = view(&events, "https", server_pid, client, false);
    let refs: Vec<&Value> = mine.iter().collect();
    assert_eq!(rows(&refs), expected());
    assert!(mine.iter().all(|e| e["http"]["version"] == "2"), "{mine:?}");
    let alerts = m.wait_alerts(SETTLE, |a| a.iter().any(|a| a["rule"] == "credential.exposure"));
    let exposure = alerts.iter().find(|a| a["rule"] == "credential.exposure").unwrap();
    assert_eq!(
        exposure["evidence"]["findings"][0]["rule"], "github-pat-classic",
        "{exposure}"
    );
    // Nothing of the server's end: no event names it, and its chunks were
    // dropped as excluded.
    let events = m.events();
    assert!(
        events.iter().all(|e| e["server"]["pid"] != server_pid),
        "the excluded server's end was reported"
    );
    assert!(m.metric("mcp_monitor_excluded_chunks_total", &[]) >= 1.0);
    let everything = format!("{:?}{:?}{}", events, m.alerts(), m.stderr());
    assert!(!everything.contains(&secret[4..20]), "the token is exported nowhere");
    drop(server);
}

/// h2c: HTTP/2 in clear with prior knowledge, seen on the TCP sockets of
/// both ends (the same frames and header tables as over TLS).
#[test]
fn h2c_seen_from_both_ends() {
    require_root();
    let m = Monitor::start(&[]);
    let port = free_port();
    let server = fastmcp_h2_server(port, None);
    let server_pid = server.0.id();
    let client = session_h2(port, 500_000, None, "over h2c");
    let of = |ev: &[Value], server_side: bool| {
        let mut v = view(ev, "http", server_pid, client, server_side);
        v.retain(|e| e["client"]["pid"] == client);
        v
    };
    let events = m.wait_events(SETTLE, |ev| of(ev, true).len() >= 9 && of(ev, false).len() >= 9);
    for server_side in [true, false] {
        let mine = of(&events, server_side);
        let refs: Vec<&Value> = mine.iter().collect();
        assert_eq!(rows(&refs), expected(), "server side: {server_side}");
        assert!(mine.iter().all(|e| e["http"]["version"] == "2"), "{mine:?}");
        assert!(mine.last().unwrap()["bytes"].as_u64().unwrap() > 500_000);
    }
    drop(server);
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
    let (client_side, _) = ts_https_seen_from_both_ends(&m, std::ffi::OsStr::new("node"), 3_000_000);
    // The client's chunks came through node's own SSL_read/SSL_write.
    assert!(
        client_side[0]["client"]["exe"]
            .as_str()
            .is_some_and(|e| e.contains("node")),
        "{}",
        client_side[0]
    );
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

/// A probe holds its file: a library that was deleted and that no process
/// maps any more (an upgraded libssl, a build's test binary) gets its
/// probes taken off by the next scan, or its blocks would stay on disk as
/// long as the agent runs; a new file at the same path is probed again.
#[test]
fn probes_of_a_deleted_library_no_process_uses_are_taken_off() {
    require_root();
    let system = std::path::Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
    assert!(system.exists(), "Debian's libssl3 is installed by cargo xtask setup");
    let dir = TempDir::new("libssl");
    let lib = dir.path().join("libssl.so.3");
    let m = Monitor::start(&[]);
    let probed = |m: &Monitor, n: usize| {
        let line = format!("TLS: probing {} (mapped by pid", lib.display());
        m.stderr().lines().filter(|l| l.contains(&line)).count() >= n
    };
    let removed = |m: &Monitor| {
        let line = format!("TLS: {} was deleted and no process uses it any more", lib.display());
        m.stderr().contains(&line) && m.metric("mcp_monitor_tls_probes_removed_total", &[]) >= 1.0
    };
    let run = || {
        std::process::Command::new("sleep")
            .arg("4")
            .env("LD_PRELOAD", &lib)
            .spawn()
            .unwrap()
    };
    std::fs::copy(system, &lib).unwrap();
    let mut user = run();
    assert!(wait_until(scaled(SETTLE), || probed(&m, 1)), "{}", m.stderr());
    // Deleted while mapped: kept for as long as the process runs.
    std::fs::remove_file(&lib).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(!removed(&m), "taken off while still mapped: {}", m.stderr());
    // Read after a metrics tick has counted the probe.
    let targets = m.metric("mcp_monitor_tls_probe_targets", &[]);
    user.wait().unwrap();
    assert!(wait_until(scaled(SETTLE), || removed(&m)), "{}", m.stderr());
    assert!(
        wait_until(scaled(SETTLE), || m.metric("mcp_monitor_tls_probe_targets", &[])
            == targets - 1.0),
        "the gauge counts the files probed now: {targets} before, {} now; {}",
        m.metric("mcp_monitor_tls_probe_targets", &[]),
        m.stderr()
    );
    // A new file at the same path (maybe the same inode number) is a new
    // file: probed again.
    std::fs::copy(system, &lib).unwrap();
    let mut user = run();
    assert!(wait_until(scaled(SETTLE), || probed(&m, 2)), "{}", m.stderr());
    user.kill().unwrap();
    user.wait().unwrap();
}
