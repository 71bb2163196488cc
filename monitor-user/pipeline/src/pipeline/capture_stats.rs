//! The sensor's cumulative capture counters (kernel counters summed over
//! CPUs, per-program statistics) turned into metric increments.

use std::collections::HashMap;

use monitor_common::Counter;

use crate::{
    metrics::Metrics,
    observation::{CaptureCounter, CaptureStats},
};

/// The last totals seen, to turn snapshots into increments.
#[derive(Default)]
pub(super) struct CaptureTotals {
    /// Per counter.
    last_stats: HashMap<CaptureCounter, u64>,
    /// Per eBPF program: runs and run time in ns.
    last_program_stats: HashMap<String, (u64, u64)>,
}

impl CaptureTotals {
    /// Turns one snapshot of cumulative totals into metric increments.
    pub(super) fn record(&mut self, s: CaptureStats, metrics: &Metrics) {
        for (name, runs, ns) in s.programs {
            // Program names are the agent's own (a closed set).
            let (last_runs, last_ns) = self
                .last_program_stats
                .insert(name.clone(), (runs, ns))
                .unwrap_or((0, 0));
            metrics
                .capture
                .program_runs
                .with_label_values(&[&name])
                .inc_by(runs.saturating_sub(last_runs));
            metrics
                .capture
                .program_run_seconds
                .with_label_values(&[&name])
                .inc_by(ns.saturating_sub(last_ns) as f64 / 1e9);
        }
        for (counter, total) in s.counters {
            let c = match counter {
                CaptureCounter::TlsProbeTargets => {
                    metrics.capture.tls_probe_targets.set(total as i64);
                    continue;
                }
                CaptureCounter::TlsAttachErrors
                | CaptureCounter::GoTlsRefused
                | CaptureCounter::GoTlsNotMcp
                | CaptureCounter::BoringSslRefused
                | CaptureCounter::BoringSslVerified
                | CaptureCounter::TlsProbesRemoved
                | CaptureCounter::ExecNoticesDropped => None,
                CaptureCounter::Kernel(c) => Some(c),
            };
            let last = self.last_stats.insert(counter, total).unwrap_or(0);
            let delta = total.saturating_sub(last);
            if delta == 0 {
                continue;
            }
            let Some(c) = c else {
                match counter {
                    CaptureCounter::GoTlsRefused => metrics.capture.go_tls_refused.inc_by(delta),
                    CaptureCounter::GoTlsNotMcp => metrics.capture.go_tls_not_mcp.inc_by(delta),
                    CaptureCounter::BoringSslRefused => metrics.capture.boringssl_refused.inc_by(delta),
                    CaptureCounter::BoringSslVerified => metrics.capture.boringssl_verified.inc_by(delta),
                    CaptureCounter::TlsProbesRemoved => metrics.capture.tls_probes_removed.inc_by(delta),
                    CaptureCounter::ExecNoticesDropped => metrics.capture.exec_notices_dropped.inc_by(delta),
                    _ => metrics.capture.tls_attach_errors.inc_by(delta),
                }
                continue;
            };
            if let Some(reason) = c.drop_reason() {
                metrics.capture.dropped.with_label_values(&[reason]).inc_by(delta);
                continue;
            }
            match c {
                Counter::Truncated => metrics.capture.truncated.inc_by(delta),
                Counter::DiscoveryHits => metrics.capture.discovery_hits.inc_by(delta),
                Counter::DiscoveryDeferred => metrics.capture.discovery_deferred.inc_by(delta),
                Counter::ThreadIdMisses => metrics.capture.thread_id_misses.inc_by(delta),
                Counter::TlsDiscoveryDeferred => metrics.capture.tls_discovery_deferred.inc_by(delta),
                Counter::TlsReadsInterleaved => metrics.capture.tls_reads_interleaved.inc_by(delta),
                Counter::TlsObjectsReused => metrics.capture.tls_objects_reused.inc_by(delta),
                Counter::TlsUnbound => metrics.capture.tls_unbound.inc_by(delta),
                Counter::Relooks => metrics
                    .pipeline
                    .stream_relooks
                    .with_label_values(&["kernel_looked"])
                    .inc_by(delta),
                Counter::Resumed => metrics
                    .pipeline
                    .stream_relooks
                    .with_label_values(&["kernel_found"])
                    .inc_by(delta),
                _ => {}
            }
        }
    }
}
