//! Prometheus metrics (the agent serves them: `metrics_endpoint` in the
//! agent crate).
//!
//! Every metric is prefixed `mcp_monitor_` and documented in the README.
//! Label values come from closed sets (method labels fold unknown methods
//! into "other"), so no input can grow the number of series.

use std::sync::{atomic::AtomicBool, Arc, Mutex};

use serde::{Deserialize, Serialize};

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// All metrics of the agent.
pub struct Metrics {
    /// Registry (names prefixed `mcp_monitor_`) holding every metric below; `render` encodes it.
    pub registry: Registry,
    /// `mcp_monitor_messages_total`: MCP messages seen, by `transport`, `direction`, `type` and `method`
    /// (unknown methods fold into "other"), plus `namespace` and `workload` with `metrics.workload_labels`.
    pub messages: IntCounterVec,
    /// `mcp_monitor_message_bytes_total`: bytes of MCP messages seen, by `transport` and `direction`.
    pub message_bytes: IntCounterVec,
    /// `mcp_monitor_capture_events_total`: chunk records received from the kernel.
    pub capture_events: IntCounter,
    /// `mcp_monitor_capture_bytes_total`: payload bytes received from the kernel.
    pub capture_bytes: IntCounter,
    /// `mcp_monitor_capture_syscall_events_total`: chunk records by `syscall`, the syscall program that
    /// captured them (read, write, readv, writev, recvfrom, sendto, recvmsg, sendmsg).
    pub capture_syscall_events: IntCounterVec,
    /// `mcp_monitor_capture_syscall_bytes_total`: payload bytes by `syscall`, the syscall program that
    /// captured them.
    pub capture_syscall_bytes: IntCounterVec,
    /// `mcp_monitor_bpf_program_runs_total`: runs of each of the agent's eBPF programs, by `program`
    /// (needs `capture.program_stats` or `kernel.bpf_stats_enabled=1`).
    pub program_runs: IntCounterVec,
    /// `mcp_monitor_bpf_program_run_seconds_total`: time spent in each of the agent's eBPF programs, by
    /// `program` (needs `capture.program_stats` or `kernel.bpf_stats_enabled=1`).
    pub program_run_seconds: prometheus::CounterVec,
    /// `mcp_monitor_capture_dropped_total`: captures lost in the kernel, by `reason` (ring_full, copy_failed,
    /// args_map_full, process_map_full, stream_map_full, no_scratch, iovec_limit, tail_call_failed, regs_mismatch).
    pub capture_dropped: IntCounterVec,
    /// `mcp_monitor_capture_truncated_total`: chunks cut at the per-chunk capture cap.
    pub capture_truncated: IntCounter,
    /// `mcp_monitor_discovery_hits_total`: streams the kernel reported because their payload looked like
    /// JSON-RPC.
    pub discovery_hits: IntCounter,
    /// `mcp_monitor_discovery_deferred_total`: transfers of untracked streams that started like JSON
    /// and were not scanned, because the stream was scanned moments ago and found not MCP.
    pub discovery_deferred: IntCounter,
    /// `mcp_monitor_tls_probe_targets`: distinct TLS library files (libssl, statically linked node) with
    /// SSL_read/SSL_write uprobes attached.
    pub tls_probe_targets: IntGauge,
    /// `mcp_monitor_tls_attach_errors_total`: TLS library files found in a process whose uprobes could not
    /// be attached.
    pub tls_attach_errors: IntCounter,
    /// `mcp_monitor_tls_unbound_chunks_total`: TLS plaintext chunks captured before their SSL object could be
    /// tied to a socket (so without connection endpoints).
    pub tls_unbound: IntCounter,
    /// `mcp_monitor_frame_errors_total`: frames that were not usable JSON-RPC, by `reason` (not_json,
    /// invalid_utf8, not_jsonrpc, too_deep, batch_too_large, oversized, capture_gap, memory_budget).
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
    /// `mcp_monitor_http_header_mismatch_total`: requests whose `Mcp-Method` or `Mcp-Name` header
    /// disagrees with the body, by `header` (mcp-method, mcp-name).
    pub http_header_mismatch: IntCounterVec,
    /// `mcp_monitor_pending_requests_evicted_total`: requests forgotten before their response, by `reason`
    /// (limit, timeout, session_end).
    pub pending_evicted: IntCounterVec,
    /// `mcp_monitor_state_evictions_total`: state dropped to stay within limits, by `kind` (stream, session,
    /// held_event, chain_flow, quiet_stream).
    pub state_evictions: IntCounterVec,
    /// `mcp_monitor_events_written_total`: events written to the events output.
    pub events_written: IntCounter,
    /// `mcp_monitor_alerts_written_total`: alerts written to the alerts output.
    pub alerts_written: IntCounter,
    /// `mcp_monitor_output_errors_total`: write failures, by `output` (events, alerts, record, tool_state).
    pub output_errors: IntCounterVec,
    /// `mcp_monitor_processes_tracked`: processes the pipeline currently holds identity for.
    pub processes_tracked: IntGauge,
    /// `mcp_monitor_alerts_total`: alerts raised, by `category`, `rule` and `severity` (a repeat summary counts its
    /// repeats), plus `namespace` and `workload` with `metrics.workload_labels`.
    pub alerts: IntCounterVec,
    /// `mcp_monitor_alerts_deduplicated_total`: alerts folded into an open deduplication window (reported
    /// later as one repeat summary), by `category` and `rule`.
    pub alerts_deduplicated: IntCounterVec,
    /// `mcp_monitor_alerts_silenced_total`: alerts matched by a silence of the rules file and not emitted,
    /// by `category` and `rule`.
    pub alerts_silenced: IntCounterVec,
    /// `mcp_monitor_detection_budget_exceeded_total`: messages whose scanning stopped at the
    /// per-message byte budget.
    pub detection_budget_exceeded: IntCounter,
    /// `mcp_monitor_detection_scanned_bytes_total`: bytes examined by the credential and injection
    /// scanners after the prefilter.
    pub detection_scanned_bytes: IntCounter,
    /// `mcp_monitor_sink_sent_total`: alerts delivered, by `sink` (the sink's name in `[[sinks]]`).
    pub sink_sent: IntCounterVec,
    /// `mcp_monitor_sink_retried_total`: failed delivery attempts that will be retried after a backoff, by `sink`.
    pub sink_retried: IntCounterVec,
    /// `mcp_monitor_sink_spooled_total`: alerts written to a sink's on-disk spool, by `sink`.
    pub sink_spooled: IntCounterVec,
    /// `mcp_monitor_sink_dropped_total`: alerts a sink gave up on, by `sink` and `reason` (queue_full, spool_full,
    /// spool_error, rejected, encode_error, write_error, shutdown).
    pub sink_dropped: IntCounterVec,
    /// `mcp_monitor_buffered_bytes`: bytes held by partial messages of all streams and connections (bounded
    /// by `pipeline.max_buffered_bytes`).
    pub buffered_bytes: IntGauge,
    /// `mcp_monitor_sink_backlog`: alerts accepted by a sink and not yet delivered or dropped (in memory or in
    /// the spool), by `sink`.
    pub sink_backlog: IntGaugeVec,
    /// `mcp_monitor_sink_oldest_pending_seconds`: age of the oldest alert in a sink's backlog (0 when
    /// empty), by `sink`.
    pub sink_oldest_pending: GaugeVec,
    /// `mcp_monitor_sink_delivery_seconds`: histogram of successful delivery durations (one batch or message),
    /// by `sink`.
    pub sink_delivery: HistogramVec,
    /// `mcp_monitor_build_info`: constant 1, labelled with the agent `version` and `kernel` release.
    pub build_info: IntGaugeVec,
    /// `mcp_monitor_kubernetes_pods`: pods of this node known from the pod watch (deleted pods, kept 5
    /// minutes for late messages, not counted).
    pub kubernetes_pods: IntGauge,
    /// `mcp_monitor_kubernetes_synced`: 1 once the pod watch has listed the pods of this node.
    pub kubernetes_synced: IntGauge,
    /// `mcp_monitor_kubernetes_lists_total`: complete lists of this node's pods (the first, and one after
    /// each 410 Gone).
    pub kubernetes_lists: IntCounter,
    /// `mcp_monitor_kubernetes_pod_updates_total`: pod additions and changes received from the
    /// Kubernetes API.
    pub kubernetes_pod_updates: IntCounter,
    /// `mcp_monitor_kubernetes_errors_total`: pod watch errors, all retried, by `kind` (list, watch_start,
    /// watch, gone, owner_lookup).
    pub kubernetes_errors: IntCounterVec,
    /// `mcp_monitor_workload_labels_folded_total`: messages and alerts counted under
    /// `workload="other"` because `metrics.max_workload_label_values` was reached.
    pub workload_labels_folded: IntCounter,
    /// Distinct (namespace, workload) label pairs handed out, when
    /// `messages_total` and `alerts_total` carry them.
    workload_labels: Option<Mutex<WorkloadLabels>>,
    /// Set once probes are attached; `/readyz` reports it.
    pub ready: AtomicBool,
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
        let wl: &[&str] = if cfg.workload_labels {
            &["namespace", "workload"]
        } else {
            &[]
        };
        let with_wl = |labels: &[&'static str]| -> Vec<&'static str> {
            labels.iter().copied().chain(wl.iter().copied()).collect()
        };
        let registry = Registry::new_custom(Some(PREFIX.into()), None).expect("valid prefix");
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m;
                registry
                    .register(Box::new(m.clone()))
                    .expect("metric registered once");
                m
            }};
        }
        let counter = |name: &str, help: &str| IntCounter::with_opts(Opts::new(name, help)).unwrap();
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| IntCounterVec::new(Opts::new(name, help), labels).unwrap();
        let m = Metrics {
            messages: reg!(counter_vec(
                "messages_total",
                "MCP messages seen, by transport, direction, JSON-RPC type and method (unknown methods fold into \"other\"); with metrics.workload_labels also by namespace and workload.",
                &with_wl(&["transport", "direction", "type", "method"])
            )),
            message_bytes: reg!(counter_vec(
                "message_bytes_total",
                "Bytes of MCP messages seen, by transport and direction.",
                &["transport", "direction"]
            )),
            capture_events: reg!(counter("capture_events_total", "Chunk records received from the kernel.")),
            capture_bytes: reg!(counter("capture_bytes_total", "Payload bytes received from the kernel.")),
            capture_syscall_events: reg!(counter_vec(
                "capture_syscall_events_total",
                "Chunk records by the syscall program that captured them (read, write, readv, writev, recvfrom, sendto, recvmsg, sendmsg).",
                &["syscall"]
            )),
            capture_syscall_bytes: reg!(counter_vec(
                "capture_syscall_bytes_total",
                "Payload bytes by the syscall program that captured them.",
                &["syscall"]
            )),
            program_runs: reg!(counter_vec(
                "bpf_program_runs_total",
                "Runs of each of the agent's eBPF programs (needs capture.program_stats or kernel.bpf_stats_enabled=1).",
                &["program"]
            )),
            program_run_seconds: reg!(prometheus::CounterVec::new(
                Opts::new(
                    "bpf_program_run_seconds_total",
                    "Time spent in each of the agent's eBPF programs (needs capture.program_stats or kernel.bpf_stats_enabled=1)."
                ),
                &["program"]
            )
            .unwrap()),
            capture_dropped: reg!(counter_vec(
                "capture_dropped_total",
                "Captures lost, by reason (ring_full, copy_failed, args_map_full, process_map_full, stream_map_full, no_scratch, iovec_limit, tail_call_failed, regs_mismatch).",
                &["reason"]
            )),
            capture_truncated: reg!(counter("capture_truncated_total", "Chunks cut at the per-chunk capture cap.")),
            discovery_hits: reg!(counter("discovery_hits_total", "Streams the kernel reported because their payload looked like JSON-RPC.")),
            discovery_deferred: reg!(counter("discovery_deferred_total", "Transfers of untracked streams that started like JSON but were not scanned: the stream was scanned moments ago and found not MCP (scans thin out to 1 in 64 transfers; a stream quiet for 250 ms is scanned afresh).")),
            tls_probe_targets: reg!(IntGauge::new(
                "tls_probe_targets",
                "Distinct TLS library files (libssl, statically linked node) with SSL_read/SSL_write uprobes attached."
            )
            .unwrap()),
            tls_attach_errors: reg!(counter("tls_attach_errors_total", "TLS library files found in a process whose uprobes could not be attached (see the agent log).")),
            tls_unbound: reg!(counter("tls_unbound_chunks_total", "TLS plaintext chunks captured before their SSL object could be tied to a socket (no connection endpoints).")),
            frame_errors: reg!(counter_vec(
                "frame_errors_total",
                "Frames that were not usable JSON-RPC, by reason (not_json, binary, invalid_utf8, not_jsonrpc, too_deep, batch_too_large, oversized, capture_gap, memory_budget).",
                &["reason"]
            )),
            request_duration: reg!(HistogramVec::new(
                HistogramOpts::new("request_duration_seconds", "Time from request to response, by method.").buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0
                ]),
                &["method"]
            )
            .unwrap()),
            sessions_active: reg!(IntGauge::new("sessions_active", "MCP sessions currently open.").unwrap()),
            sessions_total: reg!(counter("sessions_total", "MCP sessions seen.")),
            streams: reg!(counter_vec(
                "streams_total",
                "Captured streams by verdict: confirmed (JSON-RPC), or rejected:<reason>.",
                &["verdict"]
            )),
            unpaired_responses: reg!(counter("unpaired_responses_total", "Responses whose request was not seen.")),
            http_header_mismatch: reg!(counter_vec(
                "http_header_mismatch_total",
                "Requests whose Mcp-Method or Mcp-Name header (stateless revision) disagrees with the body, by header.",
                &["header"]
            )),
            prelude_frames: reg!(counter(
                "prelude_frames_total",
                "Lines or HTTP bodies that were not JSON-RPC, seen before the first JSON-RPC message of a stream or connection; it is judged not MCP only past pipeline.max_prelude_frames of them."
            )),
            stream_relooks: reg!(counter_vec(
                "stream_relooks_total",
                "Streams and connections judged not MCP that were looked at again: kernel_looked (a transfer that starts like MCP ran discovery again), kernel_found (it found MCP and resumed capture), resumed (judged afresh), over_budget (not judged afresh: pipeline.max_relooks_per_minute spent).",
                &["result"]
            )),
            sse_replayed: reg!(counter(
                "sse_replayed_events_total",
                "SSE events sent again on a resumed stream (Last-Event-ID) with the id and data of one already reported in the session; reported once."
            )),
            pending_evicted: reg!(counter_vec(
                "pending_requests_evicted_total",
                "Requests forgotten before their response, by reason (limit, timeout, session_end).",
                &["reason"]
            )),
            state_evictions: reg!(counter_vec(
                "state_evictions_total",
                "State dropped to stay within limits, by kind (stream, session, held_event, chain_flow, quiet_stream).",
                &["kind"]
            )),
            events_written: reg!(counter("events_written_total", "Events written to the events output.")),
            alerts_written: reg!(counter("alerts_written_total", "Alerts written to the alerts output.")),
            output_errors: reg!(counter_vec("output_errors_total", "Write failures, by output.", &["output"])),
            processes_tracked: reg!(IntGauge::new("processes_tracked", "Processes the pipeline holds identity for.").unwrap()),
            alerts: reg!(counter_vec(
                "alerts_total",
                "Alerts raised, by category, rule and severity (a repeat summary counts its repeats); with metrics.workload_labels also by namespace and workload.",
                &with_wl(&["category", "rule", "severity"])
            )),
            alerts_deduplicated: reg!(counter_vec(
                "alerts_deduplicated_total",
                "Alerts folded into an open deduplication window (reported later as one repeat summary).",
                &["category", "rule"]
            )),
            alerts_silenced: reg!(counter_vec(
                "alerts_silenced_total",
                "Alerts matched by a silence of the rules file and not emitted.",
                &["category", "rule"]
            )),
            detection_budget_exceeded: reg!(counter(
                "detection_budget_exceeded_total",
                "Messages whose scanning stopped at the per-message byte budget."
            )),
            detection_scanned_bytes: reg!(counter(
                "detection_scanned_bytes_total",
                "Bytes examined by the credential and injection scanners after the prefilter."
            )),
            sink_sent: reg!(counter_vec(
                "sink_sent_total",
                "Alerts delivered by each alert sink (as configured in [[sinks]]; label = sink name).",
                &["sink"]
            )),
            sink_retried: reg!(counter_vec(
                "sink_retried_total",
                "Failed delivery attempts that will be retried (after a backoff), by sink.",
                &["sink"]
            )),
            sink_spooled: reg!(counter_vec(
                "sink_spooled_total",
                "Alerts written to a sink's on-disk spool (webhook sinks spool everything before sending).",
                &["sink"]
            )),
            sink_dropped: reg!(counter_vec(
                "sink_dropped_total",
                "Alerts a sink gave up on, by reason (queue_full, spool_full, spool_error, rejected, encode_error, write_error, shutdown).",
                &["sink", "reason"]
            )),
            buffered_bytes: reg!(IntGauge::new(
                "buffered_bytes",
                "Bytes held by partial messages of all streams and connections (bounded by pipeline.max_buffered_bytes)."
            )
            .unwrap()),
            sink_backlog: reg!(IntGaugeVec::new(
                Opts::new(
                    "sink_backlog",
                    "Alerts accepted by a sink and not yet delivered or dropped (in memory or in the spool), by sink."
                ),
                &["sink"]
            )
            .unwrap()),
            sink_oldest_pending: reg!(GaugeVec::new(
                Opts::new(
                    "sink_oldest_pending_seconds",
                    "Age of the oldest alert in a sink's backlog (0 when it is empty), by sink."
                ),
                &["sink"]
            )
            .unwrap()),
            sink_delivery: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "sink_delivery_seconds",
                    "Duration of successful deliveries (one batch or message), by sink."
                )
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                &["sink"]
            )
            .unwrap()),
            build_info: reg!(IntGaugeVec::new(
                Opts::new("build_info", "Constant 1, labelled with the agent version and kernel release."),
                &["version", "kernel"]
            )
            .unwrap()),
            kubernetes_pods: reg!(IntGauge::new(
                "kubernetes_pods",
                "Pods of this node known from the pod watch (deleted pods, kept 5 minutes for late messages, not counted)."
            )
            .unwrap()),
            kubernetes_synced: reg!(IntGauge::new(
                "kubernetes_synced",
                "1 once the pod watch has listed the pods of this node."
            )
            .unwrap()),
            kubernetes_lists: reg!(counter(
                "kubernetes_lists_total",
                "Complete lists of this node's pods: the first, and one after each 410 Gone (expired resourceVersion)."
            )),
            kubernetes_pod_updates: reg!(counter(
                "kubernetes_pod_updates_total",
                "Pod additions and changes received from the Kubernetes API."
            )),
            kubernetes_errors: reg!(counter_vec(
                "kubernetes_errors_total",
                "Pod watch errors, by kind (list, watch_start, watch, gone, owner_lookup); all are retried.",
                &["kind"]
            )),
            workload_labels_folded: reg!(counter(
                "workload_labels_folded_total",
                "Messages and alerts counted under workload=\"other\" because metrics.max_workload_label_values was reached."
            )),
            workload_labels: cfg.workload_labels.then(|| {
                Mutex::new(WorkloadLabels {
                    max: cfg.max_workload_label_values,
                    seen: Default::default(),
                    other: ("other".into(), "other".into()),
                })
            }),
            ready: AtomicBool::new(false),
            registry,
        };
        // Pre-create series so dashboards and alerts see zeros.
        for r in [
            "ring_full",
            "copy_failed",
            "args_map_full",
            "process_map_full",
            "stream_map_full",
            "no_scratch",
            "iovec_limit",
            "tail_call_failed",
            "regs_mismatch",
        ] {
            m.capture_dropped.with_label_values(&[r]);
        }
        for k in ["list", "watch_start", "watch", "gone", "owner_lookup"] {
            m.kubernetes_errors.with_label_values(&[k]);
        }
        for o in ["events", "alerts", "record", "tool_state"] {
            m.output_errors.with_label_values(&[o]);
        }
        for r in [
            "not_json",
            "invalid_utf8",
            "not_jsonrpc",
            "too_deep",
            "batch_too_large",
            "oversized",
            "capture_gap",
            "memory_budget",
            "binary",
        ] {
            m.frame_errors.with_label_values(&[r]);
        }
        for h in ["mcp-method", "mcp-name"] {
            m.http_header_mismatch.with_label_values(&[h]);
        }
        Arc::new(m)
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
        m.messages
            .with_label_values(&["stdio", "client_to_server", "request", "tools/call"])
            .inc();
        m.request_duration.with_label_values(&["tools/call"]).observe(0.01);
        let text = m.render();
        for name in [
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
