//! The monitor under test: started as a child with its own state, events
//! and alerts files and metrics port; read back, killed, restarted.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::*;

/// A running monitor.
pub struct Monitor {
    child: Option<Child>,
    /// Temporary directory of this monitor (stderr.log, events, alerts, default state dir), removed on drop.
    pub dir: TempDir,
    /// File the monitor writes events to (`--events-file`).
    pub events_path: PathBuf,
    /// File the monitor writes alerts to (`--alerts-file`).
    pub alerts_path: PathBuf,
    /// Address of the monitor's metrics endpoint (`--metrics-addr`), on a free 127.0.0.1 port.
    pub metrics_addr: SocketAddr,
    /// Name of the Podman container the monitor runs in, if it does.
    pub container: Option<String>,
}

impl Monitor {
    /// Starts `mcp-monitor run` with `extra` arguments and waits until it
    /// reports ready.
    pub fn start(extra: &[&str]) -> Monitor {
        let dir = TempDir::new("mon");
        let events_path = dir.path().join("events.jsonl");
        let alerts_path = dir.path().join("alerts.jsonl");
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut cmd = Command::new(monitor_bin());
        cmd.arg("run")
            .arg("--events-file")
            .arg(&events_path)
            .arg("--alerts-file")
            .arg(&alerts_path)
            .arg("--metrics-addr")
            .arg(metrics_addr.to_string());
        // Each monitor gets its own detection state unless the test shares one.
        if !extra.contains(&"--state-dir") {
            cmd.arg("--state-dir").arg(dir.path().join("state"));
        }
        let child = cmd
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn mcp-monitor");
        Monitor::adopt(child, dir, events_path, alerts_path, metrics_addr, None)
    }

    /// A monitor already started as `child` (its log in `dir/stderr.log`),
    /// once it reports ready.
    pub(crate) fn adopt(
        child: Child,
        dir: TempDir,
        events_path: PathBuf,
        alerts_path: PathBuf,
        metrics_addr: SocketAddr,
        container: Option<String>,
    ) -> Monitor {
        Monitor {
            child: Some(child),
            dir,
            events_path,
            alerts_path,
            metrics_addr,
            container,
        }
        .ready()
    }

    /// Waits until `/readyz` answers 200; fails the test with the monitor's
    /// log if it exits or takes too long.
    fn ready(self) -> Monitor {
        let mut m = self;
        let ready_within = scaled(Duration::from_secs(120));
        let deadline = Instant::now() + ready_within;
        loop {
            if let Ok((status, _)) = http_get(m.metrics_addr, "/readyz") {
                if status.contains("200") {
                    break;
                }
            }
            if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("monitor exited during start-up ({st}):\n{}", m.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "monitor not ready after {} s:\n{}",
                ready_within.as_secs(),
                m.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    }

    /// What the monitor wrote to stderr (its log) so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The last `n` lines of the monitor's log, for a failure's message.
    pub fn stderr_tail(&self, n: usize) -> String {
        let log = self.stderr();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Events written so far.
    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.events_path).unwrap_or_default();
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).expect("event is JSON"))
            .collect()
    }

    /// Alerts written so far.
    pub fn alerts(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.alerts_path).unwrap_or_default();
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).expect("alert is JSON"))
            .collect()
    }

    /// Waits until `pred` holds for the alerts (or the timeout passes).
    pub fn wait_alerts(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            let a = self.alerts();
            if pred(&a) || Instant::now() > deadline {
                return a;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `pred` holds for the events (or the timeout passes) and
    /// returns them.
    pub fn wait_events(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            let ev = self.events();
            if pred(&ev) || Instant::now() > deadline {
                return ev;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the kernel to have resumed an ignored stream on a re-look
    /// (`stream_relooks_total{result="kernel_found"}`); false if it never did.
    pub fn resumed_by_kernel(&self, timeout: Duration) -> bool {
        self.wait_metric(
            timeout,
            "mcp_monitor_stream_relooks_total",
            &[("result", "kernel_found")],
            1.0,
        ) >= 1.0
    }

    /// The Prometheus exposition.
    pub fn metrics_text(&self) -> String {
        http_get(self.metrics_addr, "/metrics").expect("GET /metrics").1
    }

    /// The nonzero samples of the metrics that count losses, drops, errors
    /// and cut-short messages, one per line, for a failure's message: a
    /// message missing from a view shows whether capture or parsing lost it.
    pub fn loss_metrics(&self) -> String {
        const WORDS: [&str; 9] = [
            "drop",
            "lost",
            "error",
            "truncat",
            "evict",
            "overflow",
            "fail",
            "abandon",
            "incomplete",
        ];
        let text = self.metrics_text();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                let name = l.split(['{', ' ']).next().unwrap_or("");
                WORDS.iter().any(|w| name.contains(w))
            })
            .filter(|l| {
                l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v != 0.0)
            })
            .collect();
        if lines.is_empty() {
            "  (none)".to_owned()
        } else {
            lines.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
        }
    }

    /// Sum of all samples of metric `name` whose labels contain every
    /// `label="value"` in `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics_text(), name, labels)
    }

    /// [`Monitor::metric`] once it reaches `at_least`, or its value at the
    /// end of `timeout` (kernel counters reach the metrics once a second).
    pub fn wait_metric(&self, timeout: Duration, name: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            let v = self.metric(name, labels);
            if v >= at_least || Instant::now() >= deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends `sig` to the monitor.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: sending a signal to our own child.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// The monitor's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("monitor running").id()
    }

    /// (VmRSS, VmHWM) of the monitor, in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |n: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(n))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Kills the monitor with SIGKILL (no clean-up of any kind) and waits.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Alerts written so far, tolerating a last line torn by a kill.
    pub fn alerts_lenient(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.alerts_path).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Stops the monitor (SIGINT; a container is stopped with SIGTERM, as
    /// the kubelet does) and waits for it.
    pub fn stop(&mut self) {
        self.stop_with_status();
    }

    /// [`Monitor::stop`], returning how the monitor (or `podman run`, which
    /// exits as its container does) ended; `None` if it was not running.
    pub fn stop_with_status(&mut self) -> Option<std::process::ExitStatus> {
        let in_container = if let Some(name) = self.container.take() {
            let _ = Command::new("podman")
                .args(["stop", "--time", "20", &name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            true
        } else {
            false
        };
        if let Some(mut c) = self.child.take() {
            // A container was stopped already; `podman run` exits after it.
            if !in_container {
                // SAFETY: sending a signal to our own child.
                unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            }
            let deadline = Instant::now() + scaled(Duration::from_secs(20));
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            return c.wait().ok();
        }
        None
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sums samples of `name` with matching labels in a Prometheus exposition.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, lbl) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| lbl.split(',').any(|p| p == format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}
