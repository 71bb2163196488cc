//! One read or write being looked at (`TRANSFER`, per CPU): set up by the
//! hooks, then handed through the tail-call stages.

use crate::{
    kernel_read::{current_start_ns, uread},
    known_files::forget_known_file,
    maps::{count, hashed_slot, judgement, Judgement, Transfer, JUDGED_SLOTS, STREAMS, TRANSFER},
    payload::starts_like_json,
    tracking::Tracking,
};
use aya_ebpf::helpers::generated::bpf_jiffies64;
use aya_ebpf::maps::ProgramArray;
use aya_ebpf::EbpfContext;
use monitor_common::{
    config_flags, jump_slot, stream_state, Counter, Direction, KernelConfig, StreamKey, Syscall, MAX_DISCOVERY_WINDOW,
};

/// A chunk was lost: the stream's next transfer starts with `GAP_BEFORE`
/// (a chunk sent later in this one does not clear it: at worst, one more
/// partial message is dropped after a hole, never one joined across it).
/// The key is the one the capture stage kept in `Transfer::key`: built on
/// the stack here, at every loss site, it would leave stack states the
/// verifier cannot prune (`capture` went from 115k to 370k instructions).
#[inline(always)]
pub(crate) fn mark_gap(t: *mut Transfer) {
    // SAFETY: the only caller (emit_chunk) passes this CPU's TRANSFER slot
    // from a successful lookup; insert only copies the key.
    if STREAMS
        .insert(unsafe { &(*t).key }, &stream_state::AFTER_GAP, 0)
        .is_err()
    {
        count(Counter::DropStreamMapFull, 1);
    }
}

/// Reads (base, len) of iovec `i` of the array at `iov`.
#[inline(always)]
pub(crate) fn iovec(iov: u64, i: u32) -> Option<(u64, u64)> {
    // SAFETY: uread of a u64 (any bit pattern valid); the helper checks the
    // user address and fails instead of faulting.
    let base: u64 = unsafe { uread(iov + i as u64 * 16)? };
    // SAFETY: as for `base`: a u64, helper-checked address.
    let len: u64 = unsafe { uread(iov + i as u64 * 16 + 8)? };
    Some((base, len))
}

/// For vectored calls: (iovec array, iovec count); for recvmsg/sendmsg the
/// values are read from the user `struct msghdr`.
#[inline(always)]
pub(crate) fn vector(syscall: Syscall, buf: u64, len: u64) -> Option<(u64, u64)> {
    match syscall {
        Syscall::Readv | Syscall::Writev => Some((buf, len)),
        Syscall::Recvmsg | Syscall::Sendmsg => {
            // struct user_msghdr: msg_iov at 16, msg_iovlen at 24.
            // SAFETY: uread of a u64 (any bit pattern valid); the helper
            // checks the user address and fails instead of faulting.
            let iov: u64 = unsafe { uread(buf + 16)? };
            // SAFETY: as for `iov`: a u64, helper-checked address.
            let iovlen: u64 = unsafe { uread(buf + 24)? };
            Some((iov, iovlen))
        }
        _ => None,
    }
}

/// First stage for a completed transfer of `total` bytes: cheap checks,
/// then a tail call to `discover` (untracked process) or `capture`.
///
/// Ingress and TCP egress: the payload will be captured. Local IPC egress:
/// a writer notice is sent once per stream.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn begin_transfer<C: EbpfContext>(
    ctx: &C,
    jump: &ProgramArray,
    cfg: &KernelConfig,
    pid_tgid: u64,
    who: Tracking,
    // `starts_like_json` of the first segment, when the caller knows it.
    looks_like_mcp: Option<bool>,
    syscall: Syscall,
    dir: Direction,
    fd: i32,
    buf: u64,
    len_arg: u64,
    total: u64,
    ssl: u64,
    extra_flags: u8,
) {
    let untracked = who.untracked();
    // Judged by the caller already (every write on the host that moved
    // bytes passes here): leave before reading the iovec again.
    if untracked && (cfg.flags & config_flags::DISCOVERY == 0 || looks_like_mcp == Some(false)) {
        return;
    }
    // Callers that judged the first bytes (`looks_like_mcp`) consulted
    // `looked_at_recently` already, and so did the TLS entry probes
    // (hooks/tls.rs: keyed by the connection's object, not a descriptor).
    if untracked && ssl == 0 && looks_like_mcp.is_none() && looked_at_recently(pid_tgid, fd, dir) {
        return;
    }
    let (iov, iov_cnt, first_buf, first_len) = match vector(syscall, buf, len_arg) {
        Some((iov, cnt)) => {
            if cnt == 0 {
                return;
            }
            let Some((b, l)) = iovec(iov, 0) else { return };
            (iov, cnt, b, if l < total { l } else { total })
        }
        None => (0, 0, buf, total),
    };
    if untracked {
        match looks_like_mcp {
            Some(looks) => {
                if !looks {
                    return;
                }
            }
            None => {
                if !starts_like_json(first_buf, first_len) {
                    return;
                }
                let judged_fd = if ssl == 0 {
                    fd
                } else {
                    crate::hooks::tls::tls_judged_fd(ssl)
                };
                scanned_without_mcp(pid_tgid, judged_fd, dir);
            }
        }
    }
    let start_ns = if who.start_ns != 0 {
        who.start_ns
    } else {
        current_start_ns(cfg)
    };
    let Some(t) = TRANSFER.get_ptr_mut(0) else { return };
    // SAFETY: t is this CPU's TRANSFER slot from the lookup above, valid for
    // a Transfer (maps.rs NOTE); tail_call never returns on success, and on
    // failure returns to the DropTailCall count below.
    unsafe {
        Transfer {
            pid_tgid,
            start_ns,
            buf,
            total,
            iov,
            iov_cnt,
            first_buf,
            first_len,
            ssl,
            fd,
            syscall: syscall as u8,
            direction: dir as u8,
            discovered: 0,
            _pad3: 0,
            extra_flags,
            pieces: 0,
            relook: 0,
            gap: 0,
            // Set by the capture stage once it knows the inode (before
            // any chunk is sent).
            key: StreamKey::new((pid_tgid >> 32) as u32, fd, 0, dir as u8),
            // A vectored transfer starts with an empty range and all its
            // bytes in the iovecs.
            range_buf: if iov_cnt == 0 { buf } else { 0 },
            range_len: if iov_cnt == 0 { total } else { 0 },
            iov_next: 0,
            _pad2: 0,
            iov_left: if iov_cnt == 0 { 0 } else { total },
        }
        .store(t);
        jump.tail_call(
            ctx,
            if untracked {
                jump_slot::DISCOVER
            } else {
                jump_slot::CAPTURE
            },
        );
    }
    // Only reached when the tail call failed.
    count(Counter::DropTailCall, 1);
}

/// Longest run of transfers of a stream found not MCP that pass unread.
const MAX_SKIP: u8 = 63;

/// The same for a stream whose looks pass the 16-byte check (JSON or an
/// HTTP head that carries no MCP: JSON logs, a web server's requests):
/// each of its looks pays the discovery scan of up to 1 KiB (~0.7 µs for
/// a 200-byte log line), not only the 16-byte read, so at 1 in 64 a
/// JSON-log pipe cost ~10 ns more per line than a text pipe.
const MAX_SKIP_SCANNED: u8 = 255;

/// Looks at a stream before any transfer is let pass unread.
const ALWAYS_LOOKED_AT: u32 = 8;

/// A stream without a transfer for this many timer ticks is looked at
/// afresh on its next transfers: 100 ms at HZ=250 (Debian's kernels),
/// 25 ms at HZ=1000, 250 ms at most (HZ=100).
/// Ticks, not `bpf_ktime_get_ns`: reading the clock cost more than the rest
/// of an unread transfer (a `jiffies` load is all this costs).
const QUIET_TICKS: u64 = 25;

/// `JUDGED` key of a descriptor of the current process, one direction.
#[inline(always)]
pub(crate) fn judged_key(pid_tgid: u64, fd: i32, dir: Direction) -> u64 {
    (pid_tgid & 0xffff_ffff_0000_0000) | ((fd as u32 as u64 & 0x7fff_ffff) << 1) | (dir as u64 & 1)
}

/// `JUDGED` slot of a key.
#[inline(always)]
pub(crate) fn judged_slot(key: u64) -> u32 {
    hashed_slot(key, JUDGED_SLOTS)
}

/// Whether to let this transfer of an untracked stream pass without
/// looking at it (neither its first bytes read nor the discovery scan);
/// bookkeeping for the next one.
///
/// Every read and write of every untracked process on the host comes
/// here (most only as far as [`passes_unread`], from the syscall hooks),
/// so this is what keeps the agent's price for non-MCP work (a
/// redis socket, a log pipe, `dd`) near that of the hooks themselves: the
/// 16-byte read of the first bytes costs more than everything else an
/// untracked call does. A process stays untracked until a look finds MCP,
/// so every look this remembers found none. The first [`ALWAYS_LOOKED_AT`]
/// transfers of a stream (and of one that was quiet for [`QUIET_TICKS`]) are
/// always looked at, so a first message in pieces, or a few log lines
/// before it, cannot hide it; after that the looks thin out (1 in 2, 1 in
/// 4, ... down to 1 in 64): a busy pipe or socket without MCP pays the read
/// once in 64 transfers, and MCP that follows a burst of other traffic on
/// the same stream is found within 64 transfers, at once after a pause, or
/// by its peer's reply on the other stream. A stream whose looks find
/// JSON or HTTP without MCP, and so pay the discovery scan, goes on to 1 in
/// 256 ([`scanned_without_mcp`]), and MCP after a burst of it is found
/// within 256 transfers. The key is the descriptor
/// number: a descriptor reused for another file inherits at most that many
/// unread transfers. OpenSSL's probes key a connection by its `SSL` object
/// instead (`hooks::tls::tls_judged_fd`), forgotten at `SSL_free` and
/// `SSL_set_fd`; they count calls that moved bytes for reads and every call
/// for writes (decided at entry, before the outcome is known). Skips are
/// counted (`DiscoveryDeferred`, `TlsDiscoveryDeferred`) in batches, by
/// [`deferred`]. Two CPUs writing one slot at once can leave a mixed
/// entry: at worst one stream's transfers pass unread on another's count,
/// up to 255 of them; and the counts are not exact under such races (two
/// threads of a process that reach a look on one descriptor at once can
/// both count its last batch; a decrement lost to another CPU's lets a
/// transfer pass uncounted): there are no atomic exchanges on 5.10.
#[inline(always)]
pub(crate) fn looked_at_recently(pid_tgid: u64, fd: i32, dir: Direction) -> bool {
    let (key, now, j) = judged_entry(pid_tgid, fd, dir);
    // SAFETY: j points at the array's entry, valid for a Judgement (plain
    // integers, any bit pattern valid); concurrent writers are covered above.
    unsafe {
        if take_skip(key, now, j) {
            return true;
        }
        if (*j).key == key && now.wrapping_sub((*j).last_tick) < QUIET_TICKS {
            // Quiet means no transfer at all, skipped ones included.
            (*j).last_tick = now;
            // A look: the batch is spent (or a look on another CPU granted
            // a new one since `take_skip`, which this one replaces).
            // Every skip the last look granted has passed: counted once
            // the entry holds the next batch, which narrows the window in
            // which another CPU's look counts the same batch.
            let passed = (*j).skips_granted;
            let looks = (*j).looks + 1;
            (*j).looks = looks;
            let skips = if looks < ALWAYS_LOOKED_AT {
                0
            } else if looks >= ALWAYS_LOOKED_AT + 5 {
                if (*j).scanned != 0 {
                    MAX_SKIP_SCANNED
                } else {
                    MAX_SKIP
                }
            } else {
                (1u8 << (looks - ALWAYS_LOOKED_AT + 1)) - 1
            };
            (*j).skip_left = skips;
            (*j).skips_granted = skips;
            // This look's own outcome is for the next one to read.
            (*j).scanned = 0;
            deferred(key, passed);
            return false;
        }
        // The slot's stream (this one, after a quiet spell, or another)
        // is given up: count the skips that passed.
        let (given_up, passed) = ((*j).key, take_passed_skips(j));
        (*j).key = key;
        (*j).last_tick = now;
        (*j).scanned = 0;
        (*j).looks = 1;
        deferred(given_up, passed);
    }
    false
}

/// The skip of [`looked_at_recently`] alone: true, with the stream's
/// batch one shorter, when its slot holds the stream, not quiet, with
/// skips left; otherwise false, and nothing is written. The syscall hooks
/// settle most reads and writes of untracked processes with this and the
/// thread's entry alone (`threads::Caller::passes`): a transfer it lets
/// pass is one `looked_at_recently` would have let pass.
#[inline(always)]
pub(crate) fn passes_unread(pid_tgid: u64, fd: i32, dir: Direction) -> bool {
    let (key, now, j) = judged_entry(pid_tgid, fd, dir);
    // SAFETY: j is the key's entry of `JUDGED`.
    unsafe { take_skip(key, now, j) }
}

/// The `JUDGED` key of a descriptor of the current process in one
/// direction, the clock in timer ticks, and the key's entry.
#[inline(always)]
fn judged_entry(pid_tgid: u64, fd: i32, dir: Direction) -> (u64, u64, *mut Judgement) {
    let key = judged_key(pid_tgid, fd, dir);
    // SAFETY: bpf_jiffies64 takes no arguments.
    let now = unsafe { bpf_jiffies64() };
    (key, now, judgement(judged_slot(key)))
}

/// Lets a transfer of the stream of key `key` pass, at tick `now`, if its
/// entry `j` holds it, not quiet, with skips left: the batch one shorter.
///
/// # Safety
/// `j` must point at an entry of `JUDGED` (plain integers, any bit
/// pattern valid; concurrent writers as in [`looked_at_recently`]).
#[inline(always)]
unsafe fn take_skip(key: u64, now: u64, j: *mut Judgement) -> bool {
    // SAFETY: the caller's.
    unsafe {
        if (*j).key == key && now.wrapping_sub((*j).last_tick) < QUIET_TICKS && (*j).skip_left > 0 {
            // Quiet means no transfer at all, skipped ones included.
            (*j).last_tick = now;
            (*j).skip_left -= 1;
            return true;
        }
    }
    false
}

/// The skips of entry `j`'s batch that have passed; the entry is left
/// with no batch, so nothing counts them again.
///
/// # Safety
/// `j` must point at an entry of `JUDGED`.
#[inline(always)]
unsafe fn take_passed_skips(j: *mut Judgement) -> u8 {
    // SAFETY: the caller's; plain integers, any bit pattern valid (a
    // mixed entry gives at worst a count off by one batch).
    unsafe {
        let passed = (*j).skips_granted.saturating_sub((*j).skip_left);
        (*j).skips_granted = 0;
        (*j).skip_left = 0;
        passed
    }
}

/// Counts `n` transfers of the stream of `JUDGED` key `key` that
/// [`looked_at_recently`] let pass unread: `TlsDiscoveryDeferred` for a
/// TLS connection's key (`hooks::tls::tls_judged_fd`), `DiscoveryDeferred`
/// for a descriptor's.
///
/// In batches, not one by one: the count of a passed skip would be the
/// only other map access of the skip (on kernels before 6.10 a helper
/// call, per-CPU lookups not being inlined there), on every read and write
/// of a busy stream without MCP. A batch is counted at the stream's next
/// look, when its slot goes to another stream or to the same one after a
/// quiet spell, and when it is forgotten (close, dup2/dup3, exec;
/// `SSL_free`, `SSL_set_fd`). The counters trail the skips by the part of
/// a batch that passed, at most 255, for each stream whose slot still
/// holds one: a stream in the middle of one, and a stream that ended
/// without being forgotten (its process exited, or became tracked) until
/// another takes its slot.
#[inline(always)]
pub(crate) fn deferred(key: u64, n: u8) {
    if n == 0 {
        return;
    }
    // Bit 30 of the descriptor, shifted by judged_key's direction bit.
    let counter = if key & (1 << 31) != 0 {
        Counter::TlsDiscoveryDeferred
    } else {
        Counter::DiscoveryDeferred
    };
    count(counter, n as u64);
}

/// A look that [`looked_at_recently`] allowed found bytes that start like
/// JSON (or an HTTP head), so the discovery scan runs: the stream's next
/// look, once the stream is at its longest interval, sets
/// [`MAX_SKIP_SCANNED`] instead of [`MAX_SKIP`]. Had the scan found MCP,
/// the process would be tracked and no longer come here. Costs an array
/// load, on looks only.
///
/// Only a flag is set, and only the next look of the slot's stream reads
/// it: a stream that took the slot between the key check and the store
/// (another descriptor with the same hash) finds the flag on its second
/// look, still one of its first [`ALWAYS_LOOKED_AT`], which ignores and
/// clears it. Setting the interval here instead could give that fresh
/// stream 255 unread transfers before its first looks.
#[inline(always)]
pub(crate) fn scanned_without_mcp(pid_tgid: u64, fd: i32, dir: Direction) {
    let key = judged_key(pid_tgid, fd, dir);
    let j = judgement(judged_slot(key));
    // SAFETY: j points at the array's entry, valid for a Judgement (plain
    // integers); a racing writer is covered above.
    unsafe {
        if (*j).key == key {
            (*j).scanned = 1;
        }
    }
}

/// Forgets what `looked_at_recently` kept about descriptor `fd` of the
/// current process, both directions: it was closed (or replaced), and its
/// number will name another file.
#[inline(always)]
pub(crate) fn forget_judged(pid_tgid: u64, fd: i32) {
    for dir in [Direction::Ingress, Direction::Egress] {
        let key = judged_key(pid_tgid, fd, dir);
        let j = judgement(judged_slot(key));
        // SAFETY: j points at the array's entry, valid for a Judgement; a
        // racing writer can at worst leave a stale entry, within the
        // bounds of `looked_at_recently`. Key 0 is nobody's (tgid 0 never
        // runs user code).
        unsafe {
            if (*j).key == key {
                let passed = take_passed_skips(j);
                (*j).key = 0;
                deferred(key, passed);
            }
        }
    }
}

/// Forgets what is known of the first [`FORGOTTEN_AT_EXEC`] descriptors
/// of the current process (`JUDGED` only with `discovery` on, and
/// `KNOWN_FILES`): at exec, close-on-exec descriptors close without
/// `close`, and the new program reuses their numbers.
#[inline(always)]
pub(crate) fn forget_descriptors_at_exec(pid_tgid: u64, discovery: bool) {
    let mut fd = 0;
    while fd < FORGOTTEN_AT_EXEC {
        if discovery {
            forget_judged(pid_tgid, fd);
        }
        forget_known_file(pid_tgid, fd);
        fd += 1;
    }
}

/// Descriptors forgotten at exec: the numbers a program opens first.
const FORGOTTEN_AT_EXEC: i32 = 64;

/// A discovery stage's verdict "this is MCP": mark the transfer and go
/// on to the capture stage.
#[inline(always)]
pub(crate) fn discovered<C: EbpfContext>(ctx: &C, jump: &ProgramArray, t: *mut Transfer) -> u32 {
    // SAFETY: every caller passes this CPU's TRANSFER slot from a successful
    // lookup; tail_call never returns on success, a failure is counted below.
    unsafe {
        (*t).discovered = 1;
        jump.tail_call(ctx, jump_slot::CAPTURE);
    }
    count(Counter::DropTailCall, 1);
    0
}

/// Bytes of the window `discover` copied to the scratch area, for the
/// later stages (masked for the verifier; check `1..=MAX_DISCOVERY_WINDOW`).
#[inline(always)]
pub(crate) fn copied_window_len(cfg: &KernelConfig, first_len: u64) -> usize {
    let mut n = cfg.discovery_window as u64;
    if n > first_len {
        n = first_len;
    }
    (n as usize) & (MAX_DISCOVERY_WINDOW * 2 - 1)
}
