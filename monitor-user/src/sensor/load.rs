//! Loading the kernel programs: the object, its configuration, the
//! verifier's answers, the offsets the programs need, and the TLS stages.

use std::path::Path;

use anyhow::Context;
use aya::{
    maps::{Array, MapData, ProgramArray},
    programs::{
        uprobe::{UProbeLinkId, UProbeScope},
        UProbe,
    },
    Ebpf, EbpfLoader, VerifierLogLevel,
};
use monitor_common::{config_flags, global_name, jump_slot, map_name, KernelConfig};

use super::{preflight, verifier};
use crate::{btf::Btf, config::CaptureConfig};
use mcp_monitor_pipeline::{boringssl_binary::BoringSslProbes, go_binary::GoTlsProbes};

/// The eBPF object built by build.rs.
pub(super) static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor.bpf.o"));

/// The raw syscall tracepoints and their programs, of the same names: the
/// exit only (every program on a syscall tracepoint runs for every system
/// call of the host; monitor-ebpf hooks/syscalls.rs).
pub(super) const SYSCALL_PROGRAMS: [&str; 1] = ["sys_exit"];

/// One syscall hook's copy of the tail-call stages.
pub(super) struct StageSet {
    /// The program array the hook jumps through.
    pub(super) map: &'static str,
    /// The tracepoint the stages are loaded for: the hook's own.
    pub(super) tracepoint: &'static str,
    /// The stage programs by slot.
    pub(super) stages: [(u32, &'static str); jump_slot::COUNT as usize],
}

/// The tail-call stages of the syscall hook. A BTF tracepoint program is
/// loaded for one tracepoint, and recent kernels (6.18 here) refuse a tail
/// call between tracing programs loaded for tracepoints of different
/// prototypes: the stages are loaded for the hook's own.
pub(super) const SYSCALL_STAGES: [StageSet; 1] = [StageSet {
    map: map_name::EXIT_JUMP,
    tracepoint: "sys_exit",
    stages: [
        (jump_slot::DISCOVER, "exit_discover"),
        (jump_slot::CAPTURE, "exit_capture"),
        (jump_slot::DISCOVER_HTTP, "exit_discover_http"),
        (jump_slot::DISCOVER_JSONRPC, "exit_discover_jsonrpc"),
    ],
}];

/// The tracepoint a BTF tracepoint program of the object is loaded for:
/// its own name for the syscall hook, else that of its stage set.
pub fn btf_tracepoint_of(program: &str) -> Option<&'static str> {
    if let Some(hook) = SYSCALL_PROGRAMS.iter().find(|p| **p == program) {
        return Some(hook);
    }
    if program == super::floor::FLOOR_COPY {
        return Some(super::floor::FLOOR_COPY_TRACEPOINT);
    }
    SYSCALL_STAGES
        .iter()
        .find(|set| set.stages.iter().any(|(_, name)| *name == program))
        .map(|set| set.tracepoint)
}

/// TLS entry probes: (program, OpenSSL function, required). A library
/// without the required functions is not probed; OpenSSL before 1.1.1 has
/// no `_ex` variants.
/// `SSL_free` goes first: without its probe, the others are attached in
/// the variant that looks at every call (see [`attach_tls_file`]).
pub(super) const TLS_ENTRY_PROBES: &[(&str, &str, bool)] = &[
    ("ssl_free", "SSL_free", false),
    ("ssl_write", "SSL_write", true),
    ("ssl_read", "SSL_read", true),
    ("ssl_write_ex", "SSL_write_ex", false),
    ("ssl_read_ex", "SSL_read_ex", false),
    ("ssl_set_fd", "SSL_set_fd", false),
];

/// Tail-call stages of the TLS path, by `TLS_JUMP` index (the same indices
/// as the syscall path's `JUMP`).
pub(super) const TLS_STAGES: [(u32, &str); jump_slot::COUNT as usize] = [
    (jump_slot::DISCOVER, "tls_discover"),
    (jump_slot::CAPTURE, "tls_capture"),
    (jump_slot::DISCOVER_HTTP, "tls_discover_http"),
    (jump_slot::DISCOVER_JSONRPC, "tls_discover_jsonrpc"),
];

pub(super) const SCHED_PROGRAMS: &[(&str, &str)] = &[
    ("sched_process_exec", "sched_process_exec"),
    ("sched_process_exit", "sched_process_exit"),
];

/// Checks the environment, loads the eBPF object and writes the kernel
/// configuration; attaches nothing.
pub(super) fn load(cfg: &CaptureConfig) -> anyhow::Result<(Ebpf, KernelConfig)> {
    preflight::check_kernel_version()?;
    preflight::check_privileges(preflight::effective_caps())?;
    if cfg.tls {
        preflight::check_uprobe_privilege()?;
    }
    preflight::check_btf()?;
    let tracefs = preflight::ensure_tracefs()?;
    // The raw syscall tracepoints are the `raw_syscalls` events of tracefs.
    let needed: Vec<(&str, &str)> = SYSCALL_PROGRAMS
        .iter()
        .map(|tp| ("raw_syscalls", *tp))
        .chain(SCHED_PROGRAMS.iter().map(|(tp, _)| ("sched", *tp)))
        .collect();
    preflight::check_tracepoints(tracefs, &needed)?;
    preflight::raise_memlock();
    if EBPF_OBJECT.is_empty() {
        anyhow::bail!(
            "this binary was built without its eBPF programs (MCP_MONITOR_SKIP_EBPF=1).\n\
                 Fix: rebuild with `cargo xtask build`."
        );
    }

    let kernel = kernel_btf()?;
    let offsets = kernel
        .kernel_offsets()
        .context("resolving kernel structure offsets from BTF")?;
    let [(global, value)] = globals(&kernel);
    let ncpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))? as u32;

    // A rejected program is retried by aya with a log: statistics only
    // (the error line and the count), never the per-instruction trace,
    // which on a long path overflows any buffer and takes minutes.
    let mut ebpf = EbpfLoader::new()
        .verifier_log_level(VerifierLogLevel::STATS)
        .map_max_entries(map_name::SCRATCH, ncpus)
        .map_max_entries(map_name::EVENTS, cfg.ring_buffer_bytes)
        .map_max_entries(map_name::TLS_ARGS, cfg.max_inflight_syscalls)
        .override_global(global, &value, true)
        .load(EBPF_OBJECT)
        .map_err(|e| anyhow::anyhow!(preflight::explain_load_error(&e)))?;

    let mut flags = 0;
    if cfg.discovery {
        flags |= config_flags::DISCOVERY;
    }
    if !cfg.selectors.executables.is_empty() {
        flags |= config_flags::COMM_SELECTORS;
    }
    if !cfg.selectors.cgroups.is_empty() {
        flags |= config_flags::CGROUP_SELECTORS;
    }
    if !cfg.selectors.ports.is_empty() {
        flags |= config_flags::PORT_SELECTORS;
    }
    if cfg.tcp {
        flags |= config_flags::CAPTURE_TCP;
    }
    if cfg.tls {
        flags |= config_flags::EXEC_NOTICES;
    }
    let kcfg = KernelConfig {
        self_tgid: std::process::id(),
        capture_cap: cfg.capture_cap_bytes,
        discovery_window: cfg.discovery_window_bytes,
        flags,
        wakeup_bytes: cfg.wakeup_bytes,
        offsets,
    };
    Array::<_, KernelConfig>::try_from(ebpf.map_mut(map_name::CONFIG).context("CONFIG map")?)?.set(0, kcfg, 0)?;
    Ok((ebpf, kcfg))
}

/// Map sizes for the verifier probe: small (the verifier does not look at
/// them), the ring a page-aligned power of two.
const PROBE_MAP_SIZES: &[(&str, u32)] = &[
    (map_name::EVENTS, 1 << 16),
    (map_name::TLS_ARGS, 1024),
    (map_name::PROCS, 1024),
    (map_name::STREAMS, 1024),
];

/// The verifier's cost of each program on this kernel (`mcp-monitor check`);
/// with `skip_fexit`, the fexit programs are listed as skipped for that
/// reason (the kernel refused fexit, or the configuration chose the
/// tracepoint).
pub fn verifier_costs(skip_fexit: Option<&str>) -> anyhow::Result<Vec<verifier::ProgramCost>> {
    if EBPF_OBJECT.is_empty() {
        anyhow::bail!("this binary was built without its eBPF programs (MCP_MONITOR_SKIP_EBPF=1)");
    }
    Ok(probe()?.costs(skip_fexit))
}

/// The values the loader gives the object's globals on this kernel.
fn globals(kernel: &Btf) -> [(&'static str, u8); 1] {
    [(
        global_name::NET_REGS_BY_HELPER,
        u8::from(super::syscall_hook::net_regs_by_helper(kernel)),
    )]
}

/// The object for the verifier's statistics, with the globals of a real
/// load.
fn probe() -> anyhow::Result<verifier::Probe> {
    verifier::Probe::new(EBPF_OBJECT, PROBE_MAP_SIZES, &globals(&kernel_btf()?))
}

/// A program the kernel refused, explained (see [`verifier::explain_rejection`]).
pub(super) fn rejected(prog: &str, e: aya::programs::ProgramError) -> anyhow::Error {
    let probe = if verifier::log_keeps_tail() { probe().ok() } else { None };
    anyhow::anyhow!(verifier::explain_rejection(prog, &e, probe.as_ref()))
}

/// Reads the running kernel's BTF.
pub(super) fn kernel_btf() -> anyhow::Result<Btf> {
    let path = "/sys/kernel/btf/vmlinux";
    let data = std::fs::read(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {path} ({e}): this kernel exposes no BTF. The monitor needs a kernel \
             built with CONFIG_DEBUG_INFO_BTF=y (default on current Debian, Ubuntu, RHEL, \
             Fedora and cloud kernels)"
        )
    })?;
    Ok(Btf::parse(&data)?)
}

/// Loads the TLS programs and fills their tail-call map.
pub(super) fn load_tls(ebpf: &mut Ebpf) -> anyhow::Result<ProgramArray<MapData>> {
    let mut jump = ProgramArray::try_from(ebpf.take_map(map_name::TLS_JUMP).context("TLS_JUMP map")?)?;
    for (index, prog) in TLS_STAGES {
        let p: &mut UProbe = ebpf.program_mut(prog).context(prog)?.try_into()?;
        p.load().map_err(|e| rejected(prog, e))?;
        jump.set(index, p.fd()?, 0)?;
    }
    let mut names: Vec<&str> = TLS_ENTRY_PROBES.iter().map(|(p, _, _)| *p).collect();
    names.extend([
        "ssl_return",
        "ssl_read_every",
        "ssl_write_every",
        "ssl_read_ex_every",
        "ssl_write_ex_every",
    ]);
    names.extend(GO_TLS_PROGRAMS);
    for prog in names {
        let p: &mut UProbe = ebpf.program_mut(prog).context(prog)?.try_into()?;
        p.load().map_err(|e| rejected(prog, e))?;
    }
    Ok(jump)
}

/// The uprobes attached to one file, so that they can be taken off again
/// (probes that handed over no plaintext; a file deleted that no process
/// runs any more, which the probes would keep on disk).
pub(super) type Links = Vec<(&'static str, UProbeLinkId)>;

/// Attaches `prog` at `point` of `path`, adding the link to `links`.
fn attach_one<'a>(
    ebpf: &mut Ebpf,
    links: &mut Links,
    prog: &'static str,
    point: impl Into<aya::programs::uprobe::UProbeAttachPoint<'a>>,
    path: &Path,
) -> anyhow::Result<()> {
    let p: &mut UProbe = ebpf.program_mut(prog).context(prog)?.try_into()?;
    let link = p.attach(point, path, UProbeScope::AllProcesses)?;
    links.push((prog, link));
    Ok(())
}

/// Attaches entry and return probes to the OpenSSL functions in `path`;
/// returns the links and the optional functions the file lacks. The return
/// probe goes first so that an entry never waits for a return that is not
/// watched. On a failure the probes attached so far are taken off again.
///
/// The entry programs thin out their looks at an untracked process's
/// connection, keyed by its `SSL` object, whose looks `SSL_free` forgets. A
/// file whose `SSL_free` could not be probed gets the variants that look at
/// every call (`ssl_read_every` and the like, as Bun's BoringSSL does).
pub(super) fn attach_tls_file(ebpf: &mut Ebpf, path: &Path) -> anyhow::Result<(Links, Vec<&'static str>)> {
    attach_tls_programs(ebpf, path, agent_entry, "ssl_return")
}

/// The agent's program for entry program `prog` of [`TLS_ENTRY_PROBES`],
/// given whether `SSL_free` is watched.
fn agent_entry(prog: &'static str, free_watched: bool) -> &'static str {
    match prog {
        _ if free_watched => prog,
        "ssl_read" => "ssl_read_every",
        "ssl_write" => "ssl_write_every",
        "ssl_read_ex" => "ssl_read_ex_every",
        "ssl_write_ex" => "ssl_write_ex_every",
        _ => prog,
    }
}

/// [`attach_tls_file`] with other programs: `entry` names the program for
/// each of the agent's entry programs, given whether `SSL_free` is watched
/// (its probe is the first attached), `ret` the return program (the floor
/// attaches its do-nothing programs where the agent attaches its own).
pub(super) fn attach_tls_programs(
    ebpf: &mut Ebpf,
    path: &Path,
    entry: impl Fn(&'static str, bool) -> &'static str,
    ret: &'static str,
) -> anyhow::Result<(Links, Vec<&'static str>)> {
    let mut missing = Vec::new();
    let mut links = Links::new();
    // Until SSL_free's probe is attached, as it is first.
    let mut free_watched = false;
    for &(prog, func, required) in TLS_ENTRY_PROBES {
        let entry_prog = entry(prog, free_watched);
        let returns = matches!(prog, "ssl_write" | "ssl_read" | "ssl_write_ex" | "ssl_read_ex");
        if returns {
            if let Err(e) = attach_one(ebpf, &mut links, ret, func, path) {
                if required {
                    detach_links(ebpf, links);
                    return Err(e.context(format!("return probe on {func}")));
                }
                missing.push(func);
                continue;
            }
        }
        match attach_one(ebpf, &mut links, entry_prog, func, path) {
            Ok(()) => free_watched |= func == "SSL_free",
            Err(e) => {
                if required {
                    detach_links(ebpf, links);
                    return Err(e.context(format!("probe on {func}")));
                }
                missing.push(func);
            }
        }
    }
    Ok((links, missing))
}

/// The Go `crypto/tls` programs (hooks/go_tls.rs).
const GO_TLS_PROGRAMS: [&str; 4] = ["go_tls_read", "go_tls_read_return", "go_tls_write", "go_tls_close"];

/// Attaches programs at file offsets, in order; on a failure the probes
/// attached so far are taken off again.
fn attach_at_offsets(ebpf: &mut Ebpf, path: &Path, points: &[(&'static str, u64)]) -> anyhow::Result<Links> {
    let mut links = Links::new();
    for &(prog, offset) in points {
        if let Err(e) = attach_one(ebpf, &mut links, prog, offset, path) {
            detach_links(ebpf, links);
            return Err(e.context(format!("{prog} at file offset {offset:#x}")));
        }
    }
    Ok(links)
}

/// Attaches the Go `crypto/tls` programs to the executable at `path`, at
/// the file offsets `probes` gives: `Read`'s returns first, so that an
/// entry never waits for a return that is not watched; `Write` where its
/// body starts (after the stack check).
pub(super) fn attach_go_file(ebpf: &mut Ebpf, path: &Path, probes: &GoTlsProbes) -> anyhow::Result<Links> {
    let mut points: Vec<(&'static str, u64)> = Vec::new();
    points.extend(probes.read.returns.iter().map(|&o| ("go_tls_read_return", o)));
    points.push(("go_tls_read", probes.read.entry));
    points.push(("go_tls_write", probes.write.body));
    points.extend(probes.close.map(|o| ("go_tls_close", o)));
    attach_at_offsets(ebpf, path, &points)
}

/// Attaches the OpenSSL programs to a Bun executable's BoringSSL at the
/// file offsets `probes` gives (BoringSSL's `SSL_read`/`SSL_write` take the
/// arguments OpenSSL's do), in the entry variants that look at every call
/// (Bun's BoringSSL has no symbol for `SSL_free`): return probes first, as
/// in [`attach_tls_file`].
pub(super) fn attach_boringssl_file(ebpf: &mut Ebpf, path: &Path, probes: &BoringSslProbes) -> anyhow::Result<Links> {
    attach_at_offsets(
        ebpf,
        path,
        &[
            ("ssl_return", probes.read),
            ("ssl_return", probes.write),
            ("ssl_read_every", probes.read),
            ("ssl_write_every", probes.write),
        ],
    )
}

/// Takes probes off; entries first.
pub(super) fn detach_links(ebpf: &mut Ebpf, links: Links) {
    for (prog, link) in links.into_iter().rev() {
        let detached = ebpf
            .program_mut(prog)
            .context(prog)
            .and_then(|p| Ok(<&mut UProbe>::try_from(p)?))
            .and_then(|p| Ok(p.detach(link)?));
        if let Err(e) = detached {
            log::warn!("TLS: could not take the {prog} probe off: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::floor::{FLOOR_COPY, FLOOR_FEXIT};
    use super::super::syscall_hook::{FEXIT_NET_STAGES, FEXIT_STAGES, SYSCALL_FEXITS};
    use super::*;

    /// `attach_tls_programs` knows whether `SSL_free` is watched only once
    /// its probe was tried, so it must be first; every entry has a program
    /// in the object either way.
    #[test]
    fn ssl_free_is_probed_first_and_every_entry_has_its_programs() {
        assert_eq!(TLS_ENTRY_PROBES[0].1, "SSL_free");
        let obj = embedded_object();
        for &(prog, _, _) in TLS_ENTRY_PROBES {
            for free_watched in [true, false] {
                let name = agent_entry(prog, free_watched);
                assert!(obj.programs.contains_key(name), "no program {name} in the object");
            }
        }
        assert_eq!(agent_entry("ssl_read_ex", true), "ssl_read_ex");
        assert_eq!(agent_entry("ssl_read_ex", false), "ssl_read_ex_every");
        assert_eq!(agent_entry("ssl_set_fd", false), "ssl_set_fd");
    }

    #[test]
    fn running_kernel_has_every_offset() {
        // Only meaningful where the kernel exposes BTF (CI machines do).
        let Ok(btf) = kernel_btf() else { return };
        let o = btf.kernel_offsets().expect("all members present");
        assert!(o.task_files > 0 && o.file_inode > 0 && o.inode_ino > 0);
    }

    /// The kernel programs built into this binary, parsed.
    fn embedded_object() -> aya_obj::Object {
        assert!(
            !EBPF_OBJECT.is_empty(),
            "built with MCP_MONITOR_SKIP_EBPF=1: no kernel programs to check"
        );
        aya_obj::Object::parse(EBPF_OBJECT).unwrap()
    }

    #[test]
    fn the_object_has_every_map_and_stage_the_loader_looks_up() {
        let obj = embedded_object();
        for name in map_name::ALL {
            assert!(obj.maps.contains_key(name), "no map {name} in the object");
        }
        for name in SYSCALL_STAGES
            .iter()
            .flat_map(|set| set.stages.iter().map(|(_, n)| n))
            .chain(TLS_STAGES.iter().map(|(_, n)| n))
            .chain(GO_TLS_PROGRAMS.iter())
            .chain(FEXIT_STAGES.iter().chain(FEXIT_NET_STAGES.iter()).map(|(_, n)| n))
            .chain(SYSCALL_FEXITS.iter().map(|(n, _)| n))
            .chain([FLOOR_FEXIT, FLOOR_COPY].iter())
        {
            assert!(obj.programs.contains_key(*name), "no program {name} in the object");
        }
        // The loader sets every global it knows (and fails if one is
        // missing). Each must be in the object's read-only data, which the
        // loader freezes: only there does the verifier take its value as
        // known and leave the branch it switches off unwalked (in `.data`
        // or `.bss`, 5.10 would walk the plain loads it refuses).
        let mut obj = embedded_object();
        let before: std::collections::HashMap<String, Vec<u8>> =
            obj.maps.iter().map(|(n, m)| (n.clone(), m.data().to_vec())).collect();
        obj.patch_map_data([(global_name::NET_REGS_BY_HELPER, (&[1u8][..], true))].into())
            .expect("the global is in the object");
        let changed: Vec<_> = obj.maps.iter().filter(|(n, m)| m.data() != before[*n]).collect();
        assert_eq!(changed.len(), 1, "one map holds the global");
        assert_eq!(
            changed[0].1.section_kind(),
            aya_obj::EbpfSectionKind::Rodata,
            "{} holds it",
            changed[0].0
        );
        assert!(obj
            .patch_map_data([("NO_SUCH_GLOBAL", (&[1u8][..], true))].into())
            .is_err());
    }

    /// The syscall hooks (every call on the host), the capture stages of
    /// traced reads and writes and the TLS probes call no BPF function
    /// (the discovery stages, which run for untracked streams that start
    /// like JSON, still do). The only one in the object is the
    /// byte-at-a-time `memset` the BPF linker provides (five instructions a
    /// byte), which LLVM calls for a run of zeroed fields: a chunk header's
    /// tail, a stream key's padding, a zeroed local array (7% of the
    /// capture stage at 200 B in perf, 2026-12-04). They are word stores
    /// now (`zero_words`, `StreamKey::new`, `Transfer::store`).
    #[test]
    fn the_read_path_calls_no_memset() {
        let obj = embedded_object();
        const BPF_CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
        const BPF_PSEUDO_CALL: u8 = 1;
        for name in [
            "sys_exit",
            "exit_capture",
            "fexit_capture",
            "fexit_net_capture",
            "fexit_sys_read",
            "fexit_sys_recvfrom",
            "fexit_sys_write",
            "fexit_sys_sendto",
            "tls_capture",
            "ssl_read",
            "ssl_read_ex",
            "ssl_write",
            "ssl_write_ex",
            "ssl_return",
            "ssl_read_every",
            "ssl_write_every",
            "ssl_read_ex_every",
            "ssl_write_ex_every",
            "go_tls_read",
            "go_tls_write",
        ] {
            let f = obj
                .functions
                .values()
                .find(|f| f.name == name)
                .unwrap_or_else(|| panic!("no function {name} in the object"));
            let calls = f
                .instructions
                .iter()
                .filter(|i| i.code == BPF_CALL && i.src_reg() == BPF_PSEUDO_CALL)
                .count();
            assert_eq!(calls, 0, "{name} calls a BPF function (memset?) {calls} times");
        }
    }
}
