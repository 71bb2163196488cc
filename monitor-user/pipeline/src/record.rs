//! Recordings: the observations of a live run, written to a file so that
//! `mcp-monitor replay` can run the same pipeline on them without root.
//!
//! Format version 1 (all integers little-endian; see docs/RECORDING.md):
//!
//! ```text
//! file    := magic "MCPMREC\0" | u32 version | u32 header_len | header (JSON) | record*
//! record  := u8 kind | u32 len | body[len]
//! kind 1  := chunk or writer notice, binary (layout in `encode_chunk`)
//! kind 2  := process identity, JSON (`ProcessInfo`)
//! kind 3  := process life cycle, JSON (`Lifecycle`)
//! kind 4  := capture counters, JSON (`CaptureStats`)
//! kind 5  := tick, u64 boot-time ns
//! ```
//!
//! Readers skip record kinds they do not know (forward compatibility) and
//! stop with an error naming the byte offset on anything malformed. A
//! record cut short at the end of the file (the agent was killed while
//! writing) ends the replay with a warning, not an error.

use std::io::{self, BufRead, Write};

use monitor_common::{ConnTuple, Direction, FdKind, Syscall};
use serde::{Deserialize, Serialize};

use crate::observation::{Chunk, Observation, ProcKey, WriterNotice};

/// File magic.
pub const MAGIC: &[u8; 8] = b"MCPMREC\0";
/// Format version written by this build.
pub const VERSION: u32 = 1;
/// Largest record body accepted when reading.
pub const MAX_RECORD: usize = 64 << 20;

const KIND_CHUNK: u8 = 1;
const KIND_PROCESS: u8 = 2;
const KIND_LIFECYCLE: u8 = 3;
const KIND_STATS: u8 = 4;
const KIND_TICK: u8 = 5;
const KIND_WORKLOAD: u8 = 6;

/// Metadata at the start of a recording.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordingHeader {
    /// Version of the agent that wrote it.
    pub agent_version: String,
    /// Name of the recording host; replays use it for `{hostname}` in SPIFFE IDs.
    pub hostname: String,
    /// Unix ns = boot ns + this offset.
    pub boot_offset_ns: i128,
    /// Kernel capture cap when recording.
    pub capture_cap: u32,
    /// Unix ns when the recording started.
    pub started_unix_ns: i128,
}

/// Errors reading a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file does not start with [`MAGIC`].
    #[error("not a recording (bad magic); expected a file written by `mcp-monitor run --record`")]
    BadMagic,
    /// The file's format version (given) is not [`VERSION`].
    #[error("recording format version {0} is not supported by this build (supports {VERSION})")]
    Version(u32),
    /// A header or record that cannot be decoded.
    #[error("recording is malformed at byte {offset}: {what}")]
    Malformed {
        /// Byte offset in the file where the bad header or record starts.
        offset: u64,
        /// What is wrong with it.
        what: String,
    },
    /// Reading failed (a file cut short inside its fixed header included).
    #[error("reading the recording failed: {0}")]
    Io(#[from] io::Error),
}

/// Writes observations to a recording.
pub struct Recorder<W: Write> {
    out: W,
    scratch: Vec<u8>,
}

impl<W: Write> Recorder<W> {
    /// Writes the file header.
    pub fn new(mut out: W, header: &RecordingHeader) -> io::Result<Self> {
        let h = serde_json::to_vec(header)?;
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&(h.len() as u32).to_le_bytes())?;
        out.write_all(&h)?;
        Ok(Self {
            out,
            scratch: Vec::new(),
        })
    }

    /// Appends one observation.
    pub fn write(&mut self, obs: &Observation) -> io::Result<()> {
        self.scratch.clear();
        let kind = match obs {
            Observation::Chunk(c) => {
                encode_chunk(c, false, &mut self.scratch);
                KIND_CHUNK
            }
            Observation::WriterNotice(n) => {
                encode_chunk(&notice_as_chunk(n), true, &mut self.scratch);
                KIND_CHUNK
            }
            Observation::Process(p) => {
                serde_json::to_writer(&mut self.scratch, p)?;
                KIND_PROCESS
            }
            Observation::Lifecycle(l) => {
                serde_json::to_writer(&mut self.scratch, l)?;
                KIND_LIFECYCLE
            }
            Observation::CaptureStats(s) => {
                serde_json::to_writer(&mut self.scratch, s)?;
                KIND_STATS
            }
            Observation::Tick { ts_ns } => {
                self.scratch.extend_from_slice(&ts_ns.to_le_bytes());
                KIND_TICK
            }
            Observation::Workload(w) => {
                serde_json::to_writer(&mut self.scratch, w)?;
                KIND_WORKLOAD
            }
        };
        self.out.write_all(&[kind])?;
        self.out.write_all(&(self.scratch.len() as u32).to_le_bytes())?;
        self.out.write_all(&self.scratch)
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Returns the underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Fixed part of an encoded chunk, before comm and data.
const CHUNK_FIXED: usize =
    8 + 4 + 8 + 4 + 4 + 4 + 8 + 4 + 1 + 1 + 1 + 1 + 1 + 8 + 8 + 8 + 8 + 4 + 2 + 2 + 2 + 16 + 16 + 1 + 4;

/// Chunk layout: ts_ns u64, pid u32, start_ns u64, tid u32, uid u32,
/// gid u32, cgroup_id u64, fd i32, syscall u8, direction u8, fd_kind u8,
/// flags u8, writer_notice u8, inode u64, channel u64, peer u64,
/// orig_len u64, segment u32, family u16, local_port u16, remote_port u16,
/// local_addr [16], remote_addr [16], comm_len u8, data_len u32, comm, data.
/// A writer notice is stored as a payload-less chunk whose `writer_notice`
/// byte is 1, the layout recordings have always used for it.
fn encode_chunk(c: &Chunk, writer_notice: bool, out: &mut Vec<u8>) {
    out.reserve(CHUNK_FIXED + c.comm.len() + c.data.len());
    out.extend_from_slice(&c.ts_ns.to_le_bytes());
    out.extend_from_slice(&c.proc.pid.to_le_bytes());
    out.extend_from_slice(&c.proc.start_ns.to_le_bytes());
    out.extend_from_slice(&c.tid.to_le_bytes());
    out.extend_from_slice(&c.uid.to_le_bytes());
    out.extend_from_slice(&c.gid.to_le_bytes());
    out.extend_from_slice(&c.cgroup_id.to_le_bytes());
    out.extend_from_slice(&c.fd.to_le_bytes());
    out.extend_from_slice(&[
        c.syscall as u8,
        c.direction as u8,
        c.fd_kind as u8,
        c.flags,
        writer_notice as u8,
    ]);
    out.extend_from_slice(&c.inode.to_le_bytes());
    out.extend_from_slice(&c.channel.to_le_bytes());
    out.extend_from_slice(&c.peer.to_le_bytes());
    out.extend_from_slice(&c.orig_len.to_le_bytes());
    out.extend_from_slice(&c.segment.to_le_bytes());
    out.extend_from_slice(&c.conn.family.to_le_bytes());
    out.extend_from_slice(&c.conn.local_port.to_le_bytes());
    out.extend_from_slice(&c.conn.remote_port.to_le_bytes());
    out.extend_from_slice(&c.conn.local_addr);
    out.extend_from_slice(&c.conn.remote_addr);
    let comm = &c.comm.as_bytes()[..c.comm.len().min(255)];
    out.push(comm.len() as u8);
    out.extend_from_slice(&(c.data.len() as u32).to_le_bytes());
    out.extend_from_slice(comm);
    out.extend_from_slice(&c.data);
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_le_bytes(s.try_into().unwrap()))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|s| u32::from_le_bytes(s.try_into().unwrap()))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|s| u64::from_le_bytes(s.try_into().unwrap()))
    }
    fn arr16(&mut self) -> Option<[u8; 16]> {
        self.take(16).map(|s| s.try_into().unwrap())
    }
}

/// The fields of a writer notice in a chunk record (the others are zero).
fn notice_as_chunk(n: &WriterNotice) -> Chunk {
    Chunk {
        ts_ns: n.ts_ns,
        proc: n.proc,
        tid: n.proc.pid,
        comm: String::new(),
        uid: 0,
        gid: 0,
        cgroup_id: 0,
        fd: n.fd,
        syscall: Syscall::Write,
        direction: Direction::Egress,
        fd_kind: n.fd_kind,
        flags: 0,
        inode: 0,
        channel: n.channel,
        peer: 0,
        orig_len: 0,
        segment: 0,
        conn: ConnTuple::default(),
        data: Vec::new(),
    }
}

/// Decodes a chunk record: a chunk, or a writer notice; `None` if it is
/// malformed.
pub fn decode_chunk(body: &[u8]) -> Option<Observation> {
    let mut c = Cursor { b: body, pos: 0 };
    let ts_ns = c.u64()?;
    let pid = c.u32()?;
    let start_ns = c.u64()?;
    let tid = c.u32()?;
    let uid = c.u32()?;
    let gid = c.u32()?;
    let cgroup_id = c.u64()?;
    let fd = c.u32()? as i32;
    let syscall = Syscall::from_u8(c.u8()?)?;
    let direction = Direction::from_u8(c.u8()?)?;
    let fd_kind = FdKind::from_u8(c.u8()?);
    let flags = c.u8()?;
    let writer_notice = c.u8()? != 0;
    let inode = c.u64()?;
    let channel = c.u64()?;
    let peer = c.u64()?;
    let orig_len = c.u64()?;
    let segment = c.u32()?;
    let conn = ConnTuple {
        family: c.u16()?,
        local_port: c.u16()?,
        remote_port: c.u16()?,
        _pad: 0,
        local_addr: c.arr16()?,
        remote_addr: c.arr16()?,
    };
    let comm_len = c.u8()? as usize;
    let data_len = c.u32()? as usize;
    let comm = String::from_utf8_lossy(c.take(comm_len)?).into_owned();
    let data = c.take(data_len)?.to_vec();
    if c.pos != body.len() {
        return None;
    }
    if writer_notice {
        return Some(Observation::WriterNotice(WriterNotice {
            ts_ns,
            proc: ProcKey { pid, start_ns },
            fd,
            fd_kind,
            channel,
        }));
    }
    Some(Observation::Chunk(Chunk {
        ts_ns,
        proc: ProcKey { pid, start_ns },
        tid,
        comm,
        uid,
        gid,
        cgroup_id,
        fd,
        syscall,
        direction,
        fd_kind,
        flags,
        inode,
        channel,
        peer,
        orig_len,
        segment,
        conn,
        data,
    }))
}

/// Reads observations from a recording.
pub struct Reader<R: BufRead> {
    input: R,
    offset: u64,
    header: RecordingHeader,
    body: Vec<u8>,
    /// Set when the file ended inside a record.
    pub truncated_tail: bool,
    /// Records of unknown kinds that were skipped.
    pub skipped_unknown: u64,
}

impl<R: BufRead> Reader<R> {
    /// Reads and checks the file header.
    pub fn new(mut input: R) -> Result<Self, RecordError> {
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic).map_err(|_| RecordError::BadMagic)?;
        if &magic != MAGIC {
            return Err(RecordError::BadMagic);
        }
        let mut w = [0u8; 4];
        input.read_exact(&mut w)?;
        let version = u32::from_le_bytes(w);
        if version != VERSION {
            return Err(RecordError::Version(version));
        }
        input.read_exact(&mut w)?;
        let hlen = u32::from_le_bytes(w) as usize;
        if hlen > 1 << 20 {
            return Err(RecordError::Malformed {
                offset: 16,
                what: format!("header length {hlen} is implausible"),
            });
        }
        let mut h = vec![0u8; hlen];
        input.read_exact(&mut h)?;
        let header = serde_json::from_slice(&h).map_err(|e| RecordError::Malformed {
            offset: 16,
            what: format!("header is not valid JSON: {e}"),
        })?;
        Ok(Self {
            input,
            offset: 16 + hlen as u64,
            header,
            body: Vec::new(),
            truncated_tail: false,
            skipped_unknown: 0,
        })
    }

    /// The header read from the file.
    pub fn header(&self) -> &RecordingHeader {
        &self.header
    }

    /// Reads exactly `buf.len()` bytes; `Ok(false)` on a clean or cut EOF.
    fn fill(&mut self, buf_len: usize, at_record_start: bool) -> Result<bool, RecordError> {
        self.body.resize(buf_len, 0);
        let mut got = 0;
        while got < buf_len {
            match self.input.read(&mut self.body[got..]) {
                Ok(0) => {
                    if !(at_record_start && got == 0) {
                        self.truncated_tail = true;
                    }
                    return Ok(false);
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// The next observation, `Ok(None)` at the end.
    pub fn next_observation(&mut self) -> Result<Option<Observation>, RecordError> {
        loop {
            if !self.fill(5, true)? {
                return Ok(None);
            }
            let kind = self.body[0];
            let len = u32::from_le_bytes(self.body[1..5].try_into().unwrap()) as usize;
            let at = self.offset;
            if len > MAX_RECORD {
                return Err(RecordError::Malformed {
                    offset: at,
                    what: format!("record of {len} bytes exceeds {MAX_RECORD}"),
                });
            }
            if !self.fill(len, false)? {
                return Ok(None);
            }
            self.offset += 5 + len as u64;
            let bad = |what: String| RecordError::Malformed { offset: at, what };
            let obs = match kind {
                KIND_CHUNK => decode_chunk(&self.body).ok_or_else(|| bad("malformed chunk".into()))?,
                KIND_PROCESS => Observation::Process(Box::new(
                    serde_json::from_slice(&self.body).map_err(|e| bad(format!("process record: {e}")))?,
                )),
                KIND_LIFECYCLE => Observation::Lifecycle(
                    serde_json::from_slice(&self.body).map_err(|e| bad(format!("lifecycle record: {e}")))?,
                ),
                KIND_STATS => Observation::CaptureStats(
                    serde_json::from_slice(&self.body).map_err(|e| bad(format!("stats record: {e}")))?,
                ),
                KIND_TICK => {
                    let b: [u8; 8] = self
                        .body
                        .as_slice()
                        .try_into()
                        .map_err(|_| bad("tick of wrong size".into()))?;
                    Observation::Tick {
                        ts_ns: u64::from_le_bytes(b),
                    }
                }
                KIND_WORKLOAD => Observation::Workload(
                    serde_json::from_slice(&self.body).map_err(|e| bad(format!("workload record: {e}")))?,
                ),
                _ => {
                    self.skipped_unknown += 1;
                    continue;
                }
            };
            return Ok(Some(obs));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        identity::ProcessInfo,
        observation::{CaptureCounter, CaptureStats, Lifecycle, LifecycleKind},
    };
    use proptest::prelude::*;

    fn header() -> RecordingHeader {
        RecordingHeader {
            agent_version: "t".into(),
            hostname: "h".into(),
            boot_offset_ns: 123,
            capture_cap: 256 * 1024,
            started_unix_ns: 1,
        }
    }

    pub(crate) fn chunk(data: &[u8]) -> Chunk {
        Chunk {
            ts_ns: 42,
            proc: ProcKey { pid: 7, start_ns: 99 },
            tid: 8,
            comm: "node".into(),
            uid: 1000,
            gid: 1000,
            cgroup_id: 5,
            fd: 0,
            syscall: Syscall::Read,
            direction: Direction::Ingress,
            fd_kind: FdKind::Pipe,
            flags: 3,
            inode: 11,
            channel: 11,
            peer: 0,
            orig_len: data.len() as u64 + 5,
            segment: 0,
            conn: ConnTuple {
                family: 2,
                local_port: 1,
                remote_port: 2,
                _pad: 0,
                local_addr: [1; 16],
                remote_addr: [2; 16],
            },
            data: data.to_vec(),
        }
    }

    fn all_kinds() -> Vec<Observation> {
        vec![
            Observation::Process(Box::new(ProcessInfo {
                pid: 7,
                exe: "/usr/bin/node".into(),
                complete: true,
                ..Default::default()
            })),
            Observation::Chunk(chunk(b"{\"jsonrpc\":\"2.0\"}\n")),
            Observation::WriterNotice(WriterNotice {
                ts_ns: 43,
                proc: ProcKey { pid: 9, start_ns: 98 },
                fd: 1,
                fd_kind: FdKind::UnixStream,
                channel: 12,
            }),
            Observation::Lifecycle(Lifecycle {
                kind: LifecycleKind::Exit,
                ts_ns: 5,
                proc: ProcKey { pid: 7, start_ns: 99 },
                parent: None,
                reason: monitor_common::TrackReason::Discovered,
            }),
            Observation::CaptureStats(CaptureStats {
                counters: vec![(CaptureCounter::Kernel(monitor_common::Counter::Records), 3)],
                programs: vec![("sys_enter_read".into(), 4, 5)],
            }),
            Observation::Tick { ts_ns: 77 },
            Observation::Workload(crate::observation::WorkloadChange {
                ts_ns: 78,
                update: crate::identity::kubernetes::WorkloadUpdate::Synced { uids: vec!["u".into()] },
            }),
        ]
    }

    #[test]
    fn roundtrip_every_kind() {
        let mut rec = Recorder::new(Vec::new(), &header()).unwrap();
        for o in all_kinds() {
            rec.write(&o).unwrap();
        }
        let bytes = rec.into_inner();
        let mut r = Reader::new(&bytes[..]).unwrap();
        assert_eq!(r.header(), &header());
        let mut got = Vec::new();
        while let Some(o) = r.next_observation().unwrap() {
            got.push(o);
        }
        assert_eq!(got, all_kinds());
        assert!(!r.truncated_tail);
    }

    #[test]
    fn truncated_tail_ends_cleanly() {
        let mut rec = Recorder::new(Vec::new(), &header()).unwrap();
        for o in all_kinds() {
            rec.write(&o).unwrap();
        }
        let bytes = rec.into_inner();
        let cut = &bytes[..bytes.len() - 3];
        let mut r = Reader::new(cut).unwrap();
        let mut n = 0;
        while r.next_observation().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, all_kinds().len() - 1);
        assert!(r.truncated_tail);
    }

    #[test]
    fn rejects_foreign_files_and_unknown_versions() {
        assert!(matches!(
            Reader::new(&b"hello world, not a recording"[..]),
            Err(RecordError::BadMagic)
        ));
        let mut v2 = MAGIC.to_vec();
        v2.extend_from_slice(&2u32.to_le_bytes());
        assert!(matches!(Reader::new(&v2[..]), Err(RecordError::Version(2))));
    }

    #[test]
    fn skips_unknown_kinds() {
        let mut rec = Recorder::new(Vec::new(), &header()).unwrap();
        rec.write(&Observation::Tick { ts_ns: 1 }).unwrap();
        let mut bytes = rec.into_inner();
        bytes.extend_from_slice(&[99, 3, 0, 0, 0, 1, 2, 3]);
        bytes.extend_from_slice(&[KIND_TICK, 8, 0, 0, 0]);
        bytes.extend_from_slice(&2u64.to_le_bytes());
        let mut r = Reader::new(&bytes[..]).unwrap();
        assert_eq!(r.next_observation().unwrap(), Some(Observation::Tick { ts_ns: 1 }));
        assert_eq!(r.next_observation().unwrap(), Some(Observation::Tick { ts_ns: 2 }));
        assert_eq!(r.skipped_unknown, 1);
    }

    proptest! {
        #[test]
        fn arbitrary_records_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300), kind in 0u8..8) {
            let mut bytes = Recorder::new(Vec::new(), &header()).unwrap().into_inner();
            bytes.push(kind);
            bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&body);
            let mut r = Reader::new(&bytes[..]).unwrap();
            let _ = r.next_observation();
        }

        #[test]
        fn chunk_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..200), comm in "[a-z]{0,15}") {
            let mut c = chunk(&data);
            c.comm = comm;
            let mut out = Vec::new();
            encode_chunk(&c, false, &mut out);
            prop_assert_eq!(decode_chunk(&out), Some(Observation::Chunk(c)));
        }
    }
}
