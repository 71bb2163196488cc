//! Write-side syscalls (write, writev, sendto, sendmsg): writer notices for
//! local IPC at entry, TCP payloads at exit.

use crate::{
    hooks::{egress_exit, entry_args},
    known_files::writer_notified,
    maps::{config, count, JUMP},
    payload::starts_like_json,
    tracking::tracking,
    transfer::{begin_transfer, iovec, looked_at_recently, vector},
};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::macros::tracepoint;
use aya_ebpf::programs::TracePointContext;
use monitor_common::{config_flags, Counter, Direction, Syscall};

/// x86_64 system call numbers of the write side.
const NR_WRITE: u32 = 1;
const NR_WRITEV: u32 = 20;
const NR_SENDTO: u32 = 44;
const NR_SENDMSG: u32 = 46;

/// Exit of write, writev, sendto, sendmsg: TCP payloads of tracked
/// processes are captured here, with the byte count the kernel took (a
/// partial write is not captured twice), for the writes their entry
/// marked. With TCP capture off it returns at once.
#[tracepoint]
pub fn sys_exit_egress(ctx: TracePointContext) -> u32 {
    egress_exit(&ctx, |nr| match nr {
        NR_WRITE => Some(Syscall::Write),
        NR_WRITEV => Some(Syscall::Writev),
        NR_SENDTO => Some(Syscall::Sendto),
        NR_SENDMSG => Some(Syscall::Sendmsg),
        _ => None,
    });
    0
}

#[inline(always)]
pub(crate) fn on_egress_enter(ctx: &TracePointContext, syscall: Syscall) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(cfg) = config() else { return };
    if (pid_tgid >> 32) as u32 == cfg.self_tgid {
        return;
    }
    let args = entry_args(ctx, syscall);
    let (fd, buf, len) = (args.fd, args.buf, args.len);
    // For vectored calls the byte total is unknown before the call; the
    // notice only needs the first segment for discovery.
    let total = match syscall {
        Syscall::Write | Syscall::Sendto => len,
        _ => u64::MAX,
    };
    let who = tracking(cfg, (pid_tgid >> 32) as u32);
    let tracked = !who.untracked();
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
        match vector(syscall, buf, len) {
            None => starts_like_json(buf, len),
            Some((iov, cnt)) => cnt > 0 && iovec(iov, 0).is_some_and(|(b, l)| starts_like_json(b, l)),
        }
    });
    begin_transfer(
        ctx,
        &JUMP,
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

#[tracepoint]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    on_egress_enter(&ctx, Syscall::Write);
    0
}

#[tracepoint]
pub fn sys_enter_writev(ctx: TracePointContext) -> u32 {
    on_egress_enter(&ctx, Syscall::Writev);
    0
}

#[tracepoint]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    on_egress_enter(&ctx, Syscall::Sendto);
    0
}

#[tracepoint]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    on_egress_enter(&ctx, Syscall::Sendmsg);
    0
}
