//! Ring-buffer records: the header every record starts with, chunk records
//! (bytes a process moved, or a writer notice) and process records.

use crate::COMM_LEN;

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
    /// A [`ProcessRecord`]: a process that is not tracked called execve
    /// (with [`EXEC_NOTICES`](crate::config_flags::EXEC_NOTICES)). Execs
    /// are rare next to reads and writes; the agent looks at the new
    /// executable for TLS libraries before it can open its first
    /// connection, which a periodic scan would miss for short-lived
    /// programs (`claude mcp list` runs for 0.3 s).
    ExecNotice = 6,
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
            6 => Self::ExecNotice,
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
