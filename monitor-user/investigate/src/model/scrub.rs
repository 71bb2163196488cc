//! The scrubbing every kept string passes: credentials out before the
//! model holds anything.

use mcp_monitor_pipeline::detect::secrets::SecretScanner;
use mcp_monitor_pipeline::redact;
use serde_json::Value;

/// Removes credentials from text before the model keeps it: the detector's
/// provider rules, then the token and URL-password rules of event payloads.
pub struct Scrubber {
    scanner: &'static SecretScanner,
}

impl Default for Scrubber {
    fn default() -> Self {
        // Compiled once per process (163 rules); the key only seeds
        // fingerprints, which the scrubber never shows.
        static SCANNER: std::sync::OnceLock<SecretScanner> = std::sync::OnceLock::new();
        Scrubber {
            scanner: SCANNER.get_or_init(|| SecretScanner::new(b"mcp-monitor investigate")),
        }
    }
}

impl Scrubber {
    /// `s` with credentials replaced by `[REDACTED]`: provider formats,
    /// token-shaped words, URL passwords.
    pub fn text(&self, s: &str) -> String {
        let s = self.scanner.redact(s).unwrap_or_else(|| s.to_owned());
        redact::redact_text(&s).unwrap_or(s)
    }

    /// A command line: the agent's own command-line scrubbing (secret-named
    /// flags and assignments, `--flag=token`), then [`Scrubber::text`].
    pub fn command_line(&self, words: &[String]) -> String {
        self.text(&redact::scrub_args(words).join(" "))
    }

    /// A short name or label: only the provider rules, so hashes, paths
    /// and ids stay readable.
    pub fn name(&self, s: &str) -> String {
        self.scanner.redact(s).unwrap_or_else(|| s.to_owned())
    }
    /// A JSON document: secret-named keys, token-shaped strings, provider
    /// formats. Hashes and fingerprints the agent wrote stay.
    pub fn json(&self, mut v: Value) -> Value {
        redact::redact_json_with(&mut v, &|s| {
            if is_digest(s) {
                None
            } else {
                self.scanner.redact(s)
            }
        });
        v
    }
}

/// A hash or fingerprint as the agent writes them (`hmac-sha256:…`, 64 hex
/// digits): evidence, not a secret.
fn is_digest(s: &str) -> bool {
    let body = s
        .strip_prefix("hmac-sha256:")
        .or_else(|| s.strip_prefix("sha256:"))
        .unwrap_or(s);
    body.len() >= 16 && body.bytes().all(|b| b.is_ascii_hexdigit())
}
