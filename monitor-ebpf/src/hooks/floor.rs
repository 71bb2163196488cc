//! A program that does nothing. `mcp-monitor floor` attaches it to the
//! raw syscall tracepoints the agent uses, so a benchmark can tell the
//! price of the hooks themselves (the floor) from the work of the agent's
//! programs.

use aya_ebpf::macros::raw_tracepoint;
use aya_ebpf::programs::RawTracePointContext;

#[raw_tracepoint]
pub fn floor(_ctx: RawTracePointContext) -> i32 {
    0
}
