//! Alert delivery and metrics export, end to end: the real monitor watches a
//! real MCP session that leaks a planted fake key (four alerts), and real
//! receivers take the alerts: rsyslog over UDP, TCP and TLS; Prometheus
//! scraping the metrics; rules and sinks reloaded on SIGHUP. The webhook
//! under faults is in `webhook.rs`.

use std::{
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::Duration,
};

use mcp_monitor_tests::*;
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(30);
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
