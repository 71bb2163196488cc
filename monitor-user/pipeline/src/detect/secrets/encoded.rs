//! Where a secret hides in text: JSON string escapes, and base64- or
//! percent-encoded runs, undone before the rules look.

use std::borrow::Cow;

use crate::detect::prefilter::MIN_ENCODED_RUN;

/// Encoded runs longer than this are not decoded (the shortest worth it is
/// the prefilter's `MIN_ENCODED_RUN`).
const MAX_ENCODED_RUN: usize = 8192;

/// `raw` with its JSON string escapes undone (`\n`, `\"`, `\/`,
/// `\u00e9`...), everything else kept; borrowed when there is none.
/// Invalid escapes are kept as they are and lone surrogates become U+FFFD:
/// this is a view for matching, not a parser.
pub fn json_unescape(raw: &str) -> Cow<'_, str> {
    let Some(first) = raw.find('\\') else {
        return Cow::Borrowed(raw);
    };
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    out.push_str(&raw[..first]);
    let mut i = first;
    let mut plain = first;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 >= b.len() {
            i += 1;
            continue;
        }
        out.push_str(&raw[plain..i]);
        let (ch, used) = match b[i + 1] {
            b'n' => ('\n', 2),
            b't' => ('\t', 2),
            b'r' => ('\r', 2),
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'"' => ('"', 2),
            b'\\' => ('\\', 2),
            b'/' => ('/', 2),
            b'u' => match hex4(&b[i + 2..]) {
                Some(hi @ 0xd800..=0xdbff) => match (b.get(i + 6..i + 8), hex4(b.get(i + 8..).unwrap_or(&[]))) {
                    (Some(b"\\u"), Some(lo @ 0xdc00..=0xdfff)) => {
                        let c = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                        (char::from_u32(c).unwrap_or('\u{fffd}'), 12)
                    }
                    _ => ('\u{fffd}', 6),
                },
                Some(c) => (char::from_u32(c).unwrap_or('\u{fffd}'), 6),
                None => ('\\', 1),
            },
            _ => ('\\', 1),
        };
        out.push(ch);
        i += used;
        plain = i;
    }
    out.push_str(&raw[plain..]);
    Cow::Owned(out)
}

fn hex4(b: &[u8]) -> Option<u32> {
    let h = b.get(..4)?;
    let s = std::str::from_utf8(h).ok()?;
    u32::from_str_radix(s, 16)
        .ok()
        .filter(|_| h.iter().all(u8::is_ascii_hexdigit))
}

fn is_b64_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')
}

/// Runs that look like base64 (long, mixed case and digits) and could hide
/// a secret.
fn encoded_runs(s: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < s.len() {
            while i < s.len() && !is_b64_byte(s[i]) {
                i += 1;
            }
            let start = i;
            let (mut up, mut low, mut dig) = (false, false, false);
            while i < s.len() && is_b64_byte(s[i]) {
                up |= s[i].is_ascii_uppercase();
                low |= s[i].is_ascii_lowercase();
                dig |= s[i].is_ascii_digit();
                i += 1;
            }
            let len = i - start;
            if (MIN_ENCODED_RUN..=MAX_ENCODED_RUN).contains(&len) && up && low && dig {
                return Some((start, i));
            }
        }
        None
    })
}

fn has_percent_escapes(s: &[u8]) -> bool {
    s.windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

/// Decoded forms of the encoded parts of `s` worth scanning: base64 runs
/// that decode to mostly printable text, and percent-decoding.
pub(super) fn decode_candidates(s: &str) -> Vec<(&'static str, String)> {
    use base64::Engine;
    let mut out = Vec::new();
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    for (a, b) in encoded_runs(s.as_bytes()) {
        let run = &s[a..b];
        // `KEY_B64=LS0tLS1...`: `_` and `=` are base64 bytes too, so the
        // run starts at the name; failing whole, it is tried from after
        // its first `=` that padding cannot be (one not at the end).
        let decoded = engines.iter().find_map(|e| e.decode(run).ok()).or_else(|| {
            let at = run.trim_end_matches('=').find('=')? + 1;
            let rest = run[at..].trim_start_matches('=');
            (rest.len() >= MIN_ENCODED_RUN)
                .then(|| engines.iter().find_map(|e| e.decode(rest).ok()))
                .flatten()
        });
        if let Some(bytes) = decoded {
            if let Ok(text) = String::from_utf8(bytes) {
                let printable = text.chars().filter(|c| !c.is_control() || c.is_whitespace()).count();
                if printable * 10 >= text.chars().count() * 9 && !text.is_empty() {
                    out.push(("base64", text));
                }
            }
        }
    }
    if has_percent_escapes(s.as_bytes()) {
        let decoded = percent_decode(s);
        if decoded != s {
            out.push(("percent", decoded));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
