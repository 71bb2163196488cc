//! Sessions: a decoded message finds its session (created on first
//! sight), is paired with its request, becomes an event with both parties,
//! goes past the detector, and is emitted, or held until the session shows
//! an MCP method (a JSON-RPC program that is not MCP produces no events).

use std::sync::Arc;

use super::{http_wire, request, stdio::StreamId, Pipeline, Sink};
use crate::{
    detect::{alert::Alert, MessageCtx},
    event::{Event, Flow, HttpInfo, Party, SharedParty},
    jsonrpc::{self, Kind, Message},
    mcp,
    observation::ProcKey,
    redact,
    session::{Pending, Session, SessionKey},
};

/// What a session keeps about a held (not yet emitted) message.
pub(super) struct Held {
    pub(super) event: Event,
    pub(super) latency_s: Option<f64>,
    pub(super) alerts: Vec<Alert>,
}

pub(super) struct SessionState {
    pub(super) session: Session,
    pub(super) held: Vec<Held>,
    /// Server and client as last serialised (see `Pipeline::party`).
    pub(super) parties: [Option<SharedParty>; 2],
    /// SSE events (id and data) already reported, so that a stream resumed
    /// with `Last-Event-ID` does not report them again.
    pub(super) sse_events: RecentSet,
}

/// The last [`RecentSet::CAPACITY`] values inserted.
pub(super) struct RecentSet<T = u64> {
    pub(super) set: std::collections::HashSet<T>,
    pub(super) order: std::collections::VecDeque<T>,
}

impl<T> Default for RecentSet<T> {
    fn default() -> Self {
        Self {
            set: std::collections::HashSet::new(),
            order: std::collections::VecDeque::new(),
        }
    }
}

impl<T: Copy + Eq + std::hash::Hash> RecentSet<T> {
    const CAPACITY: usize = 1024;

    pub(super) fn contains(&self, v: T) -> bool {
        self.set.contains(&v)
    }

    /// Forgets `v` (a linear walk of the order: for rare removals).
    pub(super) fn remove(&mut self, v: T) {
        if self.set.remove(&v) {
            self.order.retain(|o| *o != v);
        }
    }

    pub(super) fn insert(&mut self, v: T) {
        if !self.set.insert(v) {
            return;
        }
        if self.order.len() >= Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(v);
    }
}

/// Where a decoded message belongs: its session, its direction, and what
/// the transport knows of the other end.
pub(super) struct Route {
    pub(super) key: SessionKey,
    pub(super) flow: Flow,
    /// The process at the other end, when the transport names it.
    pub(super) peer: Option<ProcKey>,
    /// The client's view of a connection whose server end is seen too.
    pub(super) mirror: bool,
}

/// What pairing a message with its request gives its event.
#[derive(Default)]
pub(super) struct Pairing {
    /// The message's method, or for a response its request's.
    pub(super) method: Option<String>,
    pub(super) tool: Option<String>,
    pub(super) prompt: Option<String>,
    pub(super) resource: Option<String>,
    /// Seconds since the request, for a paired response.
    pub(super) latency_s: Option<f64>,
}

impl Pipeline {
    /// The server (`server_side`) or client of a session, serialised once
    /// and reused until its identity or announced name changes. The cache
    /// keeps the `Arc`s it was built from, so pointer equality is sound.
    pub(super) fn party(&mut self, key: &SessionKey, server_side: bool) -> SharedParty {
        let Some(state) = self.sessions.get_mut(key) else {
            return SharedParty::default();
        };
        let s = &state.session;
        let (proc, info) = if server_side {
            (s.server, &s.server_info)
        } else {
            (s.client, &s.client_info)
        };
        let process = proc.and_then(|p| self.processes.get(&p).cloned());
        let workload = process.as_deref().and_then(|p| self.workloads.resolve(p));
        let slot = &mut state.parties[server_side as usize];
        fn same<T: ?Sized>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
            match (a, b) {
                (Some(x), Some(y)) => Arc::ptr_eq(x, y),
                (None, None) => true,
                _ => false,
            }
        }
        if let Some(c) = slot {
            if c.pid == proc.map(|p| p.pid)
                && same(&c.process, &process)
                && same(&c.workload, &workload)
                && same(&c.name, &info.name)
                && same(&c.version, &info.version)
            {
                return c.clone();
            }
        }
        let p = SharedParty::new(Party {
            process,
            workload,
            pid: proc.map(|p| p.pid),
            name: info.name.clone(),
            version: info.version.clone(),
        });
        *slot = Some(p.clone());
        p
    }

    /// Stops capturing every stream and connection of a session that is not
    /// MCP, and forgets it.
    pub(super) fn drop_session(&mut self, key: SessionKey, sink: &mut impl Sink) {
        let others: Vec<StreamId> = self
            .stdio
            .streams
            .values()
            .filter(|o| o.session == Some(key))
            .map(|o| o.id)
            .collect();
        for id in others {
            if let Some(mut o) = self.stdio.streams.remove(&id) {
                self.reject(&mut o, "not_mcp", sink);
                self.stdio.streams.insert(id, o);
            }
        }
        let conns: Vec<http_wire::ConnId> = self
            .http
            .conns
            .iter()
            .filter(|(_, c)| c.session == Some(key))
            .map(|(id, _)| *id)
            .collect();
        for id in conns {
            self.reject_conn(id, "not_mcp", sink);
        }
        if let Some(state) = self.sessions.remove(&key) {
            if let Some(d) = self.detector.as_mut() {
                d.end_session(&state.session.id);
            }
        }
        self.metrics.pipeline.sessions_active.set(self.sessions.len() as i64);
    }

    /// One JSON-RPC message on `route`. Returns false when the session has
    /// shown itself not to be MCP (the caller stops capturing it).
    pub(super) fn handle_message(
        &mut self,
        route: Route,
        msg: Message<'_>,
        ts_ns: u64,
        mut http: Option<HttpInfo>,
        sink: &mut impl Sink,
    ) -> bool {
        self.touch_session(&route, ts_ns);
        let pairing = self.pair(&route, &msg, ts_ns, http.as_mut());
        let latency_s = pairing.latency_s;
        let event = self.event(&route, &msg, ts_ns, pairing, http);
        let alerts = self.detect(&route, &msg, &event);
        self.emit_or_hold(route.key, event, latency_s, alerts, sink)
    }

    /// Creates the session of `route` if it is new, and notes the message.
    fn touch_session(&mut self, route: &Route, ts_ns: u64) {
        if !self.sessions.contains_key(&route.key) {
            self.make_room_for_session();
            self.sessions.insert(
                route.key,
                SessionState {
                    session: Session::new(route.key, ts_ns),
                    held: Vec::new(),
                    sse_events: RecentSet::default(),
                    parties: [None, None],
                },
            );
            self.metrics.pipeline.sessions_active.set(self.sessions.len() as i64);
            self.metrics.pipeline.sessions_total.inc();
        }
        let s = &mut self.sessions.get_mut(&route.key).expect("inserted above").session;
        if s.client.is_none() {
            s.client = route.peer;
        }
        s.mirror |= route.mirror;
        s.last_ns = ts_ns;
        s.messages += 1;
    }

    /// Pairs a response with its request (or remembers a request for its
    /// response), and learns what the session's messages tell: MCP methods,
    /// the client's requests, the server's results.
    fn pair(&mut self, route: &Route, msg: &Message<'_>, ts_ns: u64, http: Option<&mut HttpInfo>) -> Pairing {
        let max_pending = self.cfg.max_pending;
        let s = &mut self.sessions.get_mut(&route.key).expect("touched").session;
        let flow = route.flow;
        let mut pairing = Pairing {
            method: msg.method.as_deref().map(request::clip),
            ..Pairing::default()
        };
        match msg.kind {
            Kind::Request | Kind::Notification => {
                let m = msg.method.as_deref().unwrap_or("");
                if mcp::lookup(m).is_some() {
                    s.mcp_confirmed = true;
                }
                (pairing.tool, pairing.prompt, pairing.resource) = request::request_subject(m, msg.params);
                if let Some(h) = http {
                    h.header_mismatch = request::header_mismatch(h, m, msg.params);
                    for name in &h.header_mismatch {
                        self.metrics
                            .pipeline
                            .http_header_mismatch
                            .with_label_values(&[name])
                            .inc();
                    }
                }
                if flow == Flow::ClientToServer {
                    s.observe_client_request(m, msg.params);
                }
                if let (Kind::Request, Some(id)) = (msg.kind, msg.id.clone()) {
                    let p = Pending {
                        method: m.to_owned(),
                        tool: pairing.tool.clone(),
                        prompt: pairing.prompt.clone(),
                        resource: pairing.resource.clone(),
                        ts_ns,
                    };
                    let evicted = s.pending_mut(flow).insert(id, p, max_pending);
                    if evicted > 0 {
                        self.metrics
                            .pipeline
                            .pending_evicted
                            .with_label_values(&["limit"])
                            .inc_by(evicted as u64);
                    }
                }
            }
            Kind::Response | Kind::Error => {
                let id = msg.id.clone().unwrap_or(jsonrpc::Id::Null);
                match s.pending_mut(flow.reverse()).take(&id) {
                    Some(p) => {
                        pairing.latency_s = Some(ts_ns.saturating_sub(p.ts_ns) as f64 / 1e9);
                        if let (Some(result), Flow::ServerToClient) = (msg.result, flow) {
                            s.observe_result(&p.method, result);
                        }
                        pairing.method = Some(p.method);
                        (pairing.tool, pairing.prompt, pairing.resource) = (p.tool, p.prompt, p.resource);
                    }
                    None => self.metrics.pipeline.unpaired_responses.inc(),
                }
            }
        }
        pairing
    }

    /// The event of one message, with both parties and, when payloads are
    /// on, the redacted message.
    fn event(
        &mut self,
        route: &Route,
        msg: &Message<'_>,
        ts_ns: u64,
        pairing: Pairing,
        http: Option<HttpInfo>,
    ) -> Event {
        if self.cfg.payloads {
            if let Some(d) = self.detector.as_mut() {
                d.prepare_redaction(ts_ns as i128 + self.cfg.boot_offset_ns);
            }
        }
        let payload = self.cfg.payloads.then(|| {
            let mut v: serde_json::Value = serde_json::from_slice(msg.raw).unwrap_or(serde_json::Value::Null);
            match &self.detector {
                Some(d) => redact::redact_json_with(&mut v, &|s| d.redact(s)),
                None => redact::redact_json(&mut v),
            };
            v
        });
        let server = self.party(&route.key, true);
        let client = self.party(&route.key, false);
        let s = &self.sessions[&route.key].session;
        Event {
            time: ts_ns as i128 + self.cfg.boot_offset_ns,
            transport: s.transport,
            direction: route.flow,
            kind: msg.kind,
            method: pairing.method,
            id: msg.id.clone(),
            tool: pairing.tool,
            prompt: pairing.prompt,
            resource: pairing.resource,
            bytes: msg.raw.len() as u64,
            latency_ms: pairing.latency_s.map(|l| l * 1e3),
            error_code: msg.error.as_ref().map(|e| e.code),
            session: s.id.clone(),
            protocol_version: s.protocol_version.clone(),
            server,
            client,
            http,
            payload,
        }
    }

    /// The detector's alerts for one message.
    fn detect(&mut self, route: &Route, msg: &Message<'_>, event: &Event) -> Vec<Alert> {
        let session = &self.sessions[&route.key].session;
        match self.detector.as_mut() {
            // Judged once, on the server's view: the client's view of the
            // same messages would repeat every alert (and look like a
            // second server offering the same tools).
            Some(_) if session.mirror => Vec::new(),
            Some(d) => d.on_message(&MessageCtx {
                event,
                message: msg,
                client_key: session.client,
            }),
            None => Vec::new(),
        }
    }

    /// Sends the event and its alerts once the session is MCP-confirmed
    /// (with the events held until then); holds them before. False when the
    /// session held as many as it may without showing an MCP method.
    fn emit_or_hold(
        &mut self,
        key: SessionKey,
        event: Event,
        latency_s: Option<f64>,
        alerts: Vec<Alert>,
        sink: &mut impl Sink,
    ) -> bool {
        let max_held = self.cfg.max_held;
        let state = self.sessions.get_mut(&key).expect("present");
        if state.session.mcp_confirmed {
            let held = std::mem::take(&mut state.held);
            if !held.is_empty() {
                // Held events predate what the session has learnt since
                // (names, versions): give them the current view.
                let server = self.party(&key, true);
                let client = self.party(&key, false);
                for mut h in held {
                    h.event.server = server.clone();
                    h.event.client = client.clone();
                    self.emit(h.event, h.latency_s, sink);
                    for a in h.alerts {
                        sink.alert(a);
                    }
                }
            }
            self.emit(event, latency_s, sink);
            for a in alerts {
                sink.alert(a);
            }
        } else if state.held.len() < max_held {
            state.held.push(Held {
                event,
                latency_s,
                alerts,
            });
        } else {
            let dropped = state.held.len() + 1;
            self.metrics
                .pipeline
                .state_evictions
                .with_label_values(&["held_event"])
                .inc_by(dropped as u64);
            return false;
        }
        true
    }

    pub(super) fn emit(&mut self, event: Event, latency_s: Option<f64>, sink: &mut impl Sink) {
        self.handles.count_message(&self.metrics, &event, latency_s);
        sink.event(event);
    }

    pub(super) fn make_room_for_session(&mut self) {
        if self.sessions.len() < self.cfg.max_sessions {
            return;
        }
        let mut by_age: Vec<(u64, SessionKey)> = self
            .sessions
            .values()
            .map(|s| (s.session.last_ns, s.session.key))
            .collect();
        by_age.sort_unstable();
        let n = (self.cfg.max_sessions / 8).max(1);
        for (_, k) in by_age.into_iter().take(n) {
            self.end_session(&k);
        }
        self.metrics
            .pipeline
            .state_evictions
            .with_label_values(&["session"])
            .inc_by(n as u64);
    }

    pub(super) fn end_session(&mut self, key: &SessionKey) {
        let Some(state) = self.sessions.remove(key) else {
            return;
        };
        if let Some(d) = self.detector.as_mut() {
            d.end_session(&state.session.id);
        }
        let pending: usize = state.session.pending.iter().map(|p| p.len()).sum();
        if pending > 0 {
            self.metrics
                .pipeline
                .pending_evicted
                .with_label_values(&["session_end"])
                .inc_by(pending as u64);
        }
        if !state.held.is_empty() {
            self.metrics
                .pipeline
                .state_evictions
                .with_label_values(&["held_event"])
                .inc_by(state.held.len() as u64);
        }
        self.metrics.pipeline.sessions_active.set(self.sessions.len() as i64);
    }
}
