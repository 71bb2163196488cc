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
    tracking::tracked_reason,
    transfer::begin_transfer,
};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::helpers::generated::bpf_get_current_task;
use aya_ebpf::programs::TracePointContext;
use aya_ebpf::EbpfContext;
use monitor_common::{config_flags, Counter, Direction, KernelConfig, Syscall, TrackReason};

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
/// actually moved. The stash is removed whatever the outcome.
#[inline(always)]
pub(crate) fn on_stashed_exit(ctx: &TracePointContext, dir: Direction) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: keyed by this thread's pid_tgid, which only this thread (now
    // running here) inserts or removes; the value is copied out at once.
    let Some(args) = (unsafe { ARGS.get(&pid_tgid) }).copied() else {
        return;
    };
    let _ = ARGS.remove(&pid_tgid);
    on_exit(ctx, dir, pid_tgid, &args, record_u64(ctx, EXIT_RET) as i64);
}

/// The transfer of the `ret` bytes a call with `args` moved.
#[inline(always)]
pub(crate) fn on_exit(ctx: &TracePointContext, dir: Direction, pid_tgid: u64, args: &SyscallArgs, ret: i64) {
    if ret <= 0 {
        return;
    }
    let Some(cfg) = config() else { return };
    let reason = tracked_reason(cfg, (pid_tgid >> 32) as u32);
    // An untracked write was looked at on entry (or let pass unread, see
    // `looked_at_recently`): had it found MCP, the process would be
    // tracked now.
    if dir == Direction::Egress && reason == TrackReason::None as u32 {
        return;
    }
    transfer_at_exit(ctx, cfg, dir, pid_tgid, reason, args, ret);
}

#[inline(always)]
fn transfer_at_exit(
    ctx: &TracePointContext,
    cfg: &KernelConfig,
    dir: Direction,
    pid_tgid: u64,
    reason: u32,
    args: &SyscallArgs,
    ret: i64,
) {
    let Some(syscall) = Syscall::from_u8(args.syscall) else {
        return;
    };
    begin_transfer(
        ctx, &JUMP, cfg, pid_tgid, reason, None, syscall, dir, args.fd, args.buf, args.len, ret as u64, true, 0, 0,
    );
}

/// Offset of `dx` in x86_64 `struct pt_regs`; `si`, `di` and `orig_ax`
/// follow at 104, 112 and 120.
const PT_REGS_DX: u64 = 96;

/// Exit of a read- or write-side call whose arguments are taken from the
/// saved user registers (`regs_offset` known; else they were stashed at
/// entry). `syscall_of` names the calls of the side by number. The order
/// is the cheapest first, as every such call on the host comes here: the
/// byte count, then whether the process is tracked (untracked writes were
/// judged on entry, looked at or let pass unread, and end here), then the
/// registers.
#[inline(always)]
pub(crate) fn exit_from_regs(ctx: &TracePointContext, dir: Direction, syscall_of: impl Fn(u32) -> Option<Syscall>) {
    let Some(cfg) = config() else { return };
    if cfg.regs_offset == 0 {
        on_stashed_exit(ctx, dir);
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
    if dir == Direction::Egress && cfg.flags & config_flags::CAPTURE_TCP == 0 {
        return;
    }
    let reason = tracked_reason(cfg, tgid);
    if dir == Direction::Egress && reason == TrackReason::None as u32 {
        return;
    }
    let nr = record_nr(ctx);
    let Some(syscall) = syscall_of(nr) else { return };
    let Some(args) = saved_args(cfg, nr, syscall) else {
        count(Counter::RegsMismatch, 1);
        return;
    };
    transfer_at_exit(ctx, cfg, dir, pid_tgid, reason, &args, ret);
}

/// The first three arguments of the current system call `nr`, from the user
/// registers saved at its entry; `None` if they cannot be read or are not
/// those of `nr` (`orig_ax` differs: a wrong calibration is counted, never
/// taken for arguments).
#[inline(always)]
fn saved_args(cfg: &KernelConfig, nr: u32, syscall: Syscall) -> Option<SyscallArgs> {
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
    Some(SyscallArgs {
        buf: si,
        len: dx,
        fd: di as i32,
        syscall: syscall as u8,
        _pad: [0; 3],
    })
}
