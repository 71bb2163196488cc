//! What the kernel's verifier says about our programs.
//!
//! Two uses: `mcp-monitor check` reports how many instructions the verifier
//! processed for each program (its cost, against the limit of 1,000,000),
//! and a rejected program is explained by its name, the kernel release and
//! the verifier's own error line, with the instructions before it where
//! the kernel can give them.
//!
//! aya discards the verifier log of a program that loads, and
//! `bpf_prog_info.verified_insns` exists only from 5.16; so the count is
//! read from a second load of the same relocated instructions (this
//! module's [`Probe`]) with a statistics-only log, which every kernel since
//! 5.2 writes in a few lines.

use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
};

use aya::{maps::MapData, programs::ProgramError, util::KernelVersion};
use aya_obj::{
    btf::BtfKind,
    generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_insn, bpf_prog_type},
    EbpfSectionKind, Object, ProgramSection,
};

/// The verifier's limit on instructions processed per program, the same
/// on every kernel since 5.2.
pub const VERIFIER_LIMIT: u64 = 1_000_000;

/// The most instructions any of our programs may make the verifier
/// process, on any kernel we test: a quarter of the limit. The kernel
/// matrix and the native `check` test fail past it, so a change that makes
/// a program much costlier to verify is caught here, with headroom, before
/// an old kernel refuses it.
pub const VERIFIER_BUDGET: u64 = 250_000;

/// Verifier log levels (`BPF_LOG_LEVEL1`, `BPF_LOG_STATS`).
const LOG_INSNS: u32 = 1;
const LOG_STATS: u32 = 4;

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether a long verifier log keeps its end (the error) rather than its
/// start: the log rotates by default since 6.4.
pub fn log_keeps_tail() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 4, 0))
}

/// `processed N insns` from a verifier log.
pub fn processed_insns(log: &str) -> Option<u64> {
    let i = log.rfind("processed ")?;
    log[i + "processed ".len()..].split_whitespace().next()?.parse().ok()
}

/// The lines of a verifier log that say why it refused: the last lines
/// before the statistics, which is where every verifier prints its error.
pub fn error_lines(log: &str, context: usize) -> Vec<&str> {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .filter(|l| !l.starts_with("processed ") && !l.starts_with("verification time"))
        .filter(|l| !l.starts_with("stack depth") && !l.starts_with("mark_precise"))
        .collect();
    lines[lines.len().saturating_sub(context)..].to_vec()
}

/// A rejected program, explained: which program, on which kernel, the
/// verifier's error line (from aya's statistics-level log) and, where the
/// kernel keeps the end of long logs, the instructions before it.
pub fn explain_rejection(program: &str, err: &ProgramError, probe: Option<&Probe>) -> String {
    let release = kernel_release();
    let ProgramError::LoadError { io_error, verifier_log } = err else {
        return format!("loading eBPF program {program} on Linux {release} failed: {err}");
    };
    let log = format!("{verifier_log:?}");
    let errors = error_lines(&log, 3);
    let mut msg = format!(
        "the kernel verifier rejected eBPF program `{program}` on Linux {release} ({io_error}): {}",
        errors.last().copied().unwrap_or("(the verifier gave no reason)")
    );
    if let Some(n) = processed_insns(&log) {
        msg.push_str(&format!(
            "\n  after processing {n} instructions (limit {VERIFIER_LIMIT})"
        ));
    }
    if errors.len() > 1 {
        msg.push_str("\n  verifier:");
        for l in &errors {
            msg.push_str("\n    ");
            msg.push_str(l);
        }
    }
    if log_keeps_tail() {
        if let Some(p) = probe {
            let (_, trace) = p.load(program, LOG_INSNS | LOG_STATS, 4 << 20);
            let last = error_lines(&trace, 12);
            if !last.is_empty() {
                msg.push_str("\n  last instructions the verifier saw:");
                for l in last {
                    msg.push_str("\n    ");
                    msg.push_str(l);
                }
            }
        }
    } else {
        msg.push_str(
            "\n  (this kernel keeps only the start of long verifier logs, so the instructions before the error \
             are not shown; a kernel of 6.4 or later shows them)",
        );
    }
    msg.push_str(
        "\nThis is a bug in mcp-monitor for this kernel: please report it with this message. \
         Capture cannot start until it is fixed.",
    );
    msg
}

/// The object's programs relocated against maps of their own, ready to be
/// loaded again outside aya with the log level of our choice.
pub struct Probe {
    obj: Object,
    // Keeps the maps the instructions refer to open.
    _maps: Vec<MapData>,
    /// For BTF tracepoint programs, which are loaded for one tracepoint.
    kernel_btf: Result<aya_obj::btf::Btf, String>,
}

/// How many instructions the verifier processed for one program.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProgramCost {
    /// Program (function) name in the eBPF object.
    pub name: String,
    /// `tracepoint`, `raw_tracepoint`, `tp_btf`, `uprobe`, `uretprobe`.
    pub kind: &'static str,
    /// Instructions in the program (after relocation).
    pub insns: usize,
    /// Instructions the verifier processed (all paths), or `None` when the
    /// statistics load failed (`error` says why).
    pub processed_insns: Option<u64>,
    /// Why the statistics load failed: the error and the verifier log's last line; `None` on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the program was not measured: an fexit program where the
    /// system calls are hooked at the tracepoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

fn kind_of(section: &ProgramSection) -> Option<(&'static str, bpf_prog_type)> {
    match section {
        ProgramSection::TracePoint => Some(("tracepoint", bpf_prog_type::BPF_PROG_TYPE_TRACEPOINT)),
        ProgramSection::RawTracePoint => Some(("raw_tracepoint", bpf_prog_type::BPF_PROG_TYPE_RAW_TRACEPOINT)),
        ProgramSection::BtfTracePoint => Some(("tp_btf", bpf_prog_type::BPF_PROG_TYPE_TRACING)),
        ProgramSection::UProbe { .. } => Some(("uprobe", bpf_prog_type::BPF_PROG_TYPE_KPROBE)),
        ProgramSection::URetProbe { .. } => Some(("uretprobe", bpf_prog_type::BPF_PROG_TYPE_KPROBE)),
        ProgramSection::KProbe => Some(("kprobe", bpf_prog_type::BPF_PROG_TYPE_KPROBE)),
        ProgramSection::KRetProbe => Some(("kretprobe", bpf_prog_type::BPF_PROG_TYPE_KPROBE)),
        ProgramSection::FExit { .. } => Some(("fexit", bpf_prog_type::BPF_PROG_TYPE_TRACING)),
        _ => None,
    }
}

impl Probe {
    /// Parses `object` and relocates it against new maps (sized by
    /// `max_entries` where the object leaves a size to the loader). The
    /// object's `.rodata` is written and frozen as the loader does, with
    /// the `globals` the loader sets, so the verifier sees the same
    /// constants as in the real load.
    pub fn new(object: &[u8], max_entries: &[(&str, u32)], globals: &[(&str, u8)]) -> anyhow::Result<Self> {
        let mut obj = Object::parse(object)?;
        let values: Vec<[u8; 1]> = globals.iter().map(|(_, v)| [*v]).collect();
        obj.patch_map_data(
            globals
                .iter()
                .zip(&values)
                .map(|((name, _), v)| (*name, (&v[..], true)))
                .collect(),
        )?;
        let sizes: HashMap<&str, u32> = max_entries.iter().copied().collect();
        // The definitions stay borrowed by the relocation while `obj` is
        // changed: work on copies.
        let defs: Vec<(String, aya_obj::Map)> = obj.maps.iter().map(|(n, m)| (n.clone(), m.clone())).collect();
        let mut maps = Vec::with_capacity(defs.len());
        for (name, def) in &defs {
            let mut def = def.clone();
            if let Some(n) = sizes.get(name.as_str()) {
                def.set_max_entries(*n);
            }
            let data = MapData::create(def.clone(), name, None)
                .map_err(|e| anyhow::anyhow!("creating map {name} for the verifier statistics: {e}"))?;
            if !def.data().is_empty() {
                let freeze = def.section_kind() == EbpfSectionKind::Rodata;
                write_section_data(data.fd().as_fd().as_raw_fd(), def.data(), freeze)
                    .map_err(|e| anyhow::anyhow!("filling map {name} for the verifier statistics: {e}"))?;
            }
            maps.push(data);
        }
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
        let fds = defs
            .iter()
            .zip(&maps)
            .map(|((name, def), data)| (name.as_str(), data.fd().as_fd().as_raw_fd(), def));
        obj.relocate_maps(fds, &text_sections)?;
        obj.relocate_calls(&text_sections)?;
        let kernel_btf = aya_obj::btf::Btf::from_sys_fs().map_err(|e| format!("reading /sys/kernel/btf/vmlinux: {e}"));
        Ok(Self {
            obj,
            _maps: maps,
            kernel_btf,
        })
    }

    /// The kernel BTF id of the tracepoint a BTF tracepoint program is
    /// loaded for (`btf_trace_<tracepoint>`), as the agent loads it.
    fn btf_tracepoint_target(&self, program: &str) -> Result<u32, String> {
        let tracepoint = super::load::btf_tracepoint_of(program)
            .ok_or_else(|| format!("no tracepoint is known for the BTF tracepoint program {program}"))?;
        let btf = self.kernel_btf.as_ref().map_err(|e| e.clone())?;
        btf.id_by_type_name_kind(&format!("btf_trace_{tracepoint}"), BtfKind::Typedef)
            .map_err(|e| format!("the kernel's BTF has no tracepoint {tracepoint}: {e}"))
    }

    /// The kernel BTF id of the function an fexit program is loaded for,
    /// as the agent loads it.
    fn fexit_target(&self, program: &str) -> Result<u32, String> {
        let function = super::syscall_hook::fexit_function_of(program)
            .ok_or_else(|| format!("no function is known for the fexit program {program}"))?;
        let btf = self.kernel_btf.as_ref().map_err(|e| e.clone())?;
        btf.id_by_type_name_kind(function, BtfKind::Func)
            .map_err(|e| format!("the kernel's BTF has no function {function}: {e}"))
    }

    /// Program names, sorted.
    pub fn programs(&self) -> Vec<String> {
        let mut v: Vec<String> = self.obj.programs.keys().cloned().collect();
        v.sort();
        v
    }

    /// Loads `program` with the verifier log at `level` into a buffer of
    /// `log_size` bytes; returns the program (dropped at once by callers)
    /// and the log.
    pub fn load(&self, program: &str, level: u32, log_size: usize) -> (std::io::Result<OwnedFd>, String) {
        let Some(p) = self.obj.programs.get(program) else {
            return (Err(std::io::Error::other("no such program")), String::new());
        };
        let Some((_, ty)) = kind_of(&p.section) else {
            return (Err(std::io::Error::other("program type not measured")), String::new());
        };
        let Some(f) = self.obj.functions.get(&p.function_key()) else {
            return (Err(std::io::Error::other("program has no instructions")), String::new());
        };
        let mut log = vec![0u8; log_size.max(1024)];
        let kver = KernelVersion::current().map_or(0, KernelVersion::code);
        let attach = match p.section {
            ProgramSection::BtfTracePoint => match self.btf_tracepoint_target(program) {
                Ok(id) => Some((bpf_attach_type::BPF_TRACE_RAW_TP, id)),
                Err(e) => return (Err(std::io::Error::other(e)), String::new()),
            },
            ProgramSection::FExit { .. } => match self.fexit_target(program) {
                Ok(id) => Some((bpf_attach_type::BPF_TRACE_FEXIT, id)),
                Err(e) => return (Err(std::io::Error::other(e)), String::new()),
            },
            _ => None,
        };
        let r = prog_load(
            ty,
            attach,
            &f.instructions,
            &self.obj.license,
            kver,
            program,
            level,
            &mut log,
        );
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        (r, String::from_utf8_lossy(&log[..end]).into_owned())
    }

    /// The verifier's cost of every program of a type we load; fexit
    /// programs are listed as skipped for `skip_fexit`'s reason when given.
    pub fn costs(&self, skip_fexit: Option<&str>) -> Vec<ProgramCost> {
        let mut out = Vec::new();
        for name in self.programs() {
            let p = &self.obj.programs[&name];
            let Some((kind, _)) = kind_of(&p.section) else { continue };
            let insns = self
                .obj
                .functions
                .get(&p.function_key())
                .map_or(0, |f| f.instructions.len());
            if let (Some(why), "fexit") = (skip_fexit, kind) {
                out.push(ProgramCost {
                    name,
                    kind,
                    insns,
                    processed_insns: None,
                    error: None,
                    skipped: Some(why.to_owned()),
                });
                continue;
            }
            let (r, log) = self.load(&name, LOG_STATS, 64 << 10);
            let (processed, error) = match r {
                Ok(_fd) => (processed_insns(&log), None),
                Err(e) => (
                    processed_insns(&log),
                    Some(format!("{e}: {}", error_lines(&log, 1).join(" "))),
                ),
            };
            out.push(ProgramCost {
                name,
                kind,
                insns,
                processed_insns: processed,
                error,
                skipped: None,
            });
        }
        out
    }
}

/// Writes a data section's bytes into its one-entry array map and, for
/// `.rodata`, freezes it: only a frozen map's values are constants to the
/// verifier.
fn write_section_data(fd: i32, data: &[u8], freeze: bool) -> std::io::Result<()> {
    let key = 0u32;
    let sys = |cmd: bpf_cmd, attr: &bpf_attr| {
        // SAFETY: attr is initialised and outlives the call; the kernel only
        // reads the key and value it points at, which outlive it too.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd as libc::c_long,
                attr as *const bpf_attr,
                std::mem::size_of::<bpf_attr>(),
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: bpf_attr is plain data; all-zero is its documented default.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: BPF_MAP_UPDATE_ELEM and BPF_MAP_FREEZE use the second member
    // of the union.
    let u = unsafe { &mut attr.__bindgen_anon_2 };
    u.map_fd = fd as u32;
    u.key = &key as *const u32 as u64;
    u.__bindgen_anon_1.value = data.as_ptr() as u64;
    sys(bpf_cmd::BPF_MAP_UPDATE_ELEM, &attr)?;
    if freeze {
        // SAFETY: as above.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // Writing a union field is safe; only reading one is not.
        attr.__bindgen_anon_2.map_fd = fd as u32;
        sys(bpf_cmd::BPF_MAP_FREEZE, &attr)?;
    }
    Ok(())
}

/// `bpf(BPF_PROG_LOAD)` with our own log buffer.
#[allow(clippy::too_many_arguments)]
fn prog_load(
    ty: bpf_prog_type,
    attach: Option<(bpf_attach_type, u32)>,
    insns: &[bpf_insn],
    license: &CString,
    kernel_version: u32,
    name: &str,
    log_level: u32,
    log: &mut [u8],
) -> std::io::Result<OwnedFd> {
    // SAFETY: bpf_attr is plain data; all-zero is its documented default.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: BPF_PROG_LOAD uses the third member of the union.
    let u = unsafe { &mut attr.__bindgen_anon_3 };
    u.prog_type = ty as u32;
    if let Some((attach_type, btf_id)) = attach {
        u.expected_attach_type = attach_type as u32;
        u.attach_btf_id = btf_id;
    }
    u.insn_cnt = insns.len() as u32;
    u.insns = insns.as_ptr() as u64;
    u.license = license.as_ptr() as u64;
    u.kern_version = kernel_version;
    u.log_level = log_level;
    u.log_buf = log.as_mut_ptr() as u64;
    u.log_size = log.len() as u32;
    let n = name.len().min(u.prog_name.len() - 1);
    for (d, s) in u.prog_name.iter_mut().zip(name.as_bytes()[..n].iter()) {
        *d = *s as _;
    }
    // SAFETY: attr is initialised and outlives the call; the kernel writes
    // at most log_size bytes into log, which outlives the call too.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_PROG_LOAD as libc::c_long,
            &attr as *const bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG_510: &str = "func#0 @0\n\
        R2 min value is negative, either use unsigned or 'var &= const'\n\
        processed 618155 insns (limit 1000000) max_states_per_insn 4 total_states 12000 peak_states 9000 mark_read 10\n";

    #[test]
    fn processed_count_and_error_line() {
        assert_eq!(processed_insns(LOG_510), Some(618_155));
        assert_eq!(processed_insns("processed 12 insns (limit 1000000)"), Some(12));
        assert_eq!(processed_insns("nothing here"), None);
        assert_eq!(
            error_lines(LOG_510, 1),
            vec!["R2 min value is negative, either use unsigned or 'var &= const'"]
        );
        assert!(error_lines("", 3).is_empty());
    }

    #[test]
    fn rejection_names_program_kernel_and_reason() {
        let err = ProgramError::LoadError {
            io_error: std::io::Error::from_raw_os_error(libc::EACCES),
            verifier_log: aya_obj::VerifierLog::new(LOG_510.to_string()),
        };
        let m = explain_rejection("discover", &err, None);
        assert!(m.contains("`discover`"), "{m}");
        assert!(m.contains(&kernel_release()), "{m}");
        assert!(m.contains("R2 min value is negative"), "{m}");
        assert!(m.contains("618155"), "{m}");
    }
}
