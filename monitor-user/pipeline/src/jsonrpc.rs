//! JSON-RPC 2.0 decoding of one frame.
//!
//! Only the envelope is parsed: `params`, `result` and `error.data` stay
//! borrowed raw JSON until something needs them, which keeps decoding cheap
//! for large payloads. Input is untrusted: nesting depth is checked before
//! parsing (a string-aware scan, so deep input cannot exhaust the stack), and
//! batches are capped.

use std::{borrow::Cow, fmt};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

/// Decoder limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Deepest array/object nesting accepted.
    pub max_depth: usize,
    /// Most messages accepted in one batch.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 64,
            max_batch: 256,
        }
    }
}

/// A JSON-RPC id. Numbers that are not integers keep their text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Id {
    /// An integer id that fits in an `i64`.
    Int(i64),
    /// A string id.
    Str(String),
    /// Non-integer number, kept as written.
    Other(String),
    /// A `null` id (error responses to unreadable requests carry it); also stands for an error response's missing id.
    Null,
}

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Id::Int(i) => s.serialize_i64(*i),
            Id::Str(v) => s.serialize_str(v),
            Id::Other(v) => match serde_json::from_str::<serde_json::Number>(v) {
                Ok(n) => n.serialize(s),
                Err(_) => s.serialize_str(v),
            },
            Id::Null => s.serialize_none(),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Int(i) => write!(f, "{i}"),
            Id::Str(s) => write!(f, "{s:?}"),
            Id::Other(s) => f.write_str(s),
            Id::Null => f.write_str("null"),
        }
    }
}

/// The four JSON-RPC message shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Has a method and an id: expects a response.
    Request,
    /// Has a method and no id: expects no response.
    Notification,
    /// A success response: carries `result`.
    Response,
    /// An error response: carries `error`.
    Error,
}

impl Kind {
    /// Value of the event `type` field and the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Notification => "notification",
            Kind::Response => "response",
            Kind::Error => "error",
        }
    }
}

/// The `error` member of an error response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcError {
    /// The JSON-RPC error code (`-32601`: method not found...): the event's `error_code`.
    pub code: i64,
    /// Kept for detectors; never written out unredacted.
    pub message: String,
}

/// One decoded message, borrowing from the frame.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    /// Which of the four shapes the message is.
    pub kind: Kind,
    /// The id; `None` for notifications, `Some(Id::Null)` for an error response without one.
    pub id: Option<Id>,
    /// Method of a request or notification; `None` for responses.
    pub method: Option<Cow<'a, str>>,
    /// Raw `params` of a request or notification (an object or array), when present.
    pub params: Option<&'a RawValue>,
    /// Raw `result` of a success response.
    pub result: Option<&'a RawValue>,
    /// The `error` member of an error response (code and message).
    pub error: Option<RpcError>,
    /// The message's own bytes: the frame, or the member of a batch.
    pub raw: &'a [u8],
}

/// Why a frame is not JSON-RPC 2.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame is not valid UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// The frame does not start with `{` or `[`, or does not parse as JSON.
    #[error("not JSON")]
    NotJson,
    /// Arrays and objects nest deeper than `Limits::max_depth`.
    #[error("nesting deeper than the limit")]
    TooDeep,
    /// JSON, but not a JSON-RPC 2.0 message; the text says what is wrong.
    #[error("not a JSON-RPC 2.0 message: {0}")]
    NotJsonRpc(&'static str),
    /// A batch of more than `Limits::max_batch` messages.
    #[error("batch larger than the limit")]
    BatchTooLarge,
}

impl DecodeError {
    /// Stable label for `mcp_monitor_frame_errors_total{reason}`.
    pub fn reason(self) -> &'static str {
        match self {
            DecodeError::InvalidUtf8 => "invalid_utf8",
            DecodeError::NotJson => "not_json",
            DecodeError::TooDeep => "too_deep",
            DecodeError::NotJsonRpc(_) => "not_jsonrpc",
            DecodeError::BatchTooLarge => "batch_too_large",
        }
    }
}

/// A frame holds one message or a batch (2025-03-26 only, still parsed).
#[derive(Debug)]
pub enum Decoded<'a> {
    /// The frame is one message object.
    Single(Message<'a>),
    /// The frame is a batch (a JSON array): its messages, in order.
    Batch(Vec<Message<'a>>),
}

impl<'a> Decoded<'a> {
    /// The messages in order.
    pub fn into_messages(self) -> Vec<Message<'a>> {
        match self {
            Decoded::Single(m) => vec![m],
            Decoded::Batch(v) => v,
        }
    }
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<Cow<'a, str>>,
    // `present` keeps "id": null apart from a missing id.
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ErrorObject<'a> {
    code: i64,
    #[serde(borrow)]
    message: Cow<'a, str>,
}

/// True if `bytes` nests arrays/objects deeper than `limit`. Brackets inside
/// strings do not count. Linear, no allocation, and fast on the long text
/// runs MCP payloads are made of: it jumps to the next byte that can matter
/// (`"` and `\\` inside strings, with `memchr2`; quotes and brackets
/// outside, eight bytes at a time).
pub fn exceeds_depth(bytes: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut i = 0;
    while i < bytes.len() {
        i = if in_str {
            next_string_special(bytes, i)
        } else {
            next_structural(bytes, i)
        };
        let Some(&b) = bytes.get(i) else { break };
        if in_str {
            match b {
                b'\\' => i += 1, // skip the escaped byte
                b'"' => in_str = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_str = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > limit {
                        return true;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        i += 1;
    }
    false
}

/// Bitmask with the high bit set in each byte of `w` equal to `b`.
#[inline(always)]
fn eq_mask(w: u64, b: u8) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let x = w ^ (LO * b as u64);
    // Exact per-byte zero test (no false positives from borrows).
    !(((x & !HI).wrapping_add(!HI) | x) | !HI)
}

/// Index of the first `"` or `\\` at or after `i` (or `bytes.len()`):
/// `memchr2`, vectorised, since string contents are most of a message.
#[inline(always)]
fn next_string_special(bytes: &[u8], i: usize) -> usize {
    match bytes.get(i..) {
        Some(rest) => memchr::memchr2(b'"', b'\\', rest).map_or(bytes.len(), |k| i + k),
        None => bytes.len(),
    }
}

/// Index of the first quote or bracket at or after `i` (or `bytes.len()`).
#[inline(always)]
fn next_structural(bytes: &[u8], mut i: usize) -> usize {
    while i + 8 <= bytes.len() {
        let w = u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
        // '[' ']' '{' '}' are 0x5b 0x5d 0x7b 0x7d: clearing bits 0x02, 0x04
        // and 0x20 maps all four to 0x59. A few other bytes map there too
        // (Y _ y DEL); the caller re-checks the exact byte, so those only
        // cost a step, never a wrong answer.
        let folded = w & !0x2626_2626_2626_2626;
        let m = eq_mask(w, b'"') | eq_mask(folded, 0x59);
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && !matches!(bytes[i], b'"' | b'[' | b']' | b'{' | b'}') {
        i += 1;
    }
    i
}

fn parse_id(raw: &RawValue) -> Result<Id, DecodeError> {
    let t = raw.get();
    match t.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(t)
            .map(Id::Str)
            .map_err(|_| DecodeError::NotJson),
        Some(b'n') => Ok(Id::Null),
        Some(b'-' | b'0'..=b'9') => Ok(t
            .parse::<i64>()
            .map(Id::Int)
            .unwrap_or_else(|_| Id::Other(t.to_owned()))),
        _ => Err(DecodeError::NotJsonRpc("id is not a string or number")),
    }
}

fn message<'a>(env: Envelope<'a>, raw: &'a [u8]) -> Result<Message<'a>, DecodeError> {
    if env.jsonrpc.as_deref() != Some("2.0") {
        return Err(DecodeError::NotJsonRpc("jsonrpc is not \"2.0\""));
    }
    let id = env.id.map(parse_id).transpose()?;
    match (env.method, env.result, env.error) {
        (Some(method), None, None) => {
            let kind = match &id {
                None => Kind::Notification,
                Some(Id::Null) => return Err(DecodeError::NotJsonRpc("request id is null")),
                Some(_) => Kind::Request,
            };
            if let Some(p) = env.params {
                if !matches!(p.get().as_bytes().first(), Some(b'{' | b'[')) {
                    return Err(DecodeError::NotJsonRpc("params is not an object or array"));
                }
            }
            Ok(Message {
                kind,
                id,
                method: Some(method),
                params: env.params,
                result: None,
                error: None,
                raw,
            })
        }
        (None, Some(result), None) => {
            let id = id.ok_or(DecodeError::NotJsonRpc("response without id"))?;
            Ok(Message {
                kind: Kind::Response,
                id: Some(id),
                method: None,
                params: None,
                result: Some(result),
                error: None,
                raw,
            })
        }
        (None, None, Some(err)) => {
            let e: ErrorObject<'_> =
                serde_json::from_str(err.get()).map_err(|_| DecodeError::NotJsonRpc("malformed error object"))?;
            Ok(Message {
                kind: Kind::Error,
                id: Some(id.unwrap_or(Id::Null)),
                method: None,
                params: None,
                result: None,
                error: Some(RpcError {
                    code: e.code,
                    message: e.message.into_owned(),
                }),
                raw,
            })
        }
        (Some(_), _, _) => Err(DecodeError::NotJsonRpc("method together with result or error")),
        (None, Some(_), Some(_)) => Err(DecodeError::NotJsonRpc("both result and error")),
        (None, None, None) => Err(DecodeError::NotJsonRpc("no method, result or error")),
    }
}

fn classify_parse_error(frame: &[u8], e: &serde_json::Error) -> DecodeError {
    if std::str::from_utf8(frame).is_err() {
        return DecodeError::InvalidUtf8;
    }
    match e.classify() {
        serde_json::error::Category::Data => DecodeError::NotJsonRpc("unexpected member types"),
        _ => DecodeError::NotJson,
    }
}

/// Decodes one frame.
pub fn decode<'a>(frame: &'a [u8], limits: &Limits) -> Result<Decoded<'a>, DecodeError> {
    let first = frame.iter().find(|b| !b.is_ascii_whitespace()).copied();
    match first {
        Some(b'{') | Some(b'[') => {}
        _ => {
            return Err(if std::str::from_utf8(frame).is_err() {
                DecodeError::InvalidUtf8
            } else {
                DecodeError::NotJson
            });
        }
    }
    // serde_json does not validate UTF-8 inside members it skips, and
    // invalid UTF-8 is a protocol violation worth naming (and a way to make
    // parsers disagree), so check the whole frame.
    if std::str::from_utf8(frame).is_err() {
        return Err(DecodeError::InvalidUtf8);
    }
    if exceeds_depth(frame, limits.max_depth) {
        return Err(DecodeError::TooDeep);
    }
    if first == Some(b'[') {
        let items: Vec<&RawValue> = serde_json::from_slice(frame).map_err(|e| classify_parse_error(frame, &e))?;
        if items.is_empty() {
            return Err(DecodeError::NotJsonRpc("empty batch"));
        }
        if items.len() > limits.max_batch {
            return Err(DecodeError::BatchTooLarge);
        }
        let mut out = Vec::with_capacity(items.len());
        for raw in items {
            let env: Envelope<'_> = serde_json::from_str(raw.get())
                .map_err(|_| DecodeError::NotJsonRpc("batch member is not an object"))?;
            out.push(message(env, raw.get().as_bytes())?);
        }
        return Ok(Decoded::Batch(out));
    }
    let env: Envelope<'_> = serde_json::from_slice(frame).map_err(|e| classify_parse_error(frame, &e))?;
    Ok(Decoded::Single(message(env, frame)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(s: &str) -> Message<'_> {
        match decode(s.as_bytes(), &Limits::default()).unwrap() {
            Decoded::Single(m) => m,
            Decoded::Batch(_) => panic!("batch"),
        }
    }

    #[test]
    fn the_four_shapes() {
        let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#);
        assert_eq!(
            (m.kind, m.id, m.method.as_deref()),
            (Kind::Request, Some(Id::Int(1)), Some("tools/call"))
        );
        assert_eq!(m.params.unwrap().get(), r#"{"name":"echo"}"#);
        let m = one(r#"{"method":"notifications/initialized","jsonrpc":"2.0"}"#);
        assert_eq!(m.kind, Kind::Notification);
        let m = one(r#"{"result":{"tools":[]},"jsonrpc":"2.0","id":"a-1"}"#);
        assert_eq!((m.kind, m.id), (Kind::Response, Some(Id::Str("a-1".into()))));
        let m = one(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#);
        assert_eq!((m.kind, m.id.clone()), (Kind::Error, Some(Id::Null)));
        assert_eq!(m.error.unwrap().code, -32700);
    }

    #[test]
    fn batches() {
        let d = decode(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/progress","params":{}}]"#, &Limits::default()).unwrap();
        let v = d.into_messages();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].raw, br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
        assert_eq!(v[1].kind, Kind::Notification);
        assert_eq!(decode(b"[]", &Limits::default()).unwrap_err().reason(), "not_jsonrpc");
    }

    #[test]
    fn rejects() {
        let l = Limits::default();
        let cases: &[(&[u8], &str)] = &[
            (b"hello", "not_json"),
            (b"{\"jsonrpc\":\"2.0\",", "not_json"),
            (b"\xff\xfe{}", "invalid_utf8"),
            (b"{\"a\":\"\xff\"}", "invalid_utf8"),
            (br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#, "not_jsonrpc"),
            (br#"{"level":"info","msg":"hi"}"#, "not_jsonrpc"),
            (br#"{"jsonrpc":"2.0","id":1}"#, "not_jsonrpc"),
            (
                br#"{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":""}}"#,
                "not_jsonrpc",
            ),
            (br#"{"jsonrpc":"2.0","id":null,"method":"x"}"#, "not_jsonrpc"),
            (br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#, "not_jsonrpc"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"x","method":"y"}"#, "not_jsonrpc"),
            (br#"{"jsonrpc":"2.0","method":"x","params":3}"#, "not_jsonrpc"),
        ];
        for (input, reason) in cases {
            assert_eq!(
                decode(input, &l).unwrap_err().reason(),
                *reason,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn depth_limit_is_string_aware() {
        let l = Limits {
            max_depth: 4,
            max_batch: 4,
        };
        let ok = br#"{"jsonrpc":"2.0","method":"m","params":{"s":"[[[[[[[[[[{{{{{"}}"#;
        assert!(decode(ok, &l).is_ok());
        let deep = format!(
            r#"{{"jsonrpc":"2.0","method":"m","params":{}{}}}"#,
            "[".repeat(10),
            "]".repeat(10)
        );
        assert_eq!(decode(deep.as_bytes(), &l).unwrap_err(), DecodeError::TooDeep);
        // A million levels: rejected quickly, no stack overflow.
        let huge = "[".repeat(1_000_000);
        assert_eq!(
            decode(huge.as_bytes(), &Limits::default()).unwrap_err(),
            DecodeError::TooDeep
        );
    }

    #[test]
    fn escaped_method_and_float_id() {
        let m = one(r#"{"jsonrpc":"2.0","id":1.5,"method":"tools\/call"}"#);
        assert_eq!(m.method.as_deref(), Some("tools/call"));
        assert_eq!(m.id, Some(Id::Other("1.5".into())));
        assert_eq!(serde_json::to_string(&m.id).unwrap(), "1.5");
    }

    /// The obvious byte-at-a-time version, as the reference.
    fn exceeds_depth_naive(bytes: &[u8], limit: usize) -> bool {
        let (mut depth, mut in_str, mut esc) = (0usize, false, false);
        for &b in bytes {
            if in_str {
                if esc {
                    esc = false
                } else if b == b'\\' {
                    esc = true
                } else if b == b'"' {
                    in_str = false
                }
                continue;
            }
            match b {
                b'"' => in_str = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > limit {
                        return true;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        false
    }

    #[test]
    fn structural_scan_ignores_lookalike_bytes() {
        // 0x59 'Y', 0x79 'y', 0x5f '_', 0x7f must not count as brackets.
        assert!(exceeds_depth(b"YYYYyyyy____\x7f\x7f\x7f\x7f[", 0));
        assert!(!exceeds_depth(b"YYYYyyyy____\x7f\x7f\x7f\x7f]", 0));
        assert!(!exceeds_depth(b"YyY_y_Y_yyyyyyyyyyyyyyyyyyyyyyy", 0));
        assert!(exceeds_depth(b"YyY_y_Y_yyyyyyyyyyyyyyyyyyy[yyy", 0));
    }

    proptest! {
        #[test]
        fn fast_depth_scan_matches_naive(s in r#"[\[\]{}"\\aY_y\x7f ]{0,80}"#, limit in 0usize..6) {
            prop_assert_eq!(exceeds_depth(s.as_bytes(), limit), exceeds_depth_naive(s.as_bytes(), limit));
        }

        #[test]
        fn fast_depth_scan_matches_naive_bytes(data in proptest::collection::vec(any::<u8>(), 0..200), limit in 0usize..6) {
            prop_assert_eq!(exceeds_depth(&data, limit), exceeds_depth_naive(&data, limit));
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&data, &Limits::default());
        }

        #[test]
        fn json_like_input_never_panics(s in r#"[\[\]{}":,0-9a-z\\ .-]{0,200}"#) {
            let _ = decode(s.as_bytes(), &Limits { max_depth: 8, max_batch: 8 });
        }

        #[test]
        fn roundtrip_requests(id in any::<i64>(), method in "[a-z/_]{1,30}") {
            let s = serde_json::json!({"jsonrpc":"2.0","id":id,"method":method,"params":{}}).to_string();
            let m = match decode(s.as_bytes(), &Limits::default()).unwrap() { Decoded::Single(m) => m, _ => unreachable!() };
            prop_assert_eq!(m.kind, Kind::Request);
            prop_assert_eq!(m.id, Some(Id::Int(id)));
            prop_assert_eq!(m.method.as_deref(), Some(method.as_str()));
        }
    }
}
