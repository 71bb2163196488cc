//! Stdio sessions: pairing, batches and errors, capture gaps and ring drops,
//! joins mid-stream, oversized lines, socketpairs and socket servers.

use super::*;

#[test]
fn handshake_pairing_names_and_identity() {
    let mut s = Sim::new();
    s.handshake();
    s.c(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"m":"x"}}}));
    s.s(json!({"jsonrpc":"2.0","id":1,"result":{"content":[]}}));
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
    let last = s.out.events.last().unwrap();
    assert_eq!(last.latency_ms, Some(0.001));
    assert_eq!(last.server.process.as_ref().unwrap().exe, "/usr/bin/server");
    assert_eq!(last.client.process.as_ref().unwrap().exe, "/usr/bin/agent");
    assert_eq!(last.server.name.as_deref(), Some("srv"));
    assert_eq!(last.client.name.as_deref(), Some("agent"));
    assert_eq!(last.protocol_version.as_deref(), Some("2025-06-18"));
    assert_eq!(&*last.session, "stdio:200:2000");
    assert!(s.out.controls.is_empty());
    assert_eq!(s.metric("mcp_monitor_sessions_active", &[]), 1.0);
    assert_eq!(
        s.metric(
            "mcp_monitor_request_duration_seconds_count",
            &[("method", "tools/call")]
        ),
        1.0
    );
    assert_eq!(s.metric("mcp_monitor_unpaired_responses_total", &[]), 0.0);
}

#[test]
fn server_requests_are_paired_with_client_responses() {
    let mut s = Sim::new();
    s.handshake();
    s.s(json!({"jsonrpc":"2.0","id":7,"method":"sampling/createMessage","params":{"messages":[]}}));
    s.c(
        json!({"jsonrpc":"2.0","id":7,"result":{"model":"m","role":"assistant","content":{"type":"text","text":"ok"}}}),
    );
    let rows = s.rows();
    assert_eq!(
        rows[3],
        row(S2C, Kind::Request, Some("sampling/createMessage"), Some("7"), None)
    );
    assert_eq!(
        rows[4],
        row(C2S, Kind::Response, Some("sampling/createMessage"), Some("7"), None)
    );
}

#[test]
fn errors_batches_and_string_ids() {
    let mut s = Sim::new();
    s.handshake();
    s.c(json!([{"jsonrpc":"2.0","id":"a","method":"tools/list"},{"jsonrpc":"2.0","id":"b","method":"ping"}]));
    s.s(json!([{"jsonrpc":"2.0","id":"b","result":{}},{"jsonrpc":"2.0","id":"a","error":{"code":-32601,"message":"nope"}}]));
    let rows = s.rows();
    assert_eq!(
        rows[3],
        row(C2S, Kind::Request, Some("tools/list"), Some("\"a\""), None)
    );
    assert_eq!(rows[4], row(C2S, Kind::Request, Some("ping"), Some("\"b\""), None));
    assert_eq!(rows[5], row(S2C, Kind::Response, Some("ping"), Some("\"b\""), None));
    assert_eq!(rows[6], row(S2C, Kind::Error, Some("tools/list"), Some("\"a\""), None));
    assert_eq!(s.out.events[6].error_code, Some(-32601));
    // Each batch member counts its own bytes.
    assert_eq!(
        s.out.events[3].bytes,
        br#"{"id":"a","jsonrpc":"2.0","method":"tools/list"}"#.len() as u64
    );
}

#[test]
fn truncated_capture_skips_only_the_damaged_message() {
    let mut s = Sim::new();
    s.handshake();
    // A message whose middle the kernel could not capture (cap reached).
    s.notice(CLIENT, 5, s.c2s);
    let mut c = chunk(
        End {
            proc: SERVER,
            fd: 0,
            kind: FdKind::Pipe,
            channel: s.c2s,
        },
        Direction::Ingress,
        br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","par"#,
        s.ts,
        0,
    );
    c.orig_len = 100_000;
    s.feed(Observation::Chunk(c));
    s.client_sends(&[
        b"ams\":{}}\n",
        format!("{}\n", json!({"jsonrpc":"2.0","id":3,"method":"ping"})).as_bytes(),
    ]);
    let rows = s.rows();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[3], row(C2S, Kind::Request, Some("ping"), Some("3"), None));
    assert_eq!(
        s.metric("mcp_monitor_frame_errors_total", &[("reason", "capture_gap")]),
        1.0
    );
}

#[test]
fn a_ring_drop_never_splices_two_messages() {
    let mut s = Sim::new();
    s.handshake();
    let before = s.out.events.len();
    // A call read in three pieces; the middle one was lost (ring full), so
    // the kernel flags the third.
    let call = json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a".repeat(300)}}})
        .to_string()
        + "\n";
    let (head, rest) = call.split_at(100);
    let (_lost, tail) = rest.split_at(100);
    let list = json!({"jsonrpc":"2.0","id":6,"method":"tools/list"}).to_string() + "\n";
    s.server_reads(head.as_bytes(), chunk_flags::TRACKED);
    s.server_reads(
        [tail, list.as_str()].concat().as_bytes(),
        chunk_flags::TRACKED | chunk_flags::GAP_BEFORE,
    );
    // A hole right at a message boundary keeps the message after it.
    let again = json!({"jsonrpc":"2.0","id":7,"method":"tools/list"}).to_string() + "\n";
    s.server_reads(again.as_bytes(), chunk_flags::TRACKED | chunk_flags::GAP_BEFORE);
    assert_eq!(
        s.rows()[before..].to_vec(),
        vec![
            row(C2S, Kind::Request, Some("tools/list"), Some("6"), None),
            row(C2S, Kind::Request, Some("tools/list"), Some("7"), None),
        ],
        "the call whose middle was lost is not reported, spliced or not"
    );
    assert_eq!(
        s.metric("mcp_monitor_frame_errors_total", &[("reason", "capture_gap")]),
        1.0
    );
}

#[test]
fn a_session_joined_on_a_response_is_emitted_once_mcp_is_confirmed() {
    let mut s = Sim::new();
    // The monitor starts between a request and its response.
    s.s(json!({"jsonrpc":"2.0","id":4,"result":{"content":[]}}));
    assert!(s.out.events.is_empty(), "held until the session shows MCP");
    s.c(json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"add"}}));
    let rows = s.rows();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0], row(S2C, Kind::Response, None, Some("4"), None));
    assert_eq!(
        rows[1],
        row(C2S, Kind::Request, Some("tools/call"), Some("5"), Some("add"))
    );
    assert_eq!(s.metric("mcp_monitor_unpaired_responses_total", &[]), 1.0);
}

#[test]
fn a_stream_joined_mid_message_resyncs_on_the_next_line() {
    let mut s = Sim::new();
    s.notice(CLIENT, 5, s.c2s);
    // No NEW_STREAM flag: the kernel was already capturing before, or the
    // first chunk was lost. Starts in the middle of a message.
    let tail = format!(
        "ut\":1}}}}\n{}\n",
        json!({"jsonrpc":"2.0","id":9,"method":"tools/list"})
    );
    s.feed(Observation::Chunk(chunk(
        End {
            proc: SERVER,
            fd: 0,
            kind: FdKind::Pipe,
            channel: s.c2s,
        },
        Direction::Ingress,
        tail.as_bytes(),
        5,
        0,
    )));
    assert_eq!(
        s.rows(),
        vec![row(C2S, Kind::Request, Some("tools/list"), Some("9"), None)]
    );
    assert_eq!(
        s.metric("mcp_monitor_frame_errors_total", &[]),
        0.0,
        "the partial first line is expected"
    );
}

#[test]
fn oversized_lines_are_skipped_with_bounded_memory() {
    let mut s = Sim::with(PipelineConfig {
        max_frame: 1024,
        ..PipelineConfig::default()
    });
    s.handshake();
    let big = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"x\":\"{}\"}}}}\n",
        "a".repeat(100_000)
    );
    let pieces: Vec<&[u8]> = big.as_bytes().chunks(4096).collect();
    s.client_sends(&pieces);
    s.c(json!({"jsonrpc":"2.0","id":2,"method":"ping"}));
    let rows = s.rows();
    assert_eq!(
        rows.last().unwrap(),
        &row(C2S, Kind::Request, Some("ping"), Some("2"), None)
    );
    assert_eq!(rows.len(), 4);
    assert_eq!(
        s.metric("mcp_monitor_frame_errors_total", &[("reason", "oversized")]),
        1.0
    );
}

#[test]
fn stateless_revision_client_info_from_meta() {
    let mut s = Sim::new();
    s.c(
        json!({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{
        "io.modelcontextprotocol/protocolVersion":"2026-07-28",
        "io.modelcontextprotocol/clientCapabilities":{},
        "io.modelcontextprotocol/clientInfo":{"name":"stateless-agent","version":"3"}}}}),
    );
    s.s(json!({"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","serverInfo":{"name":"srv26","version":"1"}}}));
    let last = s.out.events.last().unwrap();
    assert_eq!(last.method.as_deref(), Some("server/discover"));
    assert_eq!(last.client.name.as_deref(), Some("stateless-agent"));
    assert_eq!(last.server.name.as_deref(), Some("srv26"));
    assert_eq!(last.protocol_version.as_deref(), Some("2026-07-28"));
}

#[test]
fn stdio_over_socketpairs_is_one_session() {
    let mut s = Sim::new();
    s.kind = FdKind::UnixStream;
    s.handshake();
    s.c(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}));
    s.s(json!({"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}]}}));
    assert_eq!(s.pipeline.session_count(), 1);
    assert_eq!(s.metric("mcp_monitor_unpaired_responses_total", &[]), 0.0);
}

#[test]
fn stdio_on_copies_of_two_socketpairs_is_one_session() {
    // node gives its child one socketpair per descriptor; a Python SDK 2.x
    // server reads a copy of stdin (fd 6) and writes a copy of stdout
    // (fd 7). Requests cross the stdin pair, responses the stdout pair:
    // the server is keyed by its inbound socket on one side and its
    // outbound one on the other, and both must be the same session.
    let metrics = Metrics::new();
    let mut p = Pipeline::new(PipelineConfig::default(), metrics.clone());
    let mut out = Recorder::default();
    p.handle(info(CLIENT, "/usr/bin/node"), &mut out);
    p.handle(info(SERVER, "/usr/bin/python3"), &mut out);
    // (node end, server end) of each pair.
    let (stdin_node, stdin_srv) = (0xc0u64, 0x50u64);
    let (stdout_node, stdout_srv) = (0xc1u64, 0x51u64);
    let mut ts = 10;
    let exchanges = [
        (
            json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"inspector-cli","version":"0.5.1"}}}),
            json!({"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"mcp-time","version":"2.3.0"}}}),
        ),
        (
            json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
            json!({"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_current_time"}]}}),
        ),
        (
            json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_current_time","arguments":{"timezone":"UTC"}}}),
            json!({"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"12:00"}]}}),
        ),
    ];
    for (i, (req, resp)) in exchanges.iter().enumerate() {
        let first = if i == 0 { chunk_flags::NEW_STREAM } else { 0 };
        let mut feed = |o: Observation| p.handle(o, &mut out);
        // node writes the request on its end of the stdin pair (fd 19);
        // the server reads its copy of stdin (fd 6).
        let line = format!("{req}\n");
        over_socket(
            &mut feed,
            (CLIENT, 19, stdin_node),
            (SERVER, 6, stdin_srv),
            &line,
            ts,
            first,
        );
        // The server answers on its copy of stdout (fd 7); node reads fd 21.
        let line = format!("{resp}\n");
        over_socket(
            &mut feed,
            (SERVER, 7, stdout_srv),
            (CLIENT, 21, stdout_node),
            &line,
            ts + 1,
            first,
        );
        ts += 2;
    }
    assert_eq!(p.session_count(), 1);
    assert_eq!(out.events.len(), 6);
    let methods: Vec<(Kind, Option<&str>)> = out.events.iter().map(|e| (e.kind, e.method.as_deref())).collect();
    assert_eq!(
        methods,
        [
            (Kind::Request, Some("initialize")),
            (Kind::Response, Some("initialize")),
            (Kind::Request, Some("tools/list")),
            (Kind::Response, Some("tools/list")),
            (Kind::Request, Some("tools/call")),
            (Kind::Response, Some("tools/call")),
        ]
    );
    assert!(out.events.iter().all(|e| e.session == out.events[0].session));
    assert_eq!(out.events[5].tool.as_deref(), Some("get_current_time"));
    assert_eq!(out.events[5].server.name.as_deref(), Some("mcp-time"));
    assert_eq!(out.events[5].client.pid, Some(CLIENT.pid));
    let unpaired = metric(&metrics, "mcp_monitor_unpaired_responses_total", &[]);
    assert_eq!(unpaired, 0.0);
}

#[test]
fn a_socket_server_with_two_clients_has_two_sessions() {
    // A server accepting clients on a unix socket (fd 7 and 8): each
    // connection is one bidirectional socket, keyed by its server side.
    let metrics = Metrics::new();
    let mut p = Pipeline::new(PipelineConfig::default(), metrics.clone());
    let mut out = Recorder::default();
    let c1 = ProcKey { pid: 101, start_ns: 1 };
    let c2 = ProcKey { pid: 102, start_ns: 1 };
    let mut ts = 10;
    for (client, srv_fd, srv_sock, cli_sock) in [(c1, 7, 0xa1u64, 0xb1u64), (c2, 8, 0xa2, 0xb2)] {
        let mut feed = |o: Observation| p.handle(o, &mut out);
        let req = format!("{}\n", json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}));
        over_socket(
            &mut feed,
            (client, 3, cli_sock),
            (SERVER, srv_fd, srv_sock),
            &req,
            ts,
            chunk_flags::NEW_STREAM,
        );
        let resp = format!("{}\n", json!({"jsonrpc":"2.0","id":1,"result":{"tools":[]}}));
        over_socket(
            &mut feed,
            (SERVER, srv_fd, srv_sock),
            (client, 3, cli_sock),
            &resp,
            ts + 1,
            chunk_flags::NEW_STREAM,
        );
        ts += 2;
    }
    assert_eq!(p.session_count(), 2);
    assert_eq!(out.events.len(), 4);
    assert!(out
        .events
        .iter()
        .all(|e| e.kind != Kind::Response || e.method.as_deref() == Some("tools/list")));
    assert_ne!(out.events[0].session, out.events[2].session);
    assert_eq!(out.events[1].client.pid, Some(101));
    assert_eq!(out.events[3].client.pid, Some(102));
}
