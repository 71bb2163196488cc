//! The agent on this machine's kernel: `mcp-monitor check` loads and
//! attaches every program and reports what each costs the verifier. The
//! same check runs on 5.10, 6.1 and 6.12 in the kernel matrix
//! (`cargo xtask test kernels`).

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

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
    // the syscall hook: fexit programs on the system call functions where
    // the kernel allows them, else a BTF tracepoint on the raw syscall exit
    // tracepoint, saying why (this machine's lockdown refuses fexit; the
    // kernel matrix requires fexit on Debian's kernels).
    let hook = r["syscall_hook"].as_str().expect("syscall_hook in the report");
    match hook {
        "fexit" => {
            assert!(
                stderr.contains(&format!(
                    "kernel {}: fexit programs on 11 system call functions",
                    release.trim()
                )),
                "{stderr}"
            );
            assert!(
                stderr.contains("capture attached: fexit programs on 11 system call functions"),
                "{stderr}"
            );
        }
        "tracepoint" => {
            let why = r["fexit_refused"].as_str().expect("why fexit was refused");
            assert!(
                stderr.contains(&format!(
                    "kernel {}: a BTF tracepoint on sys_exit (syscall arguments loaded from the saved registers it is passed), \
                     as the kernel refused fexit: {why}",
                    release.trim()
                )),
                "{stderr}"
            );
            assert!(
                stderr.contains("capture attached: a BTF tracepoint on the raw tracepoint sys_exit"),
                "{stderr}"
            );
        }
        other => panic!("unknown syscall hook {other}"),
    }
    // The network calls' hooks read the registers with a helper only on
    // fexit, where the BTF declares them without members (5.10), and the
    // start-up line says so exactly then.
    let by_helper = r["net_regs_by_helper"]
        .as_bool()
        .expect("net_regs_by_helper in the report");
    assert!(!by_helper || hook == "fexit", "{r}");
    assert_eq!(
        stderr.contains("read by a helper for the network calls"),
        by_helper,
        "{stderr}"
    );

    let limit = r["verifier_limit"].as_u64().unwrap();
    let budget = r["verifier_budget"].as_u64().unwrap();
    assert_eq!(limit, 1_000_000);
    assert!(budget <= limit / 4, "the budget must keep headroom under the limit");

    let programs = r["programs"].as_array().unwrap();
    let names: Vec<&str> = programs.iter().filter_map(|p| p["name"].as_str()).collect();
    let kinds: std::collections::HashMap<&str, &str> = programs
        .iter()
        .filter_map(|p| Some((p["name"].as_str()?, p["kind"].as_str()?)))
        .collect();
    assert_eq!(kinds.get("sys_exit"), Some(&"tp_btf"), "sys_exit in {kinds:?}");
    // The copy floor runs where the agent's tracepoint hook does.
    assert_eq!(kinds.get("floor_copy"), Some(&"tp_btf"), "floor_copy in {kinds:?}");
    for stage in ["discover", "discover_http", "discover_jsonrpc", "capture"] {
        let name = format!("exit_{stage}");
        // Loaded for the tracepoint of the hook that jumps to it: a tail
        // call between tracing programs loaded for tracepoints of
        // different prototypes is refused (6.18 here).
        assert_eq!(kinds.get(name.as_str()), Some(&"tp_btf"), "{name} in {kinds:?}");
        // The fexit hooks' own copies, loaded as fexit programs (the
        // network calls' for their own prototype).
        for name in [format!("fexit_{stage}"), format!("fexit_net_{stage}")] {
            assert_eq!(kinds.get(name.as_str()), Some(&"fexit"), "{name} in {kinds:?}");
        }
    }
    for call in [
        "read", "readv", "recvfrom", "recvmsg", "write", "writev", "sendto", "sendmsg", "close", "dup2", "dup3",
        "bind", "connect",
    ] {
        let name = format!("fexit_sys_{call}");
        assert_eq!(kinds.get(name.as_str()), Some(&"fexit"), "{name} in {kinds:?}");
    }
    // Nothing on the syscall entry: a second hook would double what every
    // system call of the host pays.
    assert!(
        !names.iter().any(|n| *n == "sys_enter" || n.starts_with("enter_")),
        "a program for sys_enter is in the object: {names:?}"
    );
    for needed in [
        "sys_exit",
        "sched_process_fork",
        "floor",
        "floor_fexit",
        "floor_uprobe",
        "floor_uretprobe",
        "floor_copy",
        "tls_discover",
        "tls_capture",
        "ssl_return",
        "ssl_read_every",
        "ssl_write_every",
        "ssl_read_ex_every",
        "ssl_write_ex_every",
    ] {
        assert!(names.contains(&needed), "{needed} missing from {names:?}");
    }
    for p in programs {
        let name = p["name"].as_str().unwrap();
        // fexit programs are measured only where the agent could use them.
        if !p["skipped"].is_null() {
            assert_eq!(p["kind"], "fexit", "{name} was skipped: {p}");
            assert_eq!(hook, "tracepoint", "{name} was skipped although fexit is in use: {p}");
            continue;
        }
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

/// `capture.syscall_hook = "fexit"` gets fexit where `auto` does, and
/// elsewhere stops at start, saying what to set instead; never a silent
/// tracepoint.
#[test]
fn asking_for_fexit_gets_it_where_auto_does_or_a_start_up_error_naming_the_fix() {
    require_root();
    let check = |config: Option<&std::path::Path>| {
        let mut cmd = Command::new(monitor_bin());
        cmd.args(["check", "--json"]);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.output().expect("run mcp-monitor check")
    };
    let auto = check(None);
    assert!(auto.status.success(), "{}", String::from_utf8_lossy(&auto.stderr));
    let auto: Value = serde_json::from_slice(&auto.stdout).expect("check --json prints JSON");
    let dir = TempDir::new("fexit");
    let cfg = dir.path().join("fexit.toml");
    std::fs::write(&cfg, "[capture]\nsyscall_hook = \"fexit\"\n").unwrap();
    let out = check(Some(&cfg));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if auto["syscall_hook"] == "fexit" {
        assert!(out.status.success(), "{stderr}");
        let r: Value = serde_json::from_slice(&out.stdout).expect("check --json prints JSON");
        assert_eq!(r["syscall_hook"], "fexit", "{r}");
    } else {
        assert!(
            !out.status.success(),
            "fexit was refused under auto but not when asked for"
        );
        assert!(
            stderr.contains("capture.syscall_hook = \"fexit\", and the kernel refused it")
                && stderr.contains("Fix: set capture.syscall_hook = \"auto\""),
            "{stderr}"
        );
    }
}

/// The copy floor `cargo xtask bench overhead` measures the agent against
/// (`mcp-monitor floor --copy-reads NAME`) hands its reader every read of
/// the processes of that name, whole up to 4 KiB, and no other process's
/// reads: a floor that copied less, or more, would misstate how far the
/// agent is from the least a capture costs.
#[test]
fn the_copy_floor_reads_back_every_read_of_the_named_processes_and_no_other() {
    require_root();
    let mut floor = KillOnDrop(Some(
        Command::new(monitor_bin())
            .args(["floor", "--copy-reads", "echo-pair"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mcp-monitor floor --copy-reads"),
    ));
    let mut lines = BufReader::new(floor.child().stderr.take().unwrap()).lines();
    let started = lines.by_ref().map_while(Result::ok).find(|l| l.starts_with("floor:"));
    assert!(started.is_some(), "the copy floor did not start (see its output above)");
    std::thread::spawn(move || lines.for_each(drop));
    // Another process's 4 KiB reads, which must not be copied.
    let dd = Command::new("dd")
        .args(["if=/dev/zero", "of=/dev/null", "bs=4096", "count=2000"])
        .output()
        .expect("run dd");
    assert!(dd.status.success());
    const ROUND_TRIPS: u64 = 500;
    let pair = Command::new(env!("CARGO_BIN_EXE_echo-pair"))
        .args(["client", "--size", "4096", "--count", &ROUND_TRIPS.to_string()])
        .output()
        .expect("run echo-pair");
    assert!(pair.status.success(), "echo-pair failed");
    let run: Value = serde_json::from_slice(&pair.stdout).expect("echo-pair prints JSON");
    let floor = floor.0.take().unwrap();
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(floor.id() as i32, libc::SIGTERM) }, 0);
    let out = floor.wait_with_output().expect("wait for the copy floor");
    assert!(out.status.success(), "the copy floor failed");
    let r: Value = serde_json::from_slice(&out.stdout).expect("the copy floor prints JSON on exit");
    let (records, bytes) = (r["records"].as_u64().unwrap(), r["bytes"].as_u64().unwrap());
    // Each round trip is two reads that move bytes (the server's of the
    // request, the client's of the echo); the handshake adds a few; dd's
    // 2,000 reads would show.
    assert!(
        (2 * ROUND_TRIPS..2 * ROUND_TRIPS + 100).contains(&records),
        "{records} reads copied for {ROUND_TRIPS} round trips: {r}"
    );
    // The echoes whole (under 4 KiB each), and the requests at least to 4 KiB.
    let echoes = run["received_bytes"].as_u64().unwrap();
    assert!(
        bytes >= echoes + ROUND_TRIPS * 4000,
        "{bytes} bytes copied, {echoes} echoed: {r}"
    );
    assert!(r["newlines"].as_u64().unwrap() >= ROUND_TRIPS, "{r}");
    assert_eq!(r["ring_full"], 0, "{r}");
    assert_eq!(r["copy_failed"], 0, "{r}");
    // The reader took every record the program put in the ring.
    assert_eq!(r["records"], r["submitted"], "{r}");
}

/// A child killed (and reaped) should the test fail before it ends it: a
/// copy floor left attached would copy on after the test.
struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().unwrap()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
