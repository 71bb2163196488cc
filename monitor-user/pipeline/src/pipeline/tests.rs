//! Pipeline tests on synthetic observations: what the kernel would report
//! for a client and a server talking over pipes or socketpairs.

use super::*;
use crate::{
    event::Flow,
    identity::ProcessInfo,
    jsonrpc::Kind,
    observation::{CaptureCounter, CaptureStats, Chunk},
    redact,
};
use monitor_common::{chunk_flags, ConnTuple, Direction, Syscall, TrackReason};
use proptest::prelude::*;
use serde_json::{json, Value};

const CLIENT: ProcKey = ProcKey {
    pid: 100,
    start_ns: 1_000,
};
const SERVER: ProcKey = ProcKey {
    pid: 200,
    start_ns: 2_000,
};
/// A second client process.
const OTHER_CLIENT: ProcKey = ProcKey {
    pid: 300,
    start_ns: 3_000,
};

/// A scripted stdio conversation.
struct Sim {
    pipeline: Pipeline,
    metrics: Arc<Metrics>,
    out: Recorder,
    ts: u64,
    kind: FdKind,
    /// c2s and s2c channels, and the server's fds for them.
    c2s: u64,
    s2c: u64,
    server_fds: (i32, i32),
    server: ProcKey,
    notified: Vec<(ProcKey, u64)>,
}

#[derive(Default)]
struct Recorder {
    events: Vec<Event>,
    controls: Vec<Control>,
    alerts: Vec<Alert>,
}

impl Sink for Recorder {
    fn alert(&mut self, alert: Alert) {
        self.alerts.push(alert);
    }
    fn event(&mut self, event: Event) {
        self.events.push(event);
    }
    fn control(&mut self, control: Control) {
        self.controls.push(control);
    }
}

fn info(p: ProcKey, exe: &str) -> Observation {
    Observation::Process(Box::new(ProcessInfo {
        pid: p.pid,
        start_ns: p.start_ns,
        exe: exe.into(),
        complete: true,
        ..Default::default()
    }))
}

/// What the transcript tests compare of an event: direction, kind, method,
/// JSON-RPC id and tool.
type Row = (Flow, Kind, Option<String>, Option<String>, Option<String>);

/// One end of a channel as the kernel names it: the process, its
/// descriptor, the descriptor's kind and the channel (pipe or socket inode).
#[derive(Clone, Copy)]
struct End {
    proc: ProcKey,
    fd: i32,
    kind: FdKind,
    channel: u64,
}

/// A chunk at `end`: the bytes read (ingress), or a writer notice (egress).
fn chunk(end: End, dir: Direction, data: &[u8], ts: u64, flags: u8) -> Chunk {
    let End {
        proc: p,
        fd,
        kind,
        channel,
    } = end;
    Chunk {
        ts_ns: ts,
        proc: p,
        tid: p.pid,
        comm: "t".into(),
        uid: 0,
        gid: 0,
        cgroup_id: 0,
        fd,
        syscall: if dir == Direction::Ingress {
            Syscall::Read
        } else {
            Syscall::Write
        },
        direction: dir,
        fd_kind: kind,
        flags,
        inode: channel,
        channel,
        peer: 0,
        orig_len: data.len() as u64,
        segment: 0,
        conn: ConnTuple::default(),
        writer_notice: dir == Direction::Egress,
        data: if dir == Direction::Egress {
            Vec::new()
        } else {
            data.to_vec()
        },
    }
}

impl Sim {
    fn new() -> Self {
        Self::with(PipelineConfig::default())
    }

    /// Default configuration with every detector on (built-in rules).
    fn with_detector() -> Self {
        let metrics = Metrics::new();
        let detector = crate::detect::Detector::new(
            crate::detect::DetectorConfig {
                rules: crate::detect::rules::Rules::builtin(),
                fingerprint_key: b"0123456789abcdef0123456789abcdef".to_vec(),
                persisted_tools: None,
                scan_budget_bytes: 4 << 20,
                dedup_window_seconds: 300,
            },
            metrics.clone(),
        )
        .unwrap();
        let mut s = Self::with_metrics(PipelineConfig::default(), metrics);
        s.pipeline = Pipeline::new(PipelineConfig::default(), s.metrics.clone()).with_detector(detector);
        s.feed(info(CLIENT, "/usr/bin/agent"));
        s.feed(info(SERVER, "/usr/bin/server"));
        s
    }

    fn with(cfg: PipelineConfig) -> Self {
        Self::with_metrics(cfg, Metrics::new())
    }

    fn with_metrics(cfg: PipelineConfig, metrics: Arc<Metrics>) -> Self {
        let mut s = Sim {
            pipeline: Pipeline::new(cfg, metrics.clone()),
            metrics,
            out: Recorder::default(),
            ts: 1_000_000,
            kind: FdKind::Pipe,
            c2s: 11,
            s2c: 12,
            server_fds: (0, 1),
            server: SERVER,
            notified: Vec::new(),
        };
        s.feed(info(CLIENT, "/usr/bin/agent"));
        s.feed(info(SERVER, "/usr/bin/server"));
        s
    }

    fn feed(&mut self, o: Observation) {
        self.pipeline.handle(o, &mut self.out);
    }

    fn notice(&mut self, p: ProcKey, fd: i32, channel: u64) {
        if !self.notified.contains(&(p, channel)) {
            self.notified.push((p, channel));
            let c = chunk(
                End {
                    proc: p,
                    fd,
                    kind: self.kind,
                    channel,
                },
                Direction::Egress,
                b"",
                self.ts,
                chunk_flags::NEW_STREAM,
            );
            self.feed(Observation::Chunk(c));
        }
    }

    /// The client writes `pieces`; the server reads them as separate reads.
    fn client_sends(&mut self, pieces: &[&[u8]]) {
        self.notice(CLIENT, 5, self.c2s);
        for p in pieces {
            self.ts += 1_000;
            let c = chunk(
                End {
                    proc: self.server,
                    fd: self.server_fds.0,
                    kind: self.kind,
                    channel: self.c2s,
                },
                Direction::Ingress,
                p,
                self.ts,
                chunk_flags::NEW_STREAM,
            );
            self.feed(Observation::Chunk(c));
        }
    }

    fn server_sends(&mut self, pieces: &[&[u8]]) {
        self.notice(self.server, self.server_fds.1, self.s2c);
        for p in pieces {
            self.ts += 1_000;
            let c = chunk(
                End {
                    proc: CLIENT,
                    fd: 6,
                    kind: self.kind,
                    channel: self.s2c,
                },
                Direction::Ingress,
                p,
                self.ts,
                chunk_flags::NEW_STREAM,
            );
            self.feed(Observation::Chunk(c));
        }
    }

    fn c(&mut self, v: Value) {
        let line = format!("{v}\n");
        self.client_sends(&[line.as_bytes()]);
    }

    fn s(&mut self, v: Value) {
        let line = format!("{v}\n");
        self.server_sends(&[line.as_bytes()]);
    }

    fn handshake(&mut self) {
        self.c(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1.0"}}}));
        self.s(json!({"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"srv","version":"2.0"}}}));
        self.c(json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.metrics.render();
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    fn rows(&self) -> Vec<Row> {
        self.out
            .events
            .iter()
            .map(|e| {
                (
                    e.direction,
                    e.kind,
                    e.method.clone(),
                    e.id.as_ref().map(|i| i.to_string()),
                    e.tool.clone(),
                )
            })
            .collect()
    }
}

use Flow::{ClientToServer as C2S, ServerToClient as S2C};

fn row(
    f: Flow,
    k: Kind,
    m: Option<&str>,
    id: Option<&str>,
    tool: Option<&str>,
) -> (Flow, Kind, Option<String>, Option<String>, Option<String>) {
    (
        f,
        k,
        m.map(str::to_owned),
        id.map(str::to_owned),
        tool.map(str::to_owned),
    )
}

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

impl Sim {
    /// The server reads `data` on the client-to-server pipe with `flags`.
    fn server_reads(&mut self, data: &[u8], flags: u8) {
        self.notice(CLIENT, 5, self.c2s);
        self.ts += 1_000;
        let c = chunk(
            End {
                proc: self.server,
                fd: self.server_fds.0,
                kind: self.kind,
                channel: self.c2s,
            },
            Direction::Ingress,
            data,
            self.ts,
            flags,
        );
        self.feed(Observation::Chunk(c));
    }
}

const C2S_PIPE: KernelStream = KernelStream {
    pid: 200,
    fd: 0,
    inode: 11,
    direction: Direction::Ingress,
};

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

/// On one connection of `p` (fd `fd`, requests going `requests`): an OAuth
/// discovery GET answered 404 in plain text, then `initialize` and its
/// JSON answer; checks that exactly the MCP exchange is reported.
fn prelude_then_initialize(s: &mut Sim, p: ProcKey, fd: i32, requests: Direction, client: &str) {
    let responses = if requests == Direction::Egress {
        Direction::Ingress
    } else {
        Direction::Egress
    };
    let get = b"GET /.well-known/oauth-protected-resource/mcp HTTP/1.1\r\nHost: localhost:8000\r\n\r\n";
    tcp(s, p, fd, requests, get);
    let not_found = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nNot Found";
    tcp(s, p, fd, responses, not_found);
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18",
        "capabilities":{},"clientInfo":{"name":client,"version":"0.1"}}});
    tcp(s, p, fd, requests, &post(&init.to_string(), None));
    let body = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"remote","version":"1"}}}"#;
    tcp(s, p, fd, responses, &json_response(body));
    assert_eq!(
        s.rows(),
        vec![
            row(C2S, Kind::Request, Some("initialize"), Some("0"), None),
            row(S2C, Kind::Response, Some("initialize"), Some("0"), None),
        ]
    );
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
    c.writer_notice = false;
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
fn pid_reuse_never_mixes_sessions() {
    let mut s = Sim::new();
    s.handshake();
    s.feed(Observation::Lifecycle(Lifecycle {
        kind: LifecycleKind::Exit,
        ts_ns: s.ts,
        proc: SERVER,
        parent: None,
        reason: TrackReason::Discovered,
    }));
    assert_eq!(s.metric("mcp_monitor_sessions_active", &[]), 0.0);
    // Same pid, another process.
    let reborn = ProcKey {
        pid: SERVER.pid,
        start_ns: 9_999,
    };
    s.feed(info(reborn, "/usr/bin/other-server"));
    s.server = reborn;
    s.c2s = 21;
    s.s2c = 22;
    s.handshake();
    let first = &s.out.events[0];
    let later = s.out.events.last().unwrap();
    assert_ne!(first.session, later.session);
    assert_eq!(later.server.process.as_ref().unwrap().exe, "/usr/bin/other-server");
    assert_eq!(first.server.process.as_ref().unwrap().exe, "/usr/bin/server");
}

#[test]
fn exits_end_sessions_and_count_forgotten_requests() {
    let mut s = Sim::new();
    s.handshake();
    s.c(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}));
    s.feed(Observation::Lifecycle(Lifecycle {
        kind: LifecycleKind::Exit,
        ts_ns: s.ts,
        proc: SERVER,
        parent: None,
        reason: TrackReason::Discovered,
    }));
    assert_eq!(
        s.metric(
            "mcp_monitor_pending_requests_evicted_total",
            &[("reason", "session_end")]
        ),
        1.0
    );
    assert_eq!(s.pipeline.session_count(), 0);
}

#[test]
fn ticks_expire_requests_and_idle_sessions() {
    let mut s = Sim::with(PipelineConfig {
        request_timeout_ns: 10,
        session_idle_ns: 1_000_000_000,
        ..PipelineConfig::default()
    });
    s.handshake();
    s.c(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}));
    s.feed(Observation::Tick { ts_ns: s.ts + 1_000 });
    assert_eq!(
        s.metric("mcp_monitor_pending_requests_evicted_total", &[("reason", "timeout")]),
        1.0
    );
    s.s(json!({"jsonrpc":"2.0","id":1,"result":{}}));
    assert_eq!(s.metric("mcp_monitor_unpaired_responses_total", &[]), 1.0);
    s.feed(Observation::Tick {
        ts_ns: s.ts + 2_000_000_000,
    });
    assert_eq!(s.pipeline.session_count(), 0);
}

#[test]
fn unknown_methods_fold_into_other_in_metrics_only() {
    let mut s = Sim::new();
    s.handshake();
    s.c(json!({"jsonrpc":"2.0","id":1,"method":"x-vendor/secret-sauce","params":{}}));
    assert_eq!(
        s.out.events.last().unwrap().method.as_deref(),
        Some("x-vendor/secret-sauce")
    );
    assert_eq!(s.metric("mcp_monitor_messages_total", &[("method", "other")]), 1.0);
    assert!(!s.metrics.render().contains("secret-sauce"));
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

/// `line` crossing a connected pair of unix sockets: the writer's notice
/// (naming the reader's socket, as the kernel does), then the reader's
/// read. Each end is (process, fd, its own socket).
fn over_socket(
    feed: &mut impl FnMut(Chunk),
    (writer, wfd, wsock): (ProcKey, i32, u64),
    (reader, rfd, rsock): (ProcKey, i32, u64),
    line: &str,
    ts: u64,
    flags: u8,
) {
    let mut notice = chunk(
        End {
            proc: writer,
            fd: wfd,
            kind: FdKind::UnixStream,
            channel: rsock,
        },
        Direction::Egress,
        b"",
        ts,
        flags,
    );
    notice.peer = wsock;
    feed(notice);
    let mut read = chunk(
        End {
            proc: reader,
            fd: rfd,
            kind: FdKind::UnixStream,
            channel: rsock,
        },
        Direction::Ingress,
        line.as_bytes(),
        ts,
        flags,
    );
    read.peer = wsock;
    feed(read);
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
        let mut feed = |c: Chunk| p.handle(Observation::Chunk(c), &mut out);
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
    let unpaired: f64 = metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("mcp_monitor_unpaired_responses_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
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
        let mut feed = |c: Chunk| p.handle(Observation::Chunk(c), &mut out);
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

#[test]
fn state_tables_are_bounded() {
    let mut s = Sim::with(PipelineConfig {
        max_streams: 16,
        max_sessions: 16,
        ..PipelineConfig::default()
    });
    for i in 0..200u32 {
        let server = ProcKey {
            pid: 1000 + i,
            start_ns: 1,
        };
        let line = format!(
            "{}\n",
            json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{}})
        );
        let c = chunk(
            End {
                proc: server,
                fd: 0,
                kind: FdKind::Pipe,
                channel: 5000 + i as u64,
            },
            Direction::Ingress,
            line.as_bytes(),
            i as u64,
            chunk_flags::NEW_STREAM,
        );
        s.feed(Observation::Chunk(c));
    }
    assert!(s.pipeline.stdio.streams.len() <= 16);
    assert!(s.pipeline.session_count() <= 16);
    assert!(s.metric("mcp_monitor_state_evictions_total", &[("kind", "stream")]) > 0.0);
    assert!(s.metric("mcp_monitor_state_evictions_total", &[("kind", "session")]) > 0.0);
    assert_eq!(s.out.events.len(), 200, "evictions drop state, not messages");
}

#[test]
fn kernel_counters_become_metric_increments() {
    let mut s = Sim::new();
    let stats = |ring, trunc| {
        Observation::CaptureStats(CaptureStats {
            counters: vec![
                (CaptureCounter::Kernel(monitor_common::Counter::DropRingFull), ring),
                (CaptureCounter::Kernel(monitor_common::Counter::Truncated), trunc),
                (CaptureCounter::Kernel(monitor_common::Counter::Records), 99),
            ],
            programs: vec![("sys_exit_ingress".into(), ring * 10, trunc * 1_000_000_000)],
        })
    };
    s.feed(stats(2, 1));
    s.feed(stats(5, 1));
    assert_eq!(
        s.metric("mcp_monitor_bpf_program_runs_total", &[("program", "sys_exit_ingress")]),
        50.0
    );
    assert_eq!(
        s.metric(
            "mcp_monitor_bpf_program_run_seconds_total",
            &[("program", "sys_exit_ingress")]
        ),
        1.0
    );
    assert_eq!(
        s.metric("mcp_monitor_capture_dropped_total", &[("reason", "ring_full")]),
        5.0
    );
    assert_eq!(s.metric("mcp_monitor_capture_truncated_total", &[]), 1.0);
}

fn conversation() -> Vec<(bool, String)> {
    vec![
        (true, json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"clientInfo":{"name":"a","version":"1"}}}).to_string()),
        (false, json!({"jsonrpc":"2.0","id":0,"result":{"serverInfo":{"name":"s","version":"1"},"protocolVersion":"2025-06-18"}}).to_string()),
        (true, json!({"jsonrpc":"2.0","method":"notifications/initialized"}).to_string()),
        (true, json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"t":"ünïcödé \n escaped"}}}).to_string()),
        (false, json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}).to_string()),
        (false, json!({"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"x".repeat(3000)}]}}).to_string()),
        (true, json!({"jsonrpc":"2.0","id":2,"method":"ping"}).to_string()),
        (false, json!({"jsonrpc":"2.0","id":2,"result":{}}).to_string()),
    ]
}

proptest! {
    /// However the kernel cuts the byte streams into reads, and with CRLF
    /// or blank lines in between, the events are the same.
    #[test]
    fn chunking_does_not_change_events(cuts in proptest::collection::vec(1usize..512, 1..40), crlf in any::<bool>(), blank in any::<bool>()) {
        let reference = {
            let mut s = Sim::new();
            for (c2s, m) in conversation() {
                if c2s { s.c(serde_json::from_str(&m).unwrap()) } else { s.s(serde_json::from_str(&m).unwrap()) }
            }
            s.rows()
        };
        let mut s = Sim::new();
        let mut cut = cuts.iter().cycle();
        for (c2s, m) in conversation() {
            let mut bytes = m.into_bytes();
            if crlf { bytes.push(b'\r'); }
            bytes.push(b'\n');
            if blank { bytes.extend_from_slice(b"\n  \n"); }
            let mut pieces: Vec<&[u8]> = Vec::new();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = (*cut.next().unwrap()).min(rest.len());
                pieces.push(&rest[..n]);
                rest = &rest[n..];
            }
            if c2s { s.client_sends(&pieces) } else { s.server_sends(&pieces) }
        }
        prop_assert_eq!(s.rows(), reference);
        prop_assert_eq!(s.metric("mcp_monitor_frame_errors_total", &[]), 0.0);
    }

    /// Garbage never panics and never grows state without bound.
    #[test]
    fn garbage_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..30)) {
        let mut s = Sim::with(PipelineConfig { max_frame: 256, max_pending_stream_bytes: 512, ..PipelineConfig::default() });
        for c in &chunks {
            s.client_sends(&[c]);
            s.server_sends(&[c]);
        }
        prop_assert!(s.pipeline.stdio.streams.values().all(|st| st.framer.buffered() <= 256));
    }

    /// Garbage and MCP lines, with or without the kernel's RESUMED flag, in
    /// any order: no panic, buffers bounded, and the re-judgements of the
    /// one stream never exceed its budget for the minute.
    #[test]
    fn relooks_stay_bounded(chunks in proptest::collection::vec((0u8..4, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..120)), 0..40)) {
        let max = 3;
        let mut s = Sim::with(PipelineConfig { max_frame: 256, max_relooks_per_minute: max, ..PipelineConfig::default() });
        for (what, resumed, noise) in &chunks {
            let data: Vec<u8> = match what {
                0 => noise.clone(),
                1 => b"{\"level\":\"info\"}\n".to_vec(),
                2 => b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}\n".to_vec(),
                _ => [noise.as_slice(), b"\n{\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n"].concat(),
            };
            let flags = chunk_flags::NEW_STREAM | if *resumed { chunk_flags::RESUMED } else { 0 };
            s.server_reads(&data, flags);
        }
        prop_assert!(s.pipeline.stdio.streams.values().all(|st| st.framer.buffered() <= 256));
        prop_assert!(s.metric("mcp_monitor_stream_relooks_total", &[("result", "resumed")]) <= max as f64);
    }
}

#[test]
fn pods_name_the_workload_even_when_they_appear_after_the_process() {
    use crate::identity::kubernetes::{ContainerInfo, PodInfo, WorkloadRef, WorkloadUpdate};
    use crate::observation::WorkloadChange;
    const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "7b4d6e7e-1f1c-4a0e-9a36-0c3c0b1f9d11";
    let metrics = Metrics::with_config(&crate::metrics::MetricsConfig {
        workload_labels: true,
        max_workload_label_values: 2,
    });
    let mut s = Sim::with_metrics(PipelineConfig::default(), metrics);
    s.feed(Observation::Process(Box::new(ProcessInfo {
        pid: SERVER.pid,
        start_ns: SERVER.start_ns,
        exe: "/usr/bin/server".into(),
        container_id: Some(CID.into()),
        pod_uid: Some(UID.into()),
        complete: true,
        ..Default::default()
    })));
    s.handshake();
    let first = serde_json::to_value(&s.out.events[0]).unwrap();
    assert!(first["server"].get("kubernetes").is_none(), "{first}");
    let pod = |workload: &str| PodInfo {
        uid: UID.into(),
        namespace: "team-a".into(),
        name: format!("{workload}-5d9c7b-x2x4z"),
        node: "node-1".into(),
        service_account: "mcp".into(),
        labels: [("app".to_owned(), workload.to_owned())].into(),
        workload: Some(WorkloadRef {
            kind: "Deployment".into(),
            name: workload.into(),
            inferred: false,
        }),
        containers: vec![ContainerInfo {
            id: CID.into(),
            name: "server".into(),
            image: "ghcr.io/x/server:1".into(),
            image_id: String::new(),
        }],
    };
    let ts = s.ts;
    s.feed(Observation::Workload(WorkloadChange {
        ts_ns: ts,
        update: WorkloadUpdate::Pod(pod("web")),
    }));
    assert_eq!(s.metric("mcp_monitor_kubernetes_pods", &[]), 1.0);
    s.c(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}));
    let v = serde_json::to_value(s.out.events.last().unwrap()).unwrap();
    let k = &v["server"]["kubernetes"];
    assert_eq!(k["namespace"], "team-a");
    assert_eq!(k["pod"], "web-5d9c7b-x2x4z");
    assert_eq!(k["workload"], json!({"kind": "Deployment", "name": "web"}));
    assert_eq!(
        (k["container"].as_str(), k["image"].as_str()),
        (Some("server"), Some("ghcr.io/x/server:1"))
    );
    assert_eq!(k["labels"]["app"], "web");
    assert_eq!(v["server"]["spiffe_id"], "spiffe://cluster.local/ns/team-a/sa/mcp");
    // The client (no container) has no Kubernetes identity.
    assert!(v["client"].get("kubernetes").is_none());
    assert_eq!(
        s.metric(
            "mcp_monitor_messages_total",
            &[("namespace", "team-a"), ("workload", "web")]
        ),
        1.0
    );
    assert_eq!(
        s.metric("mcp_monitor_messages_total", &[("namespace", ""), ("workload", "")]),
        3.0
    );
    // A third (namespace, workload) pair is past the cap of two.
    s.feed(Observation::Workload(WorkloadChange {
        ts_ns: ts,
        update: WorkloadUpdate::Pod(pod("api")),
    }));
    s.c(json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}));
    assert_eq!(s.metric("mcp_monitor_messages_total", &[("workload", "other")]), 1.0);
    assert_eq!(s.metric("mcp_monitor_workload_labels_folded_total", &[]), 1.0);
    let v = serde_json::to_value(s.out.events.last().unwrap()).unwrap();
    assert_eq!(v["server"]["kubernetes"]["workload"]["name"], "api");
    // Deleted: still named during the grace period, then forgotten.
    s.feed(Observation::Workload(WorkloadChange {
        ts_ns: ts,
        update: WorkloadUpdate::PodDeleted { uid: UID.into() },
    }));
    s.c(json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}));
    let v = serde_json::to_value(s.out.events.last().unwrap()).unwrap();
    assert_eq!(v["server"]["kubernetes"]["namespace"], "team-a");
    s.feed(Observation::Tick {
        ts_ns: ts + crate::identity::kubernetes::DELETED_POD_GRACE_NS,
    });
    s.ts = ts + crate::identity::kubernetes::DELETED_POD_GRACE_NS;
    s.c(json!({"jsonrpc":"2.0","id":4,"method":"tools/list"}));
    let v = serde_json::to_value(s.out.events.last().unwrap()).unwrap();
    assert!(v["server"].get("kubernetes").is_none(), "{v}");
    assert_eq!(s.metric("mcp_monitor_kubernetes_pods", &[]), 0.0);
}

#[test]
fn command_lines_are_scrubbed_with_the_credential_rules_when_detection_is_on() {
    // A SendGrid key as a positional argument: no secret-named flag and no
    // shape the sensor's basic scrub knows.
    let key = [
        "SG.",
        "ONesajBJC_gEf7IvCeABMK",
        ".",
        "1iWv-N5QWGQm-GEjt72S5u_IO1feYt3eRakWhHhODIJ",
    ]
    .concat();
    let args = vec!["/usr/bin/mailer".to_owned(), "send".to_owned(), key.clone()];
    assert!(redact::scrub_args(&args).contains(&key), "the basic scrub leaves it");
    let mut s = Sim::with_detector();
    s.feed(Observation::Process(Box::new(ProcessInfo {
        pid: SERVER.pid,
        start_ns: SERVER.start_ns,
        exe: "/usr/bin/mailer".into(),
        cmdline: args,
        complete: true,
        ..Default::default()
    })));
    s.handshake();
    let text = serde_json::to_string(&s.out.events[0]).unwrap();
    assert!(!text.contains(&key[3..]), "{text}");
    assert!(text.contains("[REDACTED]"), "{text}");
}

/// TCP chunks of one process: (direction, bytes).
fn tcp(s: &mut Sim, p: ProcKey, fd: i32, dir: Direction, data: &[u8]) {
    s.ts += 1_000;
    let mut c = chunk(
        End {
            proc: p,
            fd,
            kind: FdKind::Tcp4,
            channel: 900 + fd as u64,
        },
        dir,
        data,
        s.ts,
        0,
    );
    c.writer_notice = false;
    c.data = data.to_vec();
    c.orig_len = data.len() as u64;
    s.feed(Observation::Chunk(c));
}

/// An HTTP/1.1 200 response with a JSON body.
fn json_response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn post(body: &str, session: Option<&str>) -> Vec<u8> {
    let sid = session.map(|s| format!("Mcp-Session-Id: {s}\r\n")).unwrap_or_default();
    format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost:8000\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\n{sid}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

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

/// A loopback tuple as the kernel fills it: (local port, remote port).
fn loopback(local: u16, remote: u16) -> ConnTuple {
    let mut t = ConnTuple {
        family: 2,
        local_port: local,
        remote_port: remote,
        ..Default::default()
    };
    t.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    t.remote_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    t
}

/// A TLS connection as one process sees it: its SSL object, bound to
/// socket `fd` (-1: not known yet) with `conn`.
struct TlsEnd {
    proc: ProcKey,
    ssl: u64,
    fd: i32,
    conn: ConnTuple,
}

/// TLS plaintext of one SSL object.
fn tls(s: &mut Sim, end: TlsEnd, dir: Direction, data: &[u8], flags: u8) {
    let TlsEnd { proc: p, ssl, fd, conn } = end;
    s.ts += 1_000;
    let mut c = chunk(
        End {
            proc: p,
            fd,
            kind: FdKind::Tls,
            channel: 0,
        },
        dir,
        data,
        s.ts,
        flags,
    );
    c.inode = ssl;
    c.syscall = if dir == Direction::Ingress {
        Syscall::SslRead
    } else {
        Syscall::SslWrite
    };
    c.writer_notice = false;
    c.data = data.to_vec();
    c.orig_len = data.len() as u64;
    c.conn = conn;
    s.feed(Observation::Chunk(c));
}

/// The first `SSL_write` of a client that was not tracked during its
/// handshake has no socket (the kernel names it from a later read): the
/// server's view of that connection still names the client, paired through
/// the request body both ends carry.
#[test]
fn https_server_side_names_a_client_whose_first_writes_had_no_socket() {
    let mut s = Sim::new();
    let new = chunk_flags::NEW_STREAM;
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1.0"}}}"#;
    let result = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"srv","version":"2.0"}}}"#;
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: sid-9\r\nContent-Length: {}\r\n\r\n{result}",
        result.len()
    );
    let server_end = loopback(8443, 40010);
    // Another client's request just before, with a different body.
    let other = init.replace("\"agent\"", "\"other\"");
    tls(
        &mut s,
        TlsEnd {
            proc: OTHER_CLIENT,
            ssl: 0xb1,
            fd: -1,
            conn: ConnTuple::default(),
        },
        Direction::Egress,
        &post(&other, None),
        new,
    );
    tls(
        &mut s,
        TlsEnd {
            proc: CLIENT,
            ssl: 0xc1,
            fd: -1,
            conn: ConnTuple::default(),
        },
        Direction::Egress,
        &post(init, None),
        new,
    );
    tls(
        &mut s,
        TlsEnd {
            proc: SERVER,
            ssl: 0x51,
            fd: 7,
            conn: server_end,
        },
        Direction::Ingress,
        &post(init, None),
        new,
    );
    tls(
        &mut s,
        TlsEnd {
            proc: SERVER,
            ssl: 0x51,
            fd: 7,
            conn: server_end,
        },
        Direction::Egress,
        resp.as_bytes(),
        new,
    );
    let ev: Vec<Value> = s.out.events.iter().map(|e| serde_json::to_value(e).unwrap()).collect();
    let server_side: Vec<&Value> = ev.iter().filter(|e| e["server"]["pid"] == SERVER.pid).collect();
    assert_eq!(server_side.len(), 2, "{ev:?}");
    for e in &server_side {
        assert_eq!(e["client"]["pid"], CLIENT.pid, "{e}");
    }
    // Neither end named: the server's socket unknown too (a server not
    // tracked before this connection).
    let init2 = init.replace("\"1.0\"", "\"1.1\"");
    tls(
        &mut s,
        TlsEnd {
            proc: CLIENT,
            ssl: 0xc2,
            fd: -1,
            conn: ConnTuple::default(),
        },
        Direction::Egress,
        &post(&init2, None),
        new,
    );
    tls(
        &mut s,
        TlsEnd {
            proc: SERVER,
            ssl: 0x53,
            fd: -1,
            conn: ConnTuple::default(),
        },
        Direction::Ingress,
        &post(&init2, None),
        new,
    );
    tls(
        &mut s,
        TlsEnd {
            proc: SERVER,
            ssl: 0x53,
            fd: -1,
            conn: ConnTuple::default(),
        },
        Direction::Egress,
        resp.as_bytes(),
        new,
    );
    let n = s.out.events.len();
    for e in &s.out.events[n - 2..] {
        let e = serde_json::to_value(e).unwrap();
        assert_eq!(e["client"]["pid"], CLIENT.pid, "{e}");
    }
    // A body no client wrote names nobody.
    let lone = init.replace("\"agent\"", "\"lone\"");
    let third = loopback(8443, 40012);
    tls(
        &mut s,
        TlsEnd {
            proc: SERVER,
            ssl: 0x52,
            fd: 8,
            conn: third,
        },
        Direction::Ingress,
        &post(&lone, None),
        new,
    );
    let last = serde_json::to_value(s.out.events.last().unwrap()).unwrap();
    assert_eq!(last["client"]["pid"], Value::Null, "{last}");
}

#[test]
fn https_both_local_ends_are_paired_and_ssl_objects_reused() {
    let mut s = Sim::new();
    let new = chunk_flags::NEW_STREAM;
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1.0"}}}"#;
    let result = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"srv","version":"2.0"}}}"#;
    let resp = |body: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: sid-7\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // Client 127.0.0.1:40000 -> server 127.0.0.1:8443; the client's SSL
    // object is 0xc1 on fd 5, the server's 0x51 on fd 7.
    let (client_end, server_end) = (loopback(40000, 8443), loopback(8443, 40000));
    tls(
        &mut s,
        TlsEnd {
            proc: CLIENT,
            ssl: 0xc1,
            fd: 5,
            conn: client_end,
        },
        Direction::Egress,
        &post(init, None),
        new,
    );
    tls(
        &mut s,
        TlsEnd {
            proc: SERVER,
            ssl: 0x51,
            fd: 7,
            conn: server_end,
        },
        Direction::Ingress,
        &post(init, None),
        new,
    );
    tls(
        &mut s,
        TlsEnd {
            proc: SERVER,
            ssl: 0x51,
            fd: 7,
            conn: server_end,
        },
        Direction::Egress,
        resp(result).as_bytes(),
        new,
    );
    tls(
        &mut s,
        TlsEnd {
            proc: CLIENT,
            ssl: 0xc1,
            fd: 5,
            conn: client_end,
        },
        Direction::Ingress,
        resp(result).as_bytes(),
        new,
    );
    let ev: Vec<Value> = s.out.events.iter().map(|e| serde_json::to_value(e).unwrap()).collect();
    assert_eq!(ev.len(), 4, "{:?}", s.rows());
    assert!(ev.iter().all(|e| e["transport"] == "https"), "{ev:?}");
    // The server's view names the local client process at the other end.
    let server_side: Vec<&Value> = ev.iter().filter(|e| e["server"]["pid"] == SERVER.pid).collect();
    assert_eq!(server_side.len(), 2);
    for e in &server_side {
        assert_eq!(e["client"]["pid"], CLIENT.pid, "{e}");
        assert_eq!(e["http"]["local"], "127.0.0.1:8443");
        assert_eq!(e["http"]["remote"], "127.0.0.1:40000");
    }
    let client_side: Vec<&Value> = ev.iter().filter(|e| e["server"]["pid"].is_null()).collect();
    assert_eq!(client_side[1]["http"]["remote"], "127.0.0.1:8443");
    assert!(client_side[0]["session"].as_str().unwrap().starts_with("https:remote"));

    // The client frees the SSL object and the next connection (port 40002)
    // gets the same address: the kernel marks the stream new again, and the
    // pipeline starts a new connection rather than continuing the old one.
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
    let body = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#;
    let second = loopback(40002, 8443);
    // A half-read response on the old connection must not disturb it.
    tls(
        &mut s,
        TlsEnd {
            proc: CLIENT,
            ssl: 0xc1,
            fd: 5,
            conn: client_end,
        },
        Direction::Ingress,
        b"HTTP/1.1 200 OK\r\nContent-Le",
        0,
    );
    tls(
        &mut s,
        TlsEnd {
            proc: CLIENT,
            ssl: 0xc1,
            fd: 6,
            conn: second,
        },
        Direction::Egress,
        &post(call, Some("sid-7")),
        new,
    );
    tls(
        &mut s,
        TlsEnd {
            proc: CLIENT,
            ssl: 0xc1,
            fd: 6,
            conn: second,
        },
        Direction::Ingress,
        resp(body).as_bytes(),
        new,
    );
    let rows = s.rows();
    assert_eq!(rows.len(), 6, "{rows:?}");
    assert_eq!(
        rows[5],
        row(S2C, Kind::Response, Some("tools/call"), Some("1"), Some("echo"))
    );
    let last = serde_json::to_value(s.out.events.last().unwrap()).unwrap();
    assert_eq!(last["http"]["local"], "127.0.0.1:40002");

    // Ciphertext on the TCP socket (the process is tracked) leaves capture
    // with its first chunk.
    tcp(
        &mut s,
        CLIENT,
        5,
        Direction::Ingress,
        &[0x17, 0x03, 0x03, 0x00, 0x20, 0xaa],
    );
    assert!(s
        .out
        .controls
        .iter()
        .any(|c| matches!(c, Control::IgnoreStream(k) if k.fd == 5 && k.inode == 905)));
    assert_eq!(s.metric("mcp_monitor_messages_total", &[("transport", "https")]), 6.0);
}

/// A legacy HTTP+SSE POST of `body` to `target`.
fn legacy_post(target: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {target} HTTP/1.1\r\nHost: localhost:3001\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
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

/// A stateless (2026-07-28) POST with its routing headers.
fn stateless_post(body: &str, method: &str, name: Option<&str>) -> Vec<u8> {
    let name = name.map(|n| format!("Mcp-Name: {n}\r\n")).unwrap_or_default();
    format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost:8000\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: {method}\r\n{name}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
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
            c.writer_notice = false;
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
