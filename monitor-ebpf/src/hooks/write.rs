//! Write-side calls (write, writev, sendto, sendmsg): writer notices for
//! local IPC at entry, TCP payloads at exit.

use crate::hooks::SyscallContext;
use crate::{
    hooks::{marked_exit, marks_pending, SavedRegs},
    known_files::writer_notified,
    maps::{config, count, ENTER_JUMP},
    payload::starts_like_json,
    threads::current_pid_tgid,
    tracking::tracking,
    transfer::{begin_transfer, iovec, looked_at_recently, scanned_without_mcp, vector},
};
use monitor_common::{config_flags, Counter, Direction, Syscall};

/// x86_64 system call numbers of the write side.
pub(crate) const NR_WRITE: u64 = 1;
pub(crate) const NR_WRITEV: u64 = 20;
pub(crate) const NR_SENDTO: u64 = 44;
pub(crate) const NR_SENDMSG: u64 = 46;

/// Exit of a write-side call: the TCP payload of a write that the capture
/// stage marked at entry (`mark_for_exit`), with the byte count the kernel
/// took (a partial write is not captured twice). Every write on the host
/// comes here, and nearly all leave at [`marks_pending`]: no thread of
/// the host has a write marked.
#[inline(always)]
pub(crate) fn on_write_exit(ctx: &SyscallContext, syscall: Syscall, ret: i64) {
    if !marks_pending() {
        return;
    }
    let Some(cfg) = config() else { return };
    marked_exit(ctx, current_pid_tgid(ctx, cfg), syscall, ret);
}

/// Entry of a write-side call.
#[inline(always)]
pub(crate) fn on_write_enter(ctx: &SyscallContext, syscall: Syscall) {
    let Some(cfg) = config() else { return };
    let pid_tgid = current_pid_tgid(ctx, cfg);
    if (pid_tgid >> 32) as u32 == cfg.self_tgid {
        return;
    }
    let who = tracking(cfg, (pid_tgid >> 32) as u32);
    let tracked = !who.untracked();
    if !tracked && cfg.flags & config_flags::DISCOVERY == 0 {
        return;
    }
    let Some(regs) = SavedRegs::of(ctx) else { return };
    let args = regs.args(syscall);
    let (fd, buf, len) = (args.fd, args.buf, args.len);
    // For vectored calls the byte total is unknown before the call; the
    // notice only needs the first segment for discovery.
    let total = match syscall {
        Syscall::Write | Syscall::Sendto => len,
        _ => u64::MAX,
    };
    if tracked && writer_notified(pid_tgid, who.start_ns, fd) {
        return;
    }
    // The first segment's first bytes (vectored calls: the first iovec,
    // which for HTTP clients and servers holds the head).
    // A stream looked at moments ago and found not MCP is not looked at
    // again yet (see `looked_at_recently`): no read of its bytes at all, and
    // `begin_transfer` leaves such a write at once.
    let looks_like_mcp = (!tracked && cfg.flags & config_flags::DISCOVERY != 0).then(|| {
        if looked_at_recently(pid_tgid, fd, Direction::Egress) {
            count(Counter::DiscoveryDeferred, 1);
            return false;
        }
        let json = match vector(syscall, buf, len) {
            None => starts_like_json(buf, len),
            Some((iov, cnt)) => cnt > 0 && iovec(iov, 0).is_some_and(|(b, l)| starts_like_json(b, l)),
        };
        if json {
            scanned_without_mcp(pid_tgid, fd, Direction::Egress);
        }
        json
    });
    begin_transfer(
        ctx,
        &ENTER_JUMP,
        cfg,
        pid_tgid,
        who,
        looks_like_mcp,
        syscall,
        Direction::Egress,
        fd,
        buf,
        len,
        total,
        false,
        0,
        0,
    );
}
