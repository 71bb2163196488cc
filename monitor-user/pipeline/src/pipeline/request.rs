//! What a request is about: the tool, prompt or resource it names, as it
//! goes into events (clipped, passwords in URIs redacted), and the
//! stateless revision's routing headers checked against it.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{event::HttpInfo, redact};

#[derive(Deserialize)]
struct NameParams<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct UriParams<'a> {
    #[serde(borrow)]
    uri: Option<Cow<'a, str>>,
}

/// Longest method/tool/prompt/URI string copied into an event.
pub(super) const MAX_NAME: usize = 512;

/// `s`, cut to [`MAX_NAME`] bytes (at a character boundary) with an ellipsis.
pub(super) fn clip(s: &str) -> String {
    if s.len() <= MAX_NAME {
        return s.to_owned();
    }
    let mut end = MAX_NAME;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The stateless revision's routing headers that disagree with the body:
/// `Mcp-Method` against the method, `Mcp-Name` against the tool or prompt
/// name or the resource URI.
pub(super) fn header_mismatch(h: &HttpInfo, method: &str, params: Option<&RawValue>) -> Vec<&'static str> {
    let mut out = Vec::new();
    if h.mcp_method.as_deref().is_some_and(|m| m.trim() != method) {
        out.push("mcp-method");
    }
    if let Some(name) = h.mcp_name.as_deref() {
        let named = match method {
            "tools/call" | "prompts/get" => params.and_then(|p| {
                serde_json::from_str::<NameParams<'_>>(p.get())
                    .ok()
                    .and_then(|p| p.name.map(|n| n.into_owned()))
            }),
            "resources/read" => params.and_then(|p| {
                serde_json::from_str::<UriParams<'_>>(p.get())
                    .ok()
                    .and_then(|p| p.uri.map(|u| u.into_owned()))
            }),
            // Other methods name nothing; a name sent with them is noise,
            // not a lie about the call.
            _ => return out,
        };
        if named.as_deref() != Some(name.trim()) {
            out.push("mcp-name");
        }
    }
    out
}

/// Tool, prompt or resource a request is about (`tools/call`, `prompts/get`,
/// `resources/*`): clipped, and passwords in URIs redacted.
pub(super) fn request_subject(
    method: &str,
    params: Option<&RawValue>,
) -> (Option<String>, Option<String>, Option<String>) {
    let Some(params) = params else {
        return (None, None, None);
    };
    match method {
        "tools/call" => (name_param(params), None, None),
        "prompts/get" => (None, name_param(params), None),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            let uri = serde_json::from_str::<UriParams<'_>>(params.get())
                .ok()
                .and_then(|p| p.uri);
            (
                None,
                None,
                uri.map(|u| redact::redact_url_password(&u).unwrap_or_else(|| clip(&u))),
            )
        }
        _ => (None, None, None),
    }
}

fn name_param(params: &RawValue) -> Option<String> {
    serde_json::from_str::<NameParams<'_>>(params.get())
        .ok()
        .and_then(|p| p.name)
        .map(|n| clip(&n))
}
