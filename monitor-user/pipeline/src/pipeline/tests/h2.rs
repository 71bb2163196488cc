//! MCP over HTTP/2 (h2 over TLS, seen at the TLS library): frames, a
//! stateful header table per direction, responses paired by stream, and
//! the same events and alerts as HTTP/1.1.

use super::*;
use crate::http::h2::{frames::*, PREFACE};

const HEADERS: u8 = 0x1;
const DATA: u8 = 0x0;
const SETTINGS: u8 = 0x4;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// A request on `stream`: HEADERS (POST /mcp) and its body in one DATA frame.
fn h2_post(table: &mut Vec<(String, String)>, stream: u32, body: &str, session: Option<&str>) -> Vec<u8> {
    let mut out = frame(HEADERS, END_HEADERS, stream, &block(table, &mcp_post(session), true));
    out.extend(frame(DATA, END_STREAM, stream, body.as_bytes()));
    out
}

/// The head of a response on `stream`.
fn h2_head(table: &mut Vec<(String, String)>, stream: u32, content_type: &str, session: &str) -> Vec<u8> {
    let fields = [
        (":status", "200"),
        ("content-type", content_type),
        ("mcp-session-id", session),
    ];
    frame(HEADERS, END_HEADERS, stream, &block(table, &fields, true))
}

#[test]
fn h2_over_tls_seen_from_both_ends_with_interleaved_streams() {
    let mut s = Sim::with_detector();
    let (client_end, server_end) = (loopback(40100, 8443), loopback(8443, 40100));
    let client = TlsEnd::new(CLIENT, 0xc7, 5, client_end);
    let server = TlsEnd::new(SERVER, 0x57, 7, server_end);
    let (mut req_table, mut resp_table) = (Vec::new(), Vec::new());
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1.0"}}}"#;
    let result = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"srv","version":"2.0"}}}"#;

    // The client's preface and SETTINGS, then the initialize request.
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 0]));
    let first = h2_post(&mut req_table, 1, init, None);
    client.writes(&mut s, &hello);
    tls(&mut s, client, Direction::Egress, &first, 0);
    // The server reads it all at once.
    let mut read = hello.clone();
    read.extend_from_slice(&first);
    server.reads(&mut s, &read);
    let mut answer = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
    answer.extend(frame(SETTINGS, 1, 0, &[]));
    answer.extend(h2_head(&mut resp_table, 1, "application/json", "sid-h2"));
    answer.extend(frame(DATA, END_STREAM, 1, result.as_bytes()));
    server.writes(&mut s, &answer);
    tls(&mut s, client, Direction::Ingress, &answer, chunk_flags::NEW_STREAM);

    // Two calls on streams 3 and 5; the answer to 5 comes first, and the
    // answer to 3 is an event stream holding a credential.
    let read_call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/.env"}}}"#;
    let echo_call =
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}"#;
    let mut calls = h2_post(&mut req_table, 3, read_call, Some("sid-h2"));
    calls.extend(h2_post(&mut req_table, 5, echo_call, Some("sid-h2")));
    tls(&mut s, client, Direction::Egress, &calls, 0);
    tls(&mut s, server, Direction::Ingress, &calls, 0);
    let secret_result = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"AWS_ACCESS_KEY_ID=AKIAZ7VQ3XH2L5MNB4PD\nAWS_SECRET_ACCESS_KEY=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\n"}]}}"#;
    let echo_result = r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"hi"}]}}"#;
    let mut answers = h2_head(&mut resp_table, 3, "text/event-stream", "sid-h2");
    answers.extend(h2_head(&mut resp_table, 5, "application/json", "sid-h2"));
    answers.extend(frame(DATA, END_STREAM, 5, echo_result.as_bytes()));
    answers.extend(frame(
        DATA,
        0,
        3,
        format!("event: message\ndata: {secret_result}\n\n").as_bytes(),
    ));
    answers.extend(frame(DATA, END_STREAM, 3, b""));
    tls(&mut s, server, Direction::Egress, &answers, 0);
    tls(&mut s, client, Direction::Ingress, &answers, 0);

    let ev = s.events_json();
    assert_eq!(ev.len(), 12, "{:?}", s.rows());
    for side in [true, false] {
        let view = view_of(&ev, side);
        assert_eq!(view.len(), 6, "{view:?}");
        let methods: Vec<&str> = view.iter().map(|e| e["method"].as_str().unwrap_or("")).collect();
        assert_eq!(
            methods,
            [
                "initialize",
                "initialize",
                "tools/call",
                "tools/call",
                "tools/call",
                "tools/call"
            ],
            "responses are paired with their requests: {view:?}"
        );
        for e in &view {
            assert_eq!(e["transport"], "https", "{e}");
            assert_eq!(e["http"]["version"], "2", "{e}");
            assert_eq!(
                e["http"]["method"], "POST",
                "responses take their request's method: {e}"
            );
            assert_eq!(e["http"]["path"], "/mcp", "{e}");
            assert_eq!(e["client"]["pid"], CLIENT.pid, "{e}");
        }
        // After initialize, every message carries the session's id.
        let hashes: Vec<&Value> = view[1..].iter().map(|e| &e["http"]["session_id_hash"]).collect();
        assert!(hashes.iter().all(|h| h.is_string() && *h == hashes[0]), "{hashes:?}");
        // The SSE answer on stream 3 is the read_file result; it came last.
        assert_eq!(view[5]["id"], 1, "{view:?}");
        assert_eq!(view[5]["tool"], "read_file", "{}", view[5]);
        assert_eq!(view[4]["tool"], "echo", "{}", view[4]);
    }
    let rules: Vec<&str> = s.out.alerts.iter().map(|a| a.rule.as_str()).collect();
    assert!(rules.contains(&"credential.exposure"), "{rules:?}");
    let all = format!("{ev:?}{:?}", s.out.alerts);
    assert!(
        !all.contains("q8Hk2vN5xR7tL1wZ4cY9pB3mJ6sD0fG8aE2uK5iO"),
        "the secret is never exported"
    );
    assert_eq!(s.metric("mcp_monitor_frame_errors_total", &[]), 0.0);
}

/// Capture that joins an HTTP/2 connection in progress (the agent started
/// after the client connected) still decodes the JSON-RPC bodies.
#[test]
fn h2_joined_in_progress_still_yields_bodies() {
    let mut s = Sim::new();
    let server = TlsEnd::new(SERVER, 0x58, 7, loopback(8443, 40101));
    let mut table = Vec::new();
    // Earlier requests filled the client's table; this one refers to it.
    let _ = h2_post(&mut table, 1, "{}", Some("sid-j"));
    let call =
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{"message":"late"}}}"#;
    let later = h2_post(&mut table, 3, call, Some("sid-j"));
    tls(
        &mut s,
        server,
        Direction::Ingress,
        &later,
        chunk_flags::NEW_STREAM | chunk_flags::RESUMED,
    );
    let ev = s.events_json();
    assert_eq!(ev.len(), 1, "{:?}", s.rows());
    assert_eq!(ev[0]["method"], "tools/call");
    assert_eq!(ev[0]["http"]["version"], "2");
}

/// A server discovered on a request in the middle of its connection: its
/// reads and writes start at frame headers, the header fields that refer
/// to entries from before are unknown (the event-stream content type
/// among them), and every request and response is still reported, the
/// responses with their status and session id once the server sends one.
#[test]
fn h2_server_joined_at_a_frame_reports_requests_and_event_stream_answers() {
    let mut s = Sim::new();
    let server = TlsEnd::new(SERVER, 0x59, 7, loopback(8443, 40102));
    let (mut req_table, mut resp_table) = (Vec::new(), Vec::new());
    // What went before capture: a request and an event-stream answer.
    let _ = h2_post(&mut req_table, 1, "{}", None);
    let _ = h2_head(&mut resp_table, 1, "text/event-stream", "sid-x");
    let mut rows = Vec::new();
    for (i, stream) in [3u32, 5].into_iter().enumerate() {
        let call = format!(
            r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"echo","arguments":{{}}}}}}"#
        );
        let answer = format!(r#"{{"jsonrpc":"2.0","id":{i},"result":{{"content":[]}}}}"#);
        let flags = if i == 0 { chunk_flags::NEW_STREAM } else { 0 };
        tls(
            &mut s,
            server,
            Direction::Ingress,
            &h2_post(&mut req_table, stream, &call, Some("sid-x")),
            flags,
        );
        let mut out = h2_head(&mut resp_table, stream, "text/event-stream", "sid-x");
        out.extend(frame(
            DATA,
            END_STREAM,
            stream,
            format!("event: message\r\ndata: {answer}\r\n\r\n").as_bytes(),
        ));
        tls(&mut s, server, Direction::Egress, &out, flags);
        rows.push(("client_to_server", i));
        rows.push(("server_to_client", i));
    }
    let ev = s.events_json();
    let got: Vec<(&str, u64)> = ev
        .iter()
        .map(|e| (e["direction"].as_str().unwrap(), e["id"].as_u64().unwrap()))
        .collect();
    let want: Vec<(&str, u64)> = rows.iter().map(|(d, i)| (*d, *i as u64)).collect();
    assert_eq!(got, want, "{:?}", s.rows());
    for e in &ev {
        assert_eq!(e["method"], "tools/call", "{e}");
        assert_eq!(e["http"]["version"], "2");
        if e["direction"] == "server_to_client" {
            assert_eq!(e["http"]["status"], 200, "{e}");
            assert_eq!(
                e["http"]["method"], "POST",
                "the response takes its request's method: {e}"
            );
        }
    }
}

/// A server first seen writing a response (its request was read before
/// capture began): the response travels on the request's odd stream, and
/// is still a response, not taken for a request.
#[test]
fn h2_server_first_seen_answering_keeps_its_roles() {
    let mut s = Sim::new();
    let server = TlsEnd::new(SERVER, 0x5a, 7, loopback(8443, 40103));
    let (mut req_table, mut resp_table) = (Vec::new(), Vec::new());
    let answer = r#"{"jsonrpc":"2.0","id":4,"result":{"content":[]}}"#;
    let mut out = h2_head(&mut resp_table, 3, "application/json", "sid-r");
    out.extend(frame(DATA, END_STREAM, 3, answer.as_bytes()));
    tls(&mut s, server, Direction::Egress, &out, chunk_flags::NEW_STREAM);
    let call = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
    tls(
        &mut s,
        server,
        Direction::Ingress,
        &h2_post(&mut req_table, 5, call, Some("sid-r")),
        chunk_flags::NEW_STREAM,
    );
    let ev = s.events_json();
    let got: Vec<(&str, &str)> = ev
        .iter()
        .map(|e| (e["direction"].as_str().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [("server_to_client", "response"), ("client_to_server", "request")],
        "{:?}",
        s.rows()
    );
    assert!(ev.iter().all(|e| e["server"]["pid"] == SERVER.pid), "{ev:?}");
}

/// Go's HTTP/2 framer reads a frame's 9-byte header and its payload apart,
/// and the kernel discovers a process on a payload of JSON: capture starts
/// with a bare body. Once the frames that follow show HTTP/2, that body is
/// the connection's first message (a request whose head was not seen), in
/// order before the answer to it.
#[test]
fn h2_joined_at_a_bare_body_keeps_that_body() {
    for server_settings_late in [false, true] {
        joined_at_a_bare_body(server_settings_late);
    }
}

fn joined_at_a_bare_body(server_settings_late: bool) {
    let mut s = Sim::with_detector();
    let server = TlsEnd::new(SERVER, 0x60, 7, loopback(8443, 40200));
    let (mut req_table, mut resp_table) = (Vec::new(), Vec::new());
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"go-agent","version":"1.0"}}}"#;
    let result = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"srv","version":"2.0"}}}"#;
    // The request's HEADERS and DATA header were read before discovery;
    // the payload arrives in two reads.
    let (a, b) = init.split_at(40);
    server.reads(&mut s, a.as_bytes());
    tls(&mut s, server, Direction::Ingress, b.as_bytes(), 0);
    // Go's server first gives the flow-control window back (a frame that
    // tells nothing of the side), then answers; or its own SETTINGS, the
    // start of its direction, go out only now.
    if server_settings_late {
        server.writes(&mut s, &frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 250]));
    } else {
        server.writes(&mut s, &frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 200]));
    }
    let mut answer = h2_head(&mut resp_table, 1, "application/json", "sid-go");
    answer.extend(frame(DATA, END_STREAM, 1, result.as_bytes()));
    tls(&mut s, server, Direction::Egress, &answer, 0);
    // The next request, read frame header by frame header.
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let next = h2_post(&mut req_table, 3, call, Some("sid-go"));
    let head_len = 9 + u32::from_be_bytes([0, next[0], next[1], next[2]]) as usize;
    for piece in [
        &next[..9],
        &next[9..head_len],
        &next[head_len..head_len + 9],
        &next[head_len + 9..],
    ] {
        tls(&mut s, server, Direction::Ingress, piece, 0);
    }
    let ev = s.events_json();
    let rows: Vec<(String, String, Value)> = ev
        .iter()
        .map(|e| {
            (
                e["direction"].as_str().unwrap_or("").to_owned(),
                e["method"].as_str().unwrap_or("").to_owned(),
                e["id"].clone(),
            )
        })
        .collect();
    let row = |d: &str, m: &str, id: i64| (d.to_owned(), m.to_owned(), Value::from(id));
    assert_eq!(
        rows,
        [
            row("client_to_server", "initialize", 1),
            row("server_to_client", "initialize", 1),
            row("client_to_server", "tools/list", 2),
        ],
        "settings late: {server_settings_late}: {ev:?}"
    );
    let sessions: std::collections::HashSet<&str> = ev.iter().map(|e| e["session"].as_str().unwrap()).collect();
    assert_eq!(sessions.len(), 1, "{ev:?}");
    assert!(ev.iter().all(|e| e["http"]["version"] == "2"), "{ev:?}");
    // The same bare body on a connection that turns out to be HTTP/1.x is
    // not taken up: its head was never seen.
    let mut s = Sim::new();
    let server = TlsEnd::new(SERVER, 0x61, 8, loopback(8443, 40201));
    server.reads(&mut s, init.as_bytes());
    let body = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let post = format!(
        "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls(&mut s, server, Direction::Ingress, post.as_bytes(), 0);
    let ev = s.events_json();
    let methods: Vec<&str> = ev.iter().map(|e| e["method"].as_str().unwrap_or("")).collect();
    assert_eq!(methods, ["tools/list"], "{ev:?}");
}

/// A just-discovered process's other thread can get its chunk into the ring
/// before the discovering one: a client's first captured bytes may be its
/// read of the server's SETTINGS acknowledgement, a server's its write of
/// one. Such frames tell nothing of the side: the connection must still be
/// taken for what its first request or answer says, or every event of the
/// session loses the process at the other end (seen once on a 6.1 guest
/// under TCG with the Go peers: the server's view named no client).
#[test]
fn a_lone_settings_ack_first_decides_no_side() {
    for server_ack_first in [false, true] {
        let mut s = Sim::with_detector();
        let (client_end, server_end) = (loopback(40300, 8443), loopback(8443, 40300));
        let client = TlsEnd::new(CLIENT, 0xd1, 5, client_end);
        let server = TlsEnd::new(SERVER, 0x71, 7, server_end);
        let (mut req_table, mut resp_table) = (Vec::new(), Vec::new());
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"go-agent","version":"1.0"}}}"#;
        let result = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"srv","version":"2.0"}}}"#;
        let ack = frame(SETTINGS, 1, 0, &[]);
        let window = frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 200]);
        if server_ack_first {
            server.writes(&mut s, &ack);
            tls(&mut s, server, Direction::Egress, &window, 0);
        } else {
            client.reads(&mut s, &ack);
        }
        // The first request, written after the preface and SETTINGS the
        // kernel let pass before discovery.
        let request = h2_post(&mut req_table, 1, init, None);
        if server_ack_first {
            client.writes(&mut s, &request);
            tls(&mut s, server, Direction::Ingress, &request, 0);
        } else {
            tls(&mut s, client, Direction::Egress, &request, 0);
            server.reads(&mut s, &request);
        }
        let mut answer = h2_head(&mut resp_table, 1, "application/json", "sid-ack");
        answer.extend(frame(DATA, END_STREAM, 1, result.as_bytes()));
        tls(&mut s, server, Direction::Egress, &answer, 0);
        tls(&mut s, client, Direction::Ingress, &answer, 0);

        let ev = s.events_json();
        for server_side in [true, false] {
            let view = view_of(&ev, server_side);
            let rows: Vec<(&str, &str)> = view
                .iter()
                .map(|e| {
                    (
                        e["direction"].as_str().unwrap_or(""),
                        e["method"].as_str().unwrap_or(""),
                    )
                })
                .collect();
            assert_eq!(
                rows,
                [("client_to_server", "initialize"), ("server_to_client", "initialize")],
                "server's ack first: {server_ack_first}, server side: {server_side}: {ev:?}"
            );
            for e in &view {
                assert_eq!(e["client"]["pid"], CLIENT.pid, "{e}");
            }
        }
    }
}
