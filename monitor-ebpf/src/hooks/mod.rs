//! Hooks by family. System calls come through one raw tracepoint,
//! `sys_exit`, or, where the kernel allows them, fexit programs on the
//! calls of interest alone (syscalls.rs), which hand them to their family: reads (read.rs), writes (write.rs),
//! descriptors closed or replaced (descriptors.rs) and port selectors
//! (ports.rs).

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
    kernel_read::kread,
    threads::{helper_thread_key, thread_key},
    tracking::Tracking,
    transfer::begin_transfer,
};
use aya_ebpf::{maps::ProgramArray, programs::BtfTracePointContext, EbpfContext, Global};
use monitor_common::{Direction, KernelConfig, Syscall};

/// The context of the syscall hooks and their tail-call stages: BTF
/// tracepoints (`tp_btf`) on the raw `sys_exit` tracepoint. The fexit
/// hooks' context is laid out the same way (`struct pt_regs *`, then the
/// return value) and is read through this type too.
pub(crate) type SyscallContext = BtfTracePointContext;

/// Offset of `dx` in x86_64 `struct pt_regs`; `si`, `di`, `orig_ax`, `ip`
/// and `cs` follow at 104, 112, 120, 128 and 136.
const PT_REGS_DX: u64 = 96;

/// 1 where the network calls' fexit hooks read the registers with a
/// helper ([`SavedRegs::of_net`]); set by the loader
/// (`global_name::NET_REGS_BY_HELPER`). A read-only global, so the verifier
/// knows its value and never walks the branch it switches off: 5.10's
/// refuses the plain loads through a pointer its BTF leaves without
/// members, even in code that cannot run.
#[unsafe(no_mangle)]
static NET_REGS_BY_HELPER: Global<u8> = Global::new(0);

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
    /// Where the registers are, at the top of the calling thread's kernel
    /// stack, as the key of the thread's entry in `THREADS`
    /// ([`crate::threads::thread_key`], or [`crate::threads::helper_thread_key`]
    /// where a helper read the address).
    pub(crate) thread_key: u64,
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
        // The syscall tracepoint and the fexit hooks pass the
        // `struct pt_regs *` first. It is a typed kernel pointer: plain
        // loads, which the verifier checks against the kernel's BTF and
        // makes fault-safe, with no helper call (where the BTF types it as
        // a forward declaration, 5.10's for the network calls, their hooks
        // read it with `of_net`; the loader uses fexit for no other).
        let regs: *const u64 = ctx.arg(0);
        // SAFETY: loads of u64 fields of `struct pt_regs` (dx, si, di,
        // orig_ax, ip, cs at 96..144) through the pointer the hook is
        // passed; the verifier checks each against the kernel's BTF.
        let [dx, si, di, nr, cs] = unsafe {
            [
                *regs.add(AT),
                *regs.add(AT + 1),
                *regs.add(AT + 2),
                *regs.add(AT + 3),
                *regs.add(AT + 5),
            ]
        };
        Self::unless_32_bit(cs, [dx, si, di, nr], thread_key(regs))
    }

    /// The registers of a network call's fexit hook: as [`Self::of`], or
    /// where the kernel's BTF declares them without members (5.10: the
    /// verifier refuses to read the parameter at all) by two helper reads,
    /// the parameter's value from the context, then the registers. Only the
    /// network calls pay them there; their hooks still run only for those
    /// calls.
    #[inline(always)]
    pub(crate) fn of_net(ctx: &SyscallContext) -> Option<SavedRegs> {
        if NET_REGS_BY_HELPER.load() == 0 {
            return Self::of(ctx);
        }
        // SAFETY: u64 values (any bit pattern valid), read by the helper,
        // which checks the addresses: the context's first slot (the
        // `struct pt_regs *`), then dx..cs of the registers it points to.
        let addr: u64 = unsafe { kread(ctx.as_ptr() as u64)? };
        // SAFETY: as above.
        let [dx, si, di, nr, _ip, cs]: [u64; 6] = unsafe { kread(addr + PT_REGS_DX)? };
        Self::unless_32_bit(cs, [dx, si, di, nr], helper_thread_key(addr))
    }

    /// The registers read at `addr` (code segment `cs`), `None` for a
    /// 32-bit process's call.
    #[inline(always)]
    fn unless_32_bit(cs: u64, [dx, si, di, nr]: [u64; 4], thread_key: u64) -> Option<SavedRegs> {
        if cs & 0xff == USER32_CS {
            return None;
        }
        Some(SavedRegs {
            nr,
            di,
            si,
            dx,
            thread_key,
        })
    }

    /// The arguments of a read or write call.
    #[inline(always)]
    pub(crate) fn args(&self, syscall: Syscall) -> SyscallArgs {
        SyscallArgs {
            buf: self.si,
            len: self.dx,
            fd: self.di as i32,
            syscall,
        }
    }
}

/// The arguments of a read or write call.
#[derive(Clone, Copy)]
pub(crate) struct SyscallArgs {
    /// Buffer, iovec array or msghdr, depending on `syscall`.
    pub(crate) buf: u64,
    /// Byte count, or iovec count for readv and writev.
    pub(crate) len: u64,
    pub(crate) fd: i32,
    pub(crate) syscall: Syscall,
}

/// The transfer of the `ret` bytes a read with `args` moved, at its exit;
/// `jump` is the stage set of the hook that runs it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn transfer_at_exit(
    ctx: &SyscallContext,
    jump: &ProgramArray,
    cfg: &KernelConfig,
    dir: Direction,
    pid_tgid: u64,
    who: Tracking,
    args: &SyscallArgs,
    ret: i64,
) {
    begin_transfer(
        ctx,
        jump,
        cfg,
        pid_tgid,
        who,
        None,
        args.syscall,
        dir,
        args.fd,
        args.buf,
        args.len,
        ret as u64,
        0,
        0,
    );
}
