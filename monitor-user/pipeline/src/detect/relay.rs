//! The relay memory: the credentials servers returned, remembered by value
//! so they can be recognised when the agent passes them on.
//!
//! A rule often needs context to recognise a secret (`AWS_SECRET_ACCESS_KEY=`
//! before 40 characters that could be anything); once the agent has read
//! it, it may send the bare value on, alone in a sentence, where no rule
//! would know it. So the exact values found in server output are kept,
//! in memory only (never exported, overwritten when dropped), bounded in
//! number and forgotten after a while, and every later request is searched
//! for them whatever surrounds them: as they are, JSON-escaped,
//! percent-encoded, and base64-encoded at any alignment inside a longer
//! encoded text.

use std::{
    collections::{HashMap, VecDeque},
    sync::OnceLock,
};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine;
use serde_json::Value;

use super::{alert::MessageRef, secrets::Finding};

/// Values shorter than this are not remembered: short passwords occur by
/// chance in ordinary text.
pub const MIN_VALUE_LEN: usize = 10;
/// Longer values (a whole PEM key) are remembered by fingerprint only.
const MAX_VALUE_LEN: usize = 4096;
/// Base64 pieces shorter than this are too common to mean anything.
const MIN_BASE64_PIECE: usize = 12;

/// Where a remembered credential was first returned.
#[derive(Clone, Debug)]
pub struct Origin {
    /// Server label.
    pub server: String,
    /// Tool whose result held it.
    pub tool: Option<String>,
    /// The message.
    pub message: MessageRef,
}

/// How a remembered value appeared in a later message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Form {
    /// As returned (or only JSON-escaped).
    Plain,
    /// Percent-encoded (`%2F`, `%2B`...).
    Percent,
    /// Inside base64 (standard or URL-safe alphabet).
    Base64,
}

impl Form {
    /// Name in alert evidence.
    pub fn as_str(self) -> &'static str {
        match self {
            Form::Plain => "plain",
            Form::Percent => "percent",
            Form::Base64 => "base64",
        }
    }
}

/// One remembered credential.
#[derive(Clone, Debug)]
pub struct Remembered {
    /// The finding that named it (with the secret, which stays here).
    pub finding: Finding,
    /// Where it came from.
    pub origin: Origin,
    last_seen: i128,
}

/// A remembered credential found again in a message.
#[derive(Clone, Debug)]
pub struct Recall {
    /// The remembered credential.
    pub remembered: Remembered,
    /// JSON path of the string it was found in (`$` when the message did
    /// not parse).
    pub path: String,
    /// How it was written there.
    pub form: Form,
}

/// The memory (see the module documentation).
pub struct RelayMemory {
    /// By fingerprint; `order` holds the same fingerprints, oldest first.
    entries: HashMap<String, Remembered>,
    order: VecDeque<String>,
    capacity: usize,
    ttl_ns: i128,
    /// Credentials not in `recent`, and the search over them (built on the
    /// first search after it was dropped).
    settled: Option<Search>,
    /// Fingerprints remembered since `settled` was built (a small search,
    /// rebuilt on each change); at [`RECENT_MAX`] they join the settled
    /// ones. A server that returns a new credential in every response thus
    /// costs a rebuild of the large search once per [`RECENT_MAX`]
    /// credentials, not once per message.
    recent: Vec<String>,
    recent_search: Option<Search>,
    /// Credentials forgotten since `settled` was built: their spellings
    /// stay in it (and are only redacted, never recalled) until it is
    /// rebuilt, at [`RECENT_MAX`] of them or a quarter of it.
    forgotten_settled: usize,
    settled_len: usize,
}

/// Credentials searched by the small, often rebuilt automaton.
const RECENT_MAX: usize = 64;

struct Search {
    /// Every spelling of every credential.
    texts: Vec<String>,
    /// Per spelling: fingerprint and form.
    patterns: Vec<(String, Form)>,
    /// The search every request goes through (see [`Sieve`]).
    sieve: Sieve,
    /// For [`RelayMemory::redact`] (on alerts only): built on first use.
    automaton: OnceLock<AhoCorasick>,
}

/// Length of the byte grams the sieve samples.
const GRAM: usize = 4;
const _: () = assert!(MIN_VALUE_LEN >= GRAM && MIN_BASE64_PIECE >= GRAM);

/// The search for the spellings in a request: every request is searched,
/// and credentials in results are rare, so the search must cost little
/// per byte whatever is remembered.
///
/// Every spelling is at least `GRAM + step - 1` bytes long, so an
/// occurrence covers a whole gram at one of the positions `0, step,
/// 2 * step...` of the request, at an offset below `step` into the
/// spelling. The sieve samples only those positions (one in `step`, seven
/// at the shortest spelling of ten bytes), tests the gram against a bit set
/// of the first `step` grams of every spelling, and on a hit compares the
/// spellings that hold that gram there. An automaton over all spellings
/// walked every byte and cost a sixth of the detector's time.
struct Sieve {
    step: usize,
    /// Bit set over hashed grams; `mask` + 1 bits.
    bits: Vec<u64>,
    mask: usize,
    /// (gram, spelling, offset of the gram in it), sorted by gram.
    grams: Vec<(u32, u32, u32)>,
}

impl Sieve {
    fn new(texts: &[String]) -> Self {
        let step = texts.iter().map(|t| t.len() + 1 - GRAM).min().unwrap_or(1).max(1);
        let mut grams: Vec<(u32, u32, u32)> = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            for off in 0..step {
                grams.push((gram_at(t.as_bytes(), off), i as u32, off as u32));
            }
        }
        grams.sort_unstable();
        // About one bit in 64 set (at most 512 KiB, for 4,096 credentials).
        let nbits = (grams.len() * 64).next_power_of_two().clamp(1 << 12, 1 << 22);
        let mask = nbits - 1;
        let mut bits = vec![0u64; nbits / 64];
        for &(g, _, _) in &grams {
            let h = gram_hash(g) & mask;
            bits[h / 64] |= 1 << (h % 64);
        }
        Self {
            step,
            bits,
            mask,
            grams,
        }
    }

    /// Calls `found` with every spelling (index into `texts`) that occurs
    /// in `hay`, once per occurrence.
    fn find(&self, texts: &[String], hay: &[u8], mut found: impl FnMut(usize)) {
        if self.grams.is_empty() {
            return;
        }
        let mut p = 0;
        while p + GRAM <= hay.len() {
            let g = gram_at(hay, p);
            let h = gram_hash(g) & self.mask;
            if self.bits[h / 64] & (1 << (h % 64)) != 0 {
                let from = self.grams.partition_point(|&(x, _, _)| x < g);
                for &(x, i, off) in &self.grams[from..] {
                    if x != g {
                        break;
                    }
                    let text = texts[i as usize].as_bytes();
                    if let Some(start) = p.checked_sub(off as usize) {
                        if hay[start..].starts_with(text) {
                            found(i as usize);
                        }
                    }
                }
            }
            p += self.step;
        }
    }
}

fn gram_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + GRAM].try_into().expect("GRAM bytes"))
}

fn gram_hash(g: u32) -> usize {
    (g.wrapping_mul(0x9E37_79B1) >> 7) as usize
}

impl RelayMemory {
    /// Remembers at most `capacity` credentials, each for `ttl_seconds`
    /// after it was last returned.
    pub fn new(capacity: usize, ttl_seconds: u64) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            ttl_ns: ttl_seconds as i128 * 1_000_000_000,
            settled: None,
            recent: Vec::new(),
            recent_search: None,
            forgotten_settled: 0,
            settled_len: 0,
        }
    }

    fn forget(&mut self, print: &str) {
        self.entries.remove(print);
        if let Some(i) = self.recent.iter().position(|p| p == print) {
            self.recent.swap_remove(i);
            self.recent_search = None;
        } else {
            self.forgotten_settled += 1;
            if self.forgotten_settled >= RECENT_MAX || self.forgotten_settled * 4 >= self.settled_len {
                self.settled = None;
            }
        }
    }

    /// Builds what a change dropped.
    fn ready(&mut self) {
        if self.settled.is_none() {
            self.recent.clear();
            self.recent_search = None;
            self.settled_len = self.entries.len();
            self.forgotten_settled = 0;
            self.settled = Some(Search::build(self.entries.iter()));
        }
        if self.recent_search.is_none() {
            let entries = &self.entries;
            self.recent_search = Some(Search::build(
                self.recent.iter().filter_map(|p| entries.get_key_value(p)),
            ));
        }
    }

    /// Every (fingerprint, form) whose spelling occurs in `hay`.
    fn occurrences(&self, hay: &[u8]) -> Vec<(String, Form)> {
        let mut out: Vec<(String, Form)> = Vec::new();
        for search in [&self.settled, &self.recent_search].into_iter().flatten() {
            search.sieve.find(&search.texts, hay, |i| {
                let (print, form) = &search.patterns[i];
                if self.entries.contains_key(print) && !out.iter().any(|(p, _)| p == print) {
                    out.push((print.clone(), *form));
                }
            });
        }
        out
    }

    /// Number of credentials remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The credential with this fingerprint, if remembered.
    pub fn get(&self, fingerprint: &str) -> Option<&Remembered> {
        self.entries.get(fingerprint)
    }

    /// Remembers a credential a server returned at `now` (Unix ns). A
    /// credential already known keeps its first origin and lives on from
    /// `now`.
    pub fn remember(&mut self, finding: &Finding, origin: Origin, now: i128) {
        self.expire(now);
        if let Some(e) = self.entries.get_mut(&finding.fingerprint) {
            e.last_seen = now;
            if let Some(i) = self.order.iter().position(|f| *f == finding.fingerprint) {
                let f = self.order.remove(i).expect("index in range");
                self.order.push_back(f);
            }
            return;
        }
        while self.entries.len() >= self.capacity {
            let Some(old) = self.order.pop_front() else { break };
            self.forget(&old);
        }
        self.entries.insert(
            finding.fingerprint.clone(),
            Remembered {
                finding: finding.clone(),
                origin,
                last_seen: now,
            },
        );
        self.order.push_back(finding.fingerprint.clone());
        if self.settled.is_some() {
            self.recent.push(finding.fingerprint.clone());
            self.recent_search = None;
            if self.recent.len() >= RECENT_MAX {
                self.settled = None;
            }
        }
    }

    fn expire(&mut self, now: i128) {
        while let Some(f) = self.order.front() {
            match self.entries.get(f) {
                Some(e) if now - e.last_seen <= self.ttl_ns => break,
                _ => {
                    let f = self.order.pop_front().expect("front exists");
                    self.forget(&f);
                }
            }
        }
    }

    /// Forgets what expired by `now` and readies the search, so that
    /// [`RelayMemory::redact`] sees every remembered value.
    pub fn prepare(&mut self, now: i128) {
        self.expire(now);
        self.ready();
    }

    /// `s` with every remembered value (in any of its spellings) replaced
    /// by `[REDACTED]`, or `None` when it holds none. Uses the search as
    /// of the last [`RelayMemory::prepare`] or [`RelayMemory::recall`].
    pub fn redact(&self, s: &str) -> Option<String> {
        let mut text: Option<String> = None;
        for search in [&self.settled, &self.recent_search].into_iter().flatten() {
            let cur = text.as_deref().unwrap_or(s);
            let mut out = String::new();
            let mut at = 0;
            for m in search.automaton().find_iter(cur) {
                // Spellings are ASCII or whole UTF-8 sequences: boundaries hold.
                if !cur.is_char_boundary(m.start()) || !cur.is_char_boundary(m.end()) {
                    continue;
                }
                out.push_str(&cur[at..m.start()]);
                out.push_str(crate::redact::REDACTED);
                at = m.end();
            }
            if at > 0 {
                out.push_str(&cur[at..]);
                text = Some(out);
            }
        }
        text
    }

    /// The remembered credentials in `raw` (a message's bytes) at `now`:
    /// one recall per credential, with the JSON path of the first string
    /// that holds it.
    pub fn recall(&mut self, raw: &[u8], now: i128) -> Vec<Recall> {
        self.expire(now);
        if self.entries.is_empty() {
            return Vec::new();
        }
        self.ready();
        // Raw bytes first (escaped spellings are patterns too): most
        // messages hold none, and parsing is only worth it on a hit.
        let hits = self.occurrences(raw);
        if hits.is_empty() {
            return Vec::new();
        }
        let mut paths: HashMap<String, (String, Form)> = HashMap::new();
        if let Ok(v) = serde_json::from_slice::<Value>(raw) {
            let mut stack: Vec<(&Value, String)> = vec![(&v, "$".to_owned())];
            while let Some((v, p)) = stack.pop() {
                match v {
                    Value::String(s) => {
                        for (print, form) in self.occurrences(s.as_bytes()) {
                            paths.entry(print).or_insert_with(|| (p.clone(), form));
                        }
                    }
                    Value::Array(items) => {
                        for (i, item) in items.iter().enumerate().rev() {
                            stack.push((item, format!("{p}[{i}]")));
                        }
                    }
                    Value::Object(map) => {
                        for (k, item) in map.iter().rev() {
                            stack.push((item, super::secrets::child_path(&p, k)));
                        }
                    }
                    _ => {}
                }
            }
        }
        hits.into_iter()
            .filter_map(|(print, form)| {
                let remembered = self.entries.get(&print)?.clone();
                let (path, form) = paths.remove(&print).unwrap_or(("$".to_owned(), form));
                Some(Recall { remembered, path, form })
            })
            .collect()
    }
}

impl Search {
    /// The search over the spellings of `entries`.
    fn build<'a>(entries: impl Iterator<Item = (&'a String, &'a Remembered)>) -> Self {
        let mut texts: Vec<String> = Vec::new();
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut patterns: Vec<(String, Form)> = Vec::new();
        for (print, e) in entries {
            let value = e.finding.secret.expose();
            if value.len() < MIN_VALUE_LEN || value.len() > MAX_VALUE_LEN {
                continue;
            }
            for (form, text) in encodings(value) {
                if seen.insert(text.clone()) {
                    texts.push(text);
                    patterns.push((print.clone(), form));
                }
            }
        }
        Self {
            sieve: Sieve::new(&texts),
            texts,
            patterns,
            automaton: OnceLock::new(),
        }
    }

    fn automaton(&self) -> &AhoCorasick {
        self.automaton.get_or_init(|| {
            AhoCorasickBuilder::new()
                .match_kind(MatchKind::Standard)
                .build(&self.texts)
                .expect("relay automaton over bounded patterns")
        })
    }
}

/// The spellings of `value` to search for.
pub fn encodings(value: &str) -> Vec<(Form, String)> {
    let mut out: Vec<(Form, String)> = vec![(Form::Plain, value.to_owned())];
    // JSON escaping of the raw bytes: quotes, backslashes, controls, and
    // `/` as `\/` for the serializers that do that.
    let json = serde_json::to_string(value).unwrap_or_default();
    let json = json[1..json.len() - 1].to_owned();
    if json != value {
        out.push((Form::Plain, json.clone()));
    }
    if json.contains('/') {
        out.push((Form::Plain, json.replace('/', "\\/")));
    }
    // Upper- or lower-case hex; `/` encoded (encodeURIComponent) or kept
    // (Python's quote).
    for lower in [false, true] {
        for keep_slash in [false, true] {
            let percent = percent_encode(value, lower, keep_slash);
            if percent != value {
                out.push((Form::Percent, percent));
            }
        }
    }
    // Base64 of the value inside a longer text: the value can start at any
    // of three byte offsets within a 3-byte group, and each gives its own
    // characters. Characters that also depend on neighbouring bytes are
    // dropped from both ends.
    for engine in [
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for shift in 0..3usize {
            let mut bytes = vec![0u8; shift];
            bytes.extend_from_slice(value.as_bytes());
            let enc = engine.encode(&bytes);
            // The first (shift * 8).div_ceil(6) characters hold pad bits;
            // the last group holds bytes of whatever follows.
            let from = (shift * 8).div_ceil(6);
            let whole_groups = (shift + value.len()) / 3;
            let to = whole_groups * 4;
            if to > from && to - from >= MIN_BASE64_PIECE {
                let piece = enc[from..to].to_owned();
                if piece.contains('/') {
                    out.push((Form::Base64, piece.replace('/', "\\/")));
                }
                out.push((Form::Base64, piece));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn percent_encode(value: &str, lower: bool, keep_slash: bool) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else if lower {
            out.push_str(&format!("%{b:02x}"));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::secrets::SecretText;
    use proptest::prelude::*;

    fn finding(secret: &str) -> Finding {
        Finding {
            rule: "aws-secret-access-key",
            name: "AWS secret access key",
            category: "cloud",
            confidence: crate::detect::secrets::Confidence::Medium,
            path: "$.result".into(),
            length: secret.len(),
            prefix: secret.chars().take(4).collect(),
            fingerprint: format!("hmac-sha256:{:032x}", secret.len() as u128 * 7919),
            secret: SecretText::new(secret),
        }
    }

    fn origin() -> Origin {
        Origin {
            server: "fs".into(),
            tool: Some("read_file".into()),
            message: MessageRef {
                session: "s1".into(),
                direction: crate::event::Flow::ServerToClient,
                kind: "response",
                method: Some("tools/call".into()),
                id: None,
                tool: Some("read_file".into()),
                time: 1,
            },
        }
    }

    const SECRET: &str = "q7Zk/2mX+9pLw4VbN8cR1tY6hJ3sD0fG5aE/uIoP";

    #[test]
    fn found_bare_escaped_encoded_and_at_its_path() {
        let mut m = RelayMemory::new(16, 3600);
        m.remember(&finding(SECRET), origin(), 0);
        let cases = [
            (
                serde_json::json!({"params": {"arguments": {"text": format!("use {SECRET} please")}}}).to_string(),
                Form::Plain,
                "$.params.arguments.text",
            ),
            (
                format!(r#"{{"params":{{"a":"x{}"}}}}"#, SECRET.replace('/', "\\/")),
                Form::Plain,
                "$.params.a",
            ),
            (
                serde_json::json!({"q": format!("https://x.test/?k={}", percent_encode(SECRET, false, false))})
                    .to_string(),
                Form::Percent,
                "$.q",
            ),
            (
                serde_json::json!({"q": percent_encode(SECRET, true, true)}).to_string(),
                Form::Percent,
                "$.q",
            ),
        ];
        for (raw, form, path) in cases {
            let r = m.recall(raw.as_bytes(), 1);
            assert_eq!(r.len(), 1, "{raw}");
            assert_eq!(r[0].form, form, "{raw}");
            assert_eq!(r[0].path, path, "{raw}");
            assert_eq!(r[0].remembered.origin.server, "fs");
        }
        assert!(m
            .recall(br#"{"params":{"text":"nothing here q7Zk/2mX"}}"#, 2)
            .is_empty());
    }

    proptest! {
        /// Base64 of any text that holds the value, at any offset and in
        /// either alphabet, is recognised.
        #[test]
        fn found_inside_base64_at_any_alignment(before in "[ -~]{0,20}", after in "[ -~]{0,20}", url in any::<bool>()) {
            let mut m = RelayMemory::new(16, 3600);
            m.remember(&finding(SECRET), origin(), 0);
            let text = format!("{before}AWS key is {SECRET}{after}");
            let enc = if url {
                base64::engine::general_purpose::URL_SAFE.encode(text)
            } else {
                base64::engine::general_purpose::STANDARD.encode(text)
            };
            let raw = serde_json::json!({"params": {"arguments": {"blob": enc}}}).to_string();
            let r = m.recall(raw.as_bytes(), 1);
            prop_assert_eq!(r.len(), 1);
            prop_assert_eq!(r[0].form, Form::Base64);
            prop_assert_eq!(r[0].path.as_str(), "$.params.arguments.blob");
        }
    }

    #[test]
    fn bounded_and_forgotten_after_the_ttl() {
        let mut m = RelayMemory::new(2, 10);
        let secs = ["aaaaBBBB1111cccc", "ddddEEEE2222ffff", "ggggHHHH3333iiii"];
        for (i, s) in secs.iter().enumerate() {
            let mut f = finding(s);
            f.fingerprint = format!("print-{i}");
            m.remember(&f, origin(), i as i128);
        }
        assert_eq!(m.len(), 2);
        assert!(m.recall(secs[0].as_bytes(), 3).is_empty(), "the oldest was evicted");
        assert_eq!(m.recall(secs[2].as_bytes(), 3).len(), 1);
        assert!(m.recall(secs[2].as_bytes(), 3 + 11_000_000_000).is_empty(), "expired");
        assert!(m.is_empty());
    }

    #[test]
    fn remembered_values_are_redacted_in_any_spelling() {
        let mut m = RelayMemory::new(16, 3600);
        assert_eq!(m.redact(SECRET), None);
        m.remember(&finding(SECRET), origin(), 0);
        m.prepare(1);
        let r = m.redact(&format!("a {SECRET} b")).unwrap();
        assert_eq!(r, format!("a {} b", crate::redact::REDACTED));
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("x={SECRET};"));
        assert!(!m.redact(&enc).unwrap().contains(&enc[4..20]));
        assert_eq!(m.redact("nothing here"), None);
    }

    proptest! {
        /// The sieve finds every spelling that occurs, wherever it falls
        /// relative to the sampled positions, and nothing else (spellings
        /// of a small alphabet, so that grams collide often).
        #[test]
        fn the_sieve_finds_what_a_plain_search_finds(
            texts in proptest::collection::vec("[ab1/]{10,24}", 1..6),
            parts in proptest::collection::vec((0usize..6, "[ab1/ ]{0,9}"), 0..8),
        ) {
            let mut hay = String::new();
            for (k, filler) in &parts {
                hay.push_str(filler);
                if let Some(t) = texts.get(*k) {
                    hay.push_str(t);
                }
            }
            let sieve = Sieve::new(&texts);
            let mut got = std::collections::BTreeSet::new();
            sieve.find(&texts, hay.as_bytes(), |i| {
                got.insert(i);
            });
            let want: std::collections::BTreeSet<usize> =
                (0..texts.len()).filter(|&i| hay.contains(&texts[i])).collect();
            prop_assert_eq!(got, want);
        }
    }

    /// A server that returns a new credential in every response: each is
    /// recalled right away, forgotten ones are not, and the large search
    /// is rebuilt once per [`RECENT_MAX`] credentials, not per message.
    #[test]
    fn a_stream_of_new_credentials_is_followed_without_rebuilding_everything() {
        let mut m = RelayMemory::new(300, 3600);
        let mut values = Vec::new();
        let mut rebuilds = 0;
        for i in 0..1000 {
            let v = format!("Zq{i:05}xK4vB8nL3pD6sF1hJ5gC0");
            let mut f = finding(&v);
            f.fingerprint = format!("print-{i}");
            let had = m.settled.is_some();
            m.remember(&f, origin(), i);
            let r = m.recall(format!(r#"{{"text":"here {v}"}}"#).as_bytes(), i);
            assert_eq!(r.len(), 1, "credential {i}");
            assert_eq!(r[0].remembered.finding.fingerprint, format!("print-{i}"));
            if had && m.settled_len != 0 && m.recent.is_empty() {
                rebuilds += 1;
            }
            values.push(v);
        }
        assert!(rebuilds <= 1000 / RECENT_MAX + 2, "{rebuilds} rebuilds");
        // Evicted (capacity 300): no longer recalled, though perhaps still
        // in the settled search.
        assert!(m.recall(format!("x {}", values[10]).as_bytes(), 2000).is_empty());
        assert_eq!(m.recall(format!("x {}", values[999]).as_bytes(), 2000).len(), 1);
        assert_eq!(m.len(), 300);
    }

    #[test]
    fn short_values_are_not_searched() {
        let mut m = RelayMemory::new(4, 10);
        m.remember(&finding("hunter2!"), origin(), 0);
        assert!(m.recall(b"my password is hunter2!", 1).is_empty());
    }
}
