//! `mcp-monitor floor`: the price of the hooks themselves, with programs
//! that do nothing, attached where the agent attaches its own.

use std::path::Path;

use anyhow::Context;
use aya::{
    programs::{fexit::FExitLink, FExit, RawTracePoint, UProbe},
    Btf, Ebpf,
};

use super::load::{attach_tls_programs, load, rejected, SYSCALL_PROGRAMS};
use super::syscall_hook::{fexit_hooks, fexit_prototypes_fit, refusal, SyscallHook, FEXIT_REFUSED};
use super::tls::{host_root, Probes, Scanner};
use crate::config::{CaptureConfig, SyscallHookChoice};

/// The do-nothing fexit program, loaded once per function.
pub const FLOOR_FEXIT: &str = "floor_fexit";

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
