//! Hooks by family. The syscall tracepoints share the argument offsets of
//! their records and the exit handling of reads and TCP writes.

pub mod descriptors;
pub mod floor;
pub mod go_tls;
pub mod ports;
pub mod process;
pub mod read;
pub mod tls;
pub mod write;

use crate::{
    kernel_read::kread,
    maps::{config, count, SyscallArgs, ARGS, JUMP},
    tracking::{maybe_tracked, tracking, Tracking},
    transfer::begin_transfer,
};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::helpers::generated::{bpf_get_current_task, bpf_get_current_task_btf, bpf_task_pt_regs};
use aya_ebpf::programs::TracePointContext;
use aya_ebpf::EbpfContext;
use monitor_common::{config_flags, Counter, Direction, KernelConfig, Syscall};

// Offsets of the fields in the syscall tracepoint records
// (`/sys/kernel/tracing/events/syscalls/sys_enter_read/format`).
/// `__syscall_nr` (an int) of entry and exit records.
pub(crate) const SYSCALL_NR: usize = 8;

pub(crate) const ARG0: usize = 16;

pub(crate) const ARG1: usize = 24;

pub(crate) const ARG2: usize = 32;

pub(crate) const EXIT_RET: usize = 16;

/// A 64-bit field of the tracepoint record, loaded straight from the
/// context: the verifier allows aligned reads past the first 8 bytes, and
/// a helper call per field (aya's `read_at`) cost every read and write on
/// the host some 10 ns each.
#[inline(always)]
pub(crate) fn record_u64(ctx: &TracePointContext, offset: usize) -> u64 {
    // SAFETY: offsets are the 8-aligned field offsets above (>= 8), inside
    // the record buffer the kernel passes; the verifier checks the access.
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(offset) as *const u64) }
}

/// The 32-bit `__syscall_nr` of the record.
#[inline(always)]
pub(crate) fn record_nr(ctx: &TracePointContext) -> u32 {
    // SAFETY: as for record_u64: offset 8, 4-aligned, inside the record.
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(SYSCALL_NR) as *const u32) }
}

/// The arguments of a call as its entry record holds them.
#[inline(always)]
pub(crate) fn entry_args(ctx: &TracePointContext, syscall: Syscall) -> SyscallArgs {
    SyscallArgs {
        buf: record_u64(ctx, ARG1),
        len: record_u64(ctx, ARG2),
        fd: record_u64(ctx, ARG0) as i32,
        syscall: syscall as u8,
        _pad: [0; 3],
    }
}

/// Exit of a call stashed at entry: the transfer of the bytes the kernel
/// actually moved. The stash is removed whatever the outcome, and used
/// only if it is this call's (`syscall_of` its number).
#[inline(always)]
pub(crate) fn on_stashed_exit(ctx: &TracePointContext, dir: Direction, syscall_of: impl Fn(u32) -> Option<Syscall>) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = take_stash(pid_tgid) else {
        return;
    };
    if syscall_of(record_nr(ctx)).map(|s| s as u8) != Some(args.syscall) {
        return;
    }
    on_exit(ctx, dir, pid_tgid, &args, record_u64(ctx, EXIT_RET) as i64);
}

/// This thread's `ARGS` entry, removed.
#[inline(always)]
fn take_stash(pid_tgid: u64) -> Option<SyscallArgs> {
    // SAFETY: keyed by this thread's pid_tgid, which only this thread (now
    // running here) inserts or removes; the value is copied out at once.
    let args = (unsafe { ARGS.get(&pid_tgid) }).copied()?;
    let _ = ARGS.remove(&pid_tgid);
    Some(args)
}

/// The transfer of the `ret` bytes a call with `args` moved.
#[inline(always)]
pub(crate) fn on_exit(ctx: &TracePointContext, dir: Direction, pid_tgid: u64, args: &SyscallArgs, ret: i64) {
    if ret <= 0 {
        return;
    }
    let Some(cfg) = config() else { return };
    let who = tracking(cfg, (pid_tgid >> 32) as u32);
    // An untracked write was looked at on entry (or let pass unread, see
    // `looked_at_recently`): had it found MCP, the process would be
    // tracked now.
    if dir == Direction::Egress && who.untracked() {
        return;
    }
    transfer_at_exit(ctx, cfg, dir, pid_tgid, who, args, ret);
}

#[inline(always)]
fn transfer_at_exit(
    ctx: &TracePointContext,
    cfg: &KernelConfig,
    dir: Direction,
    pid_tgid: u64,
    who: Tracking,
    args: &SyscallArgs,
    ret: i64,
) {
    let Some(syscall) = Syscall::from_u8(args.syscall) else {
        return;
    };
    begin_transfer(
        ctx, &JUMP, cfg, pid_tgid, who, None, syscall, dir, args.fd, args.buf, args.len, ret as u64, true, 0, 0,
    );
}

/// Offset of `dx` in x86_64 `struct pt_regs`; `si`, `di` and `orig_ax`
/// follow at 104, 112 and 120.
const PT_REGS_DX: u64 = 96;

/// Exit of a read-side call; its arguments are taken from the saved user
/// registers (`regs_offset` known; else they were stashed at entry).
/// `syscall_of` names the calls of the side by number. The order is the
/// cheapest first, as every such call on the host comes here: the byte
/// count, then whether the process is tracked, then the registers.
#[inline(always)]
pub(crate) fn exit_from_regs(ctx: &TracePointContext, syscall_of: impl Fn(u32) -> Option<Syscall>) {
    let dir = Direction::Ingress;
    let Some(cfg) = config() else { return };
    if cfg.regs_offset == 0 {
        on_stashed_exit(ctx, dir, syscall_of);
        return;
    }
    let ret = record_u64(ctx, EXIT_RET) as i64;
    if ret <= 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == cfg.self_tgid {
        return;
    }
    let who = tracking(cfg, tgid);
    let nr = record_nr(ctx);
    let Some(syscall) = syscall_of(nr) else { return };
    let Some(args) = saved_args(cfg, nr, syscall) else {
        count(Counter::RegsMismatch, 1);
        return;
    };
    transfer_at_exit(ctx, cfg, dir, pid_tgid, who, &args, ret);
}

/// Exit of a write-side call: the TCP payload of a write that the capture
/// stage marked at entry (`mark_for_exit`), with the byte count the kernel
/// took. Every write on the host comes here, and nearly all end at the
/// first checks: TCP capture off, an untracked process (its writes were
/// judged on entry: had one found MCP, the process would be tracked now),
/// or no mark (a tracked process's pipe, unix socket or file: the entry
/// sent what those need, so no descriptor walk is repeated here).
#[inline(always)]
pub(crate) fn egress_exit(ctx: &TracePointContext, syscall_of: impl Fn(u32) -> Option<Syscall>) {
    let Some(cfg) = config() else { return };
    if cfg.flags & config_flags::CAPTURE_TCP == 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !maybe_tracked((pid_tgid >> 32) as u32) {
        return;
    }
    // Taken whatever the outcome: a failed write (EAGAIN) must not leave
    // its mark to the thread's next write.
    on_stashed_exit(ctx, Direction::Egress, syscall_of);
}

/// Marks the current write, a TCP write of a tracked process, for its
/// exit (`egress_exit`), which captures the bytes the kernel took.
#[inline(always)]
pub(crate) fn mark_for_exit(pid_tgid: u64, args: &SyscallArgs) {
    if ARGS.insert(&pid_tgid, args, 0).is_err() {
        count(Counter::DropArgsMapFull, 1);
    }
}

/// Set at load by userspace on kernels with `bpf_task_pt_regs` (5.15+):
/// the saved registers are then found through the task's BTF pointer,
/// with plain loads, instead of two kernel reads (the stack base, then the
/// registers: 40-60 ns of every read on the host). Read-only data the
/// verifier sees as a constant, so on older kernels the branch that calls
/// the newer helpers is dead code it never checks.
#[no_mangle]
static TASK_PT_REGS: u8 = 0;

/// The first three arguments of the current system call `nr`, from the user
/// registers saved at its entry; `None` if they cannot be read or are not
/// those of `nr` (`orig_ax` differs: a wrong calibration is counted, never
/// taken for arguments).
#[inline(always)]
fn saved_args(cfg: &KernelConfig, nr: u32, syscall: Syscall) -> Option<SyscallArgs> {
    // SAFETY: a volatile read of a u8 static (any value valid); volatile so
    // that LLVM keeps the load the loader's value reaches.
    let [dx, si, di, orig_ax] = if unsafe { core::ptr::read_volatile(&TASK_PT_REGS) } != 0 {
        // SAFETY: argument-less helper, then a helper given the trusted
        // task pointer it returns; the loads are of u64 fields of `struct
        // pt_regs` (dx, si, di, orig_ax at 96..128), which the verifier
        // checks against the kernel's BTF and turns into fault-safe loads.
        unsafe {
            let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u64;
            let at = (PT_REGS_DX / 8) as usize;
            [*regs.add(at), *regs.add(at + 1), *regs.add(at + 2), *regs.add(at + 3)]
        }
    } else {
        // SAFETY: argument-less helper; both kreads are of plain integers
        // (any bit pattern valid) and a bad address makes the helper fail.
        unsafe {
            let task = bpf_get_current_task();
            let stack: u64 = kread(task + cfg.offsets.task_stack as u64)?;
            kread::<[u64; 4]>(stack + cfg.regs_offset as u64 + PT_REGS_DX)?
        }
    };
    if orig_ax != nr as u64 {
        return None;
    }
    Some(SyscallArgs {
        buf: si,
        len: dx,
        fd: di as i32,
        syscall: syscall as u8,
        _pad: [0; 3],
    })
}
