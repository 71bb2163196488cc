//! Programs that do nothing. `mcp-monitor floor` attaches them where the
//! agent attaches its own (the raw syscall tracepoint, or the system call
//! functions where the agent uses fexit; the entries and
//! returns of OpenSSL's `SSL_*` functions), so a benchmark can tell the
//! price of the hooks themselves (the floor) from the work of the agent's
//! programs.

use aya_ebpf::macros::{fexit, raw_tracepoint, uprobe, uretprobe};
use aya_ebpf::programs::{FExitContext, ProbeContext, RawTracePointContext, RetProbeContext};

#[raw_tracepoint]
pub fn floor(_ctx: RawTracePointContext) -> i32 {
    0
}

/// Loaded once per system call function the agent's fexit hooks use.
#[fexit]
pub fn floor_fexit(_ctx: FExitContext) -> i32 {
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
