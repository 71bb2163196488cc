//! The Kubernetes pod watch against a local server that speaks the API's
//! list/watch protocol (tests/clients/fake_kube_api.py): no API server can
//! run on these machines.
//!
//! A real MCP server (server-everything, TypeScript SDK client) runs in a
//! real cgroup shaped like a kubelet's (cgroupfs driver). Its pod appears in
//! the API only after the server started; events before carry no pod, events
//! after carry namespace, pod, service account, the Deployment resolved
//! through its ReplicaSet, container, image and SPIFFE ID. Meanwhile the
//! fake ends every watch after 2 s (the monitor resumes from its
//! resourceVersion without listing again), and expires resourceVersions
//! (410 Gone: the monitor lists again and drops a pod deleted while it was
//! not watching).

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mcp_monitor_tests::*;
use serde_json::{json, Value};

struct FakeApi {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl FakeApi {
    fn start() -> FakeApi {
        let dir = TempDir::new("kube");
        let port_file = dir.path().join("port");
        let child = Command::new(python())
            .arg(clients_dir().join("fake_kube_api.py"))
            .arg(&port_file)
            .spawn()
            .expect("start the fake Kubernetes API");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().parse::<u16>().unwrap();
            }
            assert!(Instant::now() < deadline, "the fake Kubernetes API did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        FakeApi {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            _dir: dir,
        }
    }

    fn post(&self, path: &str, body: &Value) {
        let (status, text) = http_post(self.addr, path, &body.to_string()).unwrap();
        assert!(status.contains("200"), "{path}: {status} {text}");
    }

    fn stats(&self) -> Value {
        serde_json::from_str(&http_get(self.addr, "/_test/stats").unwrap().1).unwrap()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pod(uid: &str, name: &str, node: &str, container_id: &str, owner: Option<&str>) -> Value {
    let mut p = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "uid": uid,
            "labels": {"app": "web", "pod-template-hash": "5d9c7b", "unselected": "x"},
        },
        "spec": {
            "nodeName": node,
            "serviceAccountName": "mcp-agent",
            "containers": [{"name": "mcp-server", "image": "ghcr.io/example/mcp-server:1.4"}],
        },
        "status": {
            "phase": "Running",
            "containerStatuses": [{
                "name": "mcp-server",
                "containerID": format!("containerd://{container_id}"),
                "image": "ghcr.io/example/mcp-server:1.4",
                "imageID": "ghcr.io/example/mcp-server@sha256:5f0e2c1d",
                "ready": true,
                "restartCount": 0,
            }],
        },
    });
    if let Some(rs) = owner {
        p["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
            "uid": "3c1f5a0e-0000-4000-8000-000000000001", "controller": true, "blockOwnerDeletion": true,
        }]);
    }
    p
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn pods_workloads_and_spiffe_ids_from_a_watched_api() {
    require_root();
    let api = FakeApi::start();
    let seed = std::process::id() as u64 ^ 0x4b8;
    let cid = container_id(seed);
    let pod_uid = format!("5e0b8a3c-7d21-4f6a-9c3e-{:012x}", seed & 0xffff_ffff_ffff);
    let other_uid = "0f0f0f0f-1111-4222-8333-444444444444";
    // A pod of this node that will be deleted while the watch is down, and
    // one of another node that must never be listed.
    api.post(
        "/_test/pods",
        &pod(other_uid, "old-0", "test-node", &container_id(seed + 7), None),
    );
    api.post(
        "/_test/pods",
        &pod(
            "99999999-1111-4222-8333-444444444444",
            "elsewhere-0",
            "other-node",
            &container_id(seed + 8),
            None,
        ),
    );
    api.post(
        "/_test/replicasets",
        &json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-5d9c7b", "namespace": "team-a", "uid": "3c1f5a0e-0000-4000-8000-000000000001",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                              "uid": "3c1f5a0e-0000-4000-8000-000000000002", "controller": true}]},
            "spec": {"selector": {"matchLabels": {"app": "web"}}},
        }),
    );

    let cfg_dir = TempDir::new("kcfg");
    let cfg = cfg_dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[kubernetes]\nmode = \"on\"\nnode_name = \"test-node\"\napi_url = \"http://{}\"\nlabels = [\"app\"]\n\n\
             [identity]\ntrust_domain = \"example.org\"\n\n[metrics]\nworkload_labels = true\n",
            api.addr
        ),
    )
    .unwrap();
    let m = Monitor::start(&["--config", cfg.to_str().unwrap()]);
    wait_for("the first list", Duration::from_secs(20), || {
        m.metric("mcp_monitor_kubernetes_synced", &[]) == 1.0 && m.metric("mcp_monitor_kubernetes_pods", &[]) == 1.0
    });
    // Node scoping: every request carried the field selector, and the pod of
    // the other node was not taken.
    let stats = api.stats();
    assert!(
        stats["field_selectors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s == "spec.nodeName=test-node"),
        "{stats}"
    );
    // Watches end after 2 s; the monitor resumes them without a new list.
    wait_for("two watches to end", Duration::from_secs(20), || {
        api.stats()["watches"].as_u64().unwrap() >= 3
    });
    assert_eq!(api.stats()["lists"], 1, "a watch that ended must resume, not re-list");

    // The MCP server starts in its cgroup before its pod is known.
    let base = cgroup_root().join(format!("mcp-monitor-kube-{}", std::process::id()));
    let path = format!("kubepods/besteffort/pod{pod_uid}/{cid}");
    let leaf = base.join(&path);
    std::fs::create_dir_all(&leaf).unwrap();
    let transcript_dir = TempDir::new("kdrv");
    let transcript = transcript_dir.path().join("t.json");
    let mut driver = Command::new("sh")
        .current_dir(clients_dir())
        .arg("-c")
        .arg(format!(
            "read go; exec node stdio_session.mjs everything {} --pause",
            transcript.display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(leaf.join("cgroup.procs"), driver.id().to_string()).unwrap();
    let mut stdin = driver.stdin.take().unwrap();
    writeln!(stdin, "go").unwrap();
    let mut stdout = BufReader::new(driver.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != "PAUSED" {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the client ended before pausing"
        );
    }
    let in_cgroup = |e: &Value| e["server"]["cgroup"].as_str().is_some_and(|c| c.ends_with(&path));
    let before = m.wait_events(Duration::from_secs(20), |ev| {
        ev.iter().filter(|e| in_cgroup(e)).count() >= 4
    });
    let before: Vec<&Value> = before.iter().filter(|e| in_cgroup(e)).collect();
    assert!(
        before.len() >= 4,
        "events of the server before its pod exists: {}",
        before.len()
    );
    for e in &before {
        assert_eq!(e["server"]["container_id"], cid.as_str());
        assert!(e["server"].get("kubernetes").is_none(), "no pod yet: {e}");
    }
    let server_pid = before[0]["server"]["pid"].as_u64().unwrap();

    // The pod appears (through the watch), then the old pod is deleted while
    // the monitor is told its resourceVersion is too old.
    api.post(
        "/_test/pods",
        &pod(&pod_uid, "web-5d9c7b-x2x4z", "test-node", &cid, Some("web-5d9c7b")),
    );
    wait_for("the new pod", Duration::from_secs(20), || {
        m.metric("mcp_monitor_kubernetes_pods", &[]) == 2.0
    });
    http_post(api.addr, &format!("/_test/forget?uid={other_uid}"), "").unwrap();
    http_post(api.addr, "/_test/expire", "").unwrap();
    wait_for("a list after 410 Gone", Duration::from_secs(30), || {
        m.metric("mcp_monitor_kubernetes_lists_total", &[]) >= 2.0
            && m.metric("mcp_monitor_kubernetes_pods", &[]) == 1.0
    });
    assert!(m.metric("mcp_monitor_kubernetes_errors_total", &[("kind", "gone")]) >= 1.0);
    assert!(api.stats()["gone"].as_u64().unwrap() >= 1);

    // The same server process, resumed: its events now name the workload.
    writeln!(stdin, "go on").unwrap();
    drop(stdin);
    assert!(driver.wait().unwrap().success());
    let t = Transcript::load(&transcript);
    assert_eq!(t.server_pid as u64, server_pid);
    let after_count = t.messages.iter().filter(|s| s.after_resume).count();
    let events = m.wait_events(Duration::from_secs(20), |ev| {
        ev.iter()
            .filter(|e| in_cgroup(e) && e["server"].get("kubernetes").is_some())
            .count()
            >= after_count
    });
    let named: Vec<&Value> = events
        .iter()
        .filter(|e| in_cgroup(e) && e["server"].get("kubernetes").is_some())
        .collect();
    assert!(
        named.len() >= after_count,
        "{} of {after_count} events named the pod",
        named.len()
    );
    for e in &named {
        let s = &e["server"];
        assert_eq!(s["pid"].as_u64(), Some(server_pid));
        let k = &s["kubernetes"];
        assert_eq!(k["namespace"], "team-a", "{e}");
        assert_eq!(k["pod"], "web-5d9c7b-x2x4z");
        assert_eq!(k["pod_uid"], pod_uid.as_str());
        assert_eq!(k["service_account"], "mcp-agent");
        assert_eq!(k["node"], "test-node");
        // Resolved by asking the API for the ReplicaSet, not inferred.
        assert_eq!(k["workload"], json!({"kind": "Deployment", "name": "web"}));
        assert_eq!(k["container"], "mcp-server");
        assert_eq!(k["image"], "ghcr.io/example/mcp-server:1.4");
        assert_eq!(k["image_id"], "ghcr.io/example/mcp-server@sha256:5f0e2c1d");
        assert_eq!(k["labels"], json!({"app": "web"}));
        assert_eq!(s["spiffe_id"], "spiffe://example.org/ns/team-a/sa/mcp-agent");
    }
    assert!(api.stats()["replicaset_gets"].as_u64().unwrap() >= 1);
    assert!(
        m.metric(
            "mcp_monitor_messages_total",
            &[("namespace", "team-a"), ("workload", "web")]
        ) >= after_count as f64
    );
    drop(m);
    remove_cgroups(&base, [path.as_str()]);
}

#[test]
fn a_required_watch_without_a_node_name_stops_the_start_with_the_fix() {
    require_root();
    let dir = TempDir::new("kbad");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[kubernetes]\nmode = \"on\"\napi_url = \"http://127.0.0.1:9\"\n").unwrap();
    let out = Command::new(monitor_bin())
        .args(["run", "--config", cfg.to_str().unwrap(), "--metrics-addr"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env_remove("NODE_NAME")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NODE_NAME") && err.contains("spec.nodeName"), "{err}");
}
