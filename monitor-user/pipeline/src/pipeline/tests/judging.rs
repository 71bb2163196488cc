//! Verdicts: streams and connections judged not MCP, judged afresh within
//! their budget; preludes, throwaway requests and other attempts to blind
//! the monitor.

use super::*;

#[test]
fn streams_that_are_not_json_rpc_are_rejected_and_reported_to_the_kernel() {
    // JSON that is not JSON-RPC (a structured log) is judged at once.
    let mut s = Sim::new();
    s.client_sends(&[b"{\"level\":\"info\",\"msg\":\"hello\"}\n"]);
    assert!(s.out.events.is_empty());
    assert_eq!(
        s.out.controls,
        vec![Control::IgnoreStream(KernelStream {
            pid: 200,
            fd: 0,
            inode: 11,
            direction: Direction::Ingress
        })]
    );
    assert_eq!(
        s.metric("mcp_monitor_streams_total", &[("verdict", "rejected:not_jsonrpc")]),
        1.0
    );
    // Chunks already in flight after the decision are dropped quietly,
    // unless they start like MCP (see the re-look tests below).
    s.client_sends(&[b"{\"level\":\"info\",\"msg\":\"again\"}\n"]);
    assert!(s.out.events.is_empty());
    assert_eq!(s.out.controls.len(), 1);
}

#[test]
fn a_stream_judged_not_mcp_is_judged_afresh_when_the_kernel_finds_mcp_in_it() {
    let mut s = Sim::new();
    s.client_sends(&[b"{\"level\":\"info\",\"msg\":\"hello\"}\n"]);
    assert_eq!(s.out.controls, vec![Control::IgnoreStream(C2S_PIPE)]);
    // The kernel's re-look found MCP at the start of a later read.
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1.0"}}});
    s.server_reads(
        format!("{init}\n").as_bytes(),
        chunk_flags::NEW_STREAM | chunk_flags::RESUMED | chunk_flags::TRACKED,
    );
    s.s(json!({"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"srv","version":"2.0"}}}));
    s.c(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}));
    assert_eq!(
        s.rows(),
        vec![
            row(C2S, Kind::Request, Some("initialize"), Some("0"), None),
            row(S2C, Kind::Response, Some("initialize"), Some("0"), None),
            row(C2S, Kind::Request, Some("tools/list"), Some("1"), None),
        ]
    );
    assert_eq!(
        s.metric("mcp_monitor_stream_relooks_total", &[("result", "resumed")]),
        1.0
    );
    // The kernel resumed it itself: nothing more to tell it.
    assert_eq!(s.out.controls, vec![Control::IgnoreStream(C2S_PIPE)]);
}

#[test]
fn garbage_past_the_prelude_budget_in_one_read_does_not_blind_the_monitor() {
    // More throwaway lines than the prelude budget, then MCP, all in one
    // read: the lines after the rejection are looked at again.
    let mut s = Sim::new();
    let mut burst = Vec::new();
    for i in 0..3 * PipelineConfig::default().max_prelude_frames {
        burst.extend(format!("noise {i}\n").as_bytes());
    }
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1.0"}}});
    burst.extend(format!("{init}\n").as_bytes());
    s.server_reads(&burst, chunk_flags::NEW_STREAM | chunk_flags::TRACKED);
    assert_eq!(
        s.out.controls,
        vec![Control::IgnoreStream(C2S_PIPE), Control::CaptureStream(C2S_PIPE)],
        "rejected past the budget, then captured again"
    );
    s.s(json!({"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"srv","version":"2.0"}}}));
    assert_eq!(
        s.rows(),
        vec![
            row(C2S, Kind::Request, Some("initialize"), Some("0"), None),
            row(S2C, Kind::Response, Some("initialize"), Some("0"), None),
        ]
    );
}

#[test]
fn re_judgements_of_a_stream_are_bounded_per_minute() {
    // JSON that holds "jsonrpc" but is not JSON-RPC: the kernel finds it at
    // every read; past the budget the pipeline stops judging it afresh and
    // tells the kernel to ignore it again.
    let max = 4;
    let mut s = Sim::with(PipelineConfig {
        max_relooks_per_minute: max,
        ..PipelineConfig::default()
    });
    let line = b"{\"jsonrpc\":\"1.0\",\"log\":\"not json-rpc 2.0\"}\n";
    s.server_reads(line, chunk_flags::NEW_STREAM | chunk_flags::TRACKED);
    for _ in 0..max + 3 {
        s.server_reads(
            line,
            chunk_flags::NEW_STREAM | chunk_flags::RESUMED | chunk_flags::TRACKED,
        );
    }
    assert!(s.out.events.is_empty());
    assert_eq!(
        s.metric("mcp_monitor_stream_relooks_total", &[("result", "resumed")]),
        max as f64
    );
    assert_eq!(
        s.metric("mcp_monitor_stream_relooks_total", &[("result", "over_budget")]),
        3.0
    );
    let count = |s: &Sim, want: Control| s.out.controls.iter().filter(|c| **c == want).count();
    assert_eq!(
        count(&s, Control::IgnoreStream(C2S_PIPE)),
        1 + max as usize,
        "every rejection is told to the kernel"
    );
    assert_eq!(
        count(&s, Control::QuietStream(C2S_PIPE)),
        1,
        "once the budget is spent, the kernel stops looking, once"
    );
    // When the minute is over, the kernel looks again, and the stream may
    // be judged afresh again.
    s.ts += 61_000_000_000;
    let ts = s.ts;
    s.feed(Observation::Tick { ts_ns: ts });
    assert_eq!(count(&s, Control::IgnoreStream(C2S_PIPE)), 2 + max as usize);
    s.server_reads(
        line,
        chunk_flags::NEW_STREAM | chunk_flags::RESUMED | chunk_flags::TRACKED,
    );
    assert_eq!(
        s.metric("mcp_monitor_stream_relooks_total", &[("result", "resumed")]),
        max as f64 + 1.0
    );
}

#[test]
fn garbage_before_the_first_message_does_not_blind_the_monitor() {
    // A banner, or lines written on purpose to get the stream judged not
    // MCP, then a real session on the same pipe.
    let mut s = Sim::new();
    s.client_sends(&[b"starting up...\n", b"\x00\x01garbage\n", b"server ready\n"]);
    assert!(s.out.controls.is_empty());
    s.handshake();
    s.c(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}));
    s.s(json!({"jsonrpc":"2.0","id":1,"result":{"tools":[]}}));
    assert!(
        s.rows().iter().any(|r| r.2.as_deref() == Some("tools/list")),
        "{:?}",
        s.rows()
    );
    assert!(s.metric("mcp_monitor_prelude_frames_total", &[]) >= 2.0);
    assert!(s.out.controls.is_empty());
}

#[test]
fn an_http_connection_is_not_judged_by_its_first_exchanges() {
    // mcp-remote follows the authorization spec: OAuth discovery first, a
    // 404 in plain text, then MCP on the same keep-alive connection. A
    // throwaway request sent to blind the monitor looks the same.
    let mut s = Sim::new();
    prelude_then_initialize(&mut s, CLIENT, 9, Direction::Egress, "mcp-remote");
    assert!(s.out.controls.is_empty(), "{:?}", s.out.controls);
    assert_eq!(s.metric("mcp_monitor_prelude_frames_total", &[]), 1.0);
}

#[test]
fn throwaway_requests_past_the_budget_do_not_blind_the_monitor() {
    // The evasion: more throwaway requests than the prelude budget on one
    // keep-alive connection, then MCP on it. The connection is ignored,
    // then the kernel's re-look resumes it at the POST.
    let mut s = Sim::new();
    let fd = 9;
    for _ in 0..=PipelineConfig::default().max_prelude_frames {
        tcp(
            &mut s,
            CLIENT,
            fd,
            Direction::Egress,
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        tcp(
            &mut s,
            CLIENT,
            fd,
            Direction::Ingress,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
        );
    }
    let ignored = |s: &Sim| {
        s.out
            .controls
            .iter()
            .filter(|c| matches!(c, Control::IgnoreStream(k) if k.fd == fd))
            .count()
    };
    assert_eq!(ignored(&s), 2, "both directions ignored: {:?}", s.out.controls);
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18",
        "capabilities":{},"clientInfo":{"name":"sneaky","version":"0.1"}}});
    s.ts += 1_000;
    let mut c = chunk(
        End {
            proc: CLIENT,
            fd,
            kind: FdKind::Tcp4,
            channel: 900 + fd as u64,
        },
        Direction::Egress,
        b"",
        s.ts,
        0,
    );
    c.data = post(&init.to_string(), None);
    c.flags = chunk_flags::NEW_STREAM | chunk_flags::RESUMED | chunk_flags::TRACKED;
    s.feed(Observation::Chunk(c));
    // The response direction comes back as a new stream.
    let body = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"remote","version":"1"}}}"#;
    tcp(&mut s, CLIENT, fd, Direction::Ingress, &json_response(body));
    assert_eq!(
        s.rows(),
        vec![
            row(C2S, Kind::Request, Some("initialize"), Some("0"), None),
            row(S2C, Kind::Response, Some("initialize"), Some("0"), None),
        ]
    );
    assert_eq!(
        s.metric("mcp_monitor_stream_relooks_total", &[("result", "resumed")]),
        1.0
    );
    assert_eq!(ignored(&s), 2);
}

#[test]
fn a_server_first_seen_in_the_middle_of_a_response_is_seen_from_its_next_request() {
    // The server was discovered on the body of its answer to a GET (head
    // and body sent apart): its first captured chunk on the connection is
    // a bare JSON body. The next exchanges on that connection are MCP.
    let mut s = Sim::new();
    tcp(
        &mut s,
        SERVER,
        7,
        Direction::Egress,
        br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Bad Request: Missing session ID"}}"#,
    );
    assert!(s.out.controls.is_empty(), "{:?}", s.out.controls);
    prelude_then_initialize(&mut s, SERVER, 7, Direction::Ingress, "mcp-remote-fallback-test");
    assert!(s.out.controls.is_empty(), "{:?}", s.out.controls);
}

#[test]
fn text_lines_are_judged_after_the_prelude_budget() {
    let mut s = Sim::new();
    let max = PipelineConfig::default().max_prelude_frames;
    // The first line of a stream that does not start with JSON is taken
    // for the tail of a message joined mid-way, not counted.
    for _ in 0..=max {
        s.client_sends(&[b"INFO listening\n"]);
    }
    assert!(s.out.controls.is_empty(), "judged within the prelude budget");
    s.client_sends(&[b"INFO listening\n"]);
    assert_eq!(s.out.controls.len(), 1);
    assert_eq!(
        s.metric("mcp_monitor_streams_total", &[("verdict", "rejected:not_json")]),
        1.0
    );
}

#[test]
fn json_rpc_that_is_not_mcp_is_held_then_dropped() {
    let mut s = Sim::with(PipelineConfig {
        max_held: 4,
        ..PipelineConfig::default()
    });
    for i in 0..5 {
        s.c(json!({"jsonrpc":"2.0","id":i,"method":"textDocument/hover","params":{}}));
    }
    assert!(s.out.events.is_empty(), "a non-MCP JSON-RPC user produced events");
    assert!(s
        .out
        .controls
        .iter()
        .any(|c| matches!(c, Control::IgnoreStream(k) if k.pid == 200)));
    assert_eq!(
        s.metric("mcp_monitor_streams_total", &[("verdict", "rejected:not_mcp")]),
        1.0
    );
    assert_eq!(
        s.metric("mcp_monitor_state_evictions_total", &[("kind", "held_event")]),
        5.0
    );
    assert_eq!(s.metric("mcp_monitor_sessions_active", &[]), 0.0);
}

#[test]
fn an_event_loop_wakeup_socket_is_judged_and_holds_no_memory() {
    // asyncio's self-pipe (Python SDK 2.x servers): one NUL byte per
    // wake-up, never a newline. Each read is a prelude frame; past the
    // prelude budget the stream is rejected and the kernel stops
    // capturing it, instead of the bytes piling up towards max_frame.
    let mut s = Sim::new();
    for _ in 0..20 {
        s.client_sends(&[b"\0"]);
    }
    assert!(s.out.events.is_empty());
    assert_eq!(s.out.controls, vec![Control::IgnoreStream(C2S_PIPE)]);
    assert_eq!(
        s.metric("mcp_monitor_streams_total", &[("verdict", "rejected:binary")]),
        1.0
    );
    assert_eq!(
        s.metric("mcp_monitor_prelude_frames_total", &[]),
        9.0,
        "the default prelude budget is 8 frames"
    );
    assert_eq!(
        s.metric("mcp_monitor_frame_errors_total", &[("reason", "not_json")]),
        0.0
    );
    assert_eq!(s.pipeline.budget.used(), 0);
}

/// An excluded process's chunks are dropped, counted, and its streams
/// leave capture; the other end's are not. On pipes a process's end is
/// what it reads, so the client's end alone holds only the answers, never
/// confirmed as a session: remote peers matter over HTTP, where each end
/// sees both directions.
#[test]
fn an_excluded_process_is_dropped_and_its_streams_leave_capture() {
    let cfg = PipelineConfig {
        exclude: Exclusions::new(&[SERVER.pid], &[]),
        ..PipelineConfig::default()
    };
    let mut s = Sim::with(cfg);
    s.handshake();
    assert!(s.rows().is_empty());
    assert_eq!(s.out.controls, vec![Control::IgnoreStream(C2S_PIPE); 2]);
    assert_eq!(s.metric("mcp_monitor_excluded_chunks_total", &[]), 2.0);
    // By task name (the first 15 bytes of the executable's name; the test
    // chunks' task name is `t`).
    let by_name = |names: &[&str]| {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut s = Sim::with(PipelineConfig {
            exclude: Exclusions::new(&[], &names),
            ..PipelineConfig::default()
        });
        s.handshake();
        (s.rows().len(), s.metric("mcp_monitor_excluded_chunks_total", &[]))
    };
    assert_eq!(by_name(&["t"]), (0, 3.0));
    assert_eq!(by_name(&["tt", "x"]), (3, 0.0));
    // TLS plaintext leaves capture by its SSL object, as the kernel keys it.
    let mut s = Sim::with(PipelineConfig {
        exclude: Exclusions::new(&[SERVER.pid], &[]),
        ..PipelineConfig::default()
    });
    TlsEnd::unbound(SERVER, 0xfeed).writes(&mut s, b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(
        s.out.controls,
        vec![Control::IgnoreStream(KernelStream {
            pid: SERVER.pid,
            fd: monitor_common::TLS_STREAM_FD,
            inode: 0xfeed,
            direction: Direction::Egress,
        })]
    );
}

/// An excluded pid is the process first seen with it: a later process that
/// reuses the number is reported; names are cut at 15 bytes as the
/// kernel cuts them.
#[test]
fn exclusions_follow_the_process_not_the_number() {
    let mut x = Exclusions::new(
        &[700],
        &[
            "a-rather-long-executable".into(),
            "n\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}x".into(),
        ],
    );
    let first = ProcKey { pid: 700, start_ns: 5 };
    let reused = ProcKey { pid: 700, start_ns: 9 };
    assert!(x.excludes(first, "bash"));
    assert!(x.excludes(first, "bash"));
    assert!(!x.excludes(reused, "bash"));
    let other = ProcKey { pid: 1, start_ns: 1 };
    assert!(x.excludes(other, "a-rather-long-e"));
    // 15 bytes end inside the eighth é: the kernel's name decodes to U+FFFD there.
    let cut = String::from_utf8_lossy(&"n\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}x".as_bytes()[..15]).into_owned();
    assert!(x.excludes(other, &cut));
}
