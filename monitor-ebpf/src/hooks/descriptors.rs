//! Descriptor life cycle: a closed descriptor's number comes back for the
//! next file the process opens, so what is known of it (`KNOWN_FILES`,
//! what it refers to; `JUDGED`, the thinning of looks at streams without
//! MCP) is forgotten when it is closed or replaced. Otherwise a new file
//! would be taken for the old one, and the files a process reads at start
//! (an interpreter's modules: hundreds of reads on a few numbers within
//! milliseconds) would have the looks at its MCP stream thinned before its
//! first message.

use crate::{
    hooks::{record_u64, ARG0, ARG1},
    known_files::forget_known_file,
    maps::config,
    transfer::forget_judged,
};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::macros::tracepoint;
use aya_ebpf::programs::TracePointContext;
use monitor_common::config_flags;

/// `close(fd)`.
#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    forget(record_u64(&ctx, ARG0));
    0
}

/// `dup2(old, new)` and `dup3(old, new, flags)`: `new` is closed first if
/// it was open.
#[tracepoint]
pub fn sys_enter_dup_onto(ctx: TracePointContext) -> u32 {
    forget(record_u64(&ctx, ARG1));
    0
}

#[inline(always)]
fn forget(fd: u64) {
    let Some(cfg) = config() else { return };
    let pid_tgid = bpf_get_current_pid_tgid();
    forget_known_file(pid_tgid, fd as i32);
    if cfg.flags & config_flags::DISCOVERY != 0 {
        forget_judged(pid_tgid, fd as i32);
    }
}
