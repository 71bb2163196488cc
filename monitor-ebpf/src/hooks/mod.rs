//! Hooks by family. System calls come through two raw tracepoints,
//! `sys_enter` and `sys_exit` (syscalls.rs), which pick the calls of
//! interest by number and hand them to their family: reads (read.rs),
//! writes (write.rs), descriptors closed or replaced (descriptors.rs) and
//! port selectors (ports.rs).

pub mod descriptors;
pub mod floor;
pub mod go_tls;
pub mod ports;
pub mod process;
pub mod read;
pub mod syscalls;
pub mod tls;
pub mod write;

use crate::{
    maps::{add_atomic, config, count, SyscallArgs, ARGS, EXIT_JUMP, MARKS},
    tracking::{tracking, Tracking},
    transfer::begin_transfer,
};
use aya_ebpf::programs::BtfTracePointContext;
use monitor_common::{Counter, Direction, KernelConfig, Syscall};

/// The context of the syscall hooks and their tail-call stages: BTF
/// tracepoints (`tp_btf`) on the raw `sys_enter`/`sys_exit` tracepoints.
pub(crate) type SyscallContext = BtfTracePointContext;

/// Offset of `dx` in x86_64 `struct pt_regs`; `si`, `di`, `orig_ax`, `ip`
/// and `cs` follow at 104, 112, 120, 128 and 136.
const PT_REGS_DX: u64 = 96;

/// The user registers the kernel saved at the entry of the current system
/// call: its number and its first three arguments, which are all the
/// hooks need (`fd, buf, len`; `fd, sockaddr`; `old, new`).
#[derive(Clone, Copy)]
pub(crate) struct SavedRegs {
    /// `orig_ax`: the system call number.
    pub(crate) nr: u64,
    pub(crate) di: u64,
    pub(crate) si: u64,
    pub(crate) dx: u64,
}

/// The low byte of the user code segment of 32-bit x86 processes
/// (`__USER32_CS`, 0x23; 0xe023 under Xen PV).
const USER32_CS: u64 = 0x23;

impl SavedRegs {
    /// The registers of the current call; `None` for a 32-bit process,
    /// whose calls are numbered by the i386 table (its `read` is number 3,
    /// `close` here) and take their arguments in other registers: the
    /// per-call tracepoints the hooks once used ignored such calls too.
    #[inline(always)]
    pub(crate) fn of(ctx: &SyscallContext) -> Option<SavedRegs> {
        const AT: usize = (PT_REGS_DX / 8) as usize;
        // Both syscall tracepoints pass the `struct pt_regs *` first. In a
        // BTF tracepoint it is a typed kernel pointer: plain loads, which
        // the verifier checks against the kernel's BTF and makes
        // fault-safe, with no helper call.
        let regs: *const u64 = ctx.arg(0);
        // SAFETY: loads of u64 fields of `struct pt_regs` (dx, si, di,
        // orig_ax, ip, cs at 96..144) through the pointer the tracepoint
        // passes; the verifier checks each against the kernel's BTF.
        let [dx, si, di, nr, cs] = unsafe {
            [
                *regs.add(AT),
                *regs.add(AT + 1),
                *regs.add(AT + 2),
                *regs.add(AT + 3),
                *regs.add(AT + 5),
            ]
        };
        if cs & 0xff == USER32_CS {
            return None;
        }
        Some(SavedRegs { nr, di, si, dx })
    }

    /// The arguments of a read or write call.
    #[inline(always)]
    pub(crate) fn args(&self, syscall: Syscall) -> SyscallArgs {
        SyscallArgs {
            buf: self.si,
            len: self.dx,
            fd: self.di as i32,
            syscall: syscall as u8,
            _pad0: 0,
            _pad1: 0,
        }
    }
}

/// The transfer of the `ret` bytes a call with `args` moved, at its exit.
#[inline(always)]
pub(crate) fn transfer_at_exit(
    ctx: &SyscallContext,
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
        ctx, &EXIT_JUMP, cfg, pid_tgid, who, None, syscall, dir, args.fd, args.buf, args.len, ret as u64, true, 0, 0,
    );
}

/// Exit of a write whose entry marked it (`mark_for_exit`): the mark is
/// taken whatever the outcome (a failed write, EAGAIN, must not leave it
/// to the thread's next write), and the bytes the kernel took are
/// captured if the mark is this call's.
#[inline(always)]
pub(crate) fn marked_exit(ctx: &SyscallContext, pid_tgid: u64, syscall: Syscall, ret: i64) {
    // SAFETY: keyed by this thread's pid_tgid, which only this thread (now
    // running here) inserts or removes; the value is copied out at once.
    let Some(args) = (unsafe { ARGS.get(&pid_tgid) }).copied() else {
        return;
    };
    take_mark(pid_tgid);
    if args.syscall != syscall as u8 || ret <= 0 {
        return;
    }
    let Some(cfg) = config() else { return };
    let who = tracking(cfg, (pid_tgid >> 32) as u32);
    // Marked by a tracked process, which may have been forgotten since.
    if who.untracked() {
        return;
    }
    transfer_at_exit(ctx, cfg, Direction::Egress, pid_tgid, who, &args, ret);
}

/// Marks the current write, a TCP write of a tracked process, for its
/// exit (`marked_exit`), which captures the bytes the kernel took.
#[inline(always)]
pub(crate) fn mark_for_exit(pid_tgid: u64, args: &SyscallArgs) {
    // SAFETY: presence only; the value is not read.
    let new = unsafe { ARGS.get(&pid_tgid) }.is_none();
    if ARGS.insert(&pid_tgid, args, 0).is_err() {
        count(Counter::DropArgsMapFull, 1);
    } else if new {
        add_to_marks(1);
    }
}

/// Removes the current thread's mark, `pid_tgid`, if it has one: taken at
/// the write's exit, or left by a thread that exits inside a write.
#[inline(always)]
pub(crate) fn take_mark(pid_tgid: u64) {
    if ARGS.remove(&pid_tgid).is_ok() {
        add_to_marks(1u64.wrapping_neg());
    }
}

/// Whether any write is marked for its exit, on any CPU ([`MARKS`]). A
/// thread's own mark is always seen: its entry's atomic add came first.
#[inline(always)]
pub(crate) fn marks_pending() -> bool {
    MARKS.get(0).is_some_and(|n| *n != 0)
}

/// Adds `n` (two's complement for a subtraction) to [`MARKS`], atomically:
/// threads on other CPUs mark and take at the same time.
#[inline(always)]
fn add_to_marks(n: u64) {
    if let Some(p) = MARKS.get_ptr_mut(0) {
        add_atomic(p, n);
    }
}
