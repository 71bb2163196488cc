//! Alert delivery and metrics export, end to end: the real monitor watches a
//! real MCP session that leaks a planted fake key (four alerts), and real
//! receivers take the alerts: rsyslog over UDP, TCP and TLS; a webhook
//! receiver that is down for a monitor's whole life and up for the next;
//! Prometheus scraping the metrics.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mcp_monitor_tests::*;
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(30);

/// The four alerts of the leak scenario (see tests/detection.rs).
const LEAK_RULES: [&str; 4] = [
    "credential.exposure",
    "credential.exfiltration",
    "credential.relay",
    "tool_chain.exfiltration_cross_server",
];

/// Runs the leak scenario: a file with a planted GitHub token read through
/// server-filesystem, then passed to the FastMCP server's send_message.
/// Returns the token (to check it never appears).
fn leak_session() -> String {
    let fsdir = TempDir::new("leakfs");
    let token = fake::github_token();
    let file = fsdir.path().join("secrets.env");
    std::fs::write(&file, format!("GITHUB_TOKEN={token}\n")).unwrap();
    let d = Driver::node_with_env(
        "leak",
        &[fsdir.path().to_str().unwrap(), file.to_str().unwrap()],
        &[("MCP_TEST_PYTHON", python().to_str().unwrap())],
    );
    d.finish();
    token
}

fn has_all_rules(alerts: &[Value]) -> bool {
    LEAK_RULES.iter().all(|r| alerts.iter().any(|a| a["rule"] == *r))
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    f()
}

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16, what: &str, daemon: &mut Daemon, log: &std::path::Path) {
    let ok = wait_until(Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    if !ok {
        let st = daemon.0.try_wait().unwrap();
        panic!(
            "{what} not listening on {port} ({st:?}):\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

#[test]
fn alerts_reach_rsyslog_over_udp_tcp_and_tls_as_json_and_cef() {
    require_root();
    let dir = TempDir::new("rsyslog");
    let d = dir.path();
    // A CA and a server certificate for 127.0.0.1 / localhost.
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(d.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    let (udp, tcp, tls) = (free_port(), free_port(), free_port());
    let p = |f: &str| d.join(f).display().to_string();
    let conf = format!(
        r#"global(workDirectory="{dir}" maxMessageSize="64k"
  DefaultNetstreamDriverCAFile="{ca}" DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}")
module(load="imudp")
module(load="imtcp" maxSessions="50")
template(name="t" type="string" string="%syslogseverity% %syslogfacility% %app-name% %msgid% %msg%\n")
ruleset(name="udp") {{ action(type="omfile" file="{udp_log}" template="t") }}
ruleset(name="tcp") {{ action(type="omfile" file="{tcp_log}" template="t") }}
ruleset(name="tls") {{ action(type="omfile" file="{tls_log}" template="t") }}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="udp")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="tls" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
"#,
        dir = d.display(),
        ca = p("ca.pem"),
        cert = p("server.pem"),
        key = p("server.key"),
        udp_log = p("udp.log"),
        tcp_log = p("tcp.log"),
        tls_log = p("tls.log"),
    );
    std::fs::write(d.join("rsyslog.conf"), conf).unwrap();
    let log = d.join("rsyslogd.log");
    let mut rsyslog = Daemon(
        Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(d.join("rsyslog.conf"))
            .arg("-i")
            .arg(d.join("rsyslogd.pid"))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(d.join("rsyslogd.err")).unwrap())
            .spawn()
            .expect("rsyslogd (apt-get install rsyslog rsyslog-gnutls)"),
    );
    wait_port(tcp, "rsyslog tcp", &mut rsyslog, &d.join("rsyslogd.err"));
    wait_port(tls, "rsyslog tls", &mut rsyslog, &d.join("rsyslogd.err"));

    let config = d.join("monitor.toml");
    std::fs::write(
        &config,
        format!(
            r#"[[sinks]]
type = "syslog"
name = "udp"
address = "127.0.0.1:{udp}"
protocol = "udp"

[[sinks]]
type = "syslog"
name = "tcp"
address = "127.0.0.1:{tcp}"
protocol = "tcp"
facility = "local3"

[[sinks]]
type = "syslog"
name = "tls"
address = "127.0.0.1:{tls}"
protocol = "tls"
format = "cef"
ca_file = "{ca}"
server_name = "localhost"
"#,
            ca = p("ca.pem")
        ),
    )
    .unwrap();
    let m = Monitor::start(&["--config", config.to_str().unwrap()]);
    let token = leak_session();
    let alerts = m.wait_alerts(SETTLE, has_all_rules);
    assert!(has_all_rules(&alerts), "alerts: {alerts:?}\n{}", m.stderr());
    let ids: Vec<String> = alerts.iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect();
    let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
    let all_there = |f: &str| {
        let text = read(f);
        ids.iter().all(|id| text.contains(id.as_str()))
    };
    assert!(
        wait_until(SETTLE, || all_there("udp.log")
            && all_there("tcp.log")
            && all_there("tls.log")),
        "not every alert reached rsyslog:\nudp: {}\ntcp: {}\ntls: {}\nmonitor: {}\nrsyslog: {}",
        read("udp.log"),
        read("tcp.log"),
        read("tls.log"),
        m.stderr(),
        read("rsyslogd.err")
    );
    // Each line: severity facility app-name msgid message.
    for (file, facility) in [("udp.log", "16"), ("tcp.log", "19")] {
        for line in read(file).lines() {
            let parts: Vec<&str> = line.splitn(5, ' ').collect();
            let alert: Value =
                serde_json::from_str(parts[4].trim_start()).unwrap_or_else(|e| panic!("{file}: {e}: {line}"));
            let sev = match alert["severity"].as_str().unwrap() {
                "critical" => "2",
                "high" => "3",
                "medium" => "4",
                "low" => "5",
                _ => "6",
            };
            assert_eq!(parts[0], sev, "{line}");
            assert_eq!(parts[1], facility, "{line}");
            assert_eq!(parts[2], "mcp-monitor");
            assert_eq!(parts[3], alert["category"].as_str().unwrap());
        }
    }
    for line in read("tls.log").lines() {
        let msg = line.splitn(5, ' ').nth(4).unwrap().trim_start();
        assert!(msg.starts_with("CEF:0|mcp-monitor|mcp-monitor|"), "{line}");
        assert!(msg.contains("externalId="), "{line}");
    }
    for f in ["udp.log", "tcp.log", "tls.log"] {
        assert!(!read(f).contains(&token[4..]), "the planted key reached {f}");
    }
    for s in ["udp", "tcp", "tls"] {
        assert_eq!(
            m.metric("mcp_monitor_sink_sent_total", &[("sink", s)]),
            ids.len() as f64,
            "sink {s}"
        );
        assert_eq!(
            m.metric("mcp_monitor_sink_dropped_total", &[("sink", s)]),
            0.0,
            "sink {s}"
        );
    }
}

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

/// SIGHUP applies a new rules file and new sinks without a restart.
#[test]
fn sighup_reloads_rules_and_sinks() {
    require_root();
    let dir = TempDir::new("reload");
    let config = dir.path().join("monitor.toml");
    let rules = dir.path().join("rules.toml");
    let sink_file = dir.path().join("sink.jsonl");
    std::fs::write(&rules, "").unwrap();
    std::fs::write(&config, format!("[detection]\nrules_file = \"{}\"\n", rules.display())).unwrap();
    let m = Monitor::start(&["--config", config.to_str().unwrap()]);
    // Now: silence the relay alert, and add a file sink.
    std::fs::write(&rules, "[[silence]]\nrule = \"credential.relay\"\n").unwrap();
    std::fs::write(
        &config,
        format!(
            "[detection]\nrules_file = \"{}\"\n\n[[sinks]]\ntype = \"file\"\nname = \"f\"\npath = \"{}\"\n",
            rules.display(),
            sink_file.display()
        ),
    )
    .unwrap();
    m.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || m.stderr().contains("1 alert sinks running")),
        "{}",
        m.stderr()
    );
    leak_session();
    let want = |a: &[Value]| {
        [
            "credential.exposure",
            "credential.exfiltration",
            "tool_chain.exfiltration_cross_server",
        ]
        .iter()
        .all(|r| a.iter().any(|x| x["rule"] == *r))
    };
    let alerts = m.wait_alerts(SETTLE, want);
    assert!(want(&alerts), "{alerts:?}");
    std::thread::sleep(Duration::from_secs(2));
    let alerts = m.alerts();
    assert!(
        alerts.iter().all(|a| a["rule"] != "credential.relay"),
        "the silenced rule fired"
    );
    assert_eq!(
        m.metric("mcp_monitor_alerts_silenced_total", &[("rule", "credential.relay")]),
        1.0
    );
    let sunk: Vec<Value> = std::fs::read_to_string(&sink_file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sunk.len(), alerts.len(), "the new sink got every alert");
    // A broken file is refused and the running configuration kept.
    std::fs::write(&config, "[[sinks]]\ntype = \"nope\"\n").unwrap();
    m.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || m.stderr().contains("reload failed")),
        "{}",
        m.stderr()
    );
    assert!(http_get(m.metrics_addr, "/readyz").unwrap().0.contains("200"));
}

fn prometheus_query(addr: SocketAddr, q: &str) -> Option<f64> {
    let enc: String = q
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_-.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let (_, body) = http_get(addr, &format!("/api/v1/query?query={enc}")).ok()?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Debian's Prometheus scrapes the monitor; its query API returns the
/// message and alert counts the monitor itself reports.
#[test]
fn prometheus_scrapes_messages_and_alerts() {
    require_root();
    let dir = TempDir::new("prom");
    let config = dir.path().join("monitor.toml");
    std::fs::write(&config, "[capture]\nprogram_stats = true\n").unwrap();
    let m = Monitor::start(&["--config", config.to_str().unwrap()]);
    let prom_port = free_port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mcp-monitor\n    static_configs:\n      - targets: ['{}']\n",
            m.metrics_addr
        ),
    )
    .unwrap();
    let log = dir.path().join("prometheus.log");
    let mut prom = Daemon(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("prometheus (apt-get install prometheus)"),
    );
    wait_port(prom_port, "prometheus", &mut prom, &log);
    leak_session();
    let alerts = m.wait_alerts(SETTLE, has_all_rules);
    assert!(has_all_rules(&alerts));
    let events = m.events().len() as f64;
    let addr: SocketAddr = format!("127.0.0.1:{prom_port}").parse().unwrap();
    let ok = wait_until(Duration::from_secs(30), || {
        prometheus_query(addr, "sum(mcp_monitor_messages_total)") == Some(events)
            && prometheus_query(addr, "sum(mcp_monitor_alerts_total)") == Some(alerts.len() as f64)
    });
    assert!(
        ok,
        "prometheus has messages {:?} (monitor wrote {events} events), alerts {:?} (monitor wrote {}):\n{}",
        prometheus_query(addr, "sum(mcp_monitor_messages_total)"),
        prometheus_query(addr, "sum(mcp_monitor_alerts_total)"),
        alerts.len(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(
        prometheus_query(addr, "sum(mcp_monitor_alerts_total{severity=\"critical\"})"),
        Some(alerts.iter().filter(|a| a["severity"] == "critical").count() as f64)
    );
    assert_eq!(prometheus_query(addr, "up{job=\"mcp-monitor\"}"), Some(1.0));
    // Per-program statistics: what each syscall program captured, and how
    // often the kernel ran each program.
    assert!(m.metric("mcp_monitor_capture_syscall_events_total", &[("syscall", "read")]) > 0.0);
    assert!(m.metric("mcp_monitor_capture_syscall_bytes_total", &[("syscall", "read")]) > 0.0);
    let runs = m.metric("mcp_monitor_bpf_program_runs_total", &[]);
    assert!(runs > 0.0, "no program runs counted:\n{}", m.metrics_text());
    assert!(m.metric("mcp_monitor_bpf_program_run_seconds_total", &[]) > 0.0);
}
