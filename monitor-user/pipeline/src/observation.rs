//! What the sensor tells the pipeline.
//!
//! The pipeline ([`crate::pipeline`]) is a pure function of the sequence of
//! [`Observation`]s it receives: the live sensor produces them from the
//! kernel ring buffer and `/proc`, a recording replays them from a file
//! ([`crate::record`]). Anything that influences events (process identity,
//! time passing, capture counters) is therefore an observation, so that a
//! replay reproduces the live output exactly.

use monitor_common::{ConnTuple, Counter, Direction, FdKind, Syscall, TrackReason};
use serde::{Deserialize, Serialize};

use crate::identity::{kubernetes::WorkloadUpdate, ProcessInfo};

/// A process, told apart from earlier holders of the same pid by its start
/// time (`task_struct.start_boottime`, nanoseconds since boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcKey {
    /// Process id (tgid) in the initial pid namespace.
    pub pid: u32,
    /// Start time (`task_struct.start_boottime`): nanoseconds since boot (`CLOCK_BOOTTIME`).
    pub start_ns: u64,
}

/// Bytes moved by one system call (or one iovec segment of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// `CLOCK_BOOTTIME` nanoseconds.
    pub ts_ns: u64,
    /// The process that made the call.
    pub proc: ProcKey,
    /// Thread id of the caller (initial pid namespace).
    pub tid: u32,
    /// Kernel task name (at most 15 bytes).
    pub comm: String,
    /// Real uid of the caller, in the initial user namespace.
    pub uid: u32,
    /// Real gid of the caller, in the initial user namespace.
    pub gid: u32,
    /// cgroup v2 id of the caller (inode number of its cgroup directory).
    pub cgroup_id: u64,
    /// File descriptor the call used; for TLS chunks, the socket the `SSL` object is bound to (-1 while unknown).
    pub fd: i32,
    /// The system call (or TLS library function) that moved the bytes.
    pub syscall: Syscall,
    /// Ingress: the process received the bytes; egress: it sent them.
    pub direction: Direction,
    /// What `fd` refers to: pipe, unix socket, TCP socket, TLS plaintext or other.
    pub fd_kind: FdKind,
    /// `monitor_common::chunk_flags` bits.
    pub flags: u8,
    /// Inode number of the pipe or socket behind `fd`; for TLS chunks, the address of the `SSL` object.
    pub inode: u64,
    /// Channel identity shared by both ends (see `ChunkRecord::channel`);
    /// socket addresses are replaced by keyed hashes before they get here.
    pub channel: u64,
    /// Unix sockets: keyed hash of the socket at the other end (0 if unknown); 0 for other kinds.
    pub peer: u64,
    /// Bytes the call moved; `data.len() < orig_len` when truncated.
    pub orig_len: u64,
    /// Index of the iovec segment for readv/writev/recvmsg/sendmsg, else 0.
    pub segment: u32,
    /// Endpoints of the TCP socket (for TLS chunks, the bound socket's); `family` is 0 when there is none.
    pub conn: ConnTuple,
    /// Captured payload bytes (at most the capture cap).
    pub data: Vec<u8>,
}

impl Chunk {
    /// True when the kernel cut the payload at the capture cap (or failed to
    /// copy it): the stream has a gap after `data`.
    pub fn has_gap(&self) -> bool {
        (self.data.len() as u64) < self.orig_len
    }

    /// Tests `monitor_common::chunk_flags` bits.
    pub fn flag(&self, bit: u8) -> bool {
        self.flags & bit != 0
    }
}

/// A process writes into a local channel (pipe or unix socket) whose reading
/// end is captured. The kernel captures local IPC once, at the reader; the
/// writer gets this payload-less notice, once per stream (again if the ring
/// had no room for it), so the pipeline
/// knows which process sits at the other end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterNotice {
    /// `CLOCK_BOOTTIME` nanoseconds.
    pub ts_ns: u64,
    /// The writing process.
    pub proc: ProcKey,
    /// The writer's file descriptor.
    pub fd: i32,
    /// Pipe or unix socket (notices of other kinds carry nothing the pipeline uses).
    pub fd_kind: FdKind,
    /// Channel identity shared with the reader's chunks (`Chunk::channel`).
    pub channel: u64,
}

/// Process life-cycle transitions of tracked processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleKind {
    /// A tracked process forked; `Lifecycle::proc` is the child.
    Fork,
    /// A tracked process called execve.
    Exec,
    /// A tracked process exited.
    Exit,
}

/// A fork, exec or exit reported by the kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// Which transition it is.
    pub kind: LifecycleKind,
    /// When the kernel reported it: `CLOCK_BOOTTIME` nanoseconds.
    pub ts_ns: u64,
    /// The child for forks, the process itself otherwise.
    pub proc: ProcKey,
    /// Fork: the parent. Exec/exit: the parent's pid (start time 0).
    pub parent: Option<ProcKey>,
    /// Why the kernel tracks the process (recordings store its name).
    #[serde(with = "track_reason_name")]
    pub reason: TrackReason,
}

/// A tracking reason stored by its name, so recordings read the same
/// whatever the kernel's wire values.
mod track_reason_name {
    use monitor_common::TrackReason;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(r: &TrackReason, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(r.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TrackReason, D::Error> {
        Ok(TrackReason::from_name(&String::deserialize(d)?))
    }
}

/// A counter the sensor reports: one of the kernel's, or one the sensor
/// keeps itself. Recordings store it by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CaptureCounter {
    /// The kernel's per-CPU counter, summed over CPUs.
    Kernel(Counter),
    /// TLS library files currently probed (a gauge).
    TlsProbeTargets,
    /// Failed TLS attachments (a counter).
    TlsAttachErrors,
    /// Go programs with `crypto/tls` not probed (unknown version or
    /// architecture, damaged tables; a counter).
    GoTlsRefused,
    /// Go programs with `crypto/tls` not probed because their strings name
    /// no MCP method (a counter).
    GoTlsNotMcp,
    /// Bun executables whose BoringSSL functions were not recognised (a
    /// counter).
    BoringSslRefused,
    /// Bun executables whose BoringSSL probes' first capture read as
    /// plaintext (a counter).
    BoringSslVerified,
    /// Probed files whose probes were taken off: deleted, and no process
    /// used them any more (a counter).
    TlsProbesRemoved,
    /// New executables the TLS scan had no room to look at at once (a
    /// counter; the periodic scan finds them later).
    ExecNoticesDropped,
}

impl CaptureCounter {
    /// The name recordings store.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kernel(c) => c.name(),
            Self::TlsProbeTargets => "tls_probe_targets",
            Self::TlsAttachErrors => "tls_attach_errors",
            Self::GoTlsRefused => "go_tls_refused",
            Self::GoTlsNotMcp => "go_tls_not_mcp",
            Self::BoringSslRefused => "boringssl_refused",
            Self::BoringSslVerified => "boringssl_verified",
            Self::TlsProbesRemoved => "tls_probes_removed",
            Self::ExecNoticesDropped => "exec_notices_dropped",
        }
    }

    /// The counter of a stored name; `None` for a name this version does not
    /// know (a recording of a newer agent).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "tls_probe_targets" => Some(Self::TlsProbeTargets),
            "tls_attach_errors" => Some(Self::TlsAttachErrors),
            "go_tls_refused" => Some(Self::GoTlsRefused),
            "go_tls_not_mcp" => Some(Self::GoTlsNotMcp),
            "boringssl_refused" => Some(Self::BoringSslRefused),
            "boringssl_verified" => Some(Self::BoringSslVerified),
            "tls_probes_removed" => Some(Self::TlsProbesRemoved),
            "exec_notices_dropped" => Some(Self::ExecNoticesDropped),
            _ => Counter::ALL.iter().find(|c| c.name() == name).map(|&c| Self::Kernel(c)),
        }
    }
}

/// Capture counters stored by name, so recordings stay readable when
/// counters are added; names this version does not know are skipped.
mod counter_names {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::CaptureCounter;

    pub fn serialize<S: Serializer>(v: &[(CaptureCounter, u64)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(c, n)| (c.name(), *n)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(CaptureCounter, u64)>, D::Error> {
        let named: Vec<(String, u64)> = Vec::deserialize(d)?;
        Ok(named
            .into_iter()
            .filter_map(|(name, n)| match CaptureCounter::from_name(&name) {
                Some(c) => Some((c, n)),
                None => {
                    log::debug!("skipping the unknown capture counter {name}");
                    None
                }
            })
            .collect())
    }
}

/// Cumulative capture counters read from the kernel (summed over CPUs) and
/// kept by the sensor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStats {
    /// Each counter's total so far.
    #[serde(with = "counter_names")]
    pub counters: Vec<(CaptureCounter, u64)>,
    /// Per eBPF program: name, runs, run time in ns (cumulative; zero unless
    /// the kernel's program statistics are on).
    #[serde(default)]
    pub programs: Vec<(String, u64, u64)>,
}

/// One input of the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// Bytes a tracked process read or wrote, as the kernel reported them.
    Chunk(Chunk),
    /// The writing end of a captured local channel.
    WriterNotice(WriterNotice),
    /// Identity of a process, sent before the first chunk that needs it and
    /// again after exec.
    Process(Box<ProcessInfo>),
    /// A fork, exec or exit of a tracked process.
    Lifecycle(Lifecycle),
    /// The capture counters' cumulative totals, read by the sensor at every tick.
    CaptureStats(CaptureStats),
    /// Time passes (`CLOCK_BOOTTIME` ns): lets the pipeline expire idle
    /// sessions and stale requests deterministically.
    Tick {
        /// The current time, `CLOCK_BOOTTIME` nanoseconds.
        ts_ns: u64,
    },
    /// A change in the pods of this node, from the Kubernetes pod watch.
    Workload(WorkloadChange),
}

/// A pod update and when it arrived (`CLOCK_BOOTTIME` ns).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadChange {
    /// When the update came from the pod watch: `CLOCK_BOOTTIME` nanoseconds.
    pub ts_ns: u64,
    /// The pod added, changed or deleted, or the pods a complete relist found.
    pub update: WorkloadUpdate,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_stored_by_name_and_unknown_names_are_skipped() {
        let stats = CaptureStats {
            counters: vec![
                (CaptureCounter::Kernel(Counter::Truncated), 3),
                (CaptureCounter::TlsAttachErrors, 1),
            ],
            programs: vec![],
        };
        let json = serde_json::to_string(&stats).unwrap();
        assert!(
            json.contains(r#"["truncated",3]"#) && json.contains(r#"["tls_attach_errors",1]"#),
            "{json}"
        );
        let newer = json.replace(r#"["truncated",3]"#, r#"["from_a_newer_agent",7],["truncated",3]"#);
        assert_eq!(serde_json::from_str::<CaptureStats>(&newer).unwrap(), stats);
        for c in Counter::ALL {
            assert_eq!(CaptureCounter::from_name(c.name()), Some(CaptureCounter::Kernel(c)));
        }
    }

    #[test]
    fn tracking_reasons_are_stored_by_name() {
        let l = Lifecycle {
            kind: LifecycleKind::Exec,
            ts_ns: 1,
            proc: ProcKey { pid: 2, start_ns: 3 },
            parent: None,
            reason: TrackReason::PortSelector,
        };
        let json = serde_json::to_string(&l).unwrap();
        assert!(json.contains(r#""reason":"port_selector""#), "{json}");
        assert_eq!(serde_json::from_str::<Lifecycle>(&json).unwrap(), l);
        let newer = json.replace("port_selector", "a_reason_of_a_newer_agent");
        assert_eq!(
            serde_json::from_str::<Lifecycle>(&newer).unwrap().reason,
            TrackReason::None
        );
    }
}
