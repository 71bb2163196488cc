//! `mcp-monitor floor`: the price of the tracepoints themselves, with
//! programs that do nothing.

use anyhow::Context;
use aya::{programs::TracePoint, Ebpf};

use super::load::{load, rejected, syscall_programs};
use crate::config::CaptureConfig;

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
