//! Harness for the integration tests: start the real monitor (root), drive
//! real MCP servers with the official SDK clients, and compare what the
//! monitor reported with what the clients actually sent and received.
//!
//! Environment (set by `cargo xtask test`):
//! - `MCP_MONITOR_BIN`: the mcp-monitor binary (default target/release).
//! - `MCP_TEST_CLIENTS`: tests/clients, with node_modules installed.
//! - `MCP_TEST_PYTHON`: python of the virtualenv with `mcp` and `fastmcp`.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

/// Root of the workspace (the parent directory of the `tests` crate).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The monitor binary under test.
pub fn monitor_bin() -> PathBuf {
    std::env::var_os("MCP_MONITOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/release/mcp-monitor"))
}

/// tests/clients (with node_modules).
pub fn clients_dir() -> PathBuf {
    std::env::var_os("MCP_TEST_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("tests/clients"))
}

/// Python with the MCP SDK installed.
pub fn python() -> PathBuf {
    std::env::var_os("MCP_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/bin/python"))
}

/// How much slower than native this machine runs the tests: 1 natively;
/// the kernel matrix sets `MCP_TEST_TIME_SCALE` in its emulated guests.
/// Every wait of the harness is multiplied by it.
pub fn time_scale() -> u32 {
    std::env::var("MCP_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1)
}

/// `d` scaled by [`time_scale`].
pub fn scaled(d: Duration) -> Duration {
    d * time_scale()
}

/// Fails the test early, with the fix, when not root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "integration tests load eBPF programs and must run as root: `sudo cargo xtask test`"
    );
    assert!(
        monitor_bin().exists(),
        "{} is missing: run `cargo xtask build`",
        monitor_bin().display()
    );
    assert!(
        clients_dir().join("node_modules/@modelcontextprotocol/sdk").exists(),
        "test clients are not installed: run `cargo xtask setup`"
    );
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh `mcpmon-<tag>-<pid>-<n>` directory under the system temp directory.
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "mcpmon-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `openssl ARGS` in `dir` (certificates for TLS tests; `cargo xtask
/// setup` installs openssl) and fails the test if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let st = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl (cargo xtask setup installs it)");
    assert!(st.success(), "openssl {args:?}");
}

/// A TCP port free on 127.0.0.1 right now, never one this test process
/// was given before (a port picked for a receiver that is not started yet
/// must not become a monitor's metrics port).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let p = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !given.contains(&p) {
            given.push(p);
            return p;
        }
    }
}

/// Minimal HTTP GET; returns (status line, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Ok((head.lines().next().unwrap_or("").to_owned(), body.to_owned()))
}

/// Minimal HTTP POST of a JSON body; returns (status line, body).
pub fn http_post(addr: SocketAddr, path: &str, body: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Ok((head.lines().next().unwrap_or("").to_owned(), body.to_owned()))
}

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
        let mut m = Monitor {
            child: Some(child),
            dir,
            events_path,
            alerts_path,
            metrics_addr,
        };
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

    /// Stops the monitor (SIGINT) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: sending a signal to our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + scaled(Duration::from_secs(20));
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.wait();
        }
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

/// One message of a client transcript.
#[derive(Clone, Debug)]
pub struct Sent {
    /// `c2s` (client to server) or `s2c` (server to client).
    pub dir: String,
    /// Size in bytes of the message's JSON text on the wire (without the line's newline).
    pub bytes: u64,
    /// `request`, `notification`, `response` or `error`.
    pub kind: String,
    /// JSON-RPC method; `None` for responses and errors.
    pub method: Option<String>,
    /// JSON-RPC id; `Null` when the message has none (notifications).
    pub id: Value,
    /// Tool name of a `tools/call` request.
    pub tool: Option<String>,
    /// Sent after a `--pause`d driver was resumed (always true when it did not pause).
    pub after_resume: bool,
}

/// What a client driver saw on the wire.
#[derive(Clone, Debug)]
pub struct Transcript {
    /// Pid of the client driver process.
    pub client_pid: u32,
    /// Pid of the server the driver started; 0 for HTTP drivers (the test knows the server).
    pub server_pid: u32,
    /// Every message that crossed, in the order the client saw them.
    pub messages: Vec<Sent>,
}

impl Transcript {
    /// Reads the transcript JSON file a client driver wrote.
    pub fn load(path: &Path) -> Transcript {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("transcript written")).unwrap();
        let messages = v["transcript"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| Sent {
                dir: t["dir"].as_str().unwrap().to_owned(),
                bytes: t["bytes"].as_u64().unwrap(),
                kind: t["msg"]["kind"].as_str().unwrap().to_owned(),
                method: t["msg"]["method"].as_str().map(str::to_owned),
                id: t["msg"]["id"].clone(),
                tool: t["msg"]["tool"].as_str().map(str::to_owned),
                after_resume: t["after_resume"].as_bool().unwrap_or(true),
            })
            .collect();
        Transcript {
            client_pid: v["client_pid"].as_u64().unwrap() as u32,
            // HTTP drivers do not start the server: the test knows its pid.
            server_pid: v["server_pid"].as_u64().unwrap_or(0) as u32,
            messages,
        }
    }

    /// The events the monitor should report, per direction, as comparable
    /// rows: (type, method, id, tool, bytes). Responses take the method and
    /// tool of their request, as the monitor's events do.
    pub fn expected(&self, only_after_resume: bool) -> HashMap<String, Vec<Row>> {
        let mut requests: HashMap<(String, String), (Option<String>, Option<String>)> = HashMap::new();
        let mut out: HashMap<String, Vec<Row>> = HashMap::new();
        for m in &self.messages {
            let (method, tool) = match m.kind.as_str() {
                "request" => {
                    requests.insert((m.dir.clone(), m.id.to_string()), (m.method.clone(), m.tool.clone()));
                    (m.method.clone(), m.tool.clone())
                }
                "response" | "error" => {
                    let other = if m.dir == "c2s" { "s2c" } else { "c2s" };
                    requests
                        .get(&(other.to_owned(), m.id.to_string()))
                        .cloned()
                        .unwrap_or((None, None))
                }
                _ => (m.method.clone(), None),
            };
            if only_after_resume && !m.after_resume {
                continue;
            }
            out.entry(m.dir.clone()).or_default().push(Row {
                kind: m.kind.clone(),
                method,
                id: m.id.clone(),
                tool,
                bytes: m.bytes,
            });
        }
        out
    }
}

/// Comparable view of one message.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// `request`, `notification`, `response` or `error` (the event's `type`).
    pub kind: String,
    /// Method; responses and errors carry that of their request.
    pub method: Option<String>,
    /// JSON-RPC id; `Null` when the message has none.
    pub id: Value,
    /// Tool name of a `tools/call`; responses carry that of their request.
    pub tool: Option<String>,
    /// Size of the message in bytes.
    pub bytes: u64,
}

/// Events of the session whose server is `server_pid`, per direction.
pub fn observed(events: &[Value], server_pid: u32) -> HashMap<String, Vec<Row>> {
    observed_rows(
        events
            .iter()
            .filter(|e| e["server"]["pid"].as_u64() == Some(server_pid as u64)),
    )
}

/// `events` as comparable rows, per direction.
pub fn observed_rows<'a>(events: impl IntoIterator<Item = &'a Value>) -> HashMap<String, Vec<Row>> {
    let mut out: HashMap<String, Vec<Row>> = HashMap::new();
    for e in events {
        let dir = match e["direction"].as_str().unwrap() {
            "client_to_server" => "c2s",
            _ => "s2c",
        };
        out.entry(dir.to_owned()).or_default().push(Row {
            kind: e["type"].as_str().unwrap().to_owned(),
            method: e["method"].as_str().map(str::to_owned),
            id: e["id"].clone(),
            tool: e["tool"].as_str().map(str::to_owned),
            bytes: e["bytes"].as_u64().unwrap(),
        });
    }
    out
}

/// Asserts the monitor's rows equal the transcript's, direction by direction,
/// with a readable first difference.
pub fn assert_same(expected: &HashMap<String, Vec<Row>>, got: &HashMap<String, Vec<Row>>) {
    for dir in ["c2s", "s2c"] {
        let e = expected.get(dir).map(Vec::as_slice).unwrap_or(&[]);
        let g = got.get(dir).map(Vec::as_slice).unwrap_or(&[]);
        if e != g {
            let first = e
                .iter()
                .zip(g)
                .position(|(a, b)| a != b)
                .unwrap_or(e.len().min(g.len()));
            panic!(
                "{dir}: expected {} messages, monitor reported {}; first difference at #{first}:\n  expected {:?}\n  reported {:?}",
                e.len(),
                g.len(),
                e.get(first),
                g.get(first)
            );
        }
    }
}

/// A running client driver (for tests that pause it).
pub struct Driver {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Where the driver writes its transcript (in a temporary directory removed on drop).
    pub transcript_path: PathBuf,
    _dir: TempDir,
}

impl Driver {
    /// Starts tests/clients/stdio_session.mjs with `scenario`.
    pub fn node(scenario: &str, extra: &[&str]) -> Driver {
        Self::node_with_env(scenario, extra, &[])
    }

    /// Same, with extra environment variables for the driver.
    pub fn node_with_env(scenario: &str, extra: &[&str], env: &[(&str, &str)]) -> Driver {
        let dir = TempDir::new("drv");
        let transcript_path = dir.path().join("transcript.json");
        let mut child = Command::new("node")
            .current_dir(clients_dir())
            .arg("stdio_session.mjs")
            .arg(scenario)
            .arg(&transcript_path)
            .args(extra)
            // The PyPI reference servers live in the test virtualenv.
            .env("MCP_TEST_PYTHON", python())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn node (is Node.js installed?)");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Driver {
            child,
            stdin,
            stdout,
            transcript_path,
            _dir: dir,
        }
    }

    /// Waits for the driver to print `line`.
    pub fn expect_line(&mut self, line: &str) {
        let mut s = String::new();
        loop {
            s.clear();
            let n = self.stdout.read_line(&mut s).unwrap();
            assert!(n > 0, "driver ended before printing {line:?}");
            if s.trim() == line {
                return;
            }
        }
    }

    /// Sends a line to the driver's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the driver to finish and returns its transcript.
    pub fn finish(mut self) -> Transcript {
        drop(self.stdin.take());
        let st = self.child.wait().unwrap();
        assert!(st.success(), "client driver failed: {st}");
        Transcript::load(&self.transcript_path)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // A failed test must not leave a paused client (and its server) behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the MCP Inspector CLI (npm `@modelcontextprotocol/inspector-cli`)
/// with `args` (a server command or URL, then `--method ...`); returns its
/// pid and what it printed. It keeps no transcript: tests assert the
/// exchange it is known to make (initialize, initialized, the method).
pub fn inspector_cli(args: &[&str]) -> (u32, String) {
    let cli = clients_dir().join("node_modules/@modelcontextprotocol/inspector-cli/build/index.js");
    let child = Command::new("node")
        .arg(cli)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the MCP Inspector CLI (cargo xtask setup installs it)");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "inspector CLI {args:?} failed");
    (pid, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A console script of the Python test virtualenv (the PyPI servers).
pub fn venv_script(name: &str) -> PathBuf {
    python().parent().unwrap().join(name)
}

/// Runs `stdio_session.mjs` with `scenario` to completion and returns its transcript.
pub fn run_node(scenario: &str, extra: &[&str]) -> Transcript {
    Driver::node(scenario, extra).finish()
}

/// Runs the Python SDK client against a Python FastMCP server.
pub fn run_python_fastmcp() -> Transcript {
    let server = clients_dir().join("fastmcp_server.py");
    run_python_client("", &[python().as_os_str(), server.as_os_str()], &[])
}

/// Runs the Python SDK client (`py_session.py`) in `scenario` against the
/// stdio server `command`, with `env` for the client.
pub fn run_python_client(scenario: &str, command: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Transcript {
    let dir = TempDir::new("py");
    let path = dir.path().join("transcript.json");
    let st = Command::new(python())
        .arg(clients_dir().join("py_session.py"))
        .arg(&path)
        .args(command)
        .env("MCP_TEST_PY_SCENARIO", scenario)
        .envs(env.iter().copied())
        .stderr(Stdio::null())
        .status()
        .expect("spawn python");
    assert!(st.success(), "python client ({scenario:?}) failed: {st}");
    Transcript::load(&path)
}

/// Fake credentials in real formats, random per run (never real secrets).
pub mod fake {
    fn rng() -> impl FnMut() -> u64 {
        let mut s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    fn pick(next: &mut impl FnMut() -> u64, alphabet: &[u8], n: usize) -> String {
        (0..n)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char)
            .collect()
    }

    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A GitHub classic PAT with a valid checksum.
    pub fn github_token() -> String {
        let mut r = rng();
        let body = pick(&mut r, BASE62, 30);
        let mut v = crc32(body.as_bytes());
        let mut sum = [b'0'; 6];
        for i in (0..6).rev() {
            sum[i] = BASE62[(v % 62) as usize];
            v /= 62;
        }
        format!("ghp_{body}{}", std::str::from_utf8(&sum).unwrap())
    }

    /// An AWS access key id and secret access key.
    pub fn aws_keys() -> (String, String) {
        let mut r = rng();
        r();
        (
            format!("AKIA{}", pick(&mut r, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)),
            pick(
                &mut r,
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+",
                40,
            ),
        )
    }
}

/// Number of messages in a transcript map.
pub fn count(rows: &HashMap<String, Vec<Row>>) -> usize {
    rows.values().map(Vec::len).sum()
}

/// Runs a Python SDK session with the FastMCP server under a shell that
/// waits for a go: `prepare` gets the shell's pid first (to select it, or
/// move it into a cgroup), so the client and server are its children,
/// forked afterwards.
pub fn python_session_under_shell(prepare: impl FnOnce(u32)) -> Transcript {
    let dir = TempDir::new("sel");
    let transcript = dir.path().join("t.json");
    // `read` waits for the go; `; true` keeps sh from exec'ing python, so
    // the client is a child forked after the shell was selected.
    let script = format!(
        "read go; {py} {clients}/py_session.py {t} {py} {clients}/fastmcp_server.py 2>/dev/null; true",
        py = python().display(),
        clients = clients_dir().display(),
        t = transcript.display()
    );
    let mut sh = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    prepare(sh.id());
    writeln!(sh.stdin.as_mut().unwrap(), "go").unwrap();
    assert!(sh.wait().unwrap().success());
    Transcript::load(&transcript)
}

/// The cgroup v2 hierarchy (`/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup_root() -> PathBuf {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists())
        .expect("a cgroup v2 hierarchy")
}

/// 64 hex digits, different per seed.
pub fn container_id(seed: u64) -> String {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    (0..4)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{x:016x}")
        })
        .collect()
}

/// Removes test cgroups `base/<path>` and their parents up to and including
/// `base`, deepest first, once their processes have exited.
pub fn remove_cgroups<'a>(base: &Path, paths: impl IntoIterator<Item = &'a str>) {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for path in paths {
        let mut p = base.join(path);
        while p != base {
            dirs.push(p.clone());
            p = p.parent().unwrap().to_owned();
        }
    }
    dirs.push(base.to_owned());
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    for d in dirs {
        for _ in 0..50 {
            if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
