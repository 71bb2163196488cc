//! MCP sessions: who talks to whom, what they announced, which requests
//! await an answer.
//!
//! A stdio session is keyed by its server process: the process that reads
//! client requests on its stdin. (For unix socketpairs the server-side
//! socket is part of the key, so one process may serve several clients.)

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{
    event::{Flow, Transport},
    jsonrpc::Id,
    observation::ProcKey,
};

/// `SessionKey::transport_kind` of stdio sessions.
pub const TRANSPORT_STDIO: u8 = 0;
/// `SessionKey::transport_kind` of HTTP sessions.
pub const TRANSPORT_HTTP: u8 = 1;
/// `SessionKey::transport_kind` of HTTP-over-TLS sessions.
pub const TRANSPORT_HTTPS: u8 = 2;
/// `SessionKey::transport_kind` of the legacy HTTP+SSE transport (in clear
/// or inside TLS).
pub const TRANSPORT_SSE: u8 = 3;

/// Identifies a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    /// Transport of the session: one of the `TRANSPORT_*` constants.
    pub transport_kind: u8,
    /// The server process, when known.
    pub server: Option<ProcKey>,
    /// Disambiguates sessions of one server (0 for pipes).
    pub conversation: u64,
}

impl SessionKey {
    /// The [`Transport`] that `transport_kind` names (unknown values read as stdio).
    pub fn transport(&self) -> Transport {
        match self.transport_kind {
            TRANSPORT_HTTP => Transport::Http,
            TRANSPORT_HTTPS => Transport::Https,
            TRANSPORT_SSE => Transport::Sse,
            _ => Transport::Stdio,
        }
    }

    /// Stable textual form used in events: `stdio:<pid>:<start_ns>` with a
    /// `:<conversation>` suffix for socket sessions.
    pub fn render(&self) -> String {
        let scheme = self.transport().as_str();
        let mut s = match self.server {
            Some(p) => format!("{scheme}:{}:{}", p.pid, p.start_ns),
            None if self.transport_kind != TRANSPORT_STDIO => format!("{scheme}:remote"),
            None => format!("{scheme}:unknown"),
        };
        if self.conversation != 0 {
            s.push_str(&format!(":{:016x}", self.conversation));
        }
        s
    }
}

/// A request waiting for its response.
#[derive(Clone, Debug)]
pub struct Pending {
    /// The request's method as sent, reported on its response's event too.
    pub method: String,
    /// `tools/call` tool name, reported on the response's event too.
    pub tool: Option<String>,
    /// `prompts/get` prompt name, reported on the response's event too.
    pub prompt: Option<String>,
    /// `resources/read`/`subscribe`/`unsubscribe` URI (credentials redacted), reported on the response too.
    pub resource: Option<String>,
    /// When the request was seen (`CLOCK_BOOTTIME` ns): gives its response's latency and its timeout.
    pub ts_ns: u64,
}

/// Requests in flight in one direction, bounded (oldest evicted first).
#[derive(Debug, Default)]
pub struct PendingRequests {
    map: HashMap<Id, Pending>,
    order: VecDeque<(Id, u64)>,
}

impl PendingRequests {
    /// Records a request; returns how many old entries were evicted to stay
    /// within `cap`.
    pub fn insert(&mut self, id: Id, p: Pending, cap: usize) -> usize {
        let ts = p.ts_ns;
        if self.map.insert(id.clone(), p).is_none() {
            self.order.push_back((id, ts));
        }
        let mut evicted = 0;
        while self.map.len() > cap {
            match self.order.pop_front() {
                Some((old, _)) => {
                    if self.map.remove(&old).is_some() {
                        evicted += 1;
                    }
                }
                None => break,
            }
        }
        evicted
    }

    /// Takes the request answered by a response with `id`.
    pub fn take(&mut self, id: &Id) -> Option<Pending> {
        let p = self.map.remove(id)?;
        // Lazily compact the order queue.
        if self.order.len() > 2 * self.map.len() + 16 {
            let map = &self.map;
            self.order.retain(|(i, _)| map.contains_key(i));
        }
        Some(p)
    }

    /// Drops requests older than `deadline_ns`; returns how many.
    pub fn expire(&mut self, deadline_ns: u64) -> usize {
        let mut n = 0;
        while let Some((id, ts)) = self.order.front() {
            if *ts >= deadline_ns {
                break;
            }
            let id = id.clone();
            self.order.pop_front();
            if self.map.get(&id).is_some_and(|p| p.ts_ns < deadline_ns) && self.map.remove(&id).is_some() {
                n += 1;
            }
        }
        n
    }

    /// Requests awaiting a response.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no request awaits a response.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What one side announced about itself.
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    /// The `name` it announced (`clientInfo` / `serverInfo`), cut to 256 bytes.
    pub name: Option<Arc<str>>,
    /// The `version` it announced, cut to 256 bytes.
    pub version: Option<Arc<str>>,
}

/// One MCP session.
#[derive(Debug)]
pub struct Session {
    /// What identifies the session: transport, server process, conversation.
    pub key: SessionKey,
    /// `key` rendered ([`SessionKey::render`]): the `session` field of its events.
    pub id: Arc<str>,
    /// The transport `key` names.
    pub transport: Transport,
    /// The server process, when it is on this host (from `key`).
    pub server: Option<ProcKey>,
    /// The client process once a message named it (then kept); `None` while unknown or not on this host.
    pub client: Option<ProcKey>,
    /// What the client announced (`clientInfo` of `initialize`, or the stateless revision's `_meta`).
    pub client_info: PeerInfo,
    /// What the server announced (`serverInfo` of the `initialize` or `server/discover` result).
    pub server_info: PeerInfo,
    /// Negotiated protocol version (`initialize`, its result winning, or stateless `_meta`); `None` until seen.
    pub protocol_version: Option<Arc<str>>,
    /// Tool names from the latest `tools/list` result.
    pub tools: Vec<String>,
    /// Requests awaiting a response, by the direction the request went.
    pub pending: [PendingRequests; 2],
    /// An MCP method has been seen: this is MCP, not another JSON-RPC user.
    pub mcp_confirmed: bool,
    /// The client's view of an HTTP session whose server end is on this
    /// host and seen too: not given to detectors (the server's view is).
    pub mirror: bool,
    /// When the session's first message was seen (`CLOCK_BOOTTIME` ns).
    pub first_ns: u64,
    /// When its latest message was seen (`CLOCK_BOOTTIME` ns): idle expiry and eviction go by it.
    pub last_ns: u64,
    /// Messages seen in the session so far.
    pub messages: u64,
}

impl Session {
    /// A session for `key` whose first message was seen at `ts_ns` (`CLOCK_BOOTTIME`); nothing learnt yet.
    pub fn new(key: SessionKey, ts_ns: u64) -> Self {
        Self {
            key,
            id: key.render().into(),
            transport: key.transport(),
            server: key.server,
            client: None,
            client_info: PeerInfo::default(),
            server_info: PeerInfo::default(),
            protocol_version: None,
            tools: Vec::new(),
            pending: Default::default(),
            mcp_confirmed: false,
            mirror: false,
            first_ns: ts_ns,
            last_ns: ts_ns,
            messages: 0,
        }
    }

    /// Pending requests that went in direction `flow`.
    pub fn pending_mut(&mut self, flow: Flow) -> &mut PendingRequests {
        &mut self.pending[flow as usize]
    }
}

/// Longest name/version string kept from what peers announce.
const MAX_ANNOUNCED: usize = 256;

fn short(s: &str) -> Arc<str> {
    if s.len() <= MAX_ANNOUNCED {
        return s.into();
    }
    let mut end = MAX_ANNOUNCED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].into()
}

#[derive(Deserialize)]
struct Implementation<'a> {
    #[serde(borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    version: Option<std::borrow::Cow<'a, str>>,
}

impl From<Implementation<'_>> for PeerInfo {
    fn from(i: Implementation<'_>) -> Self {
        PeerInfo {
            name: i.name.as_deref().map(short),
            version: i.version.as_deref().map(short),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitializeParams<'a> {
    #[serde(borrow)]
    protocol_version: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    client_info: Option<Implementation<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitializeResult<'a> {
    #[serde(borrow)]
    protocol_version: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    server_info: Option<Implementation<'a>>,
}

/// The stateless (2026-07-28) revision puts client identity in `_meta`.
#[derive(Deserialize)]
struct StatelessParams<'a> {
    #[serde(borrow, rename = "_meta")]
    meta: Option<StatelessMeta<'a>>,
}

#[derive(Deserialize)]
struct StatelessMeta<'a> {
    #[serde(borrow, rename = "io.modelcontextprotocol/protocolVersion")]
    protocol_version: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, rename = "io.modelcontextprotocol/clientInfo")]
    client_info: Option<Implementation<'a>>,
}

/// `server/discover` result: the server's identity in `_meta` (as the
/// Python SDK sends it), or as `serverInfo` (earlier drafts).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DiscoverResult<'a> {
    #[serde(borrow)]
    server_info: Option<Implementation<'a>>,
    #[serde(borrow, rename = "_meta")]
    meta: Option<DiscoverMeta<'a>>,
}

#[derive(Deserialize)]
struct DiscoverMeta<'a> {
    #[serde(borrow, rename = "io.modelcontextprotocol/serverInfo")]
    server_info: Option<Implementation<'a>>,
}

#[derive(Deserialize)]
struct ToolsListResult<'a> {
    #[serde(borrow)]
    tools: Vec<ToolName<'a>>,
}

#[derive(Deserialize)]
struct ToolName<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
}

/// Most tool names kept per session.
const MAX_TOOLS: usize = 1024;

impl Session {
    /// Learns from a client request's params (initialize, stateless `_meta`).
    pub fn observe_client_request(&mut self, method: &str, params: Option<&RawValue>) {
        let Some(params) = params else { return };
        if method == "initialize" {
            if let Ok(p) = serde_json::from_str::<InitializeParams<'_>>(params.get()) {
                if let Some(ci) = p.client_info {
                    self.client_info = ci.into();
                }
                if self.protocol_version.is_none() {
                    self.protocol_version = p.protocol_version.as_deref().map(short);
                }
            }
            return;
        }
        // Cheap check before parsing: only stateless requests carry this.
        if params.get().contains("io.modelcontextprotocol/") {
            if let Ok(StatelessParams { meta: Some(m) }) = serde_json::from_str(params.get()) {
                if let Some(ci) = m.client_info {
                    self.client_info = ci.into();
                }
                if let Some(v) = m.protocol_version {
                    self.protocol_version = Some(short(&v));
                }
            }
        }
    }

    /// Learns from the result of a client request.
    pub fn observe_result(&mut self, method: &str, result: &RawValue) {
        match method {
            "initialize" => {
                if let Ok(r) = serde_json::from_str::<InitializeResult<'_>>(result.get()) {
                    if let Some(si) = r.server_info {
                        self.server_info = si.into();
                    }
                    if let Some(v) = r.protocol_version {
                        self.protocol_version = Some(short(&v));
                    }
                }
            }
            "server/discover" => {
                if let Ok(r) = serde_json::from_str::<DiscoverResult<'_>>(result.get()) {
                    if let Some(si) = r.server_info.or(r.meta.and_then(|m| m.server_info)) {
                        self.server_info = si.into();
                    }
                }
            }
            "tools/list" => {
                if let Ok(r) = serde_json::from_str::<ToolsListResult<'_>>(result.get()) {
                    // A paginated list arrives in several results; keep the union.
                    for t in r.tools {
                        if self.tools.len() >= MAX_TOOLS {
                            break;
                        }
                        if !self.tools.iter().any(|n| n == t.name.as_ref()) {
                            self.tools.push(short(&t.name).to_string());
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn key() -> SessionKey {
        SessionKey {
            transport_kind: 0,
            server: Some(ProcKey { pid: 7, start_ns: 9 }),
            conversation: 0,
        }
    }

    #[test]
    fn pending_bounded_and_paired() {
        let mut p = PendingRequests::default();
        let mk = |ts| Pending {
            method: "tools/call".into(),
            tool: None,
            prompt: None,
            resource: None,
            ts_ns: ts,
        };
        let mut evicted = 0;
        for i in 0..10 {
            evicted += p.insert(Id::Int(i), mk(i as u64), 4);
        }
        assert_eq!((p.len(), evicted), (4, 6));
        assert!(p.take(&Id::Int(0)).is_none());
        assert_eq!(p.take(&Id::Int(9)).unwrap().ts_ns, 9);
        assert_eq!(p.expire(8), 2); // ids 6 and 7
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn learns_handshake_and_tools() {
        let mut s = Session::new(key(), 0);
        s.observe_client_request(
            "initialize",
            Some(&raw(
                r#"{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1.2"}}"#,
            )),
        );
        s.observe_result(
            "initialize",
            &raw(r#"{"protocolVersion":"2025-03-26","serverInfo":{"name":"srv","version":"0.1"},"capabilities":{}}"#),
        );
        s.observe_result(
            "tools/list",
            &raw(r#"{"tools":[{"name":"echo","inputSchema":{}},{"name":"add"}]}"#),
        );
        assert_eq!(s.client_info.name.as_deref(), Some("agent"));
        assert_eq!(s.server_info.version.as_deref(), Some("0.1"));
        assert_eq!(s.protocol_version.as_deref(), Some("2025-03-26"));
        assert_eq!(s.tools, ["echo", "add"]);
        assert_eq!(s.id.as_ref(), "stdio:7:9");
    }

    #[test]
    fn learns_stateless_meta() {
        let mut s = Session::new(key(), 0);
        s.observe_client_request(
            "tools/list",
            Some(&raw(r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"c","version":"2"}}}"#)),
        );
        assert_eq!(s.protocol_version.as_deref(), Some("2026-07-28"));
        assert_eq!(s.client_info.name.as_deref(), Some("c"));
    }
}
