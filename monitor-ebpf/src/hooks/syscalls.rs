//! The two raw syscall tracepoints every system call on the host passes:
//! each picks the calls of interest by number and hands them to their
//! family (read.rs, write.rs, descriptors.rs, ports.rs).
//!
//! The raw tracepoints, not one `syscalls/sys_*_<call>` tracepoint per
//! call: those build a record of the call's arguments for the perf buffer
//! machinery before the program runs, which made the hooks alone cost a
//! `dd` of 512-byte blocks +295 ns per call against +165 ns for programs
//! that do nothing on these two (docs/BENCHMARKS.md, "What it costs a
//! node"). Here the number (entry) and the return value (exit) come free
//! with the context, and the arguments from the registers the kernel saved
//! at entry (`SavedRegs`). The programs are BTF tracepoints (`tp_btf`):
//! the same kernel dispatch as a raw tracepoint program, but the
//! `struct pt_regs *` they are passed is a typed pointer they may load
//! from directly, where a raw tracepoint program needs a helper call
//! (`bpf_probe_read_kernel`, or `bpf_task_pt_regs` from 5.15) to reach
//! the registers.

use crate::hooks::{
    descriptors::{forget, NR_CLOSE, NR_DUP2, NR_DUP3},
    ports::{on_port_call, port_selectors_on, NR_BIND, NR_CONNECT},
    read::{on_read_exit, NR_READ, NR_READV, NR_RECVFROM, NR_RECVMSG},
    write::{on_write_enter, on_write_exit, NR_SENDMSG, NR_SENDTO, NR_WRITE, NR_WRITEV},
    SavedRegs, SyscallContext,
};
use aya_ebpf::macros::btf_tracepoint;
use monitor_common::Syscall;

/// `TP_PROTO(struct pt_regs *regs, long id)`.
#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter(ctx: SyscallContext) -> i32 {
    let nr: u64 = ctx.arg(1);
    // One call site per family: each is inlined once.
    if let Some(syscall) = write_side(nr) {
        on_write_enter(&ctx, syscall);
        return 0;
    }
    match nr {
        NR_CLOSE | NR_DUP2 | NR_DUP3 => {
            if let Some(regs) = SavedRegs::of(&ctx) {
                // close(fd); dup2/dup3(old, new): `new` is closed first.
                forget(&ctx, if nr == NR_CLOSE { regs.di } else { regs.si });
            }
        }
        NR_BIND | NR_CONNECT => {
            if port_selectors_on() {
                if let Some(regs) = SavedRegs::of(&ctx) {
                    on_port_call(regs.si);
                }
            }
        }
        _ => {}
    }
    0
}

/// The write-side call numbered `nr`, if it is one.
#[inline(always)]
fn write_side(nr: u64) -> Option<Syscall> {
    match nr {
        NR_WRITE => Some(Syscall::Write),
        NR_WRITEV => Some(Syscall::Writev),
        NR_SENDTO => Some(Syscall::Sendto),
        NR_SENDMSG => Some(Syscall::Sendmsg),
        _ => None,
    }
}

/// The read-side call numbered `nr`, if it is one.
#[inline(always)]
fn read_side(nr: u64) -> Option<Syscall> {
    match nr {
        NR_READ => Some(Syscall::Read),
        NR_READV => Some(Syscall::Readv),
        NR_RECVFROM => Some(Syscall::Recvfrom),
        NR_RECVMSG => Some(Syscall::Recvmsg),
        _ => None,
    }
}

/// `TP_PROTO(struct pt_regs *regs, long ret)`. Most calls end at their
/// number, loaded from the saved registers as cheaply as the return value
/// (plain loads): a read-side call that moved bytes is captured; a
/// write-side call, whatever its outcome, goes to `on_write_exit`, which
/// takes a marked write's mark; every other call returns here, before any
/// helper call or map lookup (an event loop's failed and empty calls,
/// EAGAIN reads, `futex`, `close`, included).
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: SyscallContext) -> i32 {
    let ret: i64 = ctx.arg(1);
    let Some(regs) = SavedRegs::of(&ctx) else { return 0 };
    if ret > 0 {
        if let Some(syscall) = read_side(regs.nr) {
            on_read_exit(&ctx, &regs, syscall, ret);
            return 0;
        }
    }
    if let Some(syscall) = write_side(regs.nr) {
        on_write_exit(&ctx, syscall, ret);
    }
    0
}
