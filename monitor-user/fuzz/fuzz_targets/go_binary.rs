//! Go executables (any file a process runs is read for its Go tables): an
//! error or probe points inside the file, never a panic or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_monitor_pipeline::go_binary::inspect;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = inspect(data) {
        for off in p.read.returns.iter().chain(&p.write.returns) {
            assert!((*off as usize) < data.len());
        }
        assert!((p.read.entry as usize) < data.len() && (p.write.entry as usize) < data.len());
    }
});
