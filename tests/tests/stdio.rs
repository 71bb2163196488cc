//! Kernel-to-event tests for the stdio transport: the real monitor (eBPF,
//! root) watching real MCP servers driven by the official SDK clients.
//!
//! Every test compares the monitor's events with the transcript the client
//! recorded on the wire: count, order per direction, types, methods, ids,
//! tool names, exact byte sizes, and the pids of both ends.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use mcp_monitor_tests::*;

const SETTLE: Duration = Duration::from_secs(20);

fn drops(m: &Monitor) -> f64 {
    m.metric("mcp_monitor_capture_dropped_total", &[])
}

fn check_session(m: &Monitor, t: &Transcript) {
    let expected = t.expected(false);
    let n = count(&expected);
    let events = m.wait_events(SETTLE, |ev| count(&observed(ev, t.server_pid)) >= n);
    let got = observed(&events, t.server_pid);
    assert_same(&expected, &got);
    for e in events
        .iter()
        .filter(|e| e["server"]["pid"].as_u64() == Some(t.server_pid as u64))
    {
        assert_eq!(
            e["client"]["pid"].as_u64(),
            Some(t.client_pid as u64),
            "client pid of {e}"
        );
        assert_eq!(e["transport"], "stdio");
        assert!(e["time"].as_str().unwrap().ends_with('Z'));
        assert!(
            !e["server"]["exe"].as_str().unwrap_or("").is_empty(),
            "server exe missing in {e}"
        );
        if e["type"] == "response" {
            assert!(
                e["latency_ms"].as_f64().unwrap() >= 0.0,
                "paired response has a latency: {e}"
            );
        }
    }
    assert_eq!(drops(m), 0.0, "capture drops:\n{}", m.metrics_text());
}

#[test]
fn everything_server_with_typescript_client() {
    require_root();
    let m = Monitor::start(&[]);
    let t = run_node("everything", &[]);
    check_session(&m, &t);
    let events = m.events();
    let last = events
        .iter()
        .rev()
        .find(|e| e["server"]["pid"].as_u64() == Some(t.server_pid as u64))
        .unwrap();
    assert_eq!(last["client"]["name"], "monitor-test-client");
    assert!(
        last["server"]["name"].as_str().unwrap().contains("everything"),
        "{last}"
    );
    assert!(last["protocol_version"].is_string());
    // The 1 MiB argument and its echo were seen whole.
    assert!(events
        .iter()
        .any(|e| e["tool"] == "echo" && e["bytes"].as_u64().unwrap() > 1 << 20));
    // Server-to-client requests (sampling, roots) were paired with the
    // client's responses.
    assert!(events.iter().any(|e| e["method"] == "sampling/createMessage"
        && e["type"] == "response"
        && e["direction"] == "client_to_server"
        && e["latency_ms"].is_number()));
    assert_eq!(m.metric("mcp_monitor_unpaired_responses_total", &[]), 0.0);
    // The session above was seen through the system call hook this kernel
    // should get: fexit where it allows it (the kernel matrix says which,
    // in MCP_TEST_EXPECT_SYSCALL_HOOK), else the tracepoint; one of them.
    let hooks: Vec<&str> = ["fexit", "tracepoint"]
        .into_iter()
        .filter(|h| m.metric("mcp_monitor_syscall_hook", &[("hook", h)]) == 1.0)
        .collect();
    assert_eq!(hooks.len(), 1, "{}", m.metrics_text());
    if let Ok(expected) = std::env::var("MCP_TEST_EXPECT_SYSCALL_HOOK") {
        assert_eq!(hooks[0], expected, "{}", m.metrics_text());
    }
    assert_eq!(
        m.metric("mcp_monitor_frame_errors_total", &[]),
        0.0,
        "{}",
        m.metrics_text()
    );
    let c2s_calls = m.metric(
        "mcp_monitor_messages_total",
        &[
            ("direction", "client_to_server"),
            ("method", "tools/call"),
            ("type", "request"),
        ],
    );
    assert_eq!(
        c2s_calls as usize,
        t.messages
            .iter()
            .filter(|s| s.method.as_deref() == Some("tools/call"))
            .count()
    );
}

/// PyPI reference servers (Python SDK 2.x) under a node client: node hands
/// its child socketpairs, and the server reads and writes copies of them
/// (fds 6 and 7). Every message of both directions is seen, in one session.
#[test]
fn pypi_time_server_with_a_node_client() {
    require_root();
    let m = Monitor::start(&[]);
    let t = run_node("time", &[]);
    check_session(&m, &t);
    let events = m.events();
    let mine: Vec<_> = events
        .iter()
        .filter(|e| e["server"]["pid"].as_u64() == Some(t.server_pid as u64))
        .collect();
    assert!(mine
        .iter()
        .any(|e| e["tool"] == "get_current_time" && e["type"] == "response"));
    let sessions: std::collections::HashSet<&str> = mine.iter().filter_map(|e| e["session"].as_str()).collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(m.metric("mcp_monitor_unpaired_responses_total", &[]), 0.0);
    // The server's asyncio wake-up socketpair (one NUL byte per wake-up,
    // never a newline) is judged not MCP and left to the kernel to skip.
    assert!(
        m.metric("mcp_monitor_streams_total", &[("verdict", "rejected:binary")]) >= 1.0,
        "{}",
        m.metrics_text()
    );
}

/// A Go client over stdio (tests/go/mcpclient -stdio, standard library
/// only), as Go MCP clients are built: requests written by one thread,
/// answers read by a goroutine locked to another. A client's writer notice
/// comes from the thread that writes, so nothing orders it before the
/// answer its reader takes: every event must still name both processes,
/// in one session, every answer paired. With PyPI's mcp-server-time.
#[test]
fn go_stdio_client_writing_and_reading_on_two_threads_with_a_pypi_server() {
    require_root();
    let m = Monitor::start(&[]);
    let peers = go_peers("1.24");
    let server = python().with_file_name("mcp-server-time");
    let dir = TempDir::new("gostdio");
    let calls = 20;
    for round in 0..3 {
        let transcript = dir.path().join(format!("t{round}.json"));
        let st = status_bounded(
            Command::new(&peers.client)
                .args(["-stdio", "-calls", &calls.to_string(), "-transcript"])
                .arg(&transcript)
                .arg("--")
                .arg(&server)
                .stdout(std::process::Stdio::null()),
            "the Go stdio client",
        );
        assert!(st.success(), "the Go stdio client failed: {st}");
        let run: serde_json::Value = serde_json::from_slice(&std::fs::read(&transcript).unwrap()).unwrap();
        let (client, server_pid) = (run["client_pid"].as_u64().unwrap(), run["server_pid"].as_u64().unwrap());
        assert_eq!(run["responses"].as_array().unwrap().len(), 2 + calls, "{run}");
        let of_pair = |ev: &[serde_json::Value]| -> Vec<serde_json::Value> {
            ev.iter()
                .filter(|e| {
                    e["server"]["pid"].as_u64() == Some(server_pid) || e["client"]["pid"].as_u64() == Some(client)
                })
                .cloned()
                .collect()
        };
        // initialize and its answer, initialized, tools/list and its answer,
        // and each call with its answer.
        let expected = 5 + 2 * calls;
        let events = of_pair(&m.wait_events(SETTLE, |ev| of_pair(ev).len() >= expected));
        let rows: Vec<String> = events
            .iter()
            .map(|e| {
                format!(
                    "{} {} {} {}",
                    e["type"], e["method"], e["client"]["pid"], e["server"]["pid"]
                )
            })
            .collect();
        assert_eq!(events.len(), expected, "round {round}: {rows:#?}");
        for e in &events {
            assert_eq!(e["client"]["pid"].as_u64(), Some(client), "round {round}: {e}");
            assert_eq!(e["server"]["pid"].as_u64(), Some(server_pid), "round {round}: {e}");
            assert_eq!(e["session"], events[0]["session"], "round {round}, one session: {e}");
            if e["type"] == "response" {
                assert!(e["latency_ms"].as_f64().is_some(), "round {round}, paired: {e}");
            }
        }
        let answered = events
            .iter()
            .filter(|e| e["type"] == "response" && e["tool"] == "get_current_time")
            .count();
        assert_eq!(answered, calls, "round {round}: {rows:#?}");
    }
    assert_eq!(m.metric("mcp_monitor_unpaired_responses_total", &[]), 0.0);
}

/// The git reference server, with a GitHub token in a commit message: the
/// `git_log` result carries it and must raise an alert (the responses of
/// this server were not seen at all before).
#[test]
fn pypi_git_server_with_a_node_client_and_a_token_in_the_log() {
    require_root();
    let token = fake::github_token();
    let repo = git_repo(&format!("deploy with GITHUB_TOKEN={token}"));
    let m = Monitor::start(&[]);
    let t = run_node("git", &[repo.path().to_str().unwrap()]);
    check_session(&m, &t);
    let alerts = m.wait_alerts(SETTLE, |a| {
        a.iter()
            .any(|a| a["rule"] == "credential.exposure" && a["evidence"]["tool"] == "git_log")
    });
    assert!(
        alerts
            .iter()
            .any(|a| a["rule"] == "credential.exposure" && a["evidence"]["tool"] == "git_log"),
        "no alert for the token in git_log: {alerts:?}"
    );
    let all = std::fs::read_to_string(&m.alerts_path).unwrap() + &std::fs::read_to_string(&m.events_path).unwrap();
    assert!(!all.contains(&token), "the token left in clear");
}

/// A temporary git repository with one commit whose message is `message`.
fn git_repo(message: &str) -> TempDir {
    let repo = TempDir::new("git");
    let git = |args: &[&str]| {
        let st = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
            .args(args)
            .current_dir(repo.path())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("git");
        assert!(st.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join("README"), "hello\n").unwrap();
    git(&["add", "README"]);
    git(&["commit", "-q", "-m", message]);
    repo
}

/// The PyPI reference servers under the Python SDK client (plain pipes):
/// time and git, every message of both directions.
#[test]
fn pypi_time_and_git_servers_with_the_python_client() {
    require_root();
    let repo = git_repo("first commit");
    let m = Monitor::start(&[]);
    let time = venv_script("mcp-server-time");
    let t = run_python_client("time", &[time.as_os_str()], &[]);
    check_session(&m, &t);
    let git = venv_script("mcp-server-git");
    let repo_path = repo.path().to_str().unwrap();
    let t = run_python_client(
        "git",
        &[git.as_os_str(), "--repository".as_ref(), repo_path.as_ref()],
        &[("MCP_TEST_REPO", repo_path)],
    );
    check_session(&m, &t);
    assert!(m
        .events()
        .iter()
        .any(|e| e["tool"] == "git_log" && e["type"] == "response" && e["server"]["pid"] == t.server_pid));
}

/// `mcp-server-fetch` (PyPI) fetching a page from a local web server,
/// driven by the node client and by the Python client: every message of
/// both sessions. The server's own HTTP fetch is not MCP and gives no
/// event.
#[test]
fn pypi_fetch_server_with_node_and_python_clients() {
    require_root();
    let site = TempDir::new("site");
    std::fs::write(
        site.path().join("notes.html"),
        "<html><body><h1>Release notes</h1><p>Version 2 fixes the parser and speeds up the \
         build; this paragraph is long enough for the second call to page through it.</p></body></html>",
    )
    .unwrap();
    let port = free_port();
    let mut web = Command::new(python())
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(site.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python -m http.server");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(20));
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "the page server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("http://{addr}/notes.html");
    let m = Monitor::start(&[]);
    let t = run_node("fetch", &[&url]);
    check_session(&m, &t);
    let fetch = venv_script("mcp-server-fetch");
    let t = run_python_client(
        "fetch",
        &[
            fetch.as_os_str(),
            "--ignore-robots-txt".as_ref(),
            "--allow-private-ips".as_ref(),
        ],
        &[("MCP_TEST_FETCH_URL", &url)],
    );
    check_session(&m, &t);
    assert!(
        m.events().iter().all(|e| e["transport"] == "stdio"),
        "the page fetch is not MCP"
    );
    let _ = web.kill();
    let _ = web.wait();
}

/// The MCP Inspector CLI (stdio, node socketpairs) against a PyPI server:
/// every message of the exchange it makes, both directions, one session.
#[test]
fn inspector_cli_with_a_pypi_server_over_stdio() {
    require_root();
    let m = Monitor::start(&[]);
    let server = venv_script("mcp-server-time");
    let (cli_pid, out) = inspector_cli(&[
        server.to_str().unwrap(),
        "--method",
        "tools/call",
        "--tool-name",
        "get_current_time",
        "--tool-arg",
        "timezone=UTC",
    ]);
    assert!(out.contains("UTC"), "{out}");
    let expected = [
        ("client_to_server", "request", "initialize"),
        ("server_to_client", "response", "initialize"),
        ("client_to_server", "notification", "notifications/initialized"),
        ("client_to_server", "request", "tools/list"),
        ("server_to_client", "response", "tools/list"),
        ("client_to_server", "request", "tools/call"),
        ("server_to_client", "response", "tools/call"),
    ];
    let mine = |ev: &[serde_json::Value]| -> Vec<serde_json::Value> {
        ev.iter()
            .filter(|e| e["client"]["pid"].as_u64() == Some(cli_pid as u64))
            .cloned()
            .collect()
    };
    let events = m.wait_events(SETTLE, |ev| mine(ev).len() >= expected.len());
    let mine = mine(&events);
    let got: Vec<(&str, &str, &str)> = mine
        .iter()
        .map(|e| {
            (
                e["direction"].as_str().unwrap(),
                e["type"].as_str().unwrap(),
                e["method"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert!(mine.iter().all(|e| e["session"] == mine[0]["session"]));
    assert_eq!(mine[0]["client"]["name"], "inspector-cli");
    assert_eq!(mine[6]["tool"], "get_current_time");
    assert_eq!(m.metric("mcp_monitor_unpaired_responses_total", &[]), 0.0);
}

/// The evasion on a pipe: the client writes more lines that are not
/// JSON-RPC than the prelude budget before its first message (one write
/// each, so the server reads them apart), to a server tracked from its
/// start. The stream is judged not MCP on those lines and resumed at
/// `initialize`: every message is still seen. Usually the kernel's re-look
/// resumes it; when the server reads the last lines and `initialize` in
/// one read (a server slow to start on a loaded machine), the pipeline's
/// re-test of the rest of that read does, which is as good.
#[test]
fn garbage_before_the_first_message_on_a_pipe_does_not_blind_the_monitor() {
    require_root();
    let m = Monitor::start(&["--exe", "node"]);
    let t = run_node("everything", &["--noise=20"]);
    check_session(&m, &t);
    let text = m.metrics_text();
    assert!(
        text.contains("mcp_monitor_streams_total{verdict=\"rejected:"),
        "the noise got the stream judged not MCP first:\n{text}"
    );
    let resumed = m.wait_metric(
        SETTLE,
        "mcp_monitor_stream_relooks_total",
        &[("result", "resumed")],
        1.0,
    );
    assert!(resumed >= 1.0, "the stream was not judged afresh:\n{text}");
}

#[test]
fn filesystem_server_with_typescript_client() {
    require_root();
    let dir = TempDir::new("fs");
    let m = Monitor::start(&[]);
    let t = run_node("filesystem", &[dir.path().to_str().unwrap()]);
    check_session(&m, &t);
    // A 2 MiB result (read_text_file of the 1 MiB file) arrived whole.
    assert!(m
        .events()
        .iter()
        .any(|e| e["tool"] == "read_text_file" && e["bytes"].as_u64().unwrap() > 2 << 20));
}

#[test]
fn fastmcp_server_with_python_client() {
    require_root();
    let m = Monitor::start(&[]);
    let t = run_python_fastmcp();
    check_session(&m, &t);
    let events = m.events();
    // 6 MiB written by Python in one blocking write, read by the client in
    // pieces: captured at the reader, so complete.
    assert!(events
        .iter()
        .any(|e| e["tool"] == "big" && e["type"] == "response" && e["bytes"].as_u64().unwrap() > 6 << 20));
    assert!(events.iter().any(|e| e["server"]["name"] == "pyserver"));
}

#[test]
fn monitor_started_mid_session_picks_up_from_the_next_message() {
    require_root();
    let mut driver = Driver::node("everything", &["--pause"]);
    driver.expect_line("PAUSED");
    // The session is running; only now does the monitor start.
    let m = Monitor::start(&[]);
    driver.send_line("go");
    let t = driver.finish();
    let expected = t.expected(true);
    let n = count(&expected);
    assert!(n > 20, "the scenario continues after the pause");
    let events = m.wait_events(SETTLE, |ev| count(&observed(ev, t.server_pid)) >= n);
    assert_same(&expected, &observed(&events, t.server_pid));
    assert_eq!(drops(&m), 0.0);
}

#[test]
fn noisy_json_writers_produce_no_events() {
    require_root();
    let m = Monitor::start(&[]);
    // JSON lines that are not JSON-RPC, through a pipe: the kernel's
    // discovery never reports them.
    let quiet = Command::new("sh")
        .arg("-c")
        .arg(r#"python3 -c 'import json
for i in range(20000): print(json.dumps({"level": "info", "msg": "working", "n": i}), flush=True)' | python3 -c 'import sys
for l in sys.stdin: pass'"#)
        .status()
        .unwrap();
    assert!(quiet.success());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        m.metric("mcp_monitor_capture_events_total", &[]),
        0.0,
        "plain JSON logs were captured"
    );
    // The writer's stream is scanned for MCP on its first lines, then at
    // thinning intervals (down to 1 line in 64): a JSON-log pipe does not
    // pay the scan on every line. (Half the writes is a loose bound: the
    // writer flushes each line, and a stream without a transfer for 25
    // timer ticks, on a busy machine, is scanned afresh.)
    let deferred = m.metric("mcp_monitor_discovery_deferred_total", &[]);
    assert!(
        deferred >= 10_000.0,
        "only {deferred} of 20000 JSON-log writes skipped the discovery scan"
    );

    // Plain text lines: the same thinning spares them the read of their
    // first bytes (the 16-byte check cost every write of a log pipe, a
    // redis socket or `dd` more than the rest of the agent's work). The
    // counter is the whole host's, so what the host adds meanwhile is
    // measured first, over an idle interval as long as the run.
    let text_pipe = || {
        let started = Instant::now();
        let st = Command::new("sh")
            .arg("-c")
            .arg(r#"python3 -c 'for i in range(40000): print("plain text log line", i, flush=True)' | python3 -c 'import sys
for l in sys.stdin: pass'"#)
            .status()
            .unwrap();
        assert!(st.success());
        started.elapsed()
    };
    let before_idle = m.metric("mcp_monitor_discovery_deferred_total", &[]);
    let took = text_pipe();
    std::thread::sleep(Duration::from_secs(2));
    let with_pipe = m.metric("mcp_monitor_discovery_deferred_total", &[]) - before_idle;
    let before_idle = m.metric("mcp_monitor_discovery_deferred_total", &[]);
    std::thread::sleep(took + Duration::from_secs(2));
    let idle = m.metric("mcp_monitor_discovery_deferred_total", &[]) - before_idle;
    // The writer's 40000 one-line writes: all but its first looks pass
    // unread (the previous build read every one, and counted none).
    assert!(
        with_pipe - idle >= 30_000.0,
        "only {with_pipe} transfers passed unread during 40000 text-log writes, {idle} without them"
    );
    // Lines that mention "jsonrpc" but are not JSON-RPC: reported once,
    // rejected by userspace, then ignored in the kernel.
    let noisy = Command::new("sh")
        .arg("-c")
        .arg(r#"python3 -c 'import json
for i in range(20000): print(json.dumps({"jsonrpc": "1.0", "note": "not mcp", "n": i}), flush=True)' | python3 -c 'import sys
for l in sys.stdin: pass'"#)
        .status()
        .unwrap();
    assert!(noisy.success());
    std::thread::sleep(Duration::from_secs(2));
    let chunks = m.metric("mcp_monitor_capture_events_total", &[]);
    assert!(chunks >= 1.0, "the lookalike stream was never reported");
    // JSON that is not JSON-RPC is judged on its first line (no prelude
    // budget for it), then ignored in the kernel. Its lines hold "jsonrpc",
    // so the kernel finds them again: each re-look the budget allows (4 a
    // minute by default, then the kernel is told to stop looking) costs
    // the chunks already on their way until the stream is ignored again.
    // How many that is depends on how soon the agent runs after the
    // writer (a busy machine: a few ms, hundreds of one-line writes), so
    // the bound is on what a stream that is never ignored would give: one
    // chunk per line.
    let relooks = m.metric("mcp_monitor_stream_relooks_total", &[("result", "resumed")]);
    assert!(relooks <= 4.0, "{relooks} re-judgements in a minute");
    assert!(
        chunks < 20_000.0 / 4.0,
        "{chunks} chunks captured of 20000 lines, for {relooks} re-looks: the rejected stream was not ignored by the kernel"
    );
    assert!(m.metric("mcp_monitor_streams_total", &[("verdict", "rejected:not_jsonrpc")]) >= 1.0);
    assert!(m.events().is_empty(), "noise produced events: {:?}", m.events());
}

/// What `mcp_monitor_discovery_deferred_total` grew by while a Python
/// program ran (and 2 s after), then over as long a time without it: the
/// rest of the host's share, to subtract.
fn deferred_by(m: &Monitor, program: &str) -> (f64, f64) {
    let deferred = || m.metric("mcp_monitor_discovery_deferred_total", &[]);
    let before = deferred();
    let started = Instant::now();
    let st = Command::new("python3").arg("-c").arg(program).status().unwrap();
    assert!(st.success());
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let with_program = deferred() - before;
    let before = deferred();
    std::thread::sleep(took + Duration::from_secs(2));
    (with_program, deferred() - before)
}

/// A stream of JSON lines without MCP, written without pause: each look
/// at it passes the 16-byte check and pays the discovery scan (up to
/// 1 KiB), so after its first looks it is looked at once in 256 writes,
/// where a stream whose first bytes fail the check is looked at once in
/// 64. (The writer writes to /dev/null: the looks are per descriptor,
/// whatever it is, and no reader's transfers mix into the count.)
#[test]
fn a_busy_json_stream_pays_the_discovery_scan_once_in_256_writes() {
    require_root();
    let m = Monitor::start(&[]);
    const WRITES: f64 = 1_600_000.0;
    let (with_writer, idle) = deferred_by(
        &m,
        r#"import json, os
line = (json.dumps({"time": "2026-12-05T00:00:00Z", "level": "info", "msg": "working"}) + "\n").encode()
fd = os.open("/dev/null", os.O_WRONLY)
for i in range(1600000): os.write(fd, line)"#,
    );
    let looks = WRITES - (with_writer - idle);
    eprintln!("{looks} of {WRITES} JSON writes looked at ({idle} deferred on the idle host)");
    // 1 in 256: ~6,300 looks, a few dozen more for each pause of 100 ms
    // (a stream quiet that long is looked at afresh); 1 in 64 would be
    // ~25,000. The bound sits ~6,000 looks from the first and ~13,000
    // from the second, beyond what the rest of the host adds.
    assert!(
        looks < 12_000.0,
        "{looks} of {WRITES} JSON writes were looked at ({with_writer} passed unread, {idle} on the idle host)"
    );
    // The kernel counts the writes it let pass in batches (a look counts
    // those the last one let pass, a slot given up those that passed of
    // its batch): no more than passed. At least the ~6,300 looks above
    // were not counted; half that is beyond the idle host's scatter.
    assert!(
        looks > 3_000.0,
        "only {looks} of {WRITES} JSON writes looked at: more writes counted as passed unread ({with_writer}, {idle} on the idle host) than can have passed"
    );
    assert_eq!(
        m.metric("mcp_monitor_capture_events_total", &[]),
        0.0,
        "JSON logs were captured"
    );
}

/// Discovery counts the transfers it lets pass unread in batches, and a
/// descriptor's close counts the part of its batch that passed: a writer
/// that opens /dev/null, writes 100 lines and closes it, 2,000 times
/// over (the same descriptor number each time, so the same slot), has
/// each round's first 13 writes looked at and the other 87 let pass (8
/// looks, then 1, 3, 7, 15 and 31 writes between looks, then 63: the
/// last batch ends at the close after 30). A close that counted its batch
/// and left it in the slot for the next round to count again gave 117 a
/// round; a close that counted nothing, 57.
#[test]
fn a_closed_descriptor_counts_the_writes_it_let_pass_once() {
    require_root();
    let m = Monitor::start(&[]);
    const ROUNDS: f64 = 2_000.0;
    let (with_writer, idle) = deferred_by(
        &m,
        r#"import os
line = b"plain text log line\n"
for r in range(2000):
    fd = os.open("/dev/null", os.O_WRONLY)
    for i in range(100): os.write(fd, line)
    os.close(fd)"#,
    );
    let per_round = (with_writer - idle) / ROUNDS;
    eprintln!("{per_round} writes a round counted as passed unread ({idle} on the idle host)");
    // A round whose writes are more than 25 timer ticks apart starts over
    // and is looked at more (fewer passed); none counts more than 87.
    assert!(
        (75.0..=90.0).contains(&per_round),
        "{per_round} of 100 writes a round counted as passed unread, not 87 ({with_writer} in all, {idle} on the idle host)"
    );
}

/// A process found to speak MCP on one stream is captured at once on its
/// others, even one that discovery was letting pass unread: the syscall
/// hooks cache with each thread whether its process may be tracked
/// (monitor-ebpf threads.rs), and tracking a process must make them look
/// again. The program reads 1,094 JSON log lines it writes to itself
/// through a pipe (the reading stream's last look, at the 1,094th, gave it
/// its longest run: the next 255 reads pass unread), writes an MCP request
/// to a second pipe (discovered: the process is tracked), then passes 100
/// MCP requests through the first pipe. Each of the 100 reads is a chunk; a stale cache
/// let them all pass.
#[test]
fn a_process_tracked_while_a_stream_of_it_passes_unread_is_captured_on_it_at_once() {
    require_root();
    let m = Monitor::start(&[]);
    let before = m.metric("mcp_monitor_capture_events_total", &[]);
    let st = Command::new("python3")
        .arg("-c")
        .arg(
            r#"import json, os
ra, wa = os.pipe()
rb, wb = os.pipe()
log = (json.dumps({"time": "2026-12-06T00:00:00Z", "level": "info", "msg": "working"}) + "\n").encode()
for i in range(1094):
    os.write(wa, log)
    assert os.read(ra, 4096) == log
os.write(wb, b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}\n')
for i in range(1, 101):
    line = (json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/list"}) + "\n").encode()
    os.write(wa, line)
    assert os.read(ra, 4096) == line"#,
        )
        .status()
        .unwrap();
    assert!(st.success());
    let captured = m.wait_metric(
        Duration::from_secs(5),
        "mcp_monitor_capture_events_total",
        &[],
        before + 100.0,
    ) - before;
    eprintln!("{captured} chunks captured");
    assert!(
        captured >= 100.0,
        "{captured} chunks captured: the 100 reads of MCP requests after the process was tracked were not all captured"
    );
}

/// The syscall hooks name the calling thread from their cache (keyed by
/// its kernel stack) instead of a helper call: a process that writes
/// 400,000 times without starting anything asks the kernel for its id a
/// handful of times, not once per call.
#[test]
fn a_steady_writer_is_named_from_the_thread_cache() {
    require_root();
    let m = Monitor::start(&[]);
    const WRITES: f64 = 400_000.0;
    let misses = || m.metric("mcp_monitor_capture_thread_id_misses_total", &[]);
    let before = misses();
    let st = Command::new("python3")
        .arg("-c")
        .arg(
            r#"import os
fd = os.open("/dev/null", os.O_WRONLY)
for i in range(400000): os.write(fd, b"a log line\n")"#,
        )
        .status()
        .unwrap();
    assert!(st.success());
    std::thread::sleep(Duration::from_secs(2));
    let missed = misses() - before;
    eprintln!("{missed} thread id misses over {WRITES} writes (and the rest of the host)");
    assert!(missed > 0.0, "no miss counted: is the counter exported?");
    // Without the cache every write would miss; with it, the writer's
    // first calls and each thread's first calls after a fork, exit or
    // exec anywhere on the host (python's start, the test's own threads).
    assert!(
        missed < WRITES / 10.0,
        "{missed} misses over {WRITES} writes: the thread cache is not hit"
    );
}

/// Processes started one after another, each on the kernel stack its
/// predecessor freed, are each named by their own pid. The syscall hooks
/// cache a thread's id by the address of its saved registers, which sits
/// on its kernel stack; a new process is often given the stack the last
/// one freed (one CPU here, so nearly always). Without the cache's epochs,
/// moved on at every fork, exit and exec, each child's request would be
/// attributed to the child before it.
#[test]
fn processes_on_reused_kernel_stacks_are_named_by_their_own_pids() {
    require_root();
    let m = Monitor::start(&[]);
    const CHILDREN: usize = 30;
    let script = r#"
import os, json, sys
for i in range(int(sys.argv[1])):
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(req_w); os.close(resp_r)
        os.read(req_r, 65536)
        os.write(resp_w, b'{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"reuse-server","version":"1"}}}\n')
        os._exit(0)
    os.close(req_r); os.close(resp_w)
    os.write(req_w, ('{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"reuse-client-%d","version":"1"}}}\n' % i).encode())
    os.read(resp_r, 65536)
    os.waitpid(pid, 0)
    os.close(req_w); os.close(resp_r)
    print(json.dumps({"i": i, "pid": pid}), flush=True)
"#;
    let out = Command::new("taskset")
        .args(["-c", "0", "python3", "-c", script, &CHILDREN.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let children: Vec<(String, u64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (format!("reuse-client-{}", v["i"]), v["pid"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(children.len(), CHILDREN);
    let request_of = |e: &serde_json::Value, name: &str| {
        e["transport"] == "stdio"
            && e["method"] == "initialize"
            && e["type"] == "request"
            && e["client"]["name"] == name
    };
    let events = m.wait_events(SETTLE, |ev| {
        children.iter().all(|(name, _)| ev.iter().any(|e| request_of(e, name)))
    });
    let mut seen = 0;
    for (name, pid) in &children {
        let servers: Vec<_> = events
            .iter()
            .filter(|e| request_of(e, name))
            .map(|e| e["server"]["pid"].as_u64())
            .collect();
        // The first few children may start before discovery knows the
        // parent; every request that is seen must name its own reader.
        if servers.is_empty() {
            continue;
        }
        seen += 1;
        assert!(
            servers.iter().all(|p| *p == Some(*pid)),
            "{name}'s request was read by pid {pid}, the events name {servers:?}"
        );
    }
    eprintln!("{seen} of {CHILDREN} requests seen, each named by its reader's pid");
    assert!(
        seen >= CHILDREN - 2,
        "only {seen} of {CHILDREN} requests were seen: {events:?}"
    );
}

/// A descriptor replaced by `dup2` is looked at afresh: a process that
/// read a file hundreds of times on descriptor 9, and then reads MCP from
/// its stdin moved onto 9, has its first request seen. (Without the
/// `dup2` hook the file's reads had the descriptor's looks thinned, and
/// the request passed unread.)
/// The kernel sends a writer notice when the writer's first write ends.
/// Here the server's first write (its initialize answer and a 300 kB
/// notification, in one `write`) is larger than the pipe, and the client
/// pauses 200 ms after reading the answer: the answer reaches the agent
/// long before the notice that names its server. Without waiting for the
/// notice, the answer went to a session with no server, which never showed
/// MCP, and was lost (three runs of 3 out of 3 sessions before the fix).
#[test]
fn an_answer_read_before_its_writer_notice_is_paired_in_its_session() {
    require_root();
    let m = Monitor::start(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_echo-pair"))
        .args(["client", "--size", "200", "--count", "2"])
        .args(["--first-write-pad", "300000", "--pause-ms", "200"])
        .output()
        .expect("run echo-pair");
    assert!(out.status.success(), "echo-pair failed");
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).expect("echo-pair prints JSON");
    let (client, server) = (run["client_pid"].as_u64().unwrap(), run["server_pid"].as_u64().unwrap());
    // initialize, its answer, the notification, initialized, two calls and answers.
    let of_pair = |ev: &[serde_json::Value]| -> Vec<serde_json::Value> {
        ev.iter()
            .filter(|e| e["server"]["pid"].as_u64() == Some(server) || e["client"]["pid"].as_u64() == Some(client))
            .cloned()
            .collect()
    };
    let events = of_pair(&m.wait_events(SETTLE, |ev| of_pair(ev).len() >= 8));
    let rows: Vec<String> = events
        .iter()
        .map(|e| format!("{} {} {}", e["type"], e["direction"], e["method"]))
        .collect();
    assert_eq!(events.len(), 8, "{rows:#?}");
    let answer = events
        .iter()
        .find(|e| e["type"] == "response" && e["id"] == 0)
        .unwrap_or_else(|| panic!("the initialize answer is missing: {rows:#?}"));
    assert_eq!(answer["method"], "initialize", "paired with its request: {answer}");
    assert!(answer["latency_ms"].as_f64().is_some(), "paired: {answer}");
    for e in &events {
        assert_eq!(e["server"]["pid"].as_u64(), Some(server), "{e}");
        assert_eq!(e["client"]["pid"].as_u64(), Some(client), "{e}");
        assert_eq!(e["session"], events[0]["session"], "one session: {e}");
    }
    let named = m.metric("mcp_monitor_writer_waits_total", &[("outcome", "named")]);
    assert!(
        named >= 1.0,
        "no stream waited for its writer: the test did not make the notice late"
    );
}

/// `printf '{...}' | server`: the writer writes, sends its notice and
/// exits before the server reads. The agent forgets a writer at its exit,
/// so the stream read after it had no writer and waited for a notice that
/// had come already: the request was reported only when the server exited
/// or `pipeline.writer_wait_ms` passed. With the wait at 60 s, the request
/// must be reported while the server is still running.
#[test]
fn a_request_whose_writer_exited_before_the_read_goes_on_at_once() {
    require_root();
    let dir = TempDir::new("gone");
    let config = dir.path().join("monitor.toml");
    std::fs::write(&config, "[pipeline]\nwriter_wait_ms = 60000\n").unwrap();
    let m = Monitor::start(&["--config", config.to_str().unwrap()]);
    let go = dir.path().join("go");
    let done = dir.path().join("done");
    let server = r#"
import os, time
def until(path, limit):
    end = time.time() + limit
    while time.time() < end and not os.path.exists(path):
        time.sleep(0.02)
until(os.environ["GO"], 30)
os.read(0, 65536)
until(os.environ["DONE"], 60)
"#;
    let request = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"gone-client","version":"1"}}}"#;
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(r#"printf '%s\n' "$REQUEST""#)
        .env("REQUEST", request)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let reader = Command::new("python3")
        .arg("-c")
        .arg(server)
        .env("GO", &go)
        .env("DONE", &done)
        .stdin(writer.stdout.take().unwrap())
        .spawn()
        .unwrap();
    // Ends the server however the test ends.
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut reader = Server(reader);
    assert!(writer.wait().unwrap().success());
    // The writer is gone before the server reads.
    std::fs::write(&go, "").unwrap();
    let pid = reader.0.id() as u64;
    let seen = |e: &serde_json::Value| {
        e["method"] == "initialize" && e["type"] == "request" && e["server"]["pid"].as_u64() == Some(pid)
    };
    let events = m.wait_events(SETTLE, |ev| ev.iter().any(seen));
    let still_running = reader.0.try_wait().unwrap().is_none();
    std::fs::write(&done, "").unwrap();
    let request = events
        .iter()
        .find(|e| seen(e))
        .unwrap_or_else(|| panic!("the request was not reported while its server ran: {events:?}"));
    assert!(still_running, "reported only after its server exited");
    assert_eq!(request["client"]["name"], "gone-client", "{request}");
    assert!(request["client"]["pid"].is_null(), "its writer is gone: {request}");
}

#[test]
fn a_descriptor_replaced_by_dup2_is_looked_at_afresh() {
    require_root();
    let m = Monitor::start(&[]);
    let server = r#"
import os
fd = os.open("/etc/services", os.O_RDONLY)
os.dup2(fd, 9)
os.close(fd)
for _ in range(300):
    os.lseek(9, 0, 0)
    os.read(9, 512)
os.dup2(0, 9)
request = os.read(9, 65536)
os.write(1, b'{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"dup2-server","version":"1"}}}\n')
"#;
    let request = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"dup2-client","version":"1"}}}"#;
    let st = Command::new("sh")
        .arg("-c")
        .arg(r#"printf '%s\n' "$REQUEST" | python3 -c "$SERVER" | cat > /dev/null"#)
        .env("REQUEST", request)
        .env("SERVER", server)
        .status()
        .unwrap();
    assert!(st.success());
    let seen = |e: &serde_json::Value| {
        e["transport"] == "stdio"
            && e["method"] == "initialize"
            && e["type"] == "request"
            && e["client"]["name"] == "dup2-client"
    };
    let events = m.wait_events(SETTLE, |ev| ev.iter().any(seen));
    assert!(
        events.iter().any(seen),
        "the request read from the replaced descriptor was not seen: {events:?}"
    );
}

/// A tracked server's stdin replaced by another client's pipe (`dup2`)
/// is a new stream: the kernel remembers what each descriptor refers to
/// (`KNOWN_FILES`) and must forget it when the number is given to another
/// file. Otherwise the second pipe's bytes are sent as the first pipe's,
/// joined to the message the first pipe left unfinished, and the second
/// client's request is lost in that line.
#[test]
fn a_tracked_descriptor_replaced_by_dup2_is_a_new_stream() {
    require_root();
    let m = Monitor::start(&[]);
    let server = r#"
import os, time
def answer(name):
    os.write(1, ('{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"%s","version":"1"}}}\n' % name).encode())
os.read(0, 65536)
answer("first-server")
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.close(r)
    time.sleep(0.5)
    os.write(w, os.environ["SECOND"].encode() + b"\n")
    os._exit(0)
os.close(w)
# The first pipe to its end (a message cut short), read on the same
# number many times, so what it refers to is well known.
while os.read(0, 16):
    pass
os.dup2(r, 0)
os.close(r)
os.read(0, 65536)
answer("second-server")
os.waitpid(child, 0)
"#;
    let request = |name: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"{name}","version":"1"}}}}}}"#
        )
    };
    let first = format!(
        "{}\n{}",
        request("first-client"),
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"cursor":"cut short here and never ended"#
    );
    let st = Command::new("sh")
        .arg("-c")
        .arg(r#"printf '%s' "$FIRST" | python3 -c "$SERVER" | cat > /dev/null"#)
        .env("FIRST", first)
        .env("SECOND", request("second-client"))
        .env("SERVER", server)
        .status()
        .unwrap();
    assert!(st.success());
    let request_of = |e: &serde_json::Value, name: &str| {
        e["transport"] == "stdio"
            && e["method"] == "initialize"
            && e["type"] == "request"
            && e["client"]["name"] == name
    };
    // Wait for both: they come on two streams, and the agent keeps no order
    // between streams (a stream's messages can wait for its writer).
    let events = m.wait_events(SETTLE, |ev| {
        ev.iter().any(|e| request_of(e, "second-client")) && ev.iter().any(|e| request_of(e, "first-client"))
    });
    assert!(
        events.iter().any(|e| request_of(e, "first-client")),
        "the first client's request was not seen: {events:?}"
    );
    assert!(
        events.iter().any(|e| request_of(e, "second-client")),
        "the request read from the new pipe on the same descriptor was not seen: {events:?}"
    );
}

#[test]
fn recording_replays_to_identical_events() {
    require_root();
    let dir = TempDir::new("rec");
    let rec = dir.path().join("capture.rec");
    let mut m = Monitor::start(&["--record", rec.to_str().unwrap()]);
    let t = run_node("everything", &[]);
    let n = count(&t.expected(false));
    m.wait_events(SETTLE, |ev| count(&observed(ev, t.server_pid)) >= n);
    m.stop();
    let live = std::fs::read_to_string(&m.events_path).unwrap();
    let replayed = dir.path().join("replayed.jsonl");
    let st = Command::new(monitor_bin())
        .arg("replay")
        .arg(&rec)
        .arg("--events-file")
        .arg(&replayed)
        .status()
        .unwrap();
    assert!(st.success());
    let replayed = std::fs::read_to_string(&replayed).unwrap();
    assert!(live.lines().count() >= n);
    assert_eq!(live, replayed, "replay differs from the live run");
}

#[test]
fn payloads_are_included_only_when_asked_and_redacted() {
    require_root();
    // A made-up token in GitHub's format (not a real credential).
    let fake_token = format!("ghp_{}", "Zq7rT2mW9xK4vB8nL3pD6sF1hJ5gC0aY2eR7");
    let message = format!("deploy with token {fake_token} please");

    let plain = Monitor::start(&[]);
    let t = Driver::node_with_env("everything", &[], &[("MCP_TEST_ECHO_MESSAGE", &message)]).finish();
    let n = count(&t.expected(false));
    let events = plain.wait_events(SETTLE, |ev| count(&observed(ev, t.server_pid)) >= n);
    assert!(
        events.iter().all(|e| e.get("payload").is_none()),
        "payloads without --payloads"
    );
    drop(plain);

    let m = Monitor::start(&["--payloads"]);
    let t = Driver::node_with_env("everything", &[], &[("MCP_TEST_ECHO_MESSAGE", &message)]).finish();
    let n = count(&t.expected(false));
    let events = m.wait_events(SETTLE, |ev| count(&observed(ev, t.server_pid)) >= n);
    let call = events
        .iter()
        .find(|e| e["tool"] == "get-sum" && e["type"] == "request")
        .expect("get-sum call");
    assert_eq!(call["payload"]["params"]["arguments"]["a"], 1);
    assert!(events
        .iter()
        .any(|e| e["method"] == "tools/list" && e["payload"]["result"]["tools"].is_array()));
    // The planted token is in a request and in its echo, and in neither event.
    let raw = std::fs::read_to_string(&m.events_path).unwrap();
    assert!(!raw.contains(&fake_token), "the token leaked into the events");
    assert!(raw.contains("[REDACTED]"), "nothing was redacted");
}

/// A monitor on a ring small enough to overflow (256 KiB), and an
/// `echo-pair burst --hold` pair (with `burst`'s options) whose handshake it
/// has reported; the flood waits for a line on the pair's stdin.
struct HeldFlood {
    monitor: Monitor,
    pair: std::process::Child,
    server: u64,
    _watchdog: Watchdog,
    _dir: TempDir,
}

fn held_flood_on_a_small_ring(burst: &[&str]) -> HeldFlood {
    let dir = TempDir::new("ring");
    let config = dir.path().join("monitor.toml");
    std::fs::write(
        &config,
        "[capture]\ncapture_cap_bytes = 65536\nring_buffer_bytes = 262144\npoll_interval_ms = 100\nwakeup_bytes = 65536\n",
    )
    .unwrap();
    let m = Monitor::start(&["--config", config.to_str().unwrap()]);
    let mut pair = Command::new(env!("CARGO_BIN_EXE_echo-pair"))
        .args(["burst", "--hold"])
        .args(burst)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run echo-pair");
    let watchdog = Watchdog::new(pair.id(), "echo-pair burst");
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(pair.stdout.as_mut().unwrap()), &mut first).unwrap();
    let held: serde_json::Value = serde_json::from_str(&first).expect("server pid after the handshake");
    let server = held["server_pid"].as_u64().unwrap();
    // The session is known to the agent before it stops.
    let handshake = |e: &serde_json::Value| e["server"]["pid"] == server && e["method"] == "initialize";
    let seen = m.wait_events(SETTLE, |ev| ev.iter().any(handshake));
    assert!(seen.iter().any(handshake), "the handshake was not reported");
    HeldFlood {
        monitor: m,
        pair,
        server,
        _watchdog: watchdog,
        _dir: dir,
    }
}

/// A ring buffer that overflows (a small one, a flood of large
/// notifications while the agent is stopped): records are lost, and the
/// monitor never reports a message that was not sent. Every reported
/// notification has exactly the size that was written; none is two
/// messages spliced across the hole. The agent is stopped (SIGSTOP) for the
/// flood: an agent that merely drains slowly kept up with 8 MB on a quiet
/// machine, and the ring did not overflow at all.
#[test]
fn a_full_ring_buffer_never_yields_a_message_that_was_not_sent() {
    require_root();
    let size = 20_000;
    let count = 400;
    let held = held_flood_on_a_small_ring(&["--size", &size.to_string(), "--count", &count.to_string()]);
    let (m, mut pair, server) = (&held.monitor, held.pair, held.server);
    // Nothing between the stop and the continue may panic: a stopped agent
    // would not take the SIGTERM that ends it.
    m.signal(libc::SIGSTOP);
    let go = std::io::Write::write_all(pair.stdin.as_mut().unwrap(), b"go\n");
    let out = pair.wait_with_output();
    m.signal(libc::SIGCONT);
    go.expect("release the flood");
    let out = out.expect("echo-pair burst");
    assert!(out.status.success(), "echo-pair burst failed");
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["server_pid"].as_u64(), Some(server));
    let lost = m.wait_metric(
        SETTLE,
        "mcp_monitor_capture_dropped_total",
        &[("reason", "ring_full")],
        1.0,
    );
    assert!(
        lost >= 1.0,
        "the flood did not overflow the ring:\n{}",
        m.metrics_text()
    );
    // The last call (id count + 1) went through after the flood: wait for
    // its response. Its request may itself have been lost to the full ring,
    // and then the response is reported unpaired (no method).
    let last_id = count as u64 + 1;
    let last_response =
        |e: &serde_json::Value| e["server"]["pid"] == server && e["type"] == "response" && e["id"] == last_id;
    // (It too can be lost if the ring is still full when it is written, so
    // its absence is not a failure.)
    let events = m.wait_events(SETTLE, |ev| ev.iter().any(last_response));
    let burst: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["server"]["pid"] == server && e["method"] == "notifications/progress")
        .collect();
    assert!(
        burst.len() < count,
        "records were lost, yet {} of {count} reported",
        burst.len()
    );
    for e in &burst {
        assert_eq!(
            e["bytes"].as_u64(),
            Some(size as u64),
            "a message that was never sent: {e}"
        );
    }
    // Every message the monitor did report is one that was written.
    let other: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["server"]["pid"] == server)
        .filter(|e| !last_response(e))
        .filter(|e| {
            !matches!(
                e["method"].as_str(),
                Some("notifications/progress" | "initialize" | "notifications/initialized" | "tools/call")
            )
        })
        .collect();
    assert!(other.is_empty(), "{other:?}");
}

/// A session that starts while the ring is full (a small ring, a flood
/// while the agent is stopped, then the notices of 2,000 new pipes so that
/// not even a notice fits) loses its writer notices with everything
/// else. The kernel names a stream's writer once, so before a lost notice
/// was sent again, the session's later messages never learned their
/// writers: the client's requests had no client, and the server's answers
/// went to a session with no server that never showed MCP, and were lost.
#[test]
fn a_writer_notice_lost_to_a_full_ring_is_sent_again() {
    require_root();
    let held = held_flood_on_a_small_ring(&["--size", "20000", "--count", "400", "--notice-fill", "2000"]);
    let (m, mut flood) = (&held.monitor, held.pair);
    // Nothing between the stop and the continue may panic: a stopped agent
    // would not take the SIGTERM that ends it.
    m.signal(libc::SIGSTOP);
    let go = std::io::Write::write_all(flood.stdin.as_mut().unwrap(), b"go\n");
    let flooded = flood.wait_with_output();
    // The ring is full: this session's handshake, first call and their
    // notices are lost. Its later calls come after the agent goes on.
    let late = Command::new(env!("CARGO_BIN_EXE_echo-pair"))
        .args(["client", "--size", "300", "--count", "15", "--rate", "10"])
        .stdout(std::process::Stdio::piped())
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    m.signal(libc::SIGCONT);
    go.expect("release the flood");
    assert!(flooded.expect("echo-pair burst").status.success());
    let out = late
        .expect("run echo-pair")
        .wait_with_output()
        .expect("echo-pair client");
    assert!(out.status.success(), "echo-pair client failed");
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).expect("echo-pair prints JSON");
    let (client, server) = (run["client_pid"].as_u64().unwrap(), run["server_pid"].as_u64().unwrap());
    assert!(
        m.metric("mcp_monitor_capture_dropped_total", &[("reason", "ring_full")]) >= 1.0,
        "the flood did not overflow the ring:\n{}",
        m.metrics_text()
    );
    let answered = |e: &serde_json::Value| {
        e["server"]["pid"].as_u64() == Some(server)
            && e["client"]["pid"].as_u64() == Some(client)
            && e["type"] == "response"
            && e["method"] == "tools/call"
    };
    let events = m.wait_events(SETTLE, |ev| ev.iter().filter(|e| answered(e)).count() >= 5);
    let mine: Vec<String> = events
        .iter()
        .filter(|e| e["server"]["pid"].as_u64() == Some(server) || e["client"]["pid"].as_u64() == Some(client))
        .map(|e| {
            format!(
                "{} {} {} {} {}",
                e["type"], e["method"], e["id"], e["server"]["pid"], e["client"]["pid"]
            )
        })
        .collect();
    assert!(
        events.iter().filter(|e| answered(e)).count() >= 5,
        "the late session's answers are not reported with both ends: {mine:#?}\n{}",
        m.metrics_text()
    );
    let requests_with_client = events
        .iter()
        .filter(|e| e["server"]["pid"].as_u64() == Some(server) && e["type"] == "request")
        .filter(|e| e["client"]["pid"].as_u64() == Some(client))
        .count();
    assert!(requests_with_client >= 5, "{mine:#?}");
}

/// Eight sessions exchange 6 MB messages as fast as they can for 10 s (the
/// kernel ring overflows, streams are torn by holes, partial messages pile
/// up): the agent stays well under the DaemonSet's 256 MiB memory limit,
/// partial messages within their budget, and it still reports calls.
/// Before reads from the ring were bounded by bytes, four such sessions
/// took it to 324 MiB.
#[test]
fn a_flood_of_6_mb_messages_stays_within_the_memory_limit() {
    require_root();
    let m = Monitor::start(&[]);
    let clients: Vec<std::process::Child> = (0..8)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_echo-pair"))
                .args(["client", "--size", "6000000", "--seconds", "10"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("run echo-pair")
        })
        .collect();
    let budget = 64.0 * 1048576.0;
    let mut samples = 0;
    let mut clients = clients;
    while clients.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        let buffered = m.metric("mcp_monitor_buffered_bytes", &[]);
        assert!(buffered <= budget, "partial messages hold {buffered} bytes");
        samples += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    let (_, peak_kib) = m.rss_kib();
    let peak_mib = peak_kib as f64 / 1024.0;
    eprintln!("peak RSS {peak_mib:.1} MiB over {samples} samples");
    assert!(samples > 0);
    assert!(
        peak_mib < 192.0,
        "peak RSS {peak_mib:.1} MiB (the pod limit is 256 MiB)\n{}",
        m.metrics_text()
    );
    let seen = m.wait_metric(
        SETTLE,
        "mcp_monitor_messages_total",
        &[("method", "tools/call"), ("type", "request")],
        1.0,
    );
    assert!(seen >= 1.0, "no call was reported");
}
