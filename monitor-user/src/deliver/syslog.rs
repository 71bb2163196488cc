//! Syslog sink: RFC 5424 messages over UDP (one per datagram), TCP with
//! octet-counting framing (RFC 6587) or TLS (RFC 5425).
//!
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`: PRI from the
//! configured facility and the alert severity (critical 2, high 3, medium 4,
//! low 5, info 6), TIMESTAMP the alert time (microseconds, UTC), MSGID the
//! alert category, no structured data, MSG the alert as JSON or CEF.
//!
//! While the receiver is unreachable, messages wait in a bounded queue
//! (`queue`, default 10,000 messages, and at most 32 MiB; the oldest are
//! dropped and counted when full)
//! and the connection is retried with backoff. Over TCP a write can succeed
//! into a connection the receiver has already closed; the sink checks for a
//! closed connection before each write, which narrows (but, as with any
//! syslog over TCP, cannot close) that window. Receivers limit message size
//! (rsyslog: 8 KiB by default); alerts are usually 2-6 KiB, so set
//! `$MaxMessageSize 64k` or equivalent.

use std::{
    collections::VecDeque,
    io::{self, Write},
    net::{TcpStream, ToSocketAddrs, UdpSocket},
    sync::{mpsc::Receiver, Arc},
    time::{Duration, Instant},
};

use rustls::ClientConfig;

use super::{
    encode, next_alert,
    tls::{self, Conn},
    Backoff, ErrorLog, Format, Queued, SinkMetrics, SyslogProtocol, SyslogSink, QUEUE_BYTES,
};
use crate::detect::alert::{Alert, Severity};

/// Facility code of a name (`local0` ... and the RFC 5424 table).
pub fn facility_code(name: &str) -> Option<u8> {
    const NAMES: [&str; 24] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp", "ntp",
        "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
    ];
    NAMES.iter().position(|n| *n == name).map(|i| i as u8)
}

/// Syslog severity of an alert severity.
pub fn syslog_severity(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

fn rfc5424_time(ns: i128) -> String {
    let secs = ns.div_euclid(1_000_000_000) as u64;
    let micros = (ns.rem_euclid(1_000_000_000) / 1000) as u32;
    let t = std::time::UNIX_EPOCH + Duration::new(secs, micros * 1000);
    // humantime prints microseconds with this precision.
    humantime::format_rfc3339_micros(t).to_string()
}

/// The RFC 5424 message for `alert` (without transport framing).
pub fn message(alert: &Alert, facility: u8, hostname: &str, app_name: &str, format: Format) -> anyhow::Result<Vec<u8>> {
    let pri = facility as u16 * 8 + syslog_severity(alert.severity) as u16;
    let host = if hostname.is_empty() { "-" } else { hostname };
    let mut m = format!(
        "<{pri}>1 {} {} {} {} {} - ",
        rfc5424_time(alert.time),
        printable(host, 255),
        printable(app_name, 48),
        std::process::id(),
        printable(alert.category.as_str(), 32)
    )
    .into_bytes();
    m.extend_from_slice(&encode(alert, format)?);
    Ok(m)
}

/// Header fields are printable US-ASCII without spaces, bounded.
fn printable(s: &str, max: usize) -> String {
    let v: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if v.is_empty() {
        "-".into()
    } else {
        v
    }
}

enum Link {
    Udp(UdpSocket),
    Stream(Conn),
}

/// The thread behind a `type = "syslog"` sink.
pub struct SyslogWorker {
    address: String,
    protocol: SyslogProtocol,
    format: Format,
    facility: u8,
    app_name: String,
    hostname: String,
    tls: Option<Arc<ClientConfig>>,
    server_name: String,
    capacity: usize,
    queue: VecDeque<Vec<u8>>,
    /// Bytes of the messages in `queue` (bounded by `QUEUE_BYTES` too).
    queued_bytes: usize,
    link: Option<Link>,
    metrics: SinkMetrics,
    log: ErrorLog,
}

impl SyslogWorker {
    /// Prepares the sink (TLS roots are loaded now, so a bad CA file fails
    /// at start-up); the connection is made by the thread.
    pub fn new(cfg: &SyslogSink, name: &str, metrics: SinkMetrics) -> anyhow::Result<Self> {
        let tls = match cfg.protocol {
            SyslogProtocol::Tls => Some(tls::client_config(cfg.ca_file.as_deref())?),
            _ => None,
        };
        let host = cfg.address.rsplit_once(':').map_or(cfg.address.as_str(), |(h, _)| h);
        Ok(SyslogWorker {
            address: cfg.address.clone(),
            protocol: cfg.protocol,
            format: cfg.format,
            facility: facility_code(&cfg.facility)
                .ok_or_else(|| anyhow::anyhow!("unknown facility {}", cfg.facility))?,
            app_name: cfg.app_name.clone(),
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            tls,
            server_name: cfg
                .server_name
                .clone()
                .unwrap_or_else(|| host.trim_matches(['[', ']']).to_owned()),
            capacity: cfg.queue.max(1),
            queue: VecDeque::new(),
            queued_bytes: 0,
            link: None,
            metrics,
            log: ErrorLog::new(name),
        })
    }

    /// Sends until the queue closes, then for at most 3 s more to empty its
    /// own queue (what remains is counted as dropped at shutdown).
    pub fn run(mut self, rx: Receiver<Queued>) {
        let mut backoff = Backoff::new();
        let mut closing_since: Option<Instant> = None;
        loop {
            let wait = if self.queue.is_empty() {
                Duration::from_secs(1)
            } else {
                backoff.wait().min(Duration::from_millis(500))
            };
            if closing_since.is_none() {
                match next_alert(&rx, wait) {
                    Ok(Some(a)) => {
                        self.enqueue(&a);
                        while let Ok(a) = rx.try_recv() {
                            self.enqueue(&a);
                        }
                    }
                    Ok(None) => {}
                    Err(()) => closing_since = Some(Instant::now()),
                }
            } else {
                std::thread::sleep(wait.min(Duration::from_millis(100)));
            }
            while !self.queue.is_empty() && backoff.ready() {
                if self.send_front() {
                    backoff.succeeded();
                } else {
                    self.metrics.retried.inc();
                    backoff.failed();
                }
            }
            if let Some(t) = closing_since {
                // Shorter than the shortest shutdown deadline (a reload's
                // 5 s), so that the thread ends and counts what it drops.
                if self.queue.is_empty() || t.elapsed() >= Duration::from_secs(3) {
                    if !self.queue.is_empty() {
                        log::warn!(
                            "sink stopping: {} alerts the syslog receiver {} did not take are lost (counted as dropped, reason shutdown)",
                            self.queue.len(),
                            self.address
                        );
                    }
                    self.metrics.gave_up("shutdown", self.queue.len() as u64);
                    return;
                }
            }
        }
    }

    fn enqueue(&mut self, alert: &Alert) {
        match message(alert, self.facility, &self.hostname, &self.app_name, self.format) {
            Ok(m) => {
                while !self.queue.is_empty()
                    && (self.queue.len() >= self.capacity || self.queued_bytes + m.len() > QUEUE_BYTES)
                {
                    self.pop_front();
                    self.metrics.gave_up("queue_full", 1);
                }
                self.queued_bytes += m.len();
                self.queue.push_back(m);
            }
            Err(e) => {
                self.metrics.gave_up("encode_error", 1);
                self.log.error(&format!("cannot encode an alert: {e}"));
            }
        }
    }

    fn pop_front(&mut self) {
        if let Some(m) = self.queue.pop_front() {
            self.queued_bytes -= m.len();
        }
    }

    fn connect(&mut self) -> io::Result<Link> {
        let addr = self
            .address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{} does not resolve", self.address)))?;
        Ok(match self.protocol {
            SyslogProtocol::Udp => {
                let local = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                let s = UdpSocket::bind(local)?;
                s.connect(addr)?;
                Link::Udp(s)
            }
            SyslogProtocol::Tcp | SyslogProtocol::Tls => {
                let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
                tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
                tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
                tcp.set_nodelay(true)?;
                match &self.tls {
                    Some(cfg) => Link::Stream(Conn::Tls(Box::new(tls::connect(cfg, &self.server_name, tcp)?))),
                    None => Link::Stream(Conn::Plain(tcp)),
                }
            }
        })
    }

    /// Writes the oldest queued message. `false`: retry later.
    fn send_front(&mut self) -> bool {
        if self
            .link
            .as_ref()
            .is_some_and(|l| matches!(l, Link::Stream(c) if peer_closed(c.tcp())))
        {
            self.link = None;
        }
        if self.link.is_none() {
            match self.connect() {
                Ok(l) => self.link = Some(l),
                Err(e) => {
                    self.log
                        .error(&format!("cannot connect to {}: {e}; retrying", self.address));
                    return false;
                }
            }
        }
        let msg = self.queue.front().expect("a queued message");
        let t = Instant::now();
        let r = match self.link.as_mut().expect("connected") {
            Link::Udp(s) => s.send(msg).map(|_| ()),
            Link::Stream(c) => {
                let mut framed = Vec::with_capacity(msg.len() + 8);
                framed.extend_from_slice(format!("{} ", msg.len()).as_bytes());
                framed.extend_from_slice(msg);
                c.write_all(&framed).and_then(|_| c.flush())
            }
        };
        match r {
            Ok(()) => {
                self.metrics.delivered(1);
                self.metrics.delivery.observe(t.elapsed().as_secs_f64());
                self.pop_front();
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                self.metrics.gave_up("rejected", 1);
                self.log
                    .error("an alert is larger than a UDP datagram can carry: dropped (use tcp or tls)");
                self.pop_front();
                true
            }
            Err(e) => {
                self.log
                    .error(&format!("sending to {} failed: {e}; reconnecting", self.address));
                self.link = None;
                false
            }
        }
    }
}

/// Has the receiver closed the connection (or sent something, which syslog
/// receivers never do)?
fn peer_closed(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return true;
    }
    let mut b = [0u8; 1];
    let closed = match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    let _ = s.set_nonblocking(false);
    closed
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader, Read},
        net::TcpListener,
    };

    use super::*;
    use crate::{
        deliver::{testing, Deliveries, SinkConfig},
        metrics::Metrics,
    };

    /// Large alerts while the receiver is away: the queue keeps at most
    /// QUEUE_BYTES of them, drops the oldest, and counts each drop.
    #[test]
    fn queue_is_bounded_by_bytes() {
        let metrics = Metrics::new();
        let m = SinkMetrics::new(&metrics, "big");
        let cfg: SyslogSink = toml::from_str("address = \"127.0.0.1:9\"").unwrap();
        let mut w = SyslogWorker::new(&cfg, "big", m.clone()).unwrap();
        let mut alert = testing::alert(1, crate::detect::alert::Severity::High);
        alert.evidence = serde_json::json!({"text": "e".repeat(1 << 20)});
        for _ in 0..100 {
            m.backlog.accept(1);
            w.enqueue(&alert);
        }
        assert!(w.queued_bytes <= QUEUE_BYTES, "{} bytes queued", w.queued_bytes);
        assert_eq!(w.queued_bytes, w.queue.iter().map(Vec::len).sum::<usize>());
        assert!(w.queue.len() >= 25 && w.queue.len() < 100, "{} queued", w.queue.len());
        let dropped = metrics.delivery.dropped.with_label_values(&["big", "queue_full"]).get();
        assert_eq!(dropped + w.queue.len() as u64, 100);
        assert_eq!(m.backlog.pending(), w.queue.len() as u64);
    }

    #[test]
    fn rfc5424_header() {
        let a = testing::alert(1, Severity::High);
        let m = String::from_utf8(message(&a, 16, "node-1", "mcp-monitor", Format::Json).unwrap()).unwrap();
        // local0 (16) * 8 + error (3) = 131.
        assert!(m.starts_with("<131>1 2026-"), "{m}");
        let parts: Vec<&str> = m.splitn(8, ' ').collect();
        assert!(parts[1].ends_with('Z') && parts[1].contains('.'), "{}", parts[1]);
        assert_eq!(
            &parts[2..7],
            [
                "node-1",
                "mcp-monitor",
                &std::process::id().to_string(),
                "credential_leak",
                "-"
            ]
        );
        let body: serde_json::Value = serde_json::from_str(parts[7]).unwrap();
        assert_eq!(body["id"], "alert-000001");
        assert_eq!(facility_code("local7"), Some(23));
        assert_eq!(facility_code("nope"), None);
    }

    /// TCP framing, and a receiver that drops the connection: the sink
    /// reconnects and nothing is lost.
    #[test]
    fn tcp_octet_counting_and_reconnect() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let metrics = Metrics::new();
        let cfg: SyslogSink = toml::from_str(&format!(
            "name = \"s\"\naddress = \"127.0.0.1:{port}\"\nprotocol = \"tcp\""
        ))
        .unwrap();
        let d = Deliveries::start(
            &[SinkConfig::Syslog(cfg)],
            std::path::Path::new("/nonexistent"),
            &metrics,
        )
        .unwrap();
        let read = |c: TcpStream, n: usize| -> Vec<String> {
            let mut r = BufReader::new(c);
            (0..n)
                .map(|_| {
                    let mut len = Vec::new();
                    r.read_until(b' ', &mut len).unwrap();
                    let len: usize = std::str::from_utf8(&len[..len.len() - 1]).unwrap().parse().unwrap();
                    let mut m = vec![0; len];
                    r.read_exact(&mut m).unwrap();
                    String::from_utf8(m).unwrap()
                })
                .collect()
        };
        for n in 0..5 {
            d.send(&testing::alert(n, Severity::Medium));
        }
        let (c, _) = l.accept().unwrap();
        let first = read(c, 5);
        assert!(first.iter().all(|m| m.starts_with("<132>1 ")));
        // The connection was dropped after reading; later alerts arrive on a new one.
        for n in 5..10 {
            d.send(&testing::alert(n, Severity::Medium));
        }
        let (c, _) = l.accept().unwrap();
        let second = read(c, 5);
        for (i, m) in second.iter().enumerate() {
            assert!(m.contains(&format!("alert-{:06}", i + 5)), "{m}");
        }
        d.shutdown(Duration::from_secs(5));
        assert_eq!(metrics.delivery.sent.with_label_values(&["s"]).get(), 10);
    }
}
