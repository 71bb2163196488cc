//! The raw syscall tracepoint every system call on the host passes at its
//! exit: it picks the calls of interest by number and hands them to their
//! family (read.rs, write.rs, descriptors.rs, ports.rs). Where the kernel
//! allows fexit programs, one on each call of interest does the same
//! instead (`fexit_hooks!` below), and the tracepoint is not attached.
//!
//! Exit only, not `sys_enter` too: every program attached to a syscall
//! tracepoint runs for every system call of the host, MCP or not, so a
//! second hook doubles the price every process pays (a do-nothing program
//! costs ~50 ns per run here). Everything a hook needs is still there at
//! exit: the number and the arguments in the registers saved at entry, the
//! caller's buffers untouched, and the outcome besides (a write's accepted
//! count; a failed `close` or `dup2`, which changed nothing).
//!
//! A raw tracepoint, not one `syscalls/sys_exit_<call>` tracepoint per
//! call: those build a record of the call's arguments for the perf buffer
//! machinery before the program runs, which made the hooks alone cost a
//! `dd` of 512-byte blocks +295 ns per call against +165 ns for programs
//! that do nothing on the raw `sys_enter` and `sys_exit` (docs/BENCHMARKS.md,
//! "What it costs a node"). Here the return value comes free with the
//! context, and the number and arguments from the registers the kernel
//! saved at entry (`SavedRegs`). The program is a BTF tracepoint (`tp_btf`):
//! the same kernel dispatch as a raw tracepoint program, but the
//! `struct pt_regs *` it is passed is a typed pointer it may load from
//! directly, where a raw tracepoint program needs a helper call
//! (`bpf_probe_read_kernel`, or `bpf_task_pt_regs` from 5.15) to reach
//! the registers.

use crate::hooks::{
    descriptors::{forget, NR_CLOSE, NR_DUP2, NR_DUP3},
    ports::{on_port_call, port_selectors_on, NR_BIND, NR_CONNECT},
    read::{on_read_exit, NR_READ, NR_READV, NR_RECVFROM, NR_RECVMSG},
    write::{on_write_exit, NR_SENDMSG, NR_SENDTO, NR_WRITE, NR_WRITEV},
    SavedRegs, SyscallContext,
};
use crate::maps::{EXIT_JUMP, FEXIT_JUMP, FEXIT_NET_JUMP};
use aya_ebpf::{
    macros::{btf_tracepoint, fexit},
    maps::ProgramArray,
    programs::FExitContext,
    EbpfContext,
};
use monitor_common::Syscall;

/// `-EBADF`: a `close` of a descriptor that was not open.
const EBADF: i64 = -9;

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
/// (plain loads): a read or write that moved bytes goes to its family; a
/// descriptor closed or replaced is forgotten; `bind` and `connect` meet
/// the port selectors; every other call returns here, before any helper
/// call or map lookup (an event loop's failed and empty calls, EAGAIN
/// reads and writes, `futex`, `close(-1)`, included).
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: SyscallContext) -> i32 {
    on_syscall_exit(&ctx, &EXIT_JUMP, None, SavedRegs::of(&ctx));
    0
}

/// The exit of a system call: of call number `nr` (the fexit hooks, one
/// per call, know theirs: the branches of the others are compiled out) or,
/// with `None`, of the number the registers hold (the tracepoint, which
/// every call of the host passes). `jump` is the hook's stage set, `regs`
/// the registers saved at the call's entry (`None` for a 32-bit process).
#[inline(always)]
fn on_syscall_exit(ctx: &SyscallContext, jump: &ProgramArray, nr: Option<u64>, regs: Option<SavedRegs>) {
    let ret: i64 = ctx.arg(1);
    let Some(regs) = regs else { return };
    let nr = nr.unwrap_or(regs.nr);
    // One call site per family: each is inlined once.
    if ret > 0 {
        if let Some(syscall) = read_side(nr) {
            on_read_exit(ctx, jump, &regs, syscall, ret);
            return;
        }
        if let Some(syscall) = write_side(nr) {
            on_write_exit(ctx, jump, &regs, syscall, ret);
            return;
        }
    }
    match nr {
        // close(fd) releases the number whatever it returns, except for
        // a descriptor that was not open.
        NR_CLOSE if ret != EBADF => forget(&regs, regs.di),
        // dup2/dup3(old, new) closed `new` if they succeeded.
        NR_DUP2 | NR_DUP3 if ret >= 0 => forget(&regs, regs.si),
        NR_BIND | NR_CONNECT => {
            if port_selectors_on() {
                on_port_call(regs.si);
            }
        }
        _ => {}
    }
}

/// Defines the fexit hook of one system call function: `long
/// __x64_sys_<call>(const struct pt_regs *regs)`, whose fexit context is
/// `regs` then the return value, as `sys_exit`'s. Where the kernel allows
/// trampolines (fexit needs BTF and `CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS`;
/// lockdown refuses them), these replace the tracepoint: only the calls of
/// interest run a program, and no process on the host takes the slow
/// syscall path a syscall tracepoint puts every system call on. The loader
/// attaches each to its function (`SYSCALL_FEXITS` in monitor-user). The
/// network calls jump through their own stage array (maps.rs,
/// `FEXIT_NET_JUMP`) and find their registers with `SavedRegs::of_net`.
macro_rules! fexit_hooks {
    ($($(#[$doc:meta])* $prog:ident => $function:literal, $nr:expr, $jump:ident, $regs:ident;)*) => {
        $(
            $(#[$doc])*
            #[fexit(function = $function)]
            pub fn $prog(ctx: FExitContext) -> i32 {
                let ctx = SyscallContext::new(ctx.as_ptr());
                on_syscall_exit(&ctx, &$jump, Some($nr), SavedRegs::$regs(&ctx));
                // An fexit program must return 0.
                0
            }
        )*
    };
}

fexit_hooks! {
    fexit_sys_read => "__x64_sys_read", NR_READ, FEXIT_JUMP, of;
    fexit_sys_readv => "__x64_sys_readv", NR_READV, FEXIT_JUMP, of;
    fexit_sys_recvfrom => "__x64_sys_recvfrom", NR_RECVFROM, FEXIT_NET_JUMP, of_net;
    fexit_sys_recvmsg => "__x64_sys_recvmsg", NR_RECVMSG, FEXIT_NET_JUMP, of_net;
    fexit_sys_write => "__x64_sys_write", NR_WRITE, FEXIT_JUMP, of;
    fexit_sys_writev => "__x64_sys_writev", NR_WRITEV, FEXIT_JUMP, of;
    fexit_sys_sendto => "__x64_sys_sendto", NR_SENDTO, FEXIT_NET_JUMP, of_net;
    fexit_sys_sendmsg => "__x64_sys_sendmsg", NR_SENDMSG, FEXIT_NET_JUMP, of_net;
    fexit_sys_close => "__x64_sys_close", NR_CLOSE, FEXIT_JUMP, of;
    fexit_sys_dup2 => "__x64_sys_dup2", NR_DUP2, FEXIT_JUMP, of;
    fexit_sys_dup3 => "__x64_sys_dup3", NR_DUP3, FEXIT_JUMP, of;
    /// Attached only with port selectors, as only they need it.
    fexit_sys_bind => "__x64_sys_bind", NR_BIND, FEXIT_NET_JUMP, of_net;
    /// Attached only with port selectors, as only they need it.
    fexit_sys_connect => "__x64_sys_connect", NR_CONNECT, FEXIT_NET_JUMP, of_net;
}
