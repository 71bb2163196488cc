//! Read-side calls (read, readv, recvfrom, recvmsg): the bytes are captured
//! at exit, where the count is known, with the arguments taken from the
//! registers the kernel saved at entry, so a read costs one program run.

use crate::hooks::SyscallContext;
use crate::{
    hooks::{transfer_at_exit, SavedRegs},
    maps::config,
    threads::current_caller,
    tracking::thread_tracking,
};
use aya_ebpf::maps::ProgramArray;
use monitor_common::{Direction, Syscall};

/// x86_64 system call numbers of the read side.
pub(crate) const NR_READ: u64 = 0;
pub(crate) const NR_READV: u64 = 19;
pub(crate) const NR_RECVFROM: u64 = 45;
pub(crate) const NR_RECVMSG: u64 = 47;

/// Exit of a read-side call that moved `ret` (> 0) bytes. Every such call
/// on the host comes here: the thread's cached class settles the agent's
/// own and most of untracked processes' (`Caller::passes`); another
/// untracked process's read goes to discovery (thinned by
/// `looked_at_recently`), a tracked one's to capture.
#[inline(always)]
pub(crate) fn on_read_exit(ctx: &SyscallContext, jump: &ProgramArray, regs: &SavedRegs, syscall: Syscall, ret: i64) {
    let caller = current_caller(regs);
    let args = regs.args(syscall);
    if caller.passes(args.fd, Direction::Ingress) {
        return;
    }
    let Some(cfg) = config() else { return };
    let who = thread_tracking(cfg, &caller, regs);
    transfer_at_exit(ctx, jump, cfg, Direction::Ingress, caller.pid_tgid, who, &args, ret);
}
