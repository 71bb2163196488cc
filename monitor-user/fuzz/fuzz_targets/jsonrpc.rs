//! JSON-RPC decoding of one untrusted frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_monitor_pipeline::jsonrpc::{decode, Limits};

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = decode(
        data,
        &Limits {
            max_depth: 32,
            max_batch: 64,
        },
    ) {
        for m in d.into_messages() {
            // Every accepted message has the fields its kind promises.
            match m.kind {
                mcp_monitor_pipeline::jsonrpc::Kind::Request => assert!(m.id.is_some() && m.method.is_some()),
                mcp_monitor_pipeline::jsonrpc::Kind::Notification => assert!(m.id.is_none() && m.method.is_some()),
                mcp_monitor_pipeline::jsonrpc::Kind::Response => assert!(m.result.is_some()),
                mcp_monitor_pipeline::jsonrpc::Kind::Error => assert!(m.error.is_some()),
            }
            assert!(m.raw.len() <= data.len());
        }
    }
});
