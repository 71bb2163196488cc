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

impl StreamKey {
    /// The key of stream (`tgid`, `fd`, `inode`, `direction`), padding
    /// zeroed. Built from three words rather than a literal: in the
    /// kernel programs a literal's `_pad: [0; 7]` became a call to the
    /// byte-at-a-time `memset` the BPF linker provides (five instructions
    /// per byte), on every traced read.
    #[inline(always)]
    pub fn new(tgid: u32, fd: i32, inode: u64, direction: u8) -> StreamKey {
        let words = [tgid as u64 | (fd as u32 as u64) << 32, inode, direction as u64];
        // SAFETY: StreamKey is repr(C), 24 bytes, 8-aligned (checked below):
        // tgid and fd in the first word (little-endian: tgid low), inode the
        // second, direction the low byte of the third and the padding the
        // rest of it; any bit pattern is valid for every field.
        unsafe { core::mem::transmute::<[u64; 3], StreamKey>(words) }
    }
}

const _: () = assert!(core::mem::size_of::<StreamKey>() == 24 && core::mem::align_of::<StreamKey>() == 8);
#[cfg(not(target_endian = "little"))]
compile_error!("StreamKey::new assumes a little-endian target");

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
