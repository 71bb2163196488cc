//! What userspace tells the kernel programs at load: struct member
//! offsets from BTF, flags and limits.

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
    /// Report every exec (an [`ExecNotice`](crate::RecordKind::ExecNotice)
    /// for untracked processes): the agent looks at each new executable
    /// for TLS libraries at once (TLS capture is on).
    pub const EXEC_NOTICES: u32 = 1 << 5;
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
    /// Kernel structure member offsets, resolved by userspace from BTF.
    pub offsets: KernelOffsets,
}
