//! Which processes are tracked and why (`PROCS`).

use crate::{
    kernel_read::current_start_ns,
    maps::{count, CGROUP_SELECTORS, PROCS},
};
use aya_ebpf::helpers::generated::bpf_get_current_cgroup_id;
use monitor_common::{config_flags, Counter, KernelConfig, ProcState, TrackReason};

/// Why the current process, `tgid`, is tracked, or `TrackReason::None`.
///
/// Every read and write on the host asks, so the common answer (not
/// tracked) costs one hash lookup: the process start time, which tells a
/// reused pid from the tracked process, is only read on a hit.
#[inline(always)]
pub(crate) fn tracked_reason(cfg: &KernelConfig, tgid: u32) -> u32 {
    // SAFETY: the value is plain integers, read right away; a concurrent
    // update (userspace, another CPU) can at worst give a stale entry.
    if let Some(st) = unsafe { PROCS.get(&tgid) } {
        // Entries made by userspace may not know the start time (0).
        if st.start_ns == 0 || st.start_ns == current_start_ns(cfg) {
            return st.reason;
        }
    }
    if cfg.flags & config_flags::CGROUP_SELECTORS != 0 {
        // SAFETY: argument-less helper, nothing to uphold.
        let cg = unsafe { bpf_get_current_cgroup_id() };
        // SAFETY: only presence is tested; the value is never read.
        if unsafe { CGROUP_SELECTORS.get(&cg) }.is_some() {
            track(tgid, current_start_ns(cfg), TrackReason::CgroupSelector);
            return TrackReason::CgroupSelector as u32;
        }
    }
    TrackReason::None as u32
}

#[inline(always)]
pub(crate) fn track(tgid: u32, start_ns: u64, reason: TrackReason) {
    let st = ProcState {
        reason: reason as u32,
        _pad: 0,
        start_ns,
    };
    if PROCS.insert(&tgid, &st, 0).is_err() {
        count(Counter::DropProcMapFull, 1);
    }
}
