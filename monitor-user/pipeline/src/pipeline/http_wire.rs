//! What the HTTP stage reads off the wire: a connection's identity and its two ends,
//! whether a direction starts with a request or a response, request targets
//! and the legacy transport's session ids in them, and the digests that
//! recognise an SSE event or a request body again.

use monitor_common::ConnTuple;
use sha2::{Digest, Sha256};

use super::request::{clip, MAX_NAME};
use crate::{http::h1::Side, observation::ProcKey};

/// One connection as seen by one process: its socket (`fd`, `inode`), or
/// for TLS its `SSL` object (`inode`, with `TLS_STREAM_FD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct ConnId {
    pub(super) proc: ProcKey,
    pub(super) fd: i32,
    pub(super) inode: u64,
}

/// One end of a TCP connection; IPv4 addresses in their v4-mapped IPv6
/// form, so that an IPv4 client and a server listening on `::` name the
/// same address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Endpoint {
    pub(super) addr: [u8; 16],
    pub(super) port: u16,
}

impl Endpoint {
    /// 127.0.0.0/8, ::1, or v4-mapped loopback: an end on this host.
    pub(super) fn is_loopback(&self) -> bool {
        let v6 = std::net::Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) => v4.is_loopback(),
            None => v6.is_loopback(),
        }
    }
}

impl std::fmt::Display for Endpoint {
    /// `address:port`, IPv6 in brackets, v4-mapped shown as IPv4.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v6 = std::net::Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) => write!(f, "{v4}:{}", self.port),
            None => write!(f, "[{v6}]:{}", self.port),
        }
    }
}

/// (local, remote) ends of a tuple the kernel filled.
pub(super) fn ends(t: &ConnTuple) -> Option<(Endpoint, Endpoint)> {
    let norm = |a: &[u8; 16]| -> [u8; 16] {
        if t.family == 2 {
            std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3])
                .to_ipv6_mapped()
                .octets()
        } else {
            *a
        }
    };
    (t.family == 2 || t.family == 10).then(|| {
        (
            Endpoint {
                addr: norm(&t.local_addr),
                port: t.local_port,
            },
            Endpoint {
                addr: norm(&t.remote_addr),
                port: t.remote_port,
            },
        )
    })
}

/// What the first bytes of a direction say it carries.
pub(super) fn sniff(data: &[u8]) -> Option<Side> {
    let d = data.trim_ascii_start();
    if d.starts_with(b"HTTP/1.") {
        return Some(Side::Responses);
    }
    let method_end = d.iter().position(|b| *b == b' ')?;
    let method = &d[..method_end];
    let rest = &d[method_end + 1..];
    (!method.is_empty()
        && method.len() <= 10
        && method.iter().all(u8::is_ascii_uppercase)
        && (rest.starts_with(b"/") || rest.starts_with(b"http")))
    .then_some(Side::Requests)
}

/// A content type that announces JSON (`application/json`,
/// `application/json-rpc`, `...+json`).
pub(super) fn is_json_type(t: &str) -> bool {
    let t = t.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    t.contains("json")
}

/// The request target of an endpoint URL as a POST to it carries it:
/// `http://host:port/messages/?session_id=1` becomes
/// `/messages/?session_id=1`.
pub(super) fn request_target(url: &str) -> &str {
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..])
        }
        None => url,
    }
}

/// The legacy transport's session id in a request target: the value of
/// its `sessionId` (TypeScript SDK) or `session_id` (Python SDK) query
/// parameter.
pub(super) fn legacy_session_id(target: &str) -> Option<&str> {
    let query = target.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name.eq_ignore_ascii_case("sessionid") || name.eq_ignore_ascii_case("session_id"))
            .then_some(value)
            .filter(|v| !v.is_empty())
    })
}

/// A request target as exported: query values (session ids, tokens)
/// replaced by `[REDACTED]`, names kept; clipped like other names.
pub(super) fn export_path(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return clip(target);
    };
    let mut out = String::with_capacity(target.len().min(MAX_NAME + 8));
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) => {
                out.push_str(name);
                out.push('=');
                out.push_str(crate::redact::REDACTED);
            }
            // A bare value may be the secret itself.
            None => out.push_str(crate::redact::REDACTED),
        }
    }
    clip(&out)
}

/// Identifies an SSE event by its id and data. SipHash with fixed keys:
/// collisions would need both the id and the data of another event of the
/// same session, which the sender of the event chooses anyway.
pub(super) fn sse_event_digest(id: &str, data: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    data.hash(&mut h);
    h.finish()
}

/// Identifies a request body for pairing the two ends of a connection.
pub(super) fn body_digest(body: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    body.hash(&mut h);
    h.finish()
}

/// `sha256:` and the first 16 hex digits of SHA-256 over a domain tag and
/// the session id: the id itself (a bearer of the session) never leaves.
pub(super) fn session_id_hash(id: &str) -> (String, u64) {
    let d = Sha256::new()
        .chain_update(b"mcp-monitor/mcp-session-id\0")
        .chain_update(id.as_bytes())
        .finalize();
    let n = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    (format!("sha256:{n:016x}"), n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"POST /mcp HTTP/1.1\r\n"), Some(Side::Requests));
        assert_eq!(sniff(b"GET http://x/ HTTP/1.1\r\n"), Some(Side::Requests));
        assert_eq!(sniff(b"HTTP/1.1 200 OK\r\n"), Some(Side::Responses));
        assert_eq!(sniff(b"\x16\x03\x01\x02\x00"), None, "TLS");
        assert_eq!(sniff(b"{\"jsonrpc\""), None);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n"), None, "HTTP/2 preface");
    }

    #[test]
    fn request_targets_and_legacy_session_ids() {
        assert_eq!(export_path("/mcp"), "/mcp");
        assert_eq!(
            export_path("/messages/?session_id=abc&x=1"),
            "/messages/?session_id=[REDACTED]&x=[REDACTED]"
        );
        assert_eq!(export_path("/m?tok"), "/m?[REDACTED]");
        assert_eq!(
            request_target("http://h:1/messages/?session_id=a"),
            "/messages/?session_id=a"
        );
        assert_eq!(request_target("https://h"), "/");
        assert_eq!(request_target("/message?sessionId=b"), "/message?sessionId=b");
        assert_eq!(legacy_session_id("/message?sessionId=b"), Some("b"));
        assert_eq!(legacy_session_id("/messages/?x=1&session_id=c#f"), Some("c"));
        assert_eq!(legacy_session_id("/messages/?session_id="), None);
        assert_eq!(legacy_session_id("/mcp"), None);
        assert!(is_json_type("application/json; charset=utf-8"));
        assert!(is_json_type("application/vnd.api+json"));
        assert!(!is_json_type("text/plain; charset=utf-8"));
    }

    #[test]
    fn session_ids_are_hashed() {
        let (text, n) = session_id_hash("7f0c1b9e-secret-session");
        assert!(text.starts_with("sha256:") && text.len() == 23, "{text}");
        assert!(!text.contains("secret"));
        assert_eq!(session_id_hash("7f0c1b9e-secret-session").1, n);
        assert_ne!(session_id_hash("other").1, n);
    }
}
