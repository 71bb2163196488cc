//! Probes at offsets the agent found itself (BoringSSL in Bun executables),
//! checked against their first captures ([`mcp_monitor_pipeline::probe_check`]):
//! verified at the first that reads as plaintext, taken off after
//! [`CHECKED_CAPTURES`](mcp_monitor_pipeline::probe_check::CHECKED_CAPTURES)
//! that none did, and their build not probed again.
//!
//! A capture is tied to a probed file through the executable of the process
//! that made it (`/proc/<pid>/exe`, looked at once per process and only
//! while some file's probes are unverified).

use std::{collections::HashMap, os::unix::fs::MetadataExt, path::PathBuf};

use mcp_monitor_pipeline::{
    observation::{Chunk, ProcKey},
    probe_check::{ProbeCheck, Verdict},
};
use monitor_common::FdKind;

/// Processes whose executable is remembered; cleared past this (which
/// only means looking again).
const MAX_PROCESSES: usize = 4096;

/// Builds whose probes were found wrong; past this the oldest are not
/// remembered (a wrong build would be checked, and taken off, again).
const MAX_DISTRUSTED: usize = 64;

struct Unverified {
    path: String,
    build_id: Option<String>,
    check: ProbeCheck,
}

/// What a capture decided about the probes of one file.
pub(super) enum Outcome {
    /// The probes are right; nothing to do but say so.
    Verified,
    /// The probes of this file (device, inode) are wrong: to be taken off.
    Wrong((u64, u64)),
}

/// The files whose found probes have not been verified yet.
#[derive(Default)]
pub(super) struct FoundProbes {
    unverified: HashMap<(u64, u64), Unverified>,
    exe_of: HashMap<ProcKey, Option<(u64, u64)>>,
    distrusted: Vec<String>,
    proc_root: PathBuf,
}

impl FoundProbes {
    pub(super) fn new(proc_root: impl Into<PathBuf>) -> Self {
        FoundProbes {
            proc_root: proc_root.into(),
            ..Default::default()
        }
    }

    /// Whether probes of this build were found wrong in this run.
    pub(super) fn distrusts(&self, build_id: Option<&str>) -> bool {
        build_id.is_some_and(|b| self.distrusted.iter().any(|d| d == b))
    }

    /// Probes just attached to `file` (device, inode), to be checked.
    pub(super) fn attached(&mut self, file: (u64, u64), path: String, build_id: Option<String>) {
        self.unverified.insert(
            file,
            Unverified {
                path,
                build_id,
                check: ProbeCheck::default(),
            },
        );
    }

    /// The file's probes were taken off for another reason (deleted).
    pub(super) fn forget(&mut self, file: &(u64, u64)) {
        self.unverified.remove(file);
    }

    /// A process is gone: its executable is forgotten.
    pub(super) fn exited(&mut self, proc: &ProcKey) {
        self.exe_of.remove(proc);
    }

    /// Judges a capture if it came through probes still unverified.
    pub(super) fn observe(&mut self, c: &Chunk) -> Option<Outcome> {
        if self.unverified.is_empty() || c.fd_kind != FdKind::Tls {
            return None;
        }
        if self.exe_of.len() >= MAX_PROCESSES {
            self.exe_of.clear();
        }
        let root = &self.proc_root;
        let file = (*self.exe_of.entry(c.proc).or_insert_with(|| {
            std::fs::metadata(root.join(c.proc.pid.to_string()).join("exe"))
                .ok()
                .map(|m| (m.dev(), m.ino()))
        }))?;
        let u = self.unverified.get_mut(&file)?;
        let what = match c.syscall {
            monitor_common::Syscall::SslRead => "SSL_read",
            _ => "SSL_write",
        };
        match u.check.observe(&c.data) {
            Verdict::Pending => None,
            Verdict::Verified(kind) => {
                log::info!(
                    "TLS: the BoringSSL probes of {} are verified: their first capture (pid {}, {what}) is {}",
                    u.path,
                    c.proc.pid,
                    kind.describe()
                );
                self.unverified.remove(&file);
                Some(Outcome::Verified)
            }
            Verdict::Wrong { tls_records } => {
                let u = self.unverified.remove(&file)?;
                log::warn!(
                    "TLS: taking the BoringSSL probes of {} off: {} captures in a row were not plaintext, {tls_records} of them TLS records (the probes see ciphertext); its TLS traffic is not seen, and this build is not probed again in this run",
                    u.path,
                    mcp_monitor_pipeline::probe_check::CHECKED_CAPTURES
                );
                if let Some(b) = u.build_id {
                    if self.distrusted.len() >= MAX_DISTRUSTED {
                        self.distrusted.remove(0);
                    }
                    self.distrusted.push(b);
                }
                Some(Outcome::Wrong(file))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_common::{ConnTuple, Direction, Syscall};

    fn chunk(pid: u32, data: &[u8]) -> Chunk {
        Chunk {
            ts_ns: 0,
            proc: ProcKey { pid, start_ns: 1 },
            tid: pid,
            comm: "bun".into(),
            uid: 0,
            gid: 0,
            cgroup_id: 0,
            fd: -1,
            syscall: Syscall::SslWrite,
            direction: Direction::Egress,
            fd_kind: FdKind::Tls,
            flags: 0,
            inode: 0x1000,
            channel: 0,
            peer: 0,
            orig_len: data.len() as u64,
            segment: 0,
            conn: ConnTuple::default(),
            data: data.to_vec(),
        }
    }

    /// Our own process stands for the Bun process: its executable is the
    /// file whose probes are checked.
    fn own_exe() -> (u64, u64) {
        let m = std::fs::metadata("/proc/self/exe").unwrap();
        (m.dev(), m.ino())
    }

    #[test]
    fn verified_by_the_first_plaintext_of_a_process_running_the_file() {
        let mut f = FoundProbes::new("/proc");
        let pid = std::process::id();
        f.attached(own_exe(), "/bun".into(), Some("b1".into()));
        // Another executable's captures do not count.
        f.attached((u64::MAX, 1), "/other".into(), None);
        assert!(f.observe(&chunk(pid, &[0x80, 1, 2])).is_none());
        assert!(matches!(
            f.observe(&chunk(pid, b"POST /mcp HTTP/1.1\r\n")),
            Some(Outcome::Verified)
        ));
        // Checked once: later captures are not looked at.
        assert!(f.observe(&chunk(pid, b"POST /mcp HTTP/1.1\r\n")).is_none());
        assert!(!f.distrusts(Some("b1")));
    }

    #[test]
    fn taken_off_after_the_checked_captures_and_the_build_distrusted() {
        let mut f = FoundProbes::new("/proc");
        let pid = std::process::id();
        f.attached(own_exe(), "/bun".into(), Some("b1".into()));
        let mut outcome = None;
        for _ in 0..mcp_monitor_pipeline::probe_check::CHECKED_CAPTURES {
            assert!(outcome.is_none());
            outcome = f.observe(&chunk(pid, &[0x17, 3, 3, 0, 32, 0xaa]));
        }
        assert!(matches!(outcome, Some(Outcome::Wrong(_))));
        assert!(f.distrusts(Some("b1")));
        assert!(!f.distrusts(None));
        // Not a TLS capture, or nothing unverified: not looked at.
        let mut pipe = chunk(pid, b"{}");
        pipe.fd_kind = FdKind::Pipe;
        assert!(f.observe(&pipe).is_none());
    }
}
