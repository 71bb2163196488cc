//! Workload identity from real cgroups: a real MCP server placed in cgroup
//! directories shaped like those of containerd (systemd driver, Kubernetes),
//! CRI-O (cgroupfs driver, Kubernetes), Docker and a systemd service; the
//! events must carry the container id, pod uid or unit those paths encode.

use std::{path::PathBuf, time::Duration};

use mcp_monitor_tests::*;
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(20);

fn cgroup_root() -> PathBuf {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists())
        .expect("a cgroup v2 hierarchy")
}

/// 64 hex digits, different per run.
fn container_id(seed: u64) -> String {
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

#[test]
fn container_and_pod_identity_from_real_cgroups() {
    require_root();
    let base = cgroup_root().join(format!("mcp-monitor-identity-{}", std::process::id()));
    let seed = std::process::id() as u64;
    let pod = format!("7b4d6e7e-1f1c-4a0e-9a36-{:012x}", seed & 0xffff_ffff_ffff);
    // (cgroup path under the test's directory, container id, pod uid, unit)
    type Shape = (String, Option<String>, Option<String>, Option<String>);
    let shapes: Vec<Shape> = {
        let (a, b, c) = (container_id(seed), container_id(seed + 1), container_id(seed + 2));
        vec![
            (
                format!(
                    "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{a}.scope",
                    pod.replace('-', "_")
                ),
                Some(a.clone()),
                Some(pod.clone()),
                None,
            ),
            (
                format!("kubepods/besteffort/pod{pod}/crio-{b}"),
                Some(b.clone()),
                Some(pod.clone()),
                None,
            ),
            (format!("system.slice/docker-{c}.scope"), Some(c.clone()), None, None),
            (
                "system.slice/mcp-test-agent.service".into(),
                None,
                None,
                Some("mcp-test-agent.service".into()),
            ),
        ]
    };
    let m = Monitor::start(&[]);
    for (path, id, pod_uid, unit) in &shapes {
        let leaf = base.join(path);
        std::fs::create_dir_all(&leaf).expect("create a test cgroup");
        let t = python_session_under_shell(|shell| {
            std::fs::write(leaf.join("cgroup.procs"), shell.to_string()).expect("move the shell into the cgroup");
        });
        let events = m.wait_events(SETTLE, |ev| ev.iter().any(|e| e["server"]["pid"] == t.server_pid));
        let server: Vec<&Value> = events
            .iter()
            .filter(|e| e["server"]["pid"] == t.server_pid)
            .map(|e| &e["server"])
            .collect();
        assert!(!server.is_empty(), "no events for the server in {path}");
        for s in &server {
            assert_eq!(s["container_id"].as_str(), id.as_deref(), "{path}: {s}");
            assert_eq!(s["pod_uid"].as_str(), pod_uid.as_deref(), "{path}: {s}");
            assert_eq!(s["systemd_unit"].as_str(), unit.as_deref(), "{path}: {s}");
            assert!(s["cgroup"].as_str().unwrap().ends_with(path.as_str()), "{path}: {s}");
            assert!(s["mnt_ns"].as_u64().is_some() && s["pid_ns"].as_u64().is_some(), "{s}");
        }
        // The client runs in the same cgroup here, so it carries the same ids.
        let client = &events.iter().find(|e| e["server"]["pid"] == t.server_pid).unwrap()["client"];
        assert_eq!(client["container_id"].as_str(), id.as_deref());
    }
    drop(m);
    // The processes have exited; remove the cgroups, deepest first.
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (path, ..) in &shapes {
        let mut p = base.join(path);
        while p != base {
            dirs.push(p.clone());
            p = p.parent().unwrap().to_owned();
        }
    }
    dirs.push(base.clone());
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
