//! Write-side calls (write, writev, sendto, sendmsg), at their exit, with
//! the count the kernel took: a writer notice for local IPC (the payload is
//! captured where it is read), the payload for TCP; discovery of writers.

use crate::hooks::SyscallContext;
use crate::{
    hooks::SavedRegs,
    known_files::writer_notified,
    maps::config,
    payload::starts_like_json,
    threads::current_caller,
    tracking::thread_tracking,
    transfer::{begin_transfer, iovec, looked_at_recently, scanned_without_mcp, vector},
};
use aya_ebpf::maps::ProgramArray;
use monitor_common::{config_flags, Direction, Syscall};

/// x86_64 system call numbers of the write side.
pub(crate) const NR_WRITE: u64 = 1;
pub(crate) const NR_WRITEV: u64 = 20;
pub(crate) const NR_SENDTO: u64 = 44;
pub(crate) const NR_SENDMSG: u64 = 46;

/// Exit of a write-side call that took `ret` (> 0) bytes, with its
/// arguments in `regs`. Every such call on the host comes here.
#[inline(always)]
pub(crate) fn on_write_exit(ctx: &SyscallContext, jump: &ProgramArray, regs: &SavedRegs, syscall: Syscall, ret: i64) {
    let caller = current_caller(regs);
    let args = regs.args(syscall);
    if caller.passes(args.fd, Direction::Egress) {
        return;
    }
    let Some(cfg) = config() else { return };
    let pid_tgid = caller.pid_tgid;
    let who = thread_tracking(cfg, &caller, regs);
    let tracked = !who.untracked();
    if !tracked && cfg.flags & config_flags::DISCOVERY == 0 {
        return;
    }
    let (fd, buf, len) = (args.fd, args.buf, args.len);
    if tracked && writer_notified(pid_tgid, who.start_ns, fd) {
        return;
    }
    // An `if`, not `bool::then` with a closure: the closure is a function
    // of its own that LLVM, with the write path in every fexit hook and in
    // `sys_exit`, stopped inlining (a BPF-to-BPF call on every write).
    let looks_like_mcp = if !tracked && cfg.flags & config_flags::DISCOVERY != 0 {
        Some(writer_looks_like_mcp(pid_tgid, syscall, fd, buf, len))
    } else {
        None
    };
    begin_transfer(
        ctx,
        jump,
        cfg,
        pid_tgid,
        who,
        looks_like_mcp,
        syscall,
        Direction::Egress,
        fd,
        buf,
        len,
        ret as u64,
        0,
        0,
    );
}

/// Whether an untracked writer's bytes start like JSON, unless its stream
/// was looked at moments ago and found not MCP (see `looked_at_recently`):
/// then no read of its bytes at all, and `begin_transfer` leaves such a
/// write at once.
#[inline(always)]
fn writer_looks_like_mcp(pid_tgid: u64, syscall: Syscall, fd: i32, buf: u64, len: u64) -> bool {
    if looked_at_recently(pid_tgid, fd, Direction::Egress) {
        return false;
    }
    // The first segment's first bytes (vectored calls: the first iovec,
    // which for HTTP clients and servers holds the head).
    let json = match vector(syscall, buf, len) {
        None => starts_like_json(buf, len),
        Some((iov, cnt)) => cnt > 0 && iovec(iov, 0).is_some_and(|(b, l)| starts_like_json(b, l)),
    };
    if json {
        scanned_without_mcp(pid_tgid, fd, Direction::Egress);
    }
    json
}
