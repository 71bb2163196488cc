//! The agent on this machine's kernel: `mcp-monitor check` loads and
//! attaches every program and reports what each costs the verifier. The
//! same check runs on 5.10, 6.1 and 6.12 in the kernel matrix
//! (`cargo xtask test kernels`).

use std::process::Command;

use mcp_monitor_tests::*;
use serde_json::Value;

#[test]
fn every_program_loads_within_the_verifier_budget() {
    require_root();
    let out = Command::new(monitor_bin())
        .args(["check", "--json"])
        .env("RUST_LOG", "info")
        .output()
        .expect("run mcp-monitor check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mcp-monitor check failed:\n{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("check --json prints JSON");

    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(r["kernel"].as_str(), Some(release.trim()));
    // The one start-up line naming the paths chosen for this kernel, and
    // the syscall hooks: the two raw tracepoints, nothing per call.
    assert!(
        stderr.contains(&format!(
            "kernel {}: raw tracepoints sys_enter/sys_exit",
            release.trim()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("capture attached: raw tracepoints sys_enter and sys_exit"),
        "{stderr}"
    );
    // And how the hooks reach the call's arguments on this kernel: the
    // BTF path from 5.15 on, a kernel read before.
    let (major, minor) = {
        let mut it = release.trim().split(['.', '-']).filter_map(|p| p.parse::<u32>().ok());
        (it.next().unwrap(), it.next().unwrap())
    };
    let expected = if (major, minor) >= (5, 15) {
        "syscall arguments from the task's saved registers (bpf_task_pt_regs)"
    } else {
        "syscall arguments by a kernel read of the saved registers"
    };
    assert!(stderr.contains(expected), "{expected:?} missing from {stderr}");

    let limit = r["verifier_limit"].as_u64().unwrap();
    let budget = r["verifier_budget"].as_u64().unwrap();
    assert_eq!(limit, 1_000_000);
    assert!(budget <= limit / 4, "the budget must keep headroom under the limit");

    let programs = r["programs"].as_array().unwrap();
    let names: Vec<&str> = programs.iter().filter_map(|p| p["name"].as_str()).collect();
    for needed in [
        "discover",
        "discover_http",
        "discover_jsonrpc",
        "capture",
        "sys_enter",
        "sys_exit",
        "sched_process_fork",
        "floor",
        "tls_discover",
        "tls_capture",
        "ssl_return",
    ] {
        assert!(names.contains(&needed), "{needed} missing from {names:?}");
    }
    for p in programs {
        let name = p["name"].as_str().unwrap();
        let n = p["processed_insns"]
            .as_u64()
            .unwrap_or_else(|| panic!("no verifier count for {name}: {}", p["error"]));
        // Every program does some work; a zero would mean the count is not read.
        assert!(n > 0, "{name}: {p}");
        // A count beside an error is a walk cut short by a rejection.
        assert!(p["error"].is_null(), "{name} was refused by the verifier: {p}");
        assert!(
            n <= budget,
            "{name} made the verifier process {n} instructions, over the budget of {budget}: \
             old kernels verify less cleverly, so this is where they start refusing it"
        );
    }
}
