//! Ring-buffer records to observations.
//!
//! Kernel socket addresses (used by the kernel as channel ids for unix
//! sockets) are replaced by keyed hashes here, so they never reach the
//! pipeline, recordings or output.

use std::hash::{BuildHasher, RandomState};

use monitor_common::{
    ChunkRecord, Direction, FdKind, ProcessRecord, RecordHeader, RecordKind, Syscall, TrackReason, ABI_VERSION,
};

use crate::observation::{Chunk, Lifecycle, LifecycleKind, ProcKey, WriterNotice};

/// A decoded ring record.
#[derive(Debug)]
pub enum Record {
    /// Bytes read or written by a tracked process.
    Chunk(Chunk),
    /// The writing end of a captured local channel.
    WriterNotice {
        /// The notice.
        notice: WriterNotice,
        /// Task name of the writer.
        comm: String,
        /// Real uid of the writer, in the initial user namespace.
        uid: u32,
        /// Real gid of the writer, in the initial user namespace.
        gid: u32,
    },
    /// A fork, exec or exit of a tracked process.
    Process {
        /// The transition.
        lifecycle: Lifecycle,
        /// Task name of the task that made the record (the parent, for a fork).
        comm: String,
    },
    /// A process that is not tracked ran a new executable: not an
    /// observation, a hint to look at the executable for TLS libraries.
    ExecNotice {
        /// The process.
        pid: u32,
    },
}

/// The records of one drain of the ring, in the order the pipeline takes
/// them: writer notices first, then the rest as they came.
///
/// The kernel sends a local write's notice at the write's exit, and the
/// reader, woken by the write, may have read the bytes and had them sent
/// before that exit runs. The reader's chunks need the notice: it names
/// the writer of the channel, the server of a client's inbound stream. A
/// notice is sent once per stream, when its first write ends (again at the
/// next write if the ring had no room for it), so taking the
/// batch's notices first gives its chunks the writers their writes had
/// without any waiting. A notice that lands in a later drain (a first
/// write larger than the pipe ends after the reader took its pieces) still
/// comes after the chunks; the pipeline holds such a stream's messages
/// until it comes (`pipeline::writer_wait`; docs/ARCHITECTURE.md,
/// "Writer notices that come late").
#[derive(Debug, Default)]
pub struct Batch {
    notices: Vec<Record>,
    rest: Vec<Record>,
}

impl Batch {
    /// Adds the next record taken from the ring.
    pub fn push(&mut self, r: Record) {
        match r {
            Record::WriterNotice { .. } => self.notices.push(r),
            _ => self.rest.push(r),
        }
    }

    /// The records in the pipeline's order (see [`Batch`]).
    pub fn into_records(self) -> impl Iterator<Item = Record> {
        self.notices.into_iter().chain(self.rest)
    }
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the header, or than the layout of its kind (the record's length in bytes).
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    /// Written by eBPF programs of another ABI version (the one given).
    #[error("record written by eBPF ABI {0}, agent expects {ABI_VERSION}")]
    Abi(u32),
    /// A record kind this agent does not know (the value given).
    #[error("unknown record kind {0}")]
    Kind(u16),
    /// A chunk claims more payload bytes than the record carries.
    #[error("chunk claims {claimed} payload bytes but carries {present}")]
    Payload {
        /// `captured_len` of the chunk.
        claimed: usize,
        /// Bytes after the chunk header.
        present: usize,
    },
    /// A field holds an invalid value (the field's name).
    #[error("invalid field {0}")]
    Field(&'static str),
}

/// Decodes records; owns the key that hides kernel addresses.
pub struct Decoder {
    key: RandomState,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

fn comm_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

impl Decoder {
    /// A decoder with a fresh random key for hiding kernel socket addresses.
    pub fn new() -> Self {
        Self {
            key: RandomState::new(),
        }
    }

    fn hide(&self, addr: u64) -> u64 {
        if addr == 0 {
            0
        } else {
            self.key.hash_one(addr) | 1
        }
    }

    /// Decodes one ring-buffer record.
    pub fn decode(&self, bytes: &[u8]) -> Result<Record, DecodeError> {
        if bytes.len() < size_of::<RecordHeader>() {
            return Err(DecodeError::Short(bytes.len()));
        }
        // SAFETY: length checked; RecordHeader is plain data; unaligned read.
        let h: RecordHeader = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        if h.abi != ABI_VERSION {
            return Err(DecodeError::Abi(h.abi));
        }
        match RecordKind::from_u16(h.kind) {
            Some(k @ (RecordKind::Chunk | RecordKind::WriterNotice)) => {
                if bytes.len() < size_of::<ChunkRecord>() {
                    return Err(DecodeError::Short(bytes.len()));
                }
                // SAFETY: as above.
                let r: ChunkRecord = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
                let payload = &bytes[size_of::<ChunkRecord>()..];
                let n = r.captured_len as usize;
                if n > payload.len() {
                    return Err(DecodeError::Payload {
                        claimed: n,
                        present: payload.len(),
                    });
                }
                let fd_kind = FdKind::from_u8(r.fd_kind);
                let socket_ids = matches!(fd_kind, FdKind::UnixStream | FdKind::Tcp4 | FdKind::Tcp6);
                let proc = ProcKey {
                    pid: h.tgid,
                    start_ns: h.start_ns,
                };
                let channel = if socket_ids { self.hide(r.channel) } else { r.channel };
                let syscall = Syscall::from_u8(r.syscall).ok_or(DecodeError::Field("syscall"))?;
                let direction = Direction::from_u8(r.direction).ok_or(DecodeError::Field("direction"))?;
                if k == RecordKind::WriterNotice {
                    return Ok(Record::WriterNotice {
                        notice: WriterNotice {
                            ts_ns: h.ts_ns,
                            proc,
                            fd: r.fd,
                            fd_kind,
                            channel,
                        },
                        comm: comm_string(&h.comm),
                        uid: r.uid,
                        gid: r.gid,
                    });
                }
                Ok(Record::Chunk(Chunk {
                    ts_ns: h.ts_ns,
                    proc,
                    tid: h.tid,
                    comm: comm_string(&h.comm),
                    uid: r.uid,
                    gid: r.gid,
                    cgroup_id: r.cgroup_id,
                    fd: r.fd,
                    syscall,
                    direction,
                    fd_kind,
                    flags: r.flags,
                    inode: r.inode,
                    channel,
                    peer: if socket_ids { self.hide(r.peer) } else { r.peer },
                    orig_len: r.orig_len,
                    segment: r.segment,
                    conn: r.conn,
                    data: payload[..n].to_vec(),
                }))
            }
            Some(RecordKind::ExecNotice) => Ok(Record::ExecNotice { pid: h.tgid }),
            Some(k @ (RecordKind::Fork | RecordKind::Exec | RecordKind::Exit)) => {
                if bytes.len() < size_of::<ProcessRecord>() {
                    return Err(DecodeError::Short(bytes.len()));
                }
                // SAFETY: as above.
                let r: ProcessRecord = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
                let kind = match k {
                    RecordKind::Fork => LifecycleKind::Fork,
                    RecordKind::Exec => LifecycleKind::Exec,
                    _ => LifecycleKind::Exit,
                };
                let parent = (r.parent_tgid != 0).then_some(ProcKey {
                    pid: r.parent_tgid,
                    start_ns: r.parent_start_ns,
                });
                Ok(Record::Process {
                    lifecycle: Lifecycle {
                        kind,
                        ts_ns: h.ts_ns,
                        proc: ProcKey {
                            pid: h.tgid,
                            start_ns: h.start_ns,
                        },
                        parent,
                        reason: TrackReason::from_u32(r.reason),
                    },
                    comm: comm_string(&h.comm),
                })
            }
            None => Err(DecodeError::Kind(h.kind)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_common::{chunk_flags, ConnTuple, COMM_LEN};

    fn header(kind: RecordKind) -> RecordHeader {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"node");
        RecordHeader {
            kind: kind as u16,
            _reserved: 0,
            abi: ABI_VERSION,
            ts_ns: 10,
            tgid: 5,
            tid: 6,
            start_ns: 7,
            comm,
        }
    }

    fn as_bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-data value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()).to_vec() }
    }

    fn chunk_record(captured: u32, fd_kind: FdKind, channel: u64) -> ChunkRecord {
        ChunkRecord {
            header: header(RecordKind::Chunk),
            uid: 1,
            gid: 2,
            cgroup_id: 3,
            fd: 0,
            syscall: Syscall::Read as u8,
            direction: Direction::Ingress as u8,
            fd_kind: fd_kind as u8,
            flags: chunk_flags::NEW_STREAM,
            inode: 99,
            channel,
            peer: 0,
            orig_len: 10,
            captured_len: captured,
            segment: 0,
            conn: ConnTuple::default(),
        }
    }

    #[test]
    fn chunk_with_payload() {
        let mut b = as_bytes(&chunk_record(3, FdKind::Pipe, 99));
        b.extend_from_slice(b"abc");
        let Record::Chunk(c) = Decoder::new().decode(&b).unwrap() else {
            panic!()
        };
        assert_eq!(
            (c.proc.pid, c.proc.start_ns, c.comm.as_str(), c.data.as_slice()),
            (5, 7, "node", &b"abc"[..])
        );
        assert_eq!(c.channel, 99, "pipe inodes are kept");
        assert!(c.has_gap());
    }

    #[test]
    fn socket_addresses_are_hidden_but_stable() {
        let d = Decoder::new();
        let b = as_bytes(&chunk_record(0, FdKind::UnixStream, 0xffff_8880_1234_5678));
        let (Record::Chunk(a), Record::Chunk(c)) = (d.decode(&b).unwrap(), d.decode(&b).unwrap()) else {
            panic!()
        };
        assert_ne!(a.channel, 0xffff_8880_1234_5678);
        assert_eq!(a.channel, c.channel);
    }

    #[test]
    fn writer_notices_carry_the_writer_and_a_hidden_channel() {
        let d = Decoder::new();
        let mut r = chunk_record(0, FdKind::UnixStream, 0xffff_8880_1234_5678);
        r.header = header(RecordKind::WriterNotice);
        r.direction = Direction::Egress as u8;
        r.fd = 4;
        let Record::WriterNotice { notice, comm, uid, gid } = d.decode(&as_bytes(&r)).unwrap() else {
            panic!("not a writer notice")
        };
        assert_eq!(
            (notice.proc.pid, notice.proc.start_ns, notice.fd, notice.fd_kind),
            (5, 7, 4, FdKind::UnixStream)
        );
        assert_eq!((comm.as_str(), uid, gid), ("node", 1, 2));
        let Record::Chunk(c) = d
            .decode(&as_bytes(&chunk_record(0, FdKind::UnixStream, 0xffff_8880_1234_5678)))
            .unwrap()
        else {
            panic!()
        };
        assert_ne!(notice.channel, 0xffff_8880_1234_5678);
        assert_eq!(
            notice.channel, c.channel,
            "the notice names the channel the reader's chunks do"
        );
    }

    #[test]
    fn a_batch_hands_its_writer_notices_before_its_chunks() {
        let d = Decoder::new();
        let decode = |r: &ChunkRecord| d.decode(&as_bytes(r)).unwrap();
        let mut read = chunk_record(0, FdKind::Pipe, 1);
        read.fd = 3;
        let mut other = chunk_record(0, FdKind::Pipe, 2);
        other.fd = 4;
        let mut notice = chunk_record(0, FdKind::Pipe, 1);
        notice.header = header(RecordKind::WriterNotice);
        notice.direction = Direction::Egress as u8;
        notice.fd = 1;
        // As the ring can hold them: the reader's chunk, another stream's,
        // then the notice of the write the first chunk came from.
        let mut batch = Batch::default();
        for r in [&read, &other, &notice] {
            batch.push(decode(r));
        }
        let order: Vec<(bool, i32)> = batch
            .into_records()
            .map(|r| match r {
                Record::WriterNotice { notice, .. } => (true, notice.fd),
                Record::Chunk(c) => (false, c.fd),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            order,
            [(true, 1), (false, 3), (false, 4)],
            "chunks keep their order after the notice"
        );
    }

    #[test]
    fn malformed_records_are_errors() {
        let d = Decoder::new();
        assert!(matches!(d.decode(&[0u8; 3]), Err(DecodeError::Short(3))));
        let b = as_bytes(&chunk_record(100, FdKind::Pipe, 1));
        assert!(matches!(
            d.decode(&b),
            Err(DecodeError::Payload {
                claimed: 100,
                present: 0
            })
        ));
        let mut h = header(RecordKind::Chunk);
        h.abi = 999;
        assert!(matches!(d.decode(&as_bytes(&h)), Err(DecodeError::Abi(999))));
        let mut h = header(RecordKind::Chunk);
        h.kind = 77;
        assert!(matches!(d.decode(&as_bytes(&h)), Err(DecodeError::Kind(77))));
    }

    #[test]
    fn process_records() {
        let r = ProcessRecord {
            header: header(RecordKind::Fork),
            parent_tgid: 1,
            reason: TrackReason::Inherited as u32,
            parent_start_ns: 2,
        };
        let Record::Process { lifecycle, comm } = Decoder::new().decode(&as_bytes(&r)).unwrap() else {
            panic!()
        };
        assert_eq!(lifecycle.kind, LifecycleKind::Fork);
        assert_eq!(lifecycle.parent, Some(ProcKey { pid: 1, start_ns: 2 }));
        assert_eq!((lifecycle.reason, comm.as_str()), (TrackReason::Inherited, "node"));
    }

    #[test]
    fn exec_notices_name_the_process() {
        let r = ProcessRecord {
            header: header(RecordKind::ExecNotice),
            parent_tgid: 0,
            reason: TrackReason::None as u32,
            parent_start_ns: 0,
        };
        assert!(matches!(
            Decoder::new().decode(&as_bytes(&r)).unwrap(),
            Record::ExecNotice { pid: 5 }
        ));
    }
}
