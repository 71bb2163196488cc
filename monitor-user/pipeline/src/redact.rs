//! Keeping secrets out of everything the monitor writes.
//!
//! Two tools: [`scrub_args`] for command lines, and [`redact_json`] for
//! payloads included with `--payloads`. Both replace values, never log
//! them. They rely on names (`--token`, `API_KEY=`, `"password":`) and on
//! token formats with public prefixes; the detection engine's credential
//! rules add provider-specific formats.

use serde_json::Value;

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// Name fragments that mark a value as secret (`--api-key`, `DB_PASSWORD=`,
/// `"client_secret":`). Compared case-insensitively, ignoring `-` and `_`.
const SECRET_NAME_PARTS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "credential",
    "auth",
    "bearer",
    "sessionid",
    "cookie",
    "signature",
    "pat",
];

/// Names that contain a fragment above but are not secrets.
const NOT_SECRET_NAMES: &[&str] = &[
    "author",
    "authority",
    "oauthurl",
    "authurl",
    "path",
    "patch",
    "pattern",
    "tokens",
    "maxtokens",
    "tokencount",
    "pathname",
];

/// True when a key or flag name says its value is a secret.
pub fn is_secret_name(name: &str) -> bool {
    let norm: String = name
        .trim_start_matches('-')
        .chars()
        .filter(|c| *c != '-' && *c != '_' && *c != '.')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if norm.is_empty() || NOT_SECRET_NAMES.contains(&norm.as_str()) {
        return false;
    }
    if norm == "key" || norm.ends_with("key") && norm.len() > 3 && !norm.ends_with("monkey") {
        return true;
    }
    SECRET_NAME_PARTS.iter().any(|p| {
        if *p == "pat" {
            norm == "pat" || norm.ends_with("pat")
        } else {
            norm.contains(p)
        }
    })
}

/// Prefixes of token formats that are secret whatever their name.
const TOKEN_PREFIXES: &[&str] = &[
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxr-",
    "xoxs-",
    "sk_live_",
    "rk_live_",
    "sk-ant-",
    "sk-proj-",
    "AKIA",
    "ASIA",
    "AIza",
    "hf_",
    "npm_",
    "pypi-",
];

/// True when `s` starts like a well-known token and is long enough to be
/// one. Cheap; used where no name gives the value away.
pub fn looks_like_token(s: &str) -> bool {
    let s = s.trim();
    if s.len() < 16 {
        return false;
    }
    if s.starts_with("-----BEGIN") && s.contains("PRIVATE KEY") {
        return true;
    }
    if TOKEN_PREFIXES.iter().any(|p| s.starts_with(p)) {
        return s.len() >= 20;
    }
    // sk-... (OpenAI style) needs more than the two letters.
    if let Some(rest) = s.strip_prefix("sk-") {
        return rest.len() >= 20
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    }
    // JWT: three base64url parts, header starting with {" (eyJ).
    if s.starts_with("eyJ") && s.bytes().filter(|&b| b == b'.').count() == 2 {
        return true;
    }
    false
}

/// Replaces the password of `scheme://user:password@host` URLs.
pub fn redact_url_password(s: &str) -> Option<String> {
    let scheme_end = s.find("://")?;
    let rest = &s[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let at = authority.rfind('@')?;
    let colon = authority[..at].find(':')?;
    let start = scheme_end + 3 + colon + 1;
    let end = scheme_end + 3 + at;
    Some(format!("{}{}{}", &s[..start], REDACTED, &s[end..]))
}

/// Characters a token can be made of (JWTs add `.`; base64 adds `+/=`).
fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+' | '/' | '=')
}

/// Redacts token-shaped words and URL credentials anywhere in free text
/// (`"deploy with ghp_... please"`). `None` when nothing was found.
pub fn redact_text(s: &str) -> Option<String> {
    if s.starts_with("-----BEGIN") && s.contains("PRIVATE KEY") {
        return Some(REDACTED.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut changed = false;
    let mut rest = s;
    while !rest.is_empty() {
        let start = rest.find(token_char).unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(|c| !token_char(c)).unwrap_or(rest.len());
        let word = &rest[..end];
        // Trailing sentence punctuation is not part of a token.
        let word_trimmed = word.trim_end_matches(['.', '/', '=', '-']);
        if looks_like_token(word_trimmed) {
            out.push_str(REDACTED);
            out.push_str(&word[word_trimmed.len()..]);
            changed = true;
        } else {
            out.push_str(word);
        }
        rest = &rest[end..];
    }
    if out.contains("://") {
        // URL credentials: redact each `scheme://user:password@` occurrence.
        let mut fixed = String::with_capacity(out.len());
        let mut tail = out.as_str();
        while let Some(p) = tail.find("://") {
            let word_end = tail[p..].find(char::is_whitespace).map_or(tail.len(), |e| p + e);
            // Whitespace can be multi-byte (U+0085, U+3000): step over the
            // whole character.
            let word_start = tail[..p]
                .char_indices()
                .rev()
                .find(|(_, c)| c.is_whitespace())
                .map_or(0, |(i, c)| i + c.len_utf8());
            fixed.push_str(&tail[..word_start]);
            match redact_url_password(&tail[word_start..word_end]) {
                Some(r) => {
                    fixed.push_str(&r);
                    changed = true;
                }
                None => fixed.push_str(&tail[word_start..word_end]),
            }
            tail = &tail[word_end..];
        }
        fixed.push_str(tail);
        out = fixed;
    }
    changed.then_some(out)
}

/// Scrubs one value seen without a name: token formats and URL passwords.
fn scrub_value(v: &str) -> Option<String> {
    redact_text(v)
}

/// Scrubs a command line: values of secret-named flags (`--token X`,
/// `--password=X`), secret-named assignments (`API_KEY=X`), token formats and
/// URL passwords.
pub fn scrub_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut redact_next = false;
    for a in args {
        if redact_next {
            redact_next = false;
            if !a.starts_with('-') {
                out.push(REDACTED.to_owned());
                continue;
            }
        }
        if let Some((name, value)) = a.split_once('=') {
            if is_secret_name(name) && !value.is_empty() {
                out.push(format!("{name}={REDACTED}"));
                continue;
            }
            if let Some(v) = scrub_value(value) {
                out.push(format!("{name}={v}"));
                continue;
            }
        } else if a.starts_with('-') && is_secret_name(a) {
            redact_next = true;
            out.push(a.clone());
            continue;
        }
        out.push(scrub_value(a).unwrap_or_else(|| a.clone()));
    }
    out
}

/// Redacts a JSON document in place: values under secret-named keys,
/// strings shaped like tokens, URL passwords, and `Authorization`-style
/// `Bearer` values. Returns how many values were replaced.
pub fn redact_json(v: &mut Value) -> usize {
    redact_json_with(v, &|_| None)
}

/// [`redact_json`], plus `extra` for every string (the credential rules,
/// when detection is on): it returns the redacted string, if it changed it.
pub fn redact_json_with(v: &mut Value, extra: &dyn Fn(&str) -> Option<String>) -> usize {
    // Iterative: payload depth is attacker-controlled.
    let mut count = 0;
    let mut stack: Vec<&mut Value> = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    if is_secret_name(k)
                        && !matches!(child, Value::Null | Value::Bool(_) | Value::Object(_) | Value::Array(_))
                    {
                        *child = Value::String(REDACTED.to_owned());
                        count += 1;
                    } else {
                        stack.push(child);
                    }
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::String(s) => {
                if let Some(r) = extra(s) {
                    *s = r;
                    count += 1;
                }
                if let Some(r) = scrub_value(s) {
                    *s = r;
                    count += 1;
                } else if s.len() > 7 && s.as_bytes()[..7].eq_ignore_ascii_case(b"bearer ") {
                    *s = format!("Bearer {REDACTED}");
                    count += 1;
                }
            }
            _ => {}
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn args_flags_assignments_tokens_urls() {
        let fake_gh = format!("ghp_{}", "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8");
        let got = scrub_args(&s(&[
            "server",
            "--token",
            "hunter2hunter2",
            "--password=swordfish",
            "API_KEY=abc123",
            "--port",
            "8080",
            &fake_gh,
            "postgres://app:s3cr3t@db:5432/x",
            "--verbose",
        ]));
        assert_eq!(
            got,
            s(&[
                "server",
                "--token",
                REDACTED,
                &format!("--password={REDACTED}"),
                &format!("API_KEY={REDACTED}"),
                "--port",
                "8080",
                REDACTED,
                &format!("postgres://app:{REDACTED}@db:5432/x"),
                "--verbose",
            ])
        );
    }

    #[test]
    fn flag_followed_by_flag_is_not_swallowed() {
        assert_eq!(scrub_args(&s(&["--auth", "--verbose"])), s(&["--auth", "--verbose"]));
    }

    #[test]
    fn names() {
        for n in [
            "password",
            "DB_PASSWORD",
            "--api-key",
            "apiKey",
            "client_secret",
            "GITHUB_TOKEN",
            "x-auth-token",
            "key",
            "private_key",
        ] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in [
            "author",
            "path",
            "name",
            "port",
            "max_tokens",
            "monkey",
            "keyboard_layout",
        ] {
            assert!(!is_secret_name(n), "{n}");
        }
    }

    #[test]
    fn json_redaction_is_thorough() {
        let mut v = json!({
            "name": "deploy",
            "arguments": {"apiKey": "abc", "nested": [{"password": "p"}, "Bearer abc.def", "postgres://u:pw@h/db"]},
            "count": 3
        });
        assert_eq!(redact_json(&mut v), 4);
        let text = v.to_string();
        for leaked in ["abc", "\"p\"", "pw@", "abc.def"] {
            assert!(!text.contains(leaked), "{leaked} in {text}");
        }
        assert!(text.contains("deploy"));
    }

    #[test]
    fn tokens_inside_text() {
        let tok = format!("ghp_{}", "Zq7rT2mW9xK4vB8nL3pD6sF1hJ5gC0aY2eR7");
        let got = redact_text(&format!(
            "Echo: deploy with token {tok}. Then ping https://bob:hunter2@example.com/x now"
        ))
        .unwrap();
        assert_eq!(
            got,
            format!("Echo: deploy with token {REDACTED}. Then ping https://bob:{REDACTED}@example.com/x now")
        );
        assert_eq!(redact_text("nothing to see, even sk- or ghp_ alone"), None);
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl";
        assert_eq!(
            redact_text(&format!("Authorization: {jwt}")).unwrap(),
            format!("Authorization: {REDACTED}")
        );
    }

    #[test]
    fn multibyte_text_in_json_strings() {
        // Found by the redact fuzz target: byte 7 inside a character.
        let mut v = serde_json::json!(["bearerʧʧʧ", "Bearer abc"]);
        assert_eq!(redact_json(&mut v), 1);
        assert_eq!(v[0], "bearerʧʧʧ");
    }

    #[test]
    fn multibyte_whitespace_before_a_url() {
        // Found by the redact fuzz target: U+0085 is whitespace and two bytes.
        assert_eq!(redact_text(":/\u{bf}\u{85}t\0://#"), None);
        assert_eq!(
            redact_text("x\u{3000}https://u:pw@h/").unwrap(),
            format!("x\u{3000}https://u:{REDACTED}@h/")
        );
    }

    #[test]
    fn deep_json_does_not_overflow_the_stack() {
        let mut v = Value::Null;
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        redact_json(&mut v);
        // Dropping a deeply nested Value recurses: leak it to keep this
        // test about redact_json, not serde_json's Drop.
        std::mem::forget(v);
    }
}
