//! Writing records to the ring buffer: chunk headers and payload pieces
//! (continued by tail calls for large transfers) and process records.

use crate::{
    kernel_read::{verifier_bound, FileInfo},
    maps::{config, count, Transfer, EVENTS, SCRATCH, TRANSFER},
    transfer::{iovec, mark_gap},
};
use aya_ebpf::helpers::bpf_get_current_uid_gid;
use aya_ebpf::helpers::generated::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns,
    bpf_probe_read_user,
};
use aya_ebpf::maps::ProgramArray;
use aya_ebpf::EbpfContext;
use core::ffi::c_void;
use monitor_common::{
    chunk_flags, jump_slot, ChunkRecord, Counter, Direction, KernelConfig, ProcessRecord, RecordHeader, RecordKind,
    Syscall, ABI_VERSION, COMM_LEN, MAX_CAPTURE, MAX_IOVECS, SCRATCH_SIZE,
};

pub(crate) const HDR: usize = core::mem::size_of::<ChunkRecord>();

pub(crate) const BPF_RB_AVAIL_DATA: u64 = 0;

pub(crate) const BPF_RB_NO_WAKEUP: u64 = 1;

pub(crate) const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Ring-buffer output flags for a record of `size` bytes: wake the agent
/// when the bytes waiting cross a multiple of `wakeup_bytes`, not on every
/// record above it. While the agent is busy the ring stays above the mark,
/// and a wake-up per record (an `irq_work` and a self-IPI each: 8% of a
/// traced 4 KiB echo pair's CPU in a VM) bought nothing: the agent drains
/// until the ring is empty before it sleeps. Two CPUs that both miss a
/// crossing at once are caught at the next multiple, or by the agent's
/// poll interval.
#[inline(always)]
pub(crate) fn ring_flags(size: u64) -> u64 {
    let threshold = match config() {
        Some(c) if c.wakeup_bytes > 0 => c.wakeup_bytes as u64,
        _ => return 0,
    };
    let before = EVENTS.query(BPF_RB_AVAIL_DATA);
    // The ring counts each record's 8-byte header and its padding to 8.
    let size = (size + 8 + 7) & !7;
    if before / threshold != (before + size) / threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// This CPU's `SCRATCH` value: a chunk header and its payload area,
/// `SCRATCH_SIZE` bytes, 8-aligned, any bit pattern valid. Only
/// [`scratch`] makes one, so a function given a `Scratch` may read and
/// write inside those bytes (see the per-CPU NOTE in maps.rs).
#[derive(Clone, Copy)]
pub(crate) struct Scratch(*mut u8);

impl Scratch {
    /// The start of the value.
    #[inline(always)]
    pub(crate) fn ptr(self) -> *mut u8 {
        self.0
    }
}

#[inline(always)]
pub(crate) fn scratch() -> Option<Scratch> {
    // SAFETY: argument-less helper, nothing to uphold.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    match SCRATCH.get_ptr_mut(cpu) {
        Some(p) => Some(Scratch(p as *mut u8)),
        None => {
            count(Counter::DropNoScratch, 1);
            None
        }
    }
}

#[inline(always)]
pub(crate) fn fill_header(h: &mut RecordHeader, kind: RecordKind, pid_tgid: u64, start_ns: u64) {
    h.kind = kind as u16;
    h._reserved = 0;
    h.abi = ABI_VERSION;
    // SAFETY: argument-less helper, nothing to uphold.
    h.ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    h.tgid = (pid_tgid >> 32) as u32;
    h.tid = pid_tgid as u32;
    h.start_ns = start_ns;
    // Straight into the header: the library's wrapper zeroes a local
    // array first (a call to the byte-at-a-time memset) and copies it.
    // SAFETY: h.comm is COMM_LEN writable bytes; the helper fills them,
    // zero-padded, and zeroes them should it fail.
    unsafe { bpf_get_current_comm(h.comm.as_mut_ptr() as *mut c_void, COMM_LEN as u32) };
}

/// Fills the chunk header in the scratch area (payload fields excepted).
#[inline(always)]
pub(crate) fn fill_chunk_header(
    rec: &mut ChunkRecord,
    kind: RecordKind,
    pid_tgid: u64,
    start_ns: u64,
    fd: i32,
    syscall: Syscall,
    dir: Direction,
    fi: &FileInfo,
    flags: u8,
) {
    fill_header(&mut rec.header, kind, pid_tgid, start_ns);
    let ug = bpf_get_current_uid_gid();
    rec.uid = ug as u32;
    rec.gid = (ug >> 32) as u32;
    // SAFETY: argument-less helper, nothing to uphold.
    rec.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    rec.fd = fd;
    rec.syscall = syscall as u8;
    rec.direction = dir as u8;
    rec.fd_kind = fi.kind as u8;
    rec.flags = flags;
    rec.inode = fi.inode;
    // Volatile: for TLS both are constant 0, and LLVM would make the two
    // stores a call to memset (see `zero_words`).
    // SAFETY: plain u64 fields of `rec`.
    unsafe {
        core::ptr::write_volatile(&mut rec.channel, fi.channel);
        core::ptr::write_volatile(&mut rec.peer, fi.peer);
    }
    // orig_len, captured_len, segment and conn: the header's last seven
    // words, zeroed one store each (see `zero_words`).
    const TAIL: usize = core::mem::offset_of!(ChunkRecord, orig_len);
    const _: () = assert!(TAIL % 8 == 0 && HDR - TAIL == 56);
    // SAFETY: the seven words from orig_len are inside `rec` (asserted
    // just above) and 8-aligned (ChunkRecord is, and TAIL is a multiple of
    // 8); every bit pattern of those fields is valid.
    unsafe { zero_words(&mut rec.orig_len as *mut u64, 7) };
}

/// Zeroes the `n` words from `p` with one store each. LLVM merges a run of
/// zeroed fields (a struct literal's, a `Default`) into a call to the
/// byte-at-a-time `memset` the BPF linker provides: five instructions a
/// byte, 280 for a chunk header's tail on every traced read. Volatile
/// stores are never merged.
///
/// # Safety
/// `p` is 8-aligned and the `n` words from it are writable memory of the
/// program (stack or map value) that may hold any bit pattern.
#[inline(always)]
pub(crate) unsafe fn zero_words(p: *mut u64, n: usize) {
    for i in 0..n {
        // SAFETY: inside the caller's n words (see above).
        unsafe { core::ptr::write_volatile(p.add(i), 0) };
    }
}

/// Copies `len` bytes at user address `src` after the header already in
/// `scratch` and sends header + payload to userspace. A chunk the ring
/// buffer cannot take marks the next one of the transfer `GAP_BEFORE`
/// (`Transfer::gap`, kept in the map: a flag in a register would double
/// the verifier's states at every chunk), so userspace never joins the
/// bytes on both sides of the hole.
#[inline(always)]
pub(crate) fn emit_chunk(
    cfg: &KernelConfig,
    t: *mut Transfer,
    scratch: Scratch,
    src: u64,
    len: u64,
    segment: u32,
    flags: u8,
) {
    let scratch = scratch.ptr();
    // SAFETY: scratch is this CPU's SCRATCH value (callers pass scratch()):
    // 8-aligned, >= HDR bytes, and any bit pattern is a valid ChunkRecord.
    let rec = unsafe { &mut *(scratch as *mut ChunkRecord) };
    let mut cap = cfg.capture_cap as u64;
    if cap > MAX_CAPTURE as u64 {
        cap = MAX_CAPTURE as u64;
    }
    let mut n = len;
    let mut flags = flags;
    if n > cap {
        n = cap;
        flags |= chunk_flags::TRUNCATED;
        count(Counter::Truncated, 1);
    }
    // Keep the verifier's view of `n` bounded by the scratch payload area.
    let n = verifier_bound(n, MAX_CAPTURE as u64 * 2 - 1) as usize;
    if n > MAX_CAPTURE {
        return;
    }
    let mut copied = n;
    if n > 0 {
        // SAFETY: HDR < SCRATCH_SIZE, so scratch + HDR is inside the value.
        let dst = unsafe { scratch.add(HDR) } as *mut c_void;
        // SAFETY: n <= MAX_CAPTURE (checked above) fits the payload area
        // (SCRATCH_SIZE = HDR + MAX_CAPTURE); the helper checks src, no fault.
        if unsafe { bpf_probe_read_user(dst, n as u32, src as *const c_void) } != 0 {
            flags |= chunk_flags::COPY_FAILED;
            copied = 0;
            count(Counter::DropCopyFailed, 1);
        }
    }
    // Volatile: forwarded from the previous chunk's store, the gap would
    // be a value the verifier knows, and each chunk would double its walk.
    // SAFETY: t is this CPU's TRANSFER slot (emit_rest's successful lookup),
    // valid and aligned for a Transfer.
    rec.flags = flags | unsafe { core::ptr::read_volatile(&(*t).gap) };
    rec.orig_len = len;
    rec.captured_len = copied as u32;
    rec.segment = segment;
    let total = HDR + copied;
    if total > SCRATCH_SIZE {
        return;
    }
    // SAFETY: total <= SCRATCH_SIZE (checked above), initialized map memory;
    // `rec` is not used after this shared view is made.
    let data = unsafe { core::slice::from_raw_parts(scratch as *const u8, total) };
    // A new stream needs a verdict from userspace (capture or ignore): wake
    // it now rather than at its next poll, so rejected streams stop costing
    // anything within microseconds.
    let wake = if flags & chunk_flags::NEW_STREAM != 0 {
        BPF_RB_FORCE_WAKEUP
    } else {
        ring_flags(total as u64)
    };
    if EVENTS.output::<[u8]>(data, wake).is_err() {
        count(Counter::DropRingFull, 1);
        // SAFETY: t is this CPU's TRANSFER slot (see above).
        unsafe { (*t).gap = chunk_flags::GAP_BEFORE };
        // And the stream's next transfer, should this be its last chunk.
        mark_gap(t);
        return;
    }
    // SAFETY: t is this CPU's TRANSFER slot (see above).
    unsafe { (*t).gap = 0 };
    count(Counter::Records, 1);
    count(Counter::PayloadBytes, copied as u64);
}

/// Most tail calls back into the capture stage for one transfer. A
/// tail-call chain holds at most 33 programs; discovery uses up to four.
pub(crate) const MAX_PIECES: u8 = 24;

/// Sends what is left of the transfer, at most a capture cap per chunk:
/// the plain range first (one piece, then a tail call back into the
/// capture stage, `jump_slot::CAPTURE` of `jump`, for the rest of it), then the
/// iovecs from `iov_next`, small ones directly and a large one by making it
/// the range. A loop over pieces would not verify; the tail call gives each
/// piece a fresh program run. Should the chain end early, the rest of the
/// range goes out as one truncated chunk so userspace sees the gap.
#[inline(always)]
pub(crate) fn emit_rest<C: EbpfContext>(ctx: &C, jump: &ProgramArray, cfg: &KernelConfig, scratch: Scratch, flags: u8) {
    let Some(t) = TRANSFER.get_ptr_mut(0) else { return };
    // SAFETY: t is this CPU's TRANSFER slot from the lookup just above,
    // valid for a Transfer (maps.rs NOTE).
    let (buf, len, pieces) = unsafe { ((*t).range_buf, (*t).range_len, (*t).pieces) };
    let mut cap = cfg.capture_cap as u64;
    if cap > MAX_CAPTURE as u64 {
        cap = MAX_CAPTURE as u64;
    }
    // Only the first chunk of a transfer carries the stream flags.
    let later =
        flags & !(chunk_flags::NEW_STREAM | chunk_flags::DISCOVERED | chunk_flags::RESUMED | chunk_flags::GAP_BEFORE);
    let mut flags = flags;
    if len > 0 {
        if len > cap && cap > 0 && pieces < MAX_PIECES {
            emit_chunk(cfg, t, scratch, buf, cap, 0, flags);
            // SAFETY: scratch is this CPU's SCRATCH value (8-aligned, >= HDR
            // bytes), t its TRANSFER slot; tail_call never returns on success
            // and on failure falls through to the count below.
            unsafe {
                // The next run takes its flags from the header.
                (*(scratch.ptr() as *mut ChunkRecord)).flags = later;
                (*t).range_buf = buf + cap;
                (*t).range_len = len - cap;
                (*t).pieces = pieces + 1;
                jump.tail_call(ctx, jump_slot::CAPTURE);
            }
            // The chain ended early: the rest goes out cut (TRUNCATED),
            // which userspace treats as a hole after it anyway.
            count(Counter::DropTailCall, 1);
            emit_chunk(cfg, t, scratch, buf + cap, len - cap, 0, later);
            return;
        }
        emit_chunk(cfg, t, scratch, buf, len, 0, flags);
        // SAFETY: t is this CPU's TRANSFER slot (see above).
        unsafe { (*t).range_len = 0 };
        flags = later;
    }
    // SAFETY: t is this CPU's TRANSFER slot (see above).
    let (iov, iov_cnt, first) = unsafe { ((*t).iov, (*t).iov_cnt, (*t).iov_next) };
    // SAFETY: as above.
    let mut left = unsafe { (*t).iov_left };
    let mut k = 0u32;
    while k < MAX_IOVECS {
        let i = first + k;
        if left == 0 || i as u64 >= iov_cnt || i >= MAX_IOVECS {
            break;
        }
        let Some((b, l)) = iovec(iov, i) else { break };
        let n = if l < left { l } else { left };
        left -= n;
        if n > cap && cap > 0 && pieces < MAX_PIECES {
            // A large iovec becomes the range, sent in pieces from the next
            // run of the capture stage; the iovecs after it follow.
            // SAFETY: as for the tail call above: this CPU's TRANSFER slot and
            // SCRATCH value; a failed tail call falls through to the count.
            unsafe {
                (*t).range_buf = b;
                (*t).range_len = n;
                (*t).iov_next = i + 1;
                (*t).iov_left = left;
                (*t).pieces = pieces + 1;
                // Nothing sent yet in this run: the next one sends with
                // these flags.
                (*(scratch.ptr() as *mut ChunkRecord)).flags = flags;
                jump.tail_call(ctx, jump_slot::CAPTURE);
            }
            count(Counter::DropTailCall, 1);
            emit_chunk(cfg, t, scratch, b, n, i, flags);
            return;
        }
        if n > 0 {
            emit_chunk(cfg, t, scratch, b, n, i, flags);
            flags = later;
        }
        k += 1;
    }
    // SAFETY: t is this CPU's TRANSFER slot (see above).
    unsafe { (*t).iov_left = 0 };
    if left > 0 {
        count(Counter::IovecsSkipped, 1);
    }
}

#[inline(always)]
pub(crate) fn emit_process(
    kind: RecordKind,
    tgid: u32,
    start_ns: u64,
    parent_tgid: u32,
    parent_start_ns: u64,
    reason: u32,
) {
    let mut rec = ProcessRecord {
        header: RecordHeader {
            kind: 0,
            _reserved: 0,
            abi: 0,
            ts_ns: 0,
            tgid: 0,
            tid: 0,
            start_ns: 0,
            comm: [0; COMM_LEN],
        },
        parent_tgid,
        reason,
        parent_start_ns,
    };
    fill_header(&mut rec.header, kind, (tgid as u64) << 32 | tgid as u64, start_ns);
    if EVENTS
        .output::<ProcessRecord>(&rec, ring_flags(core::mem::size_of::<ProcessRecord>() as u64))
        .is_err()
    {
        count(Counter::DropRingFull, 1);
    } else {
        count(Counter::Records, 1);
    }
}
