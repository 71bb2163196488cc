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

use monitor_common::{Direction, FdKind};

use crate::{
    buffer_budget::Budget,
    detect::{alert::Alert, Detector, MessageCtx},
    event::{Event, Flow, HttpInfo, Party},
    identity::{
        spiffe::{IdentityConfig, SpiffeMapper},
        workload::WorkloadResolver,
        ProcessInfo,
    },
    jsonrpc::{self, Kind, Message},
    mcp,
    metrics::Metrics,
    observation::{Chunk, Lifecycle, LifecycleKind, Observation, ProcKey},
    redact,
    session::{Pending, Session, SessionKey},
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
    /// Bytes at the start of a transfer that the kernel's discovery looks
    /// at (`capture.discovery_window_bytes`); the pipeline's re-look of
    /// lines uses the same window.
    pub discovery_window: usize,
    /// SPIFFE trust domain and mappings.
    pub identity: IdentityConfig,
    /// This host's name (for `{hostname}` in SPIFFE mappings).
    pub hostname: String,
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
            discovery_window: 1024,
            identity: IdentityConfig::default(),
            hostname: String::new(),
        }
    }
}

/// A kernel stream the agent asks the kernel to stop reporting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelStream {
    /// Process id (tgid) of the process that reads or writes the stream.
    pub pid: u32,
    /// Its file descriptor; `monitor_common::TLS_STREAM_FD` for TLS streams (keyed by `SSL` object).
    pub fd: i32,
    /// Inode number of the pipe or socket; for TLS streams, the address of the `SSL` object.
    pub inode: u64,
    /// Which half: what the process reads (ingress) or writes (egress).
    pub direction: Direction,
}

/// Capture decisions for the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// The stream is not MCP: stop capturing it (the kernel still looks at
    /// transfers that start like MCP).
    IgnoreStream(KernelStream),
    /// A stream judged not MCP showed MCP again: capture it again.
    CaptureStream(KernelStream),
    /// The stream was judged afresh as often as its budget allows this
    /// minute: ignore it without looking again (until `IgnoreStream`).
    QuietStream(KernelStream),
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

/// What a session keeps about a held (not yet emitted) message.
struct Held {
    event: Event,
    latency_s: Option<f64>,
    alerts: Vec<Alert>,
}

struct SessionState {
    session: Session,
    held: Vec<Held>,
    /// Server and client as last serialised (see `Pipeline::party`).
    parties: [Option<Party>; 2],
    /// SSE events (id and data) already reported, so that a stream resumed
    /// with `Last-Event-ID` does not report them again.
    sse_events: RecentSet,
}

/// The last [`RecentSet::CAPACITY`] values inserted.
#[derive(Default)]
struct RecentSet {
    set: std::collections::HashSet<u64>,
    order: std::collections::VecDeque<u64>,
}

impl RecentSet {
    const CAPACITY: usize = 1024;

    fn contains(&self, v: u64) -> bool {
        self.set.contains(&v)
    }

    fn insert(&mut self, v: u64) {
        if !self.set.insert(v) {
            return;
        }
        if self.order.len() >= Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(v);
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

/// Where a decoded message belongs: its session, its direction, and what
/// the transport knows of the other end.
struct Route {
    key: SessionKey,
    flow: Flow,
    /// The process at the other end, when the transport names it.
    peer: Option<ProcKey>,
    /// The client's view of a connection whose server end is seen too.
    mirror: bool,
}

/// What pairing a message with its request gives its event.
#[derive(Default)]
struct Pairing {
    /// The message's method, or for a response its request's.
    method: Option<String>,
    tool: Option<String>,
    prompt: Option<String>,
    resource: Option<String>,
    /// Seconds since the request, for a paired response.
    latency_s: Option<f64>,
}

/// At `max` entries, evicts the least recently active eighth in one go, so
/// a flood of new streams or connections costs amortised O(1) each.
fn make_room<K: Copy + Eq + std::hash::Hash, V>(
    map: &mut FxHashMap<K, V>,
    max: usize,
    last_ns: impl Fn(&V) -> u64,
    metrics: &Metrics,
) {
    if map.len() < max {
        return;
    }
    let mut by_age: Vec<(u64, K)> = map.iter().map(|(k, v)| (last_ns(v), *k)).collect();
    by_age.sort_unstable_by_key(|(t, _)| *t);
    let n = (max / 8).max(1);
    for (_, k) in by_age.into_iter().take(n) {
        map.remove(&k);
    }
    metrics.state_evictions.with_label_values(&["stream"]).inc_by(n as u64);
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
                self.metrics.processes_tracked.set(self.processes.len() as i64);
            }
            Observation::Lifecycle(l) => self.on_lifecycle(l),
            Observation::Workload(w) => {
                self.workloads.apply(w.update, w.ts_ns);
                self.metrics.kubernetes_pods.set(self.workloads.pod_count() as i64);
                self.metrics.buffered_bytes.set(self.budget.used() as i64);
            }
            Observation::CaptureStats(s) => self.capture_totals.record(s, &self.metrics),
            Observation::Tick { ts_ns } => {
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

    /// Ends the run: sessions still unconfirmed lose their held messages
    /// (counted).
    pub fn finish(&mut self, sink: &mut impl Sink) {
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

    fn on_chunk(&mut self, c: Chunk, sink: &mut impl Sink) {
        if c.writer_notice {
            if c.fd_kind.is_local_ipc() && c.channel != 0 {
                self.stdio
                    .writers
                    .insert((c.fd_kind == FdKind::Pipe, c.channel), (c.proc, c.fd));
            }
            return;
        }
        self.handles.count_chunk(&self.metrics, &c);
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
                self.metrics.state_evictions.with_label_values(&["quiet_stream"]).inc();
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

    // ---------------------------------------------------------- sessions

    /// The server (`server_side`) or client of a session, serialised once
    /// and reused until its identity or announced name changes. The cache
    /// keeps the `Arc`s it was built from, so pointer equality is sound.
    fn party(&mut self, key: &SessionKey, server_side: bool) -> Party {
        let Some(state) = self.sessions.get_mut(key) else {
            return Party::default();
        };
        let s = &state.session;
        let (proc, info) = if server_side {
            (s.server, &s.server_info)
        } else {
            (s.client, &s.client_info)
        };
        let process = proc.and_then(|p| self.processes.get(&p).cloned());
        let workload = process.as_deref().and_then(|p| self.workloads.resolve(p));
        let slot = &mut state.parties[server_side as usize];
        fn same<T: ?Sized>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
            match (a, b) {
                (Some(x), Some(y)) => Arc::ptr_eq(x, y),
                (None, None) => true,
                _ => false,
            }
        }
        if let Some(c) = slot {
            if c.pid == proc.map(|p| p.pid)
                && same(&c.process, &process)
                && same(&c.workload, &workload)
                && same(&c.name, &info.name)
                && same(&c.version, &info.version)
            {
                return c.clone();
            }
        }
        let mut p = Party {
            process,
            workload,
            pid: proc.map(|p| p.pid),
            name: info.name.clone(),
            version: info.version.clone(),
            json: None,
        };
        p.json = Some(p.to_raw());
        *slot = Some(p.clone());
        p
    }

    /// Stops capturing every stream and connection of a session that is not
    /// MCP, and forgets it.
    fn drop_session(&mut self, key: SessionKey, sink: &mut impl Sink) {
        let others: Vec<StreamId> = self
            .stdio
            .streams
            .values()
            .filter(|o| o.session == Some(key))
            .map(|o| o.id)
            .collect();
        for id in others {
            if let Some(mut o) = self.stdio.streams.remove(&id) {
                self.reject(&mut o, "not_mcp", sink);
                self.stdio.streams.insert(id, o);
            }
        }
        let conns: Vec<http_conn::ConnId> = self
            .http
            .conns
            .iter()
            .filter(|(_, c)| c.session == Some(key))
            .map(|(id, _)| *id)
            .collect();
        for id in conns {
            self.reject_conn(id, "not_mcp", sink);
        }
        if let Some(state) = self.sessions.remove(&key) {
            if let Some(d) = self.detector.as_mut() {
                d.end_session(&state.session.id);
            }
        }
        self.metrics.sessions_active.set(self.sessions.len() as i64);
    }

    /// One JSON-RPC message on `route`. Returns false when the session has
    /// shown itself not to be MCP (the caller stops capturing it).
    fn handle_message(
        &mut self,
        route: Route,
        msg: Message<'_>,
        ts_ns: u64,
        mut http: Option<HttpInfo>,
        sink: &mut impl Sink,
    ) -> bool {
        self.touch_session(&route, ts_ns);
        let pairing = self.pair(&route, &msg, ts_ns, http.as_mut());
        let latency_s = pairing.latency_s;
        let event = self.event(&route, &msg, ts_ns, pairing, http);
        let alerts = self.detect(&route, &msg, &event);
        self.emit_or_hold(route.key, event, latency_s, alerts, sink)
    }

    /// Creates the session of `route` if it is new, and notes the message.
    fn touch_session(&mut self, route: &Route, ts_ns: u64) {
        if !self.sessions.contains_key(&route.key) {
            self.make_room_for_session();
            self.sessions.insert(
                route.key,
                SessionState {
                    session: Session::new(route.key, ts_ns),
                    held: Vec::new(),
                    sse_events: RecentSet::default(),
                    parties: [None, None],
                },
            );
            self.metrics.sessions_active.set(self.sessions.len() as i64);
            self.metrics.sessions_total.inc();
        }
        let s = &mut self.sessions.get_mut(&route.key).expect("inserted above").session;
        if s.client.is_none() {
            s.client = route.peer;
        }
        s.mirror |= route.mirror;
        s.last_ns = ts_ns;
        s.messages += 1;
    }

    /// Pairs a response with its request (or remembers a request for its
    /// response), and learns what the session's messages tell: MCP methods,
    /// the client's requests, the server's results.
    fn pair(&mut self, route: &Route, msg: &Message<'_>, ts_ns: u64, http: Option<&mut HttpInfo>) -> Pairing {
        let max_pending = self.cfg.max_pending;
        let s = &mut self.sessions.get_mut(&route.key).expect("touched").session;
        let flow = route.flow;
        let mut pairing = Pairing {
            method: msg.method.as_deref().map(request::clip),
            ..Pairing::default()
        };
        match msg.kind {
            Kind::Request | Kind::Notification => {
                let m = msg.method.as_deref().unwrap_or("");
                if mcp::lookup(m).is_some() {
                    s.mcp_confirmed = true;
                }
                (pairing.tool, pairing.prompt, pairing.resource) = request::request_subject(m, msg.params);
                if let Some(h) = http {
                    h.header_mismatch = request::header_mismatch(h, m, msg.params);
                    for name in &h.header_mismatch {
                        self.metrics.http_header_mismatch.with_label_values(&[name]).inc();
                    }
                }
                if flow == Flow::ClientToServer {
                    s.observe_client_request(m, msg.params);
                }
                if let (Kind::Request, Some(id)) = (msg.kind, msg.id.clone()) {
                    let p = Pending {
                        method: m.to_owned(),
                        tool: pairing.tool.clone(),
                        prompt: pairing.prompt.clone(),
                        resource: pairing.resource.clone(),
                        ts_ns,
                    };
                    let evicted = s.pending_mut(flow).insert(id, p, max_pending);
                    if evicted > 0 {
                        self.metrics
                            .pending_evicted
                            .with_label_values(&["limit"])
                            .inc_by(evicted as u64);
                    }
                }
            }
            Kind::Response | Kind::Error => {
                let id = msg.id.clone().unwrap_or(jsonrpc::Id::Null);
                match s.pending_mut(flow.reverse()).take(&id) {
                    Some(p) => {
                        pairing.latency_s = Some(ts_ns.saturating_sub(p.ts_ns) as f64 / 1e9);
                        if let (Some(result), Flow::ServerToClient) = (msg.result, flow) {
                            s.observe_result(&p.method, result);
                        }
                        pairing.method = Some(p.method);
                        (pairing.tool, pairing.prompt, pairing.resource) = (p.tool, p.prompt, p.resource);
                    }
                    None => self.metrics.unpaired_responses.inc(),
                }
            }
        }
        pairing
    }

    /// The event of one message, with both parties and, when payloads are
    /// on, the redacted message.
    fn event(
        &mut self,
        route: &Route,
        msg: &Message<'_>,
        ts_ns: u64,
        pairing: Pairing,
        http: Option<HttpInfo>,
    ) -> Event {
        let payload = self.cfg.payloads.then(|| {
            let mut v: serde_json::Value = serde_json::from_slice(msg.raw).unwrap_or(serde_json::Value::Null);
            match &self.detector {
                Some(d) => redact::redact_json_with(&mut v, &|s| d.redact(s)),
                None => redact::redact_json(&mut v),
            };
            v
        });
        let server = self.party(&route.key, true);
        let client = self.party(&route.key, false);
        let s = &self.sessions[&route.key].session;
        Event {
            time: ts_ns as i128 + self.cfg.boot_offset_ns,
            transport: s.transport,
            direction: route.flow,
            kind: msg.kind,
            method: pairing.method,
            id: msg.id.clone(),
            tool: pairing.tool,
            prompt: pairing.prompt,
            resource: pairing.resource,
            bytes: msg.raw.len() as u64,
            latency_ms: pairing.latency_s.map(|l| l * 1e3),
            error_code: msg.error.as_ref().map(|e| e.code),
            session: s.id.clone(),
            protocol_version: s.protocol_version.clone(),
            server,
            client,
            http,
            payload,
        }
    }

    /// The detector's alerts for one message.
    fn detect(&mut self, route: &Route, msg: &Message<'_>, event: &Event) -> Vec<Alert> {
        let session = &self.sessions[&route.key].session;
        match self.detector.as_mut() {
            // Judged once, on the server's view: the client's view of the
            // same messages would repeat every alert (and look like a
            // second server offering the same tools).
            Some(_) if session.mirror => Vec::new(),
            Some(d) => d.on_message(&MessageCtx {
                time: event.time,
                transport: event.transport,
                session: &event.session,
                flow: route.flow,
                kind: msg.kind,
                method: event.method.as_deref(),
                id: event.id.as_ref(),
                tool: event.tool.as_deref(),
                resource: event.resource.as_deref(),
                params: msg.params,
                result: msg.result,
                raw: msg.raw,
                server: &event.server,
                client: &event.client,
                client_key: session.client,
                header_mismatch: event.http.as_ref().map_or(&[], |h| &h.header_mismatch),
            }),
            None => Vec::new(),
        }
    }

    /// Sends the event and its alerts once the session is MCP-confirmed
    /// (with the events held until then); holds them before. False when the
    /// session held as many as it may without showing an MCP method.
    fn emit_or_hold(
        &mut self,
        key: SessionKey,
        event: Event,
        latency_s: Option<f64>,
        alerts: Vec<Alert>,
        sink: &mut impl Sink,
    ) -> bool {
        let max_held = self.cfg.max_held;
        let state = self.sessions.get_mut(&key).expect("present");
        if state.session.mcp_confirmed {
            let held = std::mem::take(&mut state.held);
            if !held.is_empty() {
                // Held events predate what the session has learnt since
                // (names, versions): give them the current view.
                let server = self.party(&key, true);
                let client = self.party(&key, false);
                for mut h in held {
                    h.event.server = server.clone();
                    h.event.client = client.clone();
                    self.emit(h.event, h.latency_s, sink);
                    for a in h.alerts {
                        sink.alert(a);
                    }
                }
            }
            self.emit(event, latency_s, sink);
            for a in alerts {
                sink.alert(a);
            }
        } else if state.held.len() < max_held {
            state.held.push(Held {
                event,
                latency_s,
                alerts,
            });
        } else {
            let dropped = state.held.len() + 1;
            self.metrics
                .state_evictions
                .with_label_values(&["held_event"])
                .inc_by(dropped as u64);
            return false;
        }
        true
    }

    fn emit(&mut self, event: Event, latency_s: Option<f64>, sink: &mut impl Sink) {
        self.handles.count_message(&self.metrics, &event, latency_s);
        sink.event(event);
    }

    fn make_room_for_session(&mut self) {
        if self.sessions.len() < self.cfg.max_sessions {
            return;
        }
        let mut by_age: Vec<(u64, SessionKey)> = self
            .sessions
            .values()
            .map(|s| (s.session.last_ns, s.session.key))
            .collect();
        by_age.sort_unstable();
        let n = (self.cfg.max_sessions / 8).max(1);
        for (_, k) in by_age.into_iter().take(n) {
            self.end_session(&k);
        }
        self.metrics
            .state_evictions
            .with_label_values(&["session"])
            .inc_by(n as u64);
    }

    fn end_session(&mut self, key: &SessionKey) {
        let Some(state) = self.sessions.remove(key) else {
            return;
        };
        if let Some(d) = self.detector.as_mut() {
            d.end_session(&state.session.id);
        }
        let pending: usize = state.session.pending.iter().map(|p| p.len()).sum();
        if pending > 0 {
            self.metrics
                .pending_evicted
                .with_label_values(&["session_end"])
                .inc_by(pending as u64);
        }
        if !state.held.is_empty() {
            self.metrics
                .state_evictions
                .with_label_values(&["held_event"])
                .inc_by(state.held.len() as u64);
        }
        self.metrics.sessions_active.set(self.sessions.len() as i64);
    }

    // --------------------------------------------------------- lifecycle

    fn on_lifecycle(&mut self, l: Lifecycle) {
        if l.kind != LifecycleKind::Exit {
            return;
        }
        let gone = l.proc;
        self.stdio.streams.retain(|id, _| id.proc != gone);
        self.http.conns.retain(|id, _| id.proc != gone);
        self.stdio.writers.retain(|_, (w, _)| *w != gone);
        let ended: Vec<SessionKey> = self
            .sessions
            .values()
            .filter(|s| s.session.server == Some(gone) || s.session.client == Some(gone))
            .map(|s| s.session.key)
            .collect();
        for k in ended {
            self.end_session(&k);
        }
        self.processes.remove(&gone);
        self.workloads.forget(gone.pid, gone.start_ns);
        self.metrics.processes_tracked.set(self.processes.len() as i64);
    }

    fn on_tick(&mut self, now: u64) {
        self.last_tick_ns = now;
        self.workloads.expire(now);
        self.metrics.kubernetes_pods.set(self.workloads.pod_count() as i64);
        self.metrics.buffered_bytes.set(self.budget.used() as i64);
        let deadline = now.saturating_sub(self.cfg.request_timeout_ns);
        let mut timed_out = 0;
        for s in self.sessions.values_mut() {
            for p in s.session.pending.iter_mut() {
                timed_out += p.expire(deadline);
            }
        }
        if timed_out > 0 {
            self.metrics
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
        self.http.conns.retain(|_, c| c.last_ns >= idle);
    }
}

#[cfg(test)]
mod tests;

mod capture_stats;
mod http_conn;
mod metric_handles;
mod stdio;

use stdio::StreamId;
mod request;
