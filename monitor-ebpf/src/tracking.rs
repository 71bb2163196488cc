//! Which processes are tracked and why (`PROCS`).

use crate::{
    kernel_read::current_start_ns,
    maps::{count, CGROUP_SELECTORS, PROCS, TRACKED_HINT},
};
use aya_ebpf::helpers::generated::bpf_get_current_cgroup_id;
use monitor_common::{config_flags, Counter, KernelConfig, ProcState, TrackReason, TRACKED_HINT_SLOTS};

/// Why the current process, `tgid`, is tracked, or `TrackReason::None`.
///
/// Every read and write on the host asks, so the common answer (not
/// tracked) costs an array load (`TRACKED_HINT`); the hash lookup, and the
/// process start time that tells a reused pid from the tracked process,
/// only come after a hit.
#[inline(always)]
pub(crate) fn tracked_reason(cfg: &KernelConfig, tgid: u32) -> u32 {
    if maybe_tracked(tgid) {
        if let Some(r) = procs_reason(cfg, tgid) {
            return r;
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

/// Whether `tgid`'s slot of `TRACKED_HINT` is set.
#[inline(always)]
pub(crate) fn maybe_tracked(tgid: u32) -> bool {
    TRACKED_HINT.get(tgid % TRACKED_HINT_SLOTS).is_some_and(|h| *h != 0)
}

/// The reason of `tgid`'s `PROCS` entry, if it is this process's.
#[inline(always)]
fn procs_reason(cfg: &KernelConfig, tgid: u32) -> Option<u32> {
    // SAFETY: the value is plain integers, read right away; a concurrent
    // update (userspace, another CPU) can at worst give a stale entry.
    if let Some(st) = unsafe { PROCS.get(&tgid) } {
        // Entries made by userspace may not know the start time (0).
        if st.start_ns == 0 || st.start_ns == current_start_ns(cfg) {
            return Some(st.reason);
        }
    }
    None
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
    // The entry, then the hint: whoever clears hints (nobody yet) and then
    // re-sets those of the entries it finds cannot lose this one.
    if let Some(h) = TRACKED_HINT.get_ptr_mut(tgid % TRACKED_HINT_SLOTS) {
        // SAFETY: h is the slot's byte in the array; concurrent writers all
        // store 1.
        unsafe { *h = 1 };
    }
}
