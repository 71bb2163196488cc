//! HTTP connections: the TCP chunks one process reads and writes on a
//! connection, reassembled into MCP messages (see [`crate::http`]).
//!
//! A direction is classified from its first bytes (a request line or a
//! status line); the process that reads requests serves, the one that
//! writes them calls. Responses take the method and path of the request they
//! answer (HTTP/1.1 answers in order). Which session a message belongs to
//! is decided in [`session_keys`].
//!
//! A connection whose first bytes are not HTTP, or whose session carries no
//! MCP method, is dropped from capture in the kernel.

mod session_keys;

use std::{collections::VecDeque, sync::Arc};

use monitor_common::{chunk_flags, Direction, FdKind};
use rustc_hash::FxHashMap;

use super::{
    http_wire::{ends, export_path, is_json_type, sniff, sse_event_digest, ConnId, Endpoint},
    local_ends::LocalEnds,
    make_room, Control, KernelStream, Pipeline, Route, Sink,
};
use crate::{
    event::{Flow, HttpInfo},
    http::{
        h1::Side,
        h2::{self, H2Start},
        HttpHalf, HttpMeta, HttpOutput, HttpVersion,
    },
    jsonrpc,
    metrics::Metrics,
    observation::{Chunk, ProcKey},
    relook::{self, RelookBudget},
    session::SessionKey,
};
use session_keys::opens_session;

/// The HTTP stage's tables: the connections, and what joins them into
/// sessions across connections and across the two ends on this host.
#[derive(Default)]
pub(super) struct HttpTables {
    /// TCP connections carrying (or being judged for) MCP over HTTP.
    pub(super) conns: FxHashMap<ConnId, HttpConn>,
    /// Hashed `Mcp-Session-Id` (with the serving process) to session.
    session_ids: FxHashMap<(Option<ProcKey>, u8, u64), SessionKey>,
    /// The pair of ends ([`Pipeline::pair_of_ends`]) to the session its
    /// latest `initialize` opened: requests that carry `Mcp-Method` and no
    /// session id (a server that issues none, to a client that sends the
    /// header on every request) belong to it, on any connection.
    opened_by_pair: FxHashMap<u64, SessionKey>,
    /// Both ends of connections on this host, so the server's view can
    /// name the client process.
    local: LocalEnds,
    /// Legacy HTTP+SSE: (process, endpoint target its event stream named)
    /// to the session and its hashed id, so that POSTs on other
    /// connections join the stream's session.
    sse_endpoints: FxHashMap<(ProcKey, String), (SessionKey, Option<String>)>,
}

/// Requests remembered for pairing with responses, per connection.
const MAX_INFLIGHT_REQUESTS: usize = 256;

pub(super) struct HttpConn {
    /// Per `Direction` (ingress, egress).
    halves: [Option<HttpHalf>; 2],
    sides: [Option<Side>; 2],
    /// The request each direction's current response answers.
    answering: [Option<Arc<HttpMeta>>; 2],
    /// This process reads requests (serves).
    serves: Option<bool>,
    requests: VecDeque<Arc<HttpMeta>>,
    /// HTTP/2: requests by stream, for their responses.
    streams: FxHashMap<u32, Arc<HttpMeta>>,
    /// The connection speaks HTTP/2 (h2 over TLS, or h2c).
    h2: bool,
    /// An HTTP/2 connection captured from the middle: header tables are
    /// known only from then on.
    h2_joined: bool,
    pub(super) session: Option<SessionKey>,
    rejected: bool,
    unclassified_bytes: u64,
    /// Per `Direction`: JSON bodies read before the connection could be
    /// told (bounded by the unclassified-bytes cap). Go's HTTP/2 framer
    /// reads a frame's header and its payload apart, and the kernel
    /// discovers a process on the payload: once later frames show HTTP/2,
    /// these are its first messages.
    pending_bodies: [Vec<u8>; 2],
    /// Exchanges with a non-JSON body before the first JSON-RPC message
    /// (OAuth discovery, health checks, throwaway requests).
    prelude: u32,
    relooks: RelookBudget,
    pub(super) last_ns: u64,
    /// Plaintext from the TLS library (transport `https`).
    tls: bool,
    /// Ends (local, remote), once the kernel named them.
    ends: Option<(Endpoint, Endpoint)>,
    /// Served connections: the local client paired through a request body
    /// (see [`LocalEnds`]), while the ends cannot name it.
    paired_client: Option<ProcKey>,
    /// This connection's ends are in [`LocalEnds`].
    registered: bool,
    /// `initialize` requests seen: each opens a new session, also on a
    /// keep-alive connection that carried another one (mcp-remote's
    /// transport probe, then the real session).
    opened: u32,
    /// Per `Direction`: a chunk went that way.
    seen: [bool; 2],
    /// A legacy HTTP+SSE GET stream: the session its `endpoint` event
    /// named, and the hash of that session's id.
    legacy: Option<(SessionKey, Option<String>)>,
}

/// The side a bare JSON body was sent on: a JSON-RPC request or
/// notification (or a batch of them) goes with requests, a result or an
/// error with responses; `None` for anything else.
fn body_side(body: &[u8]) -> Option<Side> {
    if body.is_empty() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let first = match &v {
        serde_json::Value::Array(items) => items.first()?,
        other => other,
    };
    let o = first.as_object()?;
    if o.contains_key("method") {
        Some(Side::Requests)
    } else if o.contains_key("result") || o.contains_key("error") {
        Some(Side::Responses)
    } else {
        None
    }
}

impl HttpConn {
    /// Counts the messages this connection has in progress (one per
    /// direction at most) as lost, under `reason` of
    /// `frame_errors_total`: the connection ends before they did.
    pub(super) fn count_cut(&self, metrics: &Metrics, reason: &str) {
        let cut = self.halves.iter().flatten().filter(|h| h.in_progress() > 0).count();
        if cut > 0 {
            metrics
                .pipeline
                .frame_errors
                .with_label_values(&[reason])
                .inc_by(cut as u64);
        }
    }
}

impl Pipeline {
    /// A TCP chunk, or TLS plaintext (either direction).
    pub(super) fn on_tcp_chunk(&mut self, c: &Chunk, sink: &mut impl Sink) {
        let tls = c.fd_kind == FdKind::Tls;
        let id = ConnId {
            proc: c.proc,
            // A TLS connection is its SSL object (in `inode`), whatever
            // socket it is tied to; the kernel keys it the same way.
            fd: if tls { monitor_common::TLS_STREAM_FD } else { c.fd },
            inode: c.inode,
        };
        let fresh = || HttpConn {
            halves: [None, None],
            sides: [None, None],
            answering: [None, None],
            serves: None,
            requests: VecDeque::new(),
            streams: FxHashMap::default(),
            h2: false,
            h2_joined: false,
            session: None,
            rejected: false,
            unclassified_bytes: 0,
            pending_bodies: [Vec::new(), Vec::new()],
            prelude: 0,
            relooks: RelookBudget::default(),
            opened: 0,
            last_ns: c.ts_ns,
            tls,
            ends: None,
            paired_client: None,
            registered: false,
            seen: [false, false],
            legacy: None,
        };
        let mut conn = match self.http.conns.remove(&id) {
            // An SSL object freed and its address reused for the next
            // connection: the kernel forgot the stream at SSL_free, so the
            // direction starts again with NEW_STREAM.
            Some(conn)
                if tls
                    && c.flag(chunk_flags::NEW_STREAM)
                    && !c.flag(chunk_flags::RESUMED)
                    && (conn.rejected || conn.seen[c.direction as usize]) =>
            {
                // A message the old connection had in progress ends here
                // (its SSL object freed, or found reused, mid-message).
                conn.count_cut(&self.metrics, "connection_replaced");
                fresh()
            }
            Some(mut conn) if conn.rejected => match self.relook_conn(&mut conn, id, c, sink) {
                Some(budget) => HttpConn {
                    relooks: budget,
                    ..fresh()
                },
                None => conn,
            },
            Some(conn) => conn,
            None => fresh(),
        };
        conn.last_ns = c.ts_ns;
        conn.seen[c.direction as usize] = true;
        // The latest the kernel knows (a TLS socket may be named late).
        if let Some(e) = ends(&c.conn) {
            if conn.ends != Some(e) {
                conn.ends = Some(e);
                conn.registered = false;
            }
        }
        if !conn.rejected {
            self.feed_conn(&mut conn, id, c, sink);
        }
        if let (false, Some(serves), Some(ends)) = (conn.registered, conn.serves, conn.ends) {
            self.http.local.register(ends, id.proc, serves, self.cfg.max_streams);
            conn.registered = true;
        }
        self.insert_conn(id, conn);
    }

    fn feed_conn(&mut self, conn: &mut HttpConn, id: ConnId, c: &Chunk, sink: &mut impl Sink) {
        let d = c.direction as usize;
        if conn.sides[d].is_none() {
            // HTTP/2 first: its preface would pass for a request line.
            if let Some(side) = h2::sniff(&c.data) {
                conn.h2 = true;
                self.set_side(conn, d, side, H2Start::Fresh);
            } else if conn.h2 || (c.data.len() >= 9 && h2::looks_like_frames(&c.data)) {
                // The other direction's frames were seen, or capture joined
                // an HTTP/2 connection in progress.
                conn.h2 = true;
                let side = match conn.sides[1 - d] {
                    Some(Side::Requests) => Side::Responses,
                    Some(Side::Responses) => Side::Requests,
                    // Told by the frames (a head's :status or :method, a
                    // body of events); else whoever reads bodies of JSON-RPC
                    // requests on a client-opened stream serves, and the
                    // kernel discovers a client on its first request.
                    // A body held from before tells too (Go's server may
                    // first write a WINDOW_UPDATE, which tells nothing).
                    None => match h2::side_of_frames(&c.data)
                        .or_else(|| body_side(&conn.pending_bodies[1 - d]).map(Side::other))
                        .or_else(|| body_side(&conn.pending_bodies[d]))
                    {
                        Some(side) => side,
                        // Connection-level frames alone (a SETTINGS ack, a
                        // window update) tell nothing: taken for requests,
                        // a client's first read would make it serve, and
                        // every event of its session would lose the other
                        // end's process. The next bytes decide.
                        None if h2::tells_nothing(&c.data) => return,
                        None => Side::Requests,
                    },
                };
                // Its start (the preface, or a server's first SETTINGS) was
                // not seen: the header table is known only from here on,
                // and frames are looked for unless these bytes start at one.
                conn.h2_joined = true;
                let start = if h2::looks_like_frames(&c.data) {
                    H2Start::AtFrame
                } else {
                    H2Start::Anywhere
                };
                self.set_side(conn, d, side, start);
            }
            // Bodies held while the connection could not be told are its
            // first messages: the other direction's was read before this.
            if let (true, Some(side)) = (conn.h2, conn.sides[d]) {
                let other = 1 - d;
                if conn.sides[other].is_none() && !conn.pending_bodies[other].is_empty() {
                    self.set_side(conn, other, side.other(), H2Start::Anywhere);
                }
                for dir in [other, d] {
                    self.replay_pending_body(conn, id, dir, c.ts_ns, sink);
                }
                if conn.rejected {
                    return;
                }
            }
        }
        if conn.sides[d].is_none() {
            let side = match (sniff(&c.data), conn.sides[1 - d]) {
                (Some(s), _) => s,
                (None, Some(Side::Requests)) => Side::Responses,
                (None, Some(Side::Responses)) => Side::Requests,
                (None, None) => {
                    // Every request and status line starts with an upper-case
                    // letter: anything else (TLS records, binary protocols)
                    // is not HTTP/1.x, and is dropped at once so that it
                    // costs no more capture. Except a JSON body: the kernel
                    // discovers a process on one, so capture can start in
                    // the middle of a response whose head went out in an
                    // earlier send (uvicorn sends head and body apart);
                    // wait for the next request or status line instead.
                    let first = c.data.trim_ascii_start().first().copied();
                    let json_body = matches!(first, Some(b'{' | b'['));
                    // The rest of a body held from the previous read.
                    let more_body = !conn.pending_bodies[d].is_empty();
                    if first.is_some_and(|b| !b.is_ascii_uppercase()) && !json_body && !more_body {
                        self.reject_conn_state(conn, id, "not_http", sink);
                        return;
                    }
                    if json_body || more_body {
                        conn.pending_bodies[d].extend_from_slice(&c.data);
                    }
                    conn.unclassified_bytes += c.data.len() as u64;
                    if conn.unclassified_bytes > self.cfg.max_pending_stream_bytes.min(64 * 1024) {
                        self.reject_conn_state(conn, id, "not_http", sink);
                    }
                    return;
                }
            };
            let joined = sniff(&c.data).is_none();
            self.set_side(conn, d, side, if joined { H2Start::Anywhere } else { H2Start::Fresh });
            // HTTP/1.x: a body whose head was not seen is not taken up.
            conn.pending_bodies = [Vec::new(), Vec::new()];
        }
        let mut outs = Vec::new();
        if let Some(half) = conn.halves[d].as_mut() {
            if c.flag(chunk_flags::GAP_BEFORE) {
                // Records lost just before (ring buffer full): what the half
                // holds is not continued by these bytes.
                half.gap(&mut |o| outs.push(o));
            }
            half.feed(&c.data, &mut |o| outs.push(o));
            if c.has_gap() {
                half.gap(&mut |o| outs.push(o));
            }
            if half.enforce_budget(&mut |o| outs.push(o)) {
                self.metrics
                    .pipeline
                    .frame_errors
                    .with_label_values(&["memory_budget"])
                    .inc();
            }
        }
        for o in outs {
            if conn.rejected {
                break;
            }
            self.on_http_output(conn, id, d, o, c.ts_ns, sink);
        }
    }

    /// The JSON body direction `dir` held before the connection was found
    /// to be HTTP/2, as the body of a stream whose head was not seen.
    fn replay_pending_body(&mut self, conn: &mut HttpConn, id: ConnId, dir: usize, ts_ns: u64, sink: &mut impl Sink) {
        let data = std::mem::take(&mut conn.pending_bodies[dir]);
        if data.is_empty() || conn.sides[dir].is_none() || conn.rejected {
            return;
        }
        let meta = Arc::new(HttpMeta {
            version: HttpVersion::H2,
            ..HttpMeta::default()
        });
        let outs = [
            HttpOutput::Payload {
                meta: meta.clone(),
                data,
                sse_event: None,
                sse_id: None,
            },
            HttpOutput::End(meta),
        ];
        for o in outs {
            if conn.rejected {
                break;
            }
            self.on_http_output(conn, id, dir, o, ts_ns, sink);
        }
    }

    /// Sets direction `d` to carry `side`, captured from `start` (for
    /// HTTP/1.x, anything but `Fresh` means joined in progress).
    fn set_side(&mut self, conn: &mut HttpConn, d: usize, side: Side, start: H2Start) {
        conn.sides[d] = Some(side);
        let half = if conn.h2 {
            HttpHalf::new_h2(side, self.cfg.max_frame, start)
        } else {
            HttpHalf::new(side, self.cfg.max_frame, start != H2Start::Fresh)
        };
        conn.halves[d] = Some(half.with_budget(&self.budget));
        // Ingress requests: this process serves.
        conn.serves = Some((side == Side::Requests) == (d == Direction::Ingress as usize));
    }

    fn on_http_output(
        &mut self,
        conn: &mut HttpConn,
        id: ConnId,
        d: usize,
        o: HttpOutput,
        ts_ns: u64,
        sink: &mut impl Sink,
    ) {
        let side = conn.sides[d].expect("a half has a side");
        match o {
            HttpOutput::Head(meta) => match side {
                Side::Requests if meta.stream.is_some() => {
                    if conn.sides[1 - d].is_none() {
                        // Responses follow: their frames start from here,
                        // their table is known only if the connection's is.
                        let start = if conn.h2_joined {
                            H2Start::AtFrame
                        } else {
                            H2Start::Fresh
                        };
                        self.set_side(conn, 1 - d, Side::Responses, start);
                    }
                    if conn.streams.len() >= MAX_INFLIGHT_REQUESTS {
                        // Streams whose responses never came (reset, or lost).
                        let oldest = conn.streams.keys().min().copied();
                        conn.streams.retain(|s, _| Some(*s) != oldest);
                    }
                    conn.streams.insert(meta.stream.unwrap_or_default(), meta);
                }
                Side::Responses if meta.stream.is_some() => {}
                Side::Requests => {
                    if conn.sides[1 - d].is_none() {
                        self.set_side(conn, 1 - d, Side::Responses, H2Start::Fresh);
                    }
                    if let Some(h) = conn.halves[1 - d].as_mut() {
                        h.expect_response(meta.method.as_deref() == Some("HEAD"));
                    }
                    if conn.requests.len() >= MAX_INFLIGHT_REQUESTS {
                        conn.requests.pop_front();
                    }
                    conn.requests.push_back(meta);
                }
                Side::Responses => {
                    if !meta.status.is_some_and(|s| (100..200).contains(&s)) {
                        conn.answering[d] = conn.requests.pop_front();
                    }
                }
            },
            HttpOutput::Payload {
                meta,
                data,
                sse_event,
                sse_id,
            } => {
                // The legacy transport's first event names the POST endpoint.
                if sse_event.as_deref() == Some("endpoint") {
                    self.on_sse_endpoint(conn, id, &data);
                    return;
                }
                // Judge before taking a session: a body that is not JSON-RPC
                // on a connection that has carried none is not MCP.
                let decoded = match jsonrpc::decode(&data, &self.cfg.limits) {
                    Ok(d) => d,
                    // On a connection that carries MCP, a body that does not
                    // claim to be JSON ("Accepted" with a 202 of the legacy
                    // transport, often without a type) is no message and no
                    // error. Every body is decoded first: a server cannot
                    // hide JSON-RPC by leaving out its type.
                    Err(_)
                        if conn.session.is_some()
                            && sse_event.is_none()
                            && !meta.content_type.as_deref().is_some_and(is_json_type) =>
                    {
                        return;
                    }
                    Err(e) => {
                        self.metrics
                            .pipeline
                            .frame_errors
                            .with_label_values(&[e.reason()])
                            .inc();
                        if conn.session.is_none() {
                            // A connection is not judged by its first
                            // exchanges: MCP clients that follow the
                            // authorization spec ask for
                            // /.well-known/oauth-protected-resource first
                            // on the same keep-alive connection, and any
                            // client can send a throwaway request to blind
                            // us. Bounded per body, and counted.
                            conn.prelude += 1;
                            self.metrics.pipeline.prelude_frames.inc();
                            if conn.prelude > self.cfg.max_prelude_frames {
                                self.reject_conn_state(conn, id, e.reason(), sink);
                            }
                        }
                        return;
                    }
                };
                let request = match (side, meta.stream) {
                    (Side::Requests, _) => Some(meta.clone()),
                    (Side::Responses, Some(stream)) => conn.streams.get(&stream).cloned(),
                    (Side::Responses, None) => conn.answering[d].clone(),
                };
                let session_id = meta
                    .session_id
                    .as_deref()
                    .or(request.as_ref().and_then(|r| r.session_id.as_deref()));
                // The stateless revision has no `initialize`: one, even
                // with an `Mcp-Method` header (clients send it on every
                // request for servers of either revision), opens a stateful
                // session, new also on a connection that carried another.
                let opens = side == Side::Requests && session_id.is_none() && opens_session(&decoded);
                let legacy = match side {
                    // A POST to an endpoint a legacy event stream named, or
                    // a request of the stateless revision.
                    Side::Requests if session_id.is_none() => self.legacy_post(conn, id, &meta).or_else(|| {
                        (meta.mcp_method.is_some() && !opens).then(|| (self.stateless_session(conn, id), None))
                    }),
                    Side::Responses => conn.legacy.clone(),
                    Side::Requests => None,
                };
                let (hash, key) = match legacy {
                    Some((key, hash)) => {
                        conn.session = Some(key);
                        (hash, key)
                    }
                    None => {
                        if opens {
                            conn.opened = conn.opened.wrapping_add(1);
                            conn.session = None;
                        }
                        let (hash, key) = self.http_session(conn, id, session_id);
                        if opens {
                            if self.http.opened_by_pair.len() >= 2 * self.cfg.max_sessions {
                                self.http.opened_by_pair.clear();
                            }
                            let pair = self.pair_of_ends(conn, id);
                            self.http.opened_by_pair.insert(pair, key);
                        }
                        (hash, key)
                    }
                };
                let http = HttpInfo {
                    version: meta.version.as_str(),
                    method: request.as_ref().and_then(|r| r.method.clone()),
                    path: request.as_ref().and_then(|r| r.path.as_deref().map(export_path)),
                    status: meta.status,
                    session_id_hash: hash,
                    sse_event_id: sse_id,
                    local: conn.ends.map(|e| e.0.to_string()),
                    remote: conn.ends.map(|e| e.1.to_string()),
                    header_mismatch: Vec::new(),
                    mcp_method: (side == Side::Requests).then(|| meta.mcp_method.clone()).flatten(),
                    mcp_name: (side == Side::Requests).then(|| meta.mcp_name.clone()).flatten(),
                };
                let flow = match side {
                    Side::Requests => Flow::ClientToServer,
                    Side::Responses => Flow::ServerToClient,
                };
                // The client process: this one, or for a server, the local
                // process at the other end of the connection (both ends of
                // a connection on this host are paired through its tuple).
                let peer = match conn.serves {
                    Some(false) => {
                        if (conn.tls || conn.ends.is_none()) && side == Side::Requests {
                            // A server that read this already is named now.
                            let conns = &self.http.conns;
                            let unnamed = |c: ConnId| conns.get(&c).is_some_and(|c| c.paired_client.is_none());
                            if let Some(server_conn) = self.http.local.client_wrote(&data, id.proc, ts_ns, unnamed) {
                                if let Some(c) = self.http.conns.get_mut(&server_conn) {
                                    c.paired_client = Some(id.proc);
                                }
                            }
                        }
                        Some(id.proc)
                    }
                    Some(true) => match conn
                        .ends
                        .and_then(|e| self.http.local.client_of(e))
                        .or(conn.paired_client)
                    {
                        Some(client) => {
                            if conn.tls && side == Side::Requests {
                                self.http.local.server_named(&data, client, ts_ns);
                            }
                            Some(client)
                        }
                        None if side != Side::Requests => None,
                        None => {
                            // Reads whose client may be on this host: ends
                            // unknown, or a loopback peer.
                            let unpaired = conn.ends.is_none_or(|(_, r)| conn.tls && r.is_loopback());
                            let client = self.http.local.server_read(&data, id, ts_ns, unpaired);
                            // The response and later messages of this
                            // connection name it too.
                            if client.is_some() {
                                conn.paired_client = client;
                            }
                            client
                        }
                    },
                    None => None,
                };
                let mirror = conn.serves == Some(false) && conn.ends.is_some_and(|(_, r)| self.http.local.serves(&r));
                // A resumed stream (Last-Event-ID) may repeat events this
                // session already reported: same id, same data.
                let replay = http.sse_event_id.as_ref().map(|eid| sse_event_digest(eid, &data));
                if let Some(h) = replay {
                    if self.sessions.get(&key).is_some_and(|st| st.sse_events.contains(h)) {
                        self.metrics.pipeline.sse_replayed.inc();
                        return;
                    }
                }
                for msg in decoded.into_messages() {
                    let route = Route {
                        key,
                        flow,
                        peer,
                        mirror,
                    };
                    if !self.handle_message(route, msg, ts_ns, Some(http.clone()), sink) {
                        self.reject_conn_state(conn, id, "not_mcp", sink);
                        self.drop_session(key, sink);
                        return;
                    }
                }
                if let (Some(h), Some(st)) = (replay, self.sessions.get_mut(&key)) {
                    st.sse_events.insert(h);
                }
            }
            HttpOutput::End(meta) => {
                if let (Side::Responses, Some(stream)) = (side, meta.stream) {
                    conn.streams.remove(&stream);
                }
            }
            HttpOutput::Error(reason) => {
                self.metrics.pipeline.frame_errors.with_label_values(&[reason]).inc();
            }
        }
    }

    /// A chunk of a connection judged not MCP: the budget left to judge it
    /// afresh, when the kernel resumed it or (a chunk on its way when the
    /// connection was ignored) it starts like MCP; `None` to keep ignoring it.
    fn relook_conn(
        &mut self,
        conn: &mut HttpConn,
        id: ConnId,
        c: &Chunk,
        sink: &mut impl Sink,
    ) -> Option<RelookBudget> {
        let resumed = c.flag(chunk_flags::RESUMED);
        if !resumed && !relook::looks_like_mcp(&c.data, self.cfg.discovery_window) {
            return None;
        }
        let mut budget = conn.relooks;
        let granted = budget.take(c.ts_ns, self.cfg.max_relooks_per_minute);
        let result = if granted { "resumed" } else { "over_budget" };
        self.metrics.pipeline.stream_relooks.with_label_values(&[result]).inc();
        let both = [Direction::Ingress, Direction::Egress].map(|direction| KernelStream {
            pid: id.proc.pid,
            fd: id.fd,
            inode: id.inode,
            direction,
        });
        if !granted {
            if budget.first_refusal() {
                self.quiet(&both, budget.window_end(), sink);
            }
            conn.relooks = budget;
            return None;
        }
        // The kernel resumed both directions on its hit; in-flight chunks
        // found here need it told.
        if !resumed {
            for k in both {
                sink.control(Control::CaptureStream(k));
            }
        }
        Some(budget)
    }

    fn insert_conn(&mut self, id: ConnId, conn: HttpConn) {
        make_room(&mut self.http.conns, self.cfg.max_streams, |c| c.last_ns, &self.metrics);
        self.http.conns.insert(id, conn);
    }

    /// Stops capturing a connection held in the table.
    pub(super) fn reject_conn(&mut self, id: ConnId, reason: &str, sink: &mut impl Sink) {
        if let Some(mut conn) = self.http.conns.remove(&id) {
            self.reject_conn_state(&mut conn, id, reason, sink);
            self.http.conns.insert(id, conn);
        }
    }

    fn reject_conn_state(&mut self, conn: &mut HttpConn, id: ConnId, reason: &str, sink: &mut impl Sink) {
        if conn.rejected {
            return;
        }
        conn.rejected = true;
        conn.halves = [None, None];
        conn.requests.clear();
        conn.streams.clear();
        conn.pending_bodies = [Vec::new(), Vec::new()];
        self.metrics
            .pipeline
            .streams
            .with_label_values(&[&format!("rejected:{reason}")])
            .inc();
        for direction in [Direction::Ingress, Direction::Egress] {
            sink.control(Control::IgnoreStream(KernelStream {
                pid: id.proc.pid,
                fd: id.fd,
                inode: id.inode,
                direction,
            }));
        }
    }
}
