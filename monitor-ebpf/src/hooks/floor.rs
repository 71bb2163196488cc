//! Programs that do nothing. `mcp-monitor floor` attaches them where the
//! agent attaches its own (the raw syscall tracepoint, or the system call
//! functions where the agent uses fexit; the entries and
//! returns of OpenSSL's `SSL_*` functions), so a benchmark can tell the
//! price of the hooks themselves (the floor) from the work of the agent's
//! programs. And `floor_copy`, which does the least any capture must: the
//! floor of shipping a traced process's bytes to userspace.

use crate::{
    emit::BPF_RB_NO_WAKEUP,
    hooks::{read::NR_READ, SavedRegs, SyscallContext},
    kernel_read::verifier_bound,
    maps::{count, COMM_SELECTORS, EVENTS},
};
use aya_ebpf::helpers::generated::{bpf_get_current_comm, bpf_probe_read_user};
use aya_ebpf::macros::{btf_tracepoint, fexit, raw_tracepoint, uprobe, uretprobe};
use aya_ebpf::programs::{FExitContext, ProbeContext, RawTracePointContext, RetProbeContext};
use aya_ebpf::EbpfContext;
use core::{ffi::c_void, mem::MaybeUninit};
use monitor_common::{Counter, FloorCopyRecord, COMM_LEN, FLOOR_COPY_BYTES};

#[raw_tracepoint]
pub fn floor(_ctx: RawTracePointContext) -> i32 {
    0
}

/// Loaded once per system call function the agent's fexit hooks use.
#[fexit]
pub fn floor_fexit(_ctx: FExitContext) -> i32 {
    0
}

#[uprobe]
pub fn floor_uprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[uretprobe]
pub fn floor_uretprobe(_ctx: RetProbeContext) -> u32 {
    0
}

/// `mcp-monitor floor --copy-reads NAME` (on the `sys_exit` tracepoint, as
/// the agent's hook here): every `read` of a process named in
/// `COMM_SELECTORS` that moved bytes puts its first `FLOOR_COPY_BYTES`
/// in the ring, one copy from the process straight into the record, and
/// nothing else: no stream, no header, no wake-up (the floor's reader
/// polls). What a traced read costs beyond this is the agent's design;
/// this much any sensor that ships the bytes to userspace pays.
#[btf_tracepoint(function = "sys_exit")]
pub fn floor_copy(ctx: SyscallContext) -> i32 {
    let ret: i64 = ctx.arg(1);
    if ret <= 0 {
        return 0;
    }
    let Some(regs) = SavedRegs::of(&ctx) else { return 0 };
    if regs.nr != NR_READ {
        return 0;
    }
    let mut comm = MaybeUninit::<[u8; COMM_LEN]>::uninit();
    // SAFETY: COMM_LEN writable bytes; the helper fills them (zero-padded,
    // or zeroes them should it fail), so `comm` is initialized after it.
    let comm = unsafe {
        bpf_get_current_comm(comm.as_mut_ptr() as *mut c_void, COMM_LEN as u32);
        comm.assume_init()
    };
    // SAFETY: a lookup; the value is not used.
    if unsafe { COMM_SELECTORS.get(&comm) }.is_none() {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<FloorCopyRecord>(0) else {
        count(Counter::DropRingFull, 1);
        return 0;
    };
    let n = if (ret as u64) < FLOOR_COPY_BYTES as u64 {
        ret as u64
    } else {
        FLOOR_COPY_BYTES as u64
    };
    let n = verifier_bound(n, 2 * FLOOR_COPY_BYTES as u64 - 1);
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` is the reserved record, FloorCopyRecord-sized and
    // 8-aligned; n <= FLOOR_COPY_BYTES fits `bytes` (checked before the
    // copy); the helper checks the process's address and fails instead of
    // faulting.
    let copied = n <= FLOOR_COPY_BYTES as u64
        && unsafe {
            (*rec).len = n;
            bpf_probe_read_user(
                (*rec).bytes.as_mut_ptr() as *mut c_void,
                n as u32,
                regs.si as *const c_void,
            ) == 0
        };
    if copied {
        entry.submit(BPF_RB_NO_WAKEUP);
        count(Counter::Records, 1);
    } else {
        entry.discard(BPF_RB_NO_WAKEUP);
        count(Counter::DropCopyFailed, 1);
    }
    0
}
