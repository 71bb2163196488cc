//! The live sensor: loads the kernel programs, reads their ring buffer and
//! turns records into [`Observation`]s, adding process identity from `/proc`.
//!
//! It is the only part of the agent that needs privileges; everything after
//! it is the pure pipeline, which replays recordings without root.

pub mod ports;
pub mod preflight;
pub mod procfs;
pub mod tls;
pub mod verifier;

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use anyhow::Context;
use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{uprobe::UProbeScope, RawTracePoint, TracePoint, UProbe},
    Ebpf, EbpfLoader, VerifierLogLevel,
};
use monitor_common::{
    config_flags, jump_slot, map_name, stream_state, Counter, KernelConfig, ProcState, StreamKey, TrackReason,
    COMM_LEN, METHOD_ROOT_LEN, TRACKED_HINT_SLOTS,
};
use tokio::io::unix::AsyncFd;

use crate::{
    btf::Btf,
    config::CaptureConfig,
    control::Control,
    observation::{CaptureCounter, CaptureStats, LifecycleKind, Observation, ProcKey},
    ring_record,
    sensor::procfs::ProcReader,
};

/// The eBPF object built by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor.bpf.o"));

/// Read entries: attached only where the saved user registers could not be
/// found at start (see [`calibrate_regs`]); otherwise read exits take the
/// arguments from them and reads cost one program run instead of two.
const READ_ENTRY_PROGRAMS: &[(&str, &str)] = &[
    ("sys_enter_read", "sys_enter_read"),
    ("sys_enter_readv", "sys_enter_readv"),
    ("sys_enter_recvfrom", "sys_enter_recvfrom"),
    ("sys_enter_recvmsg", "sys_enter_recvmsg"),
];

/// Syscall tracepoints and the program attached to each (besides
/// [`READ_ENTRY_PROGRAMS`]).
const SYSCALL_PROGRAMS: &[(&str, &str)] = &[
    ("sys_exit_read", "sys_exit_ingress"),
    ("sys_exit_readv", "sys_exit_ingress"),
    ("sys_exit_recvfrom", "sys_exit_ingress"),
    ("sys_exit_recvmsg", "sys_exit_ingress"),
    ("sys_enter_write", "sys_enter_write"),
    ("sys_enter_writev", "sys_enter_writev"),
    ("sys_enter_sendto", "sys_enter_sendto"),
    ("sys_enter_sendmsg", "sys_enter_sendmsg"),
    ("sys_exit_write", "sys_exit_egress"),
    ("sys_exit_writev", "sys_exit_egress"),
    ("sys_exit_sendto", "sys_exit_egress"),
    ("sys_exit_sendmsg", "sys_exit_egress"),
    // Port selectors.
    ("sys_enter_bind", "sys_enter_bind"),
    ("sys_enter_connect", "sys_enter_connect"),
];

/// TLS entry probes: (program, OpenSSL function, required). A library
/// without the required functions is not probed; OpenSSL before 1.1.1 has
/// no `_ex` variants.
const TLS_ENTRY_PROBES: &[(&str, &str, bool)] = &[
    ("ssl_write", "SSL_write", true),
    ("ssl_read", "SSL_read", true),
    ("ssl_write_ex", "SSL_write_ex", false),
    ("ssl_read_ex", "SSL_read_ex", false),
    ("ssl_set_fd", "SSL_set_fd", false),
    ("ssl_free", "SSL_free", false),
];

/// Tail-call stages of the TLS path, by `TLS_JUMP` index (the same indices
/// as the syscall path's `JUMP`).
const TLS_STAGES: [(u32, &str); jump_slot::COUNT as usize] = [
    (jump_slot::DISCOVER, "tls_discover"),
    (jump_slot::CAPTURE, "tls_capture"),
    (jump_slot::DISCOVER_HTTP, "tls_discover_http"),
    (jump_slot::DISCOVER_JSONRPC, "tls_discover_jsonrpc"),
];

const SCHED_PROGRAMS: &[(&str, &str)] = &[
    ("sched_process_exec", "sched_process_exec"),
    ("sched_process_exit", "sched_process_exit"),
];

/// Most records handled per wake-up, so timers and signals get a turn
/// under sustained load.
pub const DRAIN_BUDGET: usize = 4096;

/// Most captured bytes taken from the ring per wake-up: the ring refills
/// while it is drained, so a count alone let a flood of large writes pull
/// hundreds of MiB into memory at once.
pub const DRAIN_BYTES: usize = 4 << 20;

const MAX_KNOWN: usize = 100_000;

/// A loaded and attached sensor.
pub struct Sensor {
    // Keeps programs attached and maps alive.
    ebpf: Ebpf,
    // Taken out of `ebpf` to fill it; must outlive the programs using it.
    _jump: ProgramArray<MapData>,
    _tls_jump: Option<ProgramArray<MapData>>,
    /// TLS library files probed, and attachments that failed.
    tls_targets: u64,
    tls_attach_errors: u64,
    ring: AsyncFd<RingBuf<MapData>>,
    decoder: ring_record::Decoder,
    procs: ProcReader,
    /// Processes whose identity has been sent to the pipeline (bounded:
    /// cleared when it grows past `MAX_KNOWN`, which only re-sends identities).
    known: HashSet<ProcKey>,
    boot_offset_ns: i128,
    /// Per-chunk payload cap in bytes given to the kernel (`capture.capture_cap_bytes`); written into recordings.
    pub capture_cap: u32,
    /// Keeps the kernel's eBPF run-time accounting on (capture.program_stats).
    _program_stats: Option<std::os::fd::OwnedFd>,
    /// Where read exits find the saved user registers (0: the arguments
    /// are stashed at entry).
    regs_offset: u32,
}

impl Sensor {
    /// Checks the environment, loads and attaches everything.
    pub fn start(cfg: &CaptureConfig, boot_offset_ns: i128) -> anyhow::Result<Self> {
        let (mut ebpf, kcfg) = load(cfg)?;
        let syscall_programs = syscall_programs(kcfg.regs_offset);
        let ncpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))? as u32;
        let procs = ProcReader::new("/proc", &procfs::node_passwd(Path::new("/proc")));
        install_selectors(&mut ebpf, cfg)?;

        // Tail-call targets first: the entry programs jump to them.
        let mut jump = ProgramArray::try_from(ebpf.take_map(map_name::JUMP).context("JUMP map")?)?;
        for (index, prog) in [
            (jump_slot::DISCOVER, "discover"),
            (jump_slot::CAPTURE, "capture"),
            (jump_slot::DISCOVER_HTTP, "discover_http"),
            (jump_slot::DISCOVER_JSONRPC, "discover_jsonrpc"),
        ] {
            let p: &mut TracePoint = ebpf.program_mut(prog).context(prog)?.try_into()?;
            p.load().map_err(|e| rejected(prog, e))?;
            jump.set(index, p.fd()?, 0)?;
        }

        let tls_jump = if cfg.tls { Some(load_tls(&mut ebpf)?) } else { None };

        // Load each program once (sys_exit_ingress and sys_exit_egress
        // serve four tracepoints each).
        let mut loaded = HashSet::new();
        for (_, prog) in &syscall_programs {
            if loaded.insert(*prog) {
                let p: &mut TracePoint = ebpf.program_mut(prog).context(*prog)?.try_into()?;
                p.load().map_err(|e| rejected(prog, e))?;
            }
        }
        for (tp, prog) in &syscall_programs {
            let p: &mut TracePoint = ebpf.program_mut(prog).context(*prog)?.try_into()?;
            p.attach("syscalls", tp)
                .with_context(|| format!("attaching to syscalls/{tp}"))?;
        }
        for (tp, prog) in SCHED_PROGRAMS {
            let p: &mut TracePoint = ebpf.program_mut(prog).context(*prog)?.try_into()?;
            p.load().map_err(|e| rejected(prog, e))?;
            p.attach("sched", tp)
                .with_context(|| format!("attaching to sched/{tp}"))?;
        }
        let fork: &mut RawTracePoint = ebpf
            .program_mut("sched_process_fork")
            .context("sched_process_fork")?
            .try_into()?;
        fork.load().map_err(|e| rejected("sched_process_fork", e))?;
        fork.attach("sched_process_fork")
            .context("attaching to sched_process_fork")?;

        let ring = RingBuf::try_from(ebpf.take_map(map_name::EVENTS).context("EVENTS map")?)?;
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged,
        // for as long as the AsyncFd that owns the RingBuf lives.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| anyhow::anyhow!("registering the ring buffer with tokio: {e}"))?;
        log::info!(
            "capture attached: {} syscall tracepoints (read arguments {}), {} CPUs, cap {} bytes/read, discovery {}",
            syscall_programs.len(),
            if kcfg.regs_offset != 0 {
                "from the saved registers at exit"
            } else {
                "stashed at entry"
            },
            ncpus,
            cfg.capture_cap_bytes,
            if cfg.discovery { "on" } else { "off" }
        );
        log::info!("{}", preflight::kernel_paths());
        let program_stats = if cfg.program_stats {
            match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    log::warn!("capture.program_stats: the kernel refused to turn on eBPF run-time statistics ({e}); bpf_program_* metrics stay at zero");
                    None
                }
            }
        } else {
            None
        };
        Ok(Self {
            ebpf,
            _jump: jump,
            _tls_jump: tls_jump,
            tls_targets: 0,
            tls_attach_errors: 0,
            ring,
            decoder: ring_record::Decoder::new(),
            procs,
            known: HashSet::new(),
            boot_offset_ns,
            capture_cap: cfg.capture_cap_bytes,
            _program_stats: program_stats,
            regs_offset: kcfg.regs_offset,
        })
    }

    /// Waits until the kernel wakes us (enough data waiting) or the poll
    /// interval passes.
    pub async fn wait(&mut self, poll: std::time::Duration) -> anyhow::Result<()> {
        match tokio::time::timeout(poll, self.ring.readable_mut()).await {
            Ok(guard) => {
                let mut guard = guard?;
                // Readiness is re-armed by the drain below.
                guard.clear_ready();
            }
            Err(_elapsed) => {}
        }
        Ok(())
    }

    /// Turns up to a budget of waiting records into observations passed to
    /// `out` in order; returns how many records were read (the budget
    /// means more may wait).
    /// Takes what the ring holds, up to [`DRAIN_BUDGET`] records and
    /// [`DRAIN_BYTES`] bytes, and hands it to `out`. Returns whether the
    /// budget ran out (more may be waiting).
    pub fn drain(&mut self, mut out: impl FnMut(Observation)) -> bool {
        let mut n = 0;
        let mut bytes = 0;
        let mut pending: Vec<ring_record::Record> = Vec::new();
        {
            let ring = self.ring.get_mut();
            while n < DRAIN_BUDGET && bytes < DRAIN_BYTES {
                let Some(item) = ring.next() else { break };
                n += 1;
                bytes += item.len();
                match self.decoder.decode(&item) {
                    Ok(r) => pending.push(r),
                    Err(e) => log::warn!("skipped a malformed ring record: {e}"),
                }
            }
        }
        for r in pending {
            self.emit_observations(r, &mut out);
        }
        n >= DRAIN_BUDGET || bytes >= DRAIN_BYTES
    }

    fn identity(&self, key: ProcKey, comm: &str, uid: u32, gid: u32) -> Observation {
        let mut info = self.procs.read(key.pid, key.start_ns, comm, uid, gid);
        info.start_unix_ns = (key.start_ns as i128 + self.boot_offset_ns) as i64;
        Observation::Process(Box::new(info))
    }

    fn emit_observations(&mut self, r: ring_record::Record, out: &mut impl FnMut(Observation)) {
        match r {
            ring_record::Record::Chunk(c) => {
                if self.known.len() > MAX_KNOWN {
                    self.known.clear();
                }
                if self.known.insert(c.proc) {
                    out(self.identity(c.proc, &c.comm, c.uid, c.gid));
                }
                out(Observation::Chunk(c));
            }
            ring_record::Record::Process { lifecycle, comm } => {
                match lifecycle.kind {
                    LifecycleKind::Exec => {
                        // New image: refresh identity (exe, cmdline).
                        self.known.insert(lifecycle.proc);
                        out(self.identity(lifecycle.proc, &comm, 0, 0));
                    }
                    LifecycleKind::Exit => {
                        self.known.remove(&lifecycle.proc);
                    }
                    LifecycleKind::Fork => {}
                }
                out(Observation::Lifecycle(lifecycle));
            }
        }
    }

    /// Current kernel counters, summed over CPUs.
    pub fn stats(&self) -> anyhow::Result<CaptureStats> {
        let arr = PerCpuArray::<_, u64>::try_from(self.ebpf.map(map_name::COUNTERS).context("COUNTERS map")?)?;
        let mut counters = Vec::with_capacity(Counter::ALL.len());
        for c in Counter::ALL {
            let v = arr.get(&(c as u32), 0)?;
            counters.push((CaptureCounter::Kernel(c), v.iter().sum()));
        }
        counters.push((CaptureCounter::TlsProbeTargets, self.tls_targets));
        counters.push((CaptureCounter::TlsAttachErrors, self.tls_attach_errors));
        let programs = self
            .ebpf
            .programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                Some((name.to_owned(), info.run_count(), info.run_time().as_nanos() as u64))
            })
            .collect();
        Ok(CaptureStats { counters, programs })
    }

    /// TLS library files probed so far.
    pub fn tls_targets(&self) -> u64 {
        self.tls_targets
    }

    /// How read exits get the call's arguments, for `check`.
    pub fn read_arguments(&self) -> String {
        if self.regs_offset != 0 {
            format!(
                "from the user registers saved at syscall entry ({:#x} from the kernel stack base): one program per read, no map write per call",
                self.regs_offset
            )
        } else {
            "stashed at entry (capture.arguments_from_registers is off, or the saved registers were not found): two programs per read".to_owned()
        }
    }

    /// Attaches the TLS probes to one library file (see [`tls`]). Failures
    /// are logged and counted (`mcp_monitor_tls_attach_errors_total`); the
    /// agent goes on without that file.
    pub fn attach_tls(&mut self, target: &tls::TlsTarget) {
        if self._tls_jump.is_none() {
            return;
        }
        let where_ = if target.pid == 0 {
            target.path.clone()
        } else {
            format!("{} (mapped by pid {})", target.path, target.pid)
        };
        match attach_tls_file(&mut self.ebpf, &target.attach_path()) {
            Ok(optional_missing) => {
                self.tls_targets += 1;
                if optional_missing.is_empty() {
                    log::info!("TLS: probing {where_}");
                } else {
                    log::info!("TLS: probing {where_} (without {})", optional_missing.join(", "));
                }
            }
            Err(e) => {
                self.tls_attach_errors += 1;
                log::warn!("TLS: cannot probe {where_}: {e:#}; its TLS traffic is not seen");
            }
        }
    }

    /// Applies a pipeline decision to the kernel maps.
    pub fn apply(&mut self, control: &Control) {
        let (s, state, what) = match control {
            Control::IgnoreStream(s) => (s, stream_state::IGNORE, "ignored"),
            Control::CaptureStream(s) => (s, stream_state::CAPTURE, "captured"),
            Control::QuietStream(s) => (s, stream_state::IGNORE_QUIET, "ignored for now"),
        };
        let key = StreamKey {
            tgid: s.pid,
            // TLS streams carry TLS_STREAM_FD (keyed by SSL object).
            fd: s.fd,
            inode: s.inode,
            direction: s.direction as u8,
            _pad: [0; 7],
        };
        match self
            .ebpf
            .map_mut(map_name::STREAMS)
            .map(BpfHashMap::<_, StreamKey, u8>::try_from)
        {
            Some(Ok(mut m)) => {
                if let Err(e) = m.insert(key, state, 0) {
                    log::warn!("could not mark stream pid {} fd {} {what}: {e}", s.pid, s.fd);
                }
            }
            _ => log::warn!("STREAMS map unavailable"),
        }
    }
}

/// Map sizes for the verifier probe: small (the verifier does not look at
/// them), the ring a page-aligned power of two.
const PROBE_MAP_SIZES: &[(&str, u32)] = &[
    (map_name::EVENTS, 1 << 16),
    (map_name::ARGS, 1024),
    (map_name::TLS_ARGS, 1024),
    (map_name::PROCS, 1024),
    (map_name::STREAMS, 1024),
];

/// The verifier's cost of each program on this kernel (`mcp-monitor check`).
pub fn verifier_costs() -> anyhow::Result<Vec<verifier::ProgramCost>> {
    if EBPF_OBJECT.is_empty() {
        anyhow::bail!("this binary was built without its eBPF programs (MCP_MONITOR_SKIP_EBPF=1)");
    }
    Ok(verifier::Probe::new(EBPF_OBJECT, PROBE_MAP_SIZES)?.costs())
}

/// A program the kernel refused, explained (see [`verifier::explain_rejection`]).
fn rejected(prog: &str, e: aya::programs::ProgramError) -> anyhow::Error {
    let probe = if verifier::log_keeps_tail() {
        verifier::Probe::new(EBPF_OBJECT, PROBE_MAP_SIZES).ok()
    } else {
        None
    };
    anyhow::anyhow!(verifier::explain_rejection(prog, &e, probe.as_ref()))
}

/// Loads the TLS programs and fills their tail-call map.
fn load_tls(ebpf: &mut Ebpf) -> anyhow::Result<ProgramArray<MapData>> {
    let mut jump = ProgramArray::try_from(ebpf.take_map(map_name::TLS_JUMP).context("TLS_JUMP map")?)?;
    for (index, prog) in TLS_STAGES {
        let p: &mut UProbe = ebpf.program_mut(prog).context(prog)?.try_into()?;
        p.load().map_err(|e| rejected(prog, e))?;
        jump.set(index, p.fd()?, 0)?;
    }
    let mut names: Vec<&str> = TLS_ENTRY_PROBES.iter().map(|(p, _, _)| *p).collect();
    names.push("ssl_return");
    for prog in names {
        let p: &mut UProbe = ebpf.program_mut(prog).context(prog)?.try_into()?;
        p.load().map_err(|e| rejected(prog, e))?;
    }
    Ok(jump)
}

/// Attaches entry and return probes to the OpenSSL functions in `path`;
/// returns the optional functions the file lacks. The return probe goes
/// first so that an entry never waits for a return that is not watched.
fn attach_tls_file(ebpf: &mut Ebpf, path: &Path) -> anyhow::Result<Vec<&'static str>> {
    let mut missing = Vec::new();
    for (prog, func, required) in TLS_ENTRY_PROBES {
        let returns = matches!(*prog, "ssl_write" | "ssl_read" | "ssl_write_ex" | "ssl_read_ex");
        if returns {
            let r: &mut UProbe = ebpf.program_mut("ssl_return").context("ssl_return")?.try_into()?;
            if let Err(e) = r.attach(*func, path, UProbeScope::AllProcesses) {
                if *required {
                    return Err(anyhow::Error::new(e).context(format!("return probe on {func}")));
                }
                missing.push(*func);
                continue;
            }
        }
        let p: &mut UProbe = ebpf.program_mut(prog).context(*prog)?.try_into()?;
        if let Err(e) = p.attach(*func, path, UProbeScope::AllProcesses) {
            if *required {
                return Err(anyhow::Error::new(e).context(format!("probe on {func}")));
            }
            missing.push(*func);
        }
    }
    Ok(missing)
}

/// Fills the discovery and selector maps and marks already-running selected processes
/// (and their descendants) as tracked.
fn install_selectors(ebpf: &mut Ebpf, cfg: &CaptureConfig) -> anyhow::Result<()> {
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

/// Checks the environment, loads the eBPF object, writes the kernel
/// configuration and measures where the saved user registers are; attaches
/// nothing but the short-lived `calibrate_regs`.
fn load(cfg: &CaptureConfig) -> anyhow::Result<(Ebpf, KernelConfig)> {
    preflight::check_kernel_version()?;
    preflight::check_privileges(preflight::effective_caps())?;
    if cfg.tls {
        preflight::check_uprobe_privilege()?;
    }
    preflight::check_btf()?;
    let tracefs = preflight::ensure_tracefs()?;
    let mut needed: Vec<(&str, &str)> = SYSCALL_PROGRAMS
        .iter()
        .chain(READ_ENTRY_PROGRAMS)
        .map(|(tp, _)| ("syscalls", *tp))
        .collect();
    needed.extend(SCHED_PROGRAMS.iter().map(|(tp, _)| ("sched", *tp)));
    preflight::check_tracepoints(tracefs, &needed)?;
    preflight::raise_memlock();
    if EBPF_OBJECT.is_empty() {
        anyhow::bail!(
            "this binary was built without its eBPF programs (MCP_MONITOR_SKIP_EBPF=1).\n\
                 Fix: rebuild with `cargo xtask build`."
        );
    }

    let offsets = kernel_btf()?
        .kernel_offsets()
        .context("resolving kernel structure offsets from BTF")?;
    let ncpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))? as u32;

    // A rejected program is retried by aya with a log: statistics only
    // (the error line and the count), never the per-instruction trace,
    // which on a long path overflows any buffer and takes minutes.
    let mut ebpf = EbpfLoader::new()
        .verifier_log_level(VerifierLogLevel::STATS)
        .map_max_entries(map_name::SCRATCH, ncpus)
        .map_max_entries(map_name::EVENTS, cfg.ring_buffer_bytes)
        .map_max_entries(map_name::ARGS, cfg.max_inflight_syscalls)
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
    let mut kcfg = KernelConfig {
        self_tgid: std::process::id(),
        capture_cap: cfg.capture_cap_bytes,
        discovery_window: cfg.discovery_window_bytes,
        flags,
        wakeup_bytes: cfg.wakeup_bytes,
        regs_offset: 0,
        offsets,
    };
    Array::<_, KernelConfig>::try_from(ebpf.map_mut(map_name::CONFIG).context("CONFIG map")?)?.set(0, kcfg, 0)?;
    if cfg.arguments_from_registers {
        kcfg.regs_offset = calibrate_regs(&mut ebpf);
    }
    Array::<_, KernelConfig>::try_from(ebpf.map_mut(map_name::CONFIG).context("CONFIG map")?)?.set(0, kcfg, 0)?;
    Ok((ebpf, kcfg))
}

/// Programs that do nothing, attached to the syscall tracepoints the agent
/// would use on this kernel (`mcp-monitor floor`): what the hooks alone
/// cost, the floor benchmarks compare the agent with. Detached on drop.
pub struct Floor {
    _ebpf: Ebpf,
    /// The tracepoints the program is attached to.
    pub tracepoints: Vec<&'static str>,
}

impl Floor {
    /// Attaches the do-nothing program (see [`Floor`]).
    pub fn attach(cfg: &CaptureConfig) -> anyhow::Result<Self> {
        let (mut ebpf, kcfg) = load(cfg)?;
        let hooks = syscall_programs(kcfg.regs_offset);
        let p: &mut TracePoint = ebpf.program_mut("floor").context("floor")?.try_into()?;
        p.load().map_err(|e| rejected("floor", e))?;
        for (tp, _) in &hooks {
            p.attach("syscalls", tp)
                .with_context(|| format!("attaching to syscalls/{tp}"))?;
        }
        Ok(Self {
            _ebpf: ebpf,
            tracepoints: hooks.iter().map(|(tp, _)| *tp).collect(),
        })
    }
}

/// The syscall tracepoints to attach, and their programs.
fn syscall_programs(regs_offset: u32) -> Vec<(&'static str, &'static str)> {
    let mut v = SYSCALL_PROGRAMS.to_vec();
    if regs_offset == 0 {
        v.extend_from_slice(READ_ENTRY_PROGRAMS);
    }
    v
}

/// Finds where the kernel keeps the user registers saved at syscall entry,
/// from a task's kernel stack base (`THREAD_SIZE` and the padding above
/// `pt_regs` differ between kernel builds): `calibrate_regs` is attached
/// to the raw `sys_enter` tracepoint for one system call of ours. Returns
/// 0 (the read arguments are then stashed at entry) if that fails; the
/// kernel programs still check every use against the call's number.
fn calibrate_regs(ebpf: &mut Ebpf) -> u32 {
    let measured = (|| -> anyhow::Result<u64> {
        let p: &mut RawTracePoint = ebpf
            .program_mut("calibrate_regs")
            .context("calibrate_regs")?
            .try_into()?;
        p.load().map_err(|e| rejected("calibrate_regs", e))?;
        let link = p.attach("sys_enter").context("attaching to raw tracepoint sys_enter")?;
        // Any system call of this process will do.
        let _ = std::fs::metadata("/");
        p.detach(link)?;
        p.unload()?;
        let m = Array::<_, u64>::try_from(ebpf.map(map_name::REGS_CALIBRATION).context("REGS_CALIBRATION map")?)?;
        Ok(m.get(&0, 0)?)
    })();
    match measured {
        // A kernel stack is at most a few pages; pt_regs is 8-aligned.
        Ok(off) if off > 0 && off < (1 << 20) && off % 8 == 0 => off as u32,
        Ok(off) => {
            log::warn!(
                "the saved user registers were not found at a plausible place ({off:#x} from the stack base); \
                 read arguments are stashed at entry (a second program run per read)"
            );
            0
        }
        Err(e) => {
            log::warn!("could not measure where the saved user registers are ({e:#}); read arguments are stashed at entry (a second program run per read)");
            0
        }
    }
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

/// Reads the running kernel's BTF.
fn kernel_btf() -> anyhow::Result<Btf> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_kernel_has_every_offset() {
        // Only meaningful where the kernel exposes BTF (CI machines do).
        let Ok(btf) = kernel_btf() else { return };
        let o = btf.kernel_offsets().expect("all members present");
        assert!(o.task_files > 0 && o.file_inode > 0 && o.inode_ino > 0);
    }

    #[test]
    fn the_object_has_every_map_and_stage_the_loader_looks_up() {
        assert!(
            !EBPF_OBJECT.is_empty(),
            "built with MCP_MONITOR_SKIP_EBPF=1: no kernel programs to check"
        );
        let obj = aya_obj::Object::parse(EBPF_OBJECT).unwrap();
        for name in map_name::ALL {
            assert!(obj.maps.contains_key(name), "no map {name} in the object");
        }
        let stages = ["discover", "capture", "discover_http", "discover_jsonrpc"];
        for name in stages.iter().chain(TLS_STAGES.iter().map(|(_, n)| n)) {
            assert!(obj.programs.contains_key(*name), "no program {name} in the object");
        }
    }
}
