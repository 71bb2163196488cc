//! How userspace finds the kernel programs' pieces: tail-call slots and
//! map names.

/// Tail-call slots of the program arrays, `EXIT_JUMP` (the syscall
/// tracepoint hook), `FEXIT_JUMP` (the syscall fexit hooks, where the
/// kernel allows them) and `TLS_JUMP` (TLS path): the hooks jump to these
/// stages, and the loader fills the slots. Each array has its own copy of
/// every stage, named with its prefix (`exit_`, `fexit_`, `tls_`;
/// `FEXIT_NET_JUMP`, of the network calls' fexit hooks, `fexit_net_`).
pub mod jump_slot {
    /// Is an untracked stream JSON-RPC? (`*_discover`)
    pub const DISCOVER: u32 = 0;
    /// Capture a tracked stream and send its bytes (`*_capture`).
    pub const CAPTURE: u32 = 1;
    /// JSON-RPC inside an HTTP message (`*_discover_http`).
    pub const DISCOVER_HTTP: u32 = 2;
    /// An MCP method at the start of the payload (`*_discover_jsonrpc`).
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
    /// Tail-call program array of `sys_exit`, indexed by `jump_slot`.
    pub const EXIT_JUMP: &str = "EXIT_JUMP";
    /// Tail-call program array of the syscall fexit hooks, indexed by `jump_slot`.
    pub const FEXIT_JUMP: &str = "FEXIT_JUMP";
    /// The same for the fexit hooks of the network calls (see monitor-ebpf maps.rs).
    pub const FEXIT_NET_JUMP: &str = "FEXIT_NET_JUMP";
    /// Tail-call program array of the TLS (uprobe) path, indexed by `jump_slot`.
    pub const TLS_JUMP: &str = "TLS_JUMP";
    /// Arguments of in-flight `SSL_read`/`SSL_write` calls by pid_tgid.
    pub const TLS_ARGS: &str = "TLS_ARGS";
    /// One byte per slot of tgids (`tgid % TRACKED_HINT_SLOTS`), set once
    /// any process of the slot was tracked: most calls of the host learn
    /// they are not tracked without a hash lookup.
    pub const TRACKED_HINT: &str = "TRACKED_HINT";
    /// Every map userspace looks up.
    pub const ALL: [&str; 16] = [
        CONFIG,
        EVENTS,
        SCRATCH,
        PROCS,
        STREAMS,
        COMM_SELECTORS,
        METHOD_ROOTS,
        CGROUP_SELECTORS,
        PORT_SELECTORS,
        COUNTERS,
        EXIT_JUMP,
        FEXIT_JUMP,
        FEXIT_NET_JUMP,
        TLS_JUMP,
        TLS_ARGS,
        TRACKED_HINT,
    ];
}

/// Names of the kernel programs' constants that the loader sets before it
/// loads them (read-only globals: the verifier sees their values, and does
/// not look at the code they switch off).
pub mod global_name {
    /// `u8`, 1 where the kernel's BTF declares the registers the network
    /// calls' functions are passed (`struct pt_regs`) without members, as
    /// 5.10's does: its verifier refuses a program that reads through such
    /// a pointer, so the network calls' fexit hooks read the registers
    /// with a helper instead (`monitor-ebpf/src/hooks/mod.rs`).
    pub const NET_REGS_BY_HELPER: &str = "NET_REGS_BY_HELPER";
}
