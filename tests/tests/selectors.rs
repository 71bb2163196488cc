//! Configured capture (selectors) with zero-configuration discovery turned
//! off: only selected processes, and their children, are captured.

use std::{process::Command, time::Duration};

use mcp_monitor_tests::*;

const SETTLE: Duration = Duration::from_secs(20);

fn assert_captured(m: &Monitor, t: &Transcript) {
    let expected = t.expected(false);
    let n = count(&expected);
    let events = m.wait_events(SETTLE, |ev| count(&observed(ev, t.server_pid)) >= n);
    assert_same(&expected, &observed(&events, t.server_pid));
}

#[test]
fn pid_selector_captures_the_process_and_children_forked_later() {
    require_root();
    let mut monitor = None;
    let t = python_session_under_shell(|shell| {
        monitor = Some(Monitor::start(&["--no-discovery", "--pid", &shell.to_string()]));
    });
    let m = monitor.unwrap();
    assert_captured(&m, &t);
    assert_eq!(
        m.metric("mcp_monitor_discovery_hits_total", &[]),
        0.0,
        "discovery was off"
    );
}

#[test]
fn without_discovery_unselected_processes_are_not_captured() {
    require_root();
    // Select a process with no children: nothing else may be captured.
    let mut idle = Command::new("sleep").arg("60").spawn().unwrap();
    let m = Monitor::start(&["--no-discovery", "--pid", &idle.id().to_string()]);
    let t = run_python_fastmcp();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        observed(&m.events(), t.server_pid).is_empty(),
        "an unselected session was captured"
    );
    assert_eq!(m.metric("mcp_monitor_capture_events_total", &[]), 0.0);
    let _ = idle.kill();
    let _ = idle.wait();
}

#[test]
fn executable_selector_matches_at_exec() {
    require_root();
    // Both the TypeScript client and server-everything are `node`.
    let m = Monitor::start(&["--no-discovery", "--exe", "node"]);
    let t = run_node("everything", &[]);
    assert_captured(&m, &t);
    // A Python session is not selected.
    let py = run_python_fastmcp();
    std::thread::sleep(Duration::from_secs(1));
    assert!(observed(&m.events(), py.server_pid).is_empty());
}

#[test]
fn cgroup_selector_captures_processes_in_that_cgroup() {
    require_root();
    let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|p| {
            std::path::Path::new(p).join("cgroup.procs").exists()
                && std::fs::read_to_string("/proc/filesystems").is_ok()
        })
        .expect("a cgroup v2 hierarchy");
    let cg = std::path::PathBuf::from(root).join(format!("mcp-monitor-test-{}", std::process::id()));
    std::fs::create_dir_all(&cg).expect("create a test cgroup");
    let m = Monitor::start(&["--no-discovery", "--cgroup", cg.to_str().unwrap()]);
    let t = python_session_under_shell(|shell| {
        std::fs::write(cg.join("cgroup.procs"), shell.to_string()).expect("move the shell into the cgroup");
    });
    assert_captured(&m, &t);
    drop(m);
    // The processes have exited; the empty cgroup can go.
    for _ in 0..50 {
        if std::fs::remove_dir(&cg).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn startup_without_privileges_says_how_to_fix_it() {
    require_root();
    // Root, but with every capability dropped.
    let out = Command::new("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-all", "--"])
        .arg(monitor_bin())
        .args(["run", "--metrics-addr", "127.0.0.1:0", "--events-file", "/dev/null"])
        .output()
        .expect("setpriv (util-linux)");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not enough privileges") && err.contains("setcap"),
        "unhelpful error: {err}"
    );
}
