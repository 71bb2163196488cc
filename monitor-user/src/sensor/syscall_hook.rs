//! How system calls are hooked (`capture.syscall_hook`): fexit programs on
//! the system call functions of interest where the kernel allows them,
//! else the raw `sys_exit` tracepoint (monitor-ebpf hooks/syscalls.rs).
//!
//! Why it matters to every process on the node: a program on a syscall
//! tracepoint marks every task for the kernel's slow syscall path and runs
//! for every system call of the host (`epoll_wait`, `futex`, `openat`...),
//! while an fexit program runs only where the function it is attached to
//! returns. Lockdown (integrity mode) and kernels without BTF trampolines
//! refuse fexit; then the tracepoint, which loads everywhere, is used, and
//! the start-up line says why.

use anyhow::Context;
use aya::{
    maps::{MapData, ProgramArray},
    programs::{BtfTracePoint, FExit, ProgramError},
    Btf, Ebpf,
};
use monitor_common::{jump_slot, map_name};

use super::load::{rejected, SYSCALL_PROGRAMS, SYSCALL_STAGES};
use crate::btf::Pointee;
use crate::config::{CaptureConfig, SyscallHookChoice};

/// The fexit hooks and the system call function each is attached to
/// (x86_64 syscall wrappers, `long __x64_sys_<call>(const struct pt_regs *)`).
/// The last two are attached only with port selectors ([`PORT_FEXITS`]);
/// those of [`NET_FEXITS`] jump to the stages of `FEXIT_NET_JUMP`.
pub const SYSCALL_FEXITS: [(&str, &str); 13] = [
    ("fexit_sys_read", "__x64_sys_read"),
    ("fexit_sys_readv", "__x64_sys_readv"),
    ("fexit_sys_recvfrom", "__x64_sys_recvfrom"),
    ("fexit_sys_recvmsg", "__x64_sys_recvmsg"),
    ("fexit_sys_write", "__x64_sys_write"),
    ("fexit_sys_writev", "__x64_sys_writev"),
    ("fexit_sys_sendto", "__x64_sys_sendto"),
    ("fexit_sys_sendmsg", "__x64_sys_sendmsg"),
    ("fexit_sys_close", "__x64_sys_close"),
    ("fexit_sys_dup2", "__x64_sys_dup2"),
    ("fexit_sys_dup3", "__x64_sys_dup3"),
    ("fexit_sys_bind", "__x64_sys_bind"),
    ("fexit_sys_connect", "__x64_sys_connect"),
];

/// The fexit hooks only port selectors need.
pub const PORT_FEXITS: [&str; 2] = ["fexit_sys_bind", "fexit_sys_connect"];

/// The fexit hooks that tail-call into the stages: the reads and writes.
const TAIL_CALLING: [&str; 8] = [
    "fexit_sys_read",
    "fexit_sys_readv",
    "fexit_sys_recvfrom",
    "fexit_sys_recvmsg",
    "fexit_sys_write",
    "fexit_sys_writev",
    "fexit_sys_sendto",
    "fexit_sys_sendmsg",
];

/// The network calls' fexit hooks, which jump through `FEXIT_NET_JUMP`.
pub const NET_FEXITS: [&str; 6] = [
    "fexit_sys_recvfrom",
    "fexit_sys_recvmsg",
    "fexit_sys_sendto",
    "fexit_sys_sendmsg",
    "fexit_sys_bind",
    "fexit_sys_connect",
];

/// The function the fexit stages are loaded for: a tail call is refused
/// between tracing programs loaded for different prototypes (6.11, and
/// 6.1.y where it was backported), and the read and write calls other
/// than the network ones have this one's.
pub const FEXIT_STAGE_FUNCTION: &str = "__x64_sys_read";

/// The tail-call stages of the fexit hooks, by `FEXIT_JUMP` slot.
pub const FEXIT_STAGES: [(u32, &str); jump_slot::COUNT as usize] = [
    (jump_slot::DISCOVER, "fexit_discover"),
    (jump_slot::CAPTURE, "fexit_capture"),
    (jump_slot::DISCOVER_HTTP, "fexit_discover_http"),
    (jump_slot::DISCOVER_JSONRPC, "fexit_discover_jsonrpc"),
];

/// The function the network calls' stages are loaded for, when its
/// prototype in the kernel's BTF is not [`FEXIT_STAGE_FUNCTION`]'s (6.1
/// lists each network call twice, first as the stub of kernels without
/// networking, whose parameter is named `__unused`; the loader, as the
/// kernel, takes the first).
pub const FEXIT_NET_STAGE_FUNCTION: &str = "__x64_sys_recvfrom";

/// The stages of the network calls' fexit hooks, by `FEXIT_NET_JUMP` slot.
pub const FEXIT_NET_STAGES: [(u32, &str); jump_slot::COUNT as usize] = [
    (jump_slot::DISCOVER, "fexit_net_discover"),
    (jump_slot::CAPTURE, "fexit_net_capture"),
    (jump_slot::DISCOVER_HTTP, "fexit_net_discover_http"),
    (jump_slot::DISCOVER_JSONRPC, "fexit_net_discover_jsonrpc"),
];

/// The function an fexit program of the object is loaded for (the hooks',
/// the stages', the floor's).
pub fn fexit_function_of(program: &str) -> Option<&'static str> {
    if let Some((_, f)) = SYSCALL_FEXITS.iter().find(|(p, _)| *p == program) {
        return Some(f);
    }
    if program == super::floor::FLOOR_FEXIT || FEXIT_STAGES.iter().any(|(_, p)| *p == program) {
        return Some(FEXIT_STAGE_FUNCTION);
    }
    if FEXIT_NET_STAGES.iter().any(|(_, p)| *p == program) {
        return Some(FEXIT_NET_STAGE_FUNCTION);
    }
    None
}

/// The system call hook in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyscallHook {
    /// fexit programs on system call functions.
    Fexit {
        /// How many functions.
        functions: usize,
        /// Whether the network calls' hooks read the registers with a
        /// helper ([`net_regs_by_helper`]: 5.10).
        net_regs_by_helper: bool,
    },
    /// The raw `sys_exit` tracepoint.
    Tracepoint {
        /// Why fexit was not used; `None` when the configuration asked for
        /// the tracepoint.
        fexit_refused: Option<String>,
    },
}

impl SyscallHook {
    /// `"fexit"` or `"tracepoint"`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Fexit { .. } => "fexit",
            Self::Tracepoint { .. } => "tracepoint",
        }
    }

    /// For the start-up line naming the paths chosen for this kernel.
    pub fn describe(&self) -> String {
        match self {
            Self::Fexit {
                functions,
                net_regs_by_helper,
            } => format!(
                "fexit programs on {functions} system call functions (__x64_sys_read, __x64_sys_write, ...; \
                 arguments loaded from the saved registers they are passed{})",
                if *net_regs_by_helper {
                    ", read by a helper for the network calls, whose registers the kernel's BTF declares \
                     without members"
                } else {
                    ""
                }
            ),
            Self::Tracepoint { fexit_refused } => {
                let mut s =
                    "a BTF tracepoint on sys_exit (syscall arguments loaded from the saved registers it is passed)"
                        .to_owned();
                if let Some(why) = fexit_refused {
                    s.push_str(&format!(", as the kernel refused fexit: {why}"));
                }
                s
            }
        }
    }
}

/// The loaded stages of the chosen hook, attached by [`Prepared::attach`].
pub(super) struct Prepared {
    fexit: bool,
    net_regs_by_helper: bool,
    jumps: Vec<ProgramArray<MapData>>,
    fexit_refused: Option<String>,
}

/// The start-up error where `capture.syscall_hook = "fexit"` is refused.
pub(super) const FEXIT_REFUSED: &str = "capture.syscall_hook = \"fexit\", and the kernel refused it.\n\
     Fix: set capture.syscall_hook = \"auto\" (the sys_exit tracepoint where fexit is refused)";

/// The fexit hooks this configuration attaches.
pub(super) fn fexit_hooks(cfg: &CaptureConfig) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
    SYSCALL_FEXITS
        .iter()
        .copied()
        .filter(|(p, _)| !cfg.selectors.ports.is_empty() || !PORT_FEXITS.contains(p))
}

/// Loads the stages and hooks of the hook `cfg` asks for; with `auto`, a
/// refusal of fexit falls back to the tracepoint (and is said why).
pub(super) fn prepare(ebpf: &mut Ebpf, btf: &Btf, cfg: &CaptureConfig) -> anyhow::Result<Prepared> {
    if cfg.syscall_hook == SyscallHookChoice::Tracepoint {
        return prepare_tracepoint(ebpf, btf, None);
    }
    match prepare_fexit(ebpf, btf, cfg) {
        Ok((jumps, net_regs_by_helper)) => Ok(Prepared {
            fexit: true,
            net_regs_by_helper,
            jumps,
            fexit_refused: None,
        }),
        Err(e) if cfg.syscall_hook == SyscallHookChoice::Fexit => Err(e.context(FEXIT_REFUSED)),
        Err(e) => {
            unload_fexit(ebpf);
            let why = refusal(&e);
            prepare_tracepoint(ebpf, btf, Some(why.clone()))
                .with_context(|| format!("the kernel refused fexit too: {why}"))
        }
    }
}

impl Prepared {
    /// Attaches the hooks; with `auto`, an fexit attachment the kernel
    /// refuses falls back to the tracepoint. Returns the hook in use and
    /// the stage arrays, which must outlive the programs.
    pub(super) fn attach(
        self,
        ebpf: &mut Ebpf,
        btf: &Btf,
        cfg: &CaptureConfig,
    ) -> anyhow::Result<(SyscallHook, Vec<ProgramArray<MapData>>)> {
        if !self.fexit {
            attach_tracepoint(ebpf)?;
            return Ok((
                SyscallHook::Tracepoint {
                    fexit_refused: self.fexit_refused,
                },
                self.jumps,
            ));
        }
        let mut functions = 0;
        let mut failed = None;
        for (prog, function) in fexit_hooks(cfg) {
            let p: &mut FExit = ebpf.program_mut(prog).context(prog)?.try_into()?;
            match p.attach() {
                Ok(_) => functions += 1,
                Err(e) => {
                    failed = Some(anyhow::Error::new(e).context(format!("attaching {prog} to {function}")));
                    break;
                }
            }
        }
        let Some(e) = failed else {
            return Ok((
                SyscallHook::Fexit {
                    functions,
                    net_regs_by_helper: self.net_regs_by_helper,
                },
                self.jumps,
            ));
        };
        if cfg.syscall_hook == SyscallHookChoice::Fexit {
            return Err(e.context(FEXIT_REFUSED));
        }
        unload_fexit(ebpf);
        drop(self.jumps);
        let why = refusal(&e);
        let prepared = prepare_tracepoint(ebpf, btf, Some(why.clone()))
            .with_context(|| format!("the kernel refused fexit too: {why}"))?;
        prepared.attach(ebpf, btf, cfg)
    }
}

/// Loads the fexit stages and hooks; returns the stage arrays and whether
/// the network calls' hooks read the registers with a helper.
fn prepare_fexit(
    ebpf: &mut Ebpf,
    btf: &Btf,
    cfg: &CaptureConfig,
) -> anyhow::Result<(Vec<ProgramArray<MapData>>, bool)> {
    let kernel = super::load::kernel_btf()?;
    let functions: Vec<&str> = fexit_hooks(cfg).map(|(_, f)| f).collect();
    let net_apart = fexit_prototypes_fit(&kernel, &functions)?;
    let mut jump = ProgramArray::try_from(ebpf.take_map(map_name::FEXIT_JUMP).context(map_name::FEXIT_JUMP)?)?;
    let mut net_jump = ProgramArray::try_from(
        ebpf.take_map(map_name::FEXIT_NET_JUMP)
            .context(map_name::FEXIT_NET_JUMP)?,
    )?;
    for (index, prog) in FEXIT_STAGES {
        let p: &mut FExit = ebpf.program_mut(prog).context(prog)?.try_into()?;
        p.load(FEXIT_STAGE_FUNCTION, btf).map_err(|e| fexit_error(prog, e))?;
        jump.set(index, p.fd()?, 0)?;
        if !net_apart {
            net_jump.set(index, p.fd()?, 0)?;
        }
    }
    if net_apart {
        for (index, prog) in FEXIT_NET_STAGES {
            let p: &mut FExit = ebpf.program_mut(prog).context(prog)?.try_into()?;
            p.load(FEXIT_NET_STAGE_FUNCTION, btf)
                .map_err(|e| fexit_error(prog, e))?;
            net_jump.set(index, p.fd()?, 0)?;
        }
    }
    for (prog, function) in fexit_hooks(cfg) {
        let p: &mut FExit = ebpf.program_mut(prog).context(prog)?.try_into()?;
        p.load(function, btf).map_err(|e| fexit_error(prog, e))?;
    }
    Ok((vec![jump, net_jump], net_regs_by_helper(&kernel)))
}

/// Whether the kernel's BTF lets the hooks work on `functions`, and
/// whether the network calls need their own stages. Each function must
/// take a pointer to `struct pt_regs`: complete, or for the network calls
/// declared without members, as 5.10's BTF does (their hooks then read the
/// registers with a helper: [`net_regs_by_helper`]). Kernels since 6.11
/// refuse a tail call between tracing programs loaded for different
/// prototypes (compared by identity), so every hook must share the
/// prototype of the stages it jumps to: `__x64_sys_read`'s, or for the
/// network calls `__x64_sys_recvfrom`'s (returns `true` when that one
/// differs). The first function of each name counts, as for the loader and
/// the kernel.
pub(super) fn fexit_prototypes_fit(kernel: &crate::btf::Btf, functions: &[&str]) -> anyhow::Result<bool> {
    let proto = |f: &str| {
        kernel
            .func_proto(f)
            .with_context(|| format!("the kernel's BTF has no function {f}"))
    };
    let stages = proto(FEXIT_STAGE_FUNCTION)?;
    let net_stages = proto(FEXIT_NET_STAGE_FUNCTION)?;
    for f in functions {
        registers_by_helper(f, kernel.pointer_param(f, 0))?;
        let hook = hook_of(f);
        if hook.is_some_and(|p| !TAIL_CALLING.contains(&p)) {
            continue;
        }
        let net = hook.is_some_and(|p| NET_FEXITS.contains(&p));
        let (want, of) = if net {
            (net_stages, FEXIT_NET_STAGE_FUNCTION)
        } else {
            (stages, FEXIT_STAGE_FUNCTION)
        };
        if proto(f)? != want {
            anyhow::bail!(
                "the kernel's BTF gives {f} another prototype than {of}, so its hook could not jump to the stages"
            );
        }
    }
    Ok(net_stages != stages)
}

/// The fexit hook of system call function `function`.
fn hook_of(function: &str) -> Option<&'static str> {
    SYSCALL_FEXITS.iter().find(|(_, g)| *g == function).map(|(p, _)| *p)
}

/// Whether the hook of `function`, whose first parameter points to
/// `pointee`, must read the registers with a helper (`Ok(true)`), can load
/// them through the pointer (`Ok(false)`), or cannot work. The verifier
/// (5.10's) refuses a program that so much as reads a parameter whose
/// struct the BTF declares without members; only the network calls' hooks
/// can read them otherwise (`SavedRegs::of_net` in monitor-ebpf).
fn registers_by_helper(function: &str, pointee: Option<Pointee>) -> anyhow::Result<bool> {
    match pointee {
        Some(Pointee::Complete) => Ok(false),
        Some(Pointee::Forward) if hook_of(function).is_some_and(|p| NET_FEXITS.contains(&p)) => Ok(true),
        Some(Pointee::Forward) => anyhow::bail!(
            "the kernel's BTF declares the registers {function} is passed (struct pt_regs) without their \
             members, which its verifier refuses to read through"
        ),
        _ => anyhow::bail!("the kernel's BTF has no function {function} taking the saved registers"),
    }
}

/// The value of the kernel programs' `NET_REGS_BY_HELPER` for this
/// kernel: whether its BTF declares the registers of a network call's
/// function without members (5.10), so that the network calls' fexit
/// hooks read them with a helper. Set before the object is loaded, so the
/// verifier never walks the other way.
pub(super) fn net_regs_by_helper(kernel: &crate::btf::Btf) -> bool {
    SYSCALL_FEXITS
        .iter()
        .filter(|(p, _)| NET_FEXITS.contains(p))
        .any(|(_, f)| registers_by_helper(f, kernel.pointer_param(f, 0)).unwrap_or(false))
}

/// A refused fexit load, in one line: EPERM (lockdown, no trampolines) or
/// the verifier's last words. The agent then uses the tracepoint (with
/// `auto`), so this is a reason, not a fatal error; the matrix, which
/// expects fexit on its kernels, fails on it.
fn fexit_error(prog: &str, e: ProgramError) -> anyhow::Error {
    match &e {
        ProgramError::LoadError { io_error, .. } if io_error.raw_os_error() == Some(libc::EPERM) => {
            anyhow::anyhow!("the kernel refused to load {prog} (EPERM)")
        }
        ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            let last = super::verifier::error_lines(&log, 1).join(" ");
            anyhow::anyhow!(
                "the kernel refused {prog} ({io_error}){}",
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {last}")
                }
            )
        }
        _ => anyhow::Error::new(e).context(format!("loading {prog}")),
    }
}

/// Unloads every fexit program of the object that is loaded (detaching it).
fn unload_fexit(ebpf: &mut Ebpf) {
    let names = FEXIT_STAGES
        .iter()
        .chain(FEXIT_NET_STAGES.iter())
        .map(|(_, p)| *p)
        .chain(SYSCALL_FEXITS.iter().map(|(p, _)| *p));
    for prog in names {
        if let Some(p) = ebpf.program_mut(prog).and_then(|p| <&mut FExit>::try_from(p).ok()) {
            // Never loaded is the usual case here: nothing to undo.
            let _ = p.unload();
        }
    }
}

/// Why fexit was refused, in one line, naming the kernel's lockdown mode
/// when it has one (it refuses BPF trampolines).
pub(super) fn refusal(e: &anyhow::Error) -> String {
    let mut why = format!("{e:#}").replace('\n', " ");
    if let Ok(mode) = std::fs::read_to_string("/sys/kernel/security/lockdown") {
        if let Some(active) = mode.split_whitespace().find(|m| m.starts_with('[')) {
            if active != "[none]" {
                why.push_str(&format!(" (kernel lockdown is {})", active.trim_matches(['[', ']'])));
            }
        }
    }
    why
}

fn prepare_tracepoint(ebpf: &mut Ebpf, btf: &Btf, fexit_refused: Option<String>) -> anyhow::Result<Prepared> {
    let set = &SYSCALL_STAGES[0];
    let mut jump = ProgramArray::try_from(ebpf.take_map(set.map).context(set.map)?)?;
    for (index, prog) in set.stages {
        let p: &mut BtfTracePoint = ebpf.program_mut(prog).context(prog)?.try_into()?;
        p.load(set.tracepoint, btf).map_err(|e| rejected(prog, e))?;
        jump.set(index, p.fd()?, 0)?;
    }
    for prog in SYSCALL_PROGRAMS {
        let p: &mut BtfTracePoint = ebpf.program_mut(prog).context(prog)?.try_into()?;
        p.load(prog, btf).map_err(|e| rejected(prog, e))?;
    }
    Ok(Prepared {
        fexit: false,
        net_regs_by_helper: false,
        jumps: vec![jump],
        fexit_refused,
    })
}

fn attach_tracepoint(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    for tp in SYSCALL_PROGRAMS {
        let p: &mut BtfTracePoint = ebpf.program_mut(tp).context(tp)?.try_into()?;
        p.attach()
            .with_context(|| format!("attaching to the raw tracepoint {tp}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fexit_hooks_cover_the_calls_the_tracepoint_handles_and_ports_only_with_selectors() {
        // The tracepoint hook handles these calls (monitor-ebpf
        // hooks/syscalls.rs); each needs its fexit hook.
        for call in [
            "read", "readv", "recvfrom", "recvmsg", "write", "writev", "sendto", "sendmsg", "close", "dup2", "dup3",
            "bind", "connect",
        ] {
            let prog = format!("fexit_sys_{call}");
            assert_eq!(
                fexit_function_of(&prog),
                Some(format!("__x64_sys_{call}").as_str()),
                "{prog}"
            );
        }
        let mut cfg = CaptureConfig::default();
        let names: Vec<_> = fexit_hooks(&cfg).map(|(p, _)| p).collect();
        assert_eq!(names.len(), 11);
        assert!(!names.contains(&"fexit_sys_bind"));
        cfg.selectors.ports = vec![8080];
        assert_eq!(fexit_hooks(&cfg).count(), 13);
        for (_, stage) in FEXIT_STAGES {
            assert_eq!(fexit_function_of(stage), Some(FEXIT_STAGE_FUNCTION));
        }
        for (_, stage) in FEXIT_NET_STAGES {
            assert_eq!(fexit_function_of(stage), Some(FEXIT_NET_STAGE_FUNCTION));
        }
        // Every network call jumps through the network stages, and the
        // function they are loaded for is one of them.
        for call in ["recvfrom", "recvmsg", "sendto", "sendmsg", "bind", "connect"] {
            assert!(NET_FEXITS.contains(&format!("fexit_sys_{call}").as_str()), "{call}");
        }
        assert!(SYSCALL_FEXITS
            .iter()
            .any(|(p, f)| *f == FEXIT_NET_STAGE_FUNCTION && NET_FEXITS.contains(p)));
    }

    #[test]
    fn registers_declared_without_members_are_read_by_helper_in_the_network_hooks_only() {
        for f in ["__x64_sys_read", "__x64_sys_recvfrom", "__x64_sys_close"] {
            assert!(!registers_by_helper(f, Some(Pointee::Complete)).unwrap(), "{f}");
        }
        // 5.10: the network calls' registers are a forward declaration.
        for call in ["recvfrom", "recvmsg", "sendto", "sendmsg", "bind", "connect"] {
            let f = format!("__x64_sys_{call}");
            assert!(registers_by_helper(&f, Some(Pointee::Forward)).unwrap(), "{f}");
        }
        // The other hooks load through the pointer: there a forward
        // declaration means fexit cannot be used.
        let e = registers_by_helper("__x64_sys_read", Some(Pointee::Forward)).unwrap_err();
        assert!(e.to_string().contains("without their members"), "{e}");
        assert!(registers_by_helper("__x64_sys_write", Some(Pointee::Other)).is_err());
        assert!(registers_by_helper("__x64_sys_write", None).is_err());
    }

    /// The kernel BTF check on hand-built BTF: 5.10's (the network calls'
    /// registers a forward declaration, with their own prototype), 6.1's
    /// shape with complete registers, and one where a read's registers
    /// are a forward declaration.
    #[test]
    fn the_btf_check_takes_5_10_with_network_registers_read_by_helper() {
        use mcp_monitor_pipeline::btf::fixtures::syscall_functions;
        let all: Vec<&str> = SYSCALL_FEXITS.iter().map(|(_, f)| *f).collect();
        let of = |net: bool| -> Vec<&str> {
            SYSCALL_FEXITS
                .iter()
                .filter(|(p, _)| NET_FEXITS.contains(p) == net)
                .map(|(_, f)| *f)
                .collect()
        };
        let (net, other) = (of(true), of(false));
        let five_ten = crate::btf::Btf::parse(&syscall_functions(&other, &net)).unwrap();
        assert!(net_regs_by_helper(&five_ten));
        // The network calls have their own prototype there: their stages apart.
        assert!(fexit_prototypes_fit(&five_ten, &all).unwrap());
        let complete = crate::btf::Btf::parse(&syscall_functions(&all, &[])).unwrap();
        assert!(!net_regs_by_helper(&complete));
        assert!(!fexit_prototypes_fit(&complete, &all).unwrap());
        // A read whose registers are a forward declaration: no fexit.
        let mut forward = net.clone();
        forward.push("__x64_sys_read");
        let other: Vec<&str> = other.into_iter().filter(|f| *f != "__x64_sys_read").collect();
        let broken = crate::btf::Btf::parse(&syscall_functions(&other, &forward)).unwrap();
        let e = fexit_prototypes_fit(&broken, &all).unwrap_err();
        assert!(e.to_string().contains("__x64_sys_read"), "{e}");
    }

    #[test]
    fn the_start_up_line_says_why_fexit_was_not_used() {
        let hook = SyscallHook::Tracepoint {
            fexit_refused: Some("loading fexit_discover: Operation not permitted".into()),
        };
        assert!(hook.describe().starts_with("a BTF tracepoint on sys_exit"));
        assert!(hook
            .describe()
            .ends_with("as the kernel refused fexit: loading fexit_discover: Operation not permitted"));
        let fexit = |net_regs_by_helper| SyscallHook::Fexit {
            functions: 11,
            net_regs_by_helper,
        };
        assert_eq!(fexit(false).name(), "fexit");
        assert!(!fexit(false).describe().contains("helper"));
        assert!(fexit(true)
            .describe()
            .contains("read by a helper for the network calls"));
    }
}
