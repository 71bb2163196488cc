//! Prometheus handles of the pipeline's hottest metrics, resolved once per
//! label set: `with_label_values` hashes the labels and takes a lock, too
//! much for every message and every chunk.

use std::sync::Arc;

use prometheus::{Histogram, IntCounter};
use rustc_hash::FxHashMap;

use crate::{
    event::{Event, Party},
    mcp,
    metrics::Metrics,
    observation::Chunk,
};

/// Label values of `messages` with workload labels on: transport, direction, kind,
/// method, namespace, workload.
type WorkloadMessageLabels = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Arc<str>,
    Arc<str>,
);

/// The handles, by label values.
#[derive(Default)]
pub(super) struct MetricHandles {
    /// `messages_total` by transport, direction, kind and method.
    messages: FxHashMap<(&'static str, &'static str, &'static str, &'static str), IntCounter>,
    /// `messages_total` when it carries namespace/workload labels.
    workload_messages: FxHashMap<WorkloadMessageLabels, IntCounter>,
    /// `message_bytes_total` by transport and direction.
    bytes: FxHashMap<(&'static str, &'static str), IntCounter>,
    /// `request_duration_seconds` by method.
    durations: FxHashMap<&'static str, Histogram>,
    /// `capture_syscall_{events,bytes}_total` by `Syscall` value.
    syscalls: [Option<(IntCounter, IntCounter)>; 11],
}

impl MetricHandles {
    /// Counts one chunk from the kernel: events and bytes, in all and by
    /// system call.
    pub(super) fn count_chunk(&mut self, metrics: &Metrics, c: &Chunk) {
        metrics.capture.events.inc();
        metrics.capture.bytes.inc_by(c.data.len() as u64);
        let (events, bytes) = self.syscalls[c.syscall as usize].get_or_insert_with(|| {
            let sc = c.syscall.name();
            (
                metrics.capture.syscall_events.with_label_values(&[sc]),
                metrics.capture.syscall_bytes.with_label_values(&[sc]),
            )
        });
        events.inc();
        bytes.inc_by(c.data.len() as u64);
    }

    /// Counts one event: messages (with workload labels when on), bytes and,
    /// for a paired response, the request's duration.
    pub(super) fn count_message(&mut self, metrics: &Metrics, event: &Event, latency_s: Option<f64>) {
        let method_label = event.method.as_deref().map_or(mcp::OTHER, mcp::label);
        let (t, d, k) = (event.transport.as_str(), event.direction.as_str(), event.kind.as_str());
        let (ns, wl) = Party::metric_workload(&event.server, &event.client);
        match metrics.workload_label_values(ns, wl) {
            None => self
                .messages
                .entry((t, d, k, method_label))
                .or_insert_with(|| metrics.pipeline.messages.with_label_values(&[t, d, k, method_label]))
                .inc(),
            Some((ns, wl)) => self
                .workload_messages
                .entry((t, d, k, method_label, ns, wl))
                .or_insert_with_key(|(t, d, k, m, ns, wl)| {
                    metrics
                        .pipeline
                        .messages
                        .with_label_values(&[*t, *d, *k, *m, &**ns, &**wl])
                })
                .inc(),
        }
        self.bytes
            .entry((t, d))
            .or_insert_with(|| metrics.pipeline.message_bytes.with_label_values(&[t, d]))
            .inc_by(event.bytes);
        if let Some(l) = latency_s {
            self.durations
                .entry(method_label)
                .or_insert_with(|| metrics.pipeline.request_duration.with_label_values(&[method_label]))
                .observe(l);
        }
    }
}
