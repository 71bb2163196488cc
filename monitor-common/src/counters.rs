//! The kernel's per-CPU counters.

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
    /// Transfers of untracked streams that discovery let pass unread: the
    /// stream was looked at moments ago and found not MCP. Counted in
    /// batches (monitor-ebpf `transfer::deferred`), up to 255 behind for
    /// each stream whose slot still holds a batch.
    DiscoveryDeferred = 16,
    /// Syscall hook runs that did not find their thread's id in the
    /// kernel's cache (`THREADS`) and asked the kernel for it: a thread's
    /// first calls, and the first calls of every thread after any thread
    /// of the host starts, ends or execs.
    ThreadIdMisses = 17,
    /// `SSL_read`/`SSL_write` calls of untracked processes that discovery
    /// did not look at: the connection was looked at moments ago and found
    /// not MCP (as `DiscoveryDeferred`, for the TLS probes).
    TlsDiscoveryDeferred = 18,
    /// `SSL_read` returns of an `SSL` object whose socket was inferred
    /// (TLS over a memory BIO: asyncio, anyio, node) after the thread read
    /// another socket, while the object's own socket was still open: one
    /// event loop reading several connections. The object keeps its socket
    /// and stream decisions.
    TlsReadsInterleaved = 19,
    /// `SSL_read` returns of an `SSL` object whose inferred socket was
    /// closed or replaced: the object's address was reused for another
    /// connection without an `SSL_free` seen (Bun's BoringSSL has none).
    /// Its socket is inferred again and its stream decisions forgotten.
    TlsObjectsReused = 20,
}

/// Number of entries in the counter array.
pub const COUNTER_COUNT: u32 = 21;

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
        Self::DiscoveryDeferred,
        Self::ThreadIdMisses,
        Self::TlsDiscoveryDeferred,
        Self::TlsReadsInterleaved,
        Self::TlsObjectsReused,
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
            Self::DiscoveryDeferred => "discovery_deferred",
            Self::ThreadIdMisses => "thread_id_misses",
            Self::TlsDiscoveryDeferred => "tls_discovery_deferred",
            Self::TlsReadsInterleaved => "tls_reads_interleaved",
            Self::TlsObjectsReused => "tls_objects_reused",
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
