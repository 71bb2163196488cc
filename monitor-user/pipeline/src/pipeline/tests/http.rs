//! HTTP: Streamable HTTP from both ends, legacy HTTP+SSE, resumed streams,
//! the stateless revision, sessions sharing a keep-alive connection.

use super::*;

#[test]
fn streamable_http_server_side() {
    let mut s = Sim::new();
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1.0"}}}"#;
    // The server (SERVER) reads requests and writes responses on fd 7.
    tcp(&mut s, SERVER, 7, Direction::Ingress, &post(init, None)[..40]);
    tcp(&mut s, SERVER, 7, Direction::Ingress, &post(init, None)[40..]);
    let result = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"srv","version":"2.0"}}}"#;
    let sse = format!("event: message\r\nid: 1\r\ndata: {result}\r\n\r\n");
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nMcp-Session-Id: secret-sid-1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{sse}\r\n0\r\n\r\n",
        sse.len()
    );
    tcp(&mut s, SERVER, 7, Direction::Egress, resp.as_bytes());
    tcp(
        &mut s,
        SERVER,
        7,
        Direction::Ingress,
        &post(
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            Some("secret-sid-1"),
        ),
    );
    tcp(
        &mut s,
        SERVER,
        7,
        Direction::Egress,
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
    );
    // A second connection (fd 8) of the same MCP session.
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"m":"x"}}}"#;
    tcp(&mut s, SERVER, 8, Direction::Ingress, &post(call, Some("secret-sid-1")));
    let body = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#;
    tcp(&mut s, SERVER, 8, Direction::Egress, &json_response(body));
    assert_eq!(
        s.rows(),
        vec![
            row(C2S, Kind::Request, Some("initialize"), Some("0"), None),
            row(S2C, Kind::Response, Some("initialize"), Some("0"), None),
            row(C2S, Kind::Notification, Some("notifications/initialized"), None, None),
            row(C2S, Kind::Request, Some("tools/call"), Some("1"), Some("echo")),
            row(S2C, Kind::Response, Some("tools/call"), Some("1"), Some("echo")),
        ]
    );
    let sessions: std::collections::HashSet<&str> = s.out.events.iter().map(|e| &*e.session).collect();
    assert_eq!(
        sessions.len(),
        1,
        "one MCP session across two connections: {sessions:?}"
    );
    let last = serde_json::to_value(s.out.events.last().unwrap()).unwrap();
    assert_eq!(last["transport"], "http");
    assert_eq!(last["http"]["method"], "POST");
    assert_eq!(last["http"]["path"], "/mcp");
    assert_eq!(last["http"]["status"], 200);
    assert_eq!(last["server"]["pid"], SERVER.pid);
    assert_eq!(last["server"]["name"], "srv");
    assert_eq!(last["client"]["name"], "agent");
    assert!(last["latency_ms"].as_f64().is_some());
    let second = serde_json::to_value(&s.out.events[1]).unwrap();
    assert_eq!(second["http"]["sse_event_id"], "1");
    let hash = second["http"]["session_id_hash"].as_str().unwrap();
    assert!(hash.starts_with("sha256:"));
    let all = serde_json::to_string(&s.out.events).unwrap();
    assert!(!all.contains("secret-sid-1"), "the session id never leaves in clear");
    assert_eq!(s.metric("mcp_monitor_messages_total", &[("transport", "http")]), 5.0);
}

#[test]
fn http_client_side_and_non_mcp_connections() {
    let mut s = Sim::new();
    // The client (CLIENT) writes requests to a remote server on fd 9.
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1.0"}}}"#;
    tcp(&mut s, CLIENT, 9, Direction::Egress, &post(init, None));
    let body = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"remote","version":"1"}}}"#;
    tcp(&mut s, CLIENT, 9, Direction::Ingress, &json_response(body));
    assert_eq!(s.out.events.len(), 2, "{:?}", s.rows());
    let e = serde_json::to_value(&s.out.events[1]).unwrap();
    assert_eq!(e["direction"], "server_to_client");
    assert_eq!(e["client"]["pid"], CLIENT.pid);
    assert_eq!(e["server"]["pid"], Value::Null);
    assert_eq!(e["server"]["name"], "remote");
    assert!(e["session"].as_str().unwrap().starts_with("http:remote"), "{e}");
    // Ordinary web pages: no events, and past the prelude budget the
    // connection leaves capture.
    let max = PipelineConfig::default().max_prelude_frames;
    for i in 0..=max {
        tcp(
            &mut s,
            CLIENT,
            10,
            Direction::Egress,
            b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n",
        );
        let ignored = s
            .out
            .controls
            .iter()
            .any(|c| matches!(c, Control::IgnoreStream(k) if k.fd == 10));
        assert!(!ignored, "judged after {i} pages, before the budget of {max}");
        tcp(
            &mut s,
            CLIENT,
            10,
            Direction::Ingress,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>",
        );
    }
    // And bytes that are not HTTP at all.
    tcp(&mut s, CLIENT, 11, Direction::Ingress, &[0x16, 0x03, 0x01, 0x02, 0x00]);
    tcp(&mut s, CLIENT, 11, Direction::Ingress, &vec![0u8; 70 * 1024]);
    assert_eq!(s.out.events.len(), 2);
    let ignored: Vec<i32> = s
        .out
        .controls
        .iter()
        .filter_map(|c| match c {
            Control::IgnoreStream(k) => Some(k.fd),
            _ => None,
        })
        .collect();
    assert!(ignored.contains(&10) && ignored.contains(&11), "{ignored:?}");
    assert!(!ignored.contains(&9));
}

#[test]
fn legacy_sse_posts_join_the_stream_that_named_their_endpoint() {
    for server_side in [true, false] {
        let mut s = Sim::new();
        let (p, stream_dir, post_dir) = if server_side {
            (SERVER, Direction::Egress, Direction::Ingress)
        } else {
            (CLIENT, Direction::Ingress, Direction::Egress)
        };
        // The GET stream (fd 5): its request was not captured (a plain GET
        // does not look like MCP); the response head and the endpoint event
        // come first.
        tcp(
            &mut s,
            p,
            5,
            stream_dir,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        let ev = |e: &str| {
            let sse = format!("event: message\ndata: {e}\n\n");
            format!("{:x}\r\n{sse}\r\n", sse.len())
        };
        let endpoint = "event: endpoint\ndata: /message?sessionId=legacy-secret-7\n\n";
        tcp(
            &mut s,
            p,
            5,
            stream_dir,
            format!("{:x}\r\n{endpoint}\r\n", endpoint.len()).as_bytes(),
        );
        // POSTs on two other connections, each answered 202 "Accepted".
        let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"agent","version":"1.0"}}}"#;
        tcp(
            &mut s,
            p,
            6,
            post_dir,
            &legacy_post("/message?sessionId=legacy-secret-7", init),
        );
        // (node's SDK sends no content type; the Python one text/plain)
        let accepted: &[u8] = if server_side {
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 8\r\n\r\nAccepted"
        } else {
            b"HTTP/1.1 202 Accepted\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 8\r\n\r\nAccepted"
        };
        let back = if server_side {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        tcp(&mut s, p, 6, back, accepted);
        let result = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2024-11-05","capabilities":{"tools":{}},"serverInfo":{"name":"legacy","version":"1"}}}"#;
        tcp(&mut s, p, 5, stream_dir, ev(result).as_bytes());
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
        tcp(
            &mut s,
            p,
            7,
            post_dir,
            &legacy_post("/message?sessionId=legacy-secret-7", call),
        );
        tcp(&mut s, p, 7, back, accepted);
        tcp(
            &mut s,
            p,
            5,
            stream_dir,
            ev(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#).as_bytes(),
        );
        // A POST to another session's endpoint is not joined to this one.
        let other = r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#;
        tcp(
            &mut s,
            p,
            8,
            post_dir,
            &legacy_post("/message?sessionId=another", other),
        );
        assert_eq!(
            s.rows(),
            vec![
                row(C2S, Kind::Request, Some("initialize"), Some("0"), None),
                row(S2C, Kind::Response, Some("initialize"), Some("0"), None),
                row(C2S, Kind::Request, Some("tools/call"), Some("1"), Some("echo")),
                row(S2C, Kind::Response, Some("tools/call"), Some("1"), Some("echo")),
                row(C2S, Kind::Request, Some("tools/list"), Some("5"), None),
            ],
            "server side: {server_side}"
        );
        let events: Vec<Value> = s.out.events.iter().map(|e| serde_json::to_value(e).unwrap()).collect();
        let sessions: std::collections::HashSet<&str> =
            events[..4].iter().map(|e| e["session"].as_str().unwrap()).collect();
        assert_eq!(sessions.len(), 1, "{sessions:?}");
        assert_ne!(events[4]["session"], events[0]["session"]);
        for e in &events {
            assert_eq!(e["transport"], "sse", "{e}");
        }
        // Both halves carry the same hashed id; the id itself never leaves,
        // not even in the exported request target.
        let hash = events[0]["http"]["session_id_hash"].as_str().unwrap();
        assert!(hash.starts_with("sha256:"));
        assert_eq!(events[1]["http"]["session_id_hash"], hash);
        assert_eq!(events[0]["http"]["path"], "/message?sessionId=[REDACTED]");
        assert_eq!(events[1]["server"]["name"], "legacy");
        let all = serde_json::to_string(&events).unwrap();
        assert!(!all.contains("legacy-secret-7"), "{all}");
        // "Accepted" is no frame error.
        assert_eq!(
            s.metric("mcp_monitor_frame_errors_total", &[("reason", "not_json")]),
            0.0
        );
        assert_eq!(s.metric("mcp_monitor_messages_total", &[("transport", "sse")]), 5.0);
    }
}

#[test]
fn a_resumed_stream_does_not_report_replayed_events_again() {
    let mut s = Sim::new();
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1.0"}}}"#;
    tcp(&mut s, SERVER, 7, Direction::Ingress, &post(init, None));
    let result = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"srv","version":"2.0"}}}"#;
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: sid-r\r\nContent-Length: {}\r\n\r\n{result}",
        result.len()
    );
    tcp(&mut s, SERVER, 7, Direction::Egress, resp.as_bytes());
    // A long call answered on an SSE stream: progress e1, then the
    // connection breaks before the result.
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow","arguments":{}}}"#;
    tcp(&mut s, SERVER, 8, Direction::Ingress, &post(call, Some("sid-r")));
    let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#;
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
    tcp(
        &mut s,
        SERVER,
        8,
        Direction::Egress,
        format!("{head}id: e1\ndata: {progress}\n\n").as_bytes(),
    );
    // The client resumes with Last-Event-ID: the server sends e1 again
    // (it does not know what arrived), then the result.
    tcp(
        &mut s,
        SERVER,
        9,
        Direction::Ingress,
        b"GET /mcp HTTP/1.1\r\nAccept: text/event-stream\r\nMcp-Session-Id: sid-r\r\nLast-Event-ID: e0\r\n\r\n",
    );
    let done = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#;
    tcp(
        &mut s,
        SERVER,
        9,
        Direction::Egress,
        format!("{head}id: e1\ndata: {progress}\n\nid: e2\ndata: {done}\n\n").as_bytes(),
    );
    // Same id, other data: a different event, reported.
    let other = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":2}}"#;
    tcp(
        &mut s,
        SERVER,
        9,
        Direction::Egress,
        format!("id: e1\ndata: {other}\n\n").as_bytes(),
    );
    assert_eq!(
        s.rows(),
        vec![
            row(C2S, Kind::Request, Some("initialize"), Some("0"), None),
            row(S2C, Kind::Response, Some("initialize"), Some("0"), None),
            row(C2S, Kind::Request, Some("tools/call"), Some("1"), Some("slow")),
            row(S2C, Kind::Notification, Some("notifications/progress"), None, None),
            row(S2C, Kind::Response, Some("tools/call"), Some("1"), Some("slow")),
            row(S2C, Kind::Notification, Some("notifications/progress"), None, None),
        ]
    );
    assert_eq!(s.metric("mcp_monitor_sse_replayed_events_total", &[]), 1.0);
    let sessions: std::collections::HashSet<&str> = s.out.events.iter().map(|e| &*e.session).collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
}

#[test]
fn stateless_requests_share_a_session_and_lying_headers_are_flagged() {
    let mut s = Sim::with_detector();
    let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"agent","version":"3"}}"#;
    let discover = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{{{meta}}}}}"#);
    let honest = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"read_file","arguments":{{}},{meta}}}}}"#
    );
    let lying = format!(
        r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"delete_repo","arguments":{{}},{meta}}}}}"#
    );
    let ok = |id: u32| {
        let b = if id == 1 {
            // The Python SDK names the server in the result's _meta.
            r#"{"jsonrpc":"2.0","id":1,"result":{"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"stateless-srv","version":"1"}},"supportedVersions":["2026-07-28"],"capabilities":{},"resultType":"complete"}}"#.to_owned()
        } else {
            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"resultType":"complete","content":[]}}}}"#)
        };
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )
    };
    // Each request on a new connection (client ports 50001..50003), seen
    // by the server only: the client is remote.
    let requests = [
        stateless_post(&discover, "server/discover", None),
        stateless_post(&honest, "tools/call", Some("read_file")),
        // The header shows a harmless tool; the body calls another.
        stateless_post(&lying, "tools/call", Some("=?base64?cmVhZF9maWxl?=")),
    ];
    for (i, req) in requests.iter().enumerate() {
        let fd = 20 + i as i32;
        for (dir, data) in [
            (Direction::Ingress, req.clone()),
            (Direction::Egress, ok(i as u32 + 1).into_bytes()),
        ] {
            s.ts += 1_000;
            let mut c = chunk(
                End {
                    proc: SERVER,
                    fd,
                    kind: FdKind::Tcp4,
                    channel: 900 + fd as u64,
                },
                dir,
                &data,
                s.ts,
                0,
            );
            c.data = data.to_vec();
            c.orig_len = data.len() as u64;
            c.conn = loopback(8000, 50_001 + i as u16);
            s.feed(Observation::Chunk(c));
        }
    }
    assert_eq!(
        s.rows(),
        vec![
            row(C2S, Kind::Request, Some("server/discover"), Some("1"), None),
            row(S2C, Kind::Response, Some("server/discover"), Some("1"), None),
            row(C2S, Kind::Request, Some("tools/call"), Some("2"), Some("read_file")),
            row(S2C, Kind::Response, Some("tools/call"), Some("2"), Some("read_file")),
            row(C2S, Kind::Request, Some("tools/call"), Some("3"), Some("delete_repo")),
            row(S2C, Kind::Response, Some("tools/call"), Some("3"), Some("delete_repo")),
        ]
    );
    let sessions: std::collections::HashSet<&str> = s.out.events.iter().map(|e| &*e.session).collect();
    assert_eq!(sessions.len(), 1, "one session across three connections: {sessions:?}");
    let events: Vec<Value> = s.out.events.iter().map(|e| serde_json::to_value(e).unwrap()).collect();
    assert_eq!(events[4]["http"]["header_mismatch"], serde_json::json!(["mcp-name"]));
    assert!(events[2]["http"].get("header_mismatch").is_none(), "{}", events[2]);
    assert_eq!(events[2]["client"]["name"], "agent");
    assert_eq!(events[2]["server"]["name"], "stateless-srv");
    assert_eq!(
        s.metric("mcp_monitor_http_header_mismatch_total", &[("header", "mcp-name")]),
        1.0
    );
    assert_eq!(
        s.metric("mcp_monitor_http_header_mismatch_total", &[("header", "mcp-method")]),
        0.0
    );
    let rules: Vec<&str> = s.out.alerts.iter().map(|a| a.rule.as_str()).collect();
    assert_eq!(rules, vec!["protocol.header_mismatch"], "{rules:?}");
    assert_eq!(s.out.alerts[0].category.as_str(), "protocol");
}

/// mcp-remote on one keep-alive connection: a transport probe (an
/// `initialize` as `mcp-remote-fallback-test`, answered with session id A),
/// then the real session (another `initialize`, session id B), every POST
/// with an `Mcp-Method` header. Each `initialize` opens its own session, in
/// the server's view and in the client's: an `Mcp-Method` header does not
/// make an `initialize` one of the stateless revision.
#[test]
fn two_sessions_on_one_keep_alive_connection_stay_apart() {
    let mut s = Sim::new();
    let init = |id: u32, name: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"{name}","version":"1"}}}}}}"#
        )
    };
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let post = |body: &str, method: &str, sid: Option<&str>| {
        let sid = sid.map(|s| format!("Mcp-Session-Id: {s}\r\n")).unwrap_or_default();
        format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\nMcp-Method: {method}\r\n{sid}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let answer = |body: &str, sid: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: {sid}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let accepted = "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n".to_owned();
    let result = |id: u32| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"protocolVersion":"2025-06-18","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"srv","version":"1"}}}}}}"#
        )
    };
    let exchanges = [
        (
            post(&init(0, "mcp-remote-fallback-test"), "initialize", None),
            answer(&result(0), "sid-a"),
        ),
        (
            post(initialized, "notifications/initialized", Some("sid-a")),
            accepted.clone(),
        ),
        (
            post(&init(0, "agent (via mcp-remote)"), "initialize", None),
            answer(&result(0), "sid-b"),
        ),
        (post(initialized, "notifications/initialized", Some("sid-b")), accepted),
        (
            post(list, "tools/list", Some("sid-b")),
            answer(r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#, "sid-b"),
        ),
    ];
    // Both ends on this host: the client on fd 5 (127.0.0.1:40000), the
    // server on fd 7 (127.0.0.1:8000).
    for (request, response) in &exchanges {
        exchange_on_loopback(&mut s, 5, 7, 40000, request.as_bytes(), response.as_bytes());
    }
    let ev = s.events_json();
    for server_side in [true, false] {
        let mine = view_of(&ev, server_side);
        assert_eq!(mine.len(), 8, "server side {server_side}: {mine:?}");
        let probe: Vec<&str> = mine[..3].iter().map(|e| e["session"].as_str().unwrap()).collect();
        let real: Vec<&str> = mine[3..].iter().map(|e| e["session"].as_str().unwrap()).collect();
        assert!(probe.iter().all(|k| *k == probe[0]), "{probe:?}");
        assert!(real.iter().all(|k| *k == real[0]), "{real:?}");
        assert_ne!(
            probe[0], real[0],
            "server side {server_side}: one session for two initializes"
        );
        assert!(mine[..3]
            .iter()
            .all(|e| e["client"]["name"] == "mcp-remote-fallback-test"));
        assert!(mine[3..]
            .iter()
            .all(|e| e["client"]["name"] == "agent (via mcp-remote)"));
        assert!(mine.iter().all(|e| e["client"]["pid"] == CLIENT.pid), "{mine:?}");
    }
}

/// A server that issues no session id (FastMCP with `stateless_http`), to
/// a client that sends `Mcp-Method` on every request: the requests after
/// `initialize`, on this connection or a new one, belong to the session
/// `initialize` opened.
#[test]
fn requests_without_a_session_id_join_the_session_their_initialize_opened() {
    let mut s = Sim::new();
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1"}}}"#;
    let result = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"srv","version":"1"}}}"#;
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let listed = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#;
    let post = |body: &str, method: &str| {
        format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\nMcp-Method: {method}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // initialize on the client's port 40000, tools/list on a new
    // connection from port 40001.
    for (port, request, response) in [
        (40000, post(init, "initialize"), json_response(result)),
        (40001, post(list, "tools/list"), json_response(listed)),
    ] {
        let fd = port as i32 - 39_990;
        exchange_on_loopback(&mut s, fd, fd + 20, port, request.as_bytes(), &response);
    }
    let ev = s.events_json();
    for server_side in [true, false] {
        let mine = view_of(&ev, server_side);
        assert_eq!(mine.len(), 4, "server side {server_side}: {mine:?}");
        let sessions: std::collections::HashSet<&str> = mine.iter().map(|e| e["session"].as_str().unwrap()).collect();
        assert_eq!(sessions.len(), 1, "server side {server_side}: {mine:?}");
        // What initialize announced names the later messages too.
        assert_eq!(mine[2]["client"]["name"], "agent", "server side {server_side}");
    }
}
