//! Which session an HTTP message belongs to. Sessions are keyed by the
//! server process (when it is this one) and:
//! - Streamable HTTP: the hashed `Mcp-Session-Id`, so the POSTs, the GET
//!   stream and later connections of one MCP session meet in one session;
//!   before the server assigns an id (the `initialize` exchange) the
//!   connection stands for the session, and each `initialize` on it opens
//!   a new one;
//! - the legacy HTTP+SSE transport: the session id in the endpoint its GET
//!   stream named (`sse_endpoints` joins the POSTs of other connections);
//! - the stateless revision (`Mcp-Method`, no id): the pair of ends, or the
//!   session the pair's latest `initialize` opened.

use super::{ConnId, HttpConn};
use crate::{
    http::HttpMeta,
    jsonrpc,
    pipeline::{
        http_wire::{legacy_session_id, request_target, session_id_hash},
        Pipeline,
    },
    session::{SessionKey, TRANSPORT_HTTP, TRANSPORT_HTTPS, TRANSPORT_SSE},
};

impl Pipeline {
    /// The `endpoint` event of a legacy HTTP+SSE stream: this connection
    /// carries that session's server messages, and POSTs (of this process)
    /// to the endpoint its client messages.
    pub(super) fn on_sse_endpoint(&mut self, conn: &mut HttpConn, id: ConnId, data: &[u8]) {
        let Some(target) = std::str::from_utf8(data).ok().map(|s| request_target(s.trim())) else {
            self.metrics
                .pipeline
                .frame_errors
                .with_label_values(&["sse_bad_endpoint"])
                .inc();
            return;
        };
        let server = (conn.serves == Some(true)).then_some(id.proc);
        let (hash, n) = session_id_hash(legacy_session_id(target).unwrap_or(target));
        let key = SessionKey {
            transport_kind: TRANSPORT_SSE,
            server,
            conversation: n,
        };
        if self.http.sse_endpoints.len() >= self.cfg.max_sessions {
            self.http.sse_endpoints.clear();
        }
        self.http
            .sse_endpoints
            .insert((id.proc, target.to_owned()), (key, Some(hash.clone())));
        conn.legacy = Some((key, Some(hash)));
        conn.session = Some(key);
    }

    /// The legacy session of a POST (request head `meta`) on `conn`: the
    /// one whose stream named its target, or, when that stream was not
    /// seen (started before the monitor), the one its `sessionId` /
    /// `session_id` query parameter names.
    pub(super) fn legacy_post(
        &mut self,
        conn: &HttpConn,
        id: ConnId,
        meta: &HttpMeta,
    ) -> Option<(SessionKey, Option<String>)> {
        if meta.method.as_deref() != Some("POST") || meta.mcp_method.is_some() {
            return None;
        }
        let target = meta.path.as_deref()?;
        if let Some(found) = self.http.sse_endpoints.get(&(id.proc, target.to_owned())) {
            return Some(found.clone());
        }
        let sid = legacy_session_id(target)?;
        let (hash, n) = session_id_hash(sid);
        Some((
            SessionKey {
                transport_kind: TRANSPORT_SSE,
                server: (conn.serves == Some(true)).then_some(id.proc),
                conversation: n,
            },
            Some(hash),
        ))
    }

    /// The session of a request of the stateless revision (`Mcp-Method`
    /// header, no session id): every request may come on a new connection,
    /// so the session is the pair of ends that talk. The server's view: this
    /// server and the client process when it is on this host, else the
    /// client's address (not its port, which changes per connection). The
    /// client's view: this process and the server's address and port.
    pub(super) fn stateless_session(&self, conn: &HttpConn, id: ConnId) -> SessionKey {
        let pair = self.pair_of_ends(conn, id);
        if let Some(key) = self.http.opened_by_pair.get(&pair) {
            return *key;
        }
        SessionKey {
            transport_kind: if conn.tls { TRANSPORT_HTTPS } else { TRANSPORT_HTTP },
            server: (conn.serves == Some(true)).then_some(id.proc),
            conversation: pair,
        }
    }

    /// Who talks on `conn`, whatever the connection: the server's view, this
    /// server and the client process (on this host) or the client's
    /// address; the client's view, this process and the server's address
    /// and port; per connection while the ends are unknown.
    pub(super) fn pair_of_ends(&self, conn: &HttpConn, id: ConnId) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        "stateless".hash(&mut h);
        let serves = conn.serves == Some(true);
        match (serves, conn.ends) {
            (true, Some(ends)) => match self.http.local.client_of(ends) {
                Some(client) => client.hash(&mut h),
                None => ends.1.addr.hash(&mut h),
            },
            (false, Some((_, r))) => {
                id.proc.hash(&mut h);
                r.hash(&mut h);
            }
            // Ends unknown (TLS before its socket is known): per connection.
            (_, None) => id.hash(&mut h),
        }
        h.finish()
    }

    /// The session of a message on `conn` carrying `session_id`.
    pub(super) fn http_session(
        &mut self,
        conn: &mut HttpConn,
        id: ConnId,
        session_id: Option<&str>,
    ) -> (Option<String>, SessionKey) {
        let server = (conn.serves == Some(true)).then_some(id.proc);
        let transport_kind = if conn.tls { TRANSPORT_HTTPS } else { TRANSPORT_HTTP };
        let Some(sid) = session_id else {
            let key = *conn.session.get_or_insert(SessionKey {
                transport_kind,
                server,
                // The connection stands for the session until an id shows
                // (each `initialize` on it for a new one).
                conversation: (id.fd as u32 as u64) << 32
                    ^ id.inode
                    ^ id.proc.start_ns
                    ^ u64::from(conn.opened).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            });
            return (None, key);
        };
        let (text, n) = session_id_hash(sid);
        if self.http.session_ids.len() >= 2 * self.cfg.max_sessions {
            self.http.session_ids.clear();
        }
        let fallback = SessionKey {
            transport_kind,
            server,
            conversation: n,
        };
        let key = *self
            .http
            .session_ids
            .entry((server, transport_kind, n))
            .or_insert(conn.session.unwrap_or(fallback));
        conn.session = Some(key);
        (Some(text), key)
    }
}

/// A request body that starts a stateful session: an `initialize` request,
/// alone or in a batch.
pub(super) fn opens_session(d: &jsonrpc::Decoded<'_>) -> bool {
    let opens =
        |m: &jsonrpc::Message<'_>| m.kind == jsonrpc::Kind::Request && m.method.as_deref() == Some("initialize");
    match d {
        jsonrpc::Decoded::Single(m) => opens(m),
        jsonrpc::Decoded::Batch(v) => v.iter().any(opens),
    }
}
