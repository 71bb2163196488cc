//! Read-side syscalls (read, readv, recvfrom, recvmsg): the bytes are
//! captured at exit, where the count is known.
//!
//! The arguments are taken at exit from the user registers the kernel saved
//! at syscall entry (at `regs_offset` from the task's kernel stack base,
//! measured at start by `calibrate_regs`), so reads cost one program run,
//! not two and a map write. Where that could not be measured, the entry
//! programs stash them in `ARGS` instead.

use crate::{
    hooks::{entry_args, on_exit, on_stashed_exit, record_nr, record_u64, EXIT_RET},
    kernel_read::kread,
    maps::{config, count, ARGS, REGS_CALIBRATION},
};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::helpers::generated::bpf_get_current_task;
use aya_ebpf::macros::{raw_tracepoint, tracepoint};
use aya_ebpf::programs::{RawTracePointContext, TracePointContext};
use monitor_common::{Counter, Direction, KernelConfig, Syscall};

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

/// Offset of `dx` in x86_64 `struct pt_regs`; `si`, `di` and `orig_ax`
/// follow at 104, 112 and 120.
const PT_REGS_DX: u64 = 96;

#[tracepoint]
pub fn sys_exit_ingress(ctx: TracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    if cfg.regs_offset == 0 {
        on_stashed_exit(&ctx, Direction::Ingress);
        return 0;
    }
    // Most reads on a host return data or EAGAIN; either way nothing more
    // is looked at for those that moved nothing.
    let ret = record_u64(&ctx, EXIT_RET) as i64;
    if ret <= 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == cfg.self_tgid {
        return 0;
    }
    let nr = record_nr(&ctx);
    let syscall = match nr {
        NR_READ => Syscall::Read,
        NR_READV => Syscall::Readv,
        NR_RECVFROM => Syscall::Recvfrom,
        NR_RECVMSG => Syscall::Recvmsg,
        _ => return 0,
    };
    let Some(args) = saved_args(cfg, nr, syscall) else {
        count(Counter::RegsMismatch, 1);
        return 0;
    };
    on_exit(&ctx, Direction::Ingress, pid_tgid, &args, ret);
    0
}

/// The first three arguments of the current system call `nr`, from the user
/// registers saved at its entry; `None` if they cannot be read or are not
/// those of `nr` (`orig_ax` differs: a wrong calibration is counted, never
/// taken for arguments).
#[inline(always)]
fn saved_args(cfg: &KernelConfig, nr: u32, syscall: Syscall) -> Option<crate::maps::SyscallArgs> {
    // SAFETY: argument-less helper; both kreads are of plain integers (any
    // bit pattern valid) and a bad address makes the helper fail.
    let regs: [u64; 4] = unsafe {
        let task = bpf_get_current_task();
        let stack: u64 = kread(task + cfg.offsets.task_stack as u64)?;
        kread(stack + cfg.regs_offset as u64 + PT_REGS_DX)?
    };
    let [dx, si, di, orig_ax] = regs;
    if orig_ax != nr as u64 {
        return None;
    }
    Some(crate::maps::SyscallArgs {
        buf: si,
        len: dx,
        fd: di as i32,
        syscall: syscall as u8,
        _pad: [0; 3],
    })
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
