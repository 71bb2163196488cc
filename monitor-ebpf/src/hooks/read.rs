//! Read-side syscalls (read, readv, recvfrom, recvmsg): the bytes are
//! captured at exit, where the count is known.
//!
//! The arguments are taken at exit from the user registers the kernel saved
//! at syscall entry (at `regs_offset` from the task's kernel stack base,
//! measured at start by `calibrate_regs`), so reads cost one program run,
//! not two and a map write. Where that could not be measured, the entry
//! programs stash them in `ARGS` instead.

use crate::{
    hooks::{entry_args, exit_from_regs},
    kernel_read::kread,
    maps::{config, count, ARGS, REGS_CALIBRATION},
};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::helpers::generated::bpf_get_current_task;
use aya_ebpf::macros::{raw_tracepoint, tracepoint};
use aya_ebpf::programs::{RawTracePointContext, TracePointContext};
use monitor_common::{Counter, Syscall};

#[inline(always)]
pub(crate) fn stash_ingress(ctx: &TracePointContext, syscall: Syscall) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(cfg) = config() else { return };
    if (pid_tgid >> 32) as u32 == cfg.self_tgid {
        return;
    }
    if ARGS.insert(&pid_tgid, &entry_args(ctx, syscall), 0).is_err() {
        count(Counter::DropArgsMapFull, 1);
    }
}

#[tracepoint]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    stash_ingress(&ctx, Syscall::Read);
    0
}

#[tracepoint]
pub fn sys_enter_readv(ctx: TracePointContext) -> u32 {
    stash_ingress(&ctx, Syscall::Readv);
    0
}

#[tracepoint]
pub fn sys_enter_recvfrom(ctx: TracePointContext) -> u32 {
    stash_ingress(&ctx, Syscall::Recvfrom);
    0
}

#[tracepoint]
pub fn sys_enter_recvmsg(ctx: TracePointContext) -> u32 {
    stash_ingress(&ctx, Syscall::Recvmsg);
    0
}

/// x86_64 system call numbers of the read side.
const NR_READ: u32 = 0;
const NR_READV: u32 = 19;
const NR_RECVFROM: u32 = 45;
const NR_RECVMSG: u32 = 47;

#[tracepoint]
pub fn sys_exit_ingress(ctx: TracePointContext) -> u32 {
    exit_from_regs(&ctx, |nr| match nr {
        NR_READ => Some(Syscall::Read),
        NR_READV => Some(Syscall::Readv),
        NR_RECVFROM => Some(Syscall::Recvfrom),
        NR_RECVMSG => Some(Syscall::Recvmsg),
        _ => None,
    });
    0
}

/// Attached for a moment at start, on the raw `sys_enter` tracepoint
/// (`TP_PROTO(struct pt_regs *regs, long id)`): for the agent's own next
/// system call, where its saved registers are from its kernel stack base.
/// The same for every task of this kernel; userspace puts it in
/// `KernelConfig::regs_offset`.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn calibrate_regs(ctx: RawTracePointContext) -> i32 {
    let Some(cfg) = config() else { return 0 };
    if (bpf_get_current_pid_tgid() >> 32) as u32 != cfg.self_tgid {
        return 0;
    }
    let regs: u64 = ctx.arg(0);
    // SAFETY: argument-less helper; a u64 kread (any bit pattern valid) at
    // a helper-checked address.
    let Some(stack) = (unsafe { kread::<u64>(bpf_get_current_task() + cfg.offsets.task_stack as u64) }) else {
        return 0;
    };
    if let Some(slot) = REGS_CALIBRATION.get_ptr_mut(0) {
        // SAFETY: slot is entry 0 of the array, valid for a u64; userspace
        // only reads it.
        unsafe { *slot = regs.wrapping_sub(stack) };
    }
    0
}
