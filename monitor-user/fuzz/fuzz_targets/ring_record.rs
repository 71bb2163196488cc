//! Ring-buffer records from the kernel (trusted, but decoded defensively).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_monitor_pipeline::ring_record::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut v = data.to_vec();
    // Make the ABI check pass often enough to reach the payload handling.
    if v.len() >= 8 {
        v[4..8].copy_from_slice(&monitor_common::ABI_VERSION.to_le_bytes());
    }
    let _ = Decoder::new().decode(&v);
});
