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

mod channels;
mod config;
mod counters;
mod programs;
mod records;
mod streams;
mod tracking;

pub use channels::{Direction, FdKind, Syscall};
pub use config::{config_flags, KernelConfig, KernelOffsets};
pub use counters::{Counter, COUNTER_COUNT};
pub use programs::{global_name, jump_slot, map_name};
pub use records::{chunk_flags, ChunkRecord, ConnTuple, ProcessRecord, RecordHeader, RecordKind};
pub use streams::{stream_state, StreamKey, TlsKey, TLS_STREAM_FD};
pub use tracking::{ProcState, TrackReason, TRACKED_HINT_SLOTS};

/// Bumped whenever a `#[repr(C)]` layout below changes.
pub const ABI_VERSION: u32 = 8;

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

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C) plain-old-data with no padding that
    // could be read uninitialised (explicit `_pad` fields fill the gaps).
    unsafe impl aya::Pod for KernelConfig {}
    unsafe impl aya::Pod for ProcState {}
    unsafe impl aya::Pod for StreamKey {}
}

/// Most bytes of one read `floor_copy` (`mcp-monitor floor --copy-reads`)
/// puts in the ring: a traced 4 KiB message whole.
pub const FLOOR_COPY_BYTES: usize = 4096;

/// A record of `floor_copy`: the count it copied, then the bytes (the
/// first `len` of `bytes` are the read's).
#[repr(C)]
pub struct FloorCopyRecord {
    /// Bytes copied.
    pub len: u64,
    /// The read's first bytes.
    pub bytes: [u8; FLOOR_COPY_BYTES],
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    /// `TrackReason::from_name` looks through a fixed range of wire values:
    /// a reason added past it would read back from recordings as `None`.
    #[test]
    fn every_tracking_reason_reads_back_by_name() {
        for v in 0..=u8::MAX as u32 {
            let r = TrackReason::from_u32(v);
            assert_eq!(TrackReason::from_name(r.name()), r, "wire value {v}");
        }
    }

    /// The kernel builds stream keys from words (`StreamKey::new`),
    /// userspace from fields: both must name the same map entry.
    #[test]
    fn stream_keys_from_words_equal_keys_from_fields() {
        for (tgid, fd, inode, direction) in [
            (1u32, 0i32, 0u64, 0u8),
            (u32::MAX, -1, u64::MAX, 1),
            (4242, TLS_STREAM_FD, 0x7f00_dead_beef, 1),
            (7, 3, 905, 0),
        ] {
            let fields = StreamKey {
                tgid,
                fd,
                inode,
                direction,
                _pad: [0; 7],
            };
            let words = StreamKey::new(tgid, fd, inode, direction);
            assert_eq!(words, fields);
            // SAFETY: both are 24 initialised bytes (no implicit padding).
            let bytes = |k: &StreamKey| unsafe { core::mem::transmute::<StreamKey, [u8; 24]>(*k) };
            assert_eq!(bytes(&words), bytes(&fields));
        }
    }

    #[test]
    fn layouts_are_stable() {
        // These sizes are the ABI; a change needs an ABI_VERSION bump.
        assert_eq!(size_of::<RecordHeader>(), 48);
        assert_eq!(size_of::<ConnTuple>(), 40);
        assert_eq!(size_of::<ChunkRecord>(), 48 + 8 + 8 + 8 + 8 + 8 + 8 + 8 + 8 + 40);
        assert_eq!(size_of::<ProcessRecord>(), 64);
        assert_eq!(size_of::<StreamKey>(), 24);
        assert_eq!(size_of::<KernelConfig>(), 20 + 23 * 4);
    }
}
