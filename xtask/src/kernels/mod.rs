//! The kernel matrix: `cargo xtask test kernels [VERSION...]`.
//!
//! Boots Debian's own kernels in qemu, with this machine's root file system
//! shared read-only (9p) under a throw-away overlay, and runs inside each:
//! `mcp-monitor check` (load and attach every program, instructions the
//! verifier processed per program) and the integration tests that capture a
//! stdio, a plain HTTP and an HTTPS session with real SDK clients and
//! servers. Kernels are fetched by package name through apt with a private
//! configuration (nothing under /etc changes) and cached, reduced to the
//! kernel image and the few modules the guest needs, under
//! `.tools/kernels/` (git-ignored).

use std::{fmt::Write as _, path::PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::root;

mod fetch;
mod guest;

pub(crate) use fetch::{apt, mirrors};
pub use fetch::{fetch, Kernel};
pub use guest::{boot, set_aside, GuestPlan, Outcome};

/// Modules the guest loads from its initramfs (with their dependencies):
/// virtio PCI transport, 9p over virtio, overlayfs.
const GUEST_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// One kernel of the matrix: a Debian suite whose `linux-image-amd64`
/// names the kernel.
pub struct Spec {
    /// What `cargo xtask test kernels VERSION` takes.
    pub version: &'static str,
    suite: &'static str,
    /// Whether the network calls' fexit hooks must read the registers with
    /// a helper there (its BTF declares them without members: 5.10), and
    /// only there: the plain loads are cheaper.
    pub net_regs_by_helper: bool,
}

/// The kernels production nodes run, oldest first (the machine's own
/// kernel is covered by the ordinary integration tests).
pub const MATRIX: &[Spec] = &[
    Spec {
        version: "5.10",
        suite: "bullseye",
        net_regs_by_helper: true,
    },
    Spec {
        version: "6.1",
        suite: "bookworm",
        net_regs_by_helper: false,
    },
    Spec {
        version: "6.12",
        suite: "trixie",
        net_regs_by_helper: false,
    },
];

/// Integration tests run in each guest: (test binary, exact test name).
pub const GUEST_TESTS: &[(&str, &str)] = &[
    ("stdio", "everything_server_with_typescript_client"),
    ("http", "streamable_http_seen_from_both_ends"),
    ("http", "https_seen_from_both_ends_at_the_tls_library"),
    ("http", "https_h2_seen_from_both_ends"),
    ("http_peers", "go_https_h2_seen_from_both_ends"),
];

/// How much slower than native the guests are allowed to be (TCG): the
/// tests' own waits are multiplied by this.
pub const TIME_SCALE: u32 = 6;

fn cache_dir() -> PathBuf {
    root().join(".tools/kernels")
}

fn out_dir() -> PathBuf {
    root().join("target/kernel-matrix")
}

/// Selects kernels by version; no argument means every one.
pub fn select(args: &[String]) -> Result<Vec<&'static Spec>> {
    if args.is_empty() {
        return Ok(MATRIX.iter().collect());
    }
    args.iter()
        .map(|a| {
            MATRIX.iter().find(|s| s.version == a).with_context(|| {
                let known: Vec<_> = MATRIX.iter().map(|s| s.version).collect();
                format!("no kernel {a} in the matrix (known: {})", known.join(", "))
            })
        })
        .collect()
}

/// What a `mcp-monitor check --json` report shows wrong: programs that cost
/// the verifier more than the report's budget or whose cost could not be
/// measured.
pub fn report_failures(report: &Value) -> Vec<String> {
    let budget = report["verifier_budget"].as_u64().unwrap_or(0);
    let mut out = Vec::new();
    for p in report["programs"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("?");
        // An fexit program where the kernel refused fexit (the agent
        // hooks the tracepoint there): [`hook_failures`] fails that
        // kernel.
        if !p["skipped"].is_null() {
            continue;
        }
        match p["processed_insns"].as_u64() {
            Some(n) if n > budget => out.push(format!(
                "program {name} made the verifier process {n} instructions, over the budget of {budget} \
                 (limit {})",
                report["verifier_limit"]
            )),
            // A count with an error is a walk cut short by a rejection.
            Some(_) if !p["error"].is_null() => {
                out.push(format!("program {name} was refused by the verifier: {}", p["error"]))
            }
            Some(_) => {}
            None => out.push(format!(
                "the verifier cost of program {name} could not be measured: {}",
                p["error"]
            )),
        }
    }
    out
}

/// What a matrix kernel's `mcp-monitor check --json` report shows wrong
/// about the system call hook: Debian's kernels allow fexit (5.10 too:
/// its network calls' hooks read the registers with a helper), so the
/// agent must have chosen it, reading the network calls' registers with
/// a helper where `net_regs_by_helper` (the kernel's [`Spec`]) says so
/// and only there.
pub fn hook_failures(report: &Value, net_regs_by_helper: bool) -> Vec<String> {
    let hook = report["syscall_hook"].as_str().unwrap_or("nothing named");
    let why = report["fexit_refused"].as_str().unwrap_or("");
    if hook != "fexit" {
        return vec![format!(
            "the agent hooked system calls with {hook} instead of fexit, which this kernel allows: {why}"
        )];
    }
    match report["net_regs_by_helper"].as_bool() {
        Some(b) if b == net_regs_by_helper => Vec::new(),
        Some(b) => vec![format!(
            "the network calls' fexit hooks read the registers {} here, where {} was expected",
            if b { "with a helper" } else { "with plain loads" },
            if net_regs_by_helper {
                "a helper (the BTF declares them without members)"
            } else {
                "plain loads"
            }
        )],
        None => vec!["check --json did not say how the network calls' hooks read the registers".to_owned()],
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Writes the verifier table (instructions processed per program per
/// kernel) to docs/KERNELS.md between its markers when every kernel of the
/// matrix ran, and every outcome to target/kernel-matrix/results.json.
pub fn write_report(outcomes: &[Outcome], host: Option<(String, Value)>) -> Result<()> {
    let mut cols: Vec<(String, &Value)> = outcomes
        .iter()
        .filter_map(|o| o.check.as_ref().map(|c| (o.release.clone(), c)))
        .collect();
    if let Some((rel, c)) = &host {
        cols.push((format!("{rel} (this machine)"), c));
    }
    let mut names: Vec<String> = Vec::new();
    for (_, c) in &cols {
        for p in c["programs"].as_array().into_iter().flatten() {
            let n = p["name"].as_str().unwrap_or("?").to_string();
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    let mut t = String::new();
    let _ = write!(t, "| program |");
    for (rel, _) in &cols {
        let _ = write!(t, " {rel} |");
    }
    let _ = write!(t, "\n|---|");
    for _ in &cols {
        let _ = write!(t, "---:|");
    }
    t.push('\n');
    for n in &names {
        let _ = write!(t, "| `{n}` |");
        for (_, c) in &cols {
            let v = c["programs"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"].as_str() == Some(n))
                .and_then(|p| p["processed_insns"].as_u64())
                .map(group)
                .unwrap_or_else(|| "–".into());
            let _ = write!(t, " {v} |");
        }
        t.push('\n');
    }
    // Only a run of the whole matrix, every kernel measured, rewrites the
    // table: a run of one kernel would leave the others' columns out.
    let complete = outcomes.len() == MATRIX.len() && outcomes.iter().all(|o| o.check.is_some());
    let doc = root().join("docs/KERNELS.md");
    if let (true, Ok(text)) = (complete, std::fs::read_to_string(&doc)) {
        let (b, e) = ("<!-- verifier-table:begin -->", "<!-- verifier-table:end -->");
        if let (Some(i), Some(j)) = (text.find(b), text.find(e)) {
            let new = format!("{}{b}\n{t}{}", &text[..i], &text[j..]);
            std::fs::write(&doc, new)?;
        }
    }
    let json: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            serde_json::json!({
                "version": o.version, "release": o.release, "seconds": o.seconds,
                "check_seconds": o.check_seconds, "check": o.check, "failures": o.failures,
            })
        })
        .collect();
    std::fs::create_dir_all(out_dir())?;
    std::fs::write(out_dir().join("results.json"), serde_json::to_string_pretty(&json)?)?;
    Ok(())
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{
        fetch::{modinfo_depends, source_entries},
        *,
    };

    #[test]
    fn sources_in_both_formats() {
        let one = "deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n# deb x y\n";
        assert_eq!(
            source_entries(one),
            vec![("http://m.example/debian".into(), "bookworm".into())]
        );
        let deb822 =
            "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                      Types: deb\nURIs: http://m.example/debian-security\nSuites: bookworm-security\n";
        let e = source_entries(deb822);
        assert_eq!(e.len(), 3);
        assert_eq!(
            e[2],
            ("http://m.example/debian-security".into(), "bookworm-security".into())
        );
    }

    #[test]
    fn depends_from_modinfo() {
        let ko = b"\x7fELF junk\0license=GPL\0depends=9pnet,netfs\0intree=Y\0";
        assert_eq!(modinfo_depends(ko), vec!["9pnet", "netfs"]);
        assert!(modinfo_depends(b"\0depends=\0").is_empty());
    }

    #[test]
    fn budget_is_enforced_from_the_report() {
        let mut r = serde_json::json!({"verifier_budget": 100, "verifier_limit": 1000, "programs": [
            {"name": "a", "processed_insns": 100},
            {"name": "b", "processed_insns": 101},
            {"name": "c", "processed_insns": null, "error": "EINVAL"},
            {"name": "d", "processed_insns": 50, "error": null},
        ], "kernel": "5.10.0-46-amd64"});
        let f = report_failures(&r);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f[0].contains("program b") && f[0].contains("101"), "{f:?}");
        assert!(f[1].contains("program c") && f[1].contains("EINVAL"), "{f:?}");
        // A count cut short by a rejection fails too.
        r["programs"][3]["error"] = "invalid func unknown#158".into();
        let f = report_failures(&r);
        assert!(
            f.len() == 3 && f[2].contains("program d") && f[2].contains("unknown#158"),
            "{f:?}"
        );
    }

    #[test]
    fn a_matrix_kernel_must_have_the_fexit_hook() {
        let mut r = serde_json::json!({"verifier_budget": 100, "verifier_limit": 1000, "programs": [
            {"name": "fexit_sys_read", "kind": "fexit", "processed_insns": null, "skipped": "EPERM"},
        ], "syscall_hook": "tracepoint", "fexit_refused": "loading fexit_discover: EPERM"});
        // Skipped programs are not failures of the budget...
        assert!(report_failures(&r).is_empty());
        // ...but a matrix kernel that did not get fexit is, whatever the
        // reason (5.10's BTF included: its network hooks read the
        // registers with a helper).
        let f = hook_failures(&r, false);
        assert!(
            f.len() == 1 && f[0].contains("tracepoint") && f[0].contains("EPERM"),
            "{f:?}"
        );
        r["fexit_refused"] =
            "the kernel's BTF declares the registers __x64_sys_recvfrom is passed (struct pt_regs) without their members"
                .into();
        assert_eq!(hook_failures(&r, true).len(), 1);
        r["syscall_hook"] = "fexit".into();
        r["fexit_refused"] = serde_json::Value::Null;
        // fexit, and the registers read as the kernel's BTF demands.
        assert_eq!(hook_failures(&r, false).len(), 1, "the report must say how");
        r["net_regs_by_helper"] = false.into();
        assert!(hook_failures(&r, false).is_empty());
        assert_eq!(hook_failures(&r, true).len(), 1);
        r["net_regs_by_helper"] = true.into();
        assert!(hook_failures(&r, true).is_empty());
        assert!(hook_failures(&r, false)[0].contains("with a helper"));
    }

    #[test]
    fn thousands() {
        assert_eq!(group(618155), "618,155");
        assert_eq!(group(12), "12");
        assert_eq!(group(1000000), "1,000,000");
    }
}
