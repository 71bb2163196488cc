//! Detection scenarios with real servers and the official SDK clients,
//! watched by the real monitor.

use std::{process::Command, time::Duration};

use mcp_monitor_tests::*;
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(20);

fn rules_of(alerts: &[Value]) -> Vec<String> {
    alerts.iter().map(|a| a["rule"].as_str().unwrap().to_owned()).collect()
}

fn find<'a>(alerts: &'a [Value], rule: &str) -> &'a Value {
    alerts
        .iter()
        .find(|a| a["rule"] == rule)
        .unwrap_or_else(|| panic!("no {rule} alert; got {:?}", rules_of(alerts)))
}

/// The credential rules an alert's findings name.
fn finding_rules(alert: &Value) -> Vec<&str> {
    alert["evidence"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect()
}

fn python_list_session(variant: &str) -> Transcript {
    let dir = TempDir::new("py");
    let path = dir.path().join("t.json");
    let st = Command::new(python())
        .arg(clients_dir().join("py_session.py"))
        .arg(&path)
        .arg(python())
        .arg(clients_dir().join("fastmcp_server.py"))
        .env("MCP_TEST_VARIANT", variant)
        .env("MCP_TEST_PY_SCENARIO", "list")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    Transcript::load(&path)
}

#[test]
fn planted_keys_are_caught_relayed_and_never_leave_in_clear() {
    require_root();
    let fsdir = TempDir::new("leak");
    let (file, [gh, aws_id, aws_secret]) = fake::env_file(fsdir.path());
    // A Stripe test-mode key beside them: off by default, reported by no
    // rule (not even as a generic `*_SECRET_KEY=` assignment).
    let test_key = "sk_test_51Hq7LmT2cVbN7pRsZw4YhJ6kD9fGa3EuKo5iXq1Pz8Wc";
    let mut env = std::fs::read_to_string(&file).unwrap();
    env += &format!("STRIPE_SECRET_KEY={test_key}\n");
    std::fs::write(&file, env).unwrap();
    let m = Monitor::start(&["--payloads"]);
    let d = Driver::node_with_env(
        "leak",
        &[fsdir.path().to_str().unwrap(), file.to_str().unwrap()],
        &[("MCP_TEST_PYTHON", python().to_str().unwrap())],
    );
    d.finish();
    let alerts = m.wait_alerts(SETTLE, |a| {
        let r = rules_of(a);
        [
            "credential.exposure",
            "credential.exfiltration",
            "credential.relay",
            "tool_chain.exfiltration_cross_server",
        ]
        .iter()
        .all(|x| r.iter().any(|y| y == x))
    });

    // Exposure: the filesystem server returned the keys.
    let exposure = find(&alerts, "credential.exposure");
    assert_eq!(exposure["severity"], "high");
    assert_eq!(exposure["category"], "credential_leak");
    assert_eq!(exposure["evidence"]["tool"], "read_text_file");
    let found = finding_rules(exposure);
    for r in ["github-pat-classic", "aws-access-key-id", "aws-secret-access-key"] {
        assert!(found.contains(&r), "{r} not found: {found:?}");
    }
    let gh_finding = exposure["evidence"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "github-pat-classic")
        .unwrap();
    assert_eq!(gh_finding["prefix"], "ghp_");
    let test_key_findings: Vec<&Value> = alerts
        .iter()
        .filter_map(|a| a["evidence"]["findings"].as_array())
        .flatten()
        .filter(|f| f["prefix"] == "sk_t" || f["rule"] == "stripe-test-secret-key")
        .collect();
    assert!(
        test_key_findings.is_empty(),
        "a test-mode key was reported: {test_key_findings:?}"
    );
    assert_eq!(gh_finding["length"], 40);
    assert!(gh_finding["fingerprint"].as_str().unwrap().starts_with("hmac-sha256:"));

    // The same keys sent to another server's sink tool.
    let exfil = find(&alerts, "credential.exfiltration");
    assert_eq!(
        (exfil["severity"].as_str(), exfil["evidence"]["tool"].as_str()),
        (Some("critical"), Some("send_message"))
    );
    let relay = find(&alerts, "credential.relay");
    assert_eq!(relay["severity"], "critical");
    assert_eq!(relay["evidence"]["cross_server"], true);
    assert_eq!(relay["messages"].as_array().unwrap().len(), 2);
    let chain = find(&alerts, "tool_chain.exfiltration_cross_server");
    assert_eq!(chain["severity"], "critical", "the same secrets reappear: {chain}");
    let steps = chain["evidence"]["steps"].as_array().unwrap();
    assert_eq!(steps[0]["tool"], "read_text_file");
    assert_eq!(steps[1]["tool"], "send_message");
    assert_eq!(chain["client"]["name"], "monitor-test-client");
    // Who acted: the announced agent and the account it runs under (root
    // here, outside Kubernetes).
    let actor = &chain["actor"];
    assert_eq!(actor["agent"], "monitor-test-client");
    assert_eq!(actor["uid"], 0);
    assert_eq!(actor["pid"], chain["client"]["pid"]);
    let d = actor["description"].as_str().unwrap();
    assert!(
        d.starts_with("agent \"monitor-test-client\" 1.0.0 (pid ") && d.ends_with("acting as user root (uid 0)"),
        "{d}"
    );

    // The keys appear nowhere: events (with payloads), alerts, logs, metrics.
    let mut outputs = std::fs::read_to_string(&m.events_path).unwrap();
    outputs += &std::fs::read_to_string(&m.alerts_path).unwrap();
    outputs += &m.stderr();
    outputs += &m.metrics_text();
    assert!(outputs.contains("[REDACTED]"), "payloads were not redacted at all");
    for secret in [&gh, &aws_id, &aws_secret] {
        assert!(
            !outputs.contains(secret.as_str()),
            "a planted key leaked into the outputs"
        );
        assert!(
            !outputs.contains(&secret[6..18]),
            "part of a planted key leaked into the outputs"
        );
    }
    assert!(
        m.metric(
            "mcp_monitor_alerts_total",
            &[("rule", "credential.relay"), ("severity", "critical")]
        ) >= 1.0
    );
}

/// A credential only its context identifies is passed on alone (no rule
/// can know it there): the relay memory recognises the value. The same run
/// loads the example gitleaks file of docs/ and catches its token format.
#[test]
fn bare_values_are_followed_and_gitleaks_rules_apply() {
    require_root();
    let fsdir = TempDir::new("bare");
    let (aws_id, aws_secret) = fake::aws_keys();
    let acme = "acme_live_7f3k9q2m8x4v1b6n0p5r2t8w3y7z1c4d";
    let file = fsdir.path().join("ops.env");
    std::fs::write(
        &file,
        format!("AWS_ACCESS_KEY_ID={aws_id}\nAWS_SECRET_ACCESS_KEY={aws_secret}\nACME_TOKEN={acme}\n"),
    )
    .unwrap();
    let gitleaks = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/examples/gitleaks-extra-rules.toml")
        .canonicalize()
        .unwrap();
    let config = fsdir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[detection]\nextra_rules = [{:?}]\n", gitleaks.to_str().unwrap()),
    )
    .unwrap();

    let m = Monitor::start(&["--payloads", "--config", config.to_str().unwrap()]);
    let d = Driver::node_with_env(
        "leak",
        &[fsdir.path().to_str().unwrap(), file.to_str().unwrap()],
        &[("MCP_TEST_SEND_VALUE_OF", "AWS_SECRET_ACCESS_KEY")],
    );
    d.finish();
    let alerts = m.wait_alerts(SETTLE, |a| {
        let r = rules_of(a);
        r.iter().any(|x| x == "credential.relay") && r.iter().any(|x| x == "credential.exposure")
    });
    let exposure = find(&alerts, "credential.exposure");
    let found = finding_rules(exposure);
    for r in ["aws-secret-access-key", "acme-api-token"] {
        assert!(found.contains(&r), "{r} not found: {found:?}");
    }
    let relay = find(&alerts, "credential.relay");
    assert_eq!(relay["evidence"]["found_by"], "value", "{relay}");
    assert_eq!(relay["evidence"]["finding"]["rule"], "aws-secret-access-key");
    assert_eq!(relay["evidence"]["finding"]["path"], "$.params.arguments.text");
    assert_eq!(relay["evidence"]["relayed_to"]["tool"], "send_message");
    assert_eq!(relay["evidence"]["cross_server"], true);
    // No rule recognised the bare value in the call itself.
    assert!(
        !rules_of(&alerts).iter().any(|r| r == "credential.exfiltration"),
        "{:?}",
        rules_of(&alerts)
    );
    let mut outputs = std::fs::read_to_string(&m.events_path).unwrap();
    outputs += &std::fs::read_to_string(&m.alerts_path).unwrap();
    outputs += &m.stderr();
    outputs += &m.metrics_text();
    for secret in [aws_secret.as_str(), acme] {
        assert!(
            !outputs.contains(&secret[6..18]),
            "a planted key leaked into the outputs"
        );
    }
}

#[test]
fn rug_pull_is_caught_across_a_monitor_restart() {
    require_root();
    let state = TempDir::new("state");
    let state_arg = state.path().to_str().unwrap();
    let mut first = Monitor::start(&["--state-dir", state_arg]);
    let t = python_list_session("");
    first.wait_events(SETTLE, |ev| {
        ev.iter()
            .any(|e| e["method"] == "tools/list" && e["type"] == "response" && e["server"]["pid"] == t.server_pid)
    });
    first.stop();
    assert!(
        first.alerts().is_empty(),
        "first sighting is the baseline: {:?}",
        first.alerts()
    );
    assert!(state.path().join("tools.json").exists());

    // A new agent process; the server now describes `add` differently.
    let second = Monitor::start(&["--state-dir", state_arg]);
    python_list_session("v2");
    let alerts = second.wait_alerts(SETTLE, |a| !a.is_empty());
    let rug = find(&alerts, "tool_integrity.rug_pull");
    assert_eq!(rug["severity"], "high");
    assert_eq!(rug["evidence"]["change"]["tool"], "add");
    assert_eq!(
        rug["evidence"]["change"]["changed_fields"],
        serde_json::json!(["description"])
    );
    assert!(rug["summary"].as_str().unwrap().contains("add"));
}

#[test]
fn poisoned_tool_description_is_reported() {
    require_root();
    let m = Monitor::start(&[]);
    python_list_session("poisoned");
    let alerts = m.wait_alerts(SETTLE, |a| !a.is_empty());
    let p = find(&alerts, "tool_integrity.poisoning");
    assert_eq!(p["evidence"]["tool"], "add");
    assert!(matches!(p["severity"].as_str(), Some("high" | "critical")), "{p}");
    let ids: Vec<&str> = p["evidence"]["indicators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    for want in [
        "hidden_instruction_tag",
        "sensitive_path",
        "concealment",
        "side_channel_parameter",
    ] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
}

#[test]
fn normal_sessions_raise_no_alerts() {
    require_root();
    let fsdir = TempDir::new("fs");
    let m = Monitor::start(&[]);
    let t1 = run_node("everything", &[]);
    let t2 = run_node("filesystem", &[fsdir.path().to_str().unwrap()]);
    let t3 = run_python_fastmcp();
    for t in [&t1, &t2, &t3] {
        let n = count(&t.expected(false));
        m.wait_events(SETTLE, |ev| count(&observed(ev, t.server_pid)) >= n);
    }
    std::thread::sleep(Duration::from_secs(1));
    let alerts = m.alerts();
    assert!(
        alerts.is_empty(),
        "false positives: {:#?}",
        alerts.iter().map(|a| (&a["rule"], &a["summary"])).collect::<Vec<_>>()
    );
}

#[test]
fn replay_reproduces_the_alerts() {
    require_root();
    let fsdir = TempDir::new("leak");
    let file = fsdir.path().join("secrets.env");
    std::fs::write(&file, format!("token: {}\n", fake::github_token())).unwrap();
    let rec_dir = TempDir::new("rec");
    let rec = rec_dir.path().join("c.rec");
    let state = TempDir::new("state");
    let mut m = Monitor::start(&[
        "--record",
        rec.to_str().unwrap(),
        "--state-dir",
        state.path().to_str().unwrap(),
    ]);
    Driver::node_with_env(
        "leak",
        &[fsdir.path().to_str().unwrap(), file.to_str().unwrap()],
        &[("MCP_TEST_PYTHON", python().to_str().unwrap())],
    )
    .finish();
    m.wait_alerts(SETTLE, |a| rules_of(a).iter().any(|r| r == "credential.relay"));
    m.stop();
    let live = std::fs::read_to_string(&m.alerts_path).unwrap();
    let out = rec_dir.path().join("alerts.jsonl");
    let st = Command::new(monitor_bin())
        .args([
            "replay",
            rec.to_str().unwrap(),
            "--events-file",
            "/dev/null",
            "--alerts-file",
            out.to_str().unwrap(),
            "--state-dir",
            state.path().to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        live,
        "replayed alerts differ from the live run"
    );
}
