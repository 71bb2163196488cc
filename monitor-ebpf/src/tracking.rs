//! Which processes are tracked and why (`PROCS`).

use crate::{
    hooks::SavedRegs,
    kernel_read::current_start_ns,
    maps::{count, CGROUP_SELECTORS, PROCS, TRACKED_HINT},
    threads::{new_thread_epoch, Caller},
};
use aya_ebpf::helpers::generated::bpf_get_current_cgroup_id;
use core::ptr::{read_volatile, write_volatile};
use monitor_common::{config_flags, Counter, KernelConfig, ProcState, TrackReason, TRACKED_HINT_SLOTS};

/// Why the current process is tracked, and its start time when finding
/// that out read it.
#[derive(Clone, Copy)]
pub(crate) struct Tracking {
    /// A `TrackReason`.
    pub(crate) reason: u32,
    /// The process's start time, 0 when not read: the capture stages need
    /// it, and it costs three helper calls (the task, its group leader,
    /// the leader's start time), which a tracked process's check pays
    /// already. Always read for a tracked process of the syscall hooks
    /// ([`thread_tracking`]), from the thread's cache.
    pub(crate) start_ns: u64,
}

impl Tracking {
    /// A process nobody tracks.
    pub(crate) const NONE: Tracking = Tracking {
        reason: TrackReason::None as u32,
        start_ns: 0,
    };

    #[inline(always)]
    pub(crate) fn untracked(&self) -> bool {
        self.reason == TrackReason::None as u32
    }
}

/// Why the current process, `tgid`, is tracked, or `TrackReason::None`.
#[inline(always)]
pub(crate) fn tracked_reason(cfg: &KernelConfig, tgid: u32) -> u32 {
    tracking(cfg, tgid).reason
}

/// Where a check of the current process finds its start time.
pub(crate) trait StartTime {
    /// Whether a tracked process whose `PROCS` entry does not know its
    /// start time (userspace tracked it) gets it read all the same.
    const FILL_UNKNOWN: bool;
    fn start_ns(&self, cfg: &KernelConfig) -> u64;
}

/// The start time read from the current task ([`current_start_ns`]),
/// only where the check needs it.
pub(crate) struct FromTask;

impl StartTime for FromTask {
    const FILL_UNKNOWN: bool = false;
    #[inline(always)]
    fn start_ns(&self, cfg: &KernelConfig) -> u64 {
        current_start_ns(cfg)
    }
}

/// The start time a syscall hook's thread cache holds
/// ([`Caller::process_start_ns`]), for every tracked process: cheap, and
/// `writer_notified` needs it (`begin_transfer` would read it uncached).
pub(crate) struct FromThread<'a>(pub(crate) &'a Caller, pub(crate) &'a SavedRegs);

impl StartTime for FromThread<'_> {
    const FILL_UNKNOWN: bool = true;
    #[inline(always)]
    fn start_ns(&self, cfg: &KernelConfig) -> u64 {
        self.0.process_start_ns(self.1, cfg)
    }
}

/// Why the current process, `tgid`, is tracked (`Tracking::NONE` if not),
/// for the hooks without a thread entry (TLS, process and port hooks); the
/// syscall hooks ask [`thread_tracking`].
#[inline(always)]
pub(crate) fn tracking(cfg: &KernelConfig, tgid: u32) -> Tracking {
    tracking_with(cfg, tgid, &FromTask)
}

/// Why the process of the syscall hooks' `caller` is tracked
/// (`Tracking::NONE` if not), with its start time from the thread's
/// cache.
#[inline(always)]
pub(crate) fn thread_tracking(cfg: &KernelConfig, caller: &Caller, regs: &SavedRegs) -> Tracking {
    tracking_with(cfg, (caller.pid_tgid >> 32) as u32, &FromThread(caller, regs))
}

/// Why the current process, `tgid`, is tracked (`Tracking::NONE` if not),
/// its start time from `start`.
///
/// The reads and writes the syscall hooks do not settle from the thread's
/// cached class (threads.rs) ask, and every TLS call, so the common answer
/// (not tracked) costs an array load (`TRACKED_HINT`); the hash lookup, and
/// the process start time that tells a reused pid from the tracked
/// process, only come after a hit.
#[inline(always)]
fn tracking_with<S: StartTime>(cfg: &KernelConfig, tgid: u32, start: &S) -> Tracking {
    if maybe_tracked(tgid) {
        if let Some(t) = procs_tracking(cfg, tgid, start) {
            return t;
        }
    }
    if cfg.flags & config_flags::CGROUP_SELECTORS != 0 {
        // SAFETY: argument-less helper, nothing to uphold.
        let cg = unsafe { bpf_get_current_cgroup_id() };
        // SAFETY: only presence is tested; the value is never read.
        if unsafe { CGROUP_SELECTORS.get(&cg) }.is_some() {
            let start_ns = start.start_ns(cfg);
            track(tgid, start_ns, TrackReason::CgroupSelector);
            return Tracking {
                reason: TrackReason::CgroupSelector as u32,
                start_ns,
            };
        }
    }
    Tracking::NONE
}

/// Whether `tgid`'s slot of `TRACKED_HINT` is set.
#[inline(always)]
pub(crate) fn maybe_tracked(tgid: u32) -> bool {
    TRACKED_HINT.get(tgid % TRACKED_HINT_SLOTS).is_some_and(|h| *h != 0)
}

/// `tgid`'s `PROCS` entry, if it is this process's.
#[inline(always)]
fn procs_tracking<S: StartTime>(cfg: &KernelConfig, tgid: u32, start: &S) -> Option<Tracking> {
    // SAFETY: the value is plain integers, read right away; a concurrent
    // update (userspace, another CPU) can at worst give a stale entry.
    let st = unsafe { PROCS.get(&tgid) }.copied()?;
    // Entries made by userspace may not know the start time (0).
    if st.start_ns == 0 && !S::FILL_UNKNOWN {
        return Some(Tracking {
            reason: st.reason,
            start_ns: 0,
        });
    }
    let start_ns = start.start_ns(cfg);
    (st.start_ns == 0 || st.start_ns == start_ns).then_some(Tracking {
        reason: st.reason,
        start_ns,
    })
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
        unsafe {
            if read_volatile(h) == 0 {
                write_volatile(h, 1);
                // The hint, then the epoch: the syscall hooks cache with
                // each thread's id whether its process's hint was set
                // (threads.rs), and stop using what they cached before
                // this. Only when the hint was not set: a set hint is
                // never cleared, so no cached class depends on this call
                // (every epoch moved on sends every thread of the host to
                // the helper once). Userspace sets the hints of the
                // processes it tracks before it attaches the hooks.
                new_thread_epoch();
            }
        }
    }
}
