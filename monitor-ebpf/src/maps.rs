//! Every map of the kernel programs, the private types they hold, and the two
//! accessors every program uses ([`config`], [`count`]). Userspace finds the
//! maps by these names (`monitor_common::map_name`). The caches only the
//! kernel programs use (`JUDGED`, `THREADS`, `THREAD_STARTS`,
//! `THREAD_EPOCH`) are globals instead, in the object's `.bss`.

use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf};
use core::intrinsics::{atomic_xadd, AtomicOrdering};
use monitor_common::{
    jump_slot, Counter, KernelConfig, ProcState, StreamKey, TlsKey, COMM_LEN, COUNTER_COUNT, METHOD_ROOT_LEN,
    SCRATCH_SIZE, TRACKED_HINT_SLOTS,
};

#[map]
pub(crate) static CONFIG: Array<KernelConfig> = Array::with_max_entries(1, 0);

/// Records to userspace. Userspace sets the size at load time.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// One chunk header + payload per CPU (userspace sets max_entries to the
/// number of possible CPUs). A plain array because per-CPU map values are
/// limited to 32 KiB.
#[map]
pub(crate) static SCRATCH: Array<[u8; SCRATCH_SIZE]> = Array::with_max_entries(1, 0);

/// Tracked processes by tgid.
#[map]
pub(crate) static PROCS: HashMap<u32, ProcState> = HashMap::with_max_entries(32768, 0);

/// Set, never cleared, for every slot of tgids (`tgid % TRACKED_HINT_SLOTS`)
/// of which a process was ever put in `PROCS`: an array load tells most
/// calls of the host they are not tracked, before any hash lookup. A slot
/// set by a process long gone only costs its namesakes that lookup.
#[map]
pub(crate) static TRACKED_HINT: Array<u8> = Array::with_max_entries(TRACKED_HINT_SLOTS, 0);

/// Per-stream decisions (capture / ignore / writer notified). LRU: losing an
/// entry only means the stream is evaluated again.
#[map]
pub(crate) static STREAMS: LruHashMap<StreamKey, u8> = LruHashMap::with_max_entries(65536, 0);

/// Streams of untracked processes that were looked at and found not MCP:
/// later transfers are looked at (first bytes read, then scanned) at
/// growing intervals instead of every time (a log pipe or a redis socket
/// pays the read once in 64 transfers, a JSON-log pipe the scan once in
/// 256). A direct-mapped cache, not a hash
/// map (an array load is all such a call pays): slot
/// [`judged_slot`](crate::transfer::judged_slot) of the stream's key, the
/// key kept in the entry. A stream that takes another's slot only means
/// the other's next transfer is looked at. A global array (`.bss`, as
/// `THREADS` and `THREAD_EPOCH`; [`judgement`] gives a slot), not an
/// array map: every untracked read and write of the host takes a slot of
/// it and of `THREADS`, and a map's slot costs a lookup (the index stored
/// and loaded again, a bounds check, a null check) where a global's is an
/// address.
#[unsafe(no_mangle)]
static mut JUDGED: [Judgement; JUDGED_SLOTS as usize] = [Judgement::EMPTY; JUDGED_SLOTS as usize];

/// Slot `slot` of `JUDGED` (taken modulo its size).
#[inline(always)]
pub(crate) fn judgement(slot: u32) -> *mut Judgement {
    slot_of(&raw mut JUDGED, slot)
}

/// Entry `slot`, taken modulo `N` (a power of two), of the global array
/// at `array`.
#[inline(always)]
fn slot_of<T, const N: usize>(array: *mut [T; N], slot: u32) -> *mut T {
    // SAFETY: the index is masked to the array's bounds, which the
    // verifier sees too.
    unsafe { array.cast::<T>().add(slot as usize & (N - 1)) }
}

/// Slots of `JUDGED` (a power of two).
pub(crate) const JUDGED_SLOTS: u32 = 16384;

/// What descriptors of tracked processes refer to, per direction
/// ([`known_files`](crate::known_files)): slot
/// [`judged_slot`](crate::transfer::judged_slot) of the key, as `JUDGED`.
#[map]
pub(crate) static KNOWN_FILES: Array<KnownFile> = Array::with_max_entries(JUDGED_SLOTS, 0);

/// The pid_tgid and class of recently seen threads, by the address of
/// their saved registers ([`current_caller`](crate::threads::current_caller)):
/// a direct-mapped cache; two live threads on one slot take turns, each
/// miss costing a helper call. A global array, as `JUDGED`.
#[unsafe(no_mangle)]
static mut THREADS: [ThreadSlot; THREAD_SLOTS as usize] = [ThreadSlot::EMPTY; THREAD_SLOTS as usize];

/// Slot `slot` of `THREADS` (taken modulo its size).
#[inline(always)]
pub(crate) fn thread_slot(slot: u32) -> *mut ThreadSlot {
    slot_of(&raw mut THREADS, slot)
}

/// Slots of `THREADS` (a power of two).
pub(crate) const THREAD_SLOTS: u32 = 16384;

/// The start time of each `THREADS` entry's process, once a tracked call
/// of the thread needed it ([`Caller::process_start_ns`](crate::threads::Caller::process_start_ns)):
/// slot for slot with `THREADS`, but an array of its own, so that the
/// lines every read and write of the host loads stay as they were.
#[unsafe(no_mangle)]
static mut THREAD_STARTS: [ThreadStart; THREAD_SLOTS as usize] = [ThreadStart::EMPTY; THREAD_SLOTS as usize];

/// Slot `slot` of `THREAD_STARTS` (taken modulo its size).
#[inline(always)]
pub(crate) fn thread_start_slot(slot: u32) -> *mut ThreadStart {
    slot_of(&raw mut THREAD_STARTS, slot)
}

/// Moved on at every fork, exit and exec of the host, and whenever a
/// process is tracked ([`new_thread_epoch`](crate::threads::new_thread_epoch));
/// `THREADS` entries of an earlier epoch are not used. A global (the object's
/// `.bss`), not a one-entry array: the programs load it from a fixed
/// address, where an array costs a lookup (the key stored and loaded
/// again, a bounds check) on every read and write of the host.
#[unsafe(no_mangle)]
pub(crate) static mut THREAD_EPOCH: u64 = 0;

/// Executable-name (comm) selectors, checked at exec.
#[map]
pub(crate) static COMM_SELECTORS: HashMap<[u8; COMM_LEN], u8> = HashMap::with_max_entries(256, 0);

/// First path segment of every MCP method (`tools`, `notifications`,
/// `initialize`...), NUL padded; filled by userspace from its method table.
#[map]
pub(crate) static METHOD_ROOTS: HashMap<[u8; METHOD_ROOT_LEN], u8> = HashMap::with_max_entries(64, 0);

/// cgroup v2 ids whose processes are captured.
#[map]
pub(crate) static CGROUP_SELECTORS: HashMap<u64, u8> = HashMap::with_max_entries(256, 0);

/// TCP ports (host order) whose servers (bind) and clients (connect) are
/// tracked: `capture.selectors.ports`.
#[map]
pub(crate) static PORT_SELECTORS: HashMap<u16, u8> = HashMap::with_max_entries(256, 0);

#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

// NOTE on per-CPU exclusivity, which the SAFETY comments on TRANSFER and
// SCRATCH accesses rely on: another CPU never touches this CPU's slot, and a
// tail-call chain stays on its CPU (migration is disabled for the run).
// Tracepoint programs also run with preemption disabled, so no other run of
// ours interleaves. Uprobe programs (the TLS path) run with only migration
// disabled on recent kernels: on a preemptible kernel another run on this CPU
// may rewrite the slot mid-chain. Every access stays inside the value (bounds
// are checked where used), but the record sent can then be garbled.
/// The transfer being processed on this CPU, handed from the entry
/// program to `discover` and `capture` through tail calls.
#[map]
pub(crate) static TRANSFER: PerCpuArray<Transfer> = PerCpuArray::with_max_entries(1, 0);

/// Tail-call targets of `sys_exit`. Splitting the work keeps each program
/// small enough for the verifier: the 1 KiB discovery scan is verified
/// once, on its own, instead of along every path of the capture code. The
/// stages are BTF tracepoint programs loaded for `sys_exit` (recent kernels,
/// 6.18 here, refuse a tail call into a tracing program loaded for another
/// tracepoint's prototype).
#[map]
pub(crate) static EXIT_JUMP: ProgramArray = ProgramArray::with_max_entries(jump_slot::COUNT, 0);

/// The same stages for the syscall fexit hooks (hooks/syscalls.rs), where
/// the kernel allows them: loaded as fexit programs for `__x64_sys_read`,
/// whose prototype the read and write calls share, except the network
/// ones (`FEXIT_NET_JUMP`).
#[map]
pub(crate) static FEXIT_JUMP: ProgramArray = ProgramArray::with_max_entries(jump_slot::COUNT, 0);

/// The stages of the network calls' fexit hooks (recvfrom, recvmsg,
/// sendto, sendmsg, bind, connect). Their functions can have another
/// prototype than `__x64_sys_read` in the kernel's BTF (6.1 lists each
/// twice, first with a `__unused` parameter name: the stub for kernels
/// without networking), so the loader loads these stages for
/// `__x64_sys_recvfrom`, or puts `FEXIT_JUMP`'s programs here where the
/// prototypes are the same.
#[map]
pub(crate) static FEXIT_NET_JUMP: ProgramArray = ProgramArray::with_max_entries(jump_slot::COUNT, 0);

/// The same stages for TLS plaintext: tail calls only reach programs of the
/// caller's type, and the TLS entry points are uprobes.
#[map]
pub(crate) static TLS_JUMP: ProgramArray = ProgramArray::with_max_entries(jump_slot::COUNT, 0);

/// Arguments of in-flight `SSL_read`/`SSL_write` calls, by pid_tgid.
#[map]
pub(crate) static TLS_ARGS: HashMap<u64, TlsArgs> = HashMap::with_max_entries(32768, 0);

/// The socket each `SSL` object reads and writes: announced by
/// `SSL_set_fd`, or inferred for memory-BIO users (asyncio, node) from the
/// TCP socket the thread last read. Removed at `SSL_free`.
#[map]
pub(crate) static TLS_FDS: LruHashMap<TlsKey, TlsBinding> = LruHashMap::with_max_entries(65536, 0);

/// Arguments of in-flight Go `crypto/tls` `Read` calls, by goroutine: a goroutine may move to another thread inside the call. LRU:
/// a call that never returns through a probed `RET` (a panic) cannot fill
/// the map for good. Every Go program with `crypto/tls` on the host stashes
/// here (whether a read is MCP is known only at its return), and each idle
/// HTTP/2 connection holds one read open: past 65,536 such reads at once,
/// the oldest stashes go, uncounted, and their reads are missed.
#[map]
pub(crate) static GO_TLS_CALLS: LruHashMap<GoCallKey, TlsArgs> = LruHashMap::with_max_entries(65536, 0);

/// Key of [`GO_TLS_CALLS`]: the process, the direction (a goroutine has at
/// most one call of each in flight) and the goroutine (`g`, R14).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct GoCallKey {
    pub(crate) tgid: u32,
    pub(crate) direction: u32,
    pub(crate) g: u64,
}

/// The TCP socket each thread of a tracked process last read from.
#[map]
pub(crate) static LAST_TCP_READ: LruHashMap<u64, SocketRef> = LruHashMap::with_max_entries(16384, 0);

/// A socket as a descriptor and the inode it held: the inode tells the
/// socket from a later one given the same descriptor number.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SocketRef {
    pub(crate) fd: i32,
    pub(crate) _pad: u32,
    pub(crate) inode: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct TlsArgs {
    pub(crate) ssl: u64,
    /// `_ex` variants: where the library stores the byte count; else 0.
    /// Not next to `direction`, often 0 too: LLVM turns 16 zeroed bytes
    /// into a call to the byte-at-a-time memset (see `emit::zero_words`).
    pub(crate) out_len: u64,
    pub(crate) buf: u64,
    /// Requested byte count (`num`).
    pub(crate) len: u64,
    pub(crate) direction: u8,
    /// 1: an untracked process's reads of this connection are thinned at
    /// return (`hooks::tls::Looks::Thinned`).
    pub(crate) thinned: u8,
    // Padding as fields of their own size, not byte arrays: a zeroed byte
    // array becomes a call to the byte-at-a-time memset (here and below).
    pub(crate) _pad1: u16,
    pub(crate) _pad2: u32,
}

/// The socket of a TLS connection object (`TLS_FDS`).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct TlsBinding {
    pub(crate) fd: i32,
    /// 0: given by `SSL_set_fd` or Go's `net.Conn`; else inferred from the
    /// thread's last socket read (`LAST_TCP_READ`): 1 tentative, 2
    /// confirmed by a read (hooks/tls.rs, `checked_binding`).
    pub(crate) inferred: u32,
    /// The socket's inode when inferred, else 0.
    pub(crate) inode: u64,
}

/// The looks discovery took at one untracked stream (`JUDGED`).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Judgement {
    /// The stream's key ([`judged_key`](crate::transfer::judged_key)).
    pub(crate) key: u64,
    /// The stream's last transfer, looked at or not (`jiffies`).
    pub(crate) last_tick: u64,
    /// Transfers still to let pass unread.
    pub(crate) skip_left: u8,
    /// Transfers the last look let pass unread, `skip_left` of them still
    /// to come: counted once they have passed, or when the entry is given
    /// up ([`deferred`](crate::transfer::deferred)).
    pub(crate) skips_granted: u8,
    /// 1 when the stream's last look ran the discovery scan
    /// ([`scanned_without_mcp`](crate::transfer::scanned_without_mcp)),
    /// read by its next look.
    pub(crate) scanned: u8,
    pub(crate) _pad: u8,
    /// Looks since the stream was last quiet.
    pub(crate) looks: u32,
}

impl Judgement {
    const EMPTY: Judgement = Judgement {
        key: 0,
        last_tick: 0,
        skip_left: 0,
        skips_granted: 0,
        scanned: 0,
        _pad: 0,
        looks: 0,
    };
}

/// One thread's entry in `THREADS`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ThreadSlot {
    /// Where the thread's registers are (`SavedRegs::thread_key`); 0 for
    /// none.
    pub(crate) key: u64,
    pub(crate) pid_tgid: u64,
    /// The epoch the entry was written in, shifted left by two, and the
    /// thread's [`caller_class`](crate::threads::caller_class) in the two
    /// low bits.
    pub(crate) epoch: u64,
    /// [`check`](crate::threads::check) of the three fields above.
    pub(crate) check: u64,
}

impl ThreadSlot {
    const EMPTY: ThreadSlot = ThreadSlot {
        key: 0,
        pid_tgid: 0,
        epoch: 0,
        check: 0,
    };
}

/// A process start time in `THREAD_STARTS`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ThreadStart {
    pub(crate) start_ns: u64,
    /// [`start_check`](crate::threads::start_check) of `start_ns` and of
    /// the `THREADS` entry it belongs to (its key, pid_tgid and epoch
    /// field): a start time written for another thread, another epoch, or
    /// torn by a concurrent write, fails it.
    pub(crate) check: u64,
}

impl ThreadStart {
    const EMPTY: ThreadStart = ThreadStart { start_ns: 0, check: 0 };
}

/// One descriptor's [`FileInfo`](crate::kernel_read::FileInfo) in
/// `KNOWN_FILES`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct KnownFile {
    /// [`judged_key`](crate::transfer::judged_key) of the descriptor and
    /// direction; 0 for none.
    pub(crate) key: u64,
    /// Start time of the process that has it.
    pub(crate) start_ns: u64,
    pub(crate) inode: u64,
    pub(crate) channel: u64,
    pub(crate) peer: u64,
    /// An `FdKind`.
    pub(crate) kind: u8,
    /// Transfers it may still serve before the descriptor is walked again.
    pub(crate) uses_left: u8,
    pub(crate) _pad0: u16,
    pub(crate) _pad1: u32,
}

#[inline(always)]
pub(crate) fn count(counter: Counter, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: p is this CPU's slot from a successful lookup, valid for a
        // u64; other CPUs have their own slot and userspace only reads it.
        unsafe { *p += n };
    }
}

/// Slot of `key` in a direct-mapped array of `slots` entries (a power of
/// two): a multiplicative hash of it. `JUDGED`, `KNOWN_FILES`, `THREADS`.
#[inline(always)]
pub(crate) fn hashed_slot(key: u64, slots: u32) -> u32 {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as u32 & (slots - 1)
}

/// Adds `n` (two's complement for a subtraction) to the u64 at `p`, a map
/// value other CPUs update at the same time.
#[inline(always)]
pub(crate) fn add_atomic(p: *mut u64, n: u64) {
    // SAFETY: callers pass a u64 of map memory (an array's value, a
    // global), valid and aligned for the life of the program. The intrinsic, not
    // `AtomicU64::fetch_add`, which the BPF target does not offer (no
    // compare-and-swap before v3); the result is not used, so LLVM emits
    // the atomic add without fetch that every kernel of the matrix accepts.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, n) };
}

#[inline(always)]
pub(crate) fn config() -> Option<&'static KernelConfig> {
    CONFIG.get(0)
}

/// One read or write being looked at.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Transfer {
    pub(crate) pid_tgid: u64,
    pub(crate) start_ns: u64,
    /// Buffer for plain calls.
    pub(crate) buf: u64,
    /// Bytes the call moved.
    pub(crate) total: u64,
    /// iovec array and count for vectored calls (iov_cnt 0 otherwise).
    pub(crate) iov: u64,
    pub(crate) iov_cnt: u64,
    /// First segment, used for discovery.
    pub(crate) first_buf: u64,
    pub(crate) first_len: u64,
    /// TLS: address of the `SSL` object; 0 for system calls.
    pub(crate) ssl: u64,
    /// The descriptor (for TLS: the bound socket, or -1).
    pub(crate) fd: i32,
    pub(crate) syscall: u8,
    pub(crate) direction: u8,
    pub(crate) discovered: u8,
    pub(crate) _pad3: u8,
    /// Extra [`chunk_flags`] for the chunk (TLS_FD_INFERRED).
    pub(crate) extra_flags: u8,
    /// Tail calls back into the capture stage so far (see `emit_rest`).
    pub(crate) pieces: u8,
    /// The stream was ignored and this transfer went through the discovery
    /// stages again (see `Header::Relook`).
    pub(crate) relook: u8,
    /// `GAP_BEFORE` while the last chunk sent for this transfer was lost.
    pub(crate) gap: u8,
    /// The stream's key in `STREAMS`, set by the capture stage.
    pub(crate) key: StreamKey,
    /// What `emit_rest` has still to send: a plain range (the whole
    /// buffer of a plain call, or the rest of one large iovec), then for
    /// vectored calls the iovecs from `iov_next`, `iov_left` bytes in all.
    pub(crate) range_buf: u64,
    pub(crate) range_len: u64,
    pub(crate) iov_next: u32,
    pub(crate) _pad2: u32,
    pub(crate) iov_left: u64,
}

impl Transfer {
    /// Writes every field to `*t` with a store of its own. A plain
    /// assignment lets LLVM merge the fields that are constant 0 at a call
    /// site (the iovec fields of a plain call, the counters, a TLS
    /// transfer's descriptor fields) into a call to the byte-at-a-time
    /// memset (see `emit::zero_words`); volatile stores are never merged.
    /// The destructuring names every field, so a field added to the struct
    /// and not stored here does not compile.
    ///
    /// # Safety
    /// `t` is valid and aligned for a `Transfer` (a `TRANSFER` slot).
    #[inline(always)]
    pub(crate) unsafe fn store(self, t: *mut Transfer) {
        let Transfer {
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
            syscall,
            direction,
            discovered,
            _pad3,
            extra_flags,
            pieces,
            relook,
            gap,
            key,
            range_buf,
            range_len,
            iov_next,
            _pad2,
            iov_left,
        } = self;
        // SAFETY: StreamKey is 24 bytes of plain integers with no implicit
        // padding (its `_pad` is a field; `StreamKey::new` zeroes it).
        let key: [u64; 3] = unsafe { core::mem::transmute(key) };
        use core::ptr::{addr_of_mut, write_volatile as put};
        // SAFETY: each is a field of the valid `*t` (see above).
        unsafe {
            put(addr_of_mut!((*t).pid_tgid), pid_tgid);
            put(addr_of_mut!((*t).start_ns), start_ns);
            put(addr_of_mut!((*t).buf), buf);
            put(addr_of_mut!((*t).total), total);
            put(addr_of_mut!((*t).iov), iov);
            put(addr_of_mut!((*t).iov_cnt), iov_cnt);
            put(addr_of_mut!((*t).first_buf), first_buf);
            put(addr_of_mut!((*t).first_len), first_len);
            put(addr_of_mut!((*t).ssl), ssl);
            put(addr_of_mut!((*t).fd), fd);
            put(addr_of_mut!((*t).syscall), syscall);
            put(addr_of_mut!((*t).direction), direction);
            put(addr_of_mut!((*t).discovered), discovered);
            put(addr_of_mut!((*t)._pad3), _pad3);
            put(addr_of_mut!((*t).extra_flags), extra_flags);
            put(addr_of_mut!((*t).pieces), pieces);
            put(addr_of_mut!((*t).relook), relook);
            put(addr_of_mut!((*t).gap), gap);
            // The key as its three words (8-aligned: asserted below).
            const _: () = assert!(core::mem::offset_of!(Transfer, key) % 8 == 0);
            let k = addr_of_mut!((*t).key) as *mut u64;
            put(k, key[0]);
            put(k.add(1), key[1]);
            put(k.add(2), key[2]);
            put(addr_of_mut!((*t).range_buf), range_buf);
            put(addr_of_mut!((*t).range_len), range_len);
            put(addr_of_mut!((*t).iov_next), iov_next);
            put(addr_of_mut!((*t)._pad2), _pad2);
            put(addr_of_mut!((*t).iov_left), iov_left);
        }
    }
}
