//! Redaction of untrusted text and JSON: never panics, and a redacted
//! token never survives.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_monitor_pipeline::redact;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Some(r) = redact::redact_text(s) {
        assert!(r.contains(redact::REDACTED));
    }
    let _ = redact::scrub_args(&s.split(' ').map(str::to_owned).collect::<Vec<_>>());
    if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(s) {
        redact::redact_json(&mut v);
    }
});
