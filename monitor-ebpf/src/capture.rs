//! The capture stage of the syscall path: the stream's state in `STREAMS`
//! (capture, ignore, look again) and the chunk header of what is sent.

use crate::hooks::SyscallContext;
use crate::{
    emit::{emit_rest, fill_chunk_header, ring_flags, scratch, Scratch, HDR},
    kernel_read::conn_tuple,
    known_files::known_file_info,
    maps::{
        config, count, SocketRef, Transfer, EVENTS, EXIT_JUMP, FEXIT_JUMP, FEXIT_NET_JUMP, LAST_TCP_READ, STREAMS,
        TRANSFER,
    },
    payload::starts_like_json,
    tracking::track,
};
use aya_ebpf::macros::{btf_tracepoint, fexit};
use aya_ebpf::maps::ProgramArray;
use aya_ebpf::programs::FExitContext;
use aya_ebpf::EbpfContext;
use monitor_common::{
    chunk_flags, config_flags, jump_slot, stream_state, ChunkRecord, Counter, Direction, FdKind, KernelConfig,
    RecordKind, StreamKey, Syscall, TrackReason,
};

/// Tail-call target of `sys_exit`: [`capture_stage`].
#[btf_tracepoint]
pub fn exit_capture(ctx: SyscallContext) -> i32 {
    capture_stage(&ctx, &EXIT_JUMP)
}

/// Tail-call target of the syscall fexit hooks: [`capture_stage`] (the
/// context is laid out as the tracepoint's, `regs` then the return value;
/// an fexit program must return 0).
#[fexit]
pub fn fexit_capture(ctx: FExitContext) -> i32 {
    capture_stage(&SyscallContext::new(ctx.as_ptr()), &FEXIT_JUMP);
    0
}

/// [`fexit_capture`] for the network calls' fexit hooks (`FEXIT_NET_JUMP`).
#[fexit]
pub fn fexit_net_capture(ctx: FExitContext) -> i32 {
    capture_stage(&SyscallContext::new(ctx.as_ptr()), &FEXIT_NET_JUMP);
    0
}

/// Classify the descriptor, consult the stream decision, and send a chunk
/// (ingress) or a writer notice (egress).
#[inline(always)]
fn capture_stage(ctx: &SyscallContext, jump: &ProgramArray) -> i32 {
    let Some(cfg) = config() else { return 0 };
    let Some(tp) = TRANSFER.get(0) else { return 0 };
    let t = *tp;
    let Some(scratch) = scratch() else { return 0 };
    // A transfer under way already has its header in the scratch area.
    if t.pieces == 0 {
        match capture_header(cfg, scratch, &t) {
            Header::Send => {}
            Header::Skip => return 0,
            Header::Relook => return relook(ctx, jump) as i32,
        }
    }
    emit_rest(ctx, jump, cfg, scratch, header_flags(scratch));
    0
}

/// Keeps the stream's key in the transfer (for `mark_gap`); after a lost
/// chunk (`AFTER_GAP`), flags the first chunk of this transfer (through
/// `Transfer::gap`, in memory: flags in a register would double the
/// verifier's walk of `emit_rest`) and puts the stream back to plain
/// capture.
#[inline(always)]
pub(crate) fn keep_stream(key: &StreamKey, state: u8) {
    let Some(t) = TRANSFER.get_ptr_mut(0) else { return };
    // SAFETY: t is this CPU's TRANSFER slot from the lookup above, valid for
    // a Transfer; the caller holds only a copy, no reference into the slot.
    unsafe { (*t).key = *key };
    if state == stream_state::AFTER_GAP {
        if STREAMS.insert(key, &stream_state::CAPTURE, 0).is_err() {
            count(Counter::DropStreamMapFull, 1);
        }
        // SAFETY: same slot as above.
        unsafe { (*t).gap = chunk_flags::GAP_BEFORE };
    }
}

/// No entry in `STREAMS` (no `stream_state` value is 0).
pub(crate) const NO_STATE: u8 = 0;

/// The decision stored for stream `key`, [`NO_STATE`] for none.
#[inline(always)]
pub(crate) fn stream_state_of(key: &StreamKey) -> u8 {
    // 0 for none: an `Option<u8>` lets LLVM carry an undefined payload
    // register along the `None` path, which the verifier refuses to read.
    // SAFETY: the u8 is copied out at once; a concurrent update or LRU
    // eviction of the entry can at worst give a stale state.
    unsafe { STREAMS.get(key) }.copied().unwrap_or(NO_STATE)
}

/// The flag telling userspace why process `tgid` is captured; a transfer
/// that discovery found MCP in marks its process tracked.
#[inline(always)]
pub(crate) fn tracking_flags(t: &Transfer, tgid: u32) -> u8 {
    if t.relook == 0 && t.discovered != 0 {
        count(Counter::DiscoveryHits, 1);
        track(tgid, t.start_ns, TrackReason::Discovered);
        chunk_flags::DISCOVERED
    } else {
        // Tracked already (a re-look keeps the process's reason).
        chunk_flags::TRACKED
    }
}

/// Starts capturing stream `key` if it has no decision yet (`NEW_STREAM`
/// in the returned flags), and keeps it in the transfer.
#[inline(always)]
pub(crate) fn open_stream(key: &StreamKey, state: u8) -> u8 {
    let mut flags = 0;
    if state == NO_STATE {
        flags = chunk_flags::NEW_STREAM;
        if STREAMS.insert(key, &stream_state::CAPTURE, 0).is_err() {
            count(Counter::DropStreamMapFull, 1);
        }
    }
    keep_stream(key, state);
    flags
}

/// What the first run of a capture stage decided for the transfer.
pub(crate) enum Header {
    /// The header is in the scratch area: send the payload.
    Send,
    /// Nothing (more) to send.
    Skip,
    /// An ignored stream's transfer that starts like MCP: run the
    /// discovery stages on it; a hit comes back resumed.
    Relook,
}

/// No stream is judged for good by what came first (a banner, an OAuth
/// discovery request, a throwaway request sent to blind us): a transfer of
/// an ignored stream that starts like MCP goes through discovery again.
/// Costs one 16-byte read per transfer of an ignored stream of a tracked
/// process, and the discovery scan for those that start with `{`, `[`,
/// `POST ` or `HTTP/1.`.
#[inline(always)]
pub(crate) fn relook<C: EbpfContext>(ctx: &C, jump: &ProgramArray) -> u32 {
    let Some(t) = TRANSFER.get_ptr_mut(0) else { return 0 };
    count(Counter::Relooks, 1);
    // SAFETY: t is this CPU's TRANSFER slot from the lookup above; tail_call
    // never returns on success, and on failure returns to the count below.
    unsafe {
        (*t).relook = 1;
        jump.tail_call(ctx, jump_slot::DISCOVER);
    }
    count(Counter::DropTailCall, 1);
    0
}

/// The decision for an ignored stream `key`: skip the transfer, look at it
/// again, or (discovery found MCP in it) capture the stream again from
/// here, and its other direction from its next transfer.
#[inline(always)]
pub(crate) fn ignored_stream(key: &StreamKey, t: &Transfer) -> Header {
    if t.discovered == 0 {
        if t.relook == 0 && starts_like_json(t.first_buf, t.first_len) {
            return Header::Relook;
        }
        return Header::Skip;
    }
    count(Counter::Resumed, 1);
    if STREAMS.insert(key, &stream_state::CAPTURE, 0).is_err() {
        count(Counter::DropStreamMapFull, 1);
    }
    let other = StreamKey {
        direction: if key.direction == Direction::Ingress as u8 {
            Direction::Egress as u8
        } else {
            Direction::Ingress as u8
        },
        ..*key
    };
    // SAFETY: the u8 is copied out at once; a concurrent update or LRU
    // eviction of the entry can at worst give a stale state.
    if unsafe { STREAMS.get(&other) }.copied() == Some(stream_state::IGNORE) {
        let _ = STREAMS.remove(&other);
    }
    Header::Send
}

/// The flags to send the rest of a transfer with: those of the header in
/// the scratch area, without the per-chunk ones. One `emit_rest` per stage,
/// fed from memory, keeps the verifier to one walk of it (two call sites,
/// with flags it knew as constants, doubled `capture`'s cost).
#[inline(always)]
pub(crate) fn header_flags(scratch: Scratch) -> u8 {
    let scratch = scratch.ptr();
    // SAFETY: callers pass scratch(): 8-aligned map memory of >= HDR bytes,
    // and any bit pattern is a valid ChunkRecord.
    let rec = unsafe { &*(scratch as *const ChunkRecord) };
    rec.flags & !(chunk_flags::TRUNCATED | chunk_flags::COPY_FAILED)
}

/// First run of `capture` for a transfer: classify the descriptor, apply
/// the stream decision, send the writer notice of a local write, or fill
/// the chunk header for the payload.
#[inline(always)]
pub(crate) fn capture_header(cfg: &KernelConfig, scratch: Scratch, t: &Transfer) -> Header {
    let scratch = scratch.ptr();
    let (Some(syscall), Some(dir)) = (Syscall::from_u8(t.syscall), Direction::from_u8(t.direction)) else {
        return Header::Skip;
    };
    let pid_tgid = t.pid_tgid;
    let tgid = (pid_tgid >> 32) as u32;
    let fd = t.fd;
    let Some(fi) = known_file_info(cfg, pid_tgid, t.start_ns, fd, dir) else {
        return Header::Skip;
    };
    let tcp = matches!(fi.kind, FdKind::Tcp4 | FdKind::Tcp6);
    if tcp && dir == Direction::Ingress {
        // TLS over memory BIOs (asyncio, node): the socket is read, then
        // SSL_read runs on the same thread; this names the socket of an
        // SSL object that was never given one through SSL_set_fd.
        let last = SocketRef {
            fd,
            _pad: 0,
            inode: fi.inode,
        };
        let _ = LAST_TCP_READ.insert(&pid_tgid, &last, 0);
    }
    if !(fi.kind.is_local_ipc() || (tcp && cfg.flags & config_flags::CAPTURE_TCP != 0)) {
        return Header::Skip;
    }
    let key = StreamKey::new(tgid, fd, fi.inode, dir as u8);
    let state = stream_state_of(&key);
    let mut flags = 0u8;
    if state == stream_state::IGNORE_QUIET {
        return Header::Skip;
    }
    if state == stream_state::IGNORE {
        // A local write's notice is for a stream userspace has not judged.
        if dir == Direction::Egress && !tcp {
            return Header::Skip;
        }
        match ignored_stream(&key, t) {
            Header::Send => flags |= chunk_flags::RESUMED | chunk_flags::NEW_STREAM,
            other => return other,
        }
    }
    flags |= tracking_flags(t, tgid);

    if dir == Direction::Egress && !tcp {
        // Local IPC writes: one notice per stream, no payload (captured
        // where it is read).
        if state != NO_STATE {
            return Header::Skip;
        }
        if STREAMS.insert(&key, &stream_state::WRITER_NOTIFIED, 0).is_err() {
            count(Counter::DropStreamMapFull, 1);
        }
        // SAFETY: scratch is this CPU's SCRATCH value (the caller passes
        // scratch()): 8-aligned, >= HDR bytes, any bit pattern valid.
        let rec = unsafe { &mut *(scratch as *mut ChunkRecord) };
        fill_chunk_header(
            rec,
            RecordKind::WriterNotice,
            pid_tgid,
            t.start_ns,
            fd,
            syscall,
            dir,
            &fi,
            flags | chunk_flags::NEW_STREAM,
        );
        rec.orig_len = t.total;
        // SAFETY: HDR <= SCRATCH_SIZE initialized bytes of the scratch value;
        // `rec` is not used after this shared view is made.
        let data = unsafe { core::slice::from_raw_parts(scratch as *const u8, HDR) };
        if EVENTS.output::<[u8]>(data, ring_flags(HDR as u64)).is_err() {
            count(Counter::DropRingFull, 1);
            // Not sent: the stream's next write sends it again, or the
            // reader's messages would never learn their writer.
            let _ = STREAMS.remove(&key);
        } else {
            count(Counter::Records, 1);
        }
        return Header::Skip;
    }

    flags |= open_stream(&key, state);

    // SAFETY: as above: this CPU's SCRATCH value, 8-aligned, >= HDR bytes.
    let rec = unsafe { &mut *(scratch as *mut ChunkRecord) };
    fill_chunk_header(
        rec,
        RecordKind::Chunk,
        pid_tgid,
        t.start_ns,
        fd,
        syscall,
        dir,
        &fi,
        flags,
    );
    if tcp {
        rec.conn = conn_tuple(cfg, fi.channel, fi.kind);
    }
    Header::Send
}
