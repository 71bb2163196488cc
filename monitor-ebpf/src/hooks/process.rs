//! Process life cycle: tracking is inherited at fork, selectors are checked
//! at exec, and exits are reported.

use crate::{
    emit::emit_process,
    kernel_read::{current_start_ns, kread},
    maps::{config, COMM_SELECTORS, PROCS},
    threads::new_thread_epoch,
    tracking::{track, tracked_reason},
    transfer::forget_descriptors_at_exec,
};
use aya_ebpf::helpers::generated::bpf_get_current_task;
use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid};
use aya_ebpf::macros::{raw_tracepoint, tracepoint};
use aya_ebpf::programs::{RawTracePointContext, TracePointContext};
use monitor_common::{config_flags, KernelConfig, RecordKind, TrackReason};

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`:
/// children of tracked processes are tracked from birth.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    // Every clone, threads too: the child may be given a dead thread's
    // kernel stack.
    new_thread_epoch();
    let Some(cfg) = config() else { return 0 };
    let o = &cfg.offsets;
    let child: u64 = ctx.arg(1);
    // SAFETY: kread of a u32 (any bit pattern valid); a bad address makes the
    // helper fail instead of faulting.
    let Some(child_tgid) = (unsafe { kread::<u32>(child + o.task_tgid as u64) }) else {
        return 0;
    };
    // SAFETY: as for `child_tgid`: a u32, helper-checked address.
    let Some(child_pid) = (unsafe { kread::<u32>(child + o.task_pid as u64) }) else {
        return 0;
    };
    if child_pid != child_tgid {
        return 0; // a new thread, not a new process
    }
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tracked_reason(cfg, parent_tgid) == TrackReason::None as u32 {
        return 0;
    }
    // SAFETY: kread of a u64 (any bit pattern valid), helper-checked address.
    let child_start = unsafe { kread::<u64>(child + o.task_start_boottime as u64) }.unwrap_or(0);
    track(child_tgid, child_start, TrackReason::Inherited);
    emit_process(
        RecordKind::Fork,
        child_tgid,
        child_start,
        parent_tgid,
        current_start_ns(cfg),
        TrackReason::Inherited as u32,
    );
    0
}

#[inline(always)]
pub(crate) fn parent_of_current(cfg: &KernelConfig) -> u32 {
    // SAFETY: argument-less helper, nothing to uphold.
    let task = unsafe { bpf_get_current_task() };
    let o = &cfg.offsets;
    // SAFETY: kreads of a u64 and a u32 (any bit pattern valid); a bad
    // address makes the helper fail and the result is 0.
    unsafe {
        match kread::<u64>(task + o.task_real_parent as u64) {
            Some(p) if p != 0 => kread::<u32>(p + o.task_tgid as u64).unwrap_or(0),
            _ => 0,
        }
    }
}

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    // A thread that execs takes its process's id (the leader's).
    new_thread_epoch();
    let Some(cfg) = config() else { return 0 };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == cfg.self_tgid {
        return 0;
    }
    forget_descriptors_at_exec(pid_tgid, cfg.flags & config_flags::DISCOVERY != 0);
    let start = current_start_ns(cfg);
    let mut reason = tracked_reason(cfg, tgid);
    if reason == TrackReason::None as u32 && cfg.flags & config_flags::COMM_SELECTORS != 0 {
        if let Ok(comm) = bpf_get_current_comm() {
            // SAFETY: only presence is tested; the value is never read.
            if unsafe { COMM_SELECTORS.get(&comm) }.is_some() {
                track(tgid, start, TrackReason::CommSelector);
                reason = TrackReason::CommSelector as u32;
            }
        }
    }
    if reason == TrackReason::None as u32 {
        if cfg.flags & config_flags::EXEC_NOTICES != 0 {
            emit_process(RecordKind::ExecNotice, tgid, start, 0, 0, reason);
        }
        return 0;
    }
    emit_process(RecordKind::Exec, tgid, start, parent_of_current(cfg), 0, reason);
    0
}

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    // Every thread's: its kernel stack goes to the next thread created.
    new_thread_epoch();
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid != pid_tgid as u32 {
        return 0; // a thread, not the process
    }
    // SAFETY: plain integers copied out at once; a concurrent update (another
    // thread, userspace) can at worst give a stale entry.
    let Some(st) = (unsafe { PROCS.get(&tgid) }).copied() else {
        return 0;
    };
    let _ = PROCS.remove(&tgid);
    let Some(cfg) = config() else { return 0 };
    let start = current_start_ns(cfg);
    emit_process(RecordKind::Exit, tgid, start, parent_of_current(cfg), 0, st.reason);
    0
}
