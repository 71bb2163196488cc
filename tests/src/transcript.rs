//! What the SDK clients recorded (every message, both directions, exact
//! sizes) and how it is compared with the monitor's events.

use std::{collections::HashMap, path::Path};

use serde_json::Value;

/// One message of a client transcript.
#[derive(Clone, Debug)]
pub struct Sent {
    /// `c2s` (client to server) or `s2c` (server to client).
    pub dir: String,
    /// Size in bytes of the message's JSON text on the wire (without the line's newline).
    pub bytes: u64,
    /// `request`, `notification`, `response` or `error`.
    pub kind: String,
    /// JSON-RPC method; `None` for responses and errors.
    pub method: Option<String>,
    /// JSON-RPC id; `Null` when the message has none (notifications).
    pub id: Value,
    /// Tool name of a `tools/call` request.
    pub tool: Option<String>,
    /// Sent after a `--pause`d driver was resumed (always true when it did not pause).
    pub after_resume: bool,
}

/// What a client driver saw on the wire.
#[derive(Clone, Debug)]
pub struct Transcript {
    /// Pid of the client driver process.
    pub client_pid: u32,
    /// Pid of the server the driver started; 0 for HTTP drivers (the test knows the server).
    pub server_pid: u32,
    /// Every message that crossed, in the order the client saw them.
    pub messages: Vec<Sent>,
}

impl Transcript {
    /// Reads the transcript JSON file a client driver wrote.
    pub fn load(path: &Path) -> Transcript {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("transcript written")).unwrap();
        let messages = v["transcript"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| Sent {
                dir: t["dir"].as_str().unwrap().to_owned(),
                bytes: t["bytes"].as_u64().unwrap(),
                kind: t["msg"]["kind"].as_str().unwrap().to_owned(),
                method: t["msg"]["method"].as_str().map(str::to_owned),
                id: t["msg"]["id"].clone(),
                tool: t["msg"]["tool"].as_str().map(str::to_owned),
                after_resume: t["after_resume"].as_bool().unwrap_or(true),
            })
            .collect();
        Transcript {
            client_pid: v["client_pid"].as_u64().unwrap() as u32,
            // HTTP drivers do not start the server: the test knows its pid.
            server_pid: v["server_pid"].as_u64().unwrap_or(0) as u32,
            messages,
        }
    }

    /// The events the monitor should report, per direction, as comparable
    /// rows: (type, method, id, tool, bytes). Responses take the method and
    /// tool of their request, as the monitor's events do.
    pub fn expected(&self, only_after_resume: bool) -> HashMap<String, Vec<Row>> {
        let mut requests: HashMap<(String, String), (Option<String>, Option<String>)> = HashMap::new();
        let mut out: HashMap<String, Vec<Row>> = HashMap::new();
        for m in &self.messages {
            let (method, tool) = match m.kind.as_str() {
                "request" => {
                    requests.insert((m.dir.clone(), m.id.to_string()), (m.method.clone(), m.tool.clone()));
                    (m.method.clone(), m.tool.clone())
                }
                "response" | "error" => {
                    let other = if m.dir == "c2s" { "s2c" } else { "c2s" };
                    requests
                        .get(&(other.to_owned(), m.id.to_string()))
                        .cloned()
                        .unwrap_or((None, None))
                }
                _ => (m.method.clone(), None),
            };
            if only_after_resume && !m.after_resume {
                continue;
            }
            out.entry(m.dir.clone()).or_default().push(Row {
                kind: m.kind.clone(),
                method,
                id: m.id.clone(),
                tool,
                bytes: m.bytes,
            });
        }
        out
    }
}

/// Comparable view of one message.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// `request`, `notification`, `response` or `error` (the event's `type`).
    pub kind: String,
    /// Method; responses and errors carry that of their request.
    pub method: Option<String>,
    /// JSON-RPC id; `Null` when the message has none.
    pub id: Value,
    /// Tool name of a `tools/call`; responses carry that of their request.
    pub tool: Option<String>,
    /// Size of the message in bytes.
    pub bytes: u64,
}

/// Events of the session whose server is `server_pid`, per direction.
pub fn observed(events: &[Value], server_pid: u32) -> HashMap<String, Vec<Row>> {
    observed_rows(
        events
            .iter()
            .filter(|e| e["server"]["pid"].as_u64() == Some(server_pid as u64)),
    )
}

/// `events` as comparable rows, per direction.
pub fn observed_rows<'a>(events: impl IntoIterator<Item = &'a Value>) -> HashMap<String, Vec<Row>> {
    let mut out: HashMap<String, Vec<Row>> = HashMap::new();
    for e in events {
        let dir = match e["direction"].as_str().unwrap() {
            "client_to_server" => "c2s",
            _ => "s2c",
        };
        out.entry(dir.to_owned()).or_default().push(Row {
            kind: e["type"].as_str().unwrap().to_owned(),
            method: e["method"].as_str().map(str::to_owned),
            id: e["id"].clone(),
            tool: e["tool"].as_str().map(str::to_owned),
            bytes: e["bytes"].as_u64().unwrap(),
        });
    }
    out
}

/// Asserts the monitor's rows equal the transcript's, direction by direction,
/// with a readable first difference.
pub fn assert_same(expected: &HashMap<String, Vec<Row>>, got: &HashMap<String, Vec<Row>>) {
    for dir in ["c2s", "s2c"] {
        let e = expected.get(dir).map(Vec::as_slice).unwrap_or(&[]);
        let g = got.get(dir).map(Vec::as_slice).unwrap_or(&[]);
        if e != g {
            let first = e
                .iter()
                .zip(g)
                .position(|(a, b)| a != b)
                .unwrap_or(e.len().min(g.len()));
            panic!(
                "{dir}: expected {} messages, monitor reported {}; first difference at #{first}:\n  expected {:?}\n  reported {:?}",
                e.len(),
                g.len(),
                e.get(first),
                g.get(first)
            );
        }
    }
}

/// Number of messages in a transcript map.
pub fn count(rows: &HashMap<String, Vec<Row>>) -> usize {
    rows.values().map(Vec::len).sum()
}
