//! Deployment files: the Kubernetes manifests validate against the
//! Kubernetes schemas (kubernetes-validate, strict), and every
//! configuration they ship is accepted by the agent. No root needed.

use std::{path::PathBuf, process::Command};

use mcp_monitor_tests::*;

fn deploy() -> PathBuf {
    workspace().join("deploy")
}

fn venv_bin(name: &str) -> PathBuf {
    python().parent().unwrap().join(name)
}

#[test]
fn kubernetes_manifests_validate_strictly() {
    let dir = deploy().join("kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "{files:?}");
    let out = Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "-k", "1.37.0"])
        .args(&files)
        .output()
        .expect("kubernetes-validate (cargo xtask setup installs it into .venv)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // Every core resource was checked, none skipped for a missing schema.
    assert!(!text.contains("Couldn't find schema"), "{text}");
    assert_eq!(text.matches(" passed for resource ").count(), files.len(), "{text}");

    // The check is real: a field Kubernetes does not know fails it.
    let tmp = TempDir::new("k8sbad");
    let bad = tmp.path().join("daemonset.yaml");
    let ds = std::fs::read_to_string(dir.join("daemonset.yaml")).unwrap();
    std::fs::write(
        &bad,
        ds.replacen("hostPID: true", "hostPID: true\n      hostPIDs: true", 1),
    )
    .unwrap();
    let out = Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "-k", "1.37.0"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown field passed validation");
}

/// The PrometheusRule's groups are valid Prometheus rules (promtool, from
/// Debian's prometheus package), and every metric they use exists.
#[test]
fn prometheus_rules_are_valid() {
    let tmp = TempDir::new("promrules");
    let rules = tmp.path().join("rules.yml");
    let out = Command::new(python())
        .args(["-c", "import yaml,sys\nd=yaml.safe_load(open(sys.argv[1]))\nyaml.safe_dump({'groups': d['spec']['groups']}, open(sys.argv[2], 'w'))"])
        .arg(deploy().join("kubernetes/monitoring/prometheusrule.yaml"))
        .arg(&rules)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Metric names the rules use must be ones the agent exports.
    let text = std::fs::read_to_string(&rules).unwrap();
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let mut names: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("mcp_monitor_"))
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(!names.is_empty());
    for n in names {
        assert!(
            readme.contains(&format!("`{n}`")),
            "{n} is used by the alert rules but not a documented metric"
        );
    }
}

/// Extracts `data.<key>` of the ConfigMap, and facts about the DaemonSet.
fn yaml_query(file: &str, expr: &str) -> String {
    let out = Command::new(python())
        .args([
            "-c",
            &format!("import yaml,sys\nd=list(yaml.safe_load_all(open(sys.argv[1])))[0]\nprint({expr}, end='')"),
        ])
        .arg(deploy().join("kubernetes").join(file))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn shipped_configurations_are_valid() {
    let tmp = TempDir::new("deploycfg");
    let config = tmp.path().join("config.toml");
    let rules = tmp.path().join("rules.toml");
    std::fs::write(&config, yaml_query("configmap.yaml", "d['data']['config.toml']")).unwrap();
    std::fs::write(&rules, yaml_query("configmap.yaml", "d['data']['rules.toml']")).unwrap();
    let check = |args: &[&str]| {
        let out = Command::new(monitor_bin()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let effective = check(&["config", "check", config.to_str().unwrap()]);
    assert!(effective.contains("metrics_addr = \"0.0.0.0:9464\""), "{effective}");
    check(&["rules", "check", rules.to_str().unwrap()]);
    // The documented gitleaks example: its rules are listed, and a file
    // with an error is refused naming the rule.
    let gitleaks = deploy().join("../docs/examples/gitleaks-extra-rules.toml");
    let listed = check(&["rules", "check", gitleaks.to_str().unwrap()]);
    assert!(
        listed.contains("acme-api-token") && listed.contains("acme-db-password"),
        "{listed}"
    );
    let bad = tmp.path().join("bad-gitleaks.toml");
    std::fs::write(&bad, "[[rules]]\nid = \"broken\"\nregex = '''(unclosed'''\n").unwrap();
    let out = Command::new(monitor_bin())
        .args(["rules", "check", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("rule broken: the regex does not compile"),
        "{err}"
    );
    let systemd = deploy().join("systemd/config.toml");
    check(&["config", "check", systemd.to_str().unwrap()]);
    // Both files claim to show every key of `config default`.
    let default = check(&["config", "default"]);
    let keys = |text: &str| -> Vec<String> {
        text.lines()
            .map(str::trim_start)
            .filter(|l| l.starts_with('[') || l.contains(" = ") && !l.starts_with('#'))
            .map(|l| match l.strip_prefix('[') {
                Some(section) => format!("[{}]", section.split(']').next().unwrap()),
                None => l.split(" = ").next().unwrap().trim().to_owned(),
            })
            .collect()
    };
    for (name, text) in [
        ("configmap config.toml", std::fs::read_to_string(&config).unwrap()),
        ("systemd config.toml", std::fs::read_to_string(&systemd).unwrap()),
    ] {
        let have = keys(&text);
        let missing: Vec<String> = keys(&default).into_iter().filter(|k| !have.contains(k)).collect();
        assert!(missing.is_empty(), "{name} lacks {missing:?} of `config default`");
    }
    // The DaemonSet sees every process and runs with named capabilities,
    // not privileged.
    assert_eq!(
        yaml_query("daemonset.yaml", "d['spec']['template']['spec']['hostPID']"),
        "True"
    );
    let caps = yaml_query(
        "daemonset.yaml",
        "d['spec']['template']['spec']['containers'][0]['securityContext']['capabilities']['add']",
    );
    for c in ["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH", "SYS_ADMIN"] {
        assert!(caps.contains(c), "{caps}");
    }
    assert_eq!(
        yaml_query(
            "daemonset.yaml",
            "d['spec']['template']['spec']['containers'][0]['securityContext']['privileged']"
        ),
        "False"
    );
}
