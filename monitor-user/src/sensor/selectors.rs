//! What to capture, written into the kernel's maps: process, executable,
//! cgroup and port selectors.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use anyhow::Context;
use aya::{
    maps::{Array, HashMap as BpfHashMap},
    Ebpf,
};
use monitor_common::{map_name, ProcState, TrackReason, COMM_LEN, METHOD_ROOT_LEN, TRACKED_HINT_SLOTS};

use super::ports;
use crate::config::CaptureConfig;

/// Fills the discovery and selector maps and marks already-running selected processes
/// (and their descendants) as tracked.
pub(super) fn install_selectors(ebpf: &mut Ebpf, cfg: &CaptureConfig) -> anyhow::Result<()> {
    let mut roots = BpfHashMap::<_, [u8; METHOD_ROOT_LEN], u8>::try_from(
        ebpf.map_mut(map_name::METHOD_ROOTS).context("METHOD_ROOTS")?,
    )?;
    for r in crate::mcp::method_roots() {
        let mut k = [0u8; METHOD_ROOT_LEN];
        k[..r.len()].copy_from_slice(r.as_bytes());
        roots.insert(k, 1, 0)?;
    }
    let sel = &cfg.selectors;
    if !sel.executables.is_empty() {
        let mut comms = BpfHashMap::<_, [u8; COMM_LEN], u8>::try_from(
            ebpf.map_mut(map_name::COMM_SELECTORS).context("COMM_SELECTORS")?,
        )?;
        for e in &sel.executables {
            comms.insert(comm_key(e), 1, 0)?;
        }
    }
    if !sel.cgroups.is_empty() {
        let mut cgs =
            BpfHashMap::<_, u64, u8>::try_from(ebpf.map_mut(map_name::CGROUP_SELECTORS).context("CGROUP_SELECTORS")?)?;
        for c in &sel.cgroups {
            let id = cgroup_id(c)?;
            cgs.insert(id, 1, 0)?;
            log::info!("capturing cgroup {c} (id {id})");
        }
    }
    if !sel.ports.is_empty() {
        let mut ports =
            BpfHashMap::<_, u16, u8>::try_from(ebpf.map_mut(map_name::PORT_SELECTORS).context("PORT_SELECTORS")?)?;
        for p in &sel.ports {
            ports.insert(*p, 1, 0)?;
        }
        log::info!(
            "capturing processes that listen on or connect to TCP ports {:?}",
            sel.ports
        );
    }
    if sel.pids.contains(&1) {
        log::warn!("selecting pid 1 captures every process on the host (selection covers descendants)");
    }
    // Already running processes: pids, executables, and their descendants.
    let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut roots: Vec<u32> = sel.pids.clone();
    // Servers and clients of selected ports that started before us.
    roots.extend(ports::processes_on_ports(
        Path::new("/proc"),
        &sel.ports.iter().copied().collect(),
    ));
    let wanted: HashSet<[u8; COMM_LEN]> = sel.executables.iter().map(|e| comm_key(e)).collect();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for ent in dir.flatten() {
            let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Some(st) = std::fs::read_to_string(ent.path().join("stat"))
                .ok()
                .and_then(|s| crate::identity::parse_stat(&s))
            else {
                continue;
            };
            parents.entry(st.ppid).or_default().push(pid);
            if wanted.contains(&comm_key(&st.comm)) {
                roots.push(pid);
            }
        }
    }
    if roots.is_empty() {
        return Ok(());
    }
    let mut queue = roots;
    let mut seen = HashSet::new();
    while let Some(pid) = queue.pop() {
        if !seen.insert(pid) || pid == std::process::id() {
            continue;
        }
        // /proc start times only have tick precision, so the entry accepts
        // any start time (0); the kernel removes it when the process exits.
        // The entry, then its hint (see `track` in the kernel programs).
        BpfHashMap::<_, u32, ProcState>::try_from(ebpf.map_mut(map_name::PROCS).context("PROCS")?)?.insert(
            pid,
            ProcState {
                reason: TrackReason::Userspace as u32,
                _pad: 0,
                start_ns: 0,
            },
            0,
        )?;
        Array::<_, u8>::try_from(ebpf.map_mut(map_name::TRACKED_HINT).context("TRACKED_HINT")?)?.set(
            pid % TRACKED_HINT_SLOTS,
            1,
            0,
        )?;
        queue.extend(parents.get(&pid).into_iter().flatten().copied());
    }
    log::info!("tracking {} already-running selected processes", seen.len());
    Ok(())
}

/// A kernel task name key: the first 15 bytes, NUL padded.
fn comm_key(name: &str) -> [u8; COMM_LEN] {
    let mut k = [0u8; COMM_LEN];
    let b = name.as_bytes();
    let n = b.len().min(COMM_LEN - 1);
    k[..n].copy_from_slice(&b[..n]);
    k
}

/// The cgroup v2 id of a directory is its inode number.
fn cgroup_id(path: &str) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let candidates = [
        std::path::PathBuf::from(path),
        Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')),
        Path::new("/sys/fs/cgroup/unified").join(path.trim_start_matches('/')),
    ];
    for p in &candidates {
        if let Ok(m) = std::fs::metadata(p) {
            if m.is_dir() {
                return Ok(m.ino());
            }
        }
    }
    anyhow::bail!(
        "cgroup selector {path:?} names no cgroup directory (tried {}).\n\
         Fix: give a directory of the cgroup v2 hierarchy, e.g. /sys/fs/cgroup/system.slice/mcp.service",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
