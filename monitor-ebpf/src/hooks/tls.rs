//! OpenSSL uprobes: the plaintext of `SSL_read`/`SSL_write` (and `_ex`),
//! bound to the socket `SSL_set_fd` names or the last TCP socket the thread
//! read, and the TLS capture stage.

use crate::{
    capture::{header_flags, ignored_stream, open_stream, relook, stream_state_of, tracking_flags, Header},
    emit::{emit_rest, fill_chunk_header, scratch, Scratch},
    kernel_read::{conn_tuple, fd_inode, file_info, uread, FileInfo},
    maps::Transfer,
    maps::{
        config, count, SocketRef, TlsArgs, TlsBinding, LAST_TCP_READ, STREAMS, TLS_ARGS, TLS_FDS, TLS_JUMP, TRANSFER,
    },
    payload::starts_like_json,
    tracking::{tracked_reason, tracking},
    transfer::{begin_transfer, forget_judged, looked_at_recently},
};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::macros::{uprobe, uretprobe};
use aya_ebpf::programs::{ProbeContext, RetProbeContext};
use monitor_common::{
    chunk_flags, config_flags, stream_state, ChunkRecord, Counter, Direction, FdKind, KernelConfig, RecordKind,
    StreamKey, Syscall, TlsKey, TrackReason, TLS_STREAM_FD,
};

/// Tail-call target for TLS plaintext: consult the stream decision (keyed
/// by `SSL` object) and send the chunk with the bound socket's endpoints.
#[uprobe]
pub fn tls_capture(ctx: ProbeContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let Some(tp) = TRANSFER.get(0) else { return 0 };
    let t = *tp;
    let (Some(syscall), Some(dir)) = (Syscall::from_u8(t.syscall), Direction::from_u8(t.direction)) else {
        return 0;
    };
    let Some(scratch) = scratch() else { return 0 };
    if t.pieces == 0 {
        match tls_capture_header(cfg, scratch, &t, syscall, dir) {
            Header::Send => {}
            Header::Skip => return 0,
            Header::Relook => return relook(&ctx, &TLS_JUMP),
        }
    }
    emit_rest(&ctx, &TLS_JUMP, cfg, scratch, header_flags(scratch));
    0
}

/// First run of `tls_capture` for a transfer: the stream decision and the
/// chunk header.
#[inline(always)]
pub(crate) fn tls_capture_header(
    cfg: &KernelConfig,
    scratch: Scratch,
    t: &Transfer,
    syscall: Syscall,
    dir: Direction,
) -> Header {
    let scratch = scratch.ptr();
    let pid_tgid = t.pid_tgid;
    let tgid = (pid_tgid >> 32) as u32;
    let key = StreamKey::new(tgid, TLS_STREAM_FD, t.ssl, dir as u8);
    let state = stream_state_of(&key);
    let mut flags = t.extra_flags;
    if state == stream_state::IGNORE_QUIET {
        return Header::Skip;
    }
    if state == stream_state::IGNORE {
        match ignored_stream(&key, t) {
            Header::Send => flags |= chunk_flags::RESUMED | chunk_flags::NEW_STREAM,
            other => return other,
        }
    }
    flags |= tracking_flags(t, tgid);
    flags |= open_stream(&key, state);
    let sock = if t.fd >= 0 { file_info(cfg, t.fd, dir) } else { None };
    let fi = FileInfo {
        kind: FdKind::Tls,
        inode: t.ssl,
        channel: 0,
        peer: 0,
    };
    // SAFETY: scratch is this CPU's SCRATCH value (the caller passes
    // scratch()): 8-aligned, >= HDR bytes, any bit pattern valid.
    let rec = unsafe { &mut *(scratch as *mut ChunkRecord) };
    fill_chunk_header(
        rec,
        RecordKind::Chunk,
        pid_tgid,
        t.start_ns,
        t.fd,
        syscall,
        dir,
        &fi,
        flags,
    );
    match sock {
        Some(s) if matches!(s.kind, FdKind::Tcp4 | FdKind::Tcp6) => rec.conn = conn_tuple(cfg, s.channel, s.kind),
        _ => count(Counter::TlsUnbound, 1),
    }
    Header::Send
}

/// How the probes of one TLS library treat an untracked process's
/// connections.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Looks {
    /// Thinned as untracked pipes and sockets are
    /// ([`looked_at_recently`]), keyed by the `SSL` object, whose record
    /// `SSL_free` and `SSL_set_fd` clear (OpenSSL).
    Thinned,
    /// Every call looked at: the library has no `SSL_free` to watch
    /// (BoringSSL in a Bun executable), so a connection whose object took
    /// a freed one's address would inherit its thinning.
    Every,
}

/// The `JUDGED` "descriptor" of a TLS connection of the current process:
/// its `SSL` object's address, folded into 30 bits with bit 30 set, above
/// any real descriptor number.
#[inline(always)]
pub(crate) fn tls_judged_fd(ssl: u64) -> i32 {
    ((((ssl >> 4) as u32) & 0x3fff_ffff) | 0x4000_0000) as i32
}

/// Forgets discovery's looks at the connection of `SSL` object `ssl` of
/// process `tgid`, both directions: the object is freed or given another
/// socket, and the next connection on it is looked at from its first call.
#[inline(always)]
fn forget_tls_looks(tgid: u32, ssl: u64) {
    forget_judged((tgid as u64) << 32, tls_judged_fd(ssl));
}

/// Entry of `SSL_read`/`SSL_write` (`ex`: the `_ex` variants, which
/// return the byte count through a fourth argument): stash the arguments
/// for the return probe. A process that is not tracked has its calls looked
/// at as an untracked pipe's are, per connection (`looks`): its writes here,
/// where their bytes are known (those that do not start like MCP are left
/// here too), its reads at return, once they moved bytes (a failed read,
/// which event loops make between two that succeed, must not take a look,
/// and a read that waited must see the pause before it).
#[inline(always)]
pub(crate) fn tls_enter(ctx: &ProbeContext, dir: Direction, ex: bool, looks: Looks) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(cfg) = config() else { return };
    if (pid_tgid >> 32) as u32 == cfg.self_tgid {
        return;
    }
    let (Some(ssl), Some(buf), Some(num)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(2)) else {
        return;
    };
    // `num` is an int for SSL_read/SSL_write, a size_t for the _ex variants.
    let len = if ex { num } else { num as u32 as i32 as i64 as u64 };
    if len == 0 || len as i64 <= 0 {
        return;
    }
    let out_len = if ex { ctx.arg::<u64>(3).unwrap_or(0) } else { 0 };
    if ex && out_len == 0 {
        return;
    }
    if dir == Direction::Egress && tracked_reason(cfg, (pid_tgid >> 32) as u32) == TrackReason::None as u32 {
        if cfg.flags & config_flags::DISCOVERY == 0 {
            return;
        }
        if looks == Looks::Thinned && looked_at_recently(pid_tgid, tls_judged_fd(ssl), dir) {
            return;
        }
        if !starts_like_json(buf, len) {
            return;
        }
    }
    let args = TlsArgs {
        ssl,
        buf,
        len,
        out_len,
        direction: dir as u8,
        thinned: (looks == Looks::Thinned) as u8,
        _pad1: 0,
        _pad2: 0,
    };
    if TLS_ARGS.insert(&pid_tgid, &args, 0).is_err() {
        count(Counter::DropArgsMapFull, 1);
    }
}

#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    tls_enter(&ctx, Direction::Egress, false, Looks::Thinned);
    0
}

#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    tls_enter(&ctx, Direction::Egress, true, Looks::Thinned);
    0
}

#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    tls_enter(&ctx, Direction::Ingress, false, Looks::Thinned);
    0
}

#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    tls_enter(&ctx, Direction::Ingress, true, Looks::Thinned);
    0
}

/// `SSL_read` of a library whose `SSL_free` is not watched (BoringSSL in a
/// Bun executable, which takes the arguments OpenSSL's does): every call
/// looked at ([`Looks::Every`]).
#[uprobe]
pub fn ssl_read_every(ctx: ProbeContext) -> u32 {
    tls_enter(&ctx, Direction::Ingress, false, Looks::Every);
    0
}

/// `SSL_write` of such a library, as [`ssl_read_every`].
#[uprobe]
pub fn ssl_write_every(ctx: ProbeContext) -> u32 {
    tls_enter(&ctx, Direction::Egress, false, Looks::Every);
    0
}

/// `SSL_read_ex` of an OpenSSL whose `SSL_free` is not watched, as
/// [`ssl_read_every`].
#[uprobe]
pub fn ssl_read_ex_every(ctx: ProbeContext) -> u32 {
    tls_enter(&ctx, Direction::Ingress, true, Looks::Every);
    0
}

/// `SSL_write_ex` of an OpenSSL whose `SSL_free` is not watched, as
/// [`ssl_read_every`].
#[uprobe]
pub fn ssl_write_ex_every(ctx: ProbeContext) -> u32 {
    tls_enter(&ctx, Direction::Egress, true, Looks::Every);
    0
}

/// Return of any of the entries above: the plaintext the library actually
/// moved.
#[uretprobe]
pub fn ssl_return(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: keyed by this thread's pid_tgid, which only this thread (now
    // running here) inserts or removes; the value is copied out at once.
    let Some(args) = (unsafe { TLS_ARGS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = TLS_ARGS.remove(&pid_tgid);
    let ret = ctx.ret::<u64>() as u32 as i32;
    let n: u64 = if args.out_len != 0 {
        if ret != 1 {
            return 0;
        }
        // SAFETY: uread of a u64 (any bit pattern valid); the helper checks
        // the user address and fails instead of faulting.
        match unsafe { uread::<u64>(args.out_len) } {
            Some(v) => v,
            None => return 0,
        }
    } else {
        if ret <= 0 {
            return 0;
        }
        ret as u64
    };
    if n == 0 || n > args.len {
        return 0;
    }
    let Some(cfg) = config() else { return 0 };
    let Some(dir) = Direction::from_u8(args.direction) else {
        return 0;
    };
    let syscall = if dir == Direction::Ingress {
        Syscall::SslRead
    } else {
        Syscall::SslWrite
    };
    let tgid = (pid_tgid >> 32) as u32;
    let who = tracking(cfg, tgid);
    let reason = who.reason;
    // An untracked process's read that moved bytes: looked at, or let pass
    // (`tls_enter`; its writes were decided at entry). Without discovery
    // its reads are of no use (`begin_transfer` leaves them too).
    if dir == Direction::Ingress && who.untracked() {
        if cfg.flags & config_flags::DISCOVERY == 0 {
            return 0;
        }
        if args.thinned != 0 && looked_at_recently(pid_tgid, tls_judged_fd(args.ssl), dir) {
            return 0;
        }
    }
    let bkey = TlsKey {
        tgid,
        _pad: 0,
        ssl: args.ssl,
    };
    // SAFETY: plain integers copied out at once; a concurrent update or LRU
    // eviction can at worst give a stale binding.
    let mut binding = unsafe { TLS_FDS.get(&bkey) }.copied();
    if let Some(b) = binding {
        if b.inferred != 0 && dir == Direction::Ingress {
            // SAFETY: plain integers copied out at once.
            if let Some(last) = unsafe { LAST_TCP_READ.get(&pid_tgid) }.copied() {
                binding = checked_binding(cfg, &bkey, b, last);
            }
        }
    }
    let (fd, extra) = match binding {
        Some(b) => (
            b.fd,
            if b.inferred != 0 {
                chunk_flags::TLS_FD_INFERRED
            } else {
                0
            },
        ),
        // SAFETY: an i32 copied out at once; LRU eviction by another CPU can
        // at worst give a stale descriptor.
        None => match unsafe { LAST_TCP_READ.get(&pid_tgid) }.copied() {
            Some(last) if reason != TrackReason::None as u32 => {
                // Tentative until a read agrees (`checked_binding`): a
                // connection written to before it was ever read (a
                // client's first request) gets another connection's
                // socket here.
                let b = TlsBinding {
                    fd: last.fd,
                    inferred: INFERRED_TENTATIVE,
                    inode: last.inode,
                };
                let _ = TLS_FDS.insert(&bkey, &b, 0);
                (last.fd, chunk_flags::TLS_FD_INFERRED)
            }
            _ => (-1, 0),
        },
    };
    begin_transfer(
        &ctx, &TLS_JUMP, cfg, pid_tgid, who, None, syscall, dir, fd, args.buf, args.len, n, args.ssl, extra,
    );
    0
}

/// `TlsBinding::inferred` of a socket guessed and not confirmed yet: at a
/// write, before the connection was ever read (a client's first request),
/// or at a read that may have come just after the loop read another
/// connection's socket.
const INFERRED_TENTATIVE: u32 = 1;
/// `TlsBinding::inferred` of a guess a later read agreed with.
const INFERRED_CONFIRMED: u32 = 2;

/// The binding of an `SSL` object whose socket was inferred (`b`), checked
/// at a read against `last`, the TCP socket this thread read last; None
/// if the object was forgotten, its socket to be inferred again.
///
/// They agree: the guess is confirmed. They disagree:
/// - a tentative guess takes `last`, still tentative (the guess made at a
///   connection's first write may be another connection's socket; so may
///   one made at a read the loop did not make right after this socket's);
/// - the thread's event loop read another connection's socket before it
///   decrypted this one's bytes (Python's anyio reads every ready socket,
///   then its tasks call `SSL_read`): the object's confirmed socket is
///   still open under its descriptor, and the object keeps it
///   (`TlsReadsInterleaved`);
/// - the object's address was freed and reused for another connection
///   without an `SSL_free` seen (Bun's BoringSSL has no symbol for it):
///   its socket is closed, or its descriptor holds another socket. The old
///   connection's binding and stream decisions go (`TlsObjectsReused`).
#[inline(always)]
fn checked_binding(cfg: &KernelConfig, bkey: &TlsKey, b: TlsBinding, last: SocketRef) -> Option<TlsBinding> {
    let same = last.fd == b.fd && last.inode == b.inode;
    if b.inferred == INFERRED_TENTATIVE {
        let next = TlsBinding {
            fd: last.fd,
            inferred: if same { INFERRED_CONFIRMED } else { INFERRED_TENTATIVE },
            inode: last.inode,
        };
        let _ = TLS_FDS.insert(bkey, &next, 0);
        return Some(next);
    }
    if same {
        return Some(b);
    }
    if last.fd != b.fd && fd_inode(cfg, b.fd) == Some(b.inode) {
        count(Counter::TlsReadsInterleaved, 1);
        return Some(b);
    }
    count(Counter::TlsObjectsReused, 1);
    forget_tls_conn(bkey.tgid, bkey.ssl);
    None
}

/// `SSL_set_fd(ssl, fd)` (also `SSL_set_rfd`/`SSL_set_wfd`): the socket
/// of an `SSL` object, exactly.
#[uprobe]
pub fn ssl_set_fd(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (Some(ssl), Some(fd)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    let tgid = (pid_tgid >> 32) as u32;
    // A new socket for the object (a new connection, or one reused
    // through `SSL_clear`): looked at from its first call.
    forget_tls_looks(tgid, ssl);
    let key = TlsKey { tgid, _pad: 0, ssl };
    let _ = TLS_FDS.insert(
        &key,
        &TlsBinding {
            fd: fd as u32 as i32,
            inferred: 0,
            inode: 0,
        },
        0,
    );
    0
}

/// `SSL_free(ssl)`: the address may be reused for the next connection, so
/// its socket binding and stream decisions go.
#[uprobe]
pub fn ssl_free(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(ssl) = ctx.arg::<u64>(0) else { return 0 };
    forget_tls_conn((pid_tgid >> 32) as u32, ssl);
    0
}

/// A TLS connection object of process `tgid` is gone (`SSL_free`, Go's
/// `(*Conn).Close`): its socket binding and stream decisions go with it.
#[inline(always)]
pub(crate) fn forget_tls_conn(tgid: u32, conn: u64) {
    // The next connection may get the object's address.
    forget_tls_looks(tgid, conn);
    let _ = TLS_FDS.remove(&TlsKey {
        tgid,
        _pad: 0,
        ssl: conn,
    });
    let mut key = StreamKey::new(tgid, TLS_STREAM_FD, conn, Direction::Ingress as u8);
    let _ = STREAMS.remove(&key);
    key.direction = Direction::Egress as u8;
    let _ = STREAMS.remove(&key);
}
