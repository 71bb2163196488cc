//! The event written for every MCP message: the monitor's output contract.
//!
//! One JSON object per line. Field names and values are documented in the
//! README ("Events"); tests and downstream tools rely on them, so change
//! them only additively.

use std::sync::Arc;

use serde::{ser::SerializeMap, Serialize, Serializer};

use crate::{
    identity::{workload::WorkloadIdentity, ProcessInfo},
    jsonrpc::Id,
};

/// Transport the message travelled over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Pipes or a unix socketpair between an agent and a server it spawned.
    Stdio,
    /// HTTP/1.1 in clear over TCP (Streamable HTTP, stateless or not).
    Http,
    /// HTTP/1.1 inside TLS, seen as plaintext at the TLS library.
    Https,
    /// The legacy HTTP+SSE transport (2024-11-05): a GET event stream that
    /// names an endpoint, and POSTs to it on other connections (in clear or
    /// inside TLS).
    Sse,
}

impl Transport {
    /// Metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Stdio => "stdio",
            Transport::Http => "http",
            Transport::Https => "https",
            Transport::Sse => "sse",
        }
    }
}

/// HTTP context of a message that travelled over HTTP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HttpInfo {
    /// `"1.1"` or `"2"`: the HTTP version that carried the message.
    pub version: &'static str,
    /// Method and path of the request that carried the message, or that the
    /// response carrying it answers.
    pub method: Option<String>,
    /// Its target, query values replaced by `[REDACTED]` (names kept).
    pub path: Option<String>,
    /// Status of the response that carried the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `sha256:` + 16 hex digits of the `Mcp-Session-Id` header; the value
    /// itself is never exported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id_hash: Option<String>,
    /// `id:` of the server-sent event that carried the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sse_event_id: Option<String>,
    /// The connection's endpoints as this process sees them
    /// (`address:port`, IPv6 in brackets); the client end connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    /// The other end, `address:port` (see `local`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Headers of the stateless revision that disagree with the body they
    /// came with (`mcp-method`, `mcp-name`): a gateway that authorises by
    /// header was shown one call and the server given another.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header_mismatch: Vec<&'static str>,
    /// `Mcp-Method` and `Mcp-Name` of the request, as sent (not exported:
    /// they repeat the body's method and tool).
    #[serde(skip)]
    pub mcp_method: Option<String>,
    /// `Mcp-Name` header of the request, base64 form decoded; compared with the tool, prompt or URI.
    #[serde(skip)]
    pub mcp_name: Option<String>,
}

/// Which way the message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// Sent by the client to the server: `client_to_server` in events.
    ClientToServer,
    /// Sent by the server to the client: `server_to_client` in events.
    ServerToClient,
}

impl Flow {
    /// Metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Flow::ClientToServer => "client_to_server",
            Flow::ServerToClient => "server_to_client",
        }
    }

    /// The other direction.
    pub fn reverse(self) -> Self {
        match self {
            Flow::ClientToServer => Flow::ServerToClient,
            Flow::ServerToClient => Flow::ClientToServer,
        }
    }
}

/// One end of a session: its process (if known) and what it announced.
#[derive(Clone, Debug, Default)]
pub struct Party {
    /// Its process as `/proc` and the kernel describe it (`pid`, `start_time`, `exe`...); `None` if unknown or remote.
    pub process: Option<Arc<ProcessInfo>>,
    /// Kubernetes pod and workload, SPIFFE ID.
    pub workload: Option<Arc<WorkloadIdentity>>,
    /// Fallback when no identity was resolved: pid from the kernel.
    pub pid: Option<u32>,
    /// `clientInfo.name` / `serverInfo.name`.
    pub name: Option<Arc<str>>,
    /// `clientInfo.version` / `serverInfo.version`, as announced.
    pub version: Option<Arc<str>>,
}

impl Party {
    /// Namespace and workload metric labels of a session: those of the
    /// party running on this host (the server, else the client).
    pub fn metric_workload<'a>(server: &'a Party, client: &'a Party) -> (&'a str, &'a str) {
        let local = if server.process.is_some() { server } else { client };
        match &local.workload {
            Some(w) => w.metric_labels(local.process.as_deref()),
            None => (
                "",
                local
                    .process
                    .as_ref()
                    .and_then(|p| p.systemd_unit.as_deref())
                    .unwrap_or(""),
            ),
        }
    }
}

/// A party of an event, serialised once: identity is the bulk of every
/// event, and the pipeline gives every event of a session the same one
/// until the session's identity or announced names change. Immutable, so
/// the cached JSON cannot go stale; cloning is an `Arc` clone. Reads go
/// through to the [`Party`].
#[derive(Clone, Debug)]
pub struct SharedParty(Arc<(Party, Box<serde_json::value::RawValue>)>);

impl SharedParty {
    /// Serialises `party` once, for every event that names it.
    pub fn new(party: Party) -> SharedParty {
        let text = serde_json::to_string(&party).expect("party serialises");
        let raw = serde_json::value::RawValue::from_string(text).expect("valid JSON");
        SharedParty(Arc::new((party, raw)))
    }
}

impl From<Party> for SharedParty {
    fn from(p: Party) -> Self {
        SharedParty::new(p)
    }
}

impl Default for SharedParty {
    fn default() -> Self {
        SharedParty::new(Party::default())
    }
}

impl std::ops::Deref for SharedParty {
    type Target = Party;
    fn deref(&self) -> &Party {
        &self.0 .0
    }
}

impl Serialize for SharedParty {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0 .1.serialize(s)
    }
}

impl Serialize for Party {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match &self.process {
            Some(p) => {
                m.serialize_entry("pid", &p.pid)?;
                m.serialize_entry("start_time", &crate::clock::rfc3339(p.start_unix_ns as i128))?;
                m.serialize_entry("ppid", &p.ppid)?;
                m.serialize_entry("exe", &p.exe)?;
                m.serialize_entry("comm", &p.comm)?;
                m.serialize_entry("cmdline", &p.cmdline)?;
                m.serialize_entry("uid", &p.uid)?;
                if let Some(u) = &p.user {
                    m.serialize_entry("user", u)?;
                }
                m.serialize_entry("cgroup", &p.cgroup)?;
                if let Some(c) = &p.container_id {
                    m.serialize_entry("container_id", c)?;
                }
                if let Some(c) = &p.pod_uid {
                    m.serialize_entry("pod_uid", c)?;
                }
                if let Some(u) = &p.systemd_unit {
                    m.serialize_entry("systemd_unit", u)?;
                }
                if let Some(n) = p.mnt_ns {
                    m.serialize_entry("mnt_ns", &n)?;
                }
                if let Some(n) = p.pid_ns {
                    m.serialize_entry("pid_ns", &n)?;
                }
            }
            None => m.serialize_entry("pid", &self.pid)?,
        }
        if let Some(w) = &self.workload {
            if let Some(k) = &w.kubernetes {
                m.serialize_entry("kubernetes", k)?;
            }
            if let Some(id) = &w.spiffe_id {
                m.serialize_entry("spiffe_id", id)?;
            }
        }
        m.serialize_entry("name", &self.name.as_deref())?;
        m.serialize_entry("version", &self.version.as_deref())?;
        m.end()
    }
}

/// One MCP message as seen on the wire.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Wall-clock time the bytes were read, as RFC 3339 (UTC, ns).
    #[serde(serialize_with = "ser_time")]
    pub time: i128,
    /// `transport`: `stdio`, `http`, `https` or `sse`.
    pub transport: Transport,
    /// `direction`: `client_to_server` or `server_to_client`.
    pub direction: Flow,
    /// `type`: `request`, `notification`, `response` or `error`.
    #[serde(rename = "type", serialize_with = "ser_kind")]
    pub kind: crate::jsonrpc::Kind,
    /// The method; for responses, the method of the paired request.
    pub method: Option<String>,
    /// `id`: the JSON-RPC id (number or string); `null` for notifications.
    pub id: Option<Id>,
    /// `tools/call` tool name, on the request and its response.
    pub tool: Option<String>,
    /// `prompts/get` prompt name, on the request and its response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// `resources/read` (and subscribe) URI, secrets redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Frame size in bytes, without the line terminator.
    pub bytes: u64,
    /// Responses: time since the paired request, in milliseconds.
    pub latency_ms: Option<f64>,
    /// Error responses: the JSON-RPC error code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    /// Stable session key (see README).
    pub session: Arc<str>,
    /// Negotiated protocol version, once known.
    pub protocol_version: Option<Arc<str>>,
    /// `server`: the server end (process, workload identity, announced name and version).
    pub server: SharedParty,
    /// `client`: the client end, described like `server`.
    pub client: SharedParty,
    /// HTTP transports: method, path, status, hashed session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpInfo>,
    /// The message itself, secrets redacted; only with `--payloads`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

fn ser_time<S: Serializer>(t: &i128, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    let n = crate::clock::rfc3339_into(*t, &mut buf);
    s.serialize_str(std::str::from_utf8(&buf[..n]).unwrap_or(""))
}

fn ser_kind<S: Serializer>(k: &crate::jsonrpc::Kind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn party() -> Party {
        Party {
            pid: Some(7),
            name: Some("calc".into()),
            ..Party::default()
        }
    }

    #[test]
    fn a_shared_party_serialises_as_its_fields_do() {
        let p = party();
        let plain = serde_json::to_string(&p).unwrap();
        let shared = SharedParty::new(p);
        assert_eq!(serde_json::to_string(&shared).unwrap(), plain);
        assert_eq!(shared.name.as_deref(), Some("calc"));
    }
}
