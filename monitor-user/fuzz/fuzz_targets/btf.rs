//! BTF parsing (the kernel's own data, parsed without trusting it).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_monitor_pipeline::btf::Btf;

fuzz_target!(|data: &[u8]| {
    let mut v = data.to_vec();
    if v.len() >= 2 {
        v[0] = 0x9f;
        v[1] = 0xeb;
    }
    if let Ok(b) = Btf::parse(&v) {
        let _ = b.kernel_offsets();
        let _ = b.offset_of("sock", "__sk_common.skc_family");
    }
});
