//! Prometheus metrics (the agent serves them: `metrics_endpoint` in the
//! agent crate).
//!
//! Every metric is prefixed `mcp_monitor_` and documented in the README.
//! Label values come from closed sets (method labels fold unknown methods
//! into "other"), so no input can grow the number of series.

use std::sync::{atomic::AtomicBool, Arc, Mutex};

use serde::{Deserialize, Serialize};

use prometheus::{
    core::Collector, CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All metrics of the agent, grouped by the stage that updates them.
pub struct Metrics {
    /// Registry (names prefixed `mcp_monitor_`) holding every metric below; `render` encodes it.
    pub registry: Registry,
    /// What the kernel captured and what the sensor attached.
    pub capture: CaptureMetrics,
    /// Frames, messages, streams and sessions.
    pub pipeline: PipelineMetrics,
    /// Alerts raised, folded and silenced, and the scanners' work.
    pub detection: DetectionMetrics,
    /// The local events and alerts files.
    pub output: OutputMetrics,
    /// Alert sinks (`[[sinks]]`).
    pub delivery: DeliveryMetrics,
    /// The Kubernetes pod watch.
    pub kubernetes: KubernetesMetrics,
    /// `mcp_monitor_build_info`: constant 1, labelled with the agent `version` and `kernel` release.
    pub build_info: IntGaugeVec,
    /// `mcp_monitor_syscall_hook`: constant 1, labelled with how system
    /// calls are hooked on this node (`hook`: `fexit` or `tracepoint`).
    pub syscall_hook: IntGaugeVec,
    /// `mcp_monitor_workload_labels_folded_total`: messages and alerts counted under
    /// `workload="other"` because `metrics.max_workload_label_values` was reached.
    pub workload_labels_folded: IntCounter,
    /// Distinct (namespace, workload) label pairs handed out, when
    /// `messages_total` and `alerts_total` carry them.
    workload_labels: Option<Mutex<WorkloadLabels>>,
    /// Set once probes are attached; `/readyz` reports it.
    pub ready: AtomicBool,
}

/// What the kernel captured and what the sensor attached.
pub struct CaptureMetrics {
    /// `mcp_monitor_capture_events_total`: chunk records received from the kernel.
    pub events: IntCounter,
    /// `mcp_monitor_capture_bytes_total`: payload bytes received from the kernel.
    pub bytes: IntCounter,
    /// `mcp_monitor_capture_syscall_events_total`: chunk records by `syscall`, the syscall program that
    /// captured them (read, write, readv, writev, recvfrom, sendto, recvmsg, sendmsg).
    pub syscall_events: IntCounterVec,
    /// `mcp_monitor_capture_syscall_bytes_total`: payload bytes by `syscall`, the syscall program that
    /// captured them.
    pub syscall_bytes: IntCounterVec,
    /// `mcp_monitor_bpf_program_runs_total`: runs of each of the agent's eBPF programs, by `program`
    /// (needs `capture.program_stats` or `kernel.bpf_stats_enabled=1`).
    pub program_runs: IntCounterVec,
    /// `mcp_monitor_bpf_program_run_seconds_total`: time spent in each of the agent's eBPF programs, by
    /// `program` (needs `capture.program_stats` or `kernel.bpf_stats_enabled=1`).
    pub program_run_seconds: CounterVec,
    /// `mcp_monitor_capture_dropped_total`: captures lost in the kernel, by `reason` (ring_full, copy_failed,
    /// args_map_full, process_map_full, stream_map_full, no_scratch, iovec_limit, tail_call_failed).
    pub dropped: IntCounterVec,
    /// `mcp_monitor_capture_truncated_total`: chunks cut at the per-chunk capture cap.
    pub truncated: IntCounter,
    /// `mcp_monitor_discovery_hits_total`: streams the kernel reported because their payload looked like
    /// JSON-RPC.
    pub discovery_hits: IntCounter,
    /// `mcp_monitor_discovery_deferred_total`: transfers of untracked streams that were not looked at
    /// (first bytes unread, no scan), because the stream was looked at moments ago and found not MCP.
    pub discovery_deferred: IntCounter,
    /// `mcp_monitor_tls_discovery_deferred_total`: `SSL_read`/`SSL_write`
    /// calls of untracked processes that discovery did not look at, because
    /// the connection was looked at moments ago and found not MCP.
    pub tls_discovery_deferred: IntCounter,
    /// `mcp_monitor_tls_reads_interleaved_total`: `SSL_read`s of a TLS
    /// connection without `SSL_set_fd` that followed a read of another
    /// socket while the connection's own stayed open (one event loop
    /// reading several connections); the connection kept its socket.
    pub tls_reads_interleaved: IntCounter,
    /// `mcp_monitor_tls_objects_reused_total`: `SSL_read`s of a TLS
    /// connection object without `SSL_set_fd` whose socket had been closed
    /// or replaced (the object reused for a new connection without an
    /// `SSL_free` seen); its socket was found again and its stream
    /// decisions forgotten.
    pub tls_objects_reused: IntCounter,
    /// `mcp_monitor_capture_thread_id_misses_total`: syscall hook runs that
    /// asked the kernel for the calling thread's id (not in the kernel's cache)
    pub thread_id_misses: IntCounter,
    /// `mcp_monitor_tls_probe_targets`: distinct files with TLS uprobes attached (libssl, statically linked
    /// node, Go programs with crypto/tls).
    pub tls_probe_targets: IntGauge,
    /// `mcp_monitor_tls_attach_errors_total`: TLS library files found in a process whose uprobes could not
    /// be attached.
    pub tls_attach_errors: IntCounter,
    /// `mcp_monitor_go_tls_refused_total`: Go programs with crypto/tls left unprobed because their layout is
    /// not known (Go version, architecture) or their tables are damaged (see the agent log).
    pub go_tls_refused: IntCounter,
    /// `mcp_monitor_go_tls_not_mcp_total`: Go programs with crypto/tls left unprobed because their strings
    /// hold none of MCP's names (`capture.tls_go = "mcp"`, the default).
    pub go_tls_not_mcp: IntCounter,
    /// `mcp_monitor_boringssl_refused_total`: Bun executables (Claude Code among them) left unprobed because
    /// their BoringSSL `SSL_read`/`SSL_write` were not recognised, or whose probes handed over no plaintext
    /// in their first captures and were taken off (see the agent log).
    pub boringssl_refused: IntCounter,
    /// `mcp_monitor_boringssl_verified_total`: Bun executables whose BoringSSL probes were verified by a
    /// capture that reads as plaintext.
    pub boringssl_verified: IntCounter,
    /// `mcp_monitor_tls_probes_removed_total`: probed files whose probes were taken off because the file was
    /// deleted and no process used it any more.
    pub tls_probes_removed: IntCounter,
    /// `mcp_monitor_exec_notices_dropped_total`: processes that ran a new executable which the TLS scan had
    /// no room to look at at once (the periodic scan finds them later, if they still run).
    pub exec_notices_dropped: IntCounter,
    /// `mcp_monitor_tls_unbound_chunks_total`: TLS plaintext chunks captured before their SSL object could be
    /// tied to a socket (so without connection endpoints).
    pub tls_unbound: IntCounter,
}

/// Frames, messages, streams and sessions.
pub struct PipelineMetrics {
    /// `mcp_monitor_messages_total`: MCP messages seen, by `transport`, `direction`, `type` and `method`
    /// (unknown methods fold into "other"), plus `namespace` and `workload` with `metrics.workload_labels`.
    pub messages: IntCounterVec,
    /// `mcp_monitor_message_bytes_total`: bytes of MCP messages seen, by `transport` and `direction`.
    pub message_bytes: IntCounterVec,
    /// `mcp_monitor_frame_errors_total`: frames that were not usable JSON-RPC, by `reason` (not_json,
    /// binary, invalid_utf8, not_jsonrpc, too_deep, batch_too_large, oversized, capture_gap, memory_budget,
    /// connection_replaced, process_exited, connection_idle).
    pub frame_errors: IntCounterVec,
    /// `mcp_monitor_request_duration_seconds`: histogram of the time from request to response, by `method`.
    pub request_duration: HistogramVec,
    /// `mcp_monitor_sessions_active`: MCP sessions currently open.
    pub sessions_active: IntGauge,
    /// `mcp_monitor_sessions_total`: MCP sessions seen.
    pub sessions_total: IntCounter,
    /// `mcp_monitor_streams_total`: captured streams by `verdict`: `confirmed` (JSON-RPC) or `rejected:<reason>`.
    pub streams: IntCounterVec,
    /// `mcp_monitor_unpaired_responses_total`: responses whose request was not seen.
    pub unpaired_responses: IntCounter,
    /// `mcp_monitor_sse_replayed_events_total`: SSE events re-sent on a resumed stream (Last-Event-ID) with the
    /// id and data of one already reported in the session; reported only once.
    pub sse_replayed: IntCounter,
    /// `mcp_monitor_prelude_frames_total`: non-JSON-RPC lines or HTTP bodies seen before a stream's first
    /// JSON-RPC message; past `pipeline.max_prelude_frames` of them the stream is judged not MCP.
    pub prelude_frames: IntCounter,
    /// `mcp_monitor_stream_relooks_total`: streams judged not MCP that were looked at again, by `result`
    /// (kernel_looked, kernel_found, resumed, over_budget).
    pub stream_relooks: IntCounterVec,
    /// `mcp_monitor_writer_waits_total`: streams whose first messages waited for their writer's notice, by
    /// how the wait ended (`outcome`: named, timed_out, full, overtaken, reader_exited, evicted,
    /// finished).
    pub writer_waits: IntCounterVec,
    /// `mcp_monitor_http_header_mismatch_total`: requests whose `Mcp-Method` or `Mcp-Name` header
    /// disagrees with the body, by `header` (mcp-method, mcp-name).
    pub http_header_mismatch: IntCounterVec,
    /// `mcp_monitor_pending_requests_evicted_total`: requests forgotten before their response, by `reason`
    /// (limit, timeout, session_end).
    pub pending_evicted: IntCounterVec,
    /// `mcp_monitor_state_evictions_total`: state dropped to stay within limits, by `kind` (stream, writer,
    /// session, held_event, chain_flow, quiet_stream).
    pub state_evictions: IntCounterVec,
    /// `mcp_monitor_buffered_bytes`: bytes held by partial messages of all streams and connections (bounded
    /// by `pipeline.max_buffered_bytes`).
    pub buffered_bytes: IntGauge,
    /// `mcp_monitor_processes_tracked`: processes the pipeline currently holds identity for.
    pub processes_tracked: IntGauge,
    /// `mcp_monitor_excluded_chunks_total`: chunks of processes excluded by `capture.exclude`, dropped.
    pub excluded_chunks: IntCounter,
}

/// Alerts raised, folded and silenced, and the scanners' work.
pub struct DetectionMetrics {
    /// `mcp_monitor_alerts_total`: alerts raised, by `category`, `rule` and `severity` (a repeat summary counts its
    /// repeats), plus `namespace` and `workload` with `metrics.workload_labels`.
    pub alerts: IntCounterVec,
    /// `mcp_monitor_alerts_deduplicated_total`: alerts folded into an open deduplication window (reported
    /// later as one repeat summary), by `category` and `rule`.
    pub deduplicated: IntCounterVec,
    /// `mcp_monitor_alerts_silenced_total`: alerts matched by a silence of the rules file and not emitted,
    /// by `category` and `rule`.
    pub silenced: IntCounterVec,
    /// `mcp_monitor_detection_budget_exceeded_total`: messages whose scanning stopped at the
    /// per-message byte budget.
    pub budget_exceeded: IntCounter,
    /// `mcp_monitor_detection_scanned_bytes_total`: bytes examined by the credential and injection
    /// scanners after the prefilter.
    pub scanned_bytes: IntCounter,
}

/// The local events and alerts files.
pub struct OutputMetrics {
    /// `mcp_monitor_events_written_total`: events written to the events output.
    pub events_written: IntCounter,
    /// `mcp_monitor_alerts_written_total`: alerts written to the alerts output.
    pub alerts_written: IntCounter,
    /// `mcp_monitor_output_errors_total`: write failures, by `output` (events, alerts, record, tool_state).
    pub errors: IntCounterVec,
}

/// Alert sinks (`[[sinks]]`), by `sink`, the sink's name.
pub struct DeliveryMetrics {
    /// `mcp_monitor_sink_sent_total`: alerts delivered, by `sink`.
    pub sent: IntCounterVec,
    /// `mcp_monitor_sink_retried_total`: failed delivery attempts that will be retried after a backoff, by `sink`.
    pub retried: IntCounterVec,
    /// `mcp_monitor_sink_spooled_total`: alerts written to a sink's on-disk spool, by `sink`.
    pub spooled: IntCounterVec,
    /// `mcp_monitor_sink_dropped_total`: alerts a sink gave up on, by `sink` and `reason` (queue_full, spool_full,
    /// spool_error, rejected, encode_error, write_error, shutdown).
    pub dropped: IntCounterVec,
    /// `mcp_monitor_sink_backlog`: alerts accepted by a sink and not yet delivered or dropped (in memory or in
    /// the spool), by `sink`.
    pub backlog: IntGaugeVec,
    /// `mcp_monitor_sink_oldest_pending_seconds`: age of the oldest alert in a sink's backlog (0 when
    /// empty), by `sink`.
    pub oldest_pending: GaugeVec,
    /// `mcp_monitor_sink_delivery_seconds`: histogram of successful delivery durations (one batch or message),
    /// by `sink`.
    pub duration: HistogramVec,
}

/// The Kubernetes pod watch.
pub struct KubernetesMetrics {
    /// `mcp_monitor_kubernetes_pods`: pods of this node known from the pod watch (deleted pods, kept 5
    /// minutes for late messages, not counted).
    pub pods: IntGauge,
    /// `mcp_monitor_kubernetes_synced`: 1 once the pod watch has listed the pods of this node.
    pub synced: IntGauge,
    /// `mcp_monitor_kubernetes_lists_total`: complete lists of this node's pods (the first, and one after
    /// each 410 Gone).
    pub lists: IntCounter,
    /// `mcp_monitor_kubernetes_pod_updates_total`: pod additions and changes received from the
    /// Kubernetes API.
    pub pod_updates: IntCounter,
    /// `mcp_monitor_kubernetes_errors_total`: pod watch errors, all retried, by `kind` (list, watch_start,
    /// watch, gone, owner_lookup).
    pub errors: IntCounterVec,
}

const PREFIX: &str = "mcp_monitor";

/// `[metrics]` settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Add `namespace` and `workload` labels to `messages_total` and
    /// `alerts_total` (the workload of the party on this host: the server,
    /// else the client).
    pub workload_labels: bool,
    /// Distinct (namespace, workload) pairs at most; later ones are
    /// counted under `namespace="other", workload="other"`.
    pub max_workload_label_values: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            workload_labels: false,
            max_workload_label_values: 100,
        }
    }
}

struct WorkloadLabels {
    max: usize,
    seen: std::collections::HashMap<(String, String), (Arc<str>, Arc<str>)>,
    other: (Arc<str>, Arc<str>),
}

/// Creates metrics and registers them, so that each is declared once.
struct Registrar {
    registry: Registry,
    /// `["namespace", "workload"]` with `metrics.workload_labels`, else empty.
    workload: &'static [&'static str],
}

impl Registrar {
    fn register<M: Collector + Clone + 'static>(&self, m: Result<M, prometheus::Error>) -> M {
        let m = m.expect("valid metric definition");
        self.registry
            .register(Box::new(m.clone()))
            .expect("metric registered once");
        m
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::with_opts(Opts::new(name, help)))
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels))
    }

    /// A counter vector with one label whose series for `values` exist
    /// from the start, so dashboards and alerts see zeros.
    fn counters_of(&self, name: &str, help: &str, label: &str, values: &[&str]) -> IntCounterVec {
        let v = self.counters(name, help, &[label]);
        for value in values {
            v.with_label_values(&[value]);
        }
        v
    }

    /// A counter vector with `labels` plus the workload labels when on.
    fn counters_by_workload(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let labels: Vec<&str> = labels.iter().chain(self.workload).copied().collect();
        self.counters(name, help, &labels)
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels))
    }

    fn histograms(&self, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
        self.register(HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        ))
    }
}

impl CaptureMetrics {
    fn new(r: &Registrar) -> Self {
        Self {
            events: r.counter("capture_events_total", "Chunk records received from the kernel."),
            bytes: r.counter("capture_bytes_total", "Payload bytes received from the kernel."),
            syscall_events: r.counters(
                "capture_syscall_events_total",
                "Chunk records by the syscall program that captured them (read, write, readv, writev, recvfrom, sendto, recvmsg, sendmsg).",
                &["syscall"],
            ),
            syscall_bytes: r.counters(
                "capture_syscall_bytes_total",
                "Payload bytes by the syscall program that captured them.",
                &["syscall"],
            ),
            program_runs: r.counters(
                "bpf_program_runs_total",
                "Runs of each of the agent's eBPF programs (needs capture.program_stats or kernel.bpf_stats_enabled=1).",
                &["program"],
            ),
            program_run_seconds: r.register(CounterVec::new(
                Opts::new(
                    "bpf_program_run_seconds_total",
                    "Time spent in each of the agent's eBPF programs (needs capture.program_stats or kernel.bpf_stats_enabled=1).",
                ),
                &["program"],
            )),
            dropped: r.counters_of(
                "capture_dropped_total",
                "Captures lost, by reason (ring_full, copy_failed, args_map_full, process_map_full, stream_map_full, no_scratch, iovec_limit, tail_call_failed).",
                "reason",
                &[
                    "ring_full",
                    "copy_failed",
                    "args_map_full",
                    "process_map_full",
                    "stream_map_full",
                    "no_scratch",
                    "iovec_limit",
                    "tail_call_failed",
                ],
            ),
            truncated: r.counter("capture_truncated_total", "Chunks cut at the per-chunk capture cap."),
            discovery_hits: r.counter(
                "discovery_hits_total",
                "Streams the kernel reported because their payload looked like JSON-RPC.",
            ),
            discovery_deferred: r.counter(
                "discovery_deferred_total",
                "Transfers of untracked streams that discovery did not look at (first bytes unread, no scan): the stream was looked at moments ago and found not MCP (looks thin out to 1 in 64 transfers, 1 in 256 for JSON or HTTP without MCP; a stream without a transfer for 25 timer ticks, 100 ms on Debian kernels and 25 ms at HZ=1000, is looked at afresh). Counted in batches, at the stream's next look or when it is closed or its slot is taken: up to 255 behind for each stream whose slot still holds a batch.",
            ),
            tls_discovery_deferred: r.counter(
                "tls_discovery_deferred_total",
                "SSL_read/SSL_write calls (OpenSSL's) of untracked processes that discovery did not look at: the connection was looked at moments ago and found not MCP (looks thin out as for other streams; SSL_free and SSL_set_fd forget a connection's looks). Counted in batches, as discovery_deferred_total.",
            ),
            tls_reads_interleaved: r.counter(
                "tls_reads_interleaved_total",
                "SSL_read calls on a TLS connection whose socket the kernel inferred (no SSL_set_fd: TLS over a memory BIO, as in Python's asyncio and anyio or node) that came after the thread read another socket while the connection's own was still open: one event loop reading several connections. The connection kept its socket and stream.",
            ),
            tls_objects_reused: r.counter(
                "tls_objects_reused_total",
                "SSL_read calls on a TLS connection object whose inferred socket had been closed or replaced: the object's address was reused for a new connection without an SSL_free seen (Bun's BoringSSL has none). Its socket was inferred again and its stream decisions forgotten.",
            ),
            thread_id_misses: r.counter(
                "capture_thread_id_misses_total",
                "Syscall hook runs that did not find the calling thread's id in the kernel's cache and asked the kernel for it (a helper call, ~20 ns): a thread's first calls, and every thread's first calls after any thread of the host starts, ends or execs. Far below the host's read and write rate on a steady host.",
            ),
            tls_probe_targets: r.gauge(
                "tls_probe_targets",
                "Distinct files with TLS uprobes attached (libssl, statically linked node, Go programs with crypto/tls).",
            ),
            tls_attach_errors: r.counter(
                "tls_attach_errors_total",
                "TLS library files found in a process whose uprobes could not be attached (see the agent log).",
            ),
            go_tls_refused: r.counter(
                "go_tls_refused_total",
                "Go programs with crypto/tls left unprobed: their layout is not known (Go version, architecture) or their tables are damaged (see the agent log).",
            ),
            go_tls_not_mcp: r.counter(
                "go_tls_not_mcp_total",
                "Go programs with crypto/tls left unprobed because their strings hold none of MCP's names (`protocolVersion`, the method names), so they do not handle MCP themselves (capture.tls_go = \"mcp\", the default; \"all\" probes them).",
            ),
            boringssl_refused: r.counter(
                "boringssl_refused_total",
                "Bun executables (Claude Code among them) left unprobed: their BoringSSL SSL_read/SSL_write were not recognised, or the probes' first captures were not plaintext and they were taken off (see the agent log).",
            ),
            boringssl_verified: r.counter(
                "boringssl_verified_total",
                "Bun executables whose BoringSSL probes were verified by a capture that reads as plaintext (HTTP/1.x, HTTP/2 or text).",
            ),
            tls_probes_removed: r.counter(
                "tls_probes_removed_total",
                "Probed files (libssl, Go and Bun executables) whose probes were taken off because the file was deleted and no process used it any more.",
            ),
            exec_notices_dropped: r.counter(
                "exec_notices_dropped_total",
                "Processes that ran a new executable which the TLS scan had no room to look at at once (the periodic scan finds them later, if they still run).",
            ),
            tls_unbound: r.counter(
                "tls_unbound_chunks_total",
                "TLS plaintext chunks captured before their SSL object could be tied to a socket (no connection endpoints).",
            ),
        }
    }
}

impl PipelineMetrics {
    fn new(r: &Registrar) -> Self {
        Self {
            messages: r.counters_by_workload(
                "messages_total",
                "MCP messages seen, by transport, direction, JSON-RPC type and method (unknown methods fold into \"other\"); with metrics.workload_labels also by namespace and workload.",
                &["transport", "direction", "type", "method"],
            ),
            message_bytes: r.counters(
                "message_bytes_total",
                "Bytes of MCP messages seen, by transport and direction.",
                &["transport", "direction"],
            ),
            frame_errors: r.counters_of(
                "frame_errors_total",
                "Frames that were not usable JSON-RPC, by reason (not_json, binary, invalid_utf8, not_jsonrpc, too_deep, batch_too_large, oversized, capture_gap, memory_budget; HTTP messages cut short: connection_replaced, process_exited, connection_idle; the HTTP and HTTP/2 reasons are listed in the README).",
                "reason",
                &[
                    "not_json",
                    "invalid_utf8",
                    "not_jsonrpc",
                    "too_deep",
                    "batch_too_large",
                    "oversized",
                    "capture_gap",
                    "memory_budget",
                    "binary",
                    "connection_replaced",
                    "process_exited",
                    "connection_idle",
                ],
            ),
            request_duration: r.histograms(
                "request_duration_seconds",
                "Time from request to response, by method.",
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ],
                &["method"],
            ),
            sessions_active: r.gauge("sessions_active", "MCP sessions currently open."),
            sessions_total: r.counter("sessions_total", "MCP sessions seen."),
            streams: r.counters(
                "streams_total",
                "Captured streams by verdict: confirmed (JSON-RPC), or rejected:<reason>.",
                &["verdict"],
            ),
            unpaired_responses: r.counter("unpaired_responses_total", "Responses whose request was not seen."),
            excluded_chunks: r.counter(
                "excluded_chunks_total",
                "Chunks of processes excluded by capture.exclude, dropped (their streams leave capture at the first).",
            ),
            sse_replayed: r.counter(
                "sse_replayed_events_total",
                "SSE events sent again on a resumed stream (Last-Event-ID) with the id and data of one already reported in the session; reported once.",
            ),
            prelude_frames: r.counter(
                "prelude_frames_total",
                "Lines or HTTP bodies that were not JSON-RPC, seen before the first JSON-RPC message of a stream or connection; it is judged not MCP only past pipeline.max_prelude_frames of them.",
            ),
            stream_relooks: r.counters(
                "stream_relooks_total",
                "Streams and connections judged not MCP that were looked at again: kernel_looked (a transfer that starts like MCP ran discovery again), kernel_found (it found MCP and resumed capture), resumed (judged afresh), over_budget (not judged afresh: pipeline.max_relooks_per_minute spent).",
                &["result"],
            ),
            writer_waits: r.counters_of(
                "writer_waits_total",
                "Streams whose first messages waited for the notice that names their writer (the kernel sends it when the first write ends, which can be after the reader had the bytes), by how the wait ended: named (the notice came), timed_out (pipeline.writer_wait_ms passed; the messages went on without a server), full (64 messages, an eighth of pipeline.max_buffered_bytes for the stream or a quarter for all), overtaken (the stream carries client-to-server messages and its reader, the server, had a message routed to its client, which may answer them; they went on, without the writer if still unknown), reader_exited, evicted (to make room for other streams), finished (end of a replay).",
                "outcome",
                &["named", "timed_out", "full", "overtaken", "reader_exited", "evicted", "finished"],
            ),
            http_header_mismatch: r.counters_of(
                "http_header_mismatch_total",
                "Requests whose Mcp-Method or Mcp-Name header (stateless revision) disagrees with the body, by header.",
                "header",
                &["mcp-method", "mcp-name"],
            ),
            pending_evicted: r.counters(
                "pending_requests_evicted_total",
                "Requests forgotten before their response, by reason (limit, timeout, session_end).",
                &["reason"],
            ),
            state_evictions: r.counters(
                "state_evictions_total",
                "State dropped to stay within limits, by kind (stream, writer, session, held_event, chain_flow, quiet_stream).",
                &["kind"],
            ),
            buffered_bytes: r.gauge(
                "buffered_bytes",
                "Bytes held by partial messages of all streams and connections (bounded by pipeline.max_buffered_bytes).",
            ),
            processes_tracked: r.gauge("processes_tracked", "Processes the pipeline holds identity for."),
        }
    }
}

impl DetectionMetrics {
    fn new(r: &Registrar) -> Self {
        Self {
            alerts: r.counters_by_workload(
                "alerts_total",
                "Alerts raised, by category, rule and severity (a repeat summary counts its repeats); with metrics.workload_labels also by namespace and workload.",
                &["category", "rule", "severity"],
            ),
            deduplicated: r.counters(
                "alerts_deduplicated_total",
                "Alerts folded into an open deduplication window (reported later as one repeat summary).",
                &["category", "rule"],
            ),
            silenced: r.counters(
                "alerts_silenced_total",
                "Alerts matched by a silence of the rules file and not emitted.",
                &["category", "rule"],
            ),
            budget_exceeded: r.counter(
                "detection_budget_exceeded_total",
                "Messages whose scanning stopped at the per-message byte budget.",
            ),
            scanned_bytes: r.counter(
                "detection_scanned_bytes_total",
                "Bytes examined by the credential and injection scanners after the prefilter.",
            ),
        }
    }
}

impl OutputMetrics {
    fn new(r: &Registrar) -> Self {
        Self {
            events_written: r.counter("events_written_total", "Events written to the events output."),
            alerts_written: r.counter("alerts_written_total", "Alerts written to the alerts output."),
            errors: r.counters_of(
                "output_errors_total",
                "Write failures, by output.",
                "output",
                &["events", "alerts", "record", "tool_state"],
            ),
        }
    }
}

impl DeliveryMetrics {
    fn new(r: &Registrar) -> Self {
        Self {
            sent: r.counters(
                "sink_sent_total",
                "Alerts delivered by each alert sink (as configured in [[sinks]]; label = sink name).",
                &["sink"],
            ),
            retried: r.counters(
                "sink_retried_total",
                "Failed delivery attempts that will be retried (after a backoff), by sink.",
                &["sink"],
            ),
            spooled: r.counters(
                "sink_spooled_total",
                "Alerts written to a sink's on-disk spool (webhook sinks spool everything before sending).",
                &["sink"],
            ),
            dropped: r.counters(
                "sink_dropped_total",
                "Alerts a sink gave up on, by reason (queue_full, spool_full, spool_error, rejected, encode_error, write_error, shutdown).",
                &["sink", "reason"],
            ),
            backlog: r.gauges(
                "sink_backlog",
                "Alerts accepted by a sink and not yet delivered or dropped (in memory or in the spool), by sink.",
                &["sink"],
            ),
            oldest_pending: r.register(GaugeVec::new(
                Opts::new(
                    "sink_oldest_pending_seconds",
                    "Age of the oldest alert in a sink's backlog (0 when it is empty), by sink.",
                ),
                &["sink"],
            )),
            duration: r.histograms(
                "sink_delivery_seconds",
                "Duration of successful deliveries (one batch or message), by sink.",
                &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
                &["sink"],
            ),
        }
    }
}

impl KubernetesMetrics {
    fn new(r: &Registrar) -> Self {
        Self {
            pods: r.gauge(
                "kubernetes_pods",
                "Pods of this node known from the pod watch (deleted pods, kept 5 minutes for late messages, not counted).",
            ),
            synced: r.gauge("kubernetes_synced", "1 once the pod watch has listed the pods of this node."),
            lists: r.counter(
                "kubernetes_lists_total",
                "Complete lists of this node's pods: the first, and one after each 410 Gone (expired resourceVersion).",
            ),
            pod_updates: r.counter(
                "kubernetes_pod_updates_total",
                "Pod additions and changes received from the Kubernetes API.",
            ),
            errors: r.counters_of(
                "kubernetes_errors_total",
                "Pod watch errors, by kind (list, watch_start, watch, gone, owner_lookup); all are retried.",
                "kind",
                &["list", "watch_start", "watch", "gone", "owner_lookup"],
            ),
        }
    }
}

impl Metrics {
    /// Creates and registers every metric, without workload labels.
    pub fn new() -> Arc<Self> {
        Self::with_config(&MetricsConfig::default())
    }

    /// The label values for a (namespace, workload) pair, or `None` when
    /// workload labels are off. Past the cap, new pairs fold into "other".
    pub fn workload_label_values(&self, namespace: &str, workload: &str) -> Option<(Arc<str>, Arc<str>)> {
        let mut w = self.workload_labels.as_ref()?.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = w.seen.get(&(namespace.to_owned(), workload.to_owned())) {
            return Some(v.clone());
        }
        if w.seen.len() >= w.max {
            self.workload_labels_folded.inc();
            return Some(w.other.clone());
        }
        let v: (Arc<str>, Arc<str>) = (namespace.into(), workload.into());
        w.seen.insert((namespace.to_owned(), workload.to_owned()), v.clone());
        Some(v)
    }

    /// Creates and registers every metric.
    pub fn with_config(cfg: &MetricsConfig) -> Arc<Self> {
        let r = Registrar {
            registry: Registry::new_custom(Some(PREFIX.into()), None).expect("valid prefix"),
            workload: if cfg.workload_labels {
                &["namespace", "workload"]
            } else {
                &[]
            },
        };
        Arc::new(Metrics {
            capture: CaptureMetrics::new(&r),
            pipeline: PipelineMetrics::new(&r),
            detection: DetectionMetrics::new(&r),
            output: OutputMetrics::new(&r),
            delivery: DeliveryMetrics::new(&r),
            kubernetes: KubernetesMetrics::new(&r),
            build_info: r.gauges(
                "build_info",
                "Constant 1, labelled with the agent version and kernel release.",
                &["version", "kernel"],
            ),
            syscall_hook: r.gauges(
                "syscall_hook",
                "Constant 1, labelled with how system calls are hooked: fexit (only the calls of interest run a program) or tracepoint (every system call of the host does).",
                &["hook"],
            ),
            workload_labels_folded: r.counter(
                "workload_labels_folded_total",
                "Messages and alerts counted under workload=\"other\" because metrics.max_workload_label_values was reached.",
            ),
            workload_labels: cfg.workload_labels.then(|| {
                Mutex::new(WorkloadLabels {
                    max: cfg.max_workload_label_values,
                    seen: Default::default(),
                    other: ("other".into(), "other".into()),
                })
            }),
            ready: AtomicBool::new(false),
            registry: r.registry,
        })
    }

    /// Sets `build_info` (the agent's version and the running kernel's
    /// release), which the agent reads from the system.
    pub fn set_build_info(&self, kernel_release: &str) {
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), kernel_release])
            .set(1);
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_contract_names() {
        let m = Metrics::new();
        m.set_build_info("6.1.0-test");
        m.syscall_hook.with_label_values(&["fexit"]).set(1);
        m.pipeline
            .messages
            .with_label_values(&["stdio", "client_to_server", "request", "tools/call"])
            .inc();
        m.pipeline
            .request_duration
            .with_label_values(&["tools/call"])
            .observe(0.01);
        let text = m.render();
        for name in [
            "mcp_monitor_syscall_hook{hook=\"fexit\"} 1",
            "mcp_monitor_messages_total{",
            "mcp_monitor_capture_events_total ",
            "mcp_monitor_capture_bytes_total ",
            "mcp_monitor_capture_dropped_total{reason=\"ring_full\"} 0",
            "mcp_monitor_frame_errors_total{reason=\"not_json\"} 0",
            "mcp_monitor_request_duration_seconds_bucket{",
            "mcp_monitor_sessions_active ",
            "mcp_monitor_build_info{kernel=\"6.1.0-test\",",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
