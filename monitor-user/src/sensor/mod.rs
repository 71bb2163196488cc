//! The live sensor: loads the kernel programs, reads their ring buffer and
//! turns records into [`Observation`]s, adding process identity from `/proc`.
//!
//! It is the only part of the agent that needs privileges; everything after
//! it is the pure pipeline, which replays recordings without root.

mod floor;
mod found_probes;
mod load;
mod mapped_file;

pub use floor::{CopyFloor, CopyFloorReport, CopyFloorTally, Floor};
pub use load::verifier_costs;
use load::{
    attach_boringssl_file, attach_go_file, attach_tls_file, detach_links, load, load_tls, rejected, Links,
    SCHED_PROGRAMS,
};
use selectors::install_selectors;
pub use syscall_hook::SyscallHook;
pub mod ports;
pub mod preflight;
pub mod procfs;
mod selectors;
pub mod syscall_hook;
pub mod tls;
pub mod verifier;

use std::{collections::HashSet, path::Path};

use anyhow::Context;
use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
    Ebpf,
};
use monitor_common::{map_name, stream_state, Counter, StreamKey};
use tokio::io::unix::AsyncFd;

use crate::{
    config::CaptureConfig,
    control::Control,
    observation::{CaptureCounter, CaptureStats, LifecycleKind, Observation, ProcKey},
    ring_record,
    sensor::procfs::ProcReader,
};

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
    _jumps: Vec<ProgramArray<MapData>>,
    /// How system calls are hooked on this kernel.
    syscall_hook: SyscallHook,
    _tls_jump: Option<ProgramArray<MapData>>,
    /// TLS library files probed, and attachments that failed.
    tls_targets: u64,
    tls_attach_errors: u64,
    go_tls_refused: u64,
    /// Go programs with `crypto/tls` left unprobed as they name no MCP
    /// method.
    go_tls_not_mcp: u64,
    boringssl_refused: u64,
    boringssl_verified: u64,
    tls_probes_removed: u64,
    /// The probes of each file (device, inode), with its path for logs.
    probed: std::collections::HashMap<(u64, u64), (String, Links)>,
    /// Probes at offsets found in machine code, until their first
    /// captures show plaintext.
    found_probes: found_probes::FoundProbes,
    /// Where processes that ran a new executable are sent (the TLS scan),
    /// and how many could not be (the scan was behind).
    execs: Option<std::sync::mpsc::SyncSender<u32>>,
    exec_notices_dropped: u64,
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
}

impl Sensor {
    /// Checks the environment, loads and attaches everything.
    pub fn start(cfg: &CaptureConfig, boot_offset_ns: i128) -> anyhow::Result<Self> {
        let (mut ebpf, _) = load(cfg)?;
        let ncpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))? as u32;
        let procs = ProcReader::new("/proc", &procfs::node_passwd(Path::new("/proc")));
        install_selectors(&mut ebpf, cfg)?;

        // Tail-call targets first: the entry programs jump to them.
        let btf = aya::Btf::from_sys_fs().context("reading the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
        let syscall_hooks = syscall_hook::prepare(&mut ebpf, &btf, cfg)?;

        let tls_jump = if cfg.tls { Some(load_tls(&mut ebpf)?) } else { None };

        // Fork, exit and exec before the syscall hooks: the syscall hooks'
        // cache of thread ids (monitor-ebpf threads.rs) relies on seeing
        // every thread born or gone while they run.
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
        let (syscall_hook, jumps) = syscall_hooks.attach(&mut ebpf, &btf, cfg)?;

        let ring = RingBuf::try_from(ebpf.take_map(map_name::EVENTS).context("EVENTS map")?)?;
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged,
        // for as long as the AsyncFd that owns the RingBuf lives.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| anyhow::anyhow!("registering the ring buffer with tokio: {e}"))?;
        log::info!(
            "capture attached: {}, {} CPUs, cap {} bytes/read, discovery {}",
            match &syscall_hook {
                SyscallHook::Fexit { functions, .. } => format!("fexit programs on {functions} system call functions"),
                SyscallHook::Tracepoint { .. } => "a BTF tracepoint on the raw tracepoint sys_exit".to_owned(),
            },
            ncpus,
            cfg.capture_cap_bytes,
            if cfg.discovery { "on" } else { "off" }
        );
        log::info!("{}", preflight::kernel_paths(&syscall_hook));
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
            _jumps: jumps,
            syscall_hook,
            _tls_jump: tls_jump,
            tls_targets: 0,
            tls_attach_errors: 0,
            go_tls_refused: 0,
            go_tls_not_mcp: 0,
            boringssl_refused: 0,
            boringssl_verified: 0,
            tls_probes_removed: 0,
            probed: std::collections::HashMap::new(),
            found_probes: found_probes::FoundProbes::new("/proc"),
            execs: None,
            exec_notices_dropped: 0,
            ring,
            decoder: ring_record::Decoder::new(),
            procs,
            known: HashSet::new(),
            boot_offset_ns,
            capture_cap: cfg.capture_cap_bytes,
            _program_stats: program_stats,
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
        let mut pending = ring_record::Batch::default();
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
        for r in pending.into_records() {
            self.emit_observations(r, &mut out);
        }
        n >= DRAIN_BUDGET || bytes >= DRAIN_BYTES
    }

    fn identity(&self, key: ProcKey, comm: &str, uid: u32, gid: u32) -> Observation {
        let mut info = self.procs.read(key.pid, key.start_ns, comm, uid, gid);
        info.start_unix_ns = (key.start_ns as i128 + self.boot_offset_ns) as i64;
        Observation::Process(Box::new(info))
    }

    /// Sends a process's identity before its first record.
    fn introduce(&mut self, key: ProcKey, comm: &str, uid: u32, gid: u32, out: &mut impl FnMut(Observation)) {
        if self.known.len() > MAX_KNOWN {
            self.known.clear();
        }
        if self.known.insert(key) {
            out(self.identity(key, comm, uid, gid));
        }
    }

    /// Sends processes that ran a new executable to `execs` (the TLS
    /// scan, which looks at each at once): a bounded queue; a process it
    /// has no room for is counted (`mcp_monitor_exec_notices_dropped_total`)
    /// and found by the next periodic scan instead, if it still runs.
    pub fn watch_execs(&mut self, execs: std::sync::mpsc::SyncSender<u32>) {
        self.execs = Some(execs);
    }

    fn exec_seen(&mut self, pid: u32) {
        if let Some(tx) = &self.execs {
            if tx.try_send(pid).is_err() {
                self.exec_notices_dropped += 1;
            }
        }
    }

    fn emit_observations(&mut self, r: ring_record::Record, out: &mut impl FnMut(Observation)) {
        match r {
            ring_record::Record::Chunk(c) => {
                match self.found_probes.observe(&c) {
                    Some(found_probes::Outcome::Verified) => self.boringssl_verified += 1,
                    Some(found_probes::Outcome::Wrong(file)) => {
                        self.boringssl_refused += 1;
                        self.take_off(&file);
                    }
                    None => {}
                }
                self.introduce(c.proc, &c.comm, c.uid, c.gid, out);
                out(Observation::Chunk(c));
            }
            ring_record::Record::WriterNotice { notice, comm, uid, gid } => {
                self.introduce(notice.proc, &comm, uid, gid, out);
                out(Observation::WriterNotice(notice));
            }
            ring_record::Record::ExecNotice { pid } => self.exec_seen(pid),
            ring_record::Record::Process { lifecycle, comm } => {
                match lifecycle.kind {
                    LifecycleKind::Exec => {
                        self.exec_seen(lifecycle.proc.pid);
                        // Another executable: looked up again.
                        self.found_probes.exited(&lifecycle.proc);
                        // New image: refresh identity (exe, cmdline).
                        self.known.insert(lifecycle.proc);
                        out(self.identity(lifecycle.proc, &comm, 0, 0));
                    }
                    LifecycleKind::Exit => {
                        self.known.remove(&lifecycle.proc);
                        self.found_probes.exited(&lifecycle.proc);
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
        counters.push((CaptureCounter::GoTlsRefused, self.go_tls_refused));
        counters.push((CaptureCounter::GoTlsNotMcp, self.go_tls_not_mcp));
        counters.push((CaptureCounter::BoringSslRefused, self.boringssl_refused));
        counters.push((CaptureCounter::BoringSslVerified, self.boringssl_verified));
        counters.push((CaptureCounter::TlsProbesRemoved, self.tls_probes_removed));
        counters.push((CaptureCounter::ExecNoticesDropped, self.exec_notices_dropped));
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

    /// How system calls are hooked on this kernel.
    pub fn syscall_hook(&self) -> &SyscallHook {
        &self.syscall_hook
    }

    /// TLS library files probed so far.
    pub fn tls_targets(&self) -> u64 {
        self.tls_targets
    }

    /// Attaches the TLS probes to one file (see [`tls`]): OpenSSL's
    /// functions by symbol, Go's `crypto/tls` at the offsets of its
    /// function table, or a Bun executable's BoringSSL at the offsets its
    /// error reports give. Failures are logged and counted
    /// (`mcp_monitor_tls_attach_errors_total`), executables that cannot be
    /// probed safely too (`mcp_monitor_go_tls_refused_total`,
    /// `mcp_monitor_boringssl_refused_total`); the agent goes on without
    /// that file.
    pub fn attach_tls(&mut self, target: &tls::TlsTarget) {
        if self._tls_jump.is_none() {
            return;
        }
        let where_ = if target.pid == 0 {
            target.path.clone()
        } else {
            format!("{} (mapped by pid {})", target.path, target.pid)
        };
        let attached = match &target.probes {
            tls::Probes::OpenSsl => attach_tls_file(&mut self.ebpf, &target.attach_path()).map(|(links, missing)| {
                let what = if missing.is_empty() {
                    String::new()
                } else {
                    format!(" (without {})", missing.join(", "))
                };
                (links, what)
            }),
            tls::Probes::Go(p) => attach_go_file(&mut self.ebpf, &target.attach_path(), p).map(|links| {
                (
                    links,
                    format!(" (Go {} crypto/tls: {} return points)", p.version, p.read.returns.len()),
                )
            }),
            tls::Probes::GoNotMcp(version) => {
                self.go_tls_not_mcp += 1;
                log::info!(
                    "TLS: not probing {where_}: a Go program ({version}) whose strings hold none of MCP's names (protocolVersion, tools/call, ...), so it does not handle MCP itself; capture.tls_go = \"all\" probes every Go program"
                );
                return;
            }
            tls::Probes::GoRefused(e) => {
                self.go_tls_refused += 1;
                log::warn!("TLS: not probing {where_}: {e}; its TLS traffic is not seen");
                return;
            }
            tls::Probes::BoringSsl(p) if self.found_probes.distrusts(p.build_id.as_deref()) => {
                self.boringssl_refused += 1;
                log::warn!(
                    "TLS: not probing {where_}: a Bun executable of a build whose probes handed over no plaintext earlier in this run; its TLS traffic is not seen"
                );
                return;
            }
            tls::Probes::BoringSsl(p) => attach_boringssl_file(&mut self.ebpf, &target.attach_path(), p).map(|links| {
                self.found_probes
                    .attached(target.file, where_.clone(), p.build_id.clone());
                (
                    links,
                    format!(
                        " (Bun's BoringSSL: SSL_read at {:#x}, SSL_write at {:#x})",
                        p.read, p.write
                    ),
                )
            }),
            tls::Probes::BoringSslRefused(e) => {
                self.boringssl_refused += 1;
                log::warn!("TLS: not probing {where_}: a Bun executable whose {e}; its TLS traffic is not seen");
                return;
            }
        };
        match attached {
            Ok((links, what)) => {
                self.tls_targets += 1;
                self.probed.insert(target.file, (target.path.clone(), links));
                log::info!("TLS: probing {where_}{what}");
            }
            Err(e) => {
                self.tls_attach_errors += 1;
                log::warn!("TLS: cannot probe {where_}: {e:#}; its TLS traffic is not seen");
            }
        }
    }

    /// A probed file that was deleted and that no process maps or runs any
    /// more, or that was rewritten in place ([`tls::Scanner::take_unused`]):
    /// its probes are taken off, so that its blocks are freed on disk (a
    /// probe holds its file), or so that it is probed afresh.
    pub fn unprobe(&mut self, unused: &tls::Unused) {
        if self.take_off(&unused.file) {
            self.tls_probes_removed += 1;
            if unused.rewritten {
                log::info!(
                    "TLS: {} was rewritten in place: its probes are taken off, and it is looked at again by the next scan",
                    unused.path
                );
            } else {
                log::info!(
                    "TLS: {} was deleted and no process uses it any more: its probes are taken off",
                    unused.path
                );
            }
        }
    }

    /// Takes the probes of a file off; whether it had any.
    fn take_off(&mut self, file: &(u64, u64)) -> bool {
        self.found_probes.forget(file);
        let Some((_, links)) = self.probed.remove(file) else {
            return false;
        };
        detach_links(&mut self.ebpf, links);
        self.tls_targets = self.tls_targets.saturating_sub(1);
        true
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
