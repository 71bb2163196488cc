//! The whole pipeline on untrusted chunks: a client and a server exchanging
//! arbitrary bytes over pipes, cut at arbitrary places, with gaps; every
//! detector on, as deployed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_monitor::{
    detect::{alert::Alert, rules::Rules, Detector, DetectorConfig},
    event::Event,
    metrics::Metrics,
    observation::{Chunk, Observation, ProcKey},
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

fuzz_target!(|data: &[u8]| {
    let cfg = PipelineConfig { max_frame: 4096, max_pending_stream_bytes: 8192, max_streams: 16, max_sessions: 16, max_pending: 8, max_held: 4, ..PipelineConfig::default() };
    let detector = Detector::new(
        DetectorConfig {
            rules: Rules::builtin(),
            fingerprint_key: b"fuzz-fingerprint-key".to_vec(),
            state_dir: None,
            scan_budget_bytes: 1 << 16,
            dedup_window_seconds: 300,
        },
        Metrics::new(),
    )
    .unwrap();
    let mut p = Pipeline::new(cfg, Metrics::new()).with_detector(detector);
    let mut sink = Null(0);
    let client = ProcKey { pid: 1, start_ns: 1 };
    let server = ProcKey { pid: 2, start_ns: 2 };
    let mut ts = 0;
    let mut rest = data;
    // Each record: 1 control byte (direction, gap, length) + payload.
    while let Some((&ctl, tail)) = rest.split_first() {
        let len = ((ctl >> 2) as usize + 1).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        ts += 1;
        let c2s = ctl & 1 == 0;
        let (reader, writer, fd, channel) = if c2s { (server, client, 0, 10) } else { (client, server, 7, 11) };
        let notice = Chunk {
            ts_ns: ts, proc: writer, tid: 0, comm: String::new(), uid: 0, gid: 0, cgroup_id: 0,
            fd: if c2s { 7 } else { 1 }, syscall: Syscall::Write, direction: Direction::Egress, fd_kind: FdKind::Pipe,
            flags: 0, inode: channel, channel, peer: 0, orig_len: 0, segment: 0, conn: ConnTuple::default(),
            writer_notice: true, data: Vec::new(),
        };
        p.handle(Observation::Chunk(notice), &mut sink);
        let gap = ctl & 2 != 0;
        let read = Chunk {
            ts_ns: ts, proc: reader, tid: 0, comm: String::new(), uid: 0, gid: 0, cgroup_id: 0,
            fd, syscall: Syscall::Read, direction: Direction::Ingress, fd_kind: FdKind::Pipe,
            flags: monitor_common::chunk_flags::NEW_STREAM, inode: channel, channel, peer: 0,
            orig_len: payload.len() as u64 + if gap { 10 } else { 0 }, segment: 0, conn: ConnTuple::default(),
            writer_notice: false, data: payload.to_vec(),
        };
        p.handle(Observation::Chunk(read), &mut sink);
    }
    p.handle(Observation::Tick { ts_ns: ts + 1_000_000_000_000 }, &mut sink);
    p.finish(&mut sink);
});
