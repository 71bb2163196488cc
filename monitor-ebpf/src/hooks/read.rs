//! Read-side syscalls (read, readv, recvfrom, recvmsg): the arguments are
//! stashed at entry and the bytes captured at exit, where the count is known.

use crate::{
    hooks::{on_exit, ARG0, ARG1, ARG2},
    maps::{config, count, SyscallArgs, ARGS},
};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::macros::tracepoint;
use aya_ebpf::programs::TracePointContext;
use monitor_common::{Counter, Direction, Syscall};

#[inline(always)]
pub(crate) fn stash_ingress(ctx: &TracePointContext, syscall: Syscall) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(cfg) = config() else { return };
    if (pid_tgid >> 32) as u32 == cfg.self_tgid {
        return;
    }
    let (Ok(fd), Ok(buf), Ok(len)) = (
        // SAFETY: read_at copies with bpf_probe_read_kernel, which checks the
        // address and fails instead of faulting; a u64 (arg 0 at 16) is plain.
        unsafe { ctx.read_at::<u64>(ARG0) },
        // SAFETY: as for ARG0 (24: arg 1).
        unsafe { ctx.read_at::<u64>(ARG1) },
        // SAFETY: as for ARG0 (32: arg 2).
        unsafe { ctx.read_at::<u64>(ARG2) },
    ) else {
        return;
    };
    let args = SyscallArgs {
        buf,
        len,
        fd: fd as i32,
        syscall: syscall as u8,
        _pad: [0; 3],
    };
    if ARGS.insert(&pid_tgid, &args, 0).is_err() {
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

#[tracepoint]
pub fn sys_exit_ingress(ctx: TracePointContext) -> u32 {
    on_exit(&ctx, Direction::Ingress);
    0
}
