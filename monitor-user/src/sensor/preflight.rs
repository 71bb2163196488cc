//! Start-up checks: each failure says what is wrong and how to fix it.

use std::path::Path;

/// Tracefs mount points, in the order the kernel and aya look for them.
pub const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability bits of this process (`CapEff` in /proc/self/status).
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// Fails unless the process may load and attach tracing programs.
pub fn check_privileges(caps: u64) -> anyhow::Result<()> {
    if has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON)) {
        if !has(caps, CAP_SYS_PTRACE) && !has(caps, CAP_SYS_ADMIN) {
            log::warn!(
                "without CAP_SYS_PTRACE the agent cannot read /proc/<pid>/exe of other users' processes; \
                 events will lack executable paths. Add cap_sys_ptrace."
            );
        }
        return Ok(());
    }
    let missing: Vec<&str> = [
        (CAP_BPF, "CAP_BPF (create maps, load programs)"),
        (CAP_PERFMON, "CAP_PERFMON (attach programs to tracepoints and uprobes)"),
    ]
    .into_iter()
    .filter(|(cap, _)| !has(caps, *cap))
    .map(|(_, what)| what)
    .collect();
    anyhow::bail!(
        "not enough privileges to load eBPF programs: missing {} (effective capabilities {caps:#x}; \
         CAP_SYS_ADMIN alone would also do).\n\
         Fix: run as root (sudo mcp-monitor run), or grant the capabilities:\n  \
         setcap cap_bpf,cap_perfmon,cap_sys_resource,cap_sys_ptrace,cap_dac_read_search,cap_sys_admin+ep $(command -v mcp-monitor)\n\
         (cap_sys_admin is for TLS capture's uprobes). In a container, add them to its capabilities \
         (Kubernetes: securityContext.capabilities.add in deploy/kubernetes/daemonset.yaml lists BPF, PERFMON, \
         SYS_RESOURCE, SYS_PTRACE, DAC_READ_SEARCH, SYS_ADMIN).",
        missing.join(" and ")
    )
}

/// Whether the kernel lets this process create uprobes through the perf
/// `uprobe` PMU: `None` where that PMU does not exist. Asked by opening an
/// event on a path that is not a regular file: the privilege check comes
/// first (EACCES), the path check after it (EINVAL), so nothing is probed.
pub fn uprobes_permitted() -> Option<bool> {
    let pmu: u64 = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
    let path = c"/";
    // struct perf_event_attr, 128 bytes: type and size, then config (0: an
    // entry probe), and config1/config2 (uprobe_path, probe_offset) at bytes
    // 56 and 64.
    let mut attr = [0u64; 16];
    attr[0] = pmu | (128 << 32);
    attr[7] = path.as_ptr() as u64;
    // SAFETY: perf_event_open reads `attr` (128 bytes, alive) and the path.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1 as libc::c_int,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd >= 0 {
        // SAFETY: a descriptor we own.
        unsafe { libc::close(fd as libc::c_int) };
        return Some(true);
    }
    let errno = std::io::Error::last_os_error().raw_os_error();
    Some(!matches!(errno, Some(libc::EACCES) | Some(libc::EPERM)))
}

/// Fails when TLS capture is on but the kernel refuses this process
/// uprobes. Since the fix of CVE-2025-38466 (Linux 6.16, and the stable
/// kernels 5.10.240, 5.15.189, 6.1.146, 6.6.99, 6.12.39 and later) uprobe
/// events need CAP_SYS_ADMIN; CAP_PERFMON no longer does.
pub fn check_uprobe_privilege() -> anyhow::Result<()> {
    if uprobes_permitted() != Some(false) {
        return Ok(());
    }
    anyhow::bail!(
        "TLS capture (capture.tls = true) needs uprobes, and this kernel refuses them without CAP_SYS_ADMIN \
         (since the fix of CVE-2025-38466: Linux 6.16, and stable kernels from 5.10.240, 5.15.189, 6.1.146, \
         6.6.99, 6.12.39 on, CAP_PERFMON no longer suffices).\n\
         Fix: grant CAP_SYS_ADMIN (Kubernetes: SYS_ADMIN in securityContext.capabilities.add, as \
         deploy/kubernetes/daemonset.yaml does), or set capture.tls = false to run without TLS plaintext capture."
    )
}

/// Returns the tracefs mount point, mounting it if it is missing and we are
/// allowed to (the agent normally runs as root).
pub fn ensure_tracefs() -> anyhow::Result<&'static str> {
    for p in TRACEFS_PATHS {
        if Path::new(p).join("events").is_dir() {
            return Ok(p);
        }
    }
    let target = TRACEFS_PATHS[0];
    let c_target = std::ffi::CString::new(target).unwrap();
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c_target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 && Path::new(target).join("events").is_dir() {
        log::info!("mounted tracefs at {target}");
        return Ok(target);
    }
    let err = std::io::Error::last_os_error();
    anyhow::bail!(
        "tracefs is not mounted and mounting it failed ({err}).\n\
         Fix: mount -t tracefs nodev /sys/kernel/tracing\n\
         (in a container, mount the host's /sys/kernel/tracing into it)"
    )
}

/// The oldest kernel the programs can run on: the BPF ring buffer and
/// `bpf_ktime_get_boot_ns` came in 5.8. The oldest tested is 5.10.
pub const MIN_KERNEL: (u32, u32) = (5, 8);

/// Fails on kernels older than [`MIN_KERNEL`], with the release and the fix.
pub fn check_kernel_version() -> anyhow::Result<()> {
    let release = super::verifier::kernel_release();
    check_release(&release)
}

fn check_release(release: &str) -> anyhow::Result<()> {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (Some(major), Some(minor)) = (it.next(), it.next()) else {
        log::warn!("cannot read the kernel version from release {release:?}; trying anyway");
        return Ok(());
    };
    if (major, minor) < MIN_KERNEL {
        anyhow::bail!(
            "Linux {release} is too old: mcp-monitor needs Linux {}.{} or later (BPF ring buffer). \
             Fix: run it on a node with a newer kernel (5.10 and later are tested).",
            MIN_KERNEL.0,
            MIN_KERNEL.1
        );
    }
    Ok(())
}

/// One line naming the kernel and the paths chosen for it (the system call
/// hook in use among them): features newer than 5.10 are used only where
/// detected.
pub fn kernel_paths(syscall_hook: &super::SyscallHook) -> String {
    let release = super::verifier::kernel_release();
    let current = aya::util::KernelVersion::current().ok();
    let at_least = |a, b| current.is_some_and(|v| v >= aya::util::KernelVersion::new(a, b, 0));
    format!(
        "kernel {release}: {}, \
         raw tracepoint sched_process_fork, sched tracepoints, uprobes for TLS, BPF ring buffer; verifier error reports {}",
        syscall_hook.describe(),
        if at_least(6, 4) {
            "with the instructions before the error"
        } else {
            "with the error line only (kernel before 6.4 keeps the start of long verifier logs)"
        }
    )
}

/// Fails unless the kernel exposes BTF.
pub fn check_btf() -> anyhow::Result<()> {
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Ok(());
    }
    anyhow::bail!(
        "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing).\n\
         Fix: use a kernel built with CONFIG_DEBUG_INFO_BTF=y (default in Debian 11+, Ubuntu 20.10+, \
         RHEL 8.2+, Fedora, and the managed Kubernetes node images); in a container, mount /sys from the host."
    )
}

/// Fails when a tracepoint the sensor needs does not exist.
pub fn check_tracepoints(tracefs: &str, needed: &[(&str, &str)]) -> anyhow::Result<()> {
    for (cat, name) in needed {
        let p = Path::new(tracefs).join("events").join(cat).join(name);
        if !p.exists() {
            anyhow::bail!(
                "tracepoint {cat}/{name} is missing from {tracefs}/events.\n\
                 Fix: the kernel needs CONFIG_TRACEPOINTS=y and, for raw_syscalls, \
                 CONFIG_HAVE_SYSCALL_TRACEPOINTS (every x86_64 kernel with tracing); check \
                 `ls {tracefs}/events/{cat}`."
            );
        }
    }
    Ok(())
}

/// Raises RLIMIT_MEMLOCK for kernels that still charge BPF maps to it
/// (before 5.11).
pub fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to an initialised rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
    raise_open_files();
}

/// Raises the soft limit of open files to the hard one (at most 65,536):
/// the TLS scan keeps a descriptor of each probed file (up to 4,096) to
/// tell when it is deleted, and a soft limit of 1,024 is common.
fn raise_open_files() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to an initialised rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let want = lim.rlim_max.min(65_536);
        if want > lim.rlim_cur {
            lim.rlim_cur = want;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                log::debug!("could not raise RLIMIT_NOFILE: {}", std::io::Error::last_os_error());
            }
        }
    }
}

/// Explains a failed map creation or program load.
pub fn explain_load_error(err: &aya::EbpfError) -> String {
    use aya::{maps::MapError, programs::ProgramError, EbpfError};
    match err {
        EbpfError::MapError(MapError::CreateError { name, io_error }) => {
            let errno = io_error.raw_os_error().unwrap_or(0);
            if name == "EVENTS" && (errno == libc::EINVAL || errno == libc::EOPNOTSUPP) {
                format!(
                    "creating the ring buffer failed ({io_error}): this kernel has no BPF ring buffer.\n\
                     Fix: Linux 5.8 or later is required."
                )
            } else if errno == libc::EPERM {
                format!(
                    "creating map {name} was refused ({io_error}).\n\
                     Fix: run as root or with CAP_BPF; on kernels before 5.11 also raise the memlock limit \
                     (ulimit -l unlimited)."
                )
            } else {
                format!("creating map {name} failed: {io_error}")
            }
        }
        EbpfError::ProgramError(e @ ProgramError::LoadError { .. }) => {
            super::verifier::explain_rejection("(unnamed)", e, None)
        }
        other => format!("loading the eBPF object failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_floor() {
        assert!(check_release("5.10.0-46-amd64").is_ok());
        assert!(check_release("6.18.44-fc-v595").is_ok());
        assert!(check_release("5.8.0").is_ok());
        let e = check_release("5.4.0-150-generic").unwrap_err().to_string();
        assert!(
            e.contains("5.4.0-150-generic") && e.contains("5.8") && e.contains("Fix:"),
            "{e}"
        );
        assert!(check_release("4.19.0").is_err());
        assert!(check_release("weird").is_ok());
    }

    #[test]
    fn uprobe_privilege_is_asked_without_probing() {
        // As root with every capability (the test suite runs so), uprobes
        // are permitted; the answer never creates a probe either way.
        if has(effective_caps(), CAP_SYS_ADMIN) {
            assert_ne!(uprobes_permitted(), Some(false));
            assert!(check_uprobe_privilege().is_ok());
        }
    }

    #[test]
    fn privilege_rules() {
        assert!(check_privileges(1 << CAP_SYS_ADMIN).is_ok());
        assert!(check_privileges(1 << CAP_BPF | 1 << CAP_PERFMON | 1 << CAP_SYS_PTRACE).is_ok());
        let e = check_privileges(1 << CAP_BPF).unwrap_err().to_string();
        assert!(e.contains("run as root") && e.contains("setcap"), "{e}");
        assert!(e.contains("missing CAP_PERFMON") && !e.contains("CAP_BPF ("), "{e}");
        let e = check_privileges(1 << CAP_PERFMON).unwrap_err().to_string();
        assert!(e.contains("missing CAP_BPF (") && !e.contains("CAP_PERFMON ("), "{e}");
        let e = check_privileges(0).unwrap_err().to_string();
        assert!(e.contains("CAP_BPF (") && e.contains("CAP_PERFMON ("), "{e}");
    }

    #[test]
    fn a_missing_raw_syscall_tracepoint_is_named_with_the_fix() {
        let dir = std::env::temp_dir().join(format!("mcpmon-tracefs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("events/raw_syscalls/sys_enter")).unwrap();
        let tracefs = dir.to_str().unwrap();
        assert!(check_tracepoints(tracefs, &[("raw_syscalls", "sys_enter")]).is_ok());
        let e = check_tracepoints(tracefs, &[("raw_syscalls", "sys_enter"), ("raw_syscalls", "sys_exit")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("raw_syscalls/sys_exit") && e.contains("CONFIG_HAVE_SYSCALL_TRACEPOINTS"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
