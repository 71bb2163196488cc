//! `mcp-monitor floor`: the price of the tracepoints themselves, with
//! programs that do nothing.

use anyhow::Context;
use aya::{programs::RawTracePoint, Ebpf};

use super::load::{load, rejected, SYSCALL_PROGRAMS};
use crate::config::CaptureConfig;

/// A program that does nothing, attached to the raw syscall tracepoints
/// the agent uses (`mcp-monitor floor`): what the hooks alone cost, the
/// floor benchmarks compare the agent with. Detached on drop.
pub struct Floor {
    _ebpf: Ebpf,
    /// The tracepoints the program is attached to.
    pub tracepoints: Vec<&'static str>,
}

impl Floor {
    /// Attaches the do-nothing program (see [`Floor`]).
    pub fn attach(cfg: &CaptureConfig) -> anyhow::Result<Self> {
        let (mut ebpf, _) = load(cfg)?;
        let p: &mut RawTracePoint = ebpf.program_mut("floor").context("floor")?.try_into()?;
        p.load().map_err(|e| rejected("floor", e))?;
        for tp in SYSCALL_PROGRAMS {
            p.attach(tp)
                .with_context(|| format!("attaching to the raw tracepoint {tp}"))?;
        }
        Ok(Self {
            _ebpf: ebpf,
            tracepoints: SYSCALL_PROGRAMS.to_vec(),
        })
    }
}
