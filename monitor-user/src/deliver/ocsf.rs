//! Alerts as OCSF 1.8 findings.
//!
//! - Credential leaks are **Data Security Findings** (class 2006): what
//!   left, in which tool call, found by which rule; `data_security` says the
//!   detection system is an endpoint sensor.
//! - Chaining, tool integrity and prompt injection alerts are **Detection
//!   Findings** (class 2004).
//!
//! Common mapping: `finding_info.uid` = alert id, `finding_info.analytic`
//! = the rule (type Rule), `severity_id` from the alert severity (info 1 ...
//! critical 5), `activity_id` Create (1), or Update (2) for a repeat summary
//! (with `count`, `start_time`, `end_time`), `actor.process` = the MCP
//! client, the session in `resources[0]`, the messages in
//! `finding_info.related_events`, and MCP specifics (transport, session,
//! names announced in `initialize`) under `unmapped.mcp`. Detection findings
//! put the MCP server in `evidences[0].process` and the alert's redacted
//! evidence in `evidences[0].data`; data security findings have no
//! `evidences`, so there they are `unmapped.mcp.server_process` and
//! `unmapped.mcp.evidence`. The mapping is
//! checked against the 1.8.0 schema in tests (`tests/ocsf/`).

use std::sync::LazyLock;

use serde_json::{json, Map, Value};

use crate::{
    detect::alert::{Alert, Category, Severity},
    event::Party,
};

/// OCSF schema version the findings follow.
pub const VERSION: &str = "1.8.0";

static HOSTNAME: LazyLock<String> = LazyLock::new(|| {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
});

fn ms(ns: i128) -> i64 {
    (ns / 1_000_000) as i64
}

fn severity(s: Severity) -> (u8, &'static str) {
    match s {
        Severity::Info => (1, "Informational"),
        Severity::Low => (2, "Low"),
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
        Severity::Critical => (5, "Critical"),
    }
}

/// An OCSF `process` object for one end of the session.
fn process(p: &Party) -> Option<Value> {
    let mut o = Map::new();
    match &p.process {
        Some(info) => {
            o.insert("pid".into(), json!(info.pid));
            if !info.comm.is_empty() {
                o.insert("name".into(), json!(info.comm));
            }
            if !info.cmdline.is_empty() {
                o.insert("cmd_line".into(), json!(info.cmdline.join(" ")));
            }
            if info.start_unix_ns > 0 {
                o.insert("created_time".into(), json!(info.start_unix_ns / 1_000_000));
            }
            if !info.exe.is_empty() {
                let name = info.exe.rsplit('/').next().unwrap_or(&info.exe);
                o.insert(
                    "file".into(),
                    json!({"name": name, "path": info.exe, "type_id": 1, "type": "Regular File"}),
                );
            }
            let mut user = json!({"uid": info.uid.to_string()});
            if let Some(u) = &info.user {
                user["name"] = json!(u);
            }
            o.insert("user".into(), user);
            let k8s = p.workload.as_ref().and_then(|w| w.kubernetes.as_ref());
            if info.container_id.is_some() || k8s.is_some() {
                let mut c = Map::new();
                if let Some(id) = &info.container_id {
                    c.insert("uid".into(), json!(id));
                }
                if let Some(k) = k8s {
                    c.insert("orchestrator".into(), json!("Kubernetes"));
                    c.insert("pod_uuid".into(), json!(k.pod_uid));
                    if let Some(n) = &k.container {
                        c.insert("name".into(), json!(n));
                    }
                    if let Some(i) = &k.image {
                        // OCSF requires an image uid: the digest reference
                        // when the runtime reported one, else the name.
                        let uid = k.image_id.as_deref().unwrap_or(i);
                        c.insert("image".into(), json!({"name": i, "uid": uid}));
                    }
                }
                o.insert("container".into(), Value::Object(c));
            }
        }
        None => {
            o.insert("pid".into(), json!(p.pid?));
        }
    }
    Some(Value::Object(o))
}

/// The alert as an OCSF finding.
pub fn finding(a: &Alert) -> Value {
    let data_security = a.category == Category::CredentialLeak;
    let (class_uid, class_name) = if data_security {
        (2006, "Data Security Finding")
    } else {
        (2004, "Detection Finding")
    };
    let repeat = a.count > 1;
    let (activity_id, activity_name) = if repeat { (2, "Update") } else { (1, "Create") };
    let (severity_id, severity_name) = severity(a.severity);
    let related: Vec<Value> = a
        .messages
        .iter()
        .map(|m| {
            let id = m.id.as_ref().map(|i| serde_json::to_string(i).unwrap_or_default()).unwrap_or_else(|| "-".into());
            json!({
                "uid": format!("{}/{}/{}/{}", m.session, serde_json::to_value(m.direction).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(), m.kind, id),
                "type": m.method.clone().unwrap_or_else(|| m.kind.to_owned()),
                "title": m.tool.clone(),
                "created_time": ms(m.time),
            })
        })
        .collect();
    let mut finding_info = json!({
        "uid": a.id,
        "title": a.summary,
        "analytic": {"uid": a.rule, "name": a.rule, "type_id": 1, "type": "Rule"},
        "types": [a.category.as_str()],
        "created_time": ms(a.time),
        "product": {"name": "mcp-monitor", "vendor_name": "mcp-monitor", "version": env!("CARGO_PKG_VERSION")},
    });
    if !related.is_empty() {
        finding_info["related_events"] = json!(related);
    }
    if let (Some(first), Some(last)) = (a.first_seen, a.last_seen) {
        finding_info["first_seen_time"] = json!(ms(first));
        finding_info["last_seen_time"] = json!(ms(last));
    }
    let mut f = json!({
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": format!("{class_name}: {activity_name}"),
        "time": ms(a.time),
        "severity_id": severity_id,
        "severity": severity_name,
        "status_id": 1,
        "status": "New",
        "is_alert": true,
        "message": a.summary,
        "metadata": {
            "version": VERSION,
            "product": {"name": "mcp-monitor", "vendor_name": "mcp-monitor", "version": env!("CARGO_PKG_VERSION")},
            "log_name": "alerts",
        },
        "finding_info": finding_info,
        "device": {"hostname": *HOSTNAME, "type_id": 0, "type": "Unknown"},
        "unmapped": {"mcp": {
            "transport": a.transport,
            "session": &*a.session,
            "rule": a.rule,
            "category": a.category.as_str(),
            "server_name": a.server.name.as_deref(),
            "server_version": a.server.version.as_deref(),
            "client_name": a.client.name.as_deref(),
            "client_version": a.client.version.as_deref(),
        }},
    });
    if repeat {
        f["count"] = json!(a.count);
        if let (Some(first), Some(last)) = (a.first_seen, a.last_seen) {
            f["start_time"] = json!(ms(first));
            f["end_time"] = json!(ms(last));
        }
    }
    if let Some(client) = process(&a.client) {
        f["actor"] = json!({"process": client});
        if let Some(name) = &a.actor.agent {
            f["actor"]["app_name"] = json!(name);
        }
    }
    f["unmapped"]["mcp"]["actor"] = json!(a.actor.description);
    for (key, party) in [("server_workload", &a.server), ("client_workload", &a.client)] {
        if let Some(w) = &party.workload {
            f["unmapped"]["mcp"][key] = json!(w);
        }
    }
    // Detection findings carry evidence objects; data security findings
    // have none, so there the server and the evidence go under unmapped.
    let server = process(&a.server);
    if data_security {
        f["unmapped"]["mcp"]["evidence"] = a.evidence.clone();
        if let Some(s) = server {
            f["unmapped"]["mcp"]["server_process"] = s;
        }
    } else {
        let mut evidence = json!({"name": a.rule, "data": a.evidence});
        if let Some(s) = server {
            evidence["process"] = s;
        }
        f["evidences"] = json!([evidence]);
    }
    f["resources"] = json!([{
        "uid": &*a.session,
        "name": a.server.name.as_deref().unwrap_or("mcp-server"),
        "type": "MCP server",
    }]);
    if data_security {
        // Confidence of the strongest finding.
        let confidence = a.evidence["findings"]
            .as_array()
            .map(|fs| {
                fs.iter()
                    .map(|f| match f["confidence"].as_str() {
                        Some("high") => 3,
                        Some("medium") => 2,
                        Some("low") => 1,
                        _ => 0,
                    })
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        if confidence > 0 {
            f["confidence_id"] = json!(confidence);
            f["confidence"] = json!(["", "Low", "Medium", "High"][confidence]);
        }
        let patterns: Vec<&str> = a.evidence["findings"]
            .as_array()
            .map(|fs| fs.iter().filter_map(|f| f["rule"].as_str()).collect())
            .unwrap_or_default();
        let mut ds = json!({"detection_system_id": 1, "detection_system": "Endpoint"});
        if !patterns.is_empty() {
            let mut p = patterns.clone();
            p.sort_unstable();
            p.dedup();
            ds["detection_pattern"] = json!(p.join(","));
        }
        f["data_security"] = ds;
    }
    f
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, sync::Arc};

    use super::*;
    use crate::{deliver::testing, detect::alert::MessageRef, event::Flow, identity::ProcessInfo, jsonrpc::Id};

    fn schema() -> Value {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/ocsf/schema-1.8.0.json");
        serde_json::from_str(&std::fs::read_to_string(&p).expect("tests/ocsf/schema-1.8.0.json")).unwrap()
    }

    /// Checks `v` against the attributes of a class or object: every key is
    /// defined, types and enums match, required attributes are present.
    fn check(schema: &Value, attrs: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
        let obj = v.as_object().expect("an object");
        for (name, spec) in attrs.as_object().unwrap() {
            if spec["requirement"] == "required" && spec.get("profile").is_none() && !obj.contains_key(name) {
                errors.push(format!("{path}.{name}: required, missing"));
            }
        }
        for (k, val) in obj {
            let Some(spec) = attrs.get(k) else {
                errors.push(format!("{path}.{k}: not an attribute here"));
                continue;
            };
            let items: Vec<&Value> = if spec["is_array"] == true {
                match val.as_array() {
                    Some(a) => a.iter().collect(),
                    None => {
                        errors.push(format!("{path}.{k}: must be an array"));
                        continue;
                    }
                }
            } else {
                vec![val]
            };
            for item in items {
                let t = spec["type"].as_str().unwrap();
                let ok = match t {
                    "integer_t" | "long_t" | "timestamp_t" | "port_t" => item.is_i64() || item.is_u64(),
                    "float_t" => item.is_number(),
                    "boolean_t" => item.is_boolean(),
                    "json_t" => true,
                    "object_t" => {
                        let ot = spec["object_type"].as_str().unwrap();
                        if ot == "object" {
                            item.is_object()
                        } else {
                            let oattrs = &schema["objects"][ot]["attributes"];
                            assert!(oattrs.is_object(), "object {ot} missing from the extract");
                            if item.is_object() {
                                check(schema, oattrs, item, &format!("{path}.{k}"), errors);
                            }
                            item.is_object()
                        }
                    }
                    _ => item.is_string(),
                };
                if !ok {
                    errors.push(format!("{path}.{k}: {item} is not a {t}"));
                }
                if let Some(e) = spec.get("enum").and_then(Value::as_array) {
                    if !e.contains(item) {
                        errors.push(format!("{path}.{k}: {item} not in {e:?}"));
                    }
                }
            }
        }
    }

    fn full_alert(category: Category, count: u64) -> Alert {
        let mut a = testing::alert(1, Severity::Critical);
        a.category = category;
        a.count = count;
        if count > 1 {
            a.first_seen = Some(a.time - 5_000_000_000);
            a.last_seen = Some(a.time);
        }
        let info = |pid: u32, exe: &str| {
            Arc::new(ProcessInfo {
                pid,
                start_ns: 5_000_000_000,
                start_unix_ns: 1_795_000_000_000_000_000,
                exe: exe.into(),
                comm: "node".into(),
                cmdline: vec![exe.into(), "server.js".into()],
                uid: 1000,
                user: Some("dev".into()),
                container_id: Some("0123456789abcdef".into()),
                complete: true,
                ..Default::default()
            })
        };
        a.server = Party {
            process: Some(info(20, "/usr/bin/node")),
            name: Some("secure-filesystem-server".into()),
            version: Some("0.2.0".into()),
            ..Default::default()
        };
        a.client = Party {
            process: Some(info(10, "/usr/bin/python3")),
            name: Some("agent".into()),
            workload: Some(Arc::new(crate::identity::workload::WorkloadIdentity {
                kubernetes: Some(crate::identity::workload::KubernetesIdentity {
                    namespace: "team-a".into(),
                    pod: "coder-0".into(),
                    pod_uid: "7b4d6e7e-1f1c-4a0e-9a36-0c3c0b1f9d11".into(),
                    service_account: "coder".into(),
                    node: "node-1".into(),
                    workload: None,
                    container: Some("agent".into()),
                    image: Some("ghcr.io/x/agent:1".into()),
                    image_id: Some("ghcr.io/x/agent@sha256:0123".into()),
                    labels: Default::default(),
                }),
                spiffe_id: Some("spiffe://cluster.local/ns/team-a/sa/coder".into()),
            })),
            ..Default::default()
        };
        a.actor = crate::detect::alert::Actor::of(&a.client);
        a.messages = vec![MessageRef {
            session: a.session.clone(),
            direction: Flow::ServerToClient,
            kind: "response",
            method: Some("tools/call".into()),
            id: Some(Id::Int(2)),
            tool: Some("read_text_file".into()),
            time: a.time,
        }];
        a
    }

    #[test]
    fn findings_follow_the_schema() {
        let schema = schema();
        assert_eq!(schema["version"], VERSION);
        for (category, class, count) in [
            (Category::CredentialLeak, "data_security_finding", 1),
            (Category::CredentialLeak, "data_security_finding", 7),
            (Category::ToolChain, "detection_finding", 1),
            (Category::ToolIntegrity, "detection_finding", 3),
            (Category::PromptInjection, "detection_finding", 1),
            (Category::Protocol, "detection_finding", 1),
        ] {
            let f = finding(&full_alert(category, count));
            let c = &schema["classes"][class];
            assert_eq!(f["class_uid"], c["uid"]);
            let mut errors = Vec::new();
            check(&schema, &c["attributes"], &f, class, &mut errors);
            assert!(errors.is_empty(), "{class}: {errors:#?}\n{f:#}");
            assert_eq!(
                f["type_uid"].as_i64().unwrap(),
                f["class_uid"].as_i64().unwrap() * 100 + f["activity_id"].as_i64().unwrap()
            );
            let activities = c["activities"].as_object().unwrap();
            assert!(activities.contains_key(&f["activity_id"].to_string()));
        }
        // A party without identity still maps.
        let f = finding(&testing::alert(2, Severity::Low));
        let mut errors = Vec::new();
        check(
            &schema,
            &schema["classes"]["data_security_finding"]["attributes"],
            &f,
            "minimal",
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:#?}");
    }

    #[test]
    fn mapping_details() {
        let f = finding(&full_alert(Category::CredentialLeak, 7));
        assert_eq!(f["severity_id"], 5);
        assert_eq!(f["activity_id"], 2);
        assert_eq!(f["count"], 7);
        assert_eq!(f["finding_info"]["uid"], "alert-000001");
        assert_eq!(f["finding_info"]["analytic"]["uid"], "credential.exposure");
        assert_eq!(f["actor"]["process"]["pid"], 10);
        assert_eq!(f["actor"]["app_name"], "agent");
        let c = &f["actor"]["process"]["container"];
        assert_eq!(
            (c["name"].as_str(), c["image"]["name"].as_str()),
            (Some("agent"), Some("ghcr.io/x/agent:1"))
        );
        assert_eq!(c["pod_uuid"], "7b4d6e7e-1f1c-4a0e-9a36-0c3c0b1f9d11");
        assert_eq!(
            f["unmapped"]["mcp"]["actor"],
            "agent \"agent\" (pid 10, python3) acting as service account team-a/coder"
        );
        assert_eq!(
            f["unmapped"]["mcp"]["client_workload"]["kubernetes"]["namespace"],
            "team-a"
        );
        assert_eq!(f["unmapped"]["mcp"]["server_process"]["file"]["path"], "/usr/bin/node");
        let d = finding(&full_alert(Category::ToolChain, 1));
        assert_eq!(d["evidences"][0]["process"]["file"]["path"], "/usr/bin/node");
        assert_eq!(d["evidences"][0]["data"]["tool"], "read_text_file");
        assert_eq!(f["data_security"]["detection_pattern"], "github-pat-classic");
        assert_eq!(f["unmapped"]["mcp"]["server_name"], "secure-filesystem-server");
        assert_eq!(
            f["time"].as_i64().unwrap(),
            (full_alert(Category::CredentialLeak, 1).time / 1_000_000) as i64
        );
    }
}
