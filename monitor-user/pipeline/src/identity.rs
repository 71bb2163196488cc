//! Process identity: who is behind a pid.
//!
//! The parsers here are pure (they take file contents); the agent's sensor
//! does the `/proc` reads with them (`sensor::procfs` in the agent crate).

use serde::{Deserialize, Serialize};

pub mod kubernetes;
pub mod spiffe;
pub mod workload;

/// Everything the monitor knows about a process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Process id (tgid) in the initial pid namespace: `pid` of the party in events.
    pub pid: u32,
    /// `CLOCK_BOOTTIME` ns (kernel `start_boottime`).
    pub start_ns: u64,
    /// The same instant as Unix time in ns (set by whoever knows the
    /// boot-to-wall offset).
    #[serde(default)]
    pub start_unix_ns: i64,
    /// Parent pid from `/proc/<pid>/stat` (0 when it could not be read): `ppid` in events.
    pub ppid: u32,
    /// Task name from `/proc/<pid>/stat`, else the kernel's: `comm` in events.
    pub comm: String,
    /// Path of the executable (`/proc/<pid>/exe`).
    pub exe: String,
    /// Command line with secret-looking values replaced by `[REDACTED]`.
    pub cmdline: Vec<String>,
    /// Real uid (`/proc/<pid>/status`, else the kernel's): `uid` in events.
    pub uid: u32,
    /// Real gid (`/proc/<pid>/status`, else the kernel's); not in events.
    pub gid: u32,
    /// User name from the host's `/etc/passwd`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// cgroup path (unified hierarchy when the process is placed there).
    pub cgroup: String,
    /// Container id (64 hex digits) found in the cgroup path: `container_id` in events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Kubernetes pod UID found in the cgroup path: `pod_uid` in events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// systemd unit the process runs in (`nginx.service`), from the cgroup
    /// path, for services on hosts without containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    /// Mount and pid namespace inode numbers (`/proc/<pid>/ns/{mnt,pid}`):
    /// processes sharing them share a container or sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mnt_ns: Option<u64>,
    /// Pid namespace inode (`/proc/<pid>/ns/pid`): `pid_ns` in events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<u64>,
    /// False when `/proc` could not be read (the process had exited) or
    /// described a different process: only kernel-provided fields are set.
    pub complete: bool,
}

/// Fields of `/proc/<pid>/stat` the monitor uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Task name (field 2, between the parentheses).
    pub comm: String,
    /// Parent pid (field 4).
    pub ppid: u32,
    /// Start time in clock ticks since boot.
    pub start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The comm field may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(s: &str) -> Option<Stat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = s.get(close + 1..)?.split_ascii_whitespace().collect();
    // rest[0] is field 3 (state); ppid is field 4, starttime field 22.
    Some(Stat {
        comm,
        ppid: rest.get(1)?.parse().ok()?,
        start_ticks: rest.get(19)?.parse().ok()?,
    })
}

/// Reads `Uid:` and `Gid:` (real ids) from `/proc/<pid>/status`.
pub fn parse_status_ids(s: &str) -> (Option<u32>, Option<u32>) {
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_ascii_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    (field("Uid:"), field("Gid:"))
}

/// Splits `/proc/<pid>/cmdline` (NUL separated).
pub fn parse_cmdline(raw: &[u8]) -> Vec<String> {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Picks the most telling cgroup path from `/proc/<pid>/cgroup`: one that
/// names a container if any does, else the unified (v2) path, else the
/// systemd or first v1 path.
pub fn parse_cgroup(s: &str) -> String {
    let mut unified = None;
    let mut v1 = Vec::new();
    for line in s.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrl.is_empty() {
            unified = Some(path);
        } else if ctrl == "name=systemd" {
            v1.insert(0, path);
        } else {
            v1.push(path);
        }
    }
    let candidates = unified.iter().copied().chain(v1.iter().copied());
    if let Some(p) = candidates.clone().find(|p| container_id_from_cgroup(p).is_some()) {
        return p.to_owned();
    }
    match unified {
        Some(p) if p != "/" => p.to_owned(),
        _ => v1.into_iter().find(|p| *p != "/").or(unified).unwrap_or("").to_owned(),
    }
}

/// Container id carried by a cgroup path: the last component without the
/// `cri-containerd-`, `crio-`, `docker-`, `libpod-` prefixes and the
/// `.scope` suffix, when what remains is 64 hex digits.
pub fn container_id_from_cgroup(path: &str) -> Option<String> {
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    let last = last.strip_suffix(".scope").unwrap_or(last);
    let id = ["cri-containerd-", "crio-", "docker-", "libpod-", "containerd-"]
        .iter()
        .find_map(|p| last.strip_prefix(p))
        .unwrap_or(last);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// The systemd unit of a cgroup path: its last `.service` component
/// (`/system.slice/nginx.service` -> `nginx.service`; a container's own
/// `.scope` is not a unit worth naming).
pub fn systemd_unit_from_cgroup(path: &str) -> Option<String> {
    if container_id_from_cgroup(path).is_some() {
        return None;
    }
    path.rsplit('/')
        .find(|c| c.ends_with(".service") && c.len() > ".service".len())
        .map(str::to_owned)
}

/// The inode of a namespace link target (`mnt:[4026531841]`).
pub fn namespace_inode(link: &str) -> Option<u64> {
    link.split_once(":[")?.1.strip_suffix(']')?.parse().ok()
}

/// Kubernetes pod uid from the directory above a container's cgroup:
/// `.../pod<uid>/<cid>` (cgroupfs driver) or
/// `...kubepods-<qos>-pod<uid_with_underscores>.slice/<cid>` (systemd driver).
pub fn pod_uid_from_cgroup(path: &str) -> Option<String> {
    container_id_from_cgroup(path)?;
    let mut comps = path.trim_end_matches('/').rsplit('/');
    comps.next();
    let parent = comps.next()?;
    let parent = parent.strip_suffix(".slice").unwrap_or(parent);
    let uid = parent.rsplit_once("pod").map(|(_, u)| u)?;
    let uid = uid.replace('_', "-");
    let ok = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    ok.then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_hostile_comm() {
        let s = "4242 (evil) 1 2 (x) S 100 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
        let st = parse_stat(s).unwrap();
        assert_eq!(st.comm, "evil) 1 2 (x");
        assert_eq!(st.ppid, 100);
        assert_eq!(st.start_ticks, 123456);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn container_ids_from_runtime_formats() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        for p in [
            format!("/kubepods/burstable/pod7b4d6e7e-1f1c-4a0e-9a36-0c3c0b1f9d11/{id}"),
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod7b4d6e7e_1f1c_4a0e_9a36_0c3c0b1f9d11.slice/cri-containerd-{id}.scope"),
            format!("/system.slice/crio-{id}.scope"),
            format!("/system.slice/docker-{id}.scope"),
            format!("/machine.slice/libpod-{id}.scope"),
            format!("/docker/{id}"),
        ] {
            assert_eq!(container_id_from_cgroup(&p).as_deref(), Some(id), "{p}");
        }
        assert_eq!(
            container_id_from_cgroup("/user.slice/user-0.slice/session-3.scope"),
            None
        );
        assert_eq!(container_id_from_cgroup("/"), None);
    }

    #[test]
    fn systemd_units_and_namespaces() {
        assert_eq!(
            systemd_unit_from_cgroup("/system.slice/nginx.service").as_deref(),
            Some("nginx.service")
        );
        assert_eq!(
            systemd_unit_from_cgroup("/system.slice/mcp-gateway.service/worker").as_deref(),
            Some("mcp-gateway.service")
        );
        assert_eq!(
            systemd_unit_from_cgroup("/user.slice/user-0.slice/session-3.scope"),
            None
        );
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            systemd_unit_from_cgroup(&format!("/system.slice/docker-{id}.scope")),
            None
        );
        assert_eq!(namespace_inode("mnt:[4026531841]"), Some(4026531841));
        assert_eq!(namespace_inode("garbage"), None);
    }

    #[test]
    fn pod_uid_both_drivers() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let uid = "7b4d6e7e-1f1c-4a0e-9a36-0c3c0b1f9d11";
        assert_eq!(
            pod_uid_from_cgroup(&format!("/kubepods/burstable/pod{uid}/{id}")).as_deref(),
            Some(uid)
        );
        assert_eq!(
            pod_uid_from_cgroup(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
                uid.replace('-', "_")
            ))
            .as_deref(),
            Some(uid)
        );
        assert_eq!(pod_uid_from_cgroup(&format!("/system.slice/docker-{id}.scope")), None);
    }

    #[test]
    fn cgroup_prefers_container_path() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let hybrid = format!("12:memory:/docker/{id}\n1:name=systemd:/docker/{id}\n0::/\n");
        assert_eq!(parse_cgroup(&hybrid), format!("/docker/{id}"));
        assert_eq!(
            parse_cgroup("0::/user.slice/session-1.scope\n"),
            "/user.slice/session-1.scope"
        );
        assert_eq!(
            parse_cgroup("1:name=systemd:/system.slice/ssh.service\n0::/\n"),
            "/system.slice/ssh.service"
        );
    }

    #[test]
    fn cmdline_split() {
        assert_eq!(
            parse_cmdline(b"node\0server.js\0--port\08080\0"),
            ["node", "server.js", "--port", "8080"]
        );
        assert!(parse_cmdline(b"").is_empty());
    }
}
