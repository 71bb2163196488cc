//! Pipeline tests on synthetic observations: what the kernel would report
//! for a client and a server talking over pipes or socketpairs.

mod h2;
mod http;
mod https;
mod judging;
mod state;
mod stdio;
mod writer_wait;

use super::*;
use crate::{
    event::Flow,
    identity::ProcessInfo,
    jsonrpc::Kind,
    observation::{CaptureCounter, CaptureStats, Chunk, WriterNotice},
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

/// A chunk at `end`: the bytes read (ingress) or written (egress).
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
        data: data.to_vec(),
    }
}

/// The sum of `name`'s series with `labels` in `metrics`.
fn metric(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with(name))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// `proc` exits at `ts`.
fn exit(proc: ProcKey, ts: u64) -> Observation {
    Observation::Lifecycle(Lifecycle {
        kind: LifecycleKind::Exit,
        ts_ns: ts,
        proc,
        parent: None,
        reason: TrackReason::Discovered,
    })
}

/// The writer notice of `end`: its process writes into `end.channel`.
fn writer_notice(end: End, ts: u64) -> Observation {
    Observation::WriterNotice(WriterNotice {
        ts_ns: ts,
        proc: end.proc,
        fd: end.fd,
        fd_kind: end.kind,
        channel: end.channel,
    })
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
                relay_memory_seconds: 3600,
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
            let n = writer_notice(
                End {
                    proc: p,
                    fd,
                    kind: self.kind,
                    channel,
                },
                self.ts,
            );
            self.feed(n);
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
        metric(&self.metrics, name, labels)
    }

    /// `proc` exits.
    fn exit(&mut self, proc: ProcKey) {
        self.feed(exit(proc, self.ts));
    }

    /// Every event so far, as the JSON it is written as.
    fn events_json(&self) -> Vec<Value> {
        self.out
            .events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect()
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

/// `line` crossing a connected pair of unix sockets: the writer's notice
/// (naming the reader's socket, as the kernel does), then the reader's
/// read. Each end is (process, fd, its own socket).
fn over_socket(
    feed: &mut impl FnMut(Observation),
    (writer, wfd, wsock): (ProcKey, i32, u64),
    (reader, rfd, rsock): (ProcKey, i32, u64),
    line: &str,
    ts: u64,
    flags: u8,
) {
    feed(writer_notice(
        End {
            proc: writer,
            fd: wfd,
            kind: FdKind::UnixStream,
            channel: rsock,
        },
        ts,
    ));
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
    feed(Observation::Chunk(read));
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

/// A TCP chunk of one process on a connection with ends `conn`.
fn tcp_on(s: &mut Sim, p: ProcKey, fd: i32, dir: Direction, data: &[u8], conn: ConnTuple) {
    s.ts += 1_000;
    let end = End {
        proc: p,
        fd,
        kind: FdKind::Tcp4,
        channel: 900 + fd as u64,
    };
    let mut c = chunk(end, dir, data, s.ts, 0);
    c.data = data.to_vec();
    c.orig_len = data.len() as u64;
    c.conn = conn;
    s.feed(Observation::Chunk(c));
}

/// One HTTP exchange seen from both ends on this host: the client (`CLIENT`
/// on `client_fd`, port `port`) writes `request` to the server (`SERVER`
/// on `server_fd`, port 8000), which reads it and answers `response`.
fn exchange_on_loopback(s: &mut Sim, client_fd: i32, server_fd: i32, port: u16, request: &[u8], response: &[u8]) {
    let (client_end, server_end) = (loopback(port, 8000), loopback(8000, port));
    tcp_on(s, CLIENT, client_fd, Direction::Egress, request, client_end);
    tcp_on(s, SERVER, server_fd, Direction::Ingress, request, server_end);
    tcp_on(s, SERVER, server_fd, Direction::Egress, response, server_end);
    tcp_on(s, CLIENT, client_fd, Direction::Ingress, response, client_end);
}

/// The events of the server's view (`server_side`) or the client's.
fn view_of(events: &[Value], server_side: bool) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| (e["server"]["pid"] == SERVER.pid) == server_side)
        .collect()
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
#[derive(Clone, Copy)]
struct TlsEnd {
    proc: ProcKey,
    ssl: u64,
    fd: i32,
    conn: ConnTuple,
}

impl TlsEnd {
    fn new(proc: ProcKey, ssl: u64, fd: i32, conn: ConnTuple) -> TlsEnd {
        TlsEnd { proc, ssl, fd, conn }
    }

    /// An end whose socket the kernel has not named yet (fd -1, no tuple).
    fn unbound(proc: ProcKey, ssl: u64) -> TlsEnd {
        TlsEnd::new(proc, ssl, -1, ConnTuple::default())
    }

    /// The end's `SSL_write` of `data`, first of its stream as far as the
    /// kernel knows.
    fn writes(self, s: &mut Sim, data: &[u8]) {
        tls(s, self, Direction::Egress, data, chunk_flags::NEW_STREAM);
    }

    /// The end's `SSL_read` of `data`, flagged like [`TlsEnd::writes`].
    fn reads(self, s: &mut Sim, data: &[u8]) {
        tls(s, self, Direction::Ingress, data, chunk_flags::NEW_STREAM);
    }
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
    c.data = data.to_vec();
    c.orig_len = data.len() as u64;
    c.conn = conn;
    s.feed(Observation::Chunk(c));
}

/// A legacy HTTP+SSE POST of `body` to `target`.
fn legacy_post(target: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {target} HTTP/1.1\r\nHost: localhost:3001\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
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
