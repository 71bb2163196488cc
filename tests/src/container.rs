//! The agent's container image, run with Podman exactly as the DaemonSet
//! runs it: the pod's security context, host mounts, environment, arguments,
//! resource limits and ConfigMap are read from deploy/kubernetes, not
//! restated here, so a change to the manifests is what gets tested.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use serde_json::Value;

use crate::*;

/// The image under test: `MCP_TEST_IMAGE`, which `cargo xtask test` sets
/// after assembling it (`cargo xtask image --prebuilt` does the same by hand).
pub fn test_image() -> String {
    let image = std::env::var("MCP_TEST_IMAGE").unwrap_or_else(|_| "localhost/mcp-monitor:test".into());
    let exists = Command::new("podman")
        .args(["image", "exists", &image])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        exists,
        "the image {image} is not in Podman's store: run `cargo xtask image --prebuilt` (or `cargo xtask test`)"
    );
    image
}

/// What the DaemonSet and its ConfigMap say about the agent's container.
pub struct PodSpec {
    /// The manifests, as JSON (see `SPEC_SCRIPT`).
    spec: Value,
}

/// Reads deploy/kubernetes/{daemonset,configmap}.yaml into the facts the
/// container runtime needs.
const SPEC_SCRIPT: &str = r#"
import json, sys, yaml
ds = list(yaml.safe_load_all(open(sys.argv[1])))[0]
cm = list(yaml.safe_load_all(open(sys.argv[2])))[0]
pod = ds["spec"]["template"]["spec"]
c = pod["containers"][0]
vols = {v["name"]: v for v in pod["volumes"]}
mounts = []
for m in c["volumeMounts"]:
    v = vols[m["name"]]
    mounts.append({
        "name": m["name"], "path": m["mountPath"], "read_only": m.get("readOnly", False),
        "host_path": v.get("hostPath", {}).get("path"),
        "config_map": v.get("configMap", {}).get("name"),
    })
print(json.dumps({
    "pod_keys": sorted(pod.keys()),
    "host_pid": pod.get("hostPID", False),
    "host_network": pod.get("hostNetwork", False),
    "security_context": c["securityContext"],
    "command": c["command"], "args": c["args"],
    "env": c.get("env", []),
    "ports": c["ports"],
    "limits": c["resources"]["limits"],
    "mounts": mounts,
    "config_map": {"name": cm["metadata"]["name"], "data": cm["data"]},
}))
"#;

impl PodSpec {
    /// Reads the shipped manifests.
    pub fn shipped() -> PodSpec {
        let k8s = workspace().join("deploy/kubernetes");
        let out = Command::new(python())
            .args(["-c", SPEC_SCRIPT])
            .arg(k8s.join("daemonset.yaml"))
            .arg(k8s.join("configmap.yaml"))
            .output()
            .expect("run python (cargo xtask setup makes .venv)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        PodSpec {
            spec: serde_json::from_slice(&out.stdout).unwrap(),
        }
    }

    /// The capabilities the manifest adds (after dropping ALL).
    pub fn capabilities(&self) -> Vec<String> {
        let caps = &self.spec["security_context"]["capabilities"];
        assert_eq!(
            caps["drop"],
            serde_json::json!(["ALL"]),
            "the manifest drops every capability first"
        );
        caps["add"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect()
    }

    /// The ConfigMap's `config.toml`.
    pub fn config_toml(&self) -> String {
        self.spec["config_map"]["data"]["config.toml"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `podman run` arguments for the container (before the image), with
    /// the `state` hostPath replaced by `state_dir`, ConfigMap files written
    /// to `config_dir`, metrics published on `metrics`, and `without` taken
    /// out of the granted capabilities.
    fn podman_args(
        &self,
        name: &str,
        state_dir: &std::path::Path,
        config_dir: &std::path::Path,
        metrics: SocketAddr,
        without: &[&str],
    ) -> Vec<String> {
        let s = &self.spec;
        let mut a: Vec<String> = vec!["run".into(), "--rm".into(), "--name".into(), name.into()];
        a.extend(podman_ulimit_args());
        // Pod level.
        let known_pod_keys = [
            "serviceAccountName",
            "automountServiceAccountToken",
            "hostPID",
            "hostNetwork",
            "enableServiceLinks",
            "priorityClassName",
            "terminationGracePeriodSeconds",
            "tolerations",
            "nodeSelector",
            "containers",
            "volumes",
        ];
        for k in s["pod_keys"].as_array().unwrap() {
            assert!(
                known_pod_keys.contains(&k.as_str().unwrap()),
                "the DaemonSet's pod spec has {k}, which this test does not reproduce: teach tests/src/container.rs"
            );
        }
        if s["host_pid"] == true {
            a.push("--pid=host".into());
        }
        if s["host_network"] == true {
            a.push("--network=host".into());
        } else {
            a.push(format!("--publish={metrics}:9464"));
        }
        // Container security context, key by key: an unknown key fails.
        let sc = s["security_context"].as_object().unwrap();
        assert!(
            !(sc.get("allowPrivilegeEscalation") == Some(&Value::Bool(false))
                && self.capabilities().iter().any(|c| c == "SYS_ADMIN")),
            "Kubernetes refuses allowPrivilegeEscalation: false together with SYS_ADMIN"
        );
        for (k, v) in sc {
            match k.as_str() {
                "runAsUser" => a.push(format!("--user={v}:{}", sc.get("runAsGroup").unwrap_or(v))),
                "runAsGroup" | "runAsNonRoot" => {}
                "privileged" => assert_eq!(v, false, "the DaemonSet runs unprivileged"),
                "allowPrivilegeEscalation" => {
                    if v == false {
                        a.push("--security-opt=no-new-privileges".into());
                    }
                }
                "readOnlyRootFilesystem" => {
                    if v == true {
                        // Kubernetes adds no tmpfs to a read-only root; Podman does unless told.
                        a.push("--read-only".into());
                        a.push("--read-only-tmpfs=false".into());
                    }
                }
                "capabilities" => {
                    a.push("--cap-drop=ALL".into());
                    for c in self.capabilities() {
                        if !without.contains(&c.as_str()) {
                            a.push(format!("--cap-add={c}"));
                        }
                    }
                }
                "seccompProfile" => {
                    assert_eq!(
                        v["type"], "Unconfined",
                        "only the Unconfined profile is reproduced here"
                    );
                    a.push("--security-opt=seccomp=unconfined".into());
                }
                other => panic!("securityContext.{other} is not reproduced by this test: teach tests/src/container.rs"),
            }
        }
        // Resources: the limits are what a container runtime enforces.
        let limits = &s["limits"];
        if let Some(mem) = limits["memory"].as_str() {
            let mib: u64 = mem.trim_end_matches("Mi").parse().expect("memory limit in Mi");
            a.push(format!("--memory={mib}m"));
        }
        if let Some(cpu) = limits["cpu"].as_str() {
            a.push(format!("--cpus={cpu}"));
        }
        // Volumes.
        for m in s["mounts"].as_array().unwrap() {
            let path = m["path"].as_str().unwrap();
            let ro = if m["read_only"] == true { ":ro" } else { "" };
            let source = if m["name"] == "state" {
                state_dir.to_path_buf()
            } else if let Some(h) = m["host_path"].as_str() {
                PathBuf::from(h)
            } else if m["config_map"].is_string() {
                assert_eq!(m["config_map"], s["config_map"]["name"]);
                for (file, text) in s["config_map"]["data"].as_object().unwrap() {
                    std::fs::write(config_dir.join(file), text.as_str().unwrap()).unwrap();
                }
                config_dir.to_path_buf()
            } else {
                panic!("volume {m} is neither a hostPath nor the ConfigMap");
            };
            a.push(format!("--volume={}:{path}{ro}", source.display()));
        }
        // Environment.
        for e in s["env"].as_array().unwrap() {
            let value = if let Some(v) = e["value"].as_str() {
                v.to_string()
            } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" {
                hostname()
            } else {
                panic!("env {e} is not reproduced by this test");
            };
            a.push(format!("--env={}={value}", e["name"].as_str().unwrap()));
        }
        a.push(format!(
            "--entrypoint={}",
            s["command"][0].as_str().expect("the manifest names the command")
        ));
        a
    }

    /// The manifest's arguments, then `extra`.
    fn command_args(&self, extra: &[&str]) -> Vec<String> {
        let s = &self.spec;
        let mut a: Vec<String> = s["command"].as_array().unwrap()[1..]
            .iter()
            .chain(s["args"].as_array().unwrap())
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// Starts the image as the DaemonSet would and waits until it is ready.
    /// Events and alerts go to files in the mounted state directory (the
    /// ConfigMap sends them to stdout; `--events-file`/`--alerts-file`
    /// redirect them where the test reads them from the host).
    pub fn start(&self, image: &str) -> Monitor {
        let Pod {
            dir,
            state,
            config,
            metrics_addr,
            name,
        } = Pod::new();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new("podman")
            .args(self.podman_args(&name, &state, &config, metrics_addr, &[]))
            .arg(image)
            .args(self.command_args(&[
                "--events-file",
                "/var/lib/mcp-monitor/events.jsonl",
                "--alerts-file",
                "/var/lib/mcp-monitor/alerts.jsonl",
            ]))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn podman");
        Monitor::adopt(
            child,
            dir,
            state.join("events.jsonl"),
            state.join("alerts.jsonl"),
            metrics_addr,
            Some(name),
        )
    }

    /// Runs the image as the DaemonSet would but without the capabilities
    /// `without`, until it exits (it must not start).
    pub fn run_without(&self, image: &str, without: &[&str]) -> Output {
        let Pod {
            dir: _dir,
            state,
            config,
            metrics_addr,
            name,
        } = Pod::new();
        let mut child = Command::new("podman")
            .args(self.podman_args(&name, &state, &config, metrics_addr, without))
            .arg(image)
            .args(self.command_args(&[]))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn podman");
        // A container that starts anyway is stopped after a minute, so that
        // the test fails instead of hanging.
        let deadline = std::time::Instant::now() + scaled(std::time::Duration::from_secs(60));
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = Command::new("podman").args(["stop", "--time", "5", &name]).status();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        child.wait_with_output().unwrap()
    }
}

/// Extra `--ulimit` flags for `podman run` where the host withholds
/// CAP_SYS_RESOURCE from us (rootful Podman raises nofile/nproc, which then
/// fails): the same rule as `cargo xtask image`.
pub fn podman_ulimit_args() -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    if caps & (1 << 24) != 0 {
        return Vec::new();
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    vec![
        "--ulimit".into(),
        format!("nofile={}:{}", lim.rlim_cur, lim.rlim_max),
        "--ulimit".into(),
        "nproc=32768:32768".into(),
    ]
}

/// What one run of the image gets of its own: a temporary directory with
/// the state directory and the ConfigMap's files, a metrics port, a name.
struct Pod {
    dir: TempDir,
    state: PathBuf,
    config: PathBuf,
    metrics_addr: SocketAddr,
    name: String,
}

impl Pod {
    fn new() -> Pod {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = TempDir::new("pod");
        let state = dir.path().join("state");
        let config = dir.path().join("config");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(&config).unwrap();
        let n = N.fetch_add(1, Ordering::Relaxed);
        Pod {
            dir,
            state,
            config,
            metrics_addr: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            name: format!("mcpmon-test-{}-{n}", std::process::id()),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}
