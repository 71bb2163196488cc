//! Pipeline throughput on a realistic capture: what `mcp-monitor replay`
//! (and the live agent after the kernel) does per byte.
//!
//! The workload is generated deterministically: 64 stdio sessions whose
//! traffic is mostly text and JSON (tools/list with schemas, tools/call with
//! 200 B - 8 KiB arguments, results from 200 B to 64 KiB and a few of 1 MiB,
//! progress notifications), cut into pipe-sized reads (at most 64 KiB, often
//! several messages per read) as the kernel reports them. Events are
//! serialised to JSON as the agent does. `cargo xtask bench` turns the
//! timing into MB/s and messages/s per core.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mcp_monitor::{
    event::Event,
    identity::ProcessInfo,
    metrics::Metrics,
    observation::{Chunk, Observation, ProcKey},
    pipeline::{Pipeline, PipelineConfig, Sink},
};
use monitor_common::{chunk_flags, ConnTuple, Direction, FdKind, Syscall};
use serde_json::json;

/// Serialises events like the agent's writer, into a reused buffer.
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
        s.push(if rng.next() % 9 == 0 { '\n' } else { ' ' });
    }
    s.truncate(n);
    s
}

/// Returns the observations and (payload bytes, messages).
pub fn workload() -> (Vec<Observation>, u64, u64) {
    workload_with(
        &[200, 400, 1024, 2048, 8192],
        &[200, 1024, 4096, 4096, 16384, 65536],
        200,
    )
}

/// Only small messages: the per-message cost.
pub fn small_workload() -> (Vec<Observation>, u64, u64) {
    workload_with(&[150], &[150], u64::MAX)
}

fn workload_with(arg_sizes: &[usize], result_sizes: &[usize], one_mib_every: u64) -> (Vec<Observation>, u64, u64) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut obs = Vec::new();
    let (mut bytes, mut messages) = (0u64, 0u64);
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
            obs.push(Observation::Process(Box::new(ProcessInfo {
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
        let mut lines: Vec<(bool, String)> = vec![
            (true, json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1"}}}).to_string()),
            (false, json!({"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"srv","version":"1"}}}).to_string()),
            (true, json!({"jsonrpc":"2.0","method":"notifications/initialized"}).to_string()),
            (true, json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}).to_string()),
        ];
        let tools: Vec<_> = (0..20)
            .map(|i| json!({"name": format!("tool_{i}"), "description": text(&mut rng, 300), "inputSchema": {"type":"object","properties":{"path":{"type":"string","description":"file path"},"limit":{"type":"integer"}},"required":["path"]}}))
            .collect();
        lines.push((
            false,
            json!({"jsonrpc":"2.0","id":1,"result":{"tools":tools}}).to_string(),
        ));
        for id in 2..120u64 {
            let arg = rng.pick(arg_sizes);
            let res = rng.pick(result_sizes);
            let res = if rng.next() % one_mib_every == 0 { 1 << 20 } else { res };
            lines.push((true, json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":format!("tool_{}", id % 20),"arguments":{"path":"/srv/data/file.txt","query":text(&mut rng, arg)}}}).to_string()));
            if id % 10 == 0 {
                lines.push((false, json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":id,"progress":50,"total":100}}).to_string()));
            }
            lines.push((false, json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":text(&mut rng, res)}],"isError":false}}).to_string()));
        }
        // Cut each direction into reads of at most 64 KiB (pipe capacity),
        // coalescing small messages the way a busy reader sees them.
        let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        let mut first = [true, true];
        let flush = |dir: usize, pending: &mut Vec<u8>, obs: &mut Vec<Observation>, ts: &mut u64, first: &mut bool| {
            let (reader, fd, channel) = if dir == 0 { (server, 0, c2s) } else { (client, 7, s2c) };
            for piece in pending.chunks(64 * 1024) {
                *ts += 10_000;
                obs.push(Observation::Chunk(Chunk {
                    ts_ns: *ts,
                    proc: reader,
                    tid: reader.pid,
                    comm: "node".into(),
                    uid: 1000,
                    gid: 1000,
                    cgroup_id: 7,
                    fd,
                    syscall: Syscall::Read,
                    direction: Direction::Ingress,
                    fd_kind: FdKind::Pipe,
                    flags: if std::mem::take(first) {
                        chunk_flags::NEW_STREAM
                    } else {
                        0
                    },
                    inode: channel,
                    channel,
                    peer: 0,
                    orig_len: piece.len() as u64,
                    segment: 0,
                    conn: ConnTuple::default(),
                    writer_notice: false,
                    data: piece.to_vec(),
                }));
            }
            pending.clear();
        };
        // Writer notices: the client writes c2s, the server s2c.
        for (writer, fd, channel) in [(client, 5, c2s), (server, 1, s2c)] {
            obs.push(Observation::Chunk(Chunk {
                ts_ns: ts,
                proc: writer,
                tid: writer.pid,
                comm: "node".into(),
                uid: 1000,
                gid: 1000,
                cgroup_id: 7,
                fd,
                syscall: Syscall::Write,
                direction: Direction::Egress,
                fd_kind: FdKind::Pipe,
                flags: chunk_flags::NEW_STREAM,
                inode: channel,
                channel,
                peer: 0,
                orig_len: 0,
                segment: 0,
                conn: ConnTuple::default(),
                writer_notice: true,
                data: Vec::new(),
            }));
        }
        for (c2s_dir, line) in lines {
            let dir = if c2s_dir { 0 } else { 1 };
            bytes += line.len() as u64 + 1;
            messages += 1;
            pending[dir].extend_from_slice(line.as_bytes());
            pending[dir].push(b'\n');
            // Requests and responses alternate: flush the other direction.
            let other = 1 - dir;
            if !pending[other].is_empty() {
                let mut p = std::mem::take(&mut pending[other]);
                let mut f = first[other];
                flush(other, &mut p, &mut obs, &mut ts, &mut f);
                first[other] = f;
            }
        }
        for dir in 0..2 {
            let mut p = std::mem::take(&mut pending[dir]);
            let mut f = first[dir];
            flush(dir, &mut p, &mut obs, &mut ts, &mut f);
            first[dir] = f;
        }
    }
    (obs, bytes, messages)
}

fn run(obs: &[Observation]) -> u64 {
    let mut p = Pipeline::new(PipelineConfig::default(), Metrics::new());
    let mut sink = JsonSink {
        buf: Vec::with_capacity(2 << 20),
        events: 0,
    };
    for o in obs {
        p.handle(o.clone(), &mut sink);
    }
    sink.events
}

fn bench(c: &mut Criterion) {
    let (obs, bytes, messages) = workload();
    // Sanity: every message becomes an event.
    assert_eq!(run(&obs), messages, "the workload must be processed completely");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("pipeline-workload.json");
    std::fs::write(&out, json!({"bytes": bytes, "messages": messages}).to_string()).unwrap();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10);
    g.bench_function("replay", |b| b.iter(|| black_box(run(black_box(&obs)))));
    let (small, small_bytes, small_messages) = small_workload();
    assert_eq!(run(&small), small_messages);
    g.throughput(Throughput::Elements(small_messages));
    g.bench_function("small_messages", |b| b.iter(|| black_box(run(black_box(&small)))));
    g.finish();
    let _ = small_bytes;
}

criterion_group!(benches, bench);
criterion_main!(benches);
