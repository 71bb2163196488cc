//! Recording files are read by `mcp-monitor replay`: any bytes are an error
//! or observations, never a panic or an unbounded allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_monitor_pipeline::record::Reader;

fuzz_target!(|data: &[u8]| {
    let mut input = mcp_monitor_pipeline::record::MAGIC.to_vec();
    input.extend_from_slice(&1u32.to_le_bytes());
    input.extend_from_slice(data);
    if let Ok(mut r) = Reader::new(&input[..]) {
        while let Ok(Some(_)) = r.next_observation() {}
    }
    if let Ok(mut r) = Reader::new(data) {
        while let Ok(Some(_)) = r.next_observation() {}
    }
});
