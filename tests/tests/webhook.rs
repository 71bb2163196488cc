//! The webhook sink under faults, end to end: a receiver that is down for
//! a monitor's whole life and up for the next, and receivers that are slow,
//! hang, or fail then recover while the agent is killed with `kill -9` and
//! restarted on the same state directory. Every alert arrives, duplicates
//! only with the same id.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mcp_monitor_tests::*;
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(30);

/// How a test webhook receiver answers.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// 200 after this long.
    Answer(Duration),
    /// Accepts the connection and never reads or answers (a stalled proxy).
    Hang,
    /// 500 to the first this many requests, then 200.
    FailFirst(usize),
}

/// A webhook receiver on a fixed port, recording every alert it took (its
/// `id`, or `finding_info.uid` for OCSF, and the alert itself).
struct Receiver {
    ids: Arc<Mutex<Vec<String>>>,
    alerts: Arc<Mutex<Vec<Value>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Reads one request; `None` if the client went away.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut len = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(body)
}

impl Receiver {
    fn start(port: u16) -> Receiver {
        Receiver::start_with(port, Behaviour::Answer(Duration::ZERO))
    }

    fn start_with(port: u16, behaviour: Behaviour) -> Receiver {
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        l.set_nonblocking(true).unwrap();
        let ids = Arc::new(Mutex::new(Vec::new()));
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (i, a, s) = (ids.clone(), alerts.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            let mut requests = 0;
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                let Ok((c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                if let Behaviour::Hang = behaviour {
                    held.push(c);
                    continue;
                }
                c.set_nonblocking(false).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut r = BufReader::new(c);
                let Some(body) = read_request(&mut r) else { continue };
                requests += 1;
                let status = match behaviour {
                    Behaviour::FailFirst(n) if requests <= n => "500 Internal Server Error",
                    _ => "200 OK",
                };
                if status.starts_with("200") {
                    let batch: Vec<Value> = serde_json::from_slice(&body).unwrap();
                    for alert in batch {
                        let id = alert["id"]
                            .as_str()
                            .or(alert["finding_info"]["uid"].as_str())
                            .unwrap()
                            .to_owned();
                        i.lock().unwrap().push(id);
                        a.lock().unwrap().push(alert);
                    }
                }
                if let Behaviour::Answer(delay) = behaviour {
                    std::thread::sleep(delay);
                }
                let _ = r
                    .get_mut()
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes());
            }
        });
        Receiver {
            ids,
            alerts,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.ids.lock().unwrap().len()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A configuration with one webhook sink named `hook` on a free local port
/// (`extra`: more keys of the sink), and a state directory of its own.
struct WebhookSetup {
    dir: TempDir,
    port: u16,
}

impl WebhookSetup {
    fn new(tag: &str, extra: &str) -> WebhookSetup {
        let dir = TempDir::new(tag);
        let port = free_port();
        std::fs::write(
            dir.path().join("monitor.toml"),
            format!(
                "[[sinks]]\ntype = \"webhook\"\nname = \"hook\"\nurl = \"http://127.0.0.1:{port}/alerts\"\n{extra}"
            ),
        )
        .unwrap();
        WebhookSetup { dir, port }
    }

    fn state(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    /// Monitor arguments: the configuration and the shared state directory.
    fn args(&self) -> Vec<String> {
        let path = |p: std::path::PathBuf| p.to_str().unwrap().to_owned();
        vec![
            "--config".into(),
            path(self.dir.path().join("monitor.toml")),
            "--state-dir".into(),
            path(self.state()),
        ]
    }
}

/// The monitor raises alerts while the webhook receiver misbehaves
/// (`behaviour`), and is killed with SIGKILL once `kill_after` alerts are in
/// its alerts file. Every alert in that file reaches the receiver after a
/// restart on the same state directory; an alert that arrives twice is the
/// same alert with the same id; and at every poll before the kill, the
/// backlog gauge never claims a delivery the receiver has not had.
fn kill_9_with_a_misbehaving_receiver(behaviour: Behaviour, kill_after: usize) {
    require_root();
    let hook = WebhookSetup::new("kill9", "batch_max = 5\ntimeout_seconds = 3\n");
    let port = hook.port;
    let owned = hook.args();
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let first = Receiver::start_with(port, behaviour);
    let mut m = Monitor::start(&args);
    let mut client = Command::new(env!("CARGO_BIN_EXE_echo-pair"))
        .args(["leak", "--count", "80", "--interval-ms", "100"])
        .stdout(Stdio::null())
        .spawn()
        .expect("run echo-pair leak");
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    let mut polls = 0;
    while m.alerts_lenient().len() < kill_after {
        assert!(
            Instant::now() < deadline,
            "only {} alerts were raised:\n{}",
            m.alerts_lenient().len(),
            m.stderr()
        );
        let text = m.metrics_text();
        let spooled = metric_value(&text, "mcp_monitor_sink_spooled_total", &[("sink", "hook")]);
        let backlog = metric_value(&text, "mcp_monitor_sink_backlog", &[("sink", "hook")]);
        let received = first.count() as f64;
        assert!(
            backlog >= 0.0 && backlog <= spooled,
            "backlog {backlog} of {spooled} spooled"
        );
        assert!(
            spooled - backlog <= received,
            "the backlog counts {} alerts delivered, the receiver has {received}",
            spooled - backlog
        );
        polls += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    m.kill9();
    assert!(polls > 0);
    let written: Vec<String> = m
        .alerts_lenient()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    let _ = client.wait();
    let received_first = first.count();
    if !matches!(behaviour, Behaviour::Hang) {
        assert!(
            received_first > 0,
            "{behaviour:?}: no delivery was under way when the monitor was killed"
        );
    }
    let mut got = first.alerts.lock().unwrap().clone();
    drop(first);

    let second = Receiver::start(port);
    let m2 = Monitor::start(&args);
    let arrived = |second: &Receiver| {
        let mut ids: Vec<String> = got.iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect();
        ids.extend(second.ids.lock().unwrap().iter().cloned());
        written.iter().all(|w| ids.contains(w))
    };
    assert!(
        wait_until(SETTLE, || arrived(&second)),
        "{behaviour:?}: of {} alerts written before the kill, {} reached the receiver\n{}",
        written.len(),
        received_first + second.count(),
        m2.stderr()
    );
    assert!(
        wait_until(SETTLE, || m2.metric("mcp_monitor_sink_backlog", &[("sink", "hook")])
            == 0.0),
        "the backlog never emptied"
    );
    got.extend(second.alerts.lock().unwrap().iter().cloned());
    let mut by_id: std::collections::HashMap<String, Value> = std::collections::HashMap::new();
    for a in &got {
        let id = a["id"].as_str().unwrap().to_owned();
        if let Some(earlier) = by_id.insert(id.clone(), a.clone()) {
            assert_eq!(&earlier, a, "{id} arrived twice with different contents");
        }
    }
    eprintln!(
        "{behaviour:?}: {} alerts written before the kill, {} received before it, {} after the restart ({} distinct)",
        written.len(),
        received_first,
        second.count(),
        by_id.len()
    );
}

/// The receiver answers, 2 s per request.
#[test]
fn kill_9_with_a_slow_receiver_loses_no_alert() {
    kill_9_with_a_misbehaving_receiver(Behaviour::Answer(Duration::from_secs(2)), 30);
}

/// The receiver accepts connections and never answers.
#[test]
fn kill_9_with_a_hung_receiver_loses_no_alert() {
    kill_9_with_a_misbehaving_receiver(Behaviour::Hang, 30);
}

/// The receiver fails, then recovers before the kill.
#[test]
fn kill_9_with_a_receiver_that_fails_then_recovers_loses_no_alert() {
    kill_9_with_a_misbehaving_receiver(Behaviour::FailFirst(1), 60);
}

/// The receiver is down while the alerts happen and the monitor stops with
/// them spooled; the next monitor (same state directory) delivers each
/// exactly once, as OCSF findings.
#[test]
fn webhook_alerts_survive_a_receiver_outage_and_a_monitor_restart() {
    require_root();
    let hook = WebhookSetup::new("webhook", "format = \"ocsf\"\n");
    let (port, state) = (hook.port, hook.state());
    let owned = hook.args();
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let mut m = Monitor::start(&args);
    let token = leak_session();
    let alerts = m.wait_alerts(SETTLE, has_all_rules);
    assert!(has_all_rules(&alerts), "alerts: {alerts:?}");
    let n = alerts.len() as f64;
    assert!(wait_until(SETTLE, || m
        .metric("mcp_monitor_sink_spooled_total", &[("sink", "hook")])
        == n));
    assert!(
        m.metric("mcp_monitor_sink_retried_total", &[("sink", "hook")]) >= 1.0,
        "delivery was attempted"
    );
    assert_eq!(m.metric("mcp_monitor_sink_sent_total", &[("sink", "hook")]), 0.0);
    assert_eq!(m.metric("mcp_monitor_sink_backlog", &[("sink", "hook")]), n);
    let stopping = Instant::now();
    m.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "stopping took {:?}",
        stopping.elapsed()
    );
    // The shutdown says what it leaves, and where.
    assert!(
        m.stderr()
            .contains(&format!("sink hook: {n} alerts not delivered stay in the spool")),
        "{}",
        m.stderr()
    );
    let spool: String = std::fs::read_dir(state.join("spool/hook"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(!spool.contains(&token[4..]), "the planted key is in the spool");

    let rx = Receiver::start(port);
    let m2 = Monitor::start(&args);
    let want: Vec<String> = alerts.iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect();
    assert!(
        wait_until(SETTLE, || rx.ids.lock().unwrap().len() >= want.len()),
        "received {:?}\n{}",
        rx.ids.lock().unwrap(),
        m2.stderr()
    );
    std::thread::sleep(Duration::from_secs(2));
    let got = rx.ids.lock().unwrap().clone();
    assert_eq!(got, want, "every alert exactly once, in order");
    assert_eq!(m2.metric("mcp_monitor_sink_sent_total", &[("sink", "hook")]), n);
    assert_eq!(m2.metric("mcp_monitor_sink_backlog", &[("sink", "hook")]), 0.0);
}
