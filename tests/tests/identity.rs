//! Workload identity from real cgroups: a real MCP server placed in cgroup
//! directories shaped like those of containerd (systemd driver, Kubernetes),
//! CRI-O (cgroupfs driver, Kubernetes), Docker and a systemd service; the
//! events must carry the container id, pod uid or unit those paths encode.

use std::{process::Command, time::Duration};

use mcp_monitor_tests::*;
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(20);

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
    // SPIFFE IDs for services outside Kubernetes, mapped from the unit.
    let cfg_dir = TempDir::new("idcfg");
    let cfg = cfg_dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[identity]\ntrust_domain = \"example.org\"\n\n[[identity.spiffe]]\nsystemd_unit = \"mcp-test-*.service\"\n\
         id = \"spiffe://{trust_domain}/host/{hostname}/unit/{systemd_unit}\"\n",
    )
    .unwrap();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let m = Monitor::start(&["--config", cfg.to_str().unwrap()]);
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
            let spiffe = unit
                .as_ref()
                .map(|u| format!("spiffe://example.org/host/{hostname}/unit/{u}"));
            assert_eq!(s["spiffe_id"].as_str(), spiffe.as_deref(), "{path}: {s}");
            assert!(s["cgroup"].as_str().unwrap().ends_with(path.as_str()), "{path}: {s}");
            assert!(s["mnt_ns"].as_u64().is_some() && s["pid_ns"].as_u64().is_some(), "{s}");
        }
        // The client runs in the same cgroup here, so it carries the same ids.
        let client = &events.iter().find(|e| e["server"]["pid"] == t.server_pid).unwrap()["client"];
        assert_eq!(client["container_id"].as_str(), id.as_deref());
    }
    drop(m);
    remove_cgroups(&base, shapes.iter().map(|s| s.0.as_str()));
}

/// A real container: runc (the OCI runtime under containerd and CRI-O)
/// starts the FastMCP server in new pid, mount, ipc and uts namespaces and in
/// cgroups at the path a kubelet with the cgroupfs driver gives a container
/// (`/kubepods/besteffort/pod<uid>/<container id>`, every v1 hierarchy and
/// the unified one). The Python SDK client on the host talks to it over
/// runc's stdio. The root file system is the host's directories, bound
/// read-only: no image is needed.
#[test]
fn a_real_runc_container() {
    require_root();
    assert!(
        Command::new("runc")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "runc is missing: run `cargo xtask setup` (it installs Debian's runc)"
    );
    let seed = std::process::id() as u64 ^ 0xc0;
    let cid = container_id(seed);
    let pod = format!("2c9f4e1a-8b3d-4e5f-a6b7-{:012x}", seed & 0xffff_ffff_ffff);
    let bundle = TempDir::new("runc");
    let rootfs = bundle.path().join("rootfs");
    let out = Command::new("runc")
        .arg("spec")
        .current_dir(bundle.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "runc spec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut spec: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.path().join("config.json")).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!([
        python().to_str().unwrap(),
        clients_dir().join("fastmcp_server.py").to_str().unwrap()
    ]);
    spec["root"] = serde_json::json!({"path": "rootfs", "readonly": true});
    let ws = workspace();
    let mut binds: Vec<String> = ["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/root", "/tmp"]
        .iter()
        .filter(|d| std::path::Path::new(d).exists())
        .map(|d| d.to_string())
        .collect();
    if !binds.iter().any(|b| ws.starts_with(b)) {
        binds.push(ws.to_str().unwrap().to_owned());
    }
    for d in &binds {
        std::fs::create_dir_all(rootfs.join(d.trim_start_matches('/'))).unwrap();
        spec["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"destination": d, "type": "bind", "source": d, "options": ["rbind", "ro"]}));
    }
    // The host network: nothing to set up, and the server speaks stdio.
    let ns = spec["linux"]["namespaces"].as_array_mut().unwrap();
    ns.retain(|n| n["type"] != "network");
    spec["linux"]["cgroupsPath"] = format!("/kubepods/besteffort/pod{pod}/{cid}").into();
    std::fs::write(bundle.path().join("config.json"), spec.to_string()).unwrap();

    let m = Monitor::start(&[]);
    let dir = TempDir::new("rpy");
    let transcript = dir.path().join("t.json");
    let name = format!("mcp-monitor-test-{}", std::process::id());
    let st = Command::new(python())
        .arg(clients_dir().join("py_session.py"))
        .arg(&transcript)
        .args(["runc", "run", "--bundle", bundle.path().to_str().unwrap(), &name])
        .status()
        .unwrap();
    assert!(
        st.success(),
        "the Python SDK session with the containerised server failed"
    );
    let t = Transcript::load(&transcript);
    let events = m.wait_events(SETTLE, |ev| {
        ev.iter()
            .filter(|e| e["server"]["container_id"] == cid.as_str())
            .count()
            >= t.messages.len()
    });
    let server: Vec<&Value> = events
        .iter()
        .filter(|e| e["server"]["container_id"] == cid.as_str())
        .map(|e| &e["server"])
        .collect();
    assert_eq!(
        server.len(),
        t.messages.len(),
        "every message of the containerised server"
    );
    let own_ns = |kind: &str| {
        let link = std::fs::read_link(format!("/proc/self/ns/{kind}")).unwrap();
        let link = link.to_string_lossy().into_owned();
        link.split_once(":[")
            .unwrap()
            .1
            .trim_end_matches(']')
            .parse::<u64>()
            .unwrap()
    };
    for s in &server {
        assert_eq!(s["pod_uid"], pod.as_str(), "{s}");
        assert!(
            s["cgroup"].as_str().unwrap().ends_with(&format!("pod{pod}/{cid}")),
            "{s}"
        );
        // Its own namespaces, not the host's.
        assert_ne!(s["pid_ns"].as_u64(), Some(own_ns("pid")), "{s}");
        assert_ne!(s["mnt_ns"].as_u64(), Some(own_ns("mnt")), "{s}");
        assert!(s["exe"].as_str().unwrap().contains("python"), "{s}");
    }
    // The client runs on the host: no container.
    let e = events
        .iter()
        .find(|e| e["server"]["container_id"] == cid.as_str())
        .unwrap();
    assert!(e["client"].get("container_id").is_none(), "{e}");
    drop(m);
    let _ = Command::new("runc").args(["delete", "--force", &name]).output();
}
