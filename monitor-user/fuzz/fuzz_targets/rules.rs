//! Operator rules files (TOML): invalid ones are errors, never panics, and
//! valid ones build a detector.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_monitor_pipeline::{
    detect::{rules::Rules, Detector, DetectorConfig},
    metrics::Metrics,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(rules) = Rules::with_file(text, "fuzz") {
        let cfg = DetectorConfig {
            rules,
            fingerprint_key: b"fuzz-fingerprint-key".to_vec(),
            persisted_tools: None,
            scan_budget_bytes: 1 << 16,
            dedup_window_seconds: 300,
            relay_memory_seconds: 3600,
        };
        let _ = Detector::new(cfg, Metrics::new());
    }
});
