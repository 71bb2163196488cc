//! Reads process identity from `/proc` with the parsers of [`crate::identity`].
//! Identity is checked against the kernel's process start time so a reused
//! pid never lends its identity to another process. The root is
//! configurable so tests can use a fake tree.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
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

/// The user database of the node: `<proc_root>/1/root/etc/passwd` (the
/// files of pid 1, the host's init when the agent shares the host's PID
/// namespace, as the DaemonSet does) when it can be read, else
/// `/etc/passwd`. In a container, `/etc/passwd` is the image's, which names
/// none of the node's users.
pub fn node_passwd(proc_root: &Path) -> PathBuf {
    let host = proc_root.join("1/root/etc/passwd");
    if fs::read(&host).is_ok() {
        host
    } else {
        PathBuf::from("/etc/passwd")
    }
}

/// User databases of mount namespaces seen lately, at most this many.
const MAX_USER_DATABASES: usize = 256;
/// A namespace's /etc/passwd is read again after this long.
const USER_DATABASE_TTL: Duration = Duration::from_secs(60);

/// uid → user name, as one `/etc/passwd` says.
type UserDatabase = Arc<HashMap<u32, String>>;

/// Reads process identities from a `/proc` tree.
pub struct ProcReader {
    root: PathBuf,
    ticks_per_second: u64,
    /// The node's users: for processes whose own files cannot be read.
    users: HashMap<u32, String>,
    /// uid → name of each mount namespace, from the `/etc/passwd` its
    /// processes see (`/proc/<pid>/root/etc/passwd`).
    by_namespace: Mutex<HashMap<u64, (Instant, Option<UserDatabase>)>>,
}

impl ProcReader {
    /// A reader of `proc_root` (normally `/proc`); user names come from the
    /// `/etc/passwd` each process sees, and from `etc_passwd` for those whose
    /// files cannot be read.
    pub fn new(proc_root: impl Into<PathBuf>, etc_passwd: &Path) -> Self {
        let users = fs::read_to_string(etc_passwd)
            .map(|s| parse_passwd(&s))
            .unwrap_or_default();
        Self {
            root: proc_root.into(),
            ticks_per_second: clock_ticks_per_second(),
            users,
            by_namespace: Mutex::new(HashMap::new()),
        }
    }

    /// The name of `uid` as the process in `dir` (mount namespace `mnt_ns`)
    /// sees it: the node's name for host processes, the image's for
    /// processes in containers (what `ps` shows inside them), whatever
    /// namespace the agent itself runs in.
    fn user_name(&self, dir: &Path, mnt_ns: Option<u64>, uid: u32) -> Option<String> {
        let Some(ns) = mnt_ns else {
            return self.users.get(&uid).cloned();
        };
        let mut cache = self.by_namespace.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = cache.get(&ns).is_some_and(|(at, _)| at.elapsed() < USER_DATABASE_TTL);
        if !fresh {
            if cache.len() >= MAX_USER_DATABASES {
                cache.clear();
            }
            let db = fs::read_to_string(dir.join("root/etc/passwd"))
                .ok()
                .map(|s| Arc::new(parse_passwd(&s)));
            cache.insert(ns, (Instant::now(), db));
        }
        match &cache[&ns].1 {
            Some(db) => db.get(&uid).cloned(),
            None => self.users.get(&uid).cloned(),
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
        info.user = self.user_name(&dir, info.mnt_ns, info.uid);
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
    fn user_names_come_from_the_files_of_pid_1() {
        let root = std::env::temp_dir().join(format!("procfs-passwd-{}", std::process::id()));
        let etc = root.join("1/root/etc");
        std::fs::create_dir_all(&etc).unwrap();
        // No passwd under pid 1's root: the agent's own.
        assert_eq!(node_passwd(&root), PathBuf::from("/etc/passwd"));
        std::fs::write(etc.join("passwd"), "alice:x:1234:1234::/home/alice:/bin/sh\n").unwrap();
        assert_eq!(node_passwd(&root), etc.join("passwd"));
        let r = ProcReader::new("/proc", &node_passwd(&root));
        // A pid that does not exist: the uid the kernel reported is named.
        assert_eq!(r.read(0x3fff_fff0, 0, "x", 1234, 1234).user.as_deref(), Some("alice"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn user_names_come_from_the_passwd_the_process_sees() {
        // A fake /proc holding our own stat (so the process is "alive"), a
        // mount namespace link, and a root whose /etc/passwd names uid 4321.
        let root = std::env::temp_dir().join(format!("procfs-ns-passwd-{}", std::process::id()));
        let pid = std::process::id();
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(dir.join("root/etc")).unwrap();
        std::fs::create_dir_all(dir.join("ns")).unwrap();
        std::fs::write(dir.join("stat"), std::fs::read("/proc/self/stat").unwrap()).unwrap();
        std::fs::write(
            dir.join("status"),
            "Name:\tx\nUid:\t4321\t4321\t4321\t4321\nGid:\t0\t0\t0\t0\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("mnt:[4026539999]", dir.join("ns/mnt")).unwrap();
        std::fs::write(dir.join("root/etc/passwd"), "node:x:4321:4321::/home/node:/bin/sh\n").unwrap();
        let r = ProcReader::new(&root, Path::new("/nonexistent"));
        let info = r.read(pid, 0, "x", 0, 0);
        assert_eq!(info.uid, 4321);
        assert_eq!(info.user.as_deref(), Some("node"));
        // Unreadable files: the node's database (here: none) is the fallback.
        std::fs::remove_file(dir.join("root/etc/passwd")).unwrap();
        let r = ProcReader::new(&root, Path::new("/nonexistent"));
        assert_eq!(r.read(pid, 0, "x", 0, 0).user, None);
        std::fs::remove_dir_all(&root).unwrap();
    }

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
