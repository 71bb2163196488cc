//! What the model holds: messages, sessions, per-tool figures, alerts,
//! tool definitions, and the counts of what was read and dropped.

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;

use super::{Party, Scrubber, Severity};

/// Which way a message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    ClientToServer,
    /// Server to client.
    ServerToClient,
}

impl Direction {
    pub(super) fn parse(s: &str) -> Direction {
        if s == "server_to_client" {
            Direction::ServerToClient
        } else {
            Direction::ClientToServer
        }
    }
    /// The word the agent writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToServer => "client_to_server",
            Direction::ServerToClient => "server_to_client",
        }
    }
    /// An arrow from the client's point of view.
    pub fn arrow(self) -> &'static str {
        match self {
            Direction::ClientToServer => "→",
            Direction::ServerToClient => "←",
        }
    }
}

/// One message of a session.
#[derive(Clone, Debug)]
pub struct Message {
    /// Order of arrival in the input, from 0: the anchor links use.
    pub seq: u64,
    /// RFC 3339 time as the event writes it.
    pub time: String,
    /// Unix nanoseconds (0 when the time did not parse).
    pub ns: i128,
    /// Direction.
    pub direction: Direction,
    /// `request`, `response`, `notification` or `error`.
    pub kind: String,
    /// JSON-RPC method.
    pub method: Option<String>,
    /// JSON-RPC id, as text.
    pub id: Option<String>,
    /// Tool (or prompt, or resource) the message is about.
    pub tool: Option<String>,
    /// Size on the wire.
    pub bytes: u64,
    /// Responses: time since the request.
    pub latency_ms: Option<f64>,
    /// Error responses: the code.
    pub error_code: Option<i64>,
    /// The message, when the agent ran with `--payloads` (scrubbed).
    pub payload: Option<Value>,
    /// Indexes into [`Investigation::alerts`] of the alerts that cite it.
    pub alerts: Vec<usize>,
}

/// Calls of one tool in one session.
#[derive(Clone, Debug, Default)]
pub struct ToolStats {
    /// `tool`, `prompt`, `resource`, or `method` for other requests.
    pub kind: &'static str,
    /// Requests.
    pub calls: u64,
    /// Error responses (JSON-RPC errors and results with `isError`).
    pub errors: u64,
    /// Responses with a latency.
    pub answered: u64,
    /// Sum of latencies, ms.
    pub latency_sum_ms: f64,
    /// Largest latency, ms.
    pub latency_max_ms: f64,
    /// Bytes both ways.
    pub bytes: u64,
}

impl ToolStats {
    /// Mean latency, ms.
    pub fn latency_mean_ms(&self) -> Option<f64> {
        (self.answered > 0).then(|| self.latency_sum_ms / self.answered as f64)
    }
}

/// One session: a client and a server talking.
#[derive(Clone, Debug)]
pub struct Session {
    /// The agent's session key.
    pub key: String,
    /// `stdio`, `http`, `https` or `sse`.
    pub transport: String,
    /// Negotiated protocol version.
    pub protocol_version: Option<String>,
    /// The client end.
    pub client: Party,
    /// The server end.
    pub server: Party,
    /// Time of the first message (RFC 3339).
    pub first: String,
    /// Time of the last message.
    pub last: String,
    /// Unix ns of the first message.
    pub first_ns: i128,
    /// Unix ns of the last message.
    pub last_ns: i128,
    /// Input order of the last message (for eviction and sorting).
    pub last_seq: u64,
    /// The newest messages.
    pub messages: VecDeque<Message>,
    /// Messages left out by [`Limits::messages_per_session`].
    pub messages_dropped: u64,
    /// All messages, kept or not.
    pub message_count: u64,
    /// Requests.
    pub requests: u64,
    /// Error responses.
    pub errors: u64,
    /// Bytes client to server.
    pub bytes_to_server: u64,
    /// Bytes server to client.
    pub bytes_to_client: u64,
    /// Per tool (and per method for other requests: `tools/list`, …).
    pub tools: BTreeMap<String, ToolStats>,
    /// Indexes into [`Investigation::alerts`].
    pub alerts: Vec<usize>,
    /// The most severe alert.
    pub worst: Option<Severity>,
}

/// A message an alert cites.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageRef {
    /// Session key.
    pub session: String,
    /// Direction.
    pub direction: Direction,
    /// `request`, `response`, …
    pub kind: String,
    /// Method.
    pub method: Option<String>,
    /// JSON-RPC id as text.
    pub id: Option<String>,
    /// Tool.
    pub tool: Option<String>,
    /// Time.
    pub time: String,
    /// The message's [`Message::seq`] once the event was read.
    pub seq: Option<u64>,
}

/// One alert.
#[derive(Clone, Debug)]
pub struct AlertView {
    /// The agent's alert id.
    pub id: String,
    /// Time.
    pub time: String,
    /// Unix ns.
    pub ns: i128,
    /// e.g. `credential.relay`.
    pub rule: String,
    /// e.g. `credential_leak`.
    pub category: String,
    /// Severity.
    pub severity: Severity,
    /// One line for humans (scrubbed).
    pub summary: String,
    /// Session key.
    pub session: Option<String>,
    /// Who acted, in one line.
    pub actor: Option<String>,
    /// Rule-specific evidence (already redacted by the agent; scrubbed again).
    pub evidence: Value,
    /// The messages it stands for, oldest first.
    pub messages: Vec<MessageRef>,
    /// Repeats summarised.
    pub count: u64,
}

impl AlertView {
    /// Relay and chain alerts tie an earlier message to a later one.
    pub fn is_flow(&self) -> bool {
        self.messages.len() >= 2 && (self.rule.starts_with("tool_chain.") || self.rule == "credential.relay")
    }
}

/// A tool definition seen in a `tools/list` result (needs `--payloads`).
#[derive(Clone, Debug)]
pub struct Definition {
    /// Hash of the definition as the detector pins it (SHA-256 of the
    /// canonical form; computed from the scrubbed payload).
    pub hash: String,
    /// Description.
    pub description: String,
    /// Input schema property names.
    pub params: Vec<String>,
    /// When it was seen first.
    pub time: String,
    /// The response that carried it.
    pub seq: u64,
    /// Its session.
    pub session: String,
}

/// Tool definitions the detector pinned, from the state directory's
/// `tools.json`.
#[derive(Clone, Debug, Default)]
pub struct Pinned {
    /// Server label → tool → hash.
    pub servers: BTreeMap<String, BTreeMap<String, String>>,
}

impl Pinned {
    /// Reads `tools.json` (version 1 or 2 of the state file).
    pub fn parse(text: &str, scrub: &Scrubber) -> anyhow::Result<Pinned> {
        let v: Value = serde_json::from_str(text)?;
        let mut out = Pinned::default();
        let servers = v
            .get("servers")
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow::anyhow!("no \"servers\" object: is this the state directory's tools.json?"))?;
        for (key, s) in servers {
            let label = s.get("label").and_then(Value::as_str).unwrap_or(key);
            let tools = s.get("tools").and_then(Value::as_object);
            let entry = out.servers.entry(scrub.text(label)).or_default();
            for (name, t) in tools.into_iter().flatten() {
                if let Some(h) = t.get("hash").and_then(Value::as_str) {
                    entry.insert(scrub.name(name), h.to_owned());
                }
            }
        }
        Ok(out)
    }
}

/// Counts of what the input held.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Lines read.
    pub lines: u64,
    /// Events.
    pub events: u64,
    /// Alerts.
    pub alerts: u64,
    /// Lines that were neither (not JSON, or unknown objects).
    pub unreadable: u64,
}

/// What fell off because of [`Limits`].
#[derive(Clone, Debug, Default)]
pub struct Dropped {
    /// Sessions forgotten.
    pub sessions: u64,
    /// Alerts forgotten.
    pub alerts: u64,
    /// Tools whose definitions were not kept ([`MAX_DEFINITIONS`]).
    pub definitions: u64,
    /// Alert-to-message links given up (the message or session they wait
    /// for never came while the alert was held).
    pub links: u64,
}
