//! The whole pipeline on untrusted chunks: a client and a server exchanging
//! arbitrary bytes over pipes, or (first byte odd) over up to four TCP
//! connections and one TLS stream seen from both ends (HTTP, SSE, legacy
//! endpoint joining, stateless headers), cut at arbitrary places, with
//! gaps; every detector on, as deployed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_monitor_pipeline::{
    detect::{alert::Alert, rules::Rules, Detector, DetectorConfig},
    event::Event,
    metrics::Metrics,
    observation::{Chunk, Observation, ProcKey, WriterNotice},
    pipeline::{Pipeline, PipelineConfig, Sink},
};
use monitor_common::{ConnTuple, Direction, FdKind, Syscall};

struct Null(usize);
impl Sink for Null {
    fn event(&mut self, e: Event) {
        self.0 += 1;
        let _ = serde_json::to_vec(&e).unwrap();
    }
    fn alert(&mut self, a: Alert) {
        let _ = serde_json::to_vec(&a).unwrap();
    }
}

/// Compiled once: compiling the credential rules for every input (under
/// AddressSanitizer) left time for about one input a second.
static TEMPLATE: std::sync::LazyLock<std::sync::Mutex<Detector>> = std::sync::LazyLock::new(|| {
    std::sync::Mutex::new(
        Detector::new(
            DetectorConfig {
                rules: Rules::builtin(),
                fingerprint_key: b"fuzz-fingerprint-key".to_vec(),
                persisted_tools: None,
                scan_budget_bytes: 1 << 16,
                dedup_window_seconds: 300,
                relay_memory_seconds: 3600,
            },
            Metrics::new(),
        )
        .unwrap(),
    )
});

fuzz_target!(|data: &[u8]| {
    let cfg = PipelineConfig {
        max_frame: 4096,
        max_pending_stream_bytes: 8192,
        max_streams: 16,
        max_sessions: 16,
        max_pending: 8,
        max_held: 4,
        ..PipelineConfig::default()
    };
    // A fresh detector (no state from earlier inputs) with the compiled rules.
    let detector = TEMPLATE.lock().unwrap().fresh();
    let mut p = Pipeline::new(cfg, Metrics::new()).with_detector(detector);
    let mut sink = Null(0);
    let client = ProcKey { pid: 1, start_ns: 1 };
    let server = ProcKey { pid: 2, start_ns: 2 };
    let mut ts = 0;
    if let Some((&mode, tail)) = data.split_first() {
        if mode & 1 == 1 {
            http(&mut p, &mut sink, client, server, tail);
            p.handle(
                Observation::Tick {
                    ts_ns: 1_000_000_000_000,
                },
                &mut sink,
            );
            p.finish(&mut sink);
            return;
        }
    }
    let mut rest = data;
    // Each record: 1 control byte (direction, gap, length) + payload.
    while let Some((&ctl, tail)) = rest.split_first() {
        let len = ((ctl >> 2) as usize + 1).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        ts += 1;
        let c2s = ctl & 1 == 0;
        let (reader, writer, fd, channel) = if c2s {
            (server, client, 0, 10)
        } else {
            (client, server, 7, 11)
        };
        let notice = WriterNotice {
            ts_ns: ts,
            proc: writer,
            fd: if c2s { 7 } else { 1 },
            fd_kind: FdKind::Pipe,
            channel,
        };
        p.handle(Observation::WriterNotice(notice), &mut sink);
        let gap = ctl & 2 != 0;
        let read = Chunk {
            ts_ns: ts,
            proc: reader,
            tid: 0,
            comm: String::new(),
            uid: 0,
            gid: 0,
            cgroup_id: 0,
            fd,
            syscall: Syscall::Read,
            direction: Direction::Ingress,
            fd_kind: FdKind::Pipe,
            flags: monitor_common::chunk_flags::NEW_STREAM,
            inode: channel,
            channel,
            peer: 0,
            orig_len: payload.len() as u64 + if gap { 10 } else { 0 },
            segment: 0,
            conn: ConnTuple::default(),
            data: payload.to_vec(),
        };
        p.handle(Observation::Chunk(read), &mut sink);
    }
    p.handle(
        Observation::Tick {
            ts_ns: ts + 1_000_000_000_000,
        },
        &mut sink,
    );
    p.finish(&mut sink);
});

/// A loopback connection between client port `c` and server port 8000, as
/// the end `server_end` sees it.
fn tuple(c: u16, server_end: bool) -> ConnTuple {
    let mut t = ConnTuple {
        family: 2,
        ..Default::default()
    };
    t.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    t.remote_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    (t.local_port, t.remote_port) = if server_end { (8000, c) } else { (c, 8000) };
    t
}

/// TCP mode. Each record: 1 control byte (bit 0: client to server, bit 1:
/// gap, bits 2-3: connection, bits 4-7: length in 16-byte units) and the
/// payload, fed to the server (and the client) end of that connection;
/// connection 3 is TLS plaintext.
fn http(p: &mut Pipeline, sink: &mut Null, client: ProcKey, server: ProcKey, mut rest: &[u8]) {
    let mut ts = 0;
    let mut first = [true; 8];
    while let Some((&ctl, tail)) = rest.split_first() {
        let len = (((ctl >> 4) as usize + 1) * 16).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        ts += 1;
        let c2s = ctl & 1 == 0;
        let gap = ctl & 2 != 0;
        let conn = ((ctl >> 2) & 3) as usize;
        let tls = conn == 3;
        for server_end in [true, false] {
            let (proc, direction) = match (server_end, c2s) {
                (true, true) | (false, false) => (if server_end { server } else { client }, Direction::Ingress),
                _ => (if server_end { server } else { client }, Direction::Egress),
            };
            let key = conn * 2 + server_end as usize;
            let flags = if std::mem::replace(&mut first[key], false) {
                monitor_common::chunk_flags::NEW_STREAM
            } else {
                0
            };
            let fd = 20 + conn as i32;
            let c = Chunk {
                ts_ns: ts,
                proc,
                tid: 0,
                comm: String::new(),
                uid: 0,
                gid: 0,
                cgroup_id: 0,
                fd: if tls { -1 } else { fd },
                syscall: match (tls, direction) {
                    (true, Direction::Ingress) => Syscall::SslRead,
                    (true, _) => Syscall::SslWrite,
                    (false, Direction::Ingress) => Syscall::Recvfrom,
                    (false, _) => Syscall::Sendto,
                },
                direction,
                fd_kind: if tls { FdKind::Tls } else { FdKind::Tcp4 },
                flags,
                inode: if tls { 0xdead } else { 100 + conn as u64 },
                channel: 0,
                peer: 0,
                orig_len: payload.len() as u64 + if gap { 10 } else { 0 },
                segment: 0,
                conn: tuple(50_000 + conn as u16, server_end),
                data: payload.to_vec(),
            };
            p.handle(Observation::Chunk(c), sink);
        }
    }
}
