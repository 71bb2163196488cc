//! The checks a rule can ask of its match beyond the regex: checksums,
//! structure, the assignment judgement.

use serde_json::Value;

use super::{assignment_ok, shannon_entropy, Check};

pub(super) fn check(c: Check, s: &str, name: &str) -> bool {
    match c {
        Check::None => true,
        Check::Assignment => assignment_ok(name, s),
        Check::GrafanaLegacyKey => {
            use base64::Engine;
            let b = base64::engine::general_purpose::STANDARD.decode(s).ok();
            let v = b.and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            v.as_ref()
                .and_then(Value::as_object)
                .is_some_and(|m| ["k", "n", "id"].iter().all(|k| m.contains_key(*k)))
        }
        Check::GitHubCrc32 => github_checksum_ok(s),
        Check::Jwt => jwt_ok(s),
        Check::MinEntropy(min) => shannon_entropy(s) >= min,
        Check::AwsKeyIdPrefix => {
            const PREFIXES: &[&str] = &[
                "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "ABIA", "ACCA",
            ];
            s.len() == 20
                && PREFIXES.iter().any(|p| s.starts_with(p))
                && s[4..]
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        }
    }
}

/// CRC-32 (IEEE 802.3), bitwise: small inputs only.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Base62 of `v`, left-padded with '0' to `width`.
pub fn base62(mut v: u32, width: usize) -> String {
    let mut out = vec![b'0'; width];
    let mut i = width;
    while v > 0 && i > 0 {
        i -= 1;
        out[i] = BASE62[(v % 62) as usize];
        v /= 62;
    }
    String::from_utf8(out).expect("ASCII")
}

/// GitHub `gh?_` tokens: prefix, 30 random base62 characters, then the
/// base62 CRC32 of those 30 characters in 6 characters.
pub fn github_checksum_ok(token: &str) -> bool {
    let Some((_, rest)) = token.split_once('_') else {
        return false;
    };
    if rest.len() != 36 || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (body, sum) = rest.split_at(30);
    base62(crc32(body.as_bytes()), 6) == sum
}

fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let t = s.trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t).ok()
}

/// A JWT: three base64url parts whose header decodes to JSON with "alg".
pub fn jwt_ok(s: &str) -> bool {
    let mut parts = s.split('.');
    let (Some(h), Some(p), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if p.is_empty() {
        return false;
    }
    let Some(header) = b64url_decode(h) else { return false };
    if !matches!(serde_json::from_slice::<Value>(&header), Ok(Value::Object(m)) if m.contains_key("alg")) {
        return false;
    }
    !jwt_is_public(s)
}

/// A JWT that is public by design: a Supabase/PostgREST `anon` key (it
/// ships in browser code), or jwt.io's sample token, quoted in every
/// introduction to JWTs.
pub fn jwt_is_public(s: &str) -> bool {
    let mut parts = s.split('.');
    let (Some(_), Some(p), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let payload = b64url_decode(p).and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let anon = payload.as_ref().and_then(|v| v.get("role")).and_then(Value::as_str) == Some("anon");
    anon || sig == "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
}
