//! `mcp-monitor floor`: the price of the hooks themselves, with programs
//! that do nothing, attached where the agent attaches its own; and with
//! `--copy-reads`, the price of the least any capture does (see
//! [`CopyFloor`]).

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context;
use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{fexit::FExitLink, BtfTracePoint, FExit, RawTracePoint, UProbe},
    Btf, Ebpf,
};
use monitor_common::{map_name, Counter, FloorCopyRecord, COMM_LEN, FLOOR_COPY_BYTES};

use super::load::{attach_tls_programs, load, rejected, SYSCALL_PROGRAMS};
use super::syscall_hook::{fexit_hooks, fexit_prototypes_fit, refusal, SyscallHook, FEXIT_REFUSED};
use super::tls::{host_root, Probes, Scanner};
use crate::config::{CaptureConfig, SyscallHookChoice};

/// The do-nothing fexit program, loaded once per function.
pub const FLOOR_FEXIT: &str = "floor_fexit";

/// The copy floor's program ([`CopyFloor`]) and the tracepoint it is
/// loaded for.
pub const FLOOR_COPY: &str = "floor_copy";
/// See [`FLOOR_COPY`].
pub const FLOOR_COPY_TRACEPOINT: &str = "sys_exit";

/// Programs that do nothing (`mcp-monitor floor`), where the agent hooks
/// system calls (the functions of its fexit hooks, chosen as the agent
/// chooses, or the raw syscall tracepoint) and, with `capture.tls`, at the entries and
/// returns of the OpenSSL functions it probes in the host's libssl files
/// and in those the running processes map: what the hooks alone cost, the
/// floor benchmarks compare the agent with. Go and Bun executables are left
/// out (their probe points are per build). Detached on drop.
pub struct Floor {
    _ebpf: Ebpf,
    _fexit_links: Vec<FExitLink>,
    /// How system calls are hooked, as the agent would hook them here.
    pub syscall_hook: SyscallHook,
    /// The OpenSSL files probed, as their processes see them.
    pub tls_files: Vec<String>,
}

impl Floor {
    /// Attaches the do-nothing programs (see [`Floor`]).
    pub fn attach(cfg: &CaptureConfig) -> anyhow::Result<Self> {
        let (mut ebpf, _) = load(cfg)?;
        let btf = Btf::from_sys_fs().context("reading the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
        let mut fexit_links = Vec::new();
        let syscall_hook = match cfg.syscall_hook {
            SyscallHookChoice::Tracepoint => SyscallHook::Tracepoint { fexit_refused: None },
            choice => match attach_fexit_floor(&mut ebpf, &btf, cfg, &mut fexit_links) {
                // The floor reads no registers.
                Ok(functions) => SyscallHook::Fexit {
                    functions,
                    net_regs_by_helper: false,
                },
                Err(e) if choice == SyscallHookChoice::Fexit => return Err(e.context(FEXIT_REFUSED)),
                Err(e) => {
                    fexit_links.clear();
                    SyscallHook::Tracepoint {
                        fexit_refused: Some(refusal(&e)),
                    }
                }
            },
        };
        if let SyscallHook::Tracepoint { .. } = syscall_hook {
            let p: &mut RawTracePoint = ebpf.program_mut("floor").context("floor")?.try_into()?;
            p.load().map_err(|e| rejected("floor", e))?;
            for tp in SYSCALL_PROGRAMS {
                p.attach(tp)
                    .with_context(|| format!("attaching to the raw tracepoint {tp}"))?;
            }
        }
        let mut tls_files = Vec::new();
        if cfg.tls {
            for prog in ["floor_uprobe", "floor_uretprobe"] {
                let p: &mut UProbe = ebpf.program_mut(prog).context(prog)?.try_into()?;
                p.load().map_err(|e| rejected(prog, e))?;
            }
            let mut scanner = Scanner::new("/proc", cfg.tls_executables.clone());
            let mut targets = scanner.scan_host(&host_root(Path::new("/proc")));
            targets.extend(scanner.scan_processes());
            for t in targets.iter().filter(|t| matches!(t.probes, Probes::OpenSsl)) {
                // Links stay with the programs until the object is dropped.
                match attach_tls_programs(&mut ebpf, &t.attach_path(), |_, _| "floor_uprobe", "floor_uretprobe") {
                    Ok(_) => tls_files.push(t.path.clone()),
                    // As the agent: a file that cannot be probed is left.
                    Err(e) => log::warn!("floor: not probing {}: {e:#}", t.path),
                }
            }
        }
        Ok(Self {
            _ebpf: ebpf,
            _fexit_links: fexit_links,
            syscall_hook,
            tls_files,
        })
    }
}

/// Attaches the do-nothing fexit program to every function the agent's
/// fexit hooks would use: one program, loaded once per function (the
/// function is chosen at load), each link kept in `links` when the program
/// is unloaded for the next. Returns how many functions.
fn attach_fexit_floor(
    ebpf: &mut Ebpf,
    btf: &Btf,
    cfg: &CaptureConfig,
    links: &mut Vec<FExitLink>,
) -> anyhow::Result<usize> {
    // Where the agent would not use fexit, neither does its floor.
    let functions: Vec<&str> = fexit_hooks(cfg).map(|(_, f)| f).collect();
    fexit_prototypes_fit(&super::load::kernel_btf()?, &functions)?;
    let p: &mut FExit = ebpf.program_mut(FLOOR_FEXIT).context(FLOOR_FEXIT)?.try_into()?;
    for function in functions {
        p.load(function, btf)
            .with_context(|| format!("loading {FLOOR_FEXIT} for {function}"))?;
        let link = p
            .attach()
            .with_context(|| format!("attaching {FLOOR_FEXIT} to {function}"))?;
        links.push(p.take_link(link)?);
        p.unload()?;
    }
    Ok(links.len())
}

/// The copy floor (`mcp-monitor floor --copy-reads NAME`): `floor_copy` on
/// the `sys_exit` tracepoint puts the first `FLOOR_COPY_BYTES` of every
/// `read` of the processes named NAME in the ring, one copy and nothing
/// else, and a thread here reads every byte of every record, as a framer
/// must (so the ring's lines move to the reader's CPU and back, as with
/// the agent). What the agent costs a traced process beyond this is its
/// design; this much any sensor that ships the bytes pays. Detached on
/// drop.
pub struct CopyFloor {
    ebpf: Ebpf,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<CopyFloorTally>>,
}

/// What the copy floor's reader took from the ring.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyFloorTally {
    /// Records read.
    pub records: u64,
    /// Payload bytes in them.
    pub bytes: u64,
    /// Newlines among those bytes (the reader's pass over each byte).
    pub newlines: u64,
}

/// What the copy floor did, at its end.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyFloorReport {
    /// What the reader took.
    pub tally: CopyFloorTally,
    /// Records the program put in the ring (`Counter::Records`): the
    /// reader must have read them all.
    pub submitted: u64,
    /// Reads the full ring refused.
    pub ring_full: u64,
    /// Reads whose bytes could not be copied.
    pub copy_failed: u64,
}

impl CopyFloor {
    /// Attaches `floor_copy` for the processes whose name (`comm`, at most
    /// 15 bytes) is `name`, and starts the reader.
    pub fn attach(cfg: &CaptureConfig, name: &str) -> anyhow::Result<Self> {
        let comm = comm_key(name)?;
        let (mut ebpf, _) = load(cfg)?;
        let btf = Btf::from_sys_fs().context("reading the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
        let mut names = BpfHashMap::<_, [u8; COMM_LEN], u8>::try_from(
            ebpf.map_mut(map_name::COMM_SELECTORS).context("COMM_SELECTORS map")?,
        )?;
        names.insert(comm, 1, 0)?;
        let mut ring = RingBuf::try_from(ebpf.take_map(map_name::EVENTS).context("EVENTS map")?)?;
        let p: &mut BtfTracePoint = ebpf.program_mut(FLOOR_COPY).context(FLOOR_COPY)?.try_into()?;
        p.load(FLOOR_COPY_TRACEPOINT, &btf)
            .map_err(|e| rejected(FLOOR_COPY, e))?;
        p.attach()
            .with_context(|| format!("attaching {FLOOR_COPY} to the BTF tracepoint on {FLOOR_COPY_TRACEPOINT}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let reader = std::thread::Builder::new()
            .name("copy-floor".into())
            .spawn(move || {
                let mut tally = CopyFloorTally::default();
                loop {
                    // Acquire: a pass begun after the stop flag is seen
                    // begins after the program's detach (`finish`).
                    let last = stopping.load(Ordering::Acquire);
                    drain(&mut ring, &mut tally);
                    if last {
                        return tally;
                    }
                    // The programs never wake the reader: it polls, so the
                    // traced process pays no wake-up.
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .context("starting the copy floor's reader")?;
        Ok(Self {
            ebpf,
            stop,
            reader: Some(reader),
        })
    }

    /// Detaches, reads what is left, and reports.
    pub fn finish(mut self) -> anyhow::Result<CopyFloorReport> {
        // Programs first, so that the reader's last pass empties the ring.
        let p: &mut BtfTracePoint = self.ebpf.program_mut(FLOOR_COPY).context(FLOOR_COPY)?.try_into()?;
        p.unload().with_context(|| format!("detaching {FLOOR_COPY}"))?;
        self.stop.store(true, Ordering::Release);
        let tally = self
            .reader
            .take()
            .expect("the reader runs until finish")
            .join()
            .map_err(|_| anyhow::anyhow!("the copy floor's reader panicked"))?;
        let counters = PerCpuArray::<_, u64>::try_from(self.ebpf.map(map_name::COUNTERS).context("COUNTERS map")?)?;
        let total = |c: Counter| -> anyhow::Result<u64> { Ok(counters.get(&(c as u32), 0)?.iter().sum()) };
        Ok(CopyFloorReport {
            tally,
            submitted: total(Counter::Records)?,
            ring_full: total(Counter::DropRingFull)?,
            copy_failed: total(Counter::DropCopyFailed)?,
        })
    }
}

impl Drop for CopyFloor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Where a [`FloorCopyRecord`]'s bytes start, after its count.
const BYTES_AT: usize = std::mem::offset_of!(FloorCopyRecord, bytes);
const _: () = assert!(BYTES_AT == 8, "the count is a u64 read from the record's first bytes");

/// Reads every record in the ring, and every byte of each.
fn drain(ring: &mut RingBuf<MapData>, tally: &mut CopyFloorTally) {
    while let Some(item) = ring.next() {
        let (len, bytes) = item.split_at(BYTES_AT.min(item.len()));
        let len = u64::from_ne_bytes(len.try_into().unwrap_or([0; 8])) as usize;
        let bytes = &bytes[..len.min(bytes.len()).min(FLOOR_COPY_BYTES)];
        tally.records += 1;
        tally.bytes += bytes.len() as u64;
        tally.newlines += memchr::memchr_iter(b'\n', bytes).count() as u64;
    }
}

/// The `COMM_SELECTORS` key of a process name: its bytes, NUL-padded.
fn comm_key(name: &str) -> anyhow::Result<[u8; COMM_LEN]> {
    if name.is_empty() || name.len() >= COMM_LEN {
        anyhow::bail!(
            "--copy-reads takes a process name of 1 to {} bytes, as the kernel keeps it (comm); got {name:?}",
            COMM_LEN - 1
        );
    }
    let mut key = [0u8; COMM_LEN];
    key[..name.len()].copy_from_slice(name.as_bytes());
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_key_pads_a_name_and_refuses_one_the_kernel_would_cut() {
        let k = comm_key("echo-pair").unwrap();
        assert_eq!(&k[..9], b"echo-pair");
        assert!(k[9..].iter().all(|&b| b == 0));
        assert!(comm_key("").is_err());
        assert!(comm_key("a-name-of-16-ch!").is_err());
        assert!(comm_key("fifteen-bytes!!").is_ok());
    }
}
