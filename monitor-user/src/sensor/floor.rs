//! `mcp-monitor floor`: the price of the hooks themselves, with programs
//! that do nothing, attached where the agent attaches its own.

use std::path::Path;

use anyhow::Context;
use aya::{
    programs::{RawTracePoint, UProbe},
    Ebpf,
};

use super::load::{attach_tls_programs, load, rejected, SYSCALL_PROGRAMS};
use super::tls::{host_root, Probes, Scanner};
use crate::config::CaptureConfig;

/// Programs that do nothing (`mcp-monitor floor`), on the raw syscall
/// tracepoint the agent uses and, with `capture.tls`, at the entries and
/// returns of the OpenSSL functions it probes in the host's libssl files
/// and in those the running processes map: what the hooks alone cost, the
/// floor benchmarks compare the agent with. Go and Bun executables are left
/// out (their probe points are per build). Detached on drop.
pub struct Floor {
    _ebpf: Ebpf,
    /// The tracepoints the program is attached to.
    pub tracepoints: Vec<&'static str>,
    /// The OpenSSL files probed, as their processes see them.
    pub tls_files: Vec<String>,
}

impl Floor {
    /// Attaches the do-nothing programs (see [`Floor`]).
    pub fn attach(cfg: &CaptureConfig) -> anyhow::Result<Self> {
        let (mut ebpf, _) = load(cfg)?;
        let p: &mut RawTracePoint = ebpf.program_mut("floor").context("floor")?.try_into()?;
        p.load().map_err(|e| rejected("floor", e))?;
        for tp in SYSCALL_PROGRAMS {
            p.attach(tp)
                .with_context(|| format!("attaching to the raw tracepoint {tp}"))?;
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
            tracepoints: SYSCALL_PROGRAMS.to_vec(),
            tls_files,
        })
    }
}
