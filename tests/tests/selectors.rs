//! Configured capture (selectors) with zero-configuration discovery turned
//! off: only selected processes, and their children, are captured.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mcp_monitor_tests::*;

const SETTLE: Duration = Duration::from_secs(20);

fn assert_captured(m: &Monitor, t: &Transcript) {
    let expected = t.expected(false);
    let n = count(&expected);
    let events = m.wait_events(SETTLE, |ev| count(&observed(ev, t.server_pid)) >= n);
    assert_same(&expected, &observed(&events, t.server_pid));
}

#[test]
fn pid_selector_captures_the_process_and_children_forked_later() {
    require_root();
    let mut monitor = None;
    let t = python_session_under_shell(|shell| {
        monitor = Some(Monitor::start(&["--no-discovery", "--pid", &shell.to_string()]));
    });
    let m = monitor.unwrap();
    assert_captured(&m, &t);
    assert_eq!(
        m.metric("mcp_monitor_discovery_hits_total", &[]),
        0.0,
        "discovery was off"
    );
}

#[test]
fn without_discovery_unselected_processes_are_not_captured() {
    require_root();
    // Select a process with no children: nothing else may be captured.
    let mut idle = Command::new("sleep").arg("60").spawn().unwrap();
    let m = Monitor::start(&["--no-discovery", "--pid", &idle.id().to_string()]);
    let t = run_python_fastmcp();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        observed(&m.events(), t.server_pid).is_empty(),
        "an unselected session was captured"
    );
    assert_eq!(m.metric("mcp_monitor_capture_events_total", &[]), 0.0);
    let _ = idle.kill();
    let _ = idle.wait();
}

#[test]
fn executable_selector_matches_at_exec() {
    require_root();
    // Both the TypeScript client and server-everything are `node`.
    let m = Monitor::start(&["--no-discovery", "--exe", "node"]);
    let t = run_node("everything", &[]);
    assert_captured(&m, &t);
    // A Python session is not selected.
    let py = run_python_fastmcp();
    std::thread::sleep(Duration::from_secs(1));
    assert!(observed(&m.events(), py.server_pid).is_empty());
}

#[test]
fn cgroup_selector_captures_processes_in_that_cgroup() {
    require_root();
    let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|p| {
            std::path::Path::new(p).join("cgroup.procs").exists()
                && std::fs::read_to_string("/proc/filesystems").is_ok()
        })
        .expect("a cgroup v2 hierarchy");
    let cg = std::path::PathBuf::from(root).join(format!("mcp-monitor-test-{}", std::process::id()));
    std::fs::create_dir_all(&cg).expect("create a test cgroup");
    let m = Monitor::start(&["--no-discovery", "--cgroup", cg.to_str().unwrap()]);
    let t = python_session_under_shell(|shell| {
        std::fs::write(cg.join("cgroup.procs"), shell.to_string()).expect("move the shell into the cgroup");
    });
    assert_captured(&m, &t);
    drop(m);
    // The processes have exited; the empty cgroup can go.
    for _ in 0..50 {
        if std::fs::remove_dir(&cg).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn startup_without_privileges_says_how_to_fix_it() {
    require_root();
    // Root, but with every capability dropped.
    let out = Command::new("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-all", "--"])
        .arg(monitor_bin())
        .args(["run", "--metrics-addr", "127.0.0.1:0", "--events-file", "/dev/null"])
        .output()
        .expect("setpriv (util-linux)");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not enough privileges") && err.contains("setcap"),
        "unhelpful error: {err}"
    );
}

/// A FastMCP Streamable HTTP server on `port`, killed on drop.
struct HttpServer(Child);

impl HttpServer {
    fn start(port: u16) -> HttpServer {
        let child = Command::new(python())
            .arg(clients_dir().join("fastmcp_server.py"))
            .env("MCP_TEST_HTTP_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the FastMCP HTTP server");
        // Not by connecting: this test process would become a client of a
        // selected port, tracked, and so would every child it starts.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !listening(port) {
            assert!(Instant::now() < deadline, "nothing listens on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        HttpServer(child)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A socket of this network namespace listens on `port` (from
/// /proc/net/tcp: local address `:PORT` in hex, state 0A).
fn listening(port: u16) -> bool {
    let needle = format!(":{port:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|t| {
        std::fs::read_to_string(t).unwrap_or_default().lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && format!("{} ", f[1]).ends_with(&needle) && f[3] == "0A"
        })
    })
}

/// One Python SDK session against the server on `port`; the client's pid.
fn http_session(port: u16) -> u32 {
    let dir = TempDir::new("port-sel");
    let t = dir.path().join("t.json");
    let st = Command::new(python())
        .arg(clients_dir().join("py_http_session.py"))
        .arg(&t)
        .arg(format!("http://127.0.0.1:{port}/mcp"))
        .arg("1000")
        .status()
        .unwrap();
    assert!(st.success(), "the Python SDK HTTP session failed");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&t).unwrap()).unwrap();
    v["client_pid"].as_u64().unwrap() as u32
}

#[test]
fn port_selector_captures_servers_that_listened_before_or_after_start_and_their_clients() {
    require_root();
    let (before_port, after_port, other_port) = (free_port(), free_port(), free_port());
    let before = HttpServer::start(before_port);
    let m = Monitor::start(&[
        "--no-discovery",
        "--port",
        &before_port.to_string(),
        "--port",
        &after_port.to_string(),
    ]);
    // Bound after the monitor started: tracked at bind().
    let after = HttpServer::start(after_port);
    let other = HttpServer::start(other_port);
    let clients: Vec<u32> = [before_port, after_port, other_port]
        .iter()
        .map(|p| http_session(*p))
        .collect();
    let server_events = |ev: &[serde_json::Value], pid: u32| ev.iter().filter(|e| e["server"]["pid"] == pid).count();
    // initialize, initialized, tools/list, echo, big: 9 messages each way.
    let events = m.wait_events(SETTLE, |ev| {
        server_events(ev, before.0.id()) >= 9 && server_events(ev, after.0.id()) >= 9
    });
    for (server, client) in [(&before, clients[0]), (&after, clients[1])] {
        let mine: Vec<&serde_json::Value> = events.iter().filter(|e| e["server"]["pid"] == server.0.id()).collect();
        assert_eq!(mine.len(), 9, "{mine:?}");
        assert!(mine.iter().all(|e| e["client"]["pid"] == client), "{mine:?}");
        // The client connected to a selected port: its own view too.
        let client_view = events
            .iter()
            .filter(|e| e["server"]["pid"].is_null() && e["client"]["pid"] == client)
            .count();
        assert_eq!(client_view, 9);
    }
    std::thread::sleep(Duration::from_secs(2));
    let events = m.events();
    assert!(
        events
            .iter()
            .all(|e| e["server"]["pid"] != other.0.id() && e["client"]["pid"] != clients[2]),
        "a server on an unselected port was captured without discovery"
    );
}
