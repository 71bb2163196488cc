//! What the pipeline tells the sensor: which streams the kernel should stop
//! capturing, capture again, or leave alone for a while. The reverse of
//! [`crate::observation`].

use monitor_common::Direction;

/// A kernel stream the agent asks the kernel to stop reporting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelStream {
    /// Process id (tgid) of the process that reads or writes the stream.
    pub pid: u32,
    /// Its file descriptor; `monitor_common::TLS_STREAM_FD` for TLS streams (keyed by `SSL` object).
    pub fd: i32,
    /// Inode number of the pipe or socket; for TLS streams, the address of the `SSL` object.
    pub inode: u64,
    /// Which half: what the process reads (ingress) or writes (egress).
    pub direction: Direction,
}

/// Capture decisions for the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// The stream is not MCP: stop capturing it (the kernel still looks at
    /// transfers that start like MCP).
    IgnoreStream(KernelStream),
    /// A stream judged not MCP showed MCP again: capture it again.
    CaptureStream(KernelStream),
    /// The stream was judged afresh as often as its budget allows this
    /// minute: ignore it without looking again (until `IgnoreStream`).
    QuietStream(KernelStream),
}
