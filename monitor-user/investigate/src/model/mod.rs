//! What the agent's outputs say happened, folded into sessions, tools and
//! alerts: the one model both views draw.
//!
//! Input is the agent's JSON lines, events and alerts in any order, mixed
//! (stdout) or from two files. Every string kept passes through the
//! [`Scrubber`] first, so nothing the model holds, and so nothing a view
//! shows, carries a credential in clear, even when the lines were written
//! by an older agent or edited by hand. Everything it keeps is bounded
//! ([`Limits`]): `top` follows an agent for days.

use std::collections::{BTreeMap, HashMap, VecDeque};

use mcp_monitor_pipeline::detect::integrity::ToolRecord;
use serde_json::Value;

mod party;
mod records;
mod scrub;
#[cfg(test)]
mod tests;

pub use party::Party;
pub use records::{AlertView, Counts, Definition, Direction, Dropped, Message, MessageRef, Pinned, Session, ToolStats};
pub use scrub::Scrubber;

/// How much the model keeps. What falls off is counted
/// ([`Investigation::dropped`]).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Sessions kept; past this the least recently active one is forgotten.
    pub sessions: usize,
    /// Messages kept per session (the newest); the per-tool counts still
    /// count every call.
    pub messages_per_session: usize,
    /// Alerts kept (the newest).
    pub alerts: usize,
    /// Tool definitions kept per tool (distinct ones, the first and the newest).
    pub definitions_per_tool: usize,
    /// Keep messages' payloads (the report shows them; the live view does not).
    pub payloads: bool,
}

impl Limits {
    /// For a report: a file is finite, keep (nearly) all of it.
    pub const REPORT: Limits = Limits {
        sessions: 10_000,
        messages_per_session: 20_000,
        alerts: 50_000,
        definitions_per_tool: 8,
        payloads: true,
    };
    /// For a live view that may run for days.
    pub const LIVE: Limits = Limits {
        sessions: 2_000,
        messages_per_session: 200,
        alerts: 2_000,
        definitions_per_tool: 2,
        payloads: false,
    };
}

/// Alert severity, ordered: the detector's own type.
pub use mcp_monitor_pipeline::detect::alert::Severity;

/// Every severity, lowest first.
pub const SEVERITIES: [Severity; 5] = [
    Severity::Info,
    Severity::Low,
    Severity::Medium,
    Severity::High,
    Severity::Critical,
];

/// The severity an alert line names; an unknown word reads as `info`.
pub fn severity_of(s: &str) -> Severity {
    Severity::parse(s).unwrap_or(Severity::Info)
}

/// Server-and-tool pairs whose definitions are kept: a server that renames
/// its tools on every list must not grow the model without end.
pub const MAX_DEFINITIONS: usize = 20_000;

/// The model.
pub struct Investigation {
    limits: Limits,
    scrub: Scrubber,
    /// Sessions by key.
    pub sessions: HashMap<String, Session>,
    /// Alerts, oldest first (the newest [`Limits::alerts`]).
    pub alerts: VecDeque<AlertView>,
    /// Alerts removed from the front of [`Self::alerts`]: index `i` of an
    /// alert is `i - alerts_base` in the deque.
    alerts_base: usize,
    /// Server program ([`Party::program`]) → tool → distinct definitions,
    /// oldest first.
    pub definitions: BTreeMap<String, BTreeMap<String, Vec<Definition>>>,
    /// Tool definitions pinned in the state directory, when given.
    pub pinned: Option<Pinned>,
    /// What the input held.
    pub counts: Counts,
    /// What the limits dropped.
    pub dropped: Dropped,
    next_seq: u64,
    /// Message identity → seq, to link alerts to messages in any order.
    index: HashMap<String, (String, u64)>,
    /// Message identity → alerts citing a message not read yet.
    waiting_messages: HashMap<String, Vec<usize>>,
    /// Session key → alerts about a session not seen yet.
    waiting_sessions: HashMap<String, Vec<usize>>,
    /// Entries of both waiting maps.
    waiting: usize,
    definition_count: usize,
    link: bool,
}

fn id_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Unix ns of an RFC 3339 time, 0 when it does not parse.
pub fn parse_time(s: &str) -> i128 {
    humantime::parse_rfc3339(s)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128)
}

fn link_key(session: &str, direction: Direction, kind: &str, id: Option<&str>, time: &str) -> String {
    format!("{session}|{}|{kind}|{}|{time}", direction.as_str(), id.unwrap_or("-"))
}

impl Investigation {
    /// An empty model. `link`: remember the identity of every message held
    /// so alerts can point at it (the report's links, the live view's ▲
    /// marks); the index shrinks as messages and sessions fall off.
    pub fn new(limits: Limits, link: bool) -> Investigation {
        Investigation {
            limits,
            scrub: Scrubber::default(),
            sessions: HashMap::new(),
            alerts: VecDeque::new(),
            alerts_base: 0,
            definitions: BTreeMap::new(),
            pinned: None,
            counts: Counts::default(),
            dropped: Dropped::default(),
            next_seq: 0,
            index: HashMap::new(),
            waiting_messages: HashMap::new(),
            waiting_sessions: HashMap::new(),
            waiting: 0,
            definition_count: 0,
            link,
        }
    }

    /// The scrubber every kept string went through.
    pub fn scrubber(&self) -> &Scrubber {
        &self.scrub
    }

    /// An alert by the index sessions and messages keep, if still held.
    pub fn alert(&self, index: usize) -> Option<&AlertView> {
        index.checked_sub(self.alerts_base).and_then(|i| self.alerts.get(i))
    }

    /// Index of the first alert held in [`Self::alerts`].
    pub fn alerts_base(&self) -> usize {
        self.alerts_base
    }

    /// Reads one line of the agent's output. Blank lines are skipped; other
    /// lines that are neither an event nor an alert are counted.
    pub fn ingest_line(&mut self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        self.counts.lines += 1;
        match serde_json::from_str::<Value>(line) {
            Ok(v) => self.ingest(v),
            Err(_) => self.counts.unreadable += 1,
        }
    }

    /// Reads one parsed event or alert.
    pub fn ingest(&mut self, v: Value) {
        if v.get("rule").is_some() && v.get("severity").is_some() {
            self.counts.alerts += 1;
            self.add_alert(v);
        } else if v.get("session").is_some_and(Value::is_string) && v.get("direction").is_some() {
            self.counts.events += 1;
            self.add_event(v);
        } else {
            self.counts.unreadable += 1;
        }
    }

    fn add_event(&mut self, v: Value) {
        let s = |k: &str| v.get(k).and_then(Value::as_str);
        let key = s("session").unwrap_or_default().to_owned();
        let seq = self.next_seq;
        self.next_seq += 1;
        let time = s("time").unwrap_or("").to_owned();
        let ns = parse_time(&time);
        let direction = Direction::parse(s("direction").unwrap_or(""));
        let kind = s("type").unwrap_or("message").to_owned();
        let method = s("method").map(|m| self.scrub.name(m));
        let (tool, stat_kind) = match (s("tool"), s("prompt"), s("resource")) {
            (Some(t), _, _) => (Some(self.scrub.name(t)), "tool"),
            (None, Some(p), _) => (Some(self.scrub.name(p)), "prompt"),
            (None, None, Some(r)) => (Some(self.scrub.name(r)), "resource"),
            _ => (None, "method"),
        };
        let bytes = v.get("bytes").and_then(Value::as_u64).unwrap_or(0);
        let latency_ms = v.get("latency_ms").and_then(Value::as_f64);
        let error_code = v.get("error_code").and_then(Value::as_i64);
        let id = id_text(v.get("id")).map(|i| self.scrub.name(&i));
        let is_error = kind == "error"
            || v.pointer("/payload/result/isError")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        let payload = if self.limits.payloads {
            v.get("payload").cloned().map(|p| self.scrub.json(p))
        } else {
            None
        };

        if !self.sessions.contains_key(&key) {
            if self.sessions.len() >= self.limits.sessions {
                self.evict_session();
            }
            let http = v.get("http");
            let remote = http.and_then(|h| h.get("remote")).and_then(Value::as_str);
            let local = http.and_then(|h| h.get("local")).and_then(Value::as_str);
            // Over HTTP one end may be across the network: seen from the
            // server, the remote address is the client's; from the
            // client, the server's.
            let (client_remote, server_remote) = if v.get("server").is_some_and(Value::is_object) {
                (remote, local)
            } else {
                (local, remote)
            };
            let session = Session {
                key: key.clone(),
                transport: self.scrub.name(s("transport").unwrap_or("?")),
                protocol_version: None,
                client: Party::from_json(v.get("client"), client_remote, &self.scrub),
                server: Party::from_json(v.get("server"), server_remote, &self.scrub),
                first: time.clone(),
                last: time.clone(),
                first_ns: ns,
                last_ns: ns,
                last_seq: seq,
                messages: VecDeque::new(),
                messages_dropped: 0,
                message_count: 0,
                requests: 0,
                errors: 0,
                bytes_to_server: 0,
                bytes_to_client: 0,
                tools: BTreeMap::new(),
                alerts: Vec::new(),
                worst: None,
            };
            self.sessions.insert(key.clone(), session);
        }
        let scrub = &self.scrub;
        let session = self.sessions.get_mut(&key).expect("inserted above");
        // Names arrive with `initialize`; later events carry them.
        if session.client.name.is_none() && v.get("client").and_then(|c| c.get("name")).is_some() {
            let remote = session.client.remote.clone();
            session.client = Party::from_json(v.get("client"), remote.as_deref(), scrub);
        }
        if session.server.name.is_none() && v.get("server").and_then(|c| c.get("name")).is_some() {
            let remote = session.server.remote.clone();
            session.server = Party::from_json(v.get("server"), remote.as_deref(), scrub);
        }
        if let Some(pv) = s("protocol_version") {
            session.protocol_version = Some(scrub.name(pv));
        }
        session.last = time.clone();
        session.last_ns = session.last_ns.max(ns);
        session.last_seq = seq;
        session.message_count += 1;
        match direction {
            Direction::ClientToServer => session.bytes_to_server += bytes,
            Direction::ServerToClient => session.bytes_to_client += bytes,
        }
        let stat_key = tool.clone().or_else(|| method.clone());
        if kind == "request" {
            session.requests += 1;
        }
        if is_error {
            session.errors += 1;
        }
        if let Some(k) = stat_key.filter(|_| kind != "notification") {
            let st = session.tools.entry(k).or_default();
            st.kind = stat_kind;
            st.bytes += bytes;
            if kind == "request" {
                st.calls += 1;
            }
            if is_error {
                st.errors += 1;
            }
            if let Some(l) = latency_ms {
                st.answered += 1;
                st.latency_sum_ms += l;
                st.latency_max_ms = st.latency_max_ms.max(l);
            }
        }
        if self.link {
            self.index.insert(
                link_key(&key, direction, &kind, id.as_deref(), &time),
                (key.clone(), seq),
            );
        }
        // Tool definitions of `tools/list` results.
        let server_label = session.server.program();
        if method.as_deref() == Some("tools/list") && direction == Direction::ServerToClient {
            if let Some(tools) = payload
                .as_ref()
                .and_then(|p| p.pointer("/result/tools"))
                .and_then(Value::as_array)
            {
                let per_server = self.definitions.entry(server_label).or_default();
                for t in tools {
                    let Some(name) = t.get("name").and_then(Value::as_str) else {
                        continue;
                    };
                    let record = ToolRecord::of(t, 0);
                    if !per_server.contains_key(name) && self.definition_count >= MAX_DEFINITIONS {
                        self.dropped.definitions += 1;
                        continue;
                    }
                    let list = per_server.entry(name.to_owned()).or_default();
                    if list.last().is_some_and(|d| d.hash == record.hash) {
                        continue;
                    }
                    if list.len() >= self.limits.definitions_per_tool.max(2) {
                        // Keep the first (the baseline) and the newest.
                        list.remove(1);
                    }
                    if list.is_empty() {
                        self.definition_count += 1;
                    }
                    list.push(Definition {
                        session: key.clone(),
                        hash: record.hash,
                        description: t.get("description").and_then(Value::as_str).unwrap_or("").to_owned(),
                        params: record.params,
                        time: time.clone(),
                        seq,
                    });
                }
            }
        }
        let session = self.sessions.get_mut(&key).expect("inserted above");
        if session.messages.len() >= self.limits.messages_per_session {
            if let Some(old) = session.messages.pop_front() {
                if self.link {
                    self.index
                        .remove(&link_key(&key, old.direction, &old.kind, old.id.as_deref(), &old.time));
                }
            }
            session.messages_dropped += 1;
        }
        let mut msg = Message {
            seq,
            time,
            ns,
            direction,
            kind,
            method,
            id,
            tool,
            bytes,
            latency_ms,
            error_code,
            payload,
            alerts: Vec::new(),
        };
        // Alerts that arrived before the session or message they cite
        // (mixed output can put an alert first).
        if let Some(waiting) = self.waiting_sessions.remove(&key) {
            self.waiting -= waiting.len();
            for i in waiting {
                if let Some(a) = i.checked_sub(self.alerts_base).and_then(|j| self.alerts.get(j)) {
                    if !session.alerts.contains(&i) {
                        session.alerts.push(i);
                        session.worst = session.worst.max(Some(a.severity));
                    }
                }
            }
        }
        if self.link {
            let k = link_key(&key, msg.direction, &msg.kind, msg.id.as_deref(), &msg.time);
            let waiting = self.waiting_messages.remove(&k).unwrap_or_default();
            self.waiting -= waiting.len();
            for i in waiting {
                let Some(a) = i.checked_sub(self.alerts_base).and_then(|j| self.alerts.get_mut(j)) else {
                    continue;
                };
                for r in a.messages.iter_mut().filter(|r| r.seq.is_none()) {
                    if link_key(&r.session, r.direction, &r.kind, r.id.as_deref(), &r.time) == k {
                        r.seq = Some(seq);
                    }
                }
                msg.alerts.push(i);
            }
        }
        session.messages.push_back(msg);
    }

    fn evict_session(&mut self) {
        if let Some(oldest) = self.sessions.values().min_by_key(|s| s.last_seq).map(|s| s.key.clone()) {
            if let Some(gone) = self.sessions.remove(&oldest) {
                if self.link {
                    for m in &gone.messages {
                        self.index
                            .remove(&link_key(&oldest, m.direction, &m.kind, m.id.as_deref(), &m.time));
                    }
                }
            }
            self.dropped.sessions += 1;
        }
    }

    fn add_alert(&mut self, v: Value) {
        let s = |k: &str| v.get(k).and_then(Value::as_str);
        let time = s("time").unwrap_or("").to_owned();
        let severity = severity_of(s("severity").unwrap_or(""));
        let messages: Vec<MessageRef> = v
            .get("messages")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|m| {
                        let ms = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
                        MessageRef {
                            session: ms("session").unwrap_or_default(),
                            direction: Direction::parse(m.get("direction").and_then(Value::as_str).unwrap_or("")),
                            kind: ms("type").unwrap_or_default(),
                            method: ms("method").map(|x| self.scrub.name(&x)),
                            id: id_text(m.get("id")).map(|i| self.scrub.name(&i)),
                            tool: ms("tool").map(|t| self.scrub.name(&t)),
                            time: ms("time").unwrap_or_default(),
                            seq: None,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut alert = AlertView {
            id: s("id").unwrap_or("").to_owned(),
            ns: parse_time(&time),
            time,
            rule: s("rule").unwrap_or("").to_owned(),
            category: s("category").unwrap_or("").to_owned(),
            severity,
            summary: self.scrub.text(s("summary").unwrap_or("")),
            session: s("session").map(str::to_owned),
            actor: v
                .pointer("/actor/description")
                .and_then(Value::as_str)
                .map(|d| self.scrub.text(d)),
            evidence: self.scrub.json(v.get("evidence").cloned().unwrap_or(Value::Null)),
            messages,
            count: v.get("count").and_then(Value::as_u64).unwrap_or(1),
        };
        if self.alerts.len() >= self.limits.alerts {
            self.alerts.pop_front();
            self.alerts_base += 1;
            self.dropped.alerts += 1;
        }
        let index = self.alerts_base + self.alerts.len();
        if self.link {
            for r in &mut alert.messages {
                let k = link_key(&r.session, r.direction, &r.kind, r.id.as_deref(), &r.time);
                if let Some((session, seq)) = self.index.get(&k) {
                    r.seq = Some(*seq);
                    if !self.sessions.contains_key(session) {
                        continue;
                    }
                    if let Some(m) = self
                        .sessions
                        .get_mut(session)
                        .and_then(|s| s.messages.iter_mut().rev().find(|m| m.seq == *seq))
                    {
                        m.alerts.push(index);
                    }
                } else {
                    self.waiting_messages.entry(k).or_default().push(index);
                    self.waiting += 1;
                }
            }
        }
        let mut sessions: Vec<&str> = alert.messages.iter().map(|m| m.session.as_str()).collect();
        if let Some(s) = &alert.session {
            sessions.push(s);
        }
        sessions.sort_unstable();
        sessions.dedup();
        for key in sessions {
            if let Some(s) = self.sessions.get_mut(key) {
                let base = self.alerts_base;
                s.alerts.retain(|&i| i >= base);
                s.alerts.push(index);
                s.worst = s.worst.max(Some(severity));
            } else {
                self.waiting_sessions.entry(key.to_owned()).or_default().push(index);
                self.waiting += 1;
            }
        }
        self.alerts.push_back(alert);
        self.trim_waiting();
    }

    /// Keeps the waiting maps within [`Limits::alerts`] entries: first
    /// entries of alerts no longer held, then, if still over, all of them
    /// (counted in [`Dropped::links`]).
    fn trim_waiting(&mut self) {
        if self.waiting <= self.limits.alerts {
            return;
        }
        let base = self.alerts_base;
        let mut kept = 0;
        for map in [&mut self.waiting_messages, &mut self.waiting_sessions] {
            map.retain(|_, v| {
                v.retain(|&i| i >= base);
                kept += v.len();
                !v.is_empty()
            });
        }
        self.dropped.links += (self.waiting - kept) as u64;
        self.waiting = kept;
        if self.waiting > self.limits.alerts {
            self.dropped.links += self.waiting as u64;
            self.waiting_messages.clear();
            self.waiting_sessions.clear();
            self.waiting = 0;
        }
    }

    /// Sessions, most recently active first.
    pub fn sessions_by_activity(&self) -> Vec<&Session> {
        let mut v: Vec<&Session> = self.sessions.values().collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.last_seq));
        v
    }

    /// Sessions, first seen first (the report's order).
    pub fn sessions_in_order(&self) -> Vec<&Session> {
        let mut v: Vec<&Session> = self.sessions.values().collect();
        v.sort_by(|a, b| (a.first_ns, &a.key).cmp(&(b.first_ns, &b.key)));
        v
    }

    /// The session and message an alert's reference points at.
    pub fn message(&self, r: &MessageRef) -> Option<(&Session, &Message)> {
        let seq = r.seq?;
        let s = self.sessions.get(&r.session)?;
        let m = s.messages.iter().find(|m| m.seq == seq)?;
        Some((s, m))
    }

    /// Number of alerts held at or above `min`.
    pub fn alert_count(&self, min: Severity) -> usize {
        self.alerts.iter().filter(|a| a.severity >= min).count()
    }
}
