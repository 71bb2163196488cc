//! The shape of a credential rule.
//!
//! Rules are data: a literal prefilter (`keywords`), a regex, and an optional
//! structural check. Built-in rules live in [`super::builtin`]; every rule
//! carries fake examples that its tests must match and near-misses they must
//! not.

/// One credential format.
#[derive(Clone, Debug)]
pub struct RuleDef {
    /// Stable kebab-case id, used in alerts and configuration.
    pub id: &'static str,
    /// Human name.
    pub name: &'static str,
    /// Grouping: cloud, code-hosting, chat, payments, ai, package-registry,
    /// observability, saas, ci, private-key, database, auth, generic.
    pub category: &'static str,
    /// Lowercase literals; the regex runs only on text containing one of them
    /// (case-insensitively). This is what keeps scanning fast.
    pub keywords: &'static [&'static str],
    /// `regex` crate syntax. A named group `secret` marks the secret within
    /// the match; without it the whole match is the secret.
    pub pattern: &'static str,
    /// Validation beyond the regex.
    pub check: Check,
    /// How sure a match is to be a real credential.
    pub confidence: Confidence,
    /// Texts holding one fake secret each: must be found.
    pub examples: &'static [&'static str],
    /// Near misses: must not be reported.
    pub counterexamples: &'static [&'static str],
}

/// Structural validation of a candidate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Check {
    /// No validation beyond the regex.
    None,
    /// GitHub's `gh?_` tokens end with a base62 CRC32 of their random part.
    GitHubCrc32,
    /// Three base64url segments; the first decodes to JSON with `"alg"`.
    Jwt,
    /// Shannon entropy of the secret, in bits per character, at least this.
    MinEntropy(f32),
    /// AWS access key id prefixes (AKIA, ASIA, ...).
    AwsKeyIdPrefix,
    /// Base64 of a JSON object with `k`, `n` and `id` (Grafana's legacy API
    /// keys; a Power BI link's `?r=` is `k`, `t`, `c`).
    GrafanaLegacyKey,
    /// `name = value` with no known format: the pattern's `name` group
    /// must say secret and the value must not be a reference, a type, a
    /// word or too simple (see `assignment_ok`).
    Assignment,
}

/// Confidence that a match is a live credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Confidence {
    /// Keyword plus entropy: likely but noisy.
    Low,
    /// Distinctive prefix, alphabet and length.
    Medium,
    /// Checksum or structure validated, or a long unique prefix.
    High,
}
