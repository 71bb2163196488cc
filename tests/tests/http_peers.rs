//! MCP over HTTP between peers our own code does not drive, from both
//! ends: the MCP Inspector CLI (Streamable HTTP, legacy HTTP+SSE, HTTPS),
//! `mcp-remote` bridging a stdio client to HTTP and HTTPS after its OAuth
//! discovery requests, and many new TLS clients of two stacks against one
//! server.

use std::time::Duration;

use mcp_monitor_tests::*;
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(20);

/// The MCP Inspector CLI over Streamable HTTP against FastMCP: its whole
/// exchange from both ends.
#[test]
fn inspector_cli_over_streamable_http_seen_from_both_ends() {
    require_root();
    let port = free_port();
    let server = fastmcp_http(port);
    inspector_cli_seen_from_both_ends(&server, &format!("http://127.0.0.1:{port}/mcp"), "http", "http");
}

/// The MCP Inspector CLI over the legacy HTTP+SSE transport, against
/// `server-everything` in its `sse` mode.
#[test]
fn inspector_cli_over_legacy_sse_seen_from_both_ends() {
    require_root();
    let port = free_port();
    let server = everything_http("sse", port);
    inspector_cli_seen_from_both_ends(&server, &format!("http://127.0.0.1:{port}/sse"), "sse", "sse");
}

/// The MCP Inspector CLI over HTTPS (node's static OpenSSL) against
/// FastMCP (libssl): every new TLS connection's first messages name the
/// client process in the server's view too.
#[test]
fn inspector_cli_over_https_seen_from_both_ends() {
    require_root();
    let cert = self_signed();
    let port = free_port();
    let server = fastmcp_server(port, Some(&cert));
    let env = [("NODE_EXTRA_CA_CERTS", cert.cert.to_str().unwrap())];
    for _ in 0..3 {
        inspector_cli_seen_from_both_ends_with(
            &server,
            &format!("https://127.0.0.1:{port}/mcp"),
            "http",
            "https",
            &env,
        );
    }
}

/// Runs the Inspector CLI's `tools/list` against `url` with its
/// `--transport cli_transport`; both ends' events (`transport`) are its
/// whole exchange.
fn inspector_cli_seen_from_both_ends(server: &Server, url: &str, cli_transport: &str, transport: &str) {
    inspector_cli_seen_from_both_ends_with(server, url, cli_transport, transport, &[]);
}

/// [`inspector_cli_seen_from_both_ends`], the CLI with more environment.
fn inspector_cli_seen_from_both_ends_with(
    server: &Server,
    url: &str,
    cli_transport: &str,
    transport: &str,
    env: &[(&str, &str)],
) {
    let m = Monitor::start(&[]);
    let (cli, out) = inspector_cli_with_env(&[url, "--transport", cli_transport, "--method", "tools/list"], env);
    assert!(out.contains("\"tools\""), "{out}");
    let want: Rows = [
        ("client_to_server", "request", "initialize", ""),
        ("server_to_client", "response", "initialize", ""),
        ("client_to_server", "notification", "notifications/initialized", ""),
        ("client_to_server", "request", "tools/list", ""),
        ("server_to_client", "response", "tools/list", ""),
    ]
    .iter()
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
    .collect();
    let spid = server.0.id();
    // Until both ends have the last message, the tools/list response.
    let done = |v: Vec<Value>| v.iter().any(|e| e["type"] == "response" && e["method"] == "tools/list");
    let ev = m.wait_events(SETTLE, |ev| {
        done(view(ev, transport, spid, cli, true)) && done(view(ev, transport, spid, cli, false))
    });
    let mut both = Vec::new();
    for server_side in [true, false] {
        let v = view(&ev, transport, spid, cli, server_side);
        let all = rows(&v.iter().collect::<Vec<_>>());
        // Notifications the server sends on its own (server-everything:
        // tools/list_changed) are not part of the CLI's exchange; both
        // ends must still agree on them.
        let exchange: Rows = all
            .iter()
            .filter(|r| !(r.0 == "server_to_client" && r.1 == "notification"))
            .cloned()
            .collect();
        assert_eq!(exchange, want, "server side: {server_side}");
        assert!(
            v.iter().all(|e| e["client"]["pid"] == cli),
            "server side: {server_side}: {v:?}"
        );
        assert_eq!(v[0]["client"]["name"], "inspector-cli", "server side: {server_side}");
        both.push(all);
    }
    // Per direction: across directions the order depends on which end
    // looks (the legacy transport answers on another connection).
    for dir in ["client_to_server", "server_to_client"] {
        let [server_view, client_view] =
            [&both[0], &both[1]].map(|rows| rows.iter().filter(|r| r.0 == dir).cloned().collect::<Rows>());
        assert_eq!(server_view, client_view, "the two ends saw different messages ({dir})");
    }
}

/// mcp-remote, the stdio-to-HTTP bridge desktop agents use for remote
/// servers: a node client speaks stdio to it, it speaks Streamable HTTP to
/// FastMCP after its OAuth discovery requests (plain-text 404s on the same
/// keep-alive connection). Both hops are seen message for message, and
/// both name the bridge process, so they can be joined.
#[test]
fn mcp_remote_bridge_seen_on_both_hops() {
    require_root();
    mcp_remote_bridge(None);
}

/// The same bridge to an HTTPS server (self-signed, trusted through
/// NODE_EXTRA_CA_CERTS): the HTTP hop is seen at the TLS libraries, node's
/// static OpenSSL on the bridge's side and libssl on the server's.
#[test]
fn mcp_remote_bridge_to_https_seen_on_both_hops() {
    require_root();
    mcp_remote_bridge(Some(&self_signed()));
}

fn mcp_remote_bridge(tls: Option<&Certificate>) {
    let port = free_port();
    let server = fastmcp_server(port, tls);
    let m = Monitor::start(&[]);
    let (scheme, transport) = if tls.is_some() {
        ("https", "https")
    } else {
        ("http", "http")
    };
    let url = format!("{scheme}://127.0.0.1:{port}/mcp");
    let env: Vec<(&str, &str)> = tls
        .map(|c| vec![("NODE_EXTRA_CA_CERTS", c.cert.to_str().unwrap())])
        .unwrap_or_default();
    let t = Driver::node_with_env("remote", &[&url], &env).finish();
    let bridge = t.server_pid;
    // The stdio hop, by the client's own transcript.
    let expected = t.expected(false);
    let n = count(&expected);
    // Rows as events name them: a response carries its request's method
    // and tool.
    let asked: std::collections::HashMap<String, (String, String)> = t
        .messages
        .iter()
        .filter(|s| s.kind == "request")
        .map(|s| {
            let what = (s.method.clone().unwrap_or_default(), s.tool.clone().unwrap_or_default());
            (s.id.to_string(), what)
        })
        .collect();
    let want: Rows = t
        .messages
        .iter()
        .map(|s| {
            let (method, tool) = match s.kind.as_str() {
                "response" | "error" => asked.get(&s.id.to_string()).cloned().unwrap_or_default(),
                _ => (s.method.clone().unwrap_or_default(), s.tool.clone().unwrap_or_default()),
            };
            let dir = if s.dir == "c2s" {
                "client_to_server"
            } else {
                "server_to_client"
            };
            (dir.to_string(), s.kind.clone(), method, tool)
        })
        .collect();
    let spid = server.0.id();
    let ev = m.wait_events(SETTLE, |ev| count(&observed(ev, bridge)) >= n);
    assert_same(&expected, &observed(&ev, bridge));
    // The HTTP hop carries the same messages, from both of its ends, and
    // names the bridge as the client; before them, the bridge's own
    // transport probe (an initialize as `mcp-remote-fallback-test`, on the
    // connection of its OAuth discovery requests, where the server is first
    // seen in the middle of a response).
    let mut want = want;
    for (d, k, m) in [
        ("client_to_server", "request", "initialize"),
        ("server_to_client", "response", "initialize"),
        ("client_to_server", "notification", "notifications/initialized"),
    ] {
        want.push((d.into(), k.into(), m.into(), String::new()));
    }
    want.sort();
    let n = want.len();
    let ev = m.wait_events(SETTLE, |ev| {
        view(ev, transport, spid, bridge, true).len() >= n && view(ev, transport, spid, bridge, false).len() >= n
    });
    for server_side in [true, false] {
        let v = view(&ev, transport, spid, bridge, server_side);
        let mut got = rows(&v.iter().collect::<Vec<_>>());
        got.sort();
        assert_eq!(got, want, "HTTP hop, server side: {server_side}");
        assert!(
            v.iter().any(|e| e["client"]["name"] == "mcp-remote-fallback-test"),
            "server side: {server_side}"
        );
        // The probe and the real session are two sessions, though they
        // share a keep-alive connection and every POST has `Mcp-Method`.
        let session_of = |probe: bool| -> std::collections::HashSet<&str> {
            v.iter()
                .filter(|e| (e["client"]["name"] == "mcp-remote-fallback-test") == probe)
                .map(|e| e["session"].as_str().unwrap())
                .collect()
        };
        let (probe, real) = (session_of(true), session_of(false));
        assert_eq!(probe.len(), 1, "server side {server_side}: {probe:?}");
        assert_eq!(real.len(), 1, "server side {server_side}: {real:?}");
        assert_ne!(
            probe, real,
            "server side {server_side}: the probe and the session are one"
        );
        // Both ends are on this host: the server's view names the bridge
        // from the first message on.
        assert!(
            v.iter().all(|e| e["client"]["pid"] == bridge),
            "server side {server_side}: {v:?}"
        );
    }
    assert!(
        m.metric("mcp_monitor_prelude_frames_total", &[]) >= 1.0,
        "the OAuth discovery exchanges were not seen"
    );
    assert_eq!(
        m.metric("mcp_monitor_streams_total", &[("verdict", "rejected:not_json")]),
        0.0
    );
}

/// Many new TLS connections to one server from new client processes, of
/// two TLS stacks (node's static OpenSSL, Python's libssl): the server's
/// view names the client process of every message, the first exchange of
/// each connection included (the field report: 6–7 of 26 events had none).
#[test]
fn https_server_side_names_the_client_of_every_new_connection() {
    require_root();
    let cert = self_signed();
    let port = free_port();
    let server = fastmcp_server(port, Some(&cert));
    let spid = server.0.id();
    let m = Monitor::start(&[]);
    let env = [("NODE_EXTRA_CA_CERTS", cert.cert.to_str().unwrap())];
    let url = format!("https://127.0.0.1:{port}/mcp");
    let mut clients = Vec::new();
    // The Inspector's tools/list is 5 messages, the Python session 9.
    let mut expected = 0;
    for i in 0..10 {
        if i % 2 == 0 {
            let (cli, out) = inspector_cli_with_env(&[&url, "--transport", "http", "--method", "tools/list"], &env);
            assert!(out.contains("\"tools\""), "{out}");
            clients.push(cli);
            expected += 5;
        } else {
            clients.push(session_with(port, 10, Some(&cert)));
            expected += 9;
        }
    }
    let server_side = |ev: &[Value]| -> Vec<Value> {
        ev.iter()
            .filter(|e| e["transport"] == "https" && e["server"]["pid"] == spid)
            .cloned()
            .collect()
    };
    let ev = m.wait_events(SETTLE, |ev| server_side(ev).len() >= expected);
    let seen = server_side(&ev);
    assert_eq!(seen.len(), expected);
    let unnamed: Vec<&Value> = seen
        .iter()
        .filter(|e| !clients.iter().any(|c| e["client"]["pid"] == *c))
        .collect();
    assert!(
        unnamed.is_empty(),
        "{} of {} server-side events name no client of this test: {unnamed:?}",
        unnamed.len(),
        seen.len()
    );
    drop(server);
}

/// Go programs as they ship (stripped with `-s -w`), built from the
/// standard library only: an MCP server and two runs of a client over
/// HTTPS, where net/http speaks HTTP/2. Their plaintext is taken at
/// `crypto/tls`, found through `.gopclntab` (return probes at each `RET`),
/// and tied to the socket under each connection. Each session is seen from
/// both ends and checked against the server's own record and the client's
/// transcript. The kernel discovers a process on its first body of JSON, so
/// the first connection of each process is joined in progress (Go's framer
/// reads a frame's header and payload apart: that first body comes alone);
/// the server's second connection is seen whole. The credential the echo
/// tool returns raises an alert and is exported nowhere.
#[test]
fn go_https_h2_seen_from_both_ends() {
    go_https_h2("1.24");
}

/// The same with bookworm's Go 1.19 (the oldest `.gopclntab` layout of the
/// register ABI's era that Debian ships, and other code in `Read`/`Write`).
#[test]
fn go_1_19_https_h2_seen_from_both_ends() {
    go_https_h2("1.19");
}

/// The same with Go 1.24 executables that keep their symbol table and
/// DWARF (built without `-s -w`, as `go build` does by default).
#[test]
fn go_with_symbols_https_h2_seen_from_both_ends() {
    go_https_h2_of(go_peers_with_symbols("1.24"));
}

fn go_https_h2(version: &'static str) {
    go_https_h2_of(go_peers(version));
}

fn go_https_h2_of(peers: &'static GoPeers) {
    require_root();
    let cert = self_signed();
    let port = free_port();
    let dir = TempDir::new("gorec");
    let record = dir.path().join("record.jsonl");
    let server = go_server(peers, port, &cert, &record);
    let server_pid = server.0.id();
    let m = Monitor::start(&[]);
    let probed = |exe: &std::path::Path| {
        let exe = std::fs::canonicalize(exe).unwrap();
        let line = format!("TLS: probing {} (mapped by pid", exe.display());
        wait_until(scaled(SETTLE), || m.stderr().contains(&line))
    };
    // Running before the agent: probed at its start.
    assert!(probed(&peers.server), "{}", m.stderr());
    // A fake GitHub token (checksum valid), returned by the echo tool.
    let secret = "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";
    let url = format!("https://127.0.0.1:{port}/mcp");
    // A new executable is found by the agent's scan of processes (every
    // capture.tls_scan_interval_ms): the first client waits until then.
    let first = GoClient::start(peers, &url, &cert.cert, "first session");
    let first_pid = first.pid();
    assert!(probed(&peers.client), "{}", m.stderr());
    let mut received = first.run();
    let second = GoClient::start(peers, &url, &cert.cert, &format!("token: {secret}"));
    let second_pid = second.pid();
    received.extend(second.run());
    assert_eq!(received.len(), 8, "{received:?}");
    assert!(
        received.iter().all(|r| r["proto"] == "HTTP/2.0"),
        "the peers spoke HTTP/2: {received:?}"
    );

    let of = |ev: &[Value], client: u32, server_side: bool| {
        let mut v = view(ev, "https", server_pid, client, server_side);
        v.retain(|e| e["client"]["pid"] == client);
        v
    };
    let clients = [first_pid, second_pid];
    let events = m.wait_events(SETTLE, |ev| {
        clients
            .iter()
            .all(|&c| of(ev, c, true).len() >= 7 && of(ev, c, false).len() >= 7)
    });
    let answered = go_record(&record);
    assert_eq!(answered.len(), 8, "{answered:?}");
    let expected: Vec<(String, String, String, String)> = [
        ("client_to_server", "request", "initialize", ""),
        ("server_to_client", "response", "initialize", ""),
        ("client_to_server", "notification", "notifications/initialized", ""),
        ("client_to_server", "request", "tools/list", ""),
        ("server_to_client", "response", "tools/list", ""),
        ("client_to_server", "request", "tools/call", "echo"),
        ("server_to_client", "response", "tools/call", "echo"),
    ]
    .iter()
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
    .collect();
    let server_addr = format!("127.0.0.1:{port}");
    for (n, &client) in clients.iter().enumerate() {
        // What the server says it answered in this session: the same ids,
        // methods and body sizes, in order.
        let recorded: Vec<(Value, Value, Value)> = answered[4 * n..4 * n + 4]
            .iter()
            .filter(|r| r["id"].is_number())
            .map(|r| (r["id"].clone(), r["method"].clone(), r["bytes"].clone()))
            .collect();
        for server_side in [true, false] {
            let mine = of(&events, client, server_side);
            let refs: Vec<&Value> = mine.iter().collect();
            assert_eq!(
                rows(&refs),
                expected,
                "session {n} (client pid {client}, server pid {server_pid}), server side {server_side}: {mine:?}\n\
                 every https event:\n{}the agent's log:\n{}",
                transport_summary(&events, "https"),
                m.stderr_tail(60),
            );
            let responses: Vec<(Value, Value, Value)> = mine
                .iter()
                .filter(|e| e["type"] == "response")
                .map(|e| (e["id"].clone(), e["method"].clone(), e["bytes"].clone()))
                .collect();
            assert_eq!(responses, recorded, "session {n}, server side {server_side}");
            let sessions: std::collections::HashSet<&str> =
                mine.iter().map(|e| e["session"].as_str().unwrap()).collect();
            assert_eq!(sessions.len(), 1, "{sessions:?}");
            for e in &mine {
                assert_eq!(e["http"]["version"], "2", "{e}");
                // The socket under each crypto/tls connection was found.
                let end = if server_side {
                    &e["http"]["local"]
                } else {
                    &e["http"]["remote"]
                };
                assert_eq!(*end, server_addr, "session {n}, server side {server_side}: {e}");
            }
        }
    }
    // The server's second connection was seen from its first byte: every
    // head is whole, responses take their request's method and path.
    let whole = of(&events, second_pid, true);
    assert!(
        whole
            .iter()
            .all(|e| e["http"]["method"] == "POST" && e["http"]["path"] == "/mcp"),
        "{whole:?}"
    );
    let alerts = m.wait_alerts(SETTLE, |a| a.iter().any(|a| a["rule"] == "credential.exposure"));
    let exposure = alerts.iter().find(|a| a["rule"] == "credential.exposure").unwrap();
    assert_eq!(
        exposure["evidence"]["findings"][0]["rule"], "github-pat-classic",
        "{exposure}"
    );
    let everything = format!("{:?}{:?}{}", m.events(), m.alerts(), m.stderr());
    assert!(!everything.contains(&secret[4..20]), "the token is exported nowhere");
    for exe in [&peers.server, &peers.client] {
        let exe = std::fs::canonicalize(exe).unwrap();
        let refused = format!("TLS: not probing {}", exe.display());
        assert!(!m.stderr().contains(&refused), "{}", m.stderr());
    }
    assert_eq!(m.metric("mcp_monitor_tls_unbound_chunks_total", &[]), 0.0);
    drop(server);
}

/// A Go program built before the register ABI (bullseye's Go 1.15) is not
/// probed: the kernel programs would read the wrong registers. The agent
/// says so, counts it, and goes on; the program's HTTPS stays unseen (its
/// own TCP socket carries only ciphertext).
#[test]
fn go_before_1_17_is_refused_and_counted() {
    require_root();
    let peers = go_peers("1.15");
    let cert = self_signed();
    let port = free_port();
    let dir = TempDir::new("gorec");
    let record = dir.path().join("record.jsonl");
    let server = go_server(peers, port, &cert, &record);
    let m = Monitor::start(&[]);
    let exe = std::fs::canonicalize(&peers.server).unwrap();
    let line = format!("TLS: not probing {} (mapped by pid", exe.display());
    assert!(
        wait_until(scaled(SETTLE), || m.stderr().contains(&line)),
        "{}",
        m.stderr()
    );
    assert!(m.stderr().contains("built with go1.15"), "{}", m.stderr());
    assert!(!m.stderr().contains(&format!("TLS: probing {}", exe.display())));
    let client = GoClient::start(peers, &format!("https://127.0.0.1:{port}/mcp"), &cert.cert, "hello");
    let client_exe = std::fs::canonicalize(&peers.client).unwrap();
    let refused = format!("TLS: not probing {} (mapped by pid", client_exe.display());
    assert!(
        wait_until(scaled(SETTLE), || m.stderr().contains(&refused)),
        "{}",
        m.stderr()
    );
    let received = client.run();
    assert_eq!(received.len(), 4, "the session ran: {received:?}");
    assert_eq!(go_record(&record).len(), 4);
    // A moment for anything captured to come out.
    std::thread::sleep(scaled(std::time::Duration::from_secs(2)));
    // Both executables (and any other refused Go program on the host).
    assert!(m.metric("mcp_monitor_go_tls_refused_total", &[]) >= 2.0);
    assert!(m.events().iter().all(|e| e["transport"] != "https"), "{:?}", m.events());
    drop(server);
}

/// A Go program with `crypto/tls` whose strings hold none of MCP's names (an
/// HTTPS service serving JSON, like most Go programs on a node) is not
/// probed by default, so it pays no breakpoint trap per TLS read; the
/// agent says so and counts it. With `capture.tls_go = "all"` it is
/// probed. The Go MCP peers of the same build are probed either way
/// (`go_https_h2_seen_from_both_ends` and the rest).
#[test]
fn a_go_program_whose_strings_hold_no_mcp_name_is_not_probed_unless_asked() {
    require_root();
    let peers = go_peers("1.24");
    let cert = self_signed();
    let exe = std::fs::canonicalize(&peers.https_service).unwrap();
    let run_service = || {
        let out = std::process::Command::new(&exe)
            .arg("-cert")
            .arg(&cert.cert)
            .arg("-key")
            .arg(&cert.key)
            // Long enough for the periodic scan (2 s) to find it should
            // its exec notice come late.
            .args(["-conc", "2", "-seconds", "3"])
            .output()
            .expect("run tests/go/httpsload");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let rps: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(rps > 0.0, "the service answered");
    };
    let not_probed = format!("TLS: not probing {} (mapped by pid", exe.display());
    let probed = format!("TLS: probing {} (mapped by pid", exe.display());

    let m = Monitor::start(&[]);
    run_service();
    assert!(
        wait_until(scaled(SETTLE), || m.stderr().contains(&not_probed)),
        "{}",
        m.stderr()
    );
    assert!(
        m.stderr().contains("whose strings hold none of MCP's names"),
        "{}",
        m.stderr()
    );
    assert!(!m.stderr().contains(&probed), "{}", m.stderr());
    assert!(m.wait_metric(SETTLE, "mcp_monitor_go_tls_not_mcp_total", &[], 1.0) >= 1.0);
    drop(m);

    let dir = TempDir::new("tlsgo");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[capture]\ntls_go = \"all\"\n").unwrap();
    let m = Monitor::start(&["--config", config.to_str().unwrap()]);
    run_service();
    assert!(
        wait_until(scaled(SETTLE), || m.stderr().contains(&probed)),
        "{}",
        m.stderr()
    );
    assert!(!m.stderr().contains(&not_probed), "{}", m.stderr());
}

/// The `TLS: probing` line of `exe` (canonical path), with Bun's BoringSSL
/// found in it.
fn probed_as_bun(m: &Monitor, exe: &std::path::Path) -> bool {
    let exe = std::fs::canonicalize(exe).unwrap();
    let line = format!("TLS: probing {} (mapped by pid", exe.display());
    m.stderr()
        .lines()
        .any(|l| l.contains(&line) && l.contains("Bun's BoringSSL: SSL_read at"))
}

/// The probes of the Bun executable were verified by their first capture
/// (the log names the file and what the capture was), and counted.
fn bun_probes_verified(m: &Monitor, exe: &std::path::Path) -> bool {
    let exe = std::fs::canonicalize(exe).unwrap();
    let line = format!("TLS: the BoringSSL probes of {} (mapped by pid", exe.display());
    m.stderr()
        .lines()
        .any(|l| l.contains(&line) && l.contains("are verified: their first capture"))
        // The agent probes the whole host: another Bun executable in use
        // here (a developer's Claude Code) counts too.
        && m.metric("mcp_monitor_boringssl_verified_total", &[]) >= 1.0
}

/// Bun (npm `bun`: BoringSSL linked in statically, no symbols) running the
/// TypeScript SDK client over HTTPS against FastMCP: found at its exec
/// (the client starts after the agent and connects at once), its
/// `SSL_read`/`SSL_write` found in the machine code, and its whole session
/// seen from both ends, as its own transcript says.
#[test]
fn bun_https_client_seen_from_both_ends() {
    require_root();
    let m = Monitor::start(&[]);
    let (client_side, port) = ts_https_seen_from_both_ends(&m, bun_exe().as_os_str(), 1_000_000);
    assert!(
        wait_until(scaled(SETTLE), || probed_as_bun(&m, &bun_exe())),
        "{}",
        m.stderr()
    );
    // The client's end came through Bun's own BoringSSL.
    assert!(
        client_side
            .iter()
            .all(|e| e["client"]["exe"].as_str().is_some_and(|x| x.ends_with("bun.exe"))),
        "{client_side:?}"
    );
    // After its first request (written before the connection was ever
    // read, over Bun's memory BIO), every chunk names its socket.
    let server_addr = format!("127.0.0.1:{port}");
    assert!(
        client_side[1..].iter().all(|e| e["http"]["remote"] == server_addr),
        "{client_side:?}"
    );
    assert!(
        wait_until(scaled(SETTLE), || bun_probes_verified(&m, &bun_exe())),
        "{}",
        m.stderr()
    );
    assert_eq!(m.metric("mcp_monitor_boringssl_refused_total", &[]), 0.0);
}

/// A server on `Bun.serve` (the TypeScript SDK's web-standard transport,
/// Bun's own HTTPS server and BoringSSL) with the Python SDK client: the
/// server's end seen at Bun's BoringSSL, the client's at Python's libssl,
/// the same session from both, with the probes verified.
#[test]
fn bun_serve_https_server_seen_from_both_ends() {
    require_root();
    let m = Monitor::start(&[]);
    let cert = self_signed();
    let port = free_port();
    let server = bun_server(port, &cert);
    let server_pid = server.0.id();
    assert!(
        wait_until(scaled(SETTLE), || probed_as_bun(&m, &bun_exe())),
        "{}",
        m.stderr()
    );
    let big = 300_000;
    let client = session_with(port, big, Some(&cert));
    let of = |ev: &[Value], server_side: bool| {
        let mut v = view(ev, "https", server_pid, client, server_side);
        v.retain(|e| e["client"]["pid"] == client);
        v
    };
    let n = expected().len();
    let events = m.wait_events(SETTLE, |ev| of(ev, true).len() >= n && of(ev, false).len() >= n);
    for server_side in [true, false] {
        let mine = of(&events, server_side);
        let refs: Vec<&Value> = mine.iter().collect();
        assert_eq!(rows(&refs), expected(), "server side: {server_side}");
        assert!(mine.iter().all(|e| e["http"]["version"] == "1.1"), "{mine:?}");
        assert!(mine.last().unwrap()["bytes"].as_u64().unwrap() > big as u64);
    }
    // The server's end: Bun, with its socket's ends.
    let served = of(&events, true);
    assert!(
        served
            .iter()
            .all(|e| e["server"]["exe"].as_str().is_some_and(|x| x.ends_with("bun.exe"))),
        "{served:?}"
    );
    // Past the exchange that discovered it (its first request and answer
    // came before the agent tracked Bun's socket reads: README "Which
    // connection"), every message names the server's socket.
    let server_addr = format!("127.0.0.1:{port}");
    assert!(
        served[2..].iter().all(|e| e["http"]["local"] == server_addr),
        "{served:?}"
    );
    assert!(
        wait_until(scaled(SETTLE), || bun_probes_verified(&m, &bun_exe())),
        "{}",
        m.stderr()
    );
    drop(server);
}

/// Claude Code (npm `@anthropic-ai/claude-code` 2.1.332, a Bun executable)
/// as a client of a local HTTPS MCP server, in a temporary HOME, offline
/// and without an account: each `claude mcp list` runs for a fraction of a
/// second, so it is probed at its exec; its exchange (the stateless
/// revision's `server/discover`, then `tools/list`) is seen at its own
/// BoringSSL exactly as the server's end sees it.
#[test]
fn claude_code_seen_at_its_boringssl_from_its_first_run() {
    require_root();
    let cert = self_signed();
    let port = free_port();
    let server = fastmcp_server(port, Some(&cert));
    let server_pid = server.0.id();
    // Set up before the agent starts: the first `mcp list` is the first
    // run of Claude Code the agent sees. The race between its exec notice
    // and its first connection is won with the file in the page cache (a
    // freshly installed one is read from disk first: a fresh clone lost
    // it, README "Short-lived runs"), which `mcp add` leaves behind.
    let home = ClaudeHome::new("local", &format!("https://127.0.0.1:{port}/mcp"), &cert.cert);
    std::io::copy(&mut std::fs::File::open(claude_exe()).unwrap(), &mut std::io::sink()).unwrap();
    let m = Monitor::start(&[]);
    for _ in 0..2 {
        let out = home.run(&["mcp", "list"]);
        assert!(out.contains("Connected"), "claude mcp list: {out}");
    }
    assert!(
        wait_until(scaled(SETTLE), || probed_as_bun(&m, &claude_exe())),
        "{}",
        m.stderr()
    );
    let claude = |e: &Value| e["client"]["exe"].as_str().is_some_and(|x| x.ends_with("claude.exe"));
    let runs = |ev: &[Value]| {
        let mut pids: Vec<u64> = ev
            .iter()
            .filter(|e| claude(e) && e["server"]["pid"].is_null())
            .filter_map(|e| e["client"]["pid"].as_u64())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    };
    let done = |ev: &[Value], pid: u64, server_side: bool| {
        view(ev, "https", server_pid, pid as u32, server_side)
            .iter()
            .any(|e| e["type"] == "response" && e["method"] == "tools/list" && e["client"]["pid"] == pid)
    };
    let events = m.wait_events(SETTLE, |ev| {
        let r = runs(ev);
        r.len() == 2 && r.iter().all(|&p| done(ev, p, true) && done(ev, p, false))
    });
    let pids = runs(&events);
    assert_eq!(pids.len(), 2, "both runs seen at Claude Code's end: {events:?}");
    for &pid in &pids {
        let mut seen = Vec::new();
        for server_side in [true, false] {
            let mut v = view(&events, "https", server_pid, pid as u32, server_side);
            v.retain(|e| e["client"]["pid"] == pid);
            let r = rows(&v.iter().collect::<Vec<_>>());
            let all: Vec<&Value> = events.iter().filter(|e| e["client"]["pid"] == pid).collect();
            for want in [
                ("client_to_server", "request", "server/discover"),
                ("server_to_client", "response", "server/discover"),
                ("client_to_server", "request", "tools/list"),
                ("server_to_client", "response", "tools/list"),
            ] {
                assert!(
                    r.iter().any(|x| (x.0.as_str(), x.1.as_str(), x.2.as_str()) == want),
                    "run {pid}, server side {server_side}: {want:?} missing from {r:?}; all its events: {all:?}"
                );
            }
            seen.push(r);
        }
        assert_eq!(seen[0], seen[1], "the two ends of run {pid} saw different messages");
    }
    assert!(
        wait_until(scaled(SETTLE), || bun_probes_verified(&m, &claude_exe())),
        "{}",
        m.stderr()
    );
    assert_eq!(m.metric("mcp_monitor_boringssl_refused_total", &[]), 0.0);
    drop(server);
}

/// Only Claude Code's end on this host (the server excluded, as a remote
/// server would be): a poisoned tool description in its `tools/list` is
/// alerted from the client's view alone.
#[test]
fn claude_code_end_alone_raises_the_alerts() {
    require_root();
    let cert = self_signed();
    let port = free_port();
    let server = fastmcp_server_variant(port, Some(&cert), "poisoned");
    let server_pid = server.0.id();
    let home = ClaudeHome::new("remote", &format!("https://127.0.0.1:{port}/mcp"), &cert.cert);
    let m = Monitor::start(&["--exclude-pid", &server_pid.to_string()]);
    // Probed by a first run: this test is about the client's view, not
    // about the race of a first run (the test above). `--version` exits
    // within ~10 ms, often before the agent has read the exec notice and
    // opened /proc/<pid>/exe (it failed half the time with one run), so it
    // runs again until the executable is probed.
    assert!(
        wait_until(scaled(SETTLE), || {
            home.run(&["--version"]);
            std::thread::sleep(Duration::from_millis(300));
            probed_as_bun(&m, &claude_exe())
        }),
        "{}",
        m.stderr()
    );
    let out = home.run(&["mcp", "list"]);
    assert!(out.contains("Connected"), "claude mcp list: {out}");
    let alerts = m.wait_alerts(SETTLE, |a| a.iter().any(|a| a["rule"] == "tool_integrity.poisoning"));
    let p = alerts
        .iter()
        .find(|a| a["rule"] == "tool_integrity.poisoning")
        .unwrap_or_else(|| panic!("{alerts:?}\n{}", m.stderr()));
    assert_eq!(p["evidence"]["tool"], "add", "{p}");
    let events = m.events();
    assert!(
        events.iter().all(|e| e["server"]["pid"] != server_pid),
        "the excluded server's end was reported"
    );
    assert!(
        events
            .iter()
            .any(|e| e["method"] == "tools/list"
                && e["client"]["exe"].as_str().is_some_and(|x| x.ends_with("claude.exe"))),
        "{events:?}"
    );
    drop(server);
}
