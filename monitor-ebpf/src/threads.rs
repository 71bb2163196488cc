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

use crate::{
    hooks::SavedRegs,
    maps::{add_atomic, count, hashed_slot, thread_slot, THREAD_EPOCH, THREAD_SLOTS},
};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use core::ptr::{read_volatile, write_volatile};
use monitor_common::{Counter, KernelConfig};

/// A check of an entry's fields: an entry read while another CPU writes
/// it, with fields of two writes, fails it.
#[inline(always)]
pub(crate) fn check(key: u64, pid_tgid: u64, epoch: u64) -> u64 {
    (key ^ pid_tgid.rotate_left(23) ^ epoch.rotate_left(47) ^ 0x5bd1_e995_2f6b_3c07).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The current thread's pid_tgid (what `bpf_get_current_pid_tgid` gives),
/// for the syscall hooks, whose registers are `regs`.
#[inline(always)]
pub(crate) fn current_pid_tgid(regs: &SavedRegs, cfg: &KernelConfig) -> u64 {
    // The address as a number: the verifier turns the difference of two
    // pointers into a plain value (privileged programs only, as these
    // are), where any other operation on a kernel pointer is refused.
    // Any fixed address would do; the configuration is at hand. An address
    // a helper read is a number already; a thread whose calls find their
    // registers both ways (5.10's fexit hooks) has an entry for each. The
    // two kinds of key do not meet: a difference equals an address A only
    // if the registers lie at A plus the configuration's address, wrapped,
    // which is below the kernel's half of the address space, where no
    // stack is. (Marking the kinds apart with the top bit, tried, made
    // 5.10's verifier refuse `fexit_sys_recvfrom`: "math between map_value
    // pointer and register with unbounded min value".)
    let key = if regs.by_pointer {
        regs.addr.wrapping_sub(cfg as *const KernelConfig as u64)
    } else {
        regs.addr
    };
    // SAFETY: an aligned u64 global, read whole (x86_64 loads of an
    // aligned u64 are atomic); other CPUs only add to it.
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
        if k == key && e == epoch && c == check(k, id, e) {
            return id;
        }
        count(Counter::ThreadIdMisses, 1);
        let id = bpf_get_current_pid_tgid();
        write_volatile(&mut (*slot).key, key);
        write_volatile(&mut (*slot).pid_tgid, id);
        write_volatile(&mut (*slot).epoch, epoch);
        write_volatile(&mut (*slot).check, check(key, id, epoch));
        id
    }
}

/// A thread was born, died or exec'd: cached ids of earlier epochs stop
/// counting. Called first thing by the fork, exit and exec hooks, which
/// the agent attaches before the syscall hooks.
#[inline(always)]
pub(crate) fn new_thread_epoch() {
    add_atomic(&raw mut THREAD_EPOCH, 1);
}
