//! Webhook sink: every alert is written to the on-disk spool by the thread
//! that raised it, before any network I/O, and batches leave the spool only
//! when the receiver answered 2xx.
//!
//! Two parties share the spool: [`Intake::accept`], called on the agent's
//! thread, appends (and syncs per the `fsync` policy); the sink's sender
//! thread reads batches, POSTs them without holding the spool, and moves the
//! cursor. A receiver that is slow or never answers holds up only the
//! sender: new alerts keep reaching the disk, so `kill -9` at any moment
//! loses nothing the agent had raised (a host crash loses what the fsync
//! policy allows).
//!
//! Delivery is at least once: an alert is re-sent if the agent stops between
//! the receiver's answer and the cursor update. Every alert carries its
//! stable `id` (`finding_info.uid` in OCSF) for the receiver to deduplicate
//! on; Elastic bulk indexes by it, so a resend overwrites. Answers 408, 429
//! and 5xx, and network errors, are retried with backoff (1 s doubling to
//! 60 s); other 4xx answers mean the receiver will never take the batch: it
//! is dropped and counted as `rejected`.

use std::{
    path::Path,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use rustls::ClientConfig;

use super::{
    backlog::unix_now,
    encode, expand_env,
    http::{self, Url},
    spool::{self, Spool},
    Backoff, ErrorLog, Flavor, Format, Fsync, SinkMetrics, WebhookSink,
};
use crate::detect::alert::Alert;

/// Most bytes of records in one request.
const BATCH_BYTES: usize = 4 << 20;

/// The spool and what its two users tell each other.
struct Shared {
    spool: Spool,
    /// Appended since the last sync.
    dirty: bool,
    /// Stop: deliver what can be delivered now, then leave.
    closing: bool,
    /// Stopped waiting for: the sender must not touch the spool again (a
    /// new sink may own it already).
    abandoned: bool,
}

/// The write side of a webhook sink, used on the agent's thread.
pub struct Intake {
    shared: Mutex<Shared>,
    /// Wakes the sender (an alert came, or stop).
    wake: Condvar,
    /// Wakes the sync thread (stop).
    wake_sync: Condvar,
    format: Format,
    fsync: Fsync,
    metrics: SinkMetrics,
    log: Mutex<ErrorLog>,
}

impl Intake {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn error(&self, msg: &str) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).error(msg);
    }

    /// Writes `alert` to the spool (and to the disk, with `fsync =
    /// "always"`), and wakes the sender.
    pub fn accept(&self, alert: &Alert) {
        let record = match encode(alert, self.format) {
            Ok(r) => r,
            Err(e) => {
                self.metrics.dropped("encode_error", 1);
                self.error(&format!("cannot encode an alert: {e}"));
                return;
            }
        };
        let mut shared = self.lock();
        match shared.spool.append(&record) {
            Ok(lost) => {
                // Backlog first: a scrape in between never shows the
                // alert spooled and already settled.
                self.metrics.backlog.accept(1);
                self.metrics.spooled.inc();
                if lost > 0 {
                    self.metrics.gave_up("spool_full", lost);
                    self.error(&format!("spool full: dropped the {lost} oldest undelivered alerts"));
                }
                if self.fsync == Fsync::Always {
                    if let Err(e) = shared.spool.sync() {
                        self.error(&format!("spool fsync failed: {e}"));
                    }
                } else {
                    shared.dirty = true;
                }
            }
            Err(e) => {
                self.metrics.dropped("spool_error", 1);
                self.error(&format!("cannot write to the spool: {e}"));
            }
        }
        drop(shared);
        self.wake.notify_one();
    }

    /// `fsync = "interval"`: syncs what was appended, once a second, on
    /// its own thread (the sender may be stuck in a request for much
    /// longer). Ends when the sink is abandoned.
    fn sync_every_second(&self) {
        loop {
            let handle = {
                let shared = self.lock();
                let mut shared = self
                    .wake_sync
                    .wait_timeout(shared, Duration::from_secs(1))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                if shared.abandoned {
                    return;
                }
                if !shared.dirty {
                    continue;
                }
                shared.dirty = false;
                shared.spool.sync_handle()
            };
            if let Some(f) = handle {
                if let Err(e) = f.sync_data() {
                    self.error(&format!("spool fsync failed: {e}"));
                }
            }
        }
    }

    /// Asks the sender to stop once nothing more can be delivered now.
    pub fn close(&self) {
        self.lock().closing = true;
        self.wake.notify_one();
    }

    /// Gives up on the sender (still in a request past the shutdown
    /// deadline) and syncs the spool for the next start. Returns the alerts
    /// left in it.
    pub fn abandon(&self) -> u64 {
        let mut shared = self.lock();
        shared.abandoned = true;
        self.wake_sync.notify_all();
        if self.fsync != Fsync::Never {
            if let Err(e) = shared.spool.sync() {
                self.error(&format!("spool fsync failed: {e}"));
            }
        }
        shared.spool.pending()
    }

    /// Where the spool is.
    pub fn spool_dir(&self) -> std::path::PathBuf {
        self.lock().spool.dir().to_owned()
    }
}

/// The sender thread behind a `type = "webhook"` sink.
pub struct WebhookWorker {
    url: Url,
    tls: Option<Arc<ClientConfig>>,
    headers: Vec<(String, String)>,
    flavor: Flavor,
    index: String,
    batch_max: usize,
    timeout: Duration,
    intake: Arc<Intake>,
    metrics: SinkMetrics,
    log: ErrorLog,
}

impl WebhookWorker {
    /// Opens the spool (whatever an earlier run left undelivered is sent
    /// first) and prepares TLS.
    pub fn new(cfg: &WebhookSink, name: &str, spool_dir: &Path, metrics: SinkMetrics) -> anyhow::Result<Self> {
        let url = Url::parse(&cfg.url)?;
        let tls = if url.tls {
            Some(super::tls::client_config(cfg.ca_file.as_deref())?)
        } else {
            None
        };
        let spool = Spool::open(spool_dir, cfg.spool_max_bytes).map_err(|e| {
            anyhow::anyhow!(
                "sink {name}: cannot open its spool {}: {e}.\nFix: make the directory writable by the agent, or set spool_dir",
                spool_dir.display()
            )
        })?;
        if spool.pending() > 0 {
            log::info!(
                "sink {name}: {} alerts from an earlier run are waiting in {}",
                spool.pending(),
                spool_dir.display()
            );
            // They count from the time of the oldest of them.
            let since = spool
                .peek(1, 1 << 20)
                .ok()
                .and_then(|b| b.records.first().cloned())
                .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r).ok())
                .and_then(|v| alert_epoch(&v))
                .map_or_else(unix_now, |t| t as u64);
            metrics.backlog.accept_at(since, spool.pending());
        }
        let intake = Arc::new(Intake {
            shared: Mutex::new(Shared {
                spool,
                dirty: false,
                closing: false,
                abandoned: false,
            }),
            wake: Condvar::new(),
            wake_sync: Condvar::new(),
            format: cfg.format,
            fsync: cfg.fsync,
            metrics: metrics.clone(),
            log: Mutex::new(ErrorLog::new(name)),
        });
        Ok(WebhookWorker {
            url,
            tls,
            headers: cfg.headers.iter().map(|(k, v)| (k.clone(), expand_env(v))).collect(),
            flavor: cfg.flavor,
            index: cfg.index.clone(),
            batch_max: cfg.batch_max,
            timeout: Duration::from_secs(cfg.timeout_seconds.max(1)),
            intake,
            metrics,
            log: ErrorLog::new(name),
        })
    }

    /// The write side, for [`super::Deliveries::send`].
    pub fn intake(&self) -> Arc<Intake> {
        self.intake.clone()
    }

    /// Delivers from the spool until closed (then for as long as batches go
    /// through) or abandoned; the spool keeps what is left.
    pub fn run(mut self) {
        if self.intake.fsync == Fsync::Interval {
            let intake = self.intake.clone();
            let spawned = std::thread::Builder::new()
                .name("sink-spool-sync".into())
                .spawn(move || intake.sync_every_second());
            if let Err(e) = spawned {
                self.log.error(&format!(
                    "cannot start the spool's sync thread ({e}): spooled alerts are synced by the kernel only"
                ));
            }
        }
        let mut backoff = Backoff::new();
        loop {
            // Under the lock: take a batch, or wait.
            let batch = {
                let mut shared = self.intake.lock();
                loop {
                    if shared.abandoned {
                        return;
                    }
                    let pending = shared.spool.pending();
                    if pending > 0 && backoff.ready() {
                        match shared.spool.peek(self.batch_max, BATCH_BYTES) {
                            Ok(b) if b.next.is_some() => break b,
                            Ok(_) => {
                                // Counted records the files do not hold
                                // (a write that failed half-way): recount.
                                if let Err(e) = shared.spool.recount() {
                                    self.log.error(&format!("cannot read the spool: {e}"));
                                }
                                let now = shared.spool.pending();
                                self.metrics.backlog.settle(pending.saturating_sub(now));
                                backoff.failed();
                                continue;
                            }
                            Err(e) => {
                                self.log.error(&format!("cannot read the spool: {e}"));
                                backoff.failed();
                                continue;
                            }
                        }
                    }
                    if shared.closing {
                        return;
                    }
                    let wait = if pending > 0 {
                        backoff.wait().clamp(Duration::from_millis(10), Duration::from_secs(1))
                    } else {
                        Duration::from_secs(1)
                    };
                    shared = self
                        .intake
                        .wake
                        .wait_timeout(shared, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            };
            if self.deliver(batch) {
                backoff.succeeded();
            } else {
                self.metrics.retried.inc();
                backoff.failed();
            }
        }
    }

    /// One request, no lock held while it runs. `false`: retry later.
    fn deliver(&mut self, batch: spool::Batch) -> bool {
        let Some(next) = batch.next else {
            return true;
        };
        let n = batch.records.len() as u64;
        let (content_type, body) = self.body(&batch.records);
        let t = Instant::now();
        match http::post(
            &self.url,
            self.tls.as_ref(),
            &self.headers,
            content_type,
            &body,
            self.timeout,
        ) {
            Ok(code) if (200..300).contains(&code) => {
                self.metrics.delivery.observe(t.elapsed().as_secs_f64());
                self.commit(batch.start, next, n, None)
            }
            Ok(code) if code == 408 || code == 429 || code >= 500 => {
                self.log.error(&format!("receiver answered {code}; retrying"));
                false
            }
            Ok(code) => {
                self.log.error(&format!(
                    "receiver answered {code} to a batch of {n} alerts: dropped (check the URL, headers and flavor)"
                ));
                self.commit(batch.start, next, n, Some("rejected"))
            }
            Err(e) => {
                self.log.error(&format!(
                    "POST {}:{}{} failed: {e}; retrying",
                    self.url.host, self.url.port, self.url.path
                ));
                false
            }
        }
    }

    /// Moves the cursor past a batch that was delivered (or, with a
    /// reason, given up on).
    fn commit(&mut self, start: spool::Position, next: spool::Position, n: u64, dropped: Option<&str>) -> bool {
        // Under the lock: once abandoned, this sender writes nothing (a new
        // sink may own the directory). Appends wait for one small fsync.
        let mut shared = self.intake.lock();
        if shared.abandoned {
            return false;
        }
        if let Err(e) = spool::save_cursor(shared.spool.dir(), next) {
            // Delivered but not marked: they will be sent again.
            self.log.error(&format!("cannot update the spool cursor: {e}"));
            return false;
        }
        match shared.spool.advance(start, next, n) {
            Ok(settled) => {
                match dropped {
                    None => self.metrics.delivered(settled),
                    Some(reason) => self.metrics.gave_up(reason, settled),
                }
                true
            }
            Err(e) => {
                self.log.error(&format!("cannot clean up the spool: {e}"));
                false
            }
        }
    }

    fn body(&self, records: &[Vec<u8>]) -> (&'static str, Vec<u8>) {
        let total: usize = records.iter().map(|r| r.len() + 64).sum();
        let mut body = Vec::with_capacity(total + 2);
        match self.flavor {
            Flavor::Generic => {
                body.push(b'[');
                for (i, r) in records.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(r);
                }
                body.push(b']');
                ("application/json", body)
            }
            Flavor::SplunkHec => {
                for r in records {
                    let time = serde_json::from_slice::<serde_json::Value>(r)
                        .ok()
                        .and_then(|v| alert_epoch(&v))
                        .unwrap_or(0.0);
                    body.extend_from_slice(
                        format!("{{\"time\":{time:.6},\"sourcetype\":\"mcp-monitor:alert\",\"event\":").as_bytes(),
                    );
                    body.extend_from_slice(r);
                    body.extend_from_slice(b"}\n");
                }
                ("application/json", body)
            }
            Flavor::ElasticBulk => {
                for r in records {
                    let id = serde_json::from_slice::<serde_json::Value>(r).ok().and_then(|v| {
                        v.get("id")
                            .or_else(|| v.pointer("/finding_info/uid"))
                            .and_then(|x| x.as_str())
                            .map(str::to_owned)
                    });
                    let action = serde_json::json!({"index": {"_index": self.index, "_id": id}});
                    body.extend_from_slice(action.to_string().as_bytes());
                    body.push(b'\n');
                    body.extend_from_slice(r);
                    body.push(b'\n');
                }
                ("application/x-ndjson", body)
            }
        }
    }
}

/// Seconds since the epoch of an alert (JSON `time`) or OCSF finding (`time`
/// in milliseconds).
fn alert_epoch(v: &serde_json::Value) -> Option<f64> {
    match v.get("time")? {
        serde_json::Value::String(s) => humantime::parse_rfc3339(s)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64()),
        serde_json::Value::Number(n) => n.as_f64().map(|ms| ms / 1000.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        io::{BufRead, BufReader, Read, Write},
        net::TcpListener,
        sync::{
            atomic::{AtomicBool, Ordering},
            Mutex,
        },
    };

    use super::*;
    use crate::{
        deliver::{testing, Deliveries, SinkConfig},
        detect::alert::Severity,
        metrics::Metrics,
    };

    /// A receiver on a fixed port that can be stopped and restarted; it
    /// records the ids of every alert it accepted.
    struct Receiver {
        port: u16,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Receiver {
        fn start(port: u16, ids: Arc<Mutex<Vec<String>>>) -> Receiver {
            let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
            let port = l.local_addr().unwrap().port();
            l.set_nonblocking(true).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let (s, i) = (stop.clone(), ids.clone());
            let thread = std::thread::spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    let Ok((c, _)) = l.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    c.set_nonblocking(false).unwrap();
                    let mut r = BufReader::new(c);
                    let mut len = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        r.read_line(&mut line).unwrap();
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    let batch: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
                    i.lock()
                        .unwrap()
                        .extend(batch.iter().map(|a| a["id"].as_str().unwrap().to_owned()));
                    r.get_mut()
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .unwrap();
                }
            });
            Receiver {
                port,
                stop,
                thread: Some(thread),
            }
        }

        fn stop(mut self) -> u16 {
            self.stop.store(true, Ordering::SeqCst);
            self.thread.take().unwrap().join().unwrap();
            self.port
        }
    }

    fn sink(port: u16, spool: &Path) -> SinkConfig {
        SinkConfig::Webhook(WebhookSink {
            name: Some("hook".into()),
            url: format!("http://127.0.0.1:{port}/alerts"),
            format: Format::Json,
            flavor: Flavor::Generic,
            min_severity: None,
            headers: BTreeMap::new(),
            batch_max: 50,
            timeout_seconds: 2,
            spool_dir: Some(spool.to_owned()),
            spool_max_bytes: 64 << 20,
            fsync: Fsync::Interval,
            ca_file: None,
            index: String::new(),
        })
    }

    fn wait_for(ids: &Arc<Mutex<Vec<String>>>, n: usize, secs: u64) {
        let end = Instant::now() + Duration::from_secs(secs);
        while ids.lock().unwrap().len() < n && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The receiver goes away mid-stream and the agent restarts while it is
    /// away: every alert still arrives, exactly once, in order.
    #[test]
    fn outage_and_agent_restart_lose_nothing() {
        let dir = std::env::temp_dir().join(format!("mcp-webhook-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ids = Arc::new(Mutex::new(Vec::new()));
        let rx = Receiver::start(0, ids.clone());
        let metrics = Metrics::new();
        let d = Deliveries::start(&[sink(rx.port, &dir)], &dir, &metrics).unwrap();
        for n in 0..300 {
            d.send(&testing::alert(n, Severity::High));
        }
        wait_for(&ids, 300, 10);
        let port = rx.stop();
        // Receiver down: these wait in the spool.
        for n in 300..600 {
            d.send(&testing::alert(n, Severity::High));
        }
        std::thread::sleep(Duration::from_millis(1500));
        d.shutdown(Duration::from_secs(5));
        let m = &metrics;
        assert!(m.delivery.retried.with_label_values(&["hook"]).get() >= 1);
        // A new agent, the receiver back.
        let rx = Receiver::start(port, ids.clone());
        let metrics2 = Metrics::new();
        let d = Deliveries::start(&[sink(port, &dir)], &dir, &metrics2).unwrap();
        for n in 600..700 {
            d.send(&testing::alert(n, Severity::High));
        }
        wait_for(&ids, 700, 20);
        d.shutdown(Duration::from_secs(5));
        rx.stop();
        let got = ids.lock().unwrap().clone();
        let want: Vec<String> = (0..700).map(|n| format!("alert-{n:06}")).collect();
        assert_eq!(got.len(), 700, "received {} alerts", got.len());
        assert_eq!(got, want, "exactly once, in order");
        let sent = metrics.delivery.sent.with_label_values(&["hook"]).get()
            + metrics2.delivery.sent.with_label_values(&["hook"]).get();
        assert_eq!(sent, 700);
        assert_eq!(metrics2.delivery.backlog.with_label_values(&["hook"]).get(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A receiver that accepts connections and never answers (a stalled
    /// proxy): every alert is on disk when `send` returns, the backlog says
    /// so, shutdown keeps its deadline, and the next start delivers them.
    #[test]
    fn hung_receiver_stalls_nothing_but_the_sender() {
        let dir = std::env::temp_dir().join(format!("mcp-webhook-hung-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let hung = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = hung.local_addr().unwrap().port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let h = held.clone();
        std::thread::spawn(move || {
            for c in hung.incoming().flatten() {
                h.lock().unwrap().push(c);
            }
        });
        let metrics = Metrics::new();
        let d = Deliveries::start(&[sink(port, &dir)], &dir, &metrics).unwrap();
        let spooled_lines = || -> usize {
            std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
                .map(|e| std::fs::read(e.path()).unwrap().iter().filter(|&&b| b == b'\n').count())
                .sum()
        };
        d.send(&testing::alert(0, Severity::High));
        // The sender is now stuck in its POST.
        let end = Instant::now() + Duration::from_secs(5);
        while held.lock().unwrap().is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!held.lock().unwrap().is_empty(), "no request was made");
        for n in 1..50 {
            d.send(&testing::alert(n, Severity::High));
            assert_eq!(spooled_lines(), n as usize + 1, "alert {n} is not on disk yet");
        }
        let backlog = || metrics.delivery.backlog.with_label_values(&["hook"]).get();
        assert_eq!(backlog(), 50);
        assert_eq!(metrics.delivery.spooled.with_label_values(&["hook"]).get(), 50);
        let t = Instant::now();
        d.shutdown(Duration::from_millis(500));
        assert!(t.elapsed() < Duration::from_secs(2), "shutdown took {:?}", t.elapsed());
        assert_eq!(backlog(), 50, "nothing was delivered");
        // The next start, a receiver that answers.
        let ids = Arc::new(Mutex::new(Vec::new()));
        let rx = Receiver::start(0, ids.clone());
        let metrics2 = Metrics::new();
        let d = Deliveries::start(&[sink(rx.port, &dir)], &dir, &metrics2).unwrap();
        assert_eq!(metrics2.delivery.backlog.with_label_values(&["hook"]).get(), 50);
        assert!(metrics2.delivery.oldest_pending.with_label_values(&["hook"]).get() >= 0.0);
        wait_for(&ids, 50, 10);
        d.shutdown(Duration::from_secs(5));
        rx.stop();
        let want: Vec<String> = (0..50).map(|n| format!("alert-{n:06}")).collect();
        assert_eq!(*ids.lock().unwrap(), want);
        assert_eq!(metrics2.delivery.backlog.with_label_values(&["hook"]).get(), 0);
        assert_eq!(metrics2.delivery.oldest_pending.with_label_values(&["hook"]).get(), 0.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bodies_per_flavor() {
        let dir = std::env::temp_dir().join(format!("mcp-webhook-body-{}", std::process::id()));
        let m = SinkMetrics::new(&Metrics::new(), "b");
        let SinkConfig::Webhook(mut cfg) = sink(9, &dir) else {
            unreachable!()
        };
        let recs: Vec<Vec<u8>> = (0..2)
            .map(|n| encode(&testing::alert(n, Severity::Low), Format::Json).unwrap())
            .collect();
        cfg.flavor = Flavor::ElasticBulk;
        cfg.index = "idx".into();
        let w = WebhookWorker::new(&cfg, "b", &dir, m.clone()).unwrap();
        let (ct, body) = w.body(&recs);
        assert_eq!(ct, "application/x-ndjson");
        let lines: Vec<serde_json::Value> = body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["index"]["_id"], "alert-000000");
        assert_eq!(lines[0]["index"]["_index"], "idx");
        cfg.flavor = Flavor::SplunkHec;
        let w = WebhookWorker::new(&cfg, "b", &dir, m).unwrap();
        let (_, body) = w.body(&recs);
        let first: serde_json::Value = serde_json::from_slice(body.split(|&b| b == b'\n').next().unwrap()).unwrap();
        assert_eq!(first["sourcetype"], "mcp-monitor:alert");
        assert_eq!(first["event"]["id"], "alert-000000");
        assert!(first["time"].as_f64().unwrap() > 1.7e9);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
