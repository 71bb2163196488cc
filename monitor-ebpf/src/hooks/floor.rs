//! A program that does nothing. `mcp-monitor floor` attaches it to every
//! syscall tracepoint the agent uses, so a benchmark can tell the price of
//! the hooks themselves (the floor) from the work of the agent's programs.

use aya_ebpf::macros::tracepoint;
use aya_ebpf::programs::TracePointContext;

#[tracepoint]
pub fn floor(_ctx: TracePointContext) -> u32 {
    0
}
