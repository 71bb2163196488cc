//! Alerts: what a detector found, ready for a SIEM.
//!
//! Field names are part of the output contract (README, "Alerts"). Evidence
//! is redacted by construction: detectors only put findings (which hold no
//! secret), names, counts and short redacted excerpts in it.

use std::{collections::HashMap, sync::Arc};

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::{
    event::{Flow, Party, Transport},
    jsonrpc::Id,
};

/// Alert families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// A credential in the traffic or in a tool definition (`credential.*` rules).
    CredentialLeak,
    /// Tool calls whose labels form a risky chain, e.g. private data then an external sink (`tool_chain.*`).
    ToolChain,
    /// Tool definitions that changed, appeared, are poisoned, shadow or name other servers' tools
    /// (`tool_integrity.*`).
    ToolIntegrity,
    /// Injection phrases in a tool result, resource or prompt (`prompt_injection.*`).
    PromptInjection,
    /// The protocol itself is misused (headers that disagree with the body).
    Protocol,
}

impl Category {
    /// The `category` value in alerts (snake_case), also used as a metrics label and by the sinks.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::CredentialLeak => "credential_leak",
            Category::ToolChain => "tool_chain",
            Category::ToolIntegrity => "tool_integrity",
            Category::PromptInjection => "prompt_injection",
            Category::Protocol => "protocol",
        }
    }
}

/// How urgent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Informational only: no built-in rule raises it; a `[severity]` override of the rules file can.
    Info,
    /// Worth a look, e.g. `tool_integrity.tool_added`, weak prompt injection.
    Low,
    /// Suspicious, e.g. `credential.in_arguments`, same-name shadowing.
    Medium,
    /// Likely harmful, e.g. `credential.exposure`, `tool_integrity.rug_pull`, chaining rules.
    High,
    /// Most urgent, e.g. `credential.exfiltration`, `credential.relay`, the lethal trifecta.
    Critical,
}

impl Severity {
    /// The `severity` value in alerts and configuration (lowercase), also a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses a configuration value.
    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s {
            "info" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

/// A message an alert refers to.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MessageRef {
    /// Session key of the message (as in events).
    pub session: Arc<str>,
    /// Which way the message went: `client_to_server` or `server_to_client`.
    pub direction: Flow,
    /// JSON-RPC message type, serialized as `type`: request, notification, response or error.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The method; for responses, the method of the paired request.
    pub method: Option<String>,
    /// JSON-RPC id, when the message has one.
    pub id: Option<Id>,
    /// `tools/call` tool name, on the request and its response.
    pub tool: Option<String>,
    /// Wall-clock time the message was read, Unix ns; serialized as RFC 3339.
    #[serde(serialize_with = "ser_time")]
    pub time: i128,
}

/// The agent behind a finding: what it announced (`clientInfo`) and the
/// account it runs under, with a one-line description such as `agent
/// "claude-code" 1.0.3 (pid 4242, node) acting as service account
/// team-a/coder`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Actor {
    /// `clientInfo.name` (announced by the client; not proof of identity).
    pub agent: Option<String>,
    /// `clientInfo.version` (announced by the client).
    pub agent_version: Option<String>,
    /// Pid of the client process.
    pub pid: Option<u32>,
    /// Path of the client's executable (`/proc/<pid>/exe`).
    pub exe: Option<String>,
    /// Uid of the client process; only when its `/proc` entry could be read.
    pub uid: Option<u32>,
    /// Name of that uid in the host's `/etc/passwd`, when known.
    pub user: Option<String>,
    /// `namespace/service-account` of the client's pod.
    pub service_account: Option<String>,
    /// SPIFFE ID of the client's workload, when known.
    pub spiffe_id: Option<String>,
    /// One line for humans: which agent (pid, executable) acting as which account.
    pub description: String,
}

/// Announced names come from the traffic: no control characters, bounded.
fn announced(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(128)
        .collect();
    clean.trim().to_owned()
}

impl Actor {
    /// The actor of a session: its client.
    pub fn of(client: &Party) -> Actor {
        let p = client.process.as_deref();
        let w = client.workload.as_deref();
        let mut a = Actor {
            agent: client.name.as_deref().map(announced).filter(|s| !s.is_empty()),
            agent_version: client.version.as_deref().map(announced).filter(|s| !s.is_empty()),
            pid: p.map(|p| p.pid).or(client.pid),
            exe: p.map(|p| p.exe.clone()).filter(|e| !e.is_empty()),
            uid: p.filter(|p| p.complete).map(|p| p.uid),
            user: p.and_then(|p| p.user.clone()),
            service_account: w.and_then(|w| w.service_account()),
            spiffe_id: w.and_then(|w| w.spiffe_id.clone()),
            description: String::new(),
        };
        let mut d = match (&a.agent, &a.agent_version) {
            (Some(n), Some(v)) => format!("agent {n:?} {v}"),
            (Some(n), None) => format!("agent {n:?}"),
            _ => "an unnamed MCP client".to_owned(),
        };
        let exe_name = a.exe.as_deref().map(|e| e.rsplit('/').next().unwrap_or(e));
        match (a.pid, exe_name) {
            (Some(pid), Some(e)) => d.push_str(&format!(" (pid {pid}, {e})")),
            (Some(pid), None) => d.push_str(&format!(" (pid {pid})")),
            _ => {}
        }
        let user = match (&a.user, a.uid) {
            (Some(u), Some(uid)) => Some(format!("user {u} (uid {uid})")),
            (None, Some(uid)) => Some(format!("uid {uid}")),
            _ => None,
        };
        match (&a.service_account, &a.spiffe_id, user) {
            (Some(sa), _, _) => d.push_str(&format!(" acting as service account {sa}")),
            (None, Some(id), Some(u)) => d.push_str(&format!(" acting as {id}, {u}")),
            (None, Some(id), None) => d.push_str(&format!(" acting as {id}")),
            (None, None, Some(u)) => d.push_str(&format!(" acting as {u}")),
            (None, None, None) => {}
        }
        a.description = d;
        a
    }
}

/// One alert.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    /// Stable id: the same finding in a replay has the same id.
    pub id: String,
    /// Time of the message that completed the finding (a repeat summary: of the last repeat), Unix ns;
    /// serialized as RFC 3339.
    #[serde(serialize_with = "ser_time")]
    pub time: i128,
    /// Rule id, e.g. `credential.exposure`, `tool_chain.exfiltration`.
    pub rule: String,
    /// Alert family of the rule.
    pub category: Category,
    /// Rule's severity, after any `[severity]` override of the rules file.
    pub severity: Severity,
    /// One line for humans (repeat summaries add how many more times and in how many sessions).
    pub summary: String,
    /// Transport of the session, as in events.
    pub transport: Transport,
    /// Session key of the message that completed the finding, as in events.
    pub session: Arc<str>,
    /// The MCP server of the session, as in events.
    pub server: Party,
    /// The MCP client of the session, as in events.
    pub client: Party,
    /// Who acted: the client (normally the AI agent) and the identity it
    /// runs under.
    pub actor: Actor,
    /// Redacted details, rule-specific.
    pub evidence: Value,
    /// The messages that make up the finding, oldest first.
    pub messages: Vec<MessageRef>,
    /// Times this alert fired: 1, or more for a repeat summary.
    pub count: u64,
    /// Repeat summaries: when the first and last repeats happened.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt_time")]
    pub first_seen: Option<i128>,
    /// Repeat summaries: when the last repeat happened.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt_time")]
    pub last_seen: Option<i128>,
    /// Repeat summaries: the repeats by session, each with its count and
    /// its first and last message, so every message a summary stands for
    /// can be found (at most [`MAX_REPEAT_SESSIONS`] sessions; the rest are
    /// counted in `repeats_in_other_sessions`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repeats: Vec<RepeatGroup>,
    /// Repeat summaries: repeats in sessions past the first [`MAX_REPEAT_SESSIONS`]
    /// listed in `repeats`.
    #[serde(skip_serializing_if = "is_zero")]
    pub repeats_in_other_sessions: u64,
    /// Key that makes two alerts "the same" for deduplication.
    #[serde(skip)]
    pub dedup_key: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Sessions listed in one repeat summary.
pub const MAX_REPEAT_SESSIONS: usize = 64;

/// The repeats of a deduplicated alert in one session.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RepeatGroup {
    /// The session the repeats happened in.
    pub session: Arc<str>,
    /// Number of repeats in this session.
    pub count: u64,
    /// The message of the first and of the last repeat in this session
    /// (the same one when it repeated once).
    pub first: Option<MessageRef>,
    /// The message of the last repeat in this session.
    pub last: Option<MessageRef>,
}

fn ser_time<S: Serializer>(t: &i128, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    let n = crate::clock::rfc3339_into(*t, &mut buf);
    s.serialize_str(std::str::from_utf8(&buf[..n]).unwrap_or(""))
}

fn ser_opt_time<S: Serializer>(t: &Option<i128>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ser_time(t, s),
        None => s.serialize_none(),
    }
}

/// Stable alert id from the parts that identify it.
pub fn alert_id(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    d[..12].iter().map(|b| format!("{b:02x}")).collect()
}

struct Window {
    opened: i128,
    repeats: u64,
    last: i128,
    template: Alert,
    groups: Vec<RepeatGroup>,
    other_sessions: u64,
}

impl Window {
    /// Counts a repeat under its session, keeping its message.
    fn repeat(&mut self, alert: &Alert) {
        self.repeats += 1;
        self.last = alert.time;
        // The message that made this alert fire: the last one it names.
        let msg = alert.messages.last().cloned();
        if let Some(g) = self.groups.iter_mut().find(|g| g.session == alert.session) {
            g.count += 1;
            g.last = msg;
        } else if self.groups.len() < MAX_REPEAT_SESSIONS {
            self.groups.push(RepeatGroup {
                session: alert.session.clone(),
                count: 1,
                first: msg.clone(),
                last: msg,
            });
        } else {
            self.other_sessions += 1;
        }
    }
}

/// Deduplication: the first alert of a kind goes out at once; repeats within
/// the window are counted and reported as one summary alert when the window
/// closes. Nothing is dropped silently.
pub struct Dedup {
    window_ns: i128,
    open: HashMap<String, Window>,
    max_open: usize,
}

impl Dedup {
    /// A deduplicator with a window of `window_ns` nanoseconds, keeping at most `max_open` (at least 1)
    /// windows open at once (the oldest is closed, without a summary, to make room).
    pub fn new(window_ns: i128, max_open: usize) -> Self {
        Self {
            window_ns,
            open: HashMap::new(),
            max_open: max_open.max(1),
        }
    }

    /// Returns the alert if it should go out now; a repeat returns `None`
    /// and is counted.
    pub fn admit(&mut self, alert: Alert) -> Option<Alert> {
        if let Some(w) = self.open.get_mut(&alert.dedup_key) {
            if alert.time - w.opened < self.window_ns {
                w.repeat(&alert);
                return None;
            }
        }
        if self.open.len() >= self.max_open {
            // Too many distinct alerts in flight: stop deduplicating the
            // oldest ones (they are not repeats of anything new).
            if let Some(oldest) = self.open.iter().min_by_key(|(_, w)| w.opened).map(|(k, _)| k.clone()) {
                self.open.remove(&oldest);
            }
        }
        self.open.insert(
            alert.dedup_key.clone(),
            Window {
                opened: alert.time,
                repeats: 0,
                last: alert.time,
                template: alert.clone(),
                groups: Vec::new(),
                other_sessions: 0,
            },
        );
        Some(alert)
    }

    /// Closes windows older than `now`; returns one summary per window that
    /// saw repeats.
    pub fn expire(&mut self, now: i128) -> Vec<Alert> {
        let window = self.window_ns;
        let mut out = Vec::new();
        self.open.retain(|_, w| {
            if now - w.opened < window {
                return true;
            }
            if w.repeats > 0 {
                out.push(summary(w));
            }
            false
        });
        out.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
        out
    }

    /// Closes every window (end of a replay or shutdown).
    pub fn flush(&mut self) -> Vec<Alert> {
        self.expire(i128::MAX)
    }
}

fn summary(w: &Window) -> Alert {
    let mut a = w.template.clone();
    a.id = alert_id(&[&w.template.id, "repeats", &w.repeats.to_string()]);
    a.time = w.last;
    a.count = w.repeats;
    a.first_seen = Some(w.opened);
    a.last_seen = Some(w.last);
    a.repeats = w.groups.clone();
    a.repeats_in_other_sessions = w.other_sessions;
    let sessions = w.groups.len() as u64 + u64::from(w.other_sessions > 0);
    a.summary = format!(
        "{} (repeated {} more times{})",
        w.template.summary,
        w.repeats,
        if sessions > 1 {
            format!(" in {sessions} sessions")
        } else {
            String::new()
        }
    );
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actor_says_which_agent_acts_as_whom() {
        use crate::identity::{
            workload::{KubernetesIdentity, WorkloadIdentity},
            ProcessInfo,
        };
        let process = Arc::new(ProcessInfo {
            pid: 4242,
            exe: "/usr/bin/node".into(),
            uid: 1000,
            user: Some("alice".into()),
            complete: true,
            ..Default::default()
        });
        let mut client = Party {
            process: Some(process),
            name: Some("claude-code\u{1b}[31m".into()),
            version: Some("1.0.3".into()),
            ..Default::default()
        };
        let a = Actor::of(&client);
        assert_eq!(
            a.description,
            "agent \"claude-code [31m\" 1.0.3 (pid 4242, node) acting as user alice (uid 1000)"
        );
        assert_eq!((a.uid, a.user.as_deref()), (Some(1000), Some("alice")));
        client.workload = Some(Arc::new(WorkloadIdentity {
            kubernetes: Some(KubernetesIdentity {
                namespace: "team-a".into(),
                pod: "coder-0".into(),
                pod_uid: "u".into(),
                service_account: "coder".into(),
                node: "n".into(),
                workload: None,
                container: None,
                image: None,
                image_id: None,
                labels: Default::default(),
            }),
            spiffe_id: Some("spiffe://cluster.local/ns/team-a/sa/coder".into()),
        }));
        client.name = Some("claude-code".into());
        let a = Actor::of(&client);
        assert_eq!(
            a.description,
            "agent \"claude-code\" 1.0.3 (pid 4242, node) acting as service account team-a/coder"
        );
        assert_eq!(
            a.spiffe_id.as_deref(),
            Some("spiffe://cluster.local/ns/team-a/sa/coder")
        );
        let anonymous = Actor::of(&Party {
            pid: Some(7),
            ..Default::default()
        });
        assert_eq!(anonymous.description, "an unnamed MCP client (pid 7)");
    }

    fn alert(t: i128, key: &str) -> Alert {
        Alert {
            id: alert_id(&[key, &t.to_string()]),
            time: t,
            rule: "r".into(),
            category: Category::CredentialLeak,
            severity: Severity::High,
            summary: "s".into(),
            transport: Transport::Stdio,
            session: "x".into(),
            server: Party::default(),
            client: Party::default(),
            actor: Actor::default(),
            evidence: json!({}),
            messages: vec![],
            count: 1,
            first_seen: None,
            last_seen: None,
            repeats: vec![],
            repeats_in_other_sessions: 0,
            dedup_key: key.into(),
        }
    }

    fn in_session(mut a: Alert, session: &str, id: i64) -> Alert {
        a.session = session.into();
        a.messages = vec![MessageRef {
            session: session.into(),
            direction: Flow::ServerToClient,
            kind: "response",
            method: Some("tools/call".into()),
            id: Some(Id::Int(id)),
            tool: Some("git_log".into()),
            time: a.time,
        }];
        a
    }

    #[test]
    fn a_summary_leads_to_every_message_it_stands_for() {
        let mut d = Dedup::new(1000, 16);
        assert!(d.admit(in_session(alert(0, "k"), "s1", 1)).is_some());
        for (t, session, id) in [
            (10, "s1", 2),
            (20, "s2", 7),
            (30, "s1", 3),
            (40, "s2", 9),
            (50, "s3", 4),
        ] {
            assert!(d.admit(in_session(alert(t, "k"), session, id)).is_none());
        }
        let s = d.flush();
        assert_eq!(s.len(), 1);
        let s = &s[0];
        assert_eq!(s.count, 5);
        assert!(s.summary.contains("5 more times in 3 sessions"), "{}", s.summary);
        let groups: Vec<(&str, u64, Option<&Id>, Option<&Id>)> = s
            .repeats
            .iter()
            .map(|g| {
                (
                    &*g.session,
                    g.count,
                    g.first.as_ref().and_then(|m| m.id.as_ref()),
                    g.last.as_ref().and_then(|m| m.id.as_ref()),
                )
            })
            .collect();
        assert_eq!(
            groups,
            vec![
                ("s1", 2, Some(&Id::Int(2)), Some(&Id::Int(3))),
                ("s2", 2, Some(&Id::Int(7)), Some(&Id::Int(9))),
                ("s3", 1, Some(&Id::Int(4)), Some(&Id::Int(4))),
            ]
        );
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(json["repeats"][1]["last"]["id"], 9);
        assert!(json.get("repeats_in_other_sessions").is_none());

        // Past the cap, sessions are counted, not listed.
        let mut d = Dedup::new(1000, 16);
        d.admit(in_session(alert(0, "k"), "s0", 0));
        for i in 0..(MAX_REPEAT_SESSIONS as i64 + 5) {
            d.admit(in_session(alert(1 + i as i128, "k"), &format!("t{i}"), i));
        }
        let s = d.flush();
        assert_eq!(s[0].repeats.len(), MAX_REPEAT_SESSIONS);
        assert_eq!(s[0].repeats_in_other_sessions, 5);
    }

    #[test]
    fn repeats_are_counted_and_summarised() {
        let mut d = Dedup::new(100, 16);
        assert!(d.admit(alert(0, "a")).is_some());
        assert!(d.admit(alert(10, "a")).is_none());
        assert!(d.admit(alert(20, "a")).is_none());
        assert!(d.admit(alert(15, "b")).is_some());
        assert!(d.expire(50).is_empty());
        let s = d.expire(120);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].count, s[0].first_seen, s[0].last_seen), (2, Some(0), Some(20)));
        // "b" had no repeats: its window closes quietly.
        assert!(d.flush().is_empty());
        // After the window, the same alert goes out again.
        assert!(d.admit(alert(300, "a")).is_some());
    }

    #[test]
    fn ids_are_stable() {
        assert_eq!(alert_id(&["a", "b"]), alert_id(&["a", "b"]));
        assert_ne!(alert_id(&["ab", ""]), alert_id(&["a", "b"]));
    }
}
