//! Which thread a system call belongs to, without a helper call on the
//! path every read and write of the host takes.
//!
//! `bpf_get_current_pid_tgid` is a real call: with the return-thunk
//! mitigations of today's CPUs it cost an untracked pipe or `dd` call
//! ~20-30 ns, the largest part of the agent's work above the floor of its
//! hooks (docs/BENCHMARKS.md, "What it costs a node"). The syscall
//! tracepoints pass the `struct pt_regs *` of the call, which sits at the
//! top of the calling thread's kernel stack: while the thread lives, no
//! other thread has that address. `THREADS` caches, per address, the
//! pid_tgid the helper gave.
//!
//! An address is only reused after its thread is gone, so every thread's
//! birth and death (and every exec, which can hand a thread another id)
//! moves `THREAD_EPOCH` on, and an entry counts only in the epoch it was
//! written in: a new thread on a dead thread's stack never takes the dead
//! thread's id. Entries are written from any CPU (two threads whose
//! addresses share a slot), so an entry carries a check of its fields and
//! a torn one is a miss, never a wrong id. Misses are counted
//! (`ThreadIdMisses`).
//!
//! An entry also holds what the hooks do with the thread's reads and
//! writes ([`caller_class`]), so that most of them are settled with the
//! thread's entry and their stream's (`transfer::passes_unread`) alone:
//! the configuration and the tracked hint, looked up on every call
//! before, cost a pipe's reader and writer, whose lines their context
//! switches evict, ~10 ns a call (docs/BENCHMARKS.md, "What it costs a
//! node").

use crate::{
    hooks::SavedRegs,
    kernel_read::current_start_ns,
    maps::{add_atomic, config, count, hashed_slot, thread_slot, thread_start_slot, THREAD_EPOCH, THREAD_SLOTS},
    tracking::maybe_tracked,
    transfer::passes_unread,
};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use core::ptr::{read_volatile, write_volatile};
use monitor_common::{config_flags, Counter, Direction, KernelConfig};

/// A check of an entry's fields: an entry read while another CPU writes
/// it, with fields of two writes, fails it.
#[inline(always)]
pub(crate) fn check(key: u64, pid_tgid: u64, epoch: u64) -> u64 {
    (key ^ pid_tgid.rotate_left(23) ^ epoch.rotate_left(47) ^ 0x5bd1_e995_2f6b_3c07).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A check of a `THREAD_STARTS` entry: of its start time and of the
/// `THREADS` entry it belongs to (`key`, `pid_tgid`, `epoch`, the latter
/// with the class in its low bits).
#[inline(always)]
pub(crate) fn start_check(key: u64, pid_tgid: u64, epoch: u64, start_ns: u64) -> u64 {
    check(key ^ start_ns.rotate_left(31), pid_tgid, epoch).rotate_left(17) ^ 0x2545_f491_4f6c_dd1d
}

/// What the syscall hooks do with a thread's reads and writes, as far as
/// it can be known before any map of the process or the descriptor is
/// looked at. Cached with the thread's id: it depends on the process alone
/// (the agent's, tracked or not) and on the configuration, which does not
/// change once the hooks run; a process tracked since moves the epoch on.
pub(crate) mod caller_class {
    /// Everything: a process that is or may be tracked (its
    /// `TRACKED_HINT` slot is set), or any process where cgroup selectors
    /// must be checked.
    pub(crate) const FULL: u64 = 0;
    /// An untracked process, with discovery on: its transfers may pass
    /// unread (`transfer::passes_unread`) before anything else is looked
    /// at.
    pub(crate) const DISCOVERY: u64 = 1;
    /// Nothing: the agent itself, or an untracked process with discovery
    /// off.
    pub(crate) const IGNORED: u64 = 2;
}

/// The thread of the current system call.
#[derive(Clone, Copy)]
pub(crate) struct Caller {
    /// What `bpf_get_current_pid_tgid` gives.
    pub(crate) pid_tgid: u64,
    /// A [`caller_class`] value.
    pub(crate) class: u64,
    /// The `epoch` field of the thread's `THREADS` entry, checked (the
    /// epoch shifted left by two, the class in the low bits).
    entry_epoch: u64,
}

impl Caller {
    /// Whether the read or write on descriptor `fd`, direction `dir`, is
    /// done with here: the thread's reads and writes are ignored, or its
    /// stream is in a run that passes unread. On the path of most reads and
    /// writes of the host, which this keeps to the thread's entry, the
    /// stream's and the epoch: no configuration, no process map.
    #[inline(always)]
    pub(crate) fn passes(&self, fd: i32, dir: Direction) -> bool {
        match self.class {
            caller_class::IGNORED => true,
            caller_class::DISCOVERY => passes_unread(self.pid_tgid, fd, dir),
            _ => false,
        }
    }

    /// The start time of the thread's process (what
    /// [`current_start_ns`] reads), cached per thread in `THREAD_STARTS`,
    /// slot for slot with `THREADS`. Every call of a tracked process needs
    /// it (to tell the tracked process from a later one with its pid, and
    /// for its records), and reading it costs three helper calls (the
    /// task, its group leader, the leader's start time): the largest part
    /// of what the agent did on a tracked read or write besides copying
    /// the bytes (docs/BENCHMARKS.md, "The process start time").
    ///
    /// It never changes while the thread lives (a thread that execs
    /// becomes the leader and takes the old leader's start time). The
    /// check binds it to the thread's key, id and epoch, as a later thread
    /// may reuse the key and the pid only after a fork or exit moved the
    /// epoch on. `regs` are the call's registers (the thread's key).
    #[inline(always)]
    pub(crate) fn process_start_ns(&self, regs: &SavedRegs, cfg: &KernelConfig) -> u64 {
        let (key, e) = (regs.thread_key, self.entry_epoch);
        let i = hashed_slot(key, THREAD_SLOTS);
        let start = thread_start_slot(i);
        // SAFETY: entries of both arrays are plain integers, written from
        // any CPU, which the checks catch (each field is read whole).
        unsafe {
            let (s, c) = (read_volatile(&(*start).start_ns), read_volatile(&(*start).check));
            if c == start_check(key, self.pid_tgid, e, s) {
                return s;
            }
            let s = current_start_ns(cfg);
            // Not when another thread holds the `THREADS` slot now (it
            // would lose its own start time for one that cannot match
            // it), nor in an epoch that has ended.
            let slot = thread_slot(i);
            if s != 0 && read_volatile(&(*slot).key) == key && read_volatile(&(*slot).epoch) == e {
                write_volatile(&mut (*start).start_ns, s);
                write_volatile(&mut (*start).check, start_check(key, self.pid_tgid, e, s));
            }
            s
        }
    }
}

/// The `THREADS` key of the thread whose registers are at `regs`, the
/// typed pointer a hook is passed. (Where a helper read the address, on
/// 5.10's network calls, the key is the address with its lowest bit set:
/// [`helper_thread_key`].)
///
/// The address as a number: the verifier turns the difference of two
/// pointers into a plain value (privileged programs only, as these are),
/// where any other operation on a kernel pointer is refused. Any fixed
/// address would do; the epoch's is read next. Both are 8-aligned, so the
/// difference is even and never meets a helper's key, which is odd: a
/// thread whose calls find their registers both ways (5.10's fexit hooks)
/// has an entry for each. Computed where the registers are read, not where
/// the two kinds meet: there LLVM subtracted from either kind and then
/// picked one, and 5.10's verifier refused the subtraction from a number
/// ("math between map_value pointer and register with unbounded min
/// value").
#[inline(always)]
pub(crate) fn thread_key(regs: *const u64) -> u64 {
    (regs as u64).wrapping_sub(&raw const THREAD_EPOCH as u64)
}

/// The `THREADS` key of the thread whose registers a helper read at
/// `addr` (see [`thread_key`]).
#[inline(always)]
pub(crate) fn helper_thread_key(addr: u64) -> u64 {
    addr | 1
}

/// The current thread (its pid_tgid, what `bpf_get_current_pid_tgid`
/// gives, and its class), for the syscall hooks, whose registers are
/// `regs`.
#[inline(always)]
pub(crate) fn current_caller(regs: &SavedRegs) -> Caller {
    let key = regs.thread_key;
    // SAFETY: an aligned u64 global, read whole (x86_64 loads of an
    // aligned u64 are atomic); other CPUs only add to it. Read before the
    // class's inputs below: a process tracked after this read moves the
    // epoch on, so an entry that missed it is not used again.
    let epoch = unsafe { read_volatile(&raw const THREAD_EPOCH) };
    let slot = thread_slot(hashed_slot(key, THREAD_SLOTS));
    // SAFETY: `slot` is a valid, aligned entry of the global array; other
    // CPUs may write it at the same time, which the check catches (each
    // field is read whole).
    unsafe {
        let (k, id, e, c) = (
            read_volatile(&(*slot).key),
            read_volatile(&(*slot).pid_tgid),
            read_volatile(&(*slot).epoch),
            read_volatile(&(*slot).check),
        );
        if k == key && e >> 2 == epoch && c == check(k, id, e) {
            return Caller {
                pid_tgid: id,
                class: e & 3,
                entry_epoch: e,
            };
        }
        count(Counter::ThreadIdMisses, 1);
        let id = bpf_get_current_pid_tgid();
        let class = class_of((id >> 32) as u32);
        let e = epoch << 2 | class;
        write_volatile(&mut (*slot).key, key);
        write_volatile(&mut (*slot).pid_tgid, id);
        write_volatile(&mut (*slot).epoch, e);
        write_volatile(&mut (*slot).check, check(key, id, e));
        Caller {
            pid_tgid: id,
            class,
            entry_epoch: e,
        }
    }
}

/// The [`caller_class`] of process `tgid`.
#[inline(always)]
fn class_of(tgid: u32) -> u64 {
    let Some(cfg) = config() else {
        return caller_class::IGNORED;
    };
    if tgid == cfg.self_tgid {
        caller_class::IGNORED
    } else if maybe_tracked(tgid) || cfg.flags & config_flags::CGROUP_SELECTORS != 0 {
        caller_class::FULL
    } else if cfg.flags & config_flags::DISCOVERY != 0 {
        caller_class::DISCOVERY
    } else {
        caller_class::IGNORED
    }
}

/// A thread was born, died or exec'd, or a process was tracked: cached
/// ids and classes of earlier epochs stop counting. Called first thing by
/// the fork, exit and exec hooks, which the agent attaches before the
/// syscall hooks, and by `tracking::track` once the process's hint is set.
#[inline(always)]
pub(crate) fn new_thread_epoch() {
    add_atomic(&raw mut THREAD_EPOCH, 1);
}
