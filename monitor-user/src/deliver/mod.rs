//! Alert delivery: several sinks at once, each in its own thread, none able
//! to slow the pipeline or lose an alert without a metric saying so.
//!
//! The agent hands every alert to [`Deliveries::send`]: file and syslog
//! sinks get it through a bounded memory queue (full queue: `sink_dropped_
//! total{reason="queue_full"}`), webhook sinks write it to their on-disk
//! spool before `send` returns. Each sink thread then delivers:
//!
//! - [`file`]: JSON lines (or OCSF) to a file with size-based rotation and an
//!   fsync policy;
//! - [`syslog`]: RFC 5424 over UDP, TCP (octet counting, RFC 6587) or TLS
//!   (RFC 5425), message JSON or CEF, reconnecting with backoff while a
//!   bounded in-memory queue holds what is not yet written;
//! - [`webhook`]: HTTP(S) POST of batches (JSON array, Splunk HEC, Elastic
//!   bulk) read from the [`spool`], so alerts survive a receiver that is
//!   down, slow or hung, and an agent killed at any moment; retries with
//!   exponential backoff.
//!
//! Per sink: `sink_sent_total`, `sink_retried_total`, `sink_spooled_total`,
//! `sink_dropped_total{reason}`, `sink_delivery_seconds`, and from the
//! [`backlog`] ledger `sink_backlog` and `sink_oldest_pending_seconds`.

pub mod backlog;
pub mod cef;
pub mod file;
pub mod http;
pub mod ocsf;
pub mod sink_config;
pub mod spool;
pub mod syslog;
pub mod tls;
pub mod webhook;

pub use sink_config::{FileSink, Flavor, Format, Fsync, SinkConfig, SyslogProtocol, SyslogSink, WebhookSink};

use std::{
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, Receiver, SyncSender, TrySendError},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use prometheus::{Histogram, IntCounter};

use self::backlog::Backlog;
use crate::{
    detect::alert::{Alert, Severity},
    metrics::Metrics,
};

/// The metrics of one sink, labels resolved, and its backlog ledger.
#[derive(Clone)]
pub struct SinkMetrics {
    sent: IntCounter,
    /// Failed delivery attempts that will be retried (`sink_retried_total`).
    pub retried: IntCounter,
    /// Alerts written to the webhook spool (`sink_spooled_total`).
    pub spooled: IntCounter,
    /// Alerts accepted and not yet delivered or dropped (`sink_backlog`, `sink_oldest_pending_seconds`).
    pub backlog: Arc<Backlog>,
    /// Duration in seconds of successful deliveries (`sink_delivery_seconds`).
    pub delivery: Histogram,
    metrics: Arc<Metrics>,
    name: String,
}

impl SinkMetrics {
    /// Registers (zeroed) series for sink `name`.
    pub fn new(metrics: &Arc<Metrics>, name: &str) -> Self {
        for r in ["queue_full", "spool_full", "rejected", "shutdown"] {
            metrics.delivery.dropped.with_label_values(&[name, r]);
        }
        SinkMetrics {
            sent: metrics.delivery.sent.with_label_values(&[name]),
            retried: metrics.delivery.retried.with_label_values(&[name]),
            spooled: metrics.delivery.spooled.with_label_values(&[name]),
            backlog: Arc::new(Backlog::new(
                metrics.delivery.backlog.with_label_values(&[name]),
                metrics.delivery.oldest_pending.with_label_values(&[name]),
            )),
            delivery: metrics.delivery.duration.with_label_values(&[name]),
            metrics: metrics.clone(),
            name: name.to_owned(),
        }
    }

    /// The `n` oldest accepted alerts were delivered.
    pub fn delivered(&self, n: u64) {
        self.sent.inc_by(n);
        self.backlog.settle(n);
    }

    /// The `n` oldest accepted alerts were given up on, for `reason`.
    pub fn gave_up(&self, reason: &str, n: u64) {
        self.dropped(reason, n);
        self.backlog.settle(n);
    }

    /// Counts `n` alerts refused before the sink accepted them.
    pub fn dropped(&self, reason: &str, n: u64) {
        if n > 0 {
            self.metrics
                .delivery
                .dropped
                .with_label_values(&[&self.name, reason])
                .inc_by(n);
        }
    }
}

/// Rate-limited error logging for a sink (once a minute per sink).
pub(crate) struct ErrorLog {
    name: String,
    last: Option<Instant>,
}

impl ErrorLog {
    pub(crate) fn new(name: &str) -> Self {
        ErrorLog {
            name: name.to_owned(),
            last: None,
        }
    }

    pub(crate) fn error(&mut self, msg: &str) {
        let now = Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.last = Some(now);
            log::error!("sink {}: {msg} (repeats within a minute are only counted)", self.name);
        }
    }
}

/// Exponential backoff between delivery attempts: 1 s doubling to 60 s.
pub(crate) struct Backoff {
    next: Option<Instant>,
    delay: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            next: None,
            delay: Duration::from_secs(1),
        }
    }
    pub(crate) fn ready(&self) -> bool {
        self.next.is_none_or(|t| Instant::now() >= t)
    }
    /// Time until the next attempt.
    pub(crate) fn wait(&self) -> Duration {
        self.next
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(Instant::now()))
    }
    pub(crate) fn failed(&mut self) {
        self.next = Some(Instant::now() + self.delay);
        self.delay = (self.delay * 2).min(Duration::from_secs(60));
    }
    pub(crate) fn succeeded(&mut self) {
        self.next = None;
        self.delay = Duration::from_secs(1);
    }
}

/// Encodes one alert as a single line (no trailing newline).
pub fn encode(alert: &Alert, format: Format) -> anyhow::Result<Vec<u8>> {
    Ok(match format {
        Format::Json => serde_json::to_vec(alert)?,
        Format::Ocsf => serde_json::to_vec(&ocsf::finding(alert))?,
        Format::Cef => cef::encode(alert).into_bytes(),
    })
}

/// Replaces `${VAR}` with the variable's value (empty when unset).
pub fn expand_env(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        match rest[i + 2..].find('}') {
            Some(j) => {
                out.push_str(&std::env::var(&rest[i + 2..i + 2 + j]).unwrap_or_default());
                rest = &rest[i + 2 + j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// An alert on its way to a sink's thread; its bytes count against the
/// queue's limit until the thread is done with it.
pub struct Queued {
    alert: Arc<Alert>,
    bytes: usize,
    held: Arc<AtomicUsize>,
}

impl std::ops::Deref for Queued {
    type Target = Alert;
    fn deref(&self) -> &Alert {
        &self.alert
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// How a running sink takes alerts.
enum Intake {
    /// A memory queue to the sink's thread, bounded by alerts and by bytes
    /// (the bytes of the alerts in it, shared with its `Queued` items).
    Queue(SyncSender<Queued>, Arc<AtomicUsize>),
    /// Straight to the sink's spool, on the caller's thread.
    Spool(Arc<webhook::Intake>),
}

struct Running {
    name: String,
    min_severity: Option<Severity>,
    intake: Intake,
    done: Receiver<()>,
    thread: JoinHandle<()>,
    metrics: SinkMetrics,
}

/// Every configured sink, running.
#[derive(Default)]
pub struct Deliveries {
    sinks: Vec<Running>,
}

/// Alerts a sink queue holds before new ones are dropped (and counted).
const QUEUE: usize = 65_536;

/// Bytes (of encoded alerts) a sink queue holds before new ones are dropped
/// (and counted): alerts carry evidence of varying size, so a count alone
/// does not bound memory.
pub const QUEUE_BYTES: usize = 32 << 20;

impl Deliveries {
    /// Starts a thread per sink. `state_dir` holds webhook spools by default.
    pub fn start(configs: &[SinkConfig], state_dir: &Path, metrics: &Arc<Metrics>) -> anyhow::Result<Deliveries> {
        let mut sinks = Vec::new();
        let mut names = Vec::new();
        for (i, cfg) in configs.iter().enumerate() {
            cfg.validate(i)?;
            let name = cfg.name(i);
            anyhow::ensure!(
                !names.contains(&name),
                "two sinks are named {name:?}: names must be unique"
            );
            names.push(name.clone());
            let m = SinkMetrics::new(metrics, &name);
            let (done_tx, done) = mpsc::sync_channel::<()>(1);
            let (intake, worker): (Intake, Box<dyn FnOnce() + Send>) = match cfg {
                SinkConfig::File(c) => {
                    let (tx, rx) = mpsc::sync_channel::<Queued>(QUEUE);
                    let w = file::FileWorker::open(c, &name, m.clone())?;
                    (Intake::Queue(tx, Arc::default()), Box::new(move || w.run(rx)))
                }
                SinkConfig::Syslog(c) => {
                    let (tx, rx) = mpsc::sync_channel::<Queued>(QUEUE);
                    let w = syslog::SyslogWorker::new(c, &name, m.clone())?;
                    (Intake::Queue(tx, Arc::default()), Box::new(move || w.run(rx)))
                }
                SinkConfig::Webhook(c) => {
                    let dir = c
                        .spool_dir
                        .clone()
                        .unwrap_or_else(|| state_dir.join("spool").join(&name));
                    let w = webhook::WebhookWorker::new(c, &name, &dir, m.clone())?;
                    (Intake::Spool(w.intake()), Box::new(move || w.run()))
                }
            };
            let thread = std::thread::Builder::new()
                .name(format!("sink-{name}"))
                .spawn(move || {
                    worker();
                    let _ = done_tx.send(());
                })?;
            log::info!("alert sink {name} started");
            sinks.push(Running {
                name,
                min_severity: cfg.min_severity(),
                intake,
                done,
                thread,
                metrics: m,
            });
        }
        Ok(Deliveries { sinks })
    }

    /// Number of sinks.
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    /// No sink configured.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Offers `alert` to every sink that wants its severity. Webhook sinks
    /// spool it before this returns.
    pub fn send(&self, alert: &Alert) {
        if self.sinks.is_empty() {
            return;
        }
        let shared = Arc::new(alert.clone());
        let mut bytes = None;
        for s in &self.sinks {
            if s.min_severity.is_some_and(|m| alert.severity < m) {
                continue;
            }
            match &s.intake {
                Intake::Spool(spool) => spool.accept(alert),
                Intake::Queue(tx, held) => {
                    // The size of the alert as JSON (measured once).
                    let bytes = *bytes.get_or_insert_with(|| serde_json::to_vec(alert).map_or(4096, |v| v.len()));
                    if held.load(Ordering::Relaxed) + bytes > QUEUE_BYTES {
                        s.metrics.dropped("queue_full", 1);
                        continue;
                    }
                    held.fetch_add(bytes, Ordering::Relaxed);
                    let item = Queued {
                        alert: shared.clone(),
                        bytes,
                        held: held.clone(),
                    };
                    // Entered before the thread can settle it.
                    s.metrics.backlog.accept(1);
                    let refused = match tx.try_send(item) {
                        Ok(()) => None,
                        Err(TrySendError::Full(_)) => Some("queue_full"),
                        Err(TrySendError::Disconnected(_)) => Some("shutdown"),
                    };
                    if let Some(reason) = refused {
                        s.metrics.backlog.retract();
                        s.metrics.dropped(reason, 1);
                    }
                }
            }
        }
    }

    /// Refreshes the age of each sink's oldest pending alert.
    pub fn refresh(&self) {
        for s in &self.sinks {
            s.metrics.backlog.refresh();
        }
    }

    /// Stops every sink within `deadline`: queues are written out and
    /// spools delivered while receivers answer. What is left is said, per
    /// sink: webhook alerts stay in the spool for the next start; syslog
    /// alerts still in memory are lost and counted (`reason="shutdown"`).
    pub fn shutdown(self, deadline: Duration) {
        let end = Instant::now() + deadline;
        let mut waiting = Vec::new();
        for s in self.sinks {
            match &s.intake {
                Intake::Spool(spool) => spool.close(),
                Intake::Queue(..) => {}
            }
            waiting.push(s);
        }
        for s in waiting {
            let Running {
                name,
                intake,
                done,
                thread,
                metrics,
                ..
            } = s;
            // Closing a queue is dropping its sender.
            let spool = match intake {
                Intake::Spool(spool) => Some(spool),
                Intake::Queue(tx, _) => {
                    drop(tx);
                    None
                }
            };
            let finished = done.recv_timeout(end.saturating_duration_since(Instant::now())).is_ok();
            if finished {
                let _ = thread.join();
            }
            match spool {
                Some(spool) => {
                    let left = spool.abandon();
                    if left > 0 {
                        log::warn!(
                            "sink {name}: {left} alerts not delivered{} stay in the spool {} and are delivered after the next start",
                            if finished { "" } else { " (the receiver did not answer in time)" },
                            spool.spool_dir().display()
                        );
                    }
                }
                None if !finished => {
                    // The thread counts them as dropped if it gets to (not
                    // here too: it may still be running, after a reload).
                    let left = metrics.backlog.pending();
                    log::warn!("sink {name} did not finish in time: the {left} alerts it still held are lost");
                }
                None => {}
            }
        }
    }
}

/// Waits for the next alert for at most `wait`: `Ok(Some)` an alert,
/// `Ok(None)` a timeout, `Err(())` the sender is gone.
pub(crate) fn next_alert(rx: &Receiver<Queued>, wait: Duration) -> Result<Option<Queued>, ()> {
    match rx.recv_timeout(wait) {
        Ok(a) => Ok(Some(a)),
        Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(()),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use serde_json::json;

    use crate::{
        detect::alert::{Alert, Category, Severity},
        event::{Party, Transport},
    };

    /// An alert for sink tests.
    pub fn alert(n: u64, severity: Severity) -> Alert {
        Alert {
            id: format!("alert-{n:06}"),
            time: 1_795_000_000_000_000_000 + n as i128,
            rule: "credential.exposure".into(),
            category: Category::CredentialLeak,
            severity,
            summary: format!("1 credential (github-pat-classic) returned by the server | n={n}"),
            transport: Transport::Stdio,
            session: Arc::from("stdio:42:1"),
            server: Party::default(),
            client: Party::default(),
            actor: Default::default(),
            evidence: json!({"findings": [{"rule": "github-pat-classic", "path": "$.result.content[0].text",
                "length": 40, "prefix": "ghp_", "fingerprint": "hmac-sha256:00112233445566778899aabbccddeeff"}],
                "tool": "read_text_file"}),
            messages: Vec::new(),
            count: 1,
            first_seen: None,
            last_seen: None,
            repeats: Vec::new(),
            repeats_in_other_sessions: 0,
            dedup_key: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion() {
        std::env::set_var("MCP_MONITOR_TEST_TOKEN", "abc");
        assert_eq!(expand_env("Splunk ${MCP_MONITOR_TEST_TOKEN}!"), "Splunk abc!");
        assert_eq!(expand_env("${"), "${");
        assert_eq!(expand_env("plain"), "plain");
    }

    #[test]
    fn severity_filter_and_queue_metrics() {
        let metrics = Metrics::new();
        let dir = std::env::temp_dir().join(format!("mcp-deliver-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("alerts.jsonl");
        let cfg = SinkConfig::File(FileSink {
            name: Some("f".into()),
            path: path.clone(),
            format: Format::Json,
            min_severity: Some(Severity::High),
            max_bytes: 0,
            max_files: 1,
            fsync: Fsync::Never,
        });
        let d = Deliveries::start(&[cfg], &dir, &metrics).unwrap();
        d.send(&testing::alert(1, Severity::Low));
        d.send(&testing::alert(2, Severity::Critical));
        d.shutdown(Duration::from_secs(5));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("alert-000002"));
        assert_eq!(metrics.delivery.sent.with_label_values(&["f"]).get(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
