//! The userspace pipeline: observations in, events and capture decisions out.
//!
//! ```text
//! Chunk ──► stream (per reader process, fd, inode) ──► LineFramer ──► jsonrpc::decode
//!                                                                    │
//!          writer notices name the peer ──► role + session ◄─────────┘
//!                                               │
//!                                   pairing, handshake, tools ──► Event ──► Sink
//! ```
//!
//! It is deterministic: the same observations give the same events, which is
//! what makes `mcp-monitor replay` reproduce a live run. It does no I/O; the
//! [`Sink`] receives events and the [`Control`] decisions that the live agent
//! applies to the kernel maps.
//!
//! Every table is bounded (streams, sessions, pending requests, held events)
//! and every eviction is counted in `mcp_monitor_state_evictions_total` or
//! `mcp_monitor_pending_requests_evicted_total`.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use monitor_common::FdKind;

use crate::{
    buffer_budget::Budget,
    control::{Control, KernelStream},
    detect::{alert::Alert, Detector},
    event::Event,
    identity::{
        spiffe::{IdentityConfig, SpiffeMapper},
        workload::WorkloadResolver,
        ProcessInfo,
    },
    jsonrpc,
    metrics::Metrics,
    observation::{Chunk, Lifecycle, LifecycleKind, Observation, ProcKey, WriterNotice},
    session::SessionKey,
};

/// Pipeline limits and options.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Longest frame (line) accepted; longer ones are skipped and counted.
    pub max_frame: usize,
    /// Bytes all partial messages (lines, HTTP heads and bodies) may hold
    /// together; see [`crate::buffer_budget`].
    pub max_buffered: usize,
    /// JSON-RPC decoding limits (nesting depth, batch size).
    pub limits: jsonrpc::Limits,
    /// Include redacted payloads in events.
    pub payloads: bool,
    /// Added to `CLOCK_BOOTTIME` ns to get Unix ns.
    pub boot_offset_ns: i128,
    /// Most streams kept, and most HTTP connections; when full, the least recently active eighth is evicted.
    pub max_streams: usize,
    /// Most sessions kept; when full, the least recently active eighth is ended.
    pub max_sessions: usize,
    /// Requests awaiting a response, per session and direction.
    pub max_pending: usize,
    /// A request unanswered this long (ns) is dropped from the pending table and counted as timed out.
    pub request_timeout_ns: u64,
    /// Sessions, streams and HTTP connections silent this long (ns) are dropped at the next tick.
    pub session_idle_ns: u64,
    /// Messages held for a session not yet shown to be MCP; when exceeded the
    /// session is judged not MCP and its streams are dropped from capture.
    pub max_held: usize,
    /// Bytes a new stream may carry without producing a verdict.
    pub max_pending_stream_bytes: u64,
    /// Frames that are not JSON-RPC (lines on a stream, HTTP exchanges
    /// with a non-JSON body on a connection) a stream or connection may
    /// carry before its first JSON-RPC message without being judged not
    /// MCP: no stream is judged for good by what comes first (a banner, an
    /// OAuth discovery request, or a throwaway request sent to blind us).
    pub max_prelude_frames: u32,
    /// Times per minute a stream or connection judged not MCP may be judged
    /// afresh because a later transfer or line starts like MCP (see
    /// [`crate::relook`]).
    pub max_relooks_per_minute: u32,
    /// How long (ns) the messages of a stream whose session only its
    /// writer can name wait for the writer's notice (see
    /// [`writer_wait`]); 0 lets them go on at once.
    pub writer_wait_ns: u64,
    /// Bytes at the start of a transfer that the kernel's discovery looks
    /// at (`capture.discovery_window_bytes`); the pipeline's re-look of
    /// lines uses the same window.
    pub discovery_window: usize,
    /// SPIFFE trust domain and mappings.
    pub identity: IdentityConfig,
    /// This host's name (for `{hostname}` in SPIFFE mappings).
    pub hostname: String,
    /// Processes whose end of any session is not reported.
    pub exclude: Exclusions,
}

/// Processes whose chunks are dropped at once (`capture.exclude`): their
/// streams leave capture, and their sessions are seen, if at all, from the
/// other end only.
#[derive(Clone, Debug, Default)]
pub struct Exclusions {
    /// Excluded pids, each with the start time of the process first seen
    /// with it: a later process that reuses the pid is not excluded.
    pids: FxHashMap<u32, Option<u64>>,
    /// Kernel task names (the first 15 bytes, as the kernel keeps them).
    comms: Vec<String>,
}

impl Exclusions {
    /// Excludes `pids` and the processes whose task name is the first 15
    /// bytes of one of `executables`.
    pub fn new(pids: &[u32], executables: &[String]) -> Self {
        // Cut as the kernel cuts and as task names are decoded (a split
        // character becomes U+FFFD), so long names match.
        let comm = |e: &String| {
            let b = &e.as_bytes()[..e.len().min(15)];
            String::from_utf8_lossy(b).into_owned()
        };
        Self {
            pids: pids.iter().map(|&p| (p, None)).collect(),
            comms: executables.iter().map(comm).collect(),
        }
    }

    fn excludes(&mut self, proc: ProcKey, comm: &str) -> bool {
        if let Some(start) = self.pids.get_mut(&proc.pid) {
            match start {
                None => {
                    *start = Some(proc.start_ns);
                    return true;
                }
                Some(s) if *s == proc.start_ns => return true,
                Some(_) => {}
            }
        }
        self.comms.iter().any(|c| c == comm)
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            max_frame: 16 << 20,
            max_buffered: 64 << 20,
            limits: jsonrpc::Limits::default(),
            payloads: false,
            boot_offset_ns: 0,
            max_streams: 65_536,
            max_sessions: 16_384,
            max_pending: 1024,
            request_timeout_ns: 300 * 1_000_000_000,
            session_idle_ns: 1800 * 1_000_000_000,
            max_held: 32,
            max_pending_stream_bytes: 16 << 20,
            max_prelude_frames: 8,
            max_relooks_per_minute: 4,
            writer_wait_ns: 1_000_000_000,
            discovery_window: 1024,
            identity: IdentityConfig::default(),
            hostname: String::new(),
            exclude: Exclusions::default(),
        }
    }
}

/// Where the pipeline's output goes.
pub trait Sink {
    /// One MCP message.
    fn event(&mut self, event: Event);
    /// A detection; comes after the event of the message that raised it.
    fn alert(&mut self, _alert: Alert) {}
    /// A capture decision; ignored when replaying.
    fn control(&mut self, _control: Control) {}
}

impl Sink for Vec<Event> {
    fn event(&mut self, event: Event) {
        self.push(event);
    }
}

/// The pipeline. Feed it with [`Pipeline::handle`].
pub struct Pipeline {
    cfg: PipelineConfig,
    metrics: Arc<Metrics>,
    // Keys below are pids, fds, inodes: not chosen by the traffic, so the
    // fast Fx hash is safe. Maps keyed by wire values (JSON-RPC ids) keep
    // std's randomised SipHash.
    processes: FxHashMap<ProcKey, Arc<ProcessInfo>>,
    /// The stdio stage's streams and channel writers.
    stdio: stdio::StdioTables,
    sessions: FxHashMap<SessionKey, SessionState>,
    /// Metric handles by label values: `with_label_values` hashes and locks.
    handles: metric_handles::MetricHandles,
    /// Last capture totals, to turn snapshots into increments.
    capture_totals: capture_stats::CaptureTotals,
    last_tick_ns: u64,
    detector: Option<Detector>,
    /// Kubernetes pods of this node and SPIFFE mappings.
    workloads: WorkloadResolver,
    /// The HTTP stage's connections and what joins them into sessions.
    http: http_conn::HttpTables,
    /// Streams the kernel does not look at again until the time given (their
    /// re-judgement budget is spent), oldest first.
    quiet_streams: std::collections::VecDeque<(u64, KernelStream)>,
    /// What partial messages of all streams and connections hold together.
    budget: Budget,
}

/// At `max` entries, evicts the least recently active eighth in one go, so
/// a flood of new streams or connections costs amortised O(1) each; returns
/// what it evicted.
fn make_room<K: Copy + Eq + std::hash::Hash, V>(
    map: &mut FxHashMap<K, V>,
    max: usize,
    last_ns: impl Fn(&V) -> u64,
    metrics: &Metrics,
) -> Vec<(K, V)> {
    if map.len() < max {
        return Vec::new();
    }
    let mut by_age: Vec<(u64, K)> = map.iter().map(|(k, v)| (last_ns(v), *k)).collect();
    by_age.sort_unstable_by_key(|(t, _)| *t);
    let n = (max / 8).max(1);
    let evicted: Vec<(K, V)> = by_age
        .into_iter()
        .take(n)
        .filter_map(|(_, k)| map.remove(&k).map(|v| (k, v)))
        .collect();
    metrics
        .pipeline
        .state_evictions
        .with_label_values(&["stream"])
        .inc_by(n as u64);
    evicted
}

impl Pipeline {
    /// A pipeline with empty state; a SPIFFE mapping that fails to build turns SPIFFE IDs off (logged).
    pub fn new(cfg: PipelineConfig, metrics: Arc<Metrics>) -> Self {
        // The configuration was validated on load; a mapping that fails
        // here (a library caller's) turns SPIFFE IDs off rather than fail.
        let spiffe = SpiffeMapper::new(cfg.identity.clone(), &cfg.hostname).unwrap_or_else(|e| {
            log::error!("{e:#}; SPIFFE IDs are off");
            let off = IdentityConfig {
                trust_domain: String::new(),
                kubernetes_spiffe_ids: false,
                spiffe: Vec::new(),
            };
            SpiffeMapper::new(off, "").expect("an empty mapping is valid")
        });
        Self {
            workloads: WorkloadResolver::new(spiffe),
            http: http_conn::HttpTables::default(),
            quiet_streams: std::collections::VecDeque::new(),
            budget: Budget::new(cfg.max_buffered),
            cfg,
            metrics,
            processes: FxHashMap::default(),
            stdio: stdio::StdioTables::default(),
            sessions: FxHashMap::default(),
            handles: metric_handles::MetricHandles::default(),
            capture_totals: capture_stats::CaptureTotals::default(),
            last_tick_ns: 0,
            detector: None,
        }
    }

    /// The detector, when detection is on (to reload its rules).
    pub fn detector_mut(&mut self) -> Option<&mut Detector> {
        self.detector.as_mut()
    }

    /// Adds detection: every message also goes through `detector`.
    pub fn with_detector(mut self, detector: Detector) -> Self {
        self.detector = Some(detector);
        self
    }

    /// The configuration in use.
    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// Number of open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Processes one observation.
    pub fn handle(&mut self, obs: Observation, sink: &mut impl Sink) {
        match obs {
            Observation::Chunk(c) => self.on_chunk(c, sink),
            Observation::WriterNotice(n) => self.on_writer_notice(n, sink),
            Observation::Process(info)
                if self.stdio.exited.contains(ProcKey {
                    pid: info.pid,
                    start_ns: info.start_ns,
                }) =>
            {
                // Introduced again by a record that came after its exit.
            }
            Observation::Process(mut info) => {
                // The sensor scrubbed secret-named flags and common token
                // shapes; the credential rules (when detection is on) catch
                // every other format they know.
                if let Some(d) = self.detector.as_ref() {
                    for arg in info.cmdline.iter_mut() {
                        if let Some(clean) = d.redact(arg) {
                            *arg = clean;
                        }
                    }
                }
                let key = ProcKey {
                    pid: info.pid,
                    start_ns: info.start_ns,
                };
                self.processes.insert(key, Arc::from(info));
                self.metrics.pipeline.processes_tracked.set(self.processes.len() as i64);
            }
            Observation::Lifecycle(l) => self.on_lifecycle(l, sink),
            Observation::Workload(w) => {
                self.workloads.apply(w.update, w.ts_ns);
                self.metrics.kubernetes.pods.set(self.workloads.pod_count() as i64);
                self.metrics.pipeline.buffered_bytes.set(self.budget.used() as i64);
            }
            Observation::CaptureStats(s) => self.capture_totals.record(s, &self.metrics),
            Observation::Tick { ts_ns } => {
                let due = self.stdio.waits.take_due(ts_ns, self.cfg.writer_wait_ns);
                self.release_streams(due, writer_wait::Outcome::TimedOut, sink);
                self.on_tick(ts_ns);
                self.end_quiet(ts_ns, sink);
                let now = ts_ns as i128 + self.cfg.boot_offset_ns;
                if let Some(d) = self.detector.as_mut() {
                    for a in d.on_tick(now) {
                        sink.alert(a);
                    }
                }
            }
        }
    }

    /// Ends the run: messages waiting for their stream's writer go on
    /// without it; sessions still unconfirmed lose their held messages
    /// (counted).
    pub fn finish(&mut self, sink: &mut impl Sink) {
        let waiting = self.stdio.waits.take_all();
        self.release_streams(waiting, writer_wait::Outcome::Finished, sink);
        let keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
        for k in keys {
            self.end_session(&k);
        }
        if let Some(d) = self.detector.as_mut() {
            for a in d.flush() {
                sink.alert(a);
            }
        }
    }

    // ------------------------------------------------------------ chunks

    /// A writer notice names the writer of a channel; the streams that
    /// waited for it go on. One that comes after its process's exit still
    /// names the writer of what waited for it, and is forgotten then (a
    /// pipe is marked as its exit would have marked it).
    fn on_writer_notice(&mut self, n: WriterNotice, sink: &mut impl Sink) {
        if !n.fd_kind.is_local_ipc() || n.channel == 0 {
            return;
        }
        let channel = (n.fd_kind == FdKind::Pipe, n.channel);
        if !self.stdio.writers.contains_key(&channel) && self.stdio.writers.len() >= self.cfg.max_streams {
            self.evict_writers();
        }
        let writer = stdio::Writer {
            proc: n.proc,
            fd: n.fd,
            ts_ns: n.ts_ns,
        };
        let before = self.stdio.writers.insert(channel, writer);
        let named = self.stdio.waits.take_channel(channel);
        self.release_streams(named, writer_wait::Outcome::Named, sink);
        if self.stdio.exited.contains(n.proc) {
            match before {
                Some(w) => {
                    self.stdio.writers.insert(channel, w);
                }
                None => {
                    self.stdio.writers.remove(&channel);
                    // Named, and gone already: as if its exit came now.
                    if channel.0 {
                        self.stdio.writer_gone.insert(channel);
                    }
                }
            }
            // What it named went to sessions of a process whose exit has
            // ended its sessions already: end these too.
            self.end_sessions_of(n.proc);
        } else {
            self.stdio.writer_gone.remove(channel);
        }
    }

    /// Forgets the writers of an eighth of `pipeline.max_streams` channels:
    /// those no stream reads first, then the oldest. (The kernel names a
    /// writer once: a stream still read that lost its writer would wait
    /// for a notice that does not come again.)
    fn evict_writers(&mut self) {
        let live: rustc_hash::FxHashSet<(bool, u64)> = self
            .stdio
            .streams
            .values()
            .map(|s| (s.kind == FdKind::Pipe, s.channel))
            .collect();
        let mut by_age: Vec<(bool, u64, (bool, u64))> = self
            .stdio
            .writers
            .iter()
            .map(|(c, w)| (live.contains(c), w.ts_ns, *c))
            .collect();
        by_age.sort_unstable();
        let n = (self.cfg.max_streams / 8).max(1);
        for (_, _, c) in by_age.into_iter().take(n) {
            self.stdio.writers.remove(&c);
        }
        self.metrics
            .pipeline
            .state_evictions
            .with_label_values(&["writer"])
            .inc_by(n as u64);
    }

    /// Ends the sessions `proc` is the server or client of.
    fn end_sessions_of(&mut self, proc: ProcKey) {
        let ended: Vec<SessionKey> = self
            .sessions
            .values()
            .filter(|s| s.session.server == Some(proc) || s.session.client == Some(proc))
            .map(|s| s.session.key)
            .collect();
        for k in ended {
            self.end_session(&k);
        }
    }

    fn on_chunk(&mut self, c: Chunk, sink: &mut impl Sink) {
        self.handles.count_chunk(&self.metrics, &c);
        if self.cfg.exclude.excludes(c.proc, &c.comm) {
            self.metrics.pipeline.excluded_chunks.inc();
            // Stops the kernel sending the stream; TLS plaintext is keyed
            // by its SSL object there.
            let tls = c.fd_kind == FdKind::Tls;
            sink.control(Control::IgnoreStream(KernelStream {
                pid: c.proc.pid,
                fd: if tls { monitor_common::TLS_STREAM_FD } else { c.fd },
                inode: c.inode,
                direction: c.direction,
            }));
            return;
        }
        if matches!(c.fd_kind, FdKind::Tcp4 | FdKind::Tcp6 | FdKind::Tls) {
            return self.on_tcp_chunk(&c, sink);
        }
        self.on_stdio_chunk(c, sink);
    }

    /// Stops the kernel looking at `streams` again until `until_ns`: their
    /// re-judgement budget for the minute is spent.
    pub(crate) fn quiet(&mut self, streams: &[KernelStream], until_ns: u64, sink: &mut impl Sink) {
        for k in streams {
            sink.control(Control::QuietStream(*k));
            if self.quiet_streams.len() >= self.cfg.max_streams {
                // Forgotten: it stays quiet until the kernel forgets it.
                self.quiet_streams.pop_front();
                self.metrics
                    .pipeline
                    .state_evictions
                    .with_label_values(&["quiet_stream"])
                    .inc();
            }
            self.quiet_streams.push_back((until_ns, *k));
        }
    }

    /// Streams whose quiet minute is over are looked at again.
    fn end_quiet(&mut self, now_ns: u64, sink: &mut impl Sink) {
        while self.quiet_streams.front().is_some_and(|(until, _)| *until <= now_ns) {
            if let Some((_, k)) = self.quiet_streams.pop_front() {
                sink.control(Control::IgnoreStream(k));
            }
        }
    }

    // --------------------------------------------------------- lifecycle

    fn on_lifecycle(&mut self, l: Lifecycle, sink: &mut impl Sink) {
        if l.kind != LifecycleKind::Exit {
            return;
        }
        let gone = l.proc;
        let waiting = self.stdio.waits.take_reader(gone);
        self.release_streams(waiting, writer_wait::Outcome::ReaderExited, sink);
        self.stdio.streams.retain(|id, _| id.proc != gone);
        let metrics = &self.metrics;
        self.http.conns.retain(|id, c| {
            if id.proc != gone {
                return true;
            }
            c.count_cut(metrics, "process_exited");
            false
        });
        let gone_writer = &mut self.stdio.writer_gone;
        self.stdio.writers.retain(|c, w| {
            if w.proc == gone && c.0 {
                gone_writer.insert(*c);
            }
            w.proc != gone
        });
        self.stdio.exited.insert(gone);
        self.end_sessions_of(gone);
        self.processes.remove(&gone);
        self.workloads.forget(gone.pid, gone.start_ns);
        self.metrics.pipeline.processes_tracked.set(self.processes.len() as i64);
    }

    fn on_tick(&mut self, now: u64) {
        self.last_tick_ns = now;
        self.workloads.expire(now);
        self.metrics.kubernetes.pods.set(self.workloads.pod_count() as i64);
        self.metrics.pipeline.buffered_bytes.set(self.budget.used() as i64);
        let deadline = now.saturating_sub(self.cfg.request_timeout_ns);
        let mut timed_out = 0;
        for s in self.sessions.values_mut() {
            for p in s.session.pending.iter_mut() {
                timed_out += p.expire(deadline);
            }
        }
        if timed_out > 0 {
            self.metrics
                .pipeline
                .pending_evicted
                .with_label_values(&["timeout"])
                .inc_by(timed_out as u64);
        }
        let idle = now.saturating_sub(self.cfg.session_idle_ns);
        let stale: Vec<SessionKey> = self
            .sessions
            .values()
            .filter(|s| s.session.last_ns < idle)
            .map(|s| s.session.key)
            .collect();
        for k in stale {
            self.end_session(&k);
        }
        self.stdio.streams.retain(|_, s| s.last_ns >= idle);
        let metrics = &self.metrics;
        self.http.conns.retain(|_, c| {
            if c.last_ns >= idle {
                return true;
            }
            c.count_cut(metrics, "connection_idle");
            false
        });
    }
}

#[cfg(test)]
mod tests;

mod capture_stats;
mod http_conn;
mod http_wire;
mod local_ends;
mod metric_handles;
mod sessions;
mod stdio;
mod writer_wait;

use sessions::{Route, SessionState};
mod request;
