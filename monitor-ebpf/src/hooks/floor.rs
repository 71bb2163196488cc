//! Programs that do nothing. `mcp-monitor floor` attaches them where the
//! agent attaches its own (the raw syscall tracepoint; the entries and
//! returns of OpenSSL's `SSL_*` functions), so a benchmark can tell the
//! price of the hooks themselves (the floor) from the work of the agent's
//! programs.

use aya_ebpf::macros::{raw_tracepoint, uprobe, uretprobe};
use aya_ebpf::programs::{ProbeContext, RawTracePointContext, RetProbeContext};

#[raw_tracepoint]
pub fn floor(_ctx: RawTracePointContext) -> i32 {
    0
}

#[uprobe]
pub fn floor_uprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[uretprobe]
pub fn floor_uretprobe(_ctx: RetProbeContext) -> u32 {
    0
}
