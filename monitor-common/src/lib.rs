//! Types shared by the kernel programs (`monitor-ebpf`) and the userspace
//! agent (`monitor-user`).
//!
//! Everything here is `#[repr(C)]` plain data: the kernel writes these
//! structures into BPF maps and the ring buffer, and userspace reads the same
//! bytes back. Change a layout and you change the ABI: bump
//! [`ABI_VERSION`] so a stale eBPF object is refused at load time.
//!
//! The ring buffer carries two record families, told apart by
//! [`RecordHeader::kind`]:
//! - [`ChunkRecord`] followed by `captured_len` payload bytes: bytes a process
//!   read or wrote on a pipe or socket ([`RecordKind::Chunk`]), or a
//!   payload-less notice that a process writes into a channel
//!   ([`RecordKind::WriterNotice`]).
//! - [`ProcessRecord`]: fork, exec and exit of processes the kernel tracks.
#![no_std]

/// Bumped whenever a `#[repr(C)]` layout below changes.
pub const ABI_VERSION: u32 = 6;

/// Largest payload one chunk record can carry. The per-CPU scratch buffer is
/// sized for it, so it is a compile-time constant; the effective cap is
/// [`KernelConfig::capture_cap`] (default [`DEFAULT_CAPTURE_CAP`]).
pub const MAX_CAPTURE: usize = 1 << 20;
/// Default per-chunk capture cap.
pub const DEFAULT_CAPTURE_CAP: u32 = 256 * 1024;
/// Largest prefix of a payload the kernel scans for `"jsonrpc"` when it
/// decides whether an unknown stream is MCP.
pub const MAX_DISCOVERY_WINDOW: usize = 1024;
/// Default discovery window.
pub const DEFAULT_DISCOVERY_WINDOW: u32 = 1024;
/// Longest first path segment of an MCP method name (`notifications`,
/// `subscriptions`...) the kernel compares, including NUL padding.
pub const METHOD_ROOT_LEN: usize = 16;

/// Largest number of iovec segments captured from one readv/writev/
/// recvmsg/sendmsg call; later segments are counted in
/// [`Counter::IovecsSkipped`].
pub const MAX_IOVECS: u32 = 16;
/// Size of the per-CPU scratch area: one chunk header plus the largest payload.
pub const SCRATCH_SIZE: usize = core::mem::size_of::<ChunkRecord>() + MAX_CAPTURE;
/// Length of a kernel `comm` (task name) including its NUL.
pub const COMM_LEN: usize = 16;

/// What a ring-buffer record is.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A [`ChunkRecord`] with payload bytes.
    Chunk = 1,
    /// A [`ChunkRecord`] without payload: the process writes into
    /// [`ChunkRecord::channel`]. Emitted once per writing stream, before
    /// the written bytes can reach any reader.
    WriterNotice = 2,
    /// A [`ProcessRecord`]: a tracked process forked a child process.
    Fork = 3,
    /// A [`ProcessRecord`]: a tracked process called execve.
    Exec = 4,
    /// A [`ProcessRecord`]: a tracked process exited.
    Exit = 5,
}

impl RecordKind {
    /// Decodes the wire value.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Chunk,
            2 => Self::WriterNotice,
            3 => Self::Fork,
            4 => Self::Exec,
            5 => Self::Exit,
            _ => return None,
        })
    }
}

/// Fields every ring-buffer record starts with.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RecordHeader {
    /// A [`RecordKind`] value.
    pub kind: u16,
    /// Reserved, zero.
    pub _reserved: u16,
    /// [`ABI_VERSION`] of the program that wrote the record.
    pub abi: u32,
    /// `CLOCK_BOOTTIME` nanoseconds when the record was made.
    pub ts_ns: u64,
    /// Process id (thread group id) as seen from the initial pid namespace.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// Process start time (`task_struct.start_boottime`, ns since boot).
    /// With `tgid` it identifies a process even when pids are reused.
    pub start_ns: u64,
    /// Task name, NUL padded.
    pub comm: [u8; COMM_LEN],
}

/// Which side of a stream the process was on.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The process received the bytes (read, recv...).
    Ingress = 0,
    /// The process sent the bytes (write, send...).
    Egress = 1,
}

impl Direction {
    /// Decodes the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Ingress),
            1 => Some(Self::Egress),
            _ => None,
        }
    }
}

/// The system call that moved the bytes.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Syscall {
    /// `read(2)`.
    Read = 1,
    /// `write(2)`.
    Write = 2,
    /// `readv(2)`: one chunk per captured iovec segment.
    Readv = 3,
    /// `writev(2)`: one chunk per captured iovec segment.
    Writev = 4,
    /// `recvfrom(2)`.
    Recvfrom = 5,
    /// `sendto(2)`.
    Sendto = 6,
    /// `recvmsg(2)`: one chunk per captured iovec segment of the msghdr.
    Recvmsg = 7,
    /// `sendmsg(2)`: one chunk per captured iovec segment of the msghdr.
    Sendmsg = 8,
    /// `SSL_read` / `SSL_read_ex` returned plaintext (TLS uprobe).
    SslRead = 9,
    /// `SSL_write` / `SSL_write_ex` accepted plaintext (TLS uprobe).
    SslWrite = 10,
}

impl Syscall {
    /// Decodes the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Read,
            2 => Self::Write,
            3 => Self::Readv,
            4 => Self::Writev,
            5 => Self::Recvfrom,
            6 => Self::Sendto,
            7 => Self::Recvmsg,
            8 => Self::Sendmsg,
            9 => Self::SslRead,
            10 => Self::SslWrite,
            _ => return None,
        })
    }

    /// Stable lower-case name, used in metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Readv => "readv",
            Self::Writev => "writev",
            Self::Recvfrom => "recvfrom",
            Self::Sendto => "sendto",
            Self::Recvmsg => "recvmsg",
            Self::Sendmsg => "sendmsg",
            Self::SslRead => "ssl_read",
            Self::SslWrite => "ssl_write",
        }
    }
}

/// What the file descriptor refers to.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FdKind {
    /// Anything else (regular files, ttys, datagram sockets...).
    Other = 0,
    /// A pipe or FIFO (`S_IFIFO` inode).
    Pipe = 1,
    /// `AF_UNIX` stream or seqpacket socket (includes socketpairs).
    UnixStream = 2,
    /// TCP over IPv4.
    Tcp4 = 3,
    /// TCP over IPv6 (including v4-mapped addresses).
    Tcp6 = 4,
    /// Plaintext of a TLS connection, taken from the TLS library (OpenSSL
    /// `SSL_read`/`SSL_write`). [`ChunkRecord::inode`] holds the address of
    /// the `SSL` object (the connection's identity), [`ChunkRecord::fd`] the
    /// socket it is bound to (-1 while unknown) and [`ChunkRecord::conn`]
    /// that socket's endpoints.
    Tls = 5,
}

impl FdKind {
    /// Decodes the wire value.
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Pipe,
            2 => Self::UnixStream,
            3 => Self::Tcp4,
            4 => Self::Tcp6,
            5 => Self::Tls,
            _ => Self::Other,
        }
    }

    /// True for pipes and unix sockets: both ends live on this host, so the
    /// kernel captures the bytes once, where they are read.
    pub fn is_local_ipc(self) -> bool {
        matches!(self, Self::Pipe | Self::UnixStream)
    }
}

/// Tail-call slots of the two program arrays, `JUMP` (syscall path) and
/// `TLS_JUMP` (TLS path): the entry programs jump to these stages, and the
/// loader fills the slots.
pub mod jump_slot {
    /// Is an untracked stream JSON-RPC? (`discover`, `tls_discover`)
    pub const DISCOVER: u32 = 0;
    /// Capture a tracked stream and send its bytes (`capture`, `tls_capture`).
    pub const CAPTURE: u32 = 1;
    /// JSON-RPC inside an HTTP message (`discover_http`, `tls_discover_http`).
    pub const DISCOVER_HTTP: u32 = 2;
    /// An MCP method at the start of the payload (`discover_jsonrpc`,
    /// `tls_discover_jsonrpc`).
    pub const DISCOVER_JSONRPC: u32 = 3;
    /// Slots in each array.
    pub const COUNT: u32 = 4;
}

/// Names of the kernel programs' maps, as userspace looks them up (the
/// kernel side declares them as statics of the same names in
/// `monitor-ebpf/src/maps.rs`; a test of the loader checks the object).
pub mod map_name {
    /// [`KernelConfig`](crate::KernelConfig) array (one entry), written by userspace at load.
    pub const CONFIG: &str = "CONFIG";
    /// Ring buffer carrying chunk and process records to userspace.
    pub const EVENTS: &str = "EVENTS";
    /// Scratch areas, one per CPU, where a chunk header and its payload are assembled.
    pub const SCRATCH: &str = "SCRATCH";
    /// Tracked processes: tgid to [`ProcState`](crate::ProcState).
    pub const PROCS: &str = "PROCS";
    /// Per-stream decisions: [`StreamKey`](crate::StreamKey) to a `stream_state` value.
    pub const STREAMS: &str = "STREAMS";
    /// Arguments of in-flight syscalls by pid_tgid, stashed at entry for the exit program.
    pub const ARGS: &str = "ARGS";
    /// Executable-name (comm) selectors, checked at exec.
    pub const COMM_SELECTORS: &str = "COMM_SELECTORS";
    /// First path segments of the MCP method names, filled by userspace for discovery.
    pub const METHOD_ROOTS: &str = "METHOD_ROOTS";
    /// cgroup v2 ids whose processes are captured.
    pub const CGROUP_SELECTORS: &str = "CGROUP_SELECTORS";
    /// TCP ports whose servers (bind) and clients (connect) are tracked.
    pub const PORT_SELECTORS: &str = "PORT_SELECTORS";
    /// Per-CPU [`Counter`](crate::Counter) array.
    pub const COUNTERS: &str = "COUNTERS";
    /// Tail-call program array of the syscall path, indexed by `jump_slot`.
    pub const JUMP: &str = "JUMP";
    /// Tail-call program array of the TLS (uprobe) path, indexed by `jump_slot`.
    pub const TLS_JUMP: &str = "TLS_JUMP";
    /// Arguments of in-flight `SSL_read`/`SSL_write` calls by pid_tgid.
    pub const TLS_ARGS: &str = "TLS_ARGS";
    /// Every map userspace looks up.
    pub const ALL: [&str; 14] = [
        CONFIG,
        EVENTS,
        SCRATCH,
        PROCS,
        STREAMS,
        ARGS,
        COMM_SELECTORS,
        METHOD_ROOTS,
        CGROUP_SELECTORS,
        PORT_SELECTORS,
        COUNTERS,
        JUMP,
        TLS_JUMP,
        TLS_ARGS,
    ];
}

/// [`ChunkRecord::flags`] bits.
pub mod chunk_flags {
    /// The payload was cut at the capture cap; `orig_len` holds the length.
    pub const TRUNCATED: u8 = 1 << 0;
    /// First chunk the kernel reports for this stream.
    pub const NEW_STREAM: u8 = 1 << 1;
    /// Reported because the payload looked like JSON-RPC (zero-configuration
    /// discovery), not because the process was already tracked.
    pub const DISCOVERED: u8 = 1 << 2;
    /// The process was tracked (selector, inheritance or earlier discovery).
    pub const TRACKED: u8 = 1 << 3;
    /// The payload could not be copied from user memory; `captured_len` is 0.
    pub const COPY_FAILED: u8 = 1 << 4;
    /// TLS chunks: the socket in `fd` was inferred (the TCP socket this
    /// thread last read from when the `SSL` object was first seen), not
    /// announced through `SSL_set_fd`.
    pub const TLS_FD_INFERRED: u8 = 1 << 5;
    /// The stream had been ignored (userspace judged it not MCP) and this
    /// transfer starts like MCP again: userspace judges it afresh. Comes
    /// with [`NEW_STREAM`].
    pub const RESUMED: u8 = 1 << 6;
    /// Records of this stream were lost just before this chunk (the ring
    /// buffer was full): its bytes do not continue the previous chunk's.
    pub const GAP_BEFORE: u8 = 1 << 7;
}

/// [`StreamKey::fd`] of TLS streams: they are keyed by `SSL` object
/// ([`StreamKey::inode`]), whatever socket they are bound to.
pub const TLS_STREAM_FD: i32 = -1;

/// Key of the kernel's `SSL` object to socket map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TlsKey {
    /// Process (thread group) id that owns the `SSL` object.
    pub tgid: u32,
    /// Explicit padding so the `#[repr(C)]` layout is identical in the kernel and userspace.
    pub _pad: u32,
    /// Address of the `SSL` object in the process.
    pub ssl: u64,
}

/// Socket endpoint addresses. IPv4 addresses occupy the first four bytes.
/// Ports are in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnTuple {
    /// `AF_INET` (2), `AF_INET6` (10) or 0 when not a TCP socket.
    pub family: u16,
    /// Port of this process's end of the connection.
    pub local_port: u16,
    /// Port of the peer's end of the connection.
    pub remote_port: u16,
    /// Explicit padding so the `#[repr(C)]` layout is identical in the kernel and userspace.
    pub _pad: u16,
    /// Address of this process's end (network byte order; IPv4 in the first four bytes).
    pub local_addr: [u8; 16],
    /// Address of the peer's end (network byte order; IPv4 in the first four bytes).
    pub remote_addr: [u8; 16],
}

/// Bytes moved by one system call (or one iovec segment of it), followed in
/// the ring buffer by `captured_len` payload bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ChunkRecord {
    /// Common header; `kind` is `Chunk` or `WriterNotice`.
    pub header: RecordHeader,
    /// Real user id of the calling process (initial user namespace).
    pub uid: u32,
    /// Real group id of the calling process (initial user namespace).
    pub gid: u32,
    /// cgroup v2 id of the process (inode number of its cgroup directory).
    pub cgroup_id: u64,
    /// File descriptor the call used; for TLS chunks the bound socket, -1 while unknown.
    pub fd: i32,
    /// A [`Syscall`] value.
    pub syscall: u8,
    /// A [`Direction`] value.
    pub direction: u8,
    /// A [`FdKind`] value.
    pub fd_kind: u8,
    /// [`chunk_flags`] bits.
    pub flags: u8,
    /// Inode number of the file behind `fd` (pipe or socket inode).
    pub inode: u64,
    /// Identity of the one-way byte channel the bytes travel through, the
    /// same on both ends: the pipe inode for pipes; for unix sockets the
    /// kernel address of the receiving socket (used only as an opaque id).
    pub channel: u64,
    /// For unix sockets: opaque id of the socket at the other end (0 if
    /// unknown). For pipes: 0.
    pub peer: u64,
    /// Bytes the call transferred (for iovec calls: this segment's share).
    pub orig_len: u64,
    /// Payload bytes that follow this header (`<= orig_len`).
    pub captured_len: u32,
    /// Index of the iovec segment for readv/writev/recvmsg/sendmsg, else 0.
    pub segment: u32,
    /// Endpoints for TCP sockets.
    pub conn: ConnTuple,
}

/// A process life-cycle record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessRecord {
    /// `kind` is Fork, Exec or Exit; `tgid`/`start_ns` name the child for
    /// Fork and the process itself otherwise.
    pub header: RecordHeader,
    /// Fork: the parent. Exec/Exit: the parent at that moment (0 if unknown).
    pub parent_tgid: u32,
    /// [`TrackReason`] of the process.
    pub reason: u32,
    /// Fork: the parent's start time (ns since boot), identifying it with `parent_tgid`.
    /// Exec/Exit: 0.
    pub parent_start_ns: u64,
}

/// Why the kernel tracks a process (value of [`ProcState::reason`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackReason {
    /// Not tracked (also any unknown wire value).
    None = 0,
    /// Userspace asked (pid selector, or confirmed MCP traffic).
    Userspace = 1,
    /// Inherited from a tracked parent at fork.
    Inherited = 2,
    /// Executable name selector matched at exec.
    CommSelector = 3,
    /// The process read or wrote a stream that looked like JSON-RPC.
    Discovered = 4,
    /// Cgroup selector.
    CgroupSelector = 5,
    /// Port selector: the process bound or connected to a selected TCP port.
    PortSelector = 6,
}

impl TrackReason {
    /// Decodes the wire value.
    pub fn from_u32(v: u32) -> Self {
        match v {
            1 => Self::Userspace,
            2 => Self::Inherited,
            3 => Self::CommSelector,
            4 => Self::Discovered,
            5 => Self::CgroupSelector,
            6 => Self::PortSelector,
            _ => Self::None,
        }
    }

    /// Stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Userspace => "userspace",
            Self::Inherited => "inherited",
            Self::CommSelector => "exe_selector",
            Self::Discovered => "discovered",
            Self::CgroupSelector => "cgroup_selector",
            Self::PortSelector => "port_selector",
        }
    }

    /// The reason of a [`TrackReason::name`]; [`TrackReason::None`] for a
    /// name this version does not know.
    pub fn from_name(name: &str) -> Self {
        (0..=6)
            .map(Self::from_u32)
            .find(|r| r.name() == name)
            .unwrap_or(Self::None)
    }
}

/// Value of the kernel's tracked-process map, keyed by tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcState {
    /// A [`TrackReason`] value.
    pub reason: u32,
    /// Explicit padding so the `#[repr(C)]` layout is identical in the kernel and userspace.
    pub _pad: u32,
    /// Start time of the process this entry was made for; an entry whose
    /// start time does not match the current task is stale (pid reuse).
    pub start_ns: u64,
}

/// Key of the kernel's per-stream decision map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamKey {
    /// Process (thread group) id.
    pub tgid: u32,
    /// File descriptor of the stream, or [`TLS_STREAM_FD`] for TLS streams.
    pub fd: i32,
    /// Inode number of the pipe or socket behind `fd`; for TLS streams the `SSL` object address.
    pub inode: u64,
    /// A [`Direction`] value.
    pub direction: u8,
    /// Explicit padding so the `#[repr(C)]` layout is identical in the kernel and userspace.
    pub _pad: [u8; 7],
}

/// Values of the per-stream decision map.
pub mod stream_state {
    /// Capture every chunk of this stream.
    pub const CAPTURE: u8 = 1;
    /// Userspace rejected the stream: report nothing of it, except a
    /// transfer that starts like MCP again (discovery runs on it; a hit
    /// resumes capture, see `chunk_flags::RESUMED`).
    pub const IGNORE: u8 = 2;
    /// Writer notice already sent for this (egress, local IPC) stream.
    pub const WRITER_NOTIFIED: u8 = 3;
    /// Captured, and the last chunk could not be sent (ring buffer full):
    /// the next chunk carries `chunk_flags::GAP_BEFORE`.
    pub const AFTER_GAP: u8 = 4;
    /// Ignored, and not looked at again for now: userspace judged it afresh
    /// as often as its budget allows this minute (it sets `IGNORE` again
    /// when the minute is over).
    pub const IGNORE_QUIET: u8 = 5;
}

/// Byte offsets of the kernel structure members the programs read.
///
/// Rust eBPF has no CO-RE relocations, so userspace resolves these from the
/// running kernel's BTF (`/sys/kernel/btf/vmlinux`) before attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.tgid`.
    pub task_tgid: u32,
    /// `task_struct.pid`.
    pub task_pid: u32,
    /// `task_struct.real_parent`.
    pub task_real_parent: u32,
    /// `task_struct.start_boottime`.
    pub task_start_boottime: u32,
    /// `task_struct.group_leader`.
    pub task_group_leader: u32,
    /// `task_struct.files`.
    pub task_files: u32,
    /// `files_struct.fdt`.
    pub files_fdt: u32,
    /// `fdtable.max_fds`.
    pub fdt_max_fds: u32,
    /// `fdtable.fd`.
    pub fdt_fd: u32,
    /// `file.f_inode`.
    pub file_inode: u32,
    /// `file.private_data` (the `struct socket` of a socket file).
    pub file_private_data: u32,
    /// `inode.i_mode`.
    pub inode_mode: u32,
    /// `inode.i_ino`.
    pub inode_ino: u32,
    /// `socket.type`.
    pub socket_type: u32,
    /// `socket.sk`.
    pub socket_sk: u32,
    /// `sock.__sk_common.skc_family`.
    pub sock_family: u32,
    /// `unix_sock.peer`.
    pub unix_peer: u32,
    /// `sock.__sk_common.skc_daddr` (remote IPv4 address).
    pub sock_daddr: u32,
    /// `sock.__sk_common.skc_rcv_saddr` (local IPv4 address).
    pub sock_rcv_saddr: u32,
    /// `sock.__sk_common.skc_dport` (remote port, network byte order).
    pub sock_dport: u32,
    /// `sock.__sk_common.skc_num` (local port, host byte order).
    pub sock_num: u32,
    /// `sock.__sk_common.skc_v6_daddr` (remote IPv6 address).
    pub sock_v6_daddr: u32,
    /// `sock.__sk_common.skc_v6_rcv_saddr` (local IPv6 address).
    pub sock_v6_rcv_saddr: u32,
}

/// [`KernelConfig::flags`] bits.
pub mod config_flags {
    /// Report unknown streams whose payload starts with a JSON-RPC object.
    pub const DISCOVERY: u32 = 1 << 0;
    /// The cgroup selector map is populated: consult it.
    pub const CGROUP_SELECTORS: u32 = 1 << 1;
    /// The executable-name selector map is populated: consult it at exec.
    pub const COMM_SELECTORS: u32 = 1 << 2;
    /// Capture TCP sockets too.
    pub const CAPTURE_TCP: u32 = 1 << 3;
    /// The port selector map is populated: consult it at bind and connect.
    pub const PORT_SELECTORS: u32 = 1 << 4;
}

/// Run-time configuration, entry 0 of the `CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelConfig {
    /// The agent's own tgid: never captured.
    pub self_tgid: u32,
    /// Per-chunk payload cap, `<= MAX_CAPTURE`.
    pub capture_cap: u32,
    /// Bytes scanned for `"jsonrpc"`, `<= MAX_DISCOVERY_WINDOW`.
    pub discovery_window: u32,
    /// [`config_flags`] bits.
    pub flags: u32,
    /// Wake the agent only once this many bytes wait in the ring buffer;
    /// below that it drains on its own timer. Batching wake-ups is what
    /// keeps the agent's CPU cost per message low at high rates.
    pub wakeup_bytes: u32,
    /// Explicit padding so the `#[repr(C)]` layout is identical in the kernel and userspace.
    pub _pad: u32,
    /// Kernel structure member offsets, resolved by userspace from BTF.
    pub offsets: KernelOffsets,
}

/// Indices of the per-CPU counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Records written to the ring buffer.
    Records = 0,
    /// Payload bytes written to the ring buffer.
    PayloadBytes = 1,
    /// Dropped: the ring buffer was full.
    DropRingFull = 2,
    /// Dropped: `bpf_probe_read_user` failed (payload missing).
    DropCopyFailed = 3,
    /// Dropped: no room in the syscall argument map.
    DropArgsMapFull = 4,
    /// Dropped: no room in the tracked-process map.
    DropProcMapFull = 5,
    /// Chunks whose payload was cut at the capture cap.
    Truncated = 6,
    /// iovec segments beyond [`MAX_IOVECS`], not captured.
    IovecsSkipped = 7,
    /// Streams reported by zero-configuration discovery.
    DiscoveryHits = 8,
    /// Kernel structure reads that failed (fd table walk).
    FdLookupFailed = 9,
    /// Dropped: no room in the stream decision map.
    DropStreamMapFull = 10,
    /// Dropped: the scratch buffer for this CPU was missing.
    DropNoScratch = 11,
    /// Dropped: a tail call between capture stages failed.
    DropTailCall = 12,
    /// TLS plaintext chunks sent without a known socket (no `SSL_set_fd`
    /// and no socket read on the thread yet).
    TlsUnbound = 13,
    /// Transfers of ignored streams that started like MCP and were looked
    /// at again by the discovery stages.
    Relooks = 14,
    /// Ignored streams resumed because such a re-look found MCP.
    Resumed = 15,
}

/// Number of entries in the counter array.
pub const COUNTER_COUNT: u32 = 16;

impl Counter {
    /// All counters, in index order.
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Self::Records,
        Self::PayloadBytes,
        Self::DropRingFull,
        Self::DropCopyFailed,
        Self::DropArgsMapFull,
        Self::DropProcMapFull,
        Self::Truncated,
        Self::IovecsSkipped,
        Self::DiscoveryHits,
        Self::FdLookupFailed,
        Self::DropStreamMapFull,
        Self::DropNoScratch,
        Self::DropTailCall,
        Self::TlsUnbound,
        Self::Relooks,
        Self::Resumed,
    ];

    /// Stable snake_case name (used in recordings and logs).
    pub fn name(self) -> &'static str {
        match self {
            Self::Records => "records",
            Self::PayloadBytes => "payload_bytes",
            Self::DropRingFull => "drop_ring_full",
            Self::DropCopyFailed => "drop_copy_failed",
            Self::DropArgsMapFull => "drop_args_map_full",
            Self::DropProcMapFull => "drop_process_map_full",
            Self::Truncated => "truncated",
            Self::IovecsSkipped => "iovecs_skipped",
            Self::DiscoveryHits => "discovery_hits",
            Self::FdLookupFailed => "fd_lookup_failed",
            Self::DropStreamMapFull => "drop_stream_map_full",
            Self::DropNoScratch => "drop_no_scratch",
            Self::DropTailCall => "drop_tail_call",
            Self::TlsUnbound => "tls_unbound",
            Self::Relooks => "relooks",
            Self::Resumed => "resumed",
        }
    }

    /// For drop counters, the `reason` label of
    /// `mcp_monitor_capture_dropped_total`; `None` for other counters.
    pub fn drop_reason(self) -> Option<&'static str> {
        match self {
            Self::DropRingFull => Some("ring_full"),
            Self::DropCopyFailed => Some("copy_failed"),
            Self::DropArgsMapFull => Some("args_map_full"),
            Self::DropProcMapFull => Some("process_map_full"),
            Self::DropStreamMapFull => Some("stream_map_full"),
            Self::DropNoScratch => Some("no_scratch"),
            Self::IovecsSkipped => Some("iovec_limit"),
            Self::DropTailCall => Some("tail_call_failed"),
            _ => None,
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C) plain-old-data with no padding that
    // could be read uninitialised (explicit `_pad` fields fill the gaps).
    unsafe impl aya::Pod for KernelConfig {}
    unsafe impl aya::Pod for ProcState {}
    unsafe impl aya::Pod for StreamKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_are_stable() {
        // These sizes are the ABI; a change needs an ABI_VERSION bump.
        assert_eq!(size_of::<RecordHeader>(), 48);
        assert_eq!(size_of::<ConnTuple>(), 40);
        assert_eq!(size_of::<ChunkRecord>(), 48 + 8 + 8 + 8 + 8 + 8 + 8 + 8 + 8 + 40);
        assert_eq!(size_of::<ProcessRecord>(), 64);
        assert_eq!(size_of::<StreamKey>(), 24);
    }
}
