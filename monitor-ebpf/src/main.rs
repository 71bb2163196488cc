//! Kernel programs of the MCP monitor.
//!
//! They decide *what* to capture and copy it out; everything else (framing,
//! JSON-RPC, sessions, detection) happens in userspace.
//!
//! Capture model:
//! - Local IPC (pipes, unix stream sockets): payload is captured where it is
//!   **read** (`sys_exit_*` of read/readv/recvfrom/recvmsg). The reader sees
//!   exactly the bytes that crossed, in pipe-sized pieces, so each byte is
//!   captured once and a blocking 1 MiB write is not truncated. Writers only
//!   send a payload-less writer notice, from `sys_enter_*`, i.e. before the
//!   bytes can reach any reader; userspace uses it to name the peer.
//! - Which processes: tracked ones (userspace selectors, inherited at fork,
//!   exe-name selector at exec, cgroup selector) and, without any
//!   configuration, any stream whose payload starts with a JSON object or
//!   array holding `"jsonrpc"` within the discovery window. A discovered
//!   process becomes tracked, so its other streams and its children are
//!   captured from their first byte. Userspace marks streams it rejects as
//!   ignored in `STREAMS`, after which they cost one map lookup.
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_task, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns,
            bpf_probe_read_kernel, bpf_probe_read_user,
        },
    },
    macros::{map, raw_tracepoint, tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext, TracePointContext},
    EbpfContext,
};
use monitor_common::{
    chunk_flags, config_flags, stream_state, ChunkRecord, ConnTuple, Counter, Direction, FdKind, KernelConfig,
    ProcState, ProcessRecord, RecordHeader, RecordKind, StreamKey, Syscall, TlsKey, TrackReason, ABI_VERSION,
    COMM_LEN, COUNTER_COUNT, MAX_CAPTURE, MAX_DISCOVERY_WINDOW, MAX_IOVECS, METHOD_ROOT_LEN, SCRATCH_SIZE,
    TLS_STREAM_FD,
};

#[map]
static CONFIG: Array<KernelConfig> = Array::with_max_entries(1, 0);

/// Records to userspace. Userspace sets the size at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// One chunk header + payload per CPU (userspace sets max_entries to the
/// number of possible CPUs). A plain array because per-CPU map values are
/// limited to 32 KiB.
#[map]
static SCRATCH: Array<[u8; SCRATCH_SIZE]> = Array::with_max_entries(1, 0);

/// Tracked processes by tgid.
#[map]
static PROCS: HashMap<u32, ProcState> = HashMap::with_max_entries(32768, 0);

/// Per-stream decisions (capture / ignore / writer notified). LRU: losing an
/// entry only means the stream is evaluated again.
#[map]
static STREAMS: LruHashMap<StreamKey, u8> = LruHashMap::with_max_entries(65536, 0);

/// Arguments of in-flight ingress syscalls, by pid_tgid: the buffer is only
/// filled when the call returns.
#[map]
static ARGS: HashMap<u64, SyscallArgs> = HashMap::with_max_entries(32768, 0);

/// Executable-name (comm) selectors, checked at exec.
#[map]
static COMM_SELECTORS: HashMap<[u8; COMM_LEN], u8> = HashMap::with_max_entries(256, 0);

/// First path segment of every MCP method (`tools`, `notifications`,
/// `initialize`...), NUL padded; filled by userspace from its method table.
#[map]
static METHOD_ROOTS: HashMap<[u8; METHOD_ROOT_LEN], u8> = HashMap::with_max_entries(64, 0);

/// cgroup v2 ids whose processes are captured.
#[map]
static CGROUP_SELECTORS: HashMap<u64, u8> = HashMap::with_max_entries(256, 0);

/// TCP ports (host order) whose servers (bind) and clients (connect) are
/// tracked: `capture.selectors.ports`.
#[map]
static PORT_SELECTORS: HashMap<u16, u8> = HashMap::with_max_entries(256, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// The transfer being processed on this CPU, handed from the entry
/// program to `discover` and `capture` through tail calls.
#[map]
static TRANSFER: PerCpuArray<Transfer> = PerCpuArray::with_max_entries(1, 0);

/// Tail-call targets. Splitting the work keeps each program small enough
/// for the verifier: the 1 KiB discovery scan is verified once, on its own,
/// instead of along every path of the capture code.
#[map]
static JUMP: ProgramArray = ProgramArray::with_max_entries(4, 0);
const JUMP_DISCOVER: u32 = 0;
const JUMP_CAPTURE: u32 = 1;
const JUMP_DISCOVER_HTTP: u32 = 2;
const JUMP_DISCOVER_JSONRPC: u32 = 3;

/// The same stages for TLS plaintext: tail calls only reach programs of the
/// caller's type, and the TLS entry points are uprobes.
#[map]
static TLS_JUMP: ProgramArray = ProgramArray::with_max_entries(4, 0);

/// Arguments of in-flight `SSL_read`/`SSL_write` calls, by pid_tgid.
#[map]
static TLS_ARGS: HashMap<u64, TlsArgs> = HashMap::with_max_entries(32768, 0);

/// The socket each `SSL` object reads and writes: announced by
/// `SSL_set_fd`, or inferred for memory-BIO users (asyncio, node) from the
/// TCP socket the thread last read. Removed at `SSL_free`.
#[map]
static TLS_FDS: LruHashMap<TlsKey, TlsBinding> = LruHashMap::with_max_entries(65536, 0);

/// The TCP socket each thread of a tracked process last read from.
#[map]
static LAST_TCP_READ: LruHashMap<u64, i32> = LruHashMap::with_max_entries(16384, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct TlsArgs {
    ssl: u64,
    buf: u64,
    /// Requested byte count (`num`).
    len: u64,
    /// `_ex` variants: where the library stores the byte count; else 0.
    out_len: u64,
    direction: u8,
    _pad: [u8; 7],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct TlsBinding {
    fd: i32,
    inferred: u32,
}

/// One read or write being looked at.
#[repr(C)]
#[derive(Clone, Copy)]
struct Transfer {
    pid_tgid: u64,
    start_ns: u64,
    /// Buffer for plain calls.
    buf: u64,
    /// Bytes moved (ingress) or requested (egress write/sendto).
    total: u64,
    /// iovec array and count for vectored calls (iov_cnt 0 otherwise).
    iov: u64,
    iov_cnt: u64,
    /// First segment, used for discovery.
    first_buf: u64,
    first_len: u64,
    /// TLS: address of the `SSL` object; 0 for system calls.
    ssl: u64,
    /// The descriptor (for TLS: the bound socket, or -1).
    fd: i32,
    syscall: u8,
    direction: u8,
    discovered: u8,
    /// Egress seen at syscall exit (TCP payloads, with the byte count the
    /// kernel accepted) rather than at entry (local IPC writer notices).
    at_exit: u8,
    /// Extra [`chunk_flags`] for the chunk (TLS_FD_INFERRED).
    extra_flags: u8,
    /// Tail calls back into the capture stage so far (see `emit_rest`).
    pieces: u8,
    /// The stream was ignored and this transfer went through the discovery
    /// stages again (see `Header::Relook`).
    relook: u8,
    /// `GAP_BEFORE` while the last chunk sent for this transfer was lost.
    gap: u8,
    /// The stream's key in `STREAMS`, set by the capture stage.
    key: StreamKey,
    /// What `emit_rest` has still to send: a plain range (the whole
    /// buffer of a plain call, or the rest of one large iovec), then for
    /// vectored calls the iovecs from `iov_next`, `iov_left` bytes in all.
    range_buf: u64,
    range_len: u64,
    iov_next: u32,
    _pad2: u32,
    iov_left: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SyscallArgs {
    /// Buffer, iovec array or msghdr, depending on `syscall`.
    buf: u64,
    /// Byte count, or iovec count for readv.
    len: u64,
    fd: i32,
    syscall: u8,
    _pad: [u8; 3],
}

const HDR: usize = core::mem::size_of::<ChunkRecord>();

const S_IFMT: u16 = 0o170000;
const S_IFIFO: u16 = 0o010000;
const S_IFSOCK: u16 = 0o140000;
const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u16 = 1;
const SOCK_SEQPACKET: u16 = 5;

// Offsets of the arguments in the syscall tracepoint records
// (`/sys/kernel/tracing/events/syscalls/sys_enter_read/format`).
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const EXIT_RET: usize = 16;

// ---------------------------------------------------------------- helpers

#[inline(always)]
fn count(counter: Counter, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(counter as u32) {
        // Per-CPU slot: no other writer can race with us.
        unsafe { *p += n };
    }
}

#[inline(always)]
fn config() -> Option<&'static KernelConfig> {
    CONFIG.get(0)
}

const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Ring-buffer output flags: wake the agent only when enough data waits.
#[inline(always)]
fn ring_flags() -> u64 {
    let threshold = match config() {
        Some(c) if c.wakeup_bytes > 0 => c.wakeup_bytes as u64,
        _ => return 0,
    };
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[inline(always)]
unsafe fn kread<T: Copy>(addr: u64) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    let r = bpf_probe_read_kernel(
        v.as_mut_ptr() as *mut c_void,
        core::mem::size_of::<T>() as u32,
        addr as *const c_void,
    );
    if r == 0 {
        Some(v.assume_init())
    } else {
        None
    }
}

#[inline(always)]
unsafe fn uread<T: Copy>(addr: u64) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    let r = bpf_probe_read_user(
        v.as_mut_ptr() as *mut c_void,
        core::mem::size_of::<T>() as u32,
        addr as *const c_void,
    );
    if r == 0 {
        Some(v.assume_init())
    } else {
        None
    }
}

/// Start time of the current *process*: the thread-group leader's. (The
/// current task may be any thread, and threads have their own start times.)
#[inline(always)]
fn current_start_ns(cfg: &KernelConfig) -> u64 {
    let o = &cfg.offsets;
    unsafe {
        let task = bpf_get_current_task();
        let leader = kread::<u64>(task + o.task_group_leader as u64).unwrap_or(0);
        let leader = if leader == 0 { task } else { leader };
        kread::<u64>(leader + o.task_start_boottime as u64).unwrap_or(0)
    }
}

/// Why `tgid` is tracked, or `TrackReason::None`.
#[inline(always)]
fn tracked_reason(cfg: &KernelConfig, tgid: u32, start_ns: u64) -> u32 {
    if let Some(st) = unsafe { PROCS.get(&tgid) } {
        // Entries made by userspace may not know the start time (0).
        if st.start_ns == 0 || st.start_ns == start_ns {
            return st.reason;
        }
    }
    if cfg.flags & config_flags::CGROUP_SELECTORS != 0 {
        let cg = unsafe { bpf_get_current_cgroup_id() };
        if unsafe { CGROUP_SELECTORS.get(&cg) }.is_some() {
            track(tgid, start_ns, TrackReason::CgroupSelector);
            return TrackReason::CgroupSelector as u32;
        }
    }
    TrackReason::None as u32
}

#[inline(always)]
fn track(tgid: u32, start_ns: u64, reason: TrackReason) {
    let st = ProcState {
        reason: reason as u32,
        _pad: 0,
        start_ns,
    };
    if PROCS.insert(&tgid, &st, 0).is_err() {
        count(Counter::DropProcMapFull, 1);
    }
}

/// True when the buffer starts like an MCP message: the first
/// non-whitespace byte opens a JSON object or array (stdio), or it starts an
/// HTTP POST or an HTTP/1.x response (MCP over HTTP). The cheap first filter
/// for untracked processes; `discover` then looks for `"jsonrpc"`.
#[inline(always)]
fn starts_like_json(buf: u64, len: u64) -> bool {
    // 32 bytes of room for at most 16 read: the mask after `black_box`
    // bounds the register actually passed to the helper (LLVM otherwise
    // compares one copy of `len` and passes another, unbounded one).
    let mut head = [0u8; 32];
    let n = if len < 16 { len } else { 16 };
    let n = core::hint::black_box(n) as u32 & 0x1f;
    if n == 0 || n > 16 {
        return false;
    }
    let r = unsafe { bpf_probe_read_user(head.as_mut_ptr() as *mut c_void, n, buf as *const c_void) };
    if r != 0 {
        return false;
    }
    if n >= 8
        && ((head[0] == b'P' && head[1] == b'O' && head[2] == b'S' && head[3] == b'T' && head[4] == b' ')
            || (head[0] == b'H'
                && head[1] == b'T'
                && head[2] == b'T'
                && head[3] == b'P'
                && head[4] == b'/'
                && head[5] == b'1'
                && head[6] == b'.'))
    {
        return true;
    }
    let mut i = 0usize;
    while i < 16 {
        if i as u32 >= n {
            return false;
        }
        let c = head[i];
        if c == b'{' || c == b'[' {
            return true;
        }
        if !(c == b' ' || c == b'\n' || c == b'\r' || c == b'\t') {
            return false;
        }
        i += 1;
    }
    false
}

/// `n & mask`, computed so that the mask reaches the verifier. Sizes passed
/// to `bpf_probe_read_user` are first clamped with `min`-like compares; LLVM
/// then finds a later mask and bound check redundant and drops them, and
/// what is left is a register-to-register `min`, from which verifiers
/// before 6.8 learn no bound (5.10 and 6.1 reject the program: "R2 min value
/// is negative"). `black_box` hides the value from LLVM, so the mask stays
/// on the very register passed on. Follow it with the `> MAX` check.
#[inline(always)]
fn verifier_bound(n: u64, mask: u64) -> u64 {
    core::hint::black_box(n) & mask
}

/// Copies up to the discovery window of the buffer into the scratch payload
/// area; returns the number of bytes copied (0 if too short or unreadable).
#[inline(always)]
fn copy_window(cfg: &KernelConfig, scratch: *mut u8, buf: u64, len: u64) -> usize {
    let mut n = cfg.discovery_window as u64;
    if n > MAX_DISCOVERY_WINDOW as u64 {
        n = MAX_DISCOVERY_WINDOW as u64;
    }
    if len < n {
        n = len;
    }
    if n < 9 {
        return 0;
    }
    let n = verifier_bound(n, MAX_DISCOVERY_WINDOW as u64 * 2 - 1) as u32;
    if n as usize > MAX_DISCOVERY_WINDOW {
        return 0;
    }
    let dst = unsafe { scratch.add(HDR) };
    if unsafe { bpf_probe_read_user(dst as *mut c_void, n, buf as *const c_void) } != 0 {
        return 0;
    }
    n as usize
}

/// Looks for the `"jsonrpc"` key in the `n` window bytes at the scratch
/// payload area. Keep this the last check before the tail call: every exit
/// of its loop is a separate verifier state, so little may follow it.
#[inline(always)]
fn window_has_jsonrpc(scratch: *mut u8, n: usize) -> bool {
    window_has_key(scratch, n, u64::from_be_bytes(*b"jsonrpc\""), b'"')
}

/// Looks for `text/event-stream` (as `n` + `t-stream`) in the window: MCP
/// clients accept it on every POST (Streamable HTTP), and the head of the
/// first request is often written before its JSON body.
#[inline(always)]
fn window_has_event_stream(scratch: *mut u8, n: usize) -> bool {
    window_has_key(scratch, n, u64::from_be_bytes(*b"t-stream"), b'n')
}

/// Looks for the nine bytes `first` + `key` in the window.
#[inline(always)]
fn window_has_key(scratch: *mut u8, n: usize, key: u64, first: u8) -> bool {
    let dst = unsafe { scratch.add(HDR) };
    // Rolling window over the last eight bytes; the ninth byte, the opening
    // quote, is the one shifted out. The loop body has no data-dependent
    // branch: a "found" branch per byte would give the verifier a new,
    // unprunable state per position (and the program would not load). The
    // match is accumulated arithmetically instead; `black_box` keeps LLVM
    // from turning the zero test back into a compare-and-branch.
    let mut window = 0u64;
    let mut found = 0u64;
    let mut i = 0usize;
    while i < MAX_DISCOVERY_WINDOW {
        if i >= n {
            break;
        }
        // SAFETY: i < n <= MAX_DISCOVERY_WINDOW < MAX_CAPTURE.
        let b = unsafe { *dst.add(i) };
        let out = window >> 56;
        window = (window << 8) | b as u64;
        let d = (window ^ key) | (out ^ first as u64);
        // Top bit of d | -d is set exactly when d != 0.
        let nonzero = core::hint::black_box(d | d.wrapping_neg()) >> 63;
        found |= nonzero ^ 1;
        i += 1;
    }
    found != 0
}

#[inline(always)]
fn is_ws(c: u8) -> bool {
    c == b' ' || c == b'\n' || c == b'\r' || c == b'\t'
}

/// Second discovery signature, for messages whose `"jsonrpc"` key comes
/// after a large `params` (the TypeScript SDK writes `{"method":...,
/// "params":...,"jsonrpc":"2.0"}`): an object whose first key is `"method"`
/// with a known MCP method root. Reads the window already copied to the
/// scratch area by `copy_window` (`n` valid bytes).
#[inline(always)]
fn starts_with_mcp_method(scratch: *mut u8, n: usize) -> bool {
    let p = unsafe { scratch.add(HDR) };
    // SAFETY (all reads): indices are masked below the window size, which
    // lies inside the scratch value.
    let at = |i: usize| -> u8 {
        if i < n {
            unsafe { *p.add(i & (MAX_DISCOVERY_WINDOW - 1)) }
        } else {
            0
        }
    };
    let mut i = 0usize;
    let mut k = 0;
    while k < 8 && is_ws(at(i)) {
        i += 1;
        k += 1;
    }
    if at(i) != b'{' {
        return false;
    }
    i += 1;
    k = 0;
    while k < 8 && is_ws(at(i)) {
        i += 1;
        k += 1;
    }
    let key = b"\"method\"";
    let mut j = 0;
    while j < key.len() {
        if at(i + j) != key[j] {
            return false;
        }
        j += 1;
    }
    i += key.len();
    k = 0;
    while k < 8 && is_ws(at(i)) {
        i += 1;
        k += 1;
    }
    if at(i) != b':' {
        return false;
    }
    i += 1;
    k = 0;
    while k < 8 && is_ws(at(i)) {
        i += 1;
        k += 1;
    }
    if at(i) != b'"' {
        return false;
    }
    i += 1;
    let mut root = [0u8; METHOD_ROOT_LEN];
    let mut j = 0;
    while j < METHOD_ROOT_LEN {
        let c = at(i + j);
        if c == b'/' || c == b'"' {
            break;
        }
        if c == 0 || c == b'\\' {
            return false;
        }
        root[j] = c;
        j += 1;
    }
    if j == 0 || j == METHOD_ROOT_LEN {
        return false;
    }
    unsafe { METHOD_ROOTS.get(&root) }.is_some()
}

/// What a file descriptor refers to.
#[derive(Clone, Copy)]
struct FileInfo {
    kind: FdKind,
    inode: u64,
    channel: u64,
    peer: u64,
}

/// Walks `current->files->fdt->fd[fd]` to classify the descriptor.
#[inline(always)]
fn file_info(cfg: &KernelConfig, fd: i32, dir: Direction) -> Option<FileInfo> {
    if fd < 0 {
        return None;
    }
    let o = &cfg.offsets;
    let r = unsafe {
        let task = bpf_get_current_task();
        let files: u64 = kread(task + o.task_files as u64)?;
        let fdt: u64 = kread(files + o.files_fdt as u64)?;
        let max_fds: u32 = kread(fdt + o.fdt_max_fds as u64)?;
        if fd as u32 >= max_fds {
            return None;
        }
        let fd_array: u64 = kread(fdt + o.fdt_fd as u64)?;
        let file: u64 = kread(fd_array + (fd as u64) * 8)?;
        if file == 0 {
            return None;
        }
        let inode: u64 = kread(file + o.file_inode as u64)?;
        let mode: u16 = kread(inode + o.inode_mode as u64)?;
        let ino: u64 = kread(inode + o.inode_ino as u64)?;
        match mode & S_IFMT {
            S_IFIFO => Some(FileInfo {
                kind: FdKind::Pipe,
                inode: ino,
                channel: ino,
                peer: 0,
            }),
            S_IFSOCK => {
                let sock: u64 = kread(file + o.file_private_data as u64)?;
                let stype: u16 = kread(sock + o.socket_type as u64)?;
                let sk: u64 = kread(sock + o.socket_sk as u64)?;
                let family: u16 = kread(sk + o.sock_family as u64)?;
                if family == AF_UNIX && (stype == SOCK_STREAM || stype == SOCK_SEQPACKET) {
                    let peer: u64 = kread(sk + o.unix_peer as u64)?;
                    let channel = match dir {
                        Direction::Ingress => sk,
                        Direction::Egress => peer,
                    };
                    Some(FileInfo {
                        kind: FdKind::UnixStream,
                        inode: ino,
                        channel,
                        peer,
                    })
                } else if (family == AF_INET || family == AF_INET6) && stype == SOCK_STREAM {
                    let kind = if family == AF_INET { FdKind::Tcp4 } else { FdKind::Tcp6 };
                    Some(FileInfo {
                        kind,
                        inode: ino,
                        channel: sk,
                        peer: 0,
                    })
                } else {
                    Some(FileInfo {
                        kind: FdKind::Other,
                        inode: ino,
                        channel: 0,
                        peer: 0,
                    })
                }
            }
            _ => Some(FileInfo {
                kind: FdKind::Other,
                inode: ino,
                channel: 0,
                peer: 0,
            }),
        }
    };
    if r.is_none() {
        count(Counter::FdLookupFailed, 1);
    }
    r
}

/// Endpoints of the TCP socket `sk` (a `struct sock`).
#[inline(always)]
fn conn_tuple(cfg: &KernelConfig, sk: u64, kind: FdKind) -> ConnTuple {
    let o = &cfg.offsets;
    let mut t = ConnTuple::default();
    unsafe {
        t.local_port = kread::<u16>(sk + o.sock_num as u64).unwrap_or(0);
        t.remote_port = u16::from_be(kread::<u16>(sk + o.sock_dport as u64).unwrap_or(0));
        if kind == FdKind::Tcp4 {
            t.family = AF_INET;
            if let Some(a) = kread::<[u8; 4]>(sk + o.sock_rcv_saddr as u64) {
                t.local_addr[0] = a[0];
                t.local_addr[1] = a[1];
                t.local_addr[2] = a[2];
                t.local_addr[3] = a[3];
            }
            if let Some(a) = kread::<[u8; 4]>(sk + o.sock_daddr as u64) {
                t.remote_addr[0] = a[0];
                t.remote_addr[1] = a[1];
                t.remote_addr[2] = a[2];
                t.remote_addr[3] = a[3];
            }
        } else {
            t.family = AF_INET6;
            t.local_addr = kread::<[u8; 16]>(sk + o.sock_v6_rcv_saddr as u64).unwrap_or([0; 16]);
            t.remote_addr = kread::<[u8; 16]>(sk + o.sock_v6_daddr as u64).unwrap_or([0; 16]);
        }
    }
    t
}

#[inline(always)]
fn scratch() -> Option<*mut u8> {
    let cpu = unsafe { bpf_get_smp_processor_id() };
    match SCRATCH.get_ptr_mut(cpu) {
        Some(p) => Some(p as *mut u8),
        None => {
            count(Counter::DropNoScratch, 1);
            None
        }
    }
}

#[inline(always)]
fn fill_header(h: &mut RecordHeader, kind: RecordKind, pid_tgid: u64, start_ns: u64) {
    h.kind = kind as u16;
    h._reserved = 0;
    h.abi = ABI_VERSION;
    h.ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    h.tgid = (pid_tgid >> 32) as u32;
    h.tid = pid_tgid as u32;
    h.start_ns = start_ns;
    h.comm = bpf_get_current_comm().unwrap_or([0u8; COMM_LEN]);
}

/// Fills the chunk header in the scratch area (payload fields excepted).
#[inline(always)]
fn fill_chunk_header(
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
    rec.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    rec.fd = fd;
    rec.syscall = syscall as u8;
    rec.direction = dir as u8;
    rec.fd_kind = fi.kind as u8;
    rec.flags = flags;
    rec.inode = fi.inode;
    rec.channel = fi.channel;
    rec.peer = fi.peer;
    rec.orig_len = 0;
    rec.captured_len = 0;
    rec.segment = 0;
    rec.conn = Default::default();
}

/// Copies `len` bytes at user address `src` after the header already in
/// `scratch` and sends header + payload to userspace. A chunk the ring
/// buffer cannot take marks the next one of the transfer `GAP_BEFORE`
/// (`Transfer::gap`, kept in the map: a flag in a register would double
/// the verifier's states at every chunk), so userspace never joins the
/// bytes on both sides of the hole.
#[inline(always)]
fn emit_chunk(cfg: &KernelConfig, t: *mut Transfer, scratch: *mut u8, src: u64, len: u64, segment: u32, flags: u8) {
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
        let dst = unsafe { scratch.add(HDR) } as *mut c_void;
        if unsafe { bpf_probe_read_user(dst, n as u32, src as *const c_void) } != 0 {
            flags |= chunk_flags::COPY_FAILED;
            copied = 0;
            count(Counter::DropCopyFailed, 1);
        }
    }
    // Volatile: forwarded from the previous chunk's store, the gap would
    // be a value the verifier knows, and each chunk would double its walk.
    rec.flags = flags | unsafe { core::ptr::read_volatile(&(*t).gap) };
    rec.orig_len = len;
    rec.captured_len = copied as u32;
    rec.segment = segment;
    let total = HDR + copied;
    if total > SCRATCH_SIZE {
        return;
    }
    let data = unsafe { core::slice::from_raw_parts(scratch as *const u8, total) };
    // A new stream needs a verdict from userspace (capture or ignore): wake
    // it now rather than at its next poll, so rejected streams stop costing
    // anything within microseconds.
    let wake = if flags & chunk_flags::NEW_STREAM != 0 {
        BPF_RB_FORCE_WAKEUP
    } else {
        ring_flags()
    };
    if EVENTS.output::<[u8]>(data, wake).is_err() {
        count(Counter::DropRingFull, 1);
        unsafe { (*t).gap = chunk_flags::GAP_BEFORE };
        // And the stream's next transfer, should this be its last chunk.
        mark_gap(t);
        return;
    }
    unsafe { (*t).gap = 0 };
    count(Counter::Records, 1);
    count(Counter::PayloadBytes, copied as u64);
}

/// A chunk was lost: the stream's next transfer starts with `GAP_BEFORE`
/// (a chunk sent later in this one does not clear it: at worst, one more
/// partial message is dropped after a hole, never one joined across it).
/// The key is the one the capture stage kept in `Transfer::key`: built on
/// the stack here, at every loss site, it would leave stack states the
/// verifier cannot prune (`capture` went from 115k to 370k instructions).
#[inline(always)]
fn mark_gap(t: *mut Transfer) {
    if STREAMS.insert(unsafe { &(*t).key }, &stream_state::AFTER_GAP, 0).is_err() {
        count(Counter::DropStreamMapFull, 1);
    }
}

/// Most tail calls back into the capture stage for one transfer. A
/// tail-call chain holds at most 33 programs; discovery uses up to four.
const MAX_PIECES: u8 = 24;

/// Sends what is left of the transfer, at most a capture cap per chunk:
/// the plain range first (one piece, then a tail call back into the
/// capture stage, `JUMP_CAPTURE` of `jump`, for the rest of it), then the
/// iovecs from `iov_next`, small ones directly and a large one by making it
/// the range. A loop over pieces would not verify; the tail call gives each
/// piece a fresh program run. Should the chain end early, the rest of the
/// range goes out as one truncated chunk so userspace sees the gap.
#[inline(always)]
fn emit_rest<C: EbpfContext>(ctx: &C, jump: &ProgramArray, cfg: &KernelConfig, scratch: *mut u8, flags: u8) {
    let Some(t) = TRANSFER.get_ptr_mut(0) else { return };
    let (buf, len, pieces) = unsafe { ((*t).range_buf, (*t).range_len, (*t).pieces) };
    let mut cap = cfg.capture_cap as u64;
    if cap > MAX_CAPTURE as u64 {
        cap = MAX_CAPTURE as u64;
    }
    // Only the first chunk of a transfer carries the stream flags.
    let later = flags
        & !(chunk_flags::NEW_STREAM | chunk_flags::DISCOVERED | chunk_flags::RESUMED | chunk_flags::GAP_BEFORE);
    let mut flags = flags;
    if len > 0 {
        if len > cap && cap > 0 && pieces < MAX_PIECES {
            emit_chunk(cfg, t, scratch, buf, cap, 0, flags);
            unsafe {
                // The next run takes its flags from the header.
                (*(scratch as *mut ChunkRecord)).flags = later;
                (*t).range_buf = buf + cap;
                (*t).range_len = len - cap;
                (*t).pieces = pieces + 1;
                jump.tail_call(ctx, JUMP_CAPTURE);
            }
            // The chain ended early: the rest goes out cut (TRUNCATED),
            // which userspace treats as a hole after it anyway.
            count(Counter::DropTailCall, 1);
            emit_chunk(cfg, t, scratch, buf + cap, len - cap, 0, later);
            return;
        }
        emit_chunk(cfg, t, scratch, buf, len, 0, flags);
        unsafe { (*t).range_len = 0 };
        flags = later;
    }
    let (iov, iov_cnt, first) = unsafe { ((*t).iov, (*t).iov_cnt, (*t).iov_next) };
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
            unsafe {
                (*t).range_buf = b;
                (*t).range_len = n;
                (*t).iov_next = i + 1;
                (*t).iov_left = left;
                (*t).pieces = pieces + 1;
                // Nothing sent yet in this run: the next one sends with
                // these flags.
                (*(scratch as *mut ChunkRecord)).flags = flags;
                jump.tail_call(ctx, JUMP_CAPTURE);
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
    unsafe { (*t).iov_left = 0 };
    if left > 0 {
        count(Counter::IovecsSkipped, 1);
    }
}

#[inline(always)]
fn emit_process(kind: RecordKind, tgid: u32, start_ns: u64, parent_tgid: u32, parent_start_ns: u64, reason: u32) {
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
    if EVENTS.output::<ProcessRecord>(&rec, ring_flags()).is_err() {
        count(Counter::DropRingFull, 1);
    } else {
        count(Counter::Records, 1);
    }
}

// ------------------------------------------------------------ ingress

#[inline(always)]
fn stash_ingress(ctx: &TracePointContext, syscall: Syscall) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(cfg) = config() else { return };
    if (pid_tgid >> 32) as u32 == cfg.self_tgid {
        return;
    }
    let (Ok(fd), Ok(buf), Ok(len)) = (
        unsafe { ctx.read_at::<u64>(ARG0) },
        unsafe { ctx.read_at::<u64>(ARG1) },
        unsafe { ctx.read_at::<u64>(ARG2) },
    ) else {
        return;
    };
    let args = SyscallArgs {
        buf,
        len,
        fd: fd as i32,
        syscall: syscall as u8,
        _pad: [0; 3],
    };
    if ARGS.insert(&pid_tgid, &args, 0).is_err() {
        count(Counter::DropArgsMapFull, 1);
    }
}

#[tracepoint]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    stash_ingress(&ctx, Syscall::Read);
    0
}

#[tracepoint]
pub fn sys_enter_readv(ctx: TracePointContext) -> u32 {
    stash_ingress(&ctx, Syscall::Readv);
    0
}

#[tracepoint]
pub fn sys_enter_recvfrom(ctx: TracePointContext) -> u32 {
    stash_ingress(&ctx, Syscall::Recvfrom);
    0
}

#[tracepoint]
pub fn sys_enter_recvmsg(ctx: TracePointContext) -> u32 {
    stash_ingress(&ctx, Syscall::Recvmsg);
    0
}

/// Reads (base, len) of iovec `i` of the array at `iov`.
#[inline(always)]
fn iovec(iov: u64, i: u32) -> Option<(u64, u64)> {
    let base: u64 = unsafe { uread(iov + i as u64 * 16)? };
    let len: u64 = unsafe { uread(iov + i as u64 * 16 + 8)? };
    Some((base, len))
}

/// For vectored calls: (iovec array, iovec count); for recvmsg/sendmsg the
/// values are read from the user `struct msghdr`.
#[inline(always)]
fn vector(syscall: Syscall, buf: u64, len: u64) -> Option<(u64, u64)> {
    match syscall {
        Syscall::Readv | Syscall::Writev => Some((buf, len)),
        Syscall::Recvmsg | Syscall::Sendmsg => {
            // struct user_msghdr: msg_iov at 16, msg_iovlen at 24.
            let iov: u64 = unsafe { uread(buf + 16)? };
            let iovlen: u64 = unsafe { uread(buf + 24)? };
            Some((iov, iovlen))
        }
        _ => None,
    }
}

#[tracepoint]
pub fn sys_exit_ingress(ctx: TracePointContext) -> u32 {
    on_exit(&ctx, Direction::Ingress);
    0
}

/// Exit of a call stashed at entry: the transfer of the bytes the kernel
/// actually moved (`ret`).
#[inline(always)]
fn on_exit(ctx: &TracePointContext, dir: Direction) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = (unsafe { ARGS.get(&pid_tgid) }).copied() else {
        return;
    };
    let _ = ARGS.remove(&pid_tgid);
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(EXIT_RET) }) else {
        return;
    };
    if ret <= 0 {
        return;
    }
    let Some(cfg) = config() else { return };
    let Some(syscall) = Syscall::from_u8(args.syscall) else {
        return;
    };
    let start_ns = current_start_ns(cfg);
    let reason = tracked_reason(cfg, (pid_tgid >> 32) as u32, start_ns);
    begin_transfer(
        ctx,
        &JUMP,
        cfg,
        pid_tgid,
        start_ns,
        reason,
        None,
        syscall,
        dir,
        args.fd,
        args.buf,
        args.len,
        ret as u64,
        true,
        0,
        0,
    );
}

/// Exit of write, writev, sendto, sendmsg: TCP payloads are captured here,
/// with the byte count the kernel took (a partial write is not captured
/// twice). Only calls stashed at entry (TCP capture on) come this far.
#[tracepoint]
pub fn sys_exit_egress(ctx: TracePointContext) -> u32 {
    on_exit(&ctx, Direction::Egress);
    0
}

/// First stage for a completed transfer of `total` bytes: cheap checks,
/// then a tail call to `discover` (untracked process) or `capture`.
///
/// Ingress: the payload will be captured. Egress (called from sys_enter,
/// `total` = requested length): a writer notice is sent once per stream.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn begin_transfer<C: EbpfContext>(
    ctx: &C,
    jump: &ProgramArray,
    cfg: &KernelConfig,
    pid_tgid: u64,
    start_ns: u64,
    reason: u32,
    // `starts_like_json` of the first segment, when the caller knows it.
    looks_like_mcp: Option<bool>,
    syscall: Syscall,
    dir: Direction,
    fd: i32,
    buf: u64,
    len_arg: u64,
    total: u64,
    at_exit: bool,
    ssl: u64,
    extra_flags: u8,
) {
    let untracked = reason == TrackReason::None as u32;
    // Judged at entry already (every write on the host passes here): leave
    // before reading the iovec again.
    if untracked && (cfg.flags & config_flags::DISCOVERY == 0 || looks_like_mcp == Some(false)) {
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
    if untracked && !looks_like_mcp.unwrap_or_else(|| starts_like_json(first_buf, first_len)) {
        return;
    }
    let Some(t) = TRANSFER.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU slot; tail calls run on this CPU before anything else
    // can use it.
    unsafe {
        *t = Transfer {
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
            at_exit: at_exit as u8,
            extra_flags,
            pieces: 0,
            relook: 0,
            gap: 0,
            key: StreamKey {
                tgid: 0,
                fd: 0,
                inode: 0,
                direction: 0,
                _pad: [0; 7],
            },
            // A vectored transfer starts with an empty range and all its
            // bytes in the iovecs.
            range_buf: if iov_cnt == 0 { buf } else { 0 },
            range_len: if iov_cnt == 0 { total } else { 0 },
            iov_next: 0,
            _pad2: 0,
            iov_left: if iov_cnt == 0 { 0 } else { total },
        };
        jump.tail_call(ctx, if untracked { JUMP_DISCOVER } else { JUMP_CAPTURE });
    }
    // Only reached when the tail call failed.
    count(Counter::DropTailCall, 1);
}

/// A discovery stage's verdict "this is MCP": mark the transfer and go
/// on to the capture stage.
#[inline(always)]
fn discovered<C: EbpfContext>(ctx: &C, jump: &ProgramArray, t: *mut Transfer) -> u32 {
    unsafe {
        (*t).discovered = 1;
        jump.tail_call(ctx, JUMP_CAPTURE);
    }
    count(Counter::DropTailCall, 1);
    0
}

/// Bytes of the window `discover` copied to the scratch area, for the
/// later stages (masked for the verifier; check `1..=MAX_DISCOVERY_WINDOW`).
#[inline(always)]
fn copied_window_len(cfg: &KernelConfig, first_len: u64) -> usize {
    let mut n = cfg.discovery_window as u64;
    if n > first_len {
        n = first_len;
    }
    (n as usize) & (MAX_DISCOVERY_WINDOW * 2 - 1)
}

/// Tail-call target: does the payload start like an MCP message (a
/// `"method"` with an MCP method root, or a `"jsonrpc"` key in the window)?
#[tracepoint]
pub fn discover(ctx: TracePointContext) -> u32 {
    discover_stage(&ctx, &JUMP)
}

/// [`discover`] for TLS plaintext.
#[uprobe]
pub fn tls_discover(ctx: ProbeContext) -> u32 {
    discover_stage(&ctx, &TLS_JUMP)
}

#[inline(always)]
fn discover_stage<C: EbpfContext>(ctx: &C, jump: &ProgramArray) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let Some(t) = TRANSFER.get_ptr_mut(0) else { return 0 };
    let Some(scratch) = scratch() else { return 0 };
    let (first_buf, first_len) = unsafe { ((*t).first_buf, (*t).first_len) };
    let n = copy_window(cfg, scratch, first_buf, first_len);
    if n == 0 {
        return 0;
    }
    // Cheap signature first; the 1 KiB scan must come last (see
    // window_has_jsonrpc).
    // SAFETY: n >= 1 bytes were copied to the payload area; 5 are read
    // only when present.
    // SAFETY: n >= 9 bytes were copied (copy_window).
    let http_head = n >= 8 && unsafe {
        let p = scratch.add(HDR);
        (*p == b'P' && *p.add(1) == b'O' && *p.add(2) == b'S' && *p.add(3) == b'T' && *p.add(4) == b' ')
            || (*p == b'H'
                && *p.add(1) == b'T'
                && *p.add(2) == b'T'
                && *p.add(3) == b'P'
                && *p.add(4) == b'/'
                && *p.add(5) == b'1'
                && *p.add(6) == b'.')
    };
    if http_head {
        // MCP clients accept text/event-stream on every POST, and the
        // legacy transport's GET stream is answered with it (its head
        // often written apart from the first event); that is looked for
        // in its own program (a second scan here would not verify).
        unsafe { jump.tail_call(ctx, JUMP_DISCOVER_HTTP) };
        count(Counter::DropTailCall, 1);
        return 0;
    }
    if !starts_with_mcp_method(scratch, n) && !window_has_jsonrpc(scratch, n) {
        return 0;
    }
    discovered(ctx, jump, t)
}

/// Tail-call target of `discover` for an HTTP POST or response: MCP if
/// its head names `text/event-stream` (Streamable HTTP clients accept it on
/// every POST; SSE streams, the legacy transport's included, answer with
/// it). The window is already in the scratch area.
#[tracepoint]
pub fn discover_http(ctx: TracePointContext) -> u32 {
    discover_http_stage(&ctx, &JUMP)
}

/// [`discover_http`] for TLS plaintext.
#[uprobe]
pub fn tls_discover_http(ctx: ProbeContext) -> u32 {
    discover_http_stage(&ctx, &TLS_JUMP)
}

#[inline(always)]
fn discover_http_stage<C: EbpfContext>(ctx: &C, jump: &ProgramArray) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let Some(t) = TRANSFER.get_ptr_mut(0) else { return 0 };
    let Some(scratch) = scratch() else { return 0 };
    let n = copied_window_len(cfg, unsafe { (*t).first_len });
    if n == 0 || n > MAX_DISCOVERY_WINDOW {
        return 0;
    }
    if !window_has_event_stream(scratch, n) {
        // A POST of JSON-RPC without the Streamable HTTP Accept header (the
        // legacy HTTP+SSE transport's messages), or a JSON response: look
        // for "jsonrpc".
        unsafe { jump.tail_call(ctx, JUMP_DISCOVER_JSONRPC) };
        count(Counter::DropTailCall, 1);
        return 0;
    }
    discovered(ctx, jump, t)
}

/// Tail-call target of `discover_http`: an HTTP POST whose window holds
/// `"jsonrpc"`.
#[tracepoint]
pub fn discover_jsonrpc(ctx: TracePointContext) -> u32 {
    discover_jsonrpc_stage(&ctx, &JUMP)
}

/// [`discover_jsonrpc`] for TLS plaintext.
#[uprobe]
pub fn tls_discover_jsonrpc(ctx: ProbeContext) -> u32 {
    discover_jsonrpc_stage(&ctx, &TLS_JUMP)
}

#[inline(always)]
fn discover_jsonrpc_stage<C: EbpfContext>(ctx: &C, jump: &ProgramArray) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let Some(t) = TRANSFER.get_ptr_mut(0) else { return 0 };
    let Some(scratch) = scratch() else { return 0 };
    let n = copied_window_len(cfg, unsafe { (*t).first_len });
    if n == 0 || n > MAX_DISCOVERY_WINDOW || !window_has_jsonrpc(scratch, n) {
        return 0;
    }
    discovered(ctx, jump, t)
}

/// Tail-call target: classify the descriptor, consult the stream decision,
/// and send a chunk (ingress) or a writer notice (egress).
#[tracepoint]
pub fn capture(ctx: TracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let Some(tp) = TRANSFER.get(0) else { return 0 };
    let t = *tp;
    let Some(scratch) = scratch() else { return 0 };
    // A transfer under way already has its header in the scratch area.
    if t.pieces == 0 {
        match capture_header(cfg, scratch, &t) {
            Header::Send => {}
            Header::Skip => return 0,
            Header::Relook => return relook(&ctx, &JUMP),
        }
    }
    emit_rest(&ctx, &JUMP, cfg, scratch, header_flags(scratch));
    0
}

/// Keeps the stream's key in the transfer (for `mark_gap`); after a lost
/// chunk (`AFTER_GAP`), flags the first chunk of this transfer (through
/// `Transfer::gap`, in memory: flags in a register would double the
/// verifier's walk of `emit_rest`) and puts the stream back to plain
/// capture.
#[inline(always)]
fn keep_stream(key: &StreamKey, state: u8) {
    let Some(t) = TRANSFER.get_ptr_mut(0) else { return };
    unsafe { (*t).key = *key };
    if state == stream_state::AFTER_GAP {
        if STREAMS.insert(key, &stream_state::CAPTURE, 0).is_err() {
            count(Counter::DropStreamMapFull, 1);
        }
        unsafe { (*t).gap = chunk_flags::GAP_BEFORE };
    }
}

/// No entry in `STREAMS` (no `stream_state` value is 0).
const NO_STATE: u8 = 0;

/// What the first run of a capture stage decided for the transfer.
enum Header {
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
fn relook<C: EbpfContext>(ctx: &C, jump: &ProgramArray) -> u32 {
    let Some(t) = TRANSFER.get_ptr_mut(0) else { return 0 };
    count(Counter::Relooks, 1);
    unsafe {
        (*t).relook = 1;
        jump.tail_call(ctx, JUMP_DISCOVER);
    }
    count(Counter::DropTailCall, 1);
    0
}

/// The decision for an ignored stream `key`: skip the transfer, look at it
/// again, or (discovery found MCP in it) capture the stream again from
/// here, and its other direction from its next transfer.
#[inline(always)]
fn ignored_stream(key: &StreamKey, t: &Transfer) -> Header {
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
fn header_flags(scratch: *mut u8) -> u8 {
    let rec = unsafe { &*(scratch as *const ChunkRecord) };
    rec.flags & !(chunk_flags::TRUNCATED | chunk_flags::COPY_FAILED)
}

/// First run of `capture` for a transfer: classify the descriptor, apply
/// the stream decision, send the writer notice of a local write, or fill
/// the chunk header for the payload.
#[inline(always)]
fn capture_header(cfg: &KernelConfig, scratch: *mut u8, t: &Transfer) -> Header {
    let (Some(syscall), Some(dir)) = (Syscall::from_u8(t.syscall), Direction::from_u8(t.direction)) else {
        return Header::Skip;
    };
    let pid_tgid = t.pid_tgid;
    let tgid = (pid_tgid >> 32) as u32;
    let fd = t.fd;
    let Some(fi) = file_info(cfg, fd, dir) else { return Header::Skip };
    let tcp = matches!(fi.kind, FdKind::Tcp4 | FdKind::Tcp6);
    if tcp && dir == Direction::Ingress {
        // TLS over memory BIOs (asyncio, node): the socket is read, then
        // SSL_read runs on the same thread; this names the socket of an
        // SSL object that was never given one through SSL_set_fd.
        let _ = LAST_TCP_READ.insert(&pid_tgid, &fd, 0);
    }
    if !(fi.kind.is_local_ipc() || (tcp && cfg.flags & config_flags::CAPTURE_TCP != 0)) {
        return Header::Skip;
    }
    let key = StreamKey {
        tgid,
        fd,
        inode: fi.inode,
        direction: dir as u8,
        _pad: [0; 7],
    };
    // 0 for none: an `Option<u8>` lets LLVM carry an undefined payload
    // register along the `None` path, which the verifier refuses to read.
    let state = unsafe { STREAMS.get(&key) }.copied().unwrap_or(NO_STATE);
    let mut flags = 0u8;
    if state == stream_state::IGNORE_QUIET {
        return Header::Skip;
    }
    if state == stream_state::IGNORE {
        // TCP writes are captured at exit only.
        if dir == Direction::Egress && t.at_exit == 0 {
            return Header::Skip;
        }
        match ignored_stream(&key, t) {
            Header::Send => flags |= chunk_flags::RESUMED | chunk_flags::NEW_STREAM,
            other => return other,
        }
    }
    if t.relook != 0 {
        // A tracked process keeps its reason.
        flags |= chunk_flags::TRACKED;
    } else if t.discovered != 0 {
        flags |= chunk_flags::DISCOVERED;
        count(Counter::DiscoveryHits, 1);
        track(tgid, t.start_ns, TrackReason::Discovered);
    } else {
        flags |= chunk_flags::TRACKED;
    }

    if dir == Direction::Egress && tcp {
        // TCP payloads are taken at syscall exit, with the accepted count.
        if t.at_exit == 0 {
            return Header::Skip;
        }
    } else if dir == Direction::Egress {
        // Local IPC writes: one notice per stream, no payload, at entry.
        if state != NO_STATE || t.at_exit != 0 {
            return Header::Skip;
        }
        if STREAMS.insert(&key, &stream_state::WRITER_NOTIFIED, 0).is_err() {
            count(Counter::DropStreamMapFull, 1);
        }
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
        let data = unsafe { core::slice::from_raw_parts(scratch as *const u8, HDR) };
        if EVENTS.output::<[u8]>(data, ring_flags()).is_err() {
            count(Counter::DropRingFull, 1);
        } else {
            count(Counter::Records, 1);
        }
        return Header::Skip;
    }

    if state == NO_STATE {
        flags |= chunk_flags::NEW_STREAM;
        if STREAMS.insert(&key, &stream_state::CAPTURE, 0).is_err() {
            count(Counter::DropStreamMapFull, 1);
        }
    }
    keep_stream(&key, state);

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

// ------------------------------------------------------------ TLS

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
fn tls_capture_header(cfg: &KernelConfig, scratch: *mut u8, t: &Transfer, syscall: Syscall, dir: Direction) -> Header {
    let pid_tgid = t.pid_tgid;
    let tgid = (pid_tgid >> 32) as u32;
    let key = StreamKey {
        tgid,
        fd: TLS_STREAM_FD,
        inode: t.ssl,
        direction: dir as u8,
        _pad: [0; 7],
    };
    // 0 for none: an `Option<u8>` lets LLVM carry an undefined payload
    // register along the `None` path, which the verifier refuses to read.
    let state = unsafe { STREAMS.get(&key) }.copied().unwrap_or(NO_STATE);
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
    if t.relook != 0 {
        flags |= chunk_flags::TRACKED;
    } else if t.discovered != 0 {
        flags |= chunk_flags::DISCOVERED;
        count(Counter::DiscoveryHits, 1);
        track(tgid, t.start_ns, TrackReason::Discovered);
    } else {
        flags |= chunk_flags::TRACKED;
    }
    if state == NO_STATE {
        flags |= chunk_flags::NEW_STREAM;
        if STREAMS.insert(&key, &stream_state::CAPTURE, 0).is_err() {
            count(Counter::DropStreamMapFull, 1);
        }
    }
    keep_stream(&key, state);
    let sock = if t.fd >= 0 { file_info(cfg, t.fd, dir) } else { None };
    let fi = FileInfo {
        kind: FdKind::Tls,
        inode: t.ssl,
        channel: 0,
        peer: 0,
    };
    let rec = unsafe { &mut *(scratch as *mut ChunkRecord) };
    fill_chunk_header(rec, RecordKind::Chunk, pid_tgid, t.start_ns, t.fd, syscall, dir, &fi, flags);
    match sock {
        Some(s) if matches!(s.kind, FdKind::Tcp4 | FdKind::Tcp6) => rec.conn = conn_tuple(cfg, s.channel, s.kind),
        _ => count(Counter::TlsUnbound, 1),
    }
    Header::Send
}

/// Entry of `SSL_read`/`SSL_write` (`ex`: the `_ex` variants, which
/// return the byte count through a fourth argument): stash the arguments
/// for the return probe. Writes that neither come from a tracked process
/// nor start like MCP are skipped here; reads are only known at return.
#[inline(always)]
fn tls_enter(ctx: &ProbeContext, dir: Direction, ex: bool) {
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
    if dir == Direction::Egress {
        let start_ns = current_start_ns(cfg);
        if tracked_reason(cfg, (pid_tgid >> 32) as u32, start_ns) == TrackReason::None as u32
            && (cfg.flags & config_flags::DISCOVERY == 0 || !starts_like_json(buf, len))
        {
            return;
        }
    }
    let args = TlsArgs {
        ssl,
        buf,
        len,
        out_len,
        direction: dir as u8,
        _pad: [0; 7],
    };
    if TLS_ARGS.insert(&pid_tgid, &args, 0).is_err() {
        count(Counter::DropArgsMapFull, 1);
    }
}

#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    tls_enter(&ctx, Direction::Egress, false);
    0
}

#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    tls_enter(&ctx, Direction::Egress, true);
    0
}

#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    tls_enter(&ctx, Direction::Ingress, false);
    0
}

#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    tls_enter(&ctx, Direction::Ingress, true);
    0
}

/// Return of any of the four: the plaintext the library actually moved.
#[uretprobe]
pub fn ssl_return(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = (unsafe { TLS_ARGS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = TLS_ARGS.remove(&pid_tgid);
    let ret = ctx.ret::<u64>() as u32 as i32;
    let n: u64 = if args.out_len != 0 {
        if ret != 1 {
            return 0;
        }
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
    let start_ns = current_start_ns(cfg);
    let reason = tracked_reason(cfg, tgid, start_ns);
    let bkey = TlsKey {
        tgid,
        _pad: 0,
        ssl: args.ssl,
    };
    let (fd, extra) = match unsafe { TLS_FDS.get(&bkey) }.copied() {
        Some(b) => (b.fd, if b.inferred != 0 { chunk_flags::TLS_FD_INFERRED } else { 0 }),
        None => match unsafe { LAST_TCP_READ.get(&pid_tgid) }.copied() {
            Some(fd) if reason != TrackReason::None as u32 => {
                let _ = TLS_FDS.insert(&bkey, &TlsBinding { fd, inferred: 1 }, 0);
                (fd, chunk_flags::TLS_FD_INFERRED)
            }
            _ => (-1, 0),
        },
    };
    begin_transfer(
        &ctx,
        &TLS_JUMP,
        cfg,
        pid_tgid,
        start_ns,
        reason,
        None,
        syscall,
        dir,
        fd,
        args.buf,
        args.len,
        n,
        true,
        args.ssl,
        extra,
    );
    0
}

/// `SSL_set_fd(ssl, fd)` (also `SSL_set_rfd`/`SSL_set_wfd`): the socket
/// of an `SSL` object, exactly.
#[uprobe]
pub fn ssl_set_fd(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (Some(ssl), Some(fd)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    let key = TlsKey {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        ssl,
    };
    let _ = TLS_FDS.insert(
        &key,
        &TlsBinding {
            fd: fd as u32 as i32,
            inferred: 0,
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
    let tgid = (pid_tgid >> 32) as u32;
    let _ = TLS_FDS.remove(&TlsKey { tgid, _pad: 0, ssl });
    let mut key = StreamKey {
        tgid,
        fd: TLS_STREAM_FD,
        inode: ssl,
        direction: Direction::Ingress as u8,
        _pad: [0; 7],
    };
    let _ = STREAMS.remove(&key);
    key.direction = Direction::Egress as u8;
    let _ = STREAMS.remove(&key);
    0
}

// ------------------------------------------------------------- egress

#[inline(always)]
fn on_egress_enter(ctx: &TracePointContext, syscall: Syscall) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(cfg) = config() else { return };
    if (pid_tgid >> 32) as u32 == cfg.self_tgid {
        return;
    }
    let (Ok(fd), Ok(buf), Ok(len)) = (
        unsafe { ctx.read_at::<u64>(ARG0) },
        unsafe { ctx.read_at::<u64>(ARG1) },
        unsafe { ctx.read_at::<u64>(ARG2) },
    ) else {
        return;
    };
    // For vectored calls the byte total is unknown before the call; the
    // notice only needs the first segment for discovery.
    let total = match syscall {
        Syscall::Write | Syscall::Sendto => len,
        _ => u64::MAX,
    };
    // Tracking and the first-bytes check are looked up once per call, for
    // the stash and for the transfer.
    let start_ns = current_start_ns(cfg);
    let reason = tracked_reason(cfg, (pid_tgid >> 32) as u32, start_ns);
    let tracked = reason != TrackReason::None as u32;
    // The first segment's first bytes (vectored calls: the first iovec,
    // which for HTTP clients and servers holds the head).
    let looks_like_mcp = (!tracked && cfg.flags & config_flags::DISCOVERY != 0).then(|| match vector(syscall, buf, len) {
        None => starts_like_json(buf, len),
        Some((iov, cnt)) => cnt > 0 && iovec(iov, 0).is_some_and(|(b, l)| starts_like_json(b, l)),
    });
    if cfg.flags & config_flags::CAPTURE_TCP != 0 {
        // Stash for the exit program, which captures TCP payloads: calls of
        // tracked processes, and plain writes that start like MCP (for
        // discovery). The descriptor kind is only looked at later.
        if tracked || looks_like_mcp == Some(true) {
            let args = SyscallArgs {
                buf,
                len,
                fd: fd as i32,
                syscall: syscall as u8,
                _pad: [0; 3],
            };
            if ARGS.insert(&pid_tgid, &args, 0).is_err() {
                count(Counter::DropArgsMapFull, 1);
            }
        }
    }
    begin_transfer(
        ctx,
        &JUMP,
        cfg,
        pid_tgid,
        start_ns,
        reason,
        looks_like_mcp,
        syscall,
        Direction::Egress,
        fd as i32,
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

// ---------------------------------------------------- process life cycle

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`:
/// children of tracked processes are tracked from birth.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    let Some(cfg) = config() else { return 0 };
    let o = &cfg.offsets;
    let child: u64 = ctx.arg(1);
    let Some(child_tgid) = (unsafe { kread::<u32>(child + o.task_tgid as u64) }) else {
        return 0;
    };
    let Some(child_pid) = (unsafe { kread::<u32>(child + o.task_pid as u64) }) else {
        return 0;
    };
    if child_pid != child_tgid {
        return 0; // a new thread, not a new process
    }
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let parent_start = current_start_ns(cfg);
    if tracked_reason(cfg, parent_tgid, parent_start) == TrackReason::None as u32 {
        return 0;
    }
    let child_start = unsafe { kread::<u64>(child + o.task_start_boottime as u64) }.unwrap_or(0);
    track(child_tgid, child_start, TrackReason::Inherited);
    emit_process(
        RecordKind::Fork,
        child_tgid,
        child_start,
        parent_tgid,
        parent_start,
        TrackReason::Inherited as u32,
    );
    0
}

#[inline(always)]
fn parent_of_current(cfg: &KernelConfig) -> u32 {
    let task = unsafe { bpf_get_current_task() };
    let o = &cfg.offsets;
    unsafe {
        match kread::<u64>(task + o.task_real_parent as u64) {
            Some(p) if p != 0 => kread::<u32>(p + o.task_tgid as u64).unwrap_or(0),
            _ => 0,
        }
    }
}

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == cfg.self_tgid {
        return 0;
    }
    let start = current_start_ns(cfg);
    let mut reason = tracked_reason(cfg, tgid, start);
    if reason == TrackReason::None as u32 && cfg.flags & config_flags::COMM_SELECTORS != 0 {
        if let Ok(comm) = bpf_get_current_comm() {
            if unsafe { COMM_SELECTORS.get(&comm) }.is_some() {
                track(tgid, start, TrackReason::CommSelector);
                reason = TrackReason::CommSelector as u32;
            }
        }
    }
    if reason == TrackReason::None as u32 {
        return 0;
    }
    emit_process(RecordKind::Exec, tgid, start, parent_of_current(cfg), 0, reason);
    0
}

/// `bind(fd, addr, len)` and `connect(fd, addr, len)`: a process that
/// binds or connects to a selected TCP port is tracked from then on, so its
/// connections are captured from their first byte.
#[inline(always)]
fn on_port_call(ctx: &TracePointContext) {
    let Some(cfg) = config() else { return };
    if cfg.flags & config_flags::PORT_SELECTORS == 0 {
        return;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == cfg.self_tgid {
        return;
    }
    let Ok(addr) = (unsafe { ctx.read_at::<u64>(ARG1) }) else { return };
    // struct sockaddr_in / sockaddr_in6: family, then the port in network
    // order at the same offset.
    let Some(family) = (unsafe { uread::<u16>(addr) }) else { return };
    if family != 2 && family != 10 {
        return;
    }
    let Some(port) = (unsafe { uread::<u16>(addr + 2) }) else { return };
    let port = u16::from_be(port);
    if unsafe { PORT_SELECTORS.get(&port) }.is_none() {
        return;
    }
    let start = current_start_ns(cfg);
    if tracked_reason(cfg, tgid, start) == TrackReason::None as u32 {
        track(tgid, start, TrackReason::PortSelector);
    }
}

#[tracepoint]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    on_port_call(&ctx);
    0
}

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    on_port_call(&ctx);
    0
}

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid != pid_tgid as u32 {
        return 0; // a thread, not the process
    }
    let Some(st) = (unsafe { PROCS.get(&tgid) }).copied() else {
        return 0;
    };
    let _ = PROCS.remove(&tgid);
    let Some(cfg) = config() else { return 0 };
    let start = current_start_ns(cfg);
    emit_process(RecordKind::Exit, tgid, start, parent_of_current(cfg), 0, st.reason);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
