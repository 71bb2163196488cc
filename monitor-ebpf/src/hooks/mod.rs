//! Hooks by family. The syscall tracepoints share the argument offsets of
//! their records and the exit handling of reads and TCP writes.

pub mod ports;
pub mod process;
pub mod read;
pub mod tls;
pub mod write;

use crate::{
    kernel_read::current_start_ns,
    maps::{config, ARGS, JUMP},
    tracking::tracked_reason,
    transfer::begin_transfer,
};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::programs::TracePointContext;
use monitor_common::{Direction, Syscall};

// Offsets of the arguments in the syscall tracepoint records
// (`/sys/kernel/tracing/events/syscalls/sys_enter_read/format`).
pub(crate) const ARG0: usize = 16;

pub(crate) const ARG1: usize = 24;

pub(crate) const ARG2: usize = 32;

pub(crate) const EXIT_RET: usize = 16;

/// Exit of a call stashed at entry: the transfer of the bytes the kernel
/// actually moved (`ret`).
#[inline(always)]
pub(crate) fn on_exit(ctx: &TracePointContext, dir: Direction) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: keyed by this thread's pid_tgid, which only this thread (now
    // running here) inserts or removes; the value is copied out at once.
    let Some(args) = (unsafe { ARGS.get(&pid_tgid) }).copied() else {
        return;
    };
    let _ = ARGS.remove(&pid_tgid);
    // SAFETY: read_at copies with bpf_probe_read_kernel, which checks the
    // address and fails instead of faulting; 16 is the i64 `ret` of sys_exit.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(EXIT_RET) }) else {
        return;
    };
    if ret <= 0 {
        return;
    }
    let Some(cfg) = config() else { return };
    let Some(syscall) = Syscall::from_u8(args.syscall) else {
        return;
    };
    let start_ns = current_start_ns(cfg);
    let reason = tracked_reason(cfg, (pid_tgid >> 32) as u32, start_ns);
    begin_transfer(
        ctx, &JUMP, cfg, pid_tgid, start_ns, reason, None, syscall, dir, args.fd, args.buf, args.len, ret as u64, true,
        0, 0,
    );
}
