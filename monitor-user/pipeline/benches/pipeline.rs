//! Throughput of what runs after the kernel, on a realistic capture.
//!
//! The traffic is generated deterministically: 64 stdio sessions whose
//! messages are mostly text and JSON (tools/list with schemas, tools/call
//! with 200 B - 8 KiB arguments, results from 200 B to 64 KiB and a few of
//! 1 MiB, progress notifications), with a fake credential in one result out
//! of 200. It is cut into pipe-sized reads (at most 64 KiB, several messages
//! per read when small) as the kernel reports them.
//!
//! - `pipeline/replay`: framing, decoding, sessions, events serialised to JSON;
//! - `pipeline/replay_with_detection`: the same with every detector on (the
//!   rules compiled outside the timed loop, as at agent start);
//! - `pipeline/small_messages`: 150-byte messages only (per-message cost);
//! - `detection/messages`: the detector alone, on pre-decoded messages;
//! - `detection/prefilter`: its first pass alone (every literal of every
//!   rule, the structural checks) over the raw messages, and over the
//!   traced echo pair's 4 KiB request (`prefilter_echo_4k`).
//!
//! `cargo xtask bench` turns the timings into MB/s and messages/s per core.

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::{hint::black_box, sync::Arc};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mcp_monitor_pipeline::{
    detect::{
        lexicon, prefilter::Prefilter, rules::Rules, secrets::builtin, secrets::SecretScanner, Detector,
        DetectorConfig, MessageCtx, SECRET_NAME_FRAGMENTS,
    },
    event::{Event, Flow, Party, SharedParty, Transport},
    identity::ProcessInfo,
    jsonrpc::{self, Kind, Message},
    metrics::Metrics,
    observation::{Chunk, Observation, ProcKey, WriterNotice},
    pipeline::{Pipeline, PipelineConfig, Sink},
};
use monitor_common::{chunk_flags, ConnTuple, Direction, FdKind, Syscall};
use serde_json::{json, value::RawValue};

/// Serialises events and alerts like the agent's writers, into a reused buffer.
struct JsonSink {
    buf: Vec<u8>,
    events: u64,
}

impl Sink for JsonSink {
    fn event(&mut self, e: Event) {
        if self.buf.len() > 1 << 20 {
            self.buf.clear();
        }
        serde_json::to_writer(&mut self.buf, &e).unwrap();
        self.buf.push(b'\n');
        self.events += 1;
    }
    fn alert(&mut self, a: mcp_monitor_pipeline::detect::alert::Alert) {
        serde_json::to_writer(&mut self.buf, &a).unwrap();
        self.buf.push(b'\n');
    }
}

/// xorshift: deterministic sizes without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick(&mut self, choices: &[usize]) -> usize {
        choices[(self.next() % choices.len() as u64) as usize]
    }
}

fn text(rng: &mut Rng, n: usize) -> String {
    const WORDS: &[&str] = &[
        "the",
        "monitor",
        "reads",
        "file",
        "tool",
        "result",
        "agent",
        "server",
        "json",
        "line",
        "quota",
        "report",
        "2026-11-22",
        "/home/user/project/src/main.rs",
        "error:",
        "ok",
    ];
    let mut s = String::with_capacity(n + 16);
    while s.len() < n {
        s.push_str(WORDS[(rng.next() % WORDS.len() as u64) as usize]);
        s.push(if rng.next().is_multiple_of(9) { '\n' } else { ' ' });
    }
    s.truncate(n);
    s
}

/// One message of a session.
struct Line {
    c2s: bool,
    text: String,
    kind: Kind,
    method: &'static str,
    tool: Option<String>,
}

struct Workload {
    observations: Vec<Observation>,
    /// Per session: its server pid and lines.
    sessions: Vec<(u32, Vec<Line>)>,
    bytes: u64,
    messages: u64,
}

/// A fake GitHub-format token with a valid checksum (not a real secret).
fn fake_token(rng: &mut Rng) -> String {
    const A: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let body: String = (0..30).map(|_| A[(rng.next() % 62) as usize] as char).collect();
    let sum =
        mcp_monitor_pipeline::detect::secrets::base62(mcp_monitor_pipeline::detect::secrets::crc32(body.as_bytes()), 6);
    format!("ghp_{body}{sum}")
}

fn session_lines(rng: &mut Rng, arg_sizes: &[usize], result_sizes: &[usize], one_mib_every: u64) -> Vec<Line> {
    let l = |c2s, v: serde_json::Value, kind, method, tool: Option<String>| Line {
        c2s,
        text: v.to_string(),
        kind,
        method,
        tool,
    };
    let mut lines = vec![
        l(
            true,
            json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1"}}}),
            Kind::Request,
            "initialize",
            None,
        ),
        l(
            false,
            json!({"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"srv","version":"1"}}}),
            Kind::Response,
            "initialize",
            None,
        ),
        l(
            true,
            json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
            Kind::Notification,
            "notifications/initialized",
            None,
        ),
        l(
            true,
            json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
            Kind::Request,
            "tools/list",
            None,
        ),
    ];
    let tools: Vec<_> = (0..20)
        .map(|i| json!({"name": format!("tool_{i}"), "description": text(rng, 300), "inputSchema": {"type":"object","properties":{"path":{"type":"string","description":"file path"},"limit":{"type":"integer"}},"required":["path"]}}))
        .collect();
    lines.push(l(
        false,
        json!({"jsonrpc":"2.0","id":1,"result":{"tools":tools}}),
        Kind::Response,
        "tools/list",
        None,
    ));
    for id in 2..120u64 {
        let tool = format!("tool_{}", id % 20);
        let arg = rng.pick(arg_sizes);
        let res = if rng.next().is_multiple_of(one_mib_every) {
            1 << 20
        } else {
            rng.pick(result_sizes)
        };
        lines.push(l(true, json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{"path":"/srv/data/file.txt","query":text(rng, arg)}}}), Kind::Request, "tools/call", Some(tool.clone())));
        if id % 10 == 0 {
            lines.push(l(false, json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":id,"progress":50,"total":100}}), Kind::Notification, "notifications/progress", None));
        }
        let mut body = text(rng, res);
        if rng.next().is_multiple_of(200) {
            body.push_str(&format!("\nGITHUB_TOKEN={}\n", fake_token(rng)));
        }
        lines.push(l(
            false,
            json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":body}],"isError":false}}),
            Kind::Response,
            "tools/call",
            Some(tool),
        ));
    }
    lines
}

fn chunk(proc: ProcKey, fd: i32, dir: Direction, channel: u64, data: &[u8], ts: u64, flags: u8) -> Observation {
    Observation::Chunk(Chunk {
        ts_ns: ts,
        proc,
        tid: proc.pid,
        comm: "node".into(),
        uid: 1000,
        gid: 1000,
        cgroup_id: 7,
        fd,
        syscall: if dir == Direction::Ingress {
            Syscall::Read
        } else {
            Syscall::Write
        },
        direction: dir,
        fd_kind: FdKind::Pipe,
        flags,
        inode: channel,
        channel,
        peer: 0,
        orig_len: data.len() as u64,
        segment: 0,
        conn: ConnTuple::default(),
        data: data.to_vec(),
    })
}

fn notice(proc: ProcKey, fd: i32, channel: u64, ts: u64) -> Observation {
    Observation::WriterNotice(WriterNotice {
        ts_ns: ts,
        proc,
        fd,
        fd_kind: FdKind::Pipe,
        channel,
    })
}

fn workload_with(arg_sizes: &[usize], result_sizes: &[usize], one_mib_every: u64) -> Workload {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut w = Workload {
        observations: Vec::new(),
        sessions: Vec::new(),
        bytes: 0,
        messages: 0,
    };
    let mut ts = 1_000_000u64;
    for s in 0..64u32 {
        let client = ProcKey {
            pid: 10_000 + s,
            start_ns: 1,
        };
        let server = ProcKey {
            pid: 20_000 + s,
            start_ns: 2,
        };
        for (p, exe) in [(client, "/usr/bin/node"), (server, "/usr/local/bin/mcp-server")] {
            w.observations.push(Observation::Process(Box::new(ProcessInfo {
                pid: p.pid,
                start_ns: p.start_ns,
                exe: exe.into(),
                cmdline: vec![exe.into(), "--stdio".into()],
                cgroup: "/system.slice/agent.service".into(),
                complete: true,
                ..Default::default()
            })));
        }
        let (c2s, s2c) = (100 + 2 * s as u64, 101 + 2 * s as u64);
        // Writer notices: the client writes c2s, the server s2c.
        w.observations.push(notice(client, 5, c2s, ts));
        w.observations.push(notice(server, 1, s2c, ts));
        let lines = session_lines(&mut rng, arg_sizes, result_sizes, one_mib_every);
        // Cut each direction into reads of at most 64 KiB (pipe capacity),
        // coalescing small messages the way a busy reader sees them.
        let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        let mut first = [true, true];
        let mut flush = |dir: usize, pending: &mut [Vec<u8>; 2], obs: &mut Vec<Observation>, ts: &mut u64| {
            let (reader, fd, channel) = if dir == 0 { (server, 0, c2s) } else { (client, 7, s2c) };
            for piece in pending[dir].chunks(64 * 1024) {
                *ts += 10_000;
                let flags = if std::mem::take(&mut first[dir]) {
                    chunk_flags::NEW_STREAM
                } else {
                    0
                };
                obs.push(chunk(reader, fd, Direction::Ingress, channel, piece, *ts, flags));
            }
            pending[dir].clear();
        };
        for line in &lines {
            let dir = if line.c2s { 0 } else { 1 };
            w.bytes += line.text.len() as u64 + 1;
            w.messages += 1;
            pending[dir].extend_from_slice(line.text.as_bytes());
            pending[dir].push(b'\n');
            // Requests and responses alternate: the other side's reads end.
            if !pending[1 - dir].is_empty() {
                flush(1 - dir, &mut pending, &mut w.observations, &mut ts);
            }
        }
        flush(0, &mut pending, &mut w.observations, &mut ts);
        flush(1, &mut pending, &mut w.observations, &mut ts);
        w.sessions.push((server.pid, lines));
    }
    w
}

fn detector() -> Detector {
    // Every rule on, those off by default too.
    let mut rules = Rules::builtin();
    rules.disabled_credential_rules.clear();
    let cfg = DetectorConfig {
        rules,
        fingerprint_key: b"bench-key-bench-key-bench-key-00".to_vec(),
        persisted_tools: None,
        scan_budget_bytes: 4 << 20,
        dedup_window_seconds: 300,
        relay_memory_seconds: 3600,
    };
    Detector::new(cfg, Metrics::new()).unwrap()
}

/// Replays `obs` through a fresh pipeline, with `detector` if given.
fn run(obs: &[Observation], detector: Option<Detector>) -> u64 {
    let mut p = Pipeline::new(PipelineConfig::default(), Metrics::new());
    if let Some(d) = detector {
        p = p.with_detector(d);
    }
    let mut sink = JsonSink {
        buf: Vec::with_capacity(2 << 20),
        events: 0,
    };
    for o in obs {
        p.handle(o.clone(), &mut sink);
    }
    sink.events
}

/// A message decoded once, for the detector-only benchmark.
struct Decoded {
    line: usize,
    session: usize,
    params: Option<Box<RawValue>>,
    result: Option<Box<RawValue>>,
}

fn bench(c: &mut Criterion) {
    let w = workload_with(
        &[200, 400, 1024, 2048, 8192],
        &[200, 1024, 4096, 4096, 16384, 65536],
        200,
    );
    // Sanity: every message becomes an event, with or without detection.
    assert_eq!(run(&w.observations, None), w.messages);
    assert_eq!(run(&w.observations, Some(detector())), w.messages);
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("pipeline-workload.json");
    std::fs::write(&out, json!({"bytes": w.bytes, "messages": w.messages}).to_string()).unwrap();

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(w.bytes));
    g.sample_size(10);
    g.bench_function("replay", |b| {
        b.iter(|| black_box(run(black_box(&w.observations), None)))
    });
    g.bench_function("replay_with_detection", |b| {
        // The rules are compiled once per agent start, outside the
        // measured loop (as in `detection/messages` below).
        b.iter_batched(
            detector,
            |d| black_box(run(black_box(&w.observations), Some(d))),
            criterion::BatchSize::PerIteration,
        )
    });
    let small = workload_with(&[150], &[150], u64::MAX);
    assert_eq!(run(&small.observations, None), small.messages);
    g.throughput(Throughput::Elements(small.messages));
    g.bench_function("small_messages", |b| {
        b.iter(|| black_box(run(black_box(&small.observations), None)))
    });
    g.finish();

    // The detector alone.
    let parties: Vec<(Party, Party)> = w
        .sessions
        .iter()
        .map(|(pid, _)| {
            let p = |pid: u32, exe: &str| Party {
                process: Some(Arc::new(ProcessInfo {
                    pid,
                    exe: exe.into(),
                    cmdline: vec![exe.into()],
                    complete: true,
                    ..Default::default()
                })),
                pid: Some(pid),
                name: Some("srv".into()),
                version: None,
                ..Default::default()
            };
            (p(*pid, "/usr/local/bin/mcp-server"), p(pid - 10_000, "/usr/bin/node"))
        })
        .collect();
    let mut decoded = Vec::new();
    for (si, (_, lines)) in w.sessions.iter().enumerate() {
        for (li, line) in lines.iter().enumerate() {
            let m = jsonrpc::decode(line.text.as_bytes(), &jsonrpc::Limits::default())
                .unwrap()
                .into_messages()
                .remove(0);
            decoded.push(Decoded {
                line: li,
                session: si,
                params: m.params.map(|p| p.to_owned()),
                result: m.result.map(|r| r.to_owned()),
            });
        }
    }
    let session_ids: Vec<Arc<str>> = (0..w.sessions.len())
        .map(|i| Arc::from(format!("stdio:{i}:1")))
        .collect();
    // The events the pipeline would hand the detector, made outside the
    // measured loop: the bench measures the detector alone.
    let shared: Vec<(SharedParty, SharedParty)> = parties
        .iter()
        .map(|(s, c)| (s.clone().into(), c.clone().into()))
        .collect();
    let events: Vec<Event> = decoded
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let line = &w.sessions[m.session].1[m.line];
            let (server, client) = &shared[m.session];
            Event {
                time: i as i128,
                transport: Transport::Stdio,
                direction: if line.c2s {
                    Flow::ClientToServer
                } else {
                    Flow::ServerToClient
                },
                kind: line.kind,
                method: Some(line.method.to_owned()),
                id: None,
                tool: line.tool.clone(),
                prompt: None,
                resource: None,
                bytes: line.text.len() as u64,
                latency_ms: None,
                error_code: None,
                session: session_ids[m.session].clone(),
                protocol_version: None,
                server: server.clone(),
                client: client.clone(),
                http: None,
                payload: None,
            }
        })
        .collect();
    let mut g = c.benchmark_group("detection");
    g.throughput(Throughput::Bytes(w.bytes));
    g.sample_size(10);
    g.bench_function("messages", |b| {
        // A detector is compiled once per agent start: the rules and
        // automata are built outside the measured loop (each round still
        // starts with a fresh detector, with no state from the last one).
        b.iter_batched(
            detector,
            |mut d| {
                let mut alerts = 0;
                for (m, event) in decoded.iter().zip(&events) {
                    let line = &w.sessions[m.session].1[m.line];
                    let message = Message {
                        kind: line.kind,
                        id: None,
                        method: None,
                        params: m.params.as_deref(),
                        result: m.result.as_deref(),
                        error: None,
                        raw: line.text.as_bytes(),
                    };
                    let ctx = MessageCtx {
                        event,
                        message: &message,
                        client_key: Some(ProcKey {
                            pid: event.client.pid.unwrap(),
                            start_ns: 1,
                        }),
                    };
                    alerts += d.on_message(&ctx).len();
                }
                black_box(alerts)
            },
            criterion::BatchSize::PerIteration,
        )
    });
    // Every rule's keywords, those of rules off by default too.
    let secrets = SecretScanner::with_rules(builtin::RULES, b"bench-key-bench-key-bench-key-00", &[], &[]);
    let prefilter = Prefilter::new(&secrets.keyword_rules(), SECRET_NAME_FRAGMENTS, &lexicon::phrases());
    g.bench_function("prefilter", |b| {
        b.iter(|| {
            let mut hits = 0usize;
            for m in &decoded {
                let h = prefilter.scan(w.sessions[m.session].1[m.line].text.as_bytes());
                hits += h.credential_rules.len() + h.encoded as usize;
            }
            black_box(hits)
        })
    });
    g.finish();
    // The traced echo pair's request (`cargo xtask bench overhead`): one
    // 4 KiB line, its argument a single run of one letter.
    let mut echo =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":""#.to_owned();
    let tail = r#""}}}"#;
    echo.extend(std::iter::repeat_n('x', 4096 - echo.len() - tail.len()));
    echo.push_str(tail);
    assert_eq!(echo.len(), 4096);
    let mut g = c.benchmark_group("detection");
    g.throughput(Throughput::Bytes(echo.len() as u64));
    g.bench_function("prefilter_echo_4k", |b| {
        b.iter(|| black_box(prefilter.scan(black_box(echo.as_bytes()))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
