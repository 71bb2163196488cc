//! What a chunk moved through: the direction, the system call (or TLS
//! library call) and the kind of descriptor.

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
