//! Credential detection.
//!
//! A message is first tested as raw bytes with one Aho-Corasick pass over
//! every rule's keywords (plus a look for encoded runs): most messages stop
//! there. Only on a hit is it parsed, and each string leaf (after JSON
//! unescaping, with its JSON path) goes through the keyword filter again to
//! pick the few rules whose regexes run on it. Base64- and percent-encoded
//! runs are decoded and scanned too (bounded depth). A byte budget caps the
//! work per message.
//!
//! A finding never holds the secret: rule, path, length, the first four
//! characters and a keyed HMAC-SHA256 fingerprint, so the same secret can be
//! correlated across events and hosts that share the key.

pub mod builtin;
mod checks;
mod context;
mod encoded;
pub mod gitleaks;
mod judge;
pub mod rule;

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use hmac::{Hmac, Mac};
use regex::Regex;
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;

use checks::check;
pub use checks::{base62, crc32, github_checksum_ok, jwt_ok};
use encoded::decode_candidates;
pub use encoded::json_unescape;
pub use judge::{
    assignment_ok, is_placeholder, is_reference_or_code, name_strength, names_no_secret, shannon_entropy, NameStrength,
};
pub use rule::{Check, Confidence, RuleDef};

/// Depth of nested decoding (base64 inside percent-encoding, say).
const MAX_DECODE_DEPTH: u8 = 2;

/// A credential found in a message. Holds no secret material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Rule id (`github-pat-classic`, `generic-secret-key`...).
    pub rule: &'static str,
    /// Human name of the credential format (`GitHub personal access token (classic)`).
    pub name: &'static str,
    /// Group of the rule: cloud, code-hosting, chat, payments, ai, ..., generic.
    pub category: &'static str,
    /// How sure the rule is that this is a live credential; written as low, medium or high.
    #[serde(serialize_with = "ser_confidence")]
    pub confidence: Confidence,
    /// JSON path of the string that held it (`$.params.arguments.text`);
    /// `<base64>`/`<percent>` steps mark decoded content.
    pub path: String,
    /// Length of the secret in characters.
    pub length: usize,
    /// Its first four characters (a prefix identifies the format, not the secret).
    pub prefix: String,
    /// `hmac-sha256:` + 32 hex characters, keyed per deployment.
    pub fingerprint: String,
    /// The secret itself, for the relay memory only: never serialized,
    /// never printed, zeroed when the last copy goes.
    #[serde(skip)]
    pub secret: SecretText,
}

/// Secret material held in memory: `Debug` shows its length only, it has
/// no `Display` or `Serialize`, and its bytes are overwritten on drop.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretText(std::sync::Arc<Zeroed>);

#[derive(Default, PartialEq, Eq)]
struct Zeroed(Box<str>);

impl Drop for Zeroed {
    fn drop(&mut self) {
        // SAFETY: the pointer is valid for the box's length and owned by
        // it; volatile so the stores are not elided as dead. Zero bytes
        // keep the str valid UTF-8.
        unsafe {
            let p = self.0.as_mut_ptr();
            for i in 0..self.0.len() {
                std::ptr::write_volatile(p.add(i), 0);
            }
        }
    }
}

impl SecretText {
    /// Holds a copy of `s`.
    pub fn new(s: &str) -> Self {
        Self(std::sync::Arc::new(Zeroed(s.into())))
    }

    /// The secret, for matching. Never log or export it.
    pub fn expose(&self) -> &str {
        &self.0 .0
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretText({} bytes)", self.0 .0.len())
    }
}

fn ser_confidence<S: serde::Serializer>(c: &Confidence, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match c {
        Confidence::Low => "low",
        Confidence::Medium => "medium",
        Confidence::High => "high",
    })
}

#[derive(Clone)]
struct Compiled {
    def: RuleDef,
    regex: RuleRegex,
    group: Group,
    /// Operator rules: the secret's entropy must exceed this.
    entropy_above: Option<f32>,
    /// Operator rules: findings these allow are dropped.
    allowlists: Vec<gitleaks::Allowlist>,
}

/// A rule's regex, compiled when a message first selects the rule (its
/// keywords were found), then kept. Compiled all at once, the built-in
/// rules held ~33 MB of automata (their bounded repetitions, such as
/// `[^\n]{0,200}?`, compile to one copy per count), which took the idle
/// agent to 82 MiB of RSS against a 64 MiB target; most rules never fire
/// on a given node. Clones of the scanner share the compiled regex.
#[derive(Clone)]
struct RuleRegex(Arc<LazyRegex>);

struct LazyRegex {
    id: &'static str,
    pattern: &'static str,
    compiled: OnceLock<Option<Regex>>,
}

impl RuleRegex {
    /// A built-in rule's pattern, compiled on first use.
    fn lazy(id: &'static str, pattern: &'static str) -> Self {
        Self(Arc::new(LazyRegex {
            id,
            pattern,
            compiled: OnceLock::new(),
        }))
    }

    /// An operator's rule, compiled (and checked) when the configuration
    /// was loaded.
    fn compiled(id: &'static str, regex: Regex) -> Self {
        Self(Arc::new(LazyRegex {
            id,
            pattern: "",
            compiled: OnceLock::from(Some(regex)),
        }))
    }

    /// The compiled regex; `None` if the pattern does not compile, which
    /// the built-in rules' tests rule out (every example of every rule is
    /// scanned for): logged once, and the rule then finds nothing rather
    /// than stopping the agent in the middle of a stream.
    fn get(&self) -> Option<&Regex> {
        self.0
            .compiled
            .get_or_init(|| match Regex::new(self.0.pattern) {
                Ok(r) => Some(r),
                Err(e) => {
                    log::error!(
                        "built-in credential rule {} does not compile and finds nothing: {e}",
                        self.0.id
                    );
                    None
                }
            })
            .as_ref()
    }

    /// Whether the regex has been compiled.
    #[cfg(test)]
    fn is_compiled(&self) -> bool {
        self.0.compiled.get().is_some()
    }
}

/// Which part of a match is the secret.
#[derive(Clone, Copy)]
enum Group {
    /// Built-in rules: the `secret` group, or the whole match.
    Named,
    /// Operator rules, as gitleaks decides.
    Custom(gitleaks::SecretGroup),
}

impl Group {
    fn pick<'h>(self, caps: &regex::Captures<'h>) -> Option<regex::Match<'h>> {
        let whole = caps.get(0);
        match self {
            Group::Named => caps.name("secret").or(whole),
            Group::Custom(gitleaks::SecretGroup::Index(g)) => caps.get(g).filter(|m| !m.is_empty()),
            Group::Custom(gitleaks::SecretGroup::FirstNonEmpty) => {
                caps.iter().skip(1).flatten().find(|m| !m.is_empty()).or(whole)
            }
        }
    }
}

/// Work left for one message.
#[derive(Debug)]
pub struct Budget {
    /// Bytes that may still be examined.
    pub remaining: usize,
    /// Set when a string was skipped because it did not fit in what remained.
    pub exceeded: bool,
}

impl Budget {
    /// A budget of `bytes` bytes (the detector passes `scan_budget_bytes`).
    pub fn new(bytes: usize) -> Self {
        Self {
            remaining: bytes,
            exceeded: false,
        }
    }

    fn take(&mut self, n: usize) -> bool {
        if n > self.remaining {
            self.exceeded = true;
            return false;
        }
        self.remaining -= n;
        true
    }
}

/// The compiled credential rules.
#[derive(Clone)]
pub struct SecretScanner {
    rules: Vec<Compiled>,
    prefilter: AhoCorasick,
    /// Prefilter patterns (keywords and their JSON-escaped spellings).
    patterns: Vec<String>,
    /// Prefilter pattern index to the rules it selects.
    pattern_rules: Vec<Vec<usize>>,
    /// Rules without keywords (operator rules only): they run on every
    /// message.
    unconditional: Vec<usize>,
    /// The turned-off built-in rules, run on values other rules found: a
    /// value of a format turned off (a Stripe test-mode key) is not
    /// reported by a generic rule either (`STRIPE_KEY=sk_test_...`, `Bearer
    /// sk_test_...`). Rules that need context around the value never match
    /// a value alone, so only self-identifying formats act here.
    formats_off: Vec<Regex>,
    key: Vec<u8>,
}

/// Id of the rule for secret-named keys with high-entropy values.
pub const GENERIC_KEY_RULE: &str = "generic-secret-key";

impl SecretScanner {
    /// Compiles the built-in rules with the fingerprint `key`.
    pub fn new(key: &[u8]) -> Self {
        Self::with_rules(builtin::RULES, key, &[], &[])
    }

    /// Compiles `rules` and the operator's `custom` rules, leaving out the
    /// ids in `disabled`.
    pub fn with_rules(
        rules: &'static [RuleDef],
        key: &[u8],
        disabled: &[String],
        custom: &[gitleaks::CustomRule],
    ) -> Self {
        let mut compiled = Vec::new();
        let mut keywords: Vec<Vec<String>> = Vec::new();
        let formats_off = rules
            .iter()
            .filter(|d| disabled.iter().any(|x| x == d.id))
            .map(|d| Regex::new(d.pattern).unwrap_or_else(|e| panic!("built-in rule {} does not compile: {e}", d.id)))
            .collect();
        for def in rules.iter().filter(|d| !disabled.iter().any(|x| x == d.id)) {
            compiled.push(Compiled {
                def: def.clone(),
                regex: RuleRegex::lazy(def.id, def.pattern),
                group: Group::Named,
                entropy_above: None,
                allowlists: Vec::new(),
            });
            keywords.push(def.keywords.iter().map(|k| k.to_string()).collect());
        }
        for c in custom.iter().filter(|c| !disabled.iter().any(|x| x == c.id)) {
            compiled.push(Compiled {
                def: RuleDef {
                    id: c.id,
                    name: c.name,
                    category: "custom",
                    keywords: &[],
                    pattern: "",
                    check: Check::None,
                    confidence: Confidence::Medium,
                    examples: &[],
                    counterexamples: &[],
                },
                regex: RuleRegex::compiled(c.id, c.regex.clone()),
                group: Group::Custom(c.group),
                entropy_above: c.entropy,
                allowlists: c.allowlists.clone(),
            });
            keywords.push(c.keywords.clone());
        }
        // Rule indices run from the most confident rule down (table order
        // within a confidence), so that when several rules find one secret
        // (`Bearer figd_...`) the most specific names it: the Figma rule,
        // not the Bearer one. Done once here, not per scanned string.
        let mut order: Vec<usize> = (0..compiled.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(compiled[i].def.confidence));
        let mut slots: Vec<Option<(Compiled, Vec<String>)>> = compiled.into_iter().zip(keywords).map(Some).collect();
        let (compiled, keywords): (Vec<Compiled>, Vec<Vec<String>>) =
            order.iter().map(|&i| slots[i].take().expect("each index once")).unzip();
        let mut patterns: Vec<String> = Vec::new();
        let mut pattern_rules: Vec<Vec<usize>> = Vec::new();
        let mut unconditional = Vec::new();
        for (idx, kws) in keywords.iter().enumerate() {
            if kws.is_empty() {
                unconditional.push(idx);
            }
            for kw in kws {
                // JSON may escape '/' as "\/", and must escape '"' as
                // "\"": add those spellings too.
                let mut spellings = vec![kw.to_string()];
                if kw.contains('/') {
                    spellings.push(kw.replace('/', "\\/"));
                }
                if kw.contains('"') {
                    for sp in spellings.clone() {
                        spellings.push(sp.replace('"', "\\\""));
                    }
                }
                for sp in spellings {
                    match patterns.iter().position(|p| *p == sp) {
                        Some(i) => pattern_rules[i].push(idx),
                        None => {
                            patterns.push(sp);
                            pattern_rules.push(vec![idx]);
                        }
                    }
                }
            }
        }
        let prefilter = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&patterns)
            .expect("keyword automaton");
        Self {
            rules: compiled,
            prefilter,
            patterns,
            pattern_rules,
            unconditional,
            formats_off,
            key: key.to_vec(),
        }
    }

    /// Are there rules without keywords, which every message must be
    /// tested against?
    pub fn has_unconditional_rules(&self) -> bool {
        !self.unconditional.is_empty()
    }

    /// Is `value` wholly of a format whose rule is turned off?
    fn format_turned_off(&self, value: &str) -> bool {
        self.formats_off.iter().any(|re| {
            re.captures(value).is_some_and(|c| {
                c.name("secret")
                    .or_else(|| c.get(0))
                    .is_some_and(|m| m.start() == 0 && m.end() == value.len())
            })
        })
    }

    /// Number of compiled rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The keywords of the rules in force (with their JSON-escaped
    /// spellings) and the rules each selects: input for the detector's
    /// combined first pass.
    pub fn keyword_rules(&self) -> Vec<(String, Vec<usize>)> {
        self.patterns
            .iter()
            .cloned()
            .zip(self.pattern_rules.iter().cloned())
            .collect()
    }

    /// Second-level filter on raw message text: does one of `rules` match
    /// it at all? Keywords alone (`pat`, `key-`) are common in ordinary
    /// text; parsing the message is only worth it when a regex matches too.
    ///
    /// The regexes run on the text with its JSON escapes undone: in the raw
    /// bytes a newline is `\n`, whose `n` would glue itself to a token at
    /// the start of a line and defeat the rule's `\b`. Undoing the escapes
    /// of the whole message (structure and all) keeps every string leaf's
    /// text intact between quotes, so anything a rule finds in a leaf it
    /// also finds here.
    pub fn raw_may_match(&self, raw: &str, rules: &[usize]) -> bool {
        let text = json_unescape(raw);
        rules.iter().chain(&self.unconditional).any(|&r| {
            self.rules
                .get(r)
                .and_then(|c| c.regex.get())
                .is_some_and(|re| re.is_match(&text))
        })
    }

    /// Keyed fingerprint of a secret.
    pub fn fingerprint(&self, secret: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(secret.as_bytes());
        let out = mac.finalize().into_bytes();
        let mut hex = String::with_capacity(12 + 32);
        hex.push_str("hmac-sha256:");
        for b in &out[..16] {
            hex.push_str(&format!("{b:02x}"));
        }
        hex
    }

    fn finding(&self, def: &RuleDef, secret: &str, path: &str) -> Finding {
        Finding {
            rule: def.id,
            name: def.name,
            category: def.category,
            confidence: def.confidence,
            path: path.to_owned(),
            length: secret.chars().count(),
            prefix: secret.chars().take(4).collect(),
            fingerprint: self.fingerprint(secret),
            secret: SecretText::new(secret),
        }
    }

    /// Every validated secret in `s`: the rule and the byte range of the
    /// secret itself.
    fn matches(&self, s: &str) -> Vec<(&RuleDef, std::ops::Range<usize>)> {
        let mut candidates: Vec<usize> = self.unconditional.clone();
        for m in self.prefilter.find_overlapping_iter(s) {
            for &r in &self.pattern_rules[m.pattern().as_usize()] {
                if !candidates.contains(&r) {
                    candidates.push(r);
                }
            }
        }
        // Index order is confidence order (see `with_rules`).
        candidates.sort_unstable();
        let mut out = Vec::new();
        for r in candidates {
            let c = &self.rules[r];
            let Some(regex) = c.regex.get() else { continue };
            for caps in regex.captures_iter(s) {
                let Some(m) = c.group.pick(&caps) else { continue };
                let mut range = m.range();
                if c.def.check == Check::Assignment {
                    // `password=Sup3rS3cret,host=db`: the next field is not
                    // part of the value.
                    range.end = range.start + value_before_next_field(m.as_str());
                }
                let secret = &s[range.clone()];
                let name = caps.name("name").map_or("", |n| n.as_str());
                if is_placeholder(secret) || !check(c.def.check, secret, name) || self.format_turned_off(secret) {
                    continue;
                }
                if context::public_by_context(c.def.id, name, s, &range) {
                    continue;
                }
                if c.entropy_above.is_some_and(|e| shannon_entropy(secret) <= e) {
                    continue;
                }
                if !c.allowlists.is_empty() {
                    let whole = caps.get(0).expect("group 0 always matches");
                    let line_start = s[..whole.start()].rfind('\n').map_or(0, |i| i + 1);
                    let line_end = s[whole.end()..].find('\n').map_or(s.len(), |i| whole.end() + i);
                    let line = &s[line_start..line_end];
                    if c.allowlists.iter().any(|a| a.allows(secret, whole.as_str(), line)) {
                        continue;
                    }
                }
                // One secret, one finding: the most confident rule's
                // (rules run in confidence order).
                if out
                    .iter()
                    .any(|(_, r): &(&RuleDef, std::ops::Range<usize>)| r.start < range.end && range.start < r.end)
                {
                    continue;
                }
                out.push((&c.def, range));
            }
        }
        out
    }

    /// `s` with every secret the rules find replaced by `[REDACTED]`, or
    /// `None` when there is none.
    pub fn redact(&self, s: &str) -> Option<String> {
        self.redact_depth(s, 0)
    }

    fn redact_depth(&self, s: &str, depth: u8) -> Option<String> {
        let plain = self.redact_plain(s);
        // What the scan finds in a JSON document carried as text must not
        // stay in clear in it: its strings and secret-named keys are
        // redacted parsed (from the text as it came: a plain match may
        // have run past a quote), the document written back compact, and
        // the rules run once more on what was written.
        if depth < MAX_DECODE_DEPTH && looks_like_json_document(s) {
            if let Ok(mut v) = serde_json::from_str::<Value>(s) {
                let before = v.clone();
                // Counts values already `[REDACTED]` too: compare instead.
                crate::redact::redact_json_with(&mut v, &|x| self.redact_depth(x, depth + 1));
                if v != before {
                    if let Ok(text) = serde_json::to_string(&v) {
                        return Some(self.redact_plain(&text).unwrap_or(text));
                    }
                }
            }
        }
        plain
    }

    /// [`SecretScanner::redact`] of the text as it is.
    fn redact_plain(&self, s: &str) -> Option<String> {
        let mut ranges: Vec<std::ops::Range<usize>> = self.matches(s).into_iter().map(|(_, r)| r).collect();
        if ranges.is_empty() {
            return None;
        }
        ranges.sort_by_key(|r| r.start);
        let mut out = String::with_capacity(s.len());
        let mut at = 0;
        for r in ranges {
            if r.start < at {
                // Overlaps the previous secret: extend it.
                at = at.max(r.end);
                continue;
            }
            out.push_str(&s[at..r.start]);
            out.push_str(crate::redact::REDACTED);
            at = r.end;
        }
        out.push_str(&s[at..]);
        Some(out)
    }

    /// Scans one string found at `path`.
    pub fn scan_str(&self, s: &str, path: &str, budget: &mut Budget, out: &mut Vec<Finding>) {
        self.scan_str_depth(s, path, 0, budget, out);
    }

    fn scan_str_depth(&self, s: &str, path: &str, depth: u8, budget: &mut Budget, out: &mut Vec<Finding>) {
        if !budget.take(s.len()) {
            return;
        }
        let found_before = out.len();
        for (def, range) in self.matches(s) {
            let f = self.finding(def, &s[range], path);
            if !out.iter().any(|o| o.fingerprint == f.fingerprint && o.path == f.path) {
                out.push(f);
            }
        }
        // A JSON document carried as text (a tool returning `{"path": ...,
        // "content": "..."}` as its text content): its own strings are
        // escaped once more in `s`, which hides assignments in them from the
        // rules (`\"password\": \"...\"`). Scanned parsed, whatever the plain
        // form found; a secret found both ways is reported once, in its
        // decoded form (the one an agent would pass on).
        if depth < MAX_DECODE_DEPTH && looks_like_json_document(s) {
            if let Ok(v) = serde_json::from_str::<Value>(s) {
                // The document's strings are the bytes just charged, read
                // again: the budget counts them once (the larger of the two).
                let charged = budget.remaining;
                budget.remaining += s.len();
                let mut inner = Vec::new();
                self.scan_value_depth(&v, &format!("{path}<json>"), depth + 1, budget, &mut inner);
                budget.remaining = budget.remaining.min(charged);
                for f in inner {
                    let escaped = serde_json::to_string(f.secret.expose()).unwrap_or_default();
                    let escaped = escaped
                        .strip_prefix('"')
                        .and_then(|e| e.strip_suffix('"'))
                        .unwrap_or("");
                    let escaped = self.fingerprint(escaped);
                    let plain = &out[found_before..];
                    if plain.iter().any(|o| o.fingerprint == f.fingerprint) {
                        // Found plain already, under the rule that judged it there.
                        continue;
                    }
                    match plain.iter().position(|o| o.fingerprint == escaped) {
                        Some(i) => {
                            let o = &out[found_before + i];
                            out[found_before + i] = Finding {
                                rule: o.rule,
                                name: o.name,
                                category: o.category,
                                confidence: o.confidence,
                                ..f
                            };
                        }
                        None => out.push(f),
                    }
                }
            }
        }
        // Decoding looks for secrets hidden by an encoding; a string whose
        // plain or parsed form already gave findings would only repeat them.
        if depth >= MAX_DECODE_DEPTH || out.len() > found_before {
            return;
        }
        for decoded in decode_candidates(s) {
            let (kind, text) = decoded;
            let sub = format!("{path}<{kind}>");
            self.scan_str_depth(&text, &sub, depth + 1, budget, out);
        }
    }

    /// Scans every string (and secret-named key) of a JSON value; `path` is
    /// the value's own path, e.g. `$.params`.
    pub fn scan_value(&self, v: &Value, path: &str, budget: &mut Budget, out: &mut Vec<Finding>) {
        self.scan_value_depth(v, path, 0, budget, out);
    }

    /// [`SecretScanner::scan_value`] of a value decoded `depth` times.
    fn scan_value_depth(&self, v: &Value, path: &str, depth: u8, budget: &mut Budget, out: &mut Vec<Finding>) {
        // Iterative: depth is bounded by the decoder, but stay cheap anyway.
        let mut stack: Vec<(&Value, Cow<'_, str>)> = vec![(v, Cow::Borrowed(path))];
        while let Some((v, p)) = stack.pop() {
            match v {
                Value::String(s) => self.scan_str_depth(s, &p, depth, budget, out),
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate().rev() {
                        stack.push((item, Cow::Owned(format!("{p}[{i}]"))));
                    }
                }
                Value::Object(map) => {
                    // An encrypted envelope (`{"ciphertext"|"encrypted_data",
                    // "iv"|"nonce", "tag", "cipher"}`): its parts are safe to
                    // show without the key (other keys beside them are
                    // judged as usual); strings are still scanned for known
                    // formats.
                    let named = |k: &str, w: &[&str]| w.iter().any(|w| k.eq_ignore_ascii_case(w));
                    let ciphered = |k: &str| {
                        let b = k.as_bytes();
                        ["cipher", "encrypted"]
                            .iter()
                            .any(|w| b.windows(w.len()).any(|x| x.eq_ignore_ascii_case(w.as_bytes())))
                    };
                    let envelope = map.keys().any(|k| named(k, &["iv", "nonce"])) && map.keys().any(|k| ciphered(k));
                    self.aws_key_pair(map, &p, out);
                    for (k, item) in map.iter().rev() {
                        let child = Cow::Owned(child_path(&p, k));
                        if let Value::String(s) = item {
                            let part = envelope
                                && (named(k, &["iv", "nonce", "tag", "auth_tag", "authtag", "salt"]) || ciphered(k));
                            if !part {
                                self.check_secret_named(k, s, &child, out);
                            }
                        }
                        stack.push((item, child));
                    }
                }
                _ => {}
            }
        }
    }

    /// An AWS access key ID and a secret access key as values of one
    /// object (`{"AccessKeyId": ..., "SecretAccessKey": ...}` in structured
    /// arguments or results): each value is scanned alone, where an ID has
    /// no secret beside it to count (see `context.rs`) and the secret no
    /// name for its rule. Reported here under their own rules.
    fn aws_key_pair(&self, map: &serde_json::Map<String, Value>, path: &str, out: &mut Vec<Finding>) {
        let string = |pred: &dyn Fn(&str) -> bool| {
            map.iter()
                .find_map(|(k, v)| v.as_str().filter(|s| pred(s)).map(|s| (k.as_str(), s)))
        };
        let Some((id_key, id)) = string(&|s| check(Check::AwsKeyIdPrefix, s, "")) else {
            return;
        };
        let Some((secret_key, secret)) = string(&|s| s.len() == 40 && context::has_secret_key_shape(s)) else {
            return;
        };
        if is_placeholder(id) || is_placeholder(secret) {
            return;
        }
        // Looked up only for an object holding both: this runs for every
        // object of every message.
        let rule = |id: &str| self.rules.iter().find(|c| c.def.id == id).map(|c| &c.def);
        let (Some(id_rule), Some(secret_rule)) = (rule("aws-access-key-id"), rule("aws-secret-access-key")) else {
            return;
        };
        for (def, key, value) in [(id_rule, id_key, id), (secret_rule, secret_key, secret)] {
            let child = child_path(path, key);
            if !out.iter().any(|f| f.path == child) {
                out.push(self.finding(def, value, &child));
            }
        }
    }

    /// `"password": "<high-entropy value>"` with no known format.
    fn check_secret_named(&self, key: &str, value: &str, path: &str, out: &mut Vec<Finding>) {
        if value.len() < 8 || value.len() > 512 || !crate::redact::is_secret_name(key) {
            return;
        }
        if value.contains(char::is_whitespace) || is_placeholder(value) || self.format_turned_off(value) {
            return;
        }
        // Names the assignment rule knows decide as there (short passwords
        // count); other secret-like names (`cookie`, `signature`) need a
        // high-entropy value.
        let ok = match name_strength(key) {
            NameStrength::None => {
                !names_no_secret(key) && shannon_entropy(value) >= 3.5 && !is_reference_or_code(value, key)
            }
            _ => assignment_ok(key, value),
        };
        if !ok {
            return;
        }
        if out.iter().any(|f| f.path == path) {
            return; // a specific rule already named it
        }
        out.push(Finding {
            rule: GENERIC_KEY_RULE,
            name: "Secret-named key with a high-entropy value",
            category: "generic",
            confidence: Confidence::Low,
            path: path.to_owned(),
            length: value.chars().count(),
            prefix: value.chars().take(4).collect(),
            fingerprint: self.fingerprint(value),
            secret: SecretText::new(value),
        });
    }
}

/// The length of `value` up to a comma that starts another `name=` or
/// `name:` field (a name of two or more characters, from a letter).
fn value_before_next_field(value: &str) -> usize {
    let b = value.as_bytes();
    for (i, _) in value.match_indices(',') {
        let name_len = b[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_' || **c == b'-' || **c == b'.')
            .count();
        // A name: a letter, then at least one more character (a password
        // drawn from all printable characters holds `,x=` often enough).
        let named = name_len >= 2 && b[i + 1].is_ascii_alphabetic();
        if named && b[i + 1 + name_len..].first().is_some_and(|c| *c == b'=' || *c == b':') {
            return i;
        }
    }
    value.len()
}

/// An object or array with room for a secret: parsed only when it looks
/// like one from both ends.
fn looks_like_json_document(s: &str) -> bool {
    let t = s.trim();
    t.len() >= 16
        && matches!(
            (t.as_bytes()[0], t.as_bytes()[t.len() - 1]),
            (b'{', b'}') | (b'[', b']')
        )
}

pub(crate) fn child_path(parent: &str, key: &str) -> String {
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        format!("{parent}.{key}")
    } else {
        format!("{parent}[{}]", serde_json::to_string(key).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests;
