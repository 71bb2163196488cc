//! Credential scanning and redaction of untrusted text and JSON: never
//! panics, respects its byte budget, and reports no secret material.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcp_monitor_pipeline::detect::secrets::{Budget, SecretScanner};

fn scanner() -> &'static SecretScanner {
    static S: OnceLock<SecretScanner> = OnceLock::new();
    S.get_or_init(|| SecretScanner::new(b"fuzz-fingerprint-key"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let scanner = scanner();
    let mut found = Vec::new();
    let mut budget = Budget::new(16 << 10);
    scanner.scan_str(s, "$", &mut budget, &mut found);
    assert!(budget.remaining <= 16 << 10);
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(s) {
        scanner.scan_value(&v, "$", &mut Budget::new(16 << 10), &mut found);
    }
    for f in &found {
        // What a finding may say about the secret: its length, four
        // characters, and a keyed fingerprint.
        assert!(f.prefix.chars().count() <= 4);
        assert!(f.fingerprint.starts_with("hmac-sha256:") && f.fingerprint.len() == 12 + 32);
        assert!(f.length > 0);
    }
    // The raw-text gate's view of a message: every leaf of a JSON string
    // survives it.
    let unescaped =
        mcp_monitor_pipeline::detect::secrets::json_unescape(s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r')));
    if let Ok(serde_json::Value::String(leaf)) = serde_json::from_str::<serde_json::Value>(s) {
        assert_eq!(unescaped, format!("\"{leaf}\""));
    }
    if let Some(r) = scanner.redact(s) {
        assert!(r.contains(mcp_monitor_pipeline::redact::REDACTED));
    }
});
