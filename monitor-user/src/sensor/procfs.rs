//! Reads process identity from `/proc` with the parsers of [`crate::identity`].
//! Identity is checked against the kernel's process start time so a reused
//! pid never lends its identity to another process. The root is
//! configurable so tests can use a fake tree.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use crate::{
    identity::{
        container_id_from_cgroup, namespace_inode, parse_cgroup, parse_cmdline, parse_stat, parse_status_ids,
        pod_uid_from_cgroup, systemd_unit_from_cgroup, ProcessInfo,
    },
    redact,
};

/// Clock ticks per second for `/proc/<pid>/stat` start times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Reads process identities from a `/proc` tree.
pub struct ProcReader {
    root: PathBuf,
    ticks_per_second: u64,
    users: HashMap<u32, String>,
}

impl ProcReader {
    /// A reader of `proc_root` (normally `/proc`); user names come from
    /// `etc_passwd` when it can be read.
    pub fn new(proc_root: impl Into<PathBuf>, etc_passwd: &Path) -> Self {
        let users = fs::read_to_string(etc_passwd)
            .map(|s| parse_passwd(&s))
            .unwrap_or_default();
        Self {
            root: proc_root.into(),
            ticks_per_second: clock_ticks_per_second(),
            users,
        }
    }

    /// Identity of process `pid` started at `start_ns`. Fields that cannot be
    /// read stay empty; `complete` is false if `/proc/<pid>` is gone or
    /// belongs to a process with another start time (pid reuse).
    pub fn read(&self, pid: u32, start_ns: u64, comm: &str, uid: u32, gid: u32) -> ProcessInfo {
        let mut info = ProcessInfo {
            pid,
            start_ns,
            comm: comm.to_owned(),
            uid,
            gid,
            user: self.users.get(&uid).cloned(),
            ..Default::default()
        };
        let dir = self.root.join(pid.to_string());
        let Some(stat) = fs::read_to_string(dir.join("stat")).ok().and_then(|s| parse_stat(&s)) else {
            return info;
        };
        let ns_per_tick = 1_000_000_000 / self.ticks_per_second.max(1);
        if start_ns != 0 && stat.start_ticks != start_ns / ns_per_tick {
            return info; // another process now holds this pid
        }
        info.ppid = stat.ppid;
        info.comm = stat.comm;
        info.exe = fs::read_link(dir.join("exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        info.cmdline = redact::scrub_args(&parse_cmdline(&fs::read(dir.join("cmdline")).unwrap_or_default()));
        if let Ok(status) = fs::read_to_string(dir.join("status")) {
            let (u, g) = parse_status_ids(&status);
            info.uid = u.unwrap_or(uid);
            info.gid = g.unwrap_or(gid);
            info.user = self.users.get(&info.uid).cloned();
        }
        info.cgroup = fs::read_to_string(dir.join("cgroup"))
            .map(|s| parse_cgroup(&s))
            .unwrap_or_default();
        info.container_id = container_id_from_cgroup(&info.cgroup);
        info.pod_uid = pod_uid_from_cgroup(&info.cgroup);
        info.systemd_unit = systemd_unit_from_cgroup(&info.cgroup);
        let ns = |name: &str| {
            fs::read_link(dir.join("ns").join(name))
                .ok()
                .and_then(|l| namespace_inode(&l.to_string_lossy()))
        };
        info.mnt_ns = ns("mnt");
        info.pid_ns = ns("pid");
        info.complete = true;
        info
    }

    /// Reads `/proc/<pid>/stat` start time converted to ns (tick precision),
    /// for processes found by scanning `/proc` rather than by the kernel.
    pub fn start_ns_of(&self, pid: u32) -> Option<u64> {
        let stat = parse_stat(&fs::read_to_string(self.root.join(pid.to_string()).join("stat")).ok()?)?;
        Some(stat.start_ticks * (1_000_000_000 / self.ticks_per_second.max(1)))
    }
}

/// uid to name from `/etc/passwd` content.
pub fn parse_passwd(s: &str) -> HashMap<u32, String> {
    s.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_namespaces() {
        let pid = std::process::id();
        let me = ProcReader::new("/proc", Path::new("/etc/passwd"));
        let info = me.read(pid, me.start_ns_of(pid).unwrap(), "x", 0, 0);
        let own = namespace_inode(&std::fs::read_link("/proc/self/ns/mnt").unwrap().to_string_lossy());
        assert_eq!(info.mnt_ns, own);
        assert!(info.pid_ns.is_some());
    }

    #[test]
    fn reads_self_and_detects_pid_reuse() {
        let r = ProcReader::new("/proc", Path::new("/etc/passwd"));
        let pid = std::process::id();
        let start = r.start_ns_of(pid).unwrap();
        let me = r.read(pid, start, "x", 0, 0);
        assert!(me.complete);
        assert!(!me.exe.is_empty());
        // A start time one second off describes another process.
        let other = r.read(pid, start + 1_000_000_000, "x", 0, 0);
        assert!(!other.complete);
        assert!(other.exe.is_empty());
    }
}
