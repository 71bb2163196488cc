//! The container image, run the way the DaemonSet runs it (security
//! context, host mounts, environment, arguments, limits and ConfigMap read
//! from deploy/kubernetes by [`PodSpec`]), watching MCP sessions started on
//! the host: host pids, the right identity, metrics, and alerts written to
//! the mounted state directory. And without one of the capabilities the
//! manifest grants, it must refuse to start with its own error naming it.
//!
//! `cargo xtask test` builds the image under test (the runtime stage of the
//! Dockerfile around the binary it tested); `cargo xtask image` is the full
//! build.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use mcp_monitor_tests::*;
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(20);

/// A user of this host that the image's /etc/passwd does not have, so that
/// a name in the events can only come from the node's user database.
fn host_only_user(image: &str) -> (String, u32) {
    let image_passwd = Command::new("podman")
        .arg("run")
        .args(podman_ulimit_args())
        .args(["--rm", "--entrypoint", "cat", image, "/etc/passwd"])
        .output()
        .unwrap();
    let image_passwd = String::from_utf8_lossy(&image_passwd.stdout).to_string();
    let image_uids: Vec<&str> = image_passwd.lines().filter_map(|l| l.split(':').nth(2)).collect();
    assert!(image_uids.contains(&"0"), "cannot read the image's /etc/passwd");
    let host = std::fs::read_to_string("/etc/passwd").unwrap();
    host.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let uid: u32 = f.get(2)?.parse().ok()?;
            (uid != 0 && uid < 60000 && !image_uids.contains(&f[2])).then(|| (f[0].to_string(), uid))
        })
        .next()
        .expect("this host has no user the image lacks (cargo xtask setup installs prometheus, which adds one)")
}

/// A Streamable HTTP session on the host: the FastMCP server as `uid`
/// (over TLS with `cert` = (certificate, key)), the Python SDK client as
/// root. Returns the events of the server's end and of the client's end.
fn http_session(m: &Monitor, uid: u32, cert: Option<&(PathBuf, PathBuf)>) -> (Vec<Value>, Vec<Value>) {
    let port = free_port();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        &uid.to_string(),
        "--regid",
        &uid.to_string(),
        "--clear-groups",
    ])
    .arg(python())
    .arg(clients_dir().join("fastmcp_server.py"))
    .env("MCP_TEST_HTTP_PORT", port.to_string());
    if let Some((c, k)) = cert {
        cmd.env("MCP_TEST_TLS_CERT", c).env("MCP_TEST_TLS_KEY", k);
    }
    let server = Server(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the FastMCP HTTP server"),
    );
    wait_port(port);
    let server_pid = server.0.id();
    let dir = TempDir::new("img-http");
    let tpath = dir.path().join("t.json");
    // The scheme is also the transport the events name.
    let scheme = if cert.is_some() { "https" } else { "http" };
    let mut client = Command::new(python());
    client
        .arg(clients_dir().join("py_http_session.py"))
        .arg(&tpath)
        .arg(format!("{scheme}://127.0.0.1:{port}/mcp"))
        .arg("1000");
    if let Some((c, _)) = cert {
        client.env("MCP_TEST_CA", c);
    }
    assert!(
        client.status().unwrap().success(),
        "the Python SDK {scheme} session failed"
    );
    let tv: Value = serde_json::from_str(&std::fs::read_to_string(&tpath).unwrap()).unwrap();
    let client_pid = tv["client_pid"].as_u64().unwrap();
    let of = |ev: &[Value], server_side: bool| -> Vec<Value> {
        ev.iter()
            .filter(|e| e["transport"] == scheme && e["client"]["pid"] == client_pid)
            .filter(|e| {
                if server_side {
                    e["server"]["pid"] == server_pid
                } else {
                    e["server"]["pid"].is_null()
                }
            })
            .cloned()
            .collect()
    };
    let done = |ev: &[Value], side: bool| {
        of(ev, side)
            .iter()
            .any(|e| e["method"] == "tools/call" && e["type"] == "response" && e["tool"] == "big")
    };
    let events = m.wait_events(SETTLE, |ev| done(ev, true) && done(ev, false));
    drop(server);
    (of(&events, true), of(&events, false))
}

#[test]
fn image_runs_as_the_daemonset_does_and_watches_the_host() {
    require_root();
    let image = test_image();
    let pod = PodSpec::shipped();
    let mut m = pod.start(&image);
    // The probes of the manifest, through the published pod port.
    for path in ["/healthz", "/readyz"] {
        let (status, _) = http_get(m.metrics_addr, path).unwrap();
        assert!(status.contains("200"), "{path}: {status}");
    }

    // stdio on the host: the TypeScript SDK client and server-everything,
    // with a GitHub token echoed back.
    let token = fake::github_token();
    let d = Driver::node_with_env(
        "everything",
        &[],
        &[("MCP_TEST_ECHO_MESSAGE", &format!("deploy with GITHUB_TOKEN={token}"))],
    );
    let t = d.finish();
    let expected = t.expected(false);
    let n = count(&expected);
    let events = m.wait_events(SETTLE, |ev| count(&observed(ev, t.server_pid)) >= n);
    assert_same(&expected, &observed(&events, t.server_pid));
    let stdio: Vec<&Value> = events.iter().filter(|e| e["server"]["pid"] == t.server_pid).collect();
    for e in &stdio {
        // Host pids (hostPID), and the identity read through the host's /proc.
        assert_eq!(e["client"]["pid"], t.client_pid, "{e}");
        assert_eq!(e["transport"], "stdio");
        for (end, pid) in [("server", t.server_pid), ("client", t.client_pid)] {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            if let Some(exe) = exe {
                assert_eq!(e[end]["exe"], exe.to_string_lossy().as_ref(), "{end} exe in {e}");
            }
            assert_eq!(e[end]["uid"], 0, "{e}");
            assert_eq!(e[end]["user"], "root", "{e}");
            assert!(e[end]["container_id"].is_null(), "a host process has no container: {e}");
        }
    }

    // Streamable HTTP on the host, plain and over TLS: a FastMCP server run
    // as a user only the host knows, and the Python SDK client; both ends
    // are seen, the TLS session through the uprobes on OpenSSL.
    let (user, uid) = host_only_user(&image);
    let tls = self_signed();
    // The server, running as another user, must read its key.
    for f in [&tls.dir.path().to_path_buf(), &tls.cert, &tls.key] {
        let mode = if f.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    let mut http_events = 0;
    for secure in [false, true] {
        let cert = secure.then(|| (tls.cert.clone(), tls.key.clone()));
        let (server_side, client_side) = http_session(&m, uid, cert.as_ref());
        for (side, mine) in [("server", &server_side), ("client", &client_side)] {
            for method in ["initialize", "notifications/initialized", "tools/list", "tools/call"] {
                assert!(
                    mine.iter().any(|e| e["method"] == method),
                    "{method} not seen on the {side} side (TLS: {secure}): {mine:?}\nother side: {}\nagent log:\n{}",
                    if side == "server" {
                        client_side.len()
                    } else {
                        server_side.len()
                    },
                    m.stderr()
                );
            }
            assert!(
                mine.iter()
                    .any(|e| e["method"] == "tools/call" && e["type"] == "response"),
                "no tools/call result on the {side} side (TLS: {secure})"
            );
        }
        assert_eq!(server_side[0]["server"]["uid"], uid, "{}", server_side[0]);
        assert_eq!(
            server_side[0]["server"]["user"],
            user.as_str(),
            "the name comes from the node's /etc/passwd: {}",
            server_side[0]
        );
        http_events += server_side.len() + client_side.len();
    }

    // Metrics on the pod's port, published as the Service would reach it.
    let text = m.metrics_text();
    assert!(metric_value(&text, "mcp_monitor_messages_total", &[]) >= (n + http_events) as f64);
    assert_eq!(
        metric_value(&text, "mcp_monitor_capture_dropped_total", &[]),
        0.0,
        "{text}"
    );

    // Alerts in the mounted state directory, the token never in clear.
    let alerts = m.wait_alerts(SETTLE, |a| {
        a.iter()
            .any(|a| a["rule"] == "credential.exposure" && a["evidence"]["tool"] == "echo")
    });
    assert!(
        alerts
            .iter()
            .any(|a| a["rule"] == "credential.exposure" && a["evidence"]["tool"] == "echo"),
        "no alert for the token echoed: {alerts:?}"
    );
    assert!(m.alerts_path.starts_with(m.dir.path()));
    let written = std::fs::read_to_string(&m.alerts_path).unwrap() + &std::fs::read_to_string(&m.events_path).unwrap();
    assert!(!written.contains(&token), "the token left in clear");
    // State in the host directory: the fingerprint key and the pinned tool
    // definitions (rug pulls across restarts).
    let state = m.dir.path().join("state");
    assert!(state.join("fingerprint.key").is_file());
    let pinned = std::fs::read_to_string(state.join("tools.json")).unwrap_or_default();
    assert!(
        pinned.contains("echo"),
        "tools of server-everything not pinned: {pinned}"
    );
    // Every probe attached, TLS included, with the manifest's privileges.
    let log = m.stderr();
    assert!(
        !log.contains("WARN") && !log.contains("ERROR"),
        "the agent warned:\n{log}"
    );
    // The kubelet stops a pod with SIGTERM (podman stop does the same): a
    // clean exit within the grace period.
    let status = m.stop_with_status().expect("the container was running");
    assert!(status.success(), "exit on SIGTERM: {status}\n{}", m.stderr());
}

#[test]
fn image_without_a_granted_capability_refuses_to_start_and_names_it() {
    require_root();
    let image = test_image();
    let pod = PodSpec::shipped();
    // Without SYS_ADMIN the kernel refuses the TLS uprobes (CVE-2025-38466);
    // without PERFMON as well, nothing can be attached at all; without BPF
    // too, no map can be made.
    for (without, named) in [
        (&["SYS_ADMIN"][..], "without CAP_SYS_ADMIN"),
        (&["SYS_ADMIN", "PERFMON"][..], "missing CAP_PERFMON"),
        (&["SYS_ADMIN", "BPF"][..], "missing CAP_BPF"),
    ] {
        for cap in without {
            assert!(pod.capabilities().iter().any(|c| c == cap), "the manifest grants {cap}");
        }
        let out = pod.run_without(&image, without);
        let log = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "started without {without:?}:\n{log}");
        assert!(log.contains(named), "the error does not say {named:?}:\n{log}");
        assert!(
            log.contains("daemonset.yaml"),
            "the error does not say where to fix it:\n{log}"
        );
    }
}
