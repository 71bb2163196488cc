//! Streams as the kernel keys them, and the capture decision userspace
//! writes back for each.

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
