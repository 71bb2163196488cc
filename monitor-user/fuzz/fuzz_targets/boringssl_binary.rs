//! Bun executables (any file a process runs that has Bun's sections is
//! searched for BoringSSL's functions): an error or probe points inside
//! the file, never a panic or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_monitor_pipeline::boringssl_binary::inspect;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = inspect(data) {
        assert!((p.read as usize) < data.len() && (p.write as usize) < data.len());
        assert_ne!(p.read, p.write);
    }
});
