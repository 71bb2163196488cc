//! Webhook sink: every alert goes to the on-disk spool first, and batches
//! leave the spool only when the receiver answered 2xx.
//!
//! Delivery is at least once: an alert is re-sent if the agent stops between
//! the receiver's answer and the spool's cursor update (a window of one
//! fsync). Elastic bulk indexes by alert id, so a resend overwrites; for the
//! other flavors the alert `id` lets the receiver deduplicate. Answers 408,
//! 429 and 5xx, and network errors, are retried with backoff (1 s doubling
//! to 60 s); other 4xx answers mean the receiver will never take the batch:
//! it is dropped and counted as `rejected`.

use std::{
    path::Path,
    sync::{mpsc::Receiver, Arc},
    time::{Duration, Instant},
};

use rustls::ClientConfig;

use super::{
    encode, expand_env,
    http::{self, Url},
    next_alert,
    spool::Spool,
    Backoff, ErrorLog, Flavor, Format, SinkMetrics, WebhookSink,
};
use crate::detect::alert::Alert;

/// Most bytes of records in one request.
const BATCH_BYTES: usize = 4 << 20;

/// The thread behind a `type = "webhook"` sink.
pub struct WebhookWorker {
    url: Url,
    tls: Option<Arc<ClientConfig>>,
    headers: Vec<(String, String)>,
    format: Format,
    flavor: Flavor,
    index: String,
    batch_max: usize,
    timeout: Duration,
    spool: Spool,
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
        }
        metrics.backlog.set(spool.pending() as i64);
        Ok(WebhookWorker {
            url,
            tls,
            headers: cfg.headers.iter().map(|(k, v)| (k.clone(), expand_env(v))).collect(),
            format: cfg.format,
            flavor: cfg.flavor,
            index: cfg.index.clone(),
            batch_max: cfg.batch_max,
            timeout: Duration::from_secs(cfg.timeout_seconds.max(1)),
            spool,
            metrics,
            log: ErrorLog::new(name),
        })
    }

    /// Spools and delivers until the queue closes; the spool keeps what is
    /// left for the next start.
    pub fn run(mut self, rx: Receiver<Arc<Alert>>) {
        let mut backoff = Backoff::new();
        let mut last_sync = Instant::now();
        let mut unsynced = false;
        loop {
            let wait = if self.spool.pending() == 0 {
                Duration::from_secs(1)
            } else {
                backoff.wait().min(Duration::from_secs(1))
            };
            let closing = match next_alert(&rx, wait) {
                Ok(Some(a)) => {
                    self.spool_alert(&a);
                    while let Ok(a) = rx.try_recv() {
                        self.spool_alert(&a);
                    }
                    unsynced = true;
                    false
                }
                Ok(None) => false,
                Err(()) => true,
            };
            if unsynced && (closing || last_sync.elapsed() >= Duration::from_secs(1)) {
                if let Err(e) = self.spool.sync() {
                    self.log.error(&format!("spool fsync failed: {e}"));
                }
                unsynced = false;
                last_sync = Instant::now();
            }
            // Deliver while batches go through.
            while self.spool.pending() > 0 && backoff.ready() {
                if self.deliver_batch() {
                    backoff.succeeded();
                } else {
                    self.metrics.retried.inc();
                    backoff.failed();
                }
            }
            self.metrics.backlog.set(self.spool.pending() as i64);
            if closing {
                if self.spool.pending() > 0 {
                    log::info!(
                        "sink stopping with {} alerts spooled; they are delivered after the next start",
                        self.spool.pending()
                    );
                }
                return;
            }
        }
    }

    fn spool_alert(&mut self, alert: &Alert) {
        let record = match encode(alert, self.format) {
            Ok(r) => r,
            Err(e) => {
                self.metrics.dropped("encode_error", 1);
                self.log.error(&format!("cannot encode an alert: {e}"));
                return;
            }
        };
        match self.spool.append(&record) {
            Ok(lost) => {
                self.metrics.spooled.inc();
                if lost > 0 {
                    self.metrics.dropped("spool_full", lost);
                    self.log
                        .error(&format!("spool full: dropped the {lost} oldest undelivered alerts"));
                }
            }
            Err(e) => {
                self.metrics.dropped("spool_error", 1);
                self.log.error(&format!("cannot write to the spool: {e}"));
            }
        }
    }

    /// One request. `false`: retry later.
    fn deliver_batch(&mut self) -> bool {
        let batch = match self.spool.peek(self.batch_max, BATCH_BYTES) {
            Ok(b) => b,
            Err(e) => {
                self.log.error(&format!("cannot read the spool: {e}"));
                return false;
            }
        };
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
                self.metrics.sent.inc_by(n);
                self.commit(next, n)
            }
            Ok(code) if code == 408 || code == 429 || code >= 500 => {
                self.log.error(&format!("receiver answered {code}; retrying"));
                false
            }
            Ok(code) => {
                self.metrics.dropped("rejected", n);
                self.log.error(&format!(
                    "receiver answered {code} to a batch of {n} alerts: dropped (check the URL, headers and flavor)"
                ));
                self.commit(next, n)
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

    fn commit(&mut self, next: super::spool::Position, n: u64) -> bool {
        match self.spool.commit(next, n) {
            Ok(()) => true,
            Err(e) => {
                // Delivered but not marked: they will be sent again.
                self.log.error(&format!("cannot update the spool cursor: {e}"));
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
        assert!(m.sink_retried.with_label_values(&["hook"]).get() >= 1);
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
        let sent = metrics.sink_sent.with_label_values(&["hook"]).get()
            + metrics2.sink_sent.with_label_values(&["hook"]).get();
        assert_eq!(sent, 700);
        assert_eq!(metrics2.sink_backlog.with_label_values(&["hook"]).get(), 0);
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
