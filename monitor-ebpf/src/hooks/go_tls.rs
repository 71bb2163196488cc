//! Go `crypto/tls` uprobes: the plaintext of `(*Conn).Read` and
//! `(*Conn).Write` in Go executables (stripped ones too: userspace finds
//! the functions through `.gopclntab`).
//!
//! Go passes arguments and results in registers (ABIInternal, amd64, Go
//! 1.17 and later): the receiver `c` in RAX, the slice `b` in RBX (pointer)
//! and RCX (length); the byte count comes back in RAX. The current
//! goroutine is in R14. Return probes (uretprobes) would rewrite return
//! addresses on stacks the Go runtime moves, so userspace attaches the
//! return programs at each `RET` instruction of the two functions instead.
//! The arguments wait between entry and return keyed by goroutine, not by
//! thread: a goroutine can be resumed on another thread.
//!
//! An entry probe may fire twice for one call (the stack-growth path jumps
//! back to the entry): the stash is simply written again, and the bytes are
//! sent once, at the return.

use crate::{
    hooks::tls::forget_tls_conn,
    kernel_read::{file_info, uread},
    maps::{config, count, GoCallKey, TlsArgs, TlsBinding, GO_TLS_CALLS, TLS_FDS, TLS_JUMP},
    payload::starts_like_json,
    tracking::tracking,
    transfer::begin_transfer,
};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::macros::uprobe;
use aya_ebpf::programs::ProbeContext;
use monitor_common::{config_flags, Counter, Direction, FdKind, KernelConfig, Syscall, TlsKey, TrackReason};

/// Offset of `Sysfd` in `internal/poll.FD` (after `fdmu`, a 16-byte
/// `fdMutex`), which is the first field of `net.netFD`; unchanged from Go
/// 1.9 to 1.25.
const NETFD_SYSFD: u64 = 16;

/// The registers of the Go ABI this file reads.
struct GoRegs {
    rax: u64,
    rbx: u64,
    rcx: u64,
    g: u64,
}

#[inline(always)]
fn regs(ctx: &ProbeContext) -> GoRegs {
    // SAFETY: `regs` is the pt_regs the kernel passes to a uprobe program;
    // the verifier checks each context access.
    let r = unsafe { &*ctx.regs };
    GoRegs {
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        g: r.r14,
    }
}

/// The calling process and the registers, unless the caller is the agent.
#[inline(always)]
fn go_call(ctx: &ProbeContext) -> Option<(u64, &'static KernelConfig, u32, GoRegs)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let cfg = config()?;
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == cfg.self_tgid {
        return None;
    }
    Some((pid_tgid, cfg, tgid, regs(ctx)))
}

/// Entry of `Read`: stash the receiver and the buffer under the goroutine.
#[inline(always)]
fn on_read_entry(ctx: &ProbeContext) {
    let Some((_, _, tgid, r)) = go_call(ctx) else { return };
    let key = GoCallKey {
        tgid,
        direction: Direction::Ingress as u32,
        g: r.g,
    };
    let (conn, buf, len) = (r.rax, r.rbx, r.rcx);
    if conn == 0 || len == 0 || len as i64 <= 0 {
        // A stash of an earlier call that never returned through a probed
        // RET must not be taken for this one's.
        let _ = GO_TLS_CALLS.remove(&key);
        return;
    }
    let args = TlsArgs {
        ssl: conn,
        buf,
        len,
        out_len: 0,
        direction: Direction::Ingress as u8,
        thinned: 0,
        _pad1: 0,
        _pad2: 0,
    };
    if GO_TLS_CALLS.insert(&key, &args, 0).is_err() {
        count(Counter::DropArgsMapFull, 1);
    }
}

/// A `RET` of `Read`: the bytes the call moved (RAX).
#[inline(always)]
fn on_read_return(ctx: &ProbeContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let r = regs(ctx);
    let key = GoCallKey {
        tgid,
        direction: Direction::Ingress as u32,
        g: r.g,
    };
    // SAFETY: plain integers copied out at once; only this goroutine, now
    // running on this thread, inserts or removes its key.
    let Some(args) = (unsafe { GO_TLS_CALLS.get(&key) }).copied() else {
        return;
    };
    let _ = GO_TLS_CALLS.remove(&key);
    let n = r.rax as i64;
    if n <= 0 || n as u64 > args.len {
        return;
    }
    let Some(cfg) = config() else { return };
    let fd = conn_fd(cfg, tgid, args.ssl);
    let who = tracking(cfg, tgid);
    begin_transfer(
        ctx,
        &TLS_JUMP,
        cfg,
        pid_tgid,
        who,
        None,
        Syscall::SslRead,
        Direction::Ingress,
        fd,
        args.buf,
        args.len,
        n as u64,
        args.ssl,
        0,
    );
}

/// The start of `Write`'s body: the bytes it is asked to write. Writes that
/// neither come from a tracked process nor start like MCP stop here.
#[inline(always)]
fn on_write_body(ctx: &ProbeContext) {
    let Some((pid_tgid, cfg, tgid, r)) = go_call(ctx) else {
        return;
    };
    let (conn, buf, len) = (r.rax, r.rbx, r.rcx);
    if conn == 0 || len == 0 || len as i64 <= 0 {
        return;
    }
    let who = tracking(cfg, tgid);
    let reason = who.reason;
    if reason == TrackReason::None as u32 && (cfg.flags & config_flags::DISCOVERY == 0 || !starts_like_json(buf, len)) {
        return;
    }
    let fd = conn_fd(cfg, tgid, conn);
    begin_transfer(
        ctx,
        &TLS_JUMP,
        cfg,
        pid_tgid,
        who,
        None,
        Syscall::SslWrite,
        Direction::Egress,
        fd,
        buf,
        len,
        len,
        conn,
        0,
    );
}

/// The socket under a `*tls.Conn`, remembered per connection: `c.conn` is
/// a `net.Conn` interface (type word, then data) at offset 0, whose data
/// is a `*net.TCPConn`, whose first word is its `*netFD`. Only a number
/// that names a TCP socket of this process is taken (and remembered): a
/// connection over something else (a wrapped `net.Conn`, a unix socket)
/// gets none, and its chunks are counted as unbound.
#[inline(always)]
fn conn_fd(cfg: &KernelConfig, tgid: u32, conn: u64) -> i32 {
    let key = TlsKey {
        tgid,
        _pad: 0,
        ssl: conn,
    };
    // SAFETY: an i32 copied out at once; a concurrent eviction can at worst
    // give a stale descriptor.
    if let Some(b) = unsafe { TLS_FDS.get(&key) } {
        return b.fd;
    }
    // SAFETY: user memory read through the helper, which fails instead of
    // faulting; any bit pattern of a u64 is valid.
    let fd = unsafe {
        uread::<u64>(conn + 8)
            .and_then(|tcp| uread::<u64>(tcp))
            .and_then(|netfd| uread::<i64>(netfd + NETFD_SYSFD))
    };
    let Some(fd) = fd.filter(|fd| (0..(1 << 24)).contains(fd)) else {
        return -1;
    };
    let fd = fd as i32;
    match file_info(cfg, fd, Direction::Ingress) {
        Some(f) if matches!(f.kind, FdKind::Tcp4 | FdKind::Tcp6) => {
            let _ = TLS_FDS.insert(
                &key,
                &TlsBinding {
                    fd,
                    inferred: 0,
                    inode: 0,
                },
                0,
            );
            fd
        }
        _ => -1,
    }
}

#[uprobe]
pub fn go_tls_read(ctx: ProbeContext) -> u32 {
    on_read_entry(&ctx);
    0
}

#[uprobe]
pub fn go_tls_read_return(ctx: ProbeContext) -> u32 {
    on_read_return(&ctx);
    0
}

#[uprobe]
pub fn go_tls_write(ctx: ProbeContext) -> u32 {
    on_write_body(&ctx);
    0
}

/// `(*Conn).Close`: the address may be reused for the next connection, so
/// its socket binding and stream decisions go (as at `SSL_free`).
#[uprobe]
pub fn go_tls_close(ctx: ProbeContext) -> u32 {
    forget_tls_conn((bpf_get_current_pid_tgid() >> 32) as u32, regs(&ctx).rax);
    0
}
