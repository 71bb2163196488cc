//! Waits for the peer processes a test drives, bounded: a client that
//! hangs (a server that never answers, a guest kernel that stalls) fails
//! its test with the state of every process involved, instead of holding
//! the whole suite until an outer timeout kills it without a word.

use std::{
    io::Read,
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use crate::scaled;

/// How long a peer run may take before the test gives up on it (scaled by
/// the time scale: the kernel matrix's emulated guests get more).
pub fn peer_limit() -> Duration {
    // At most 4 minutes: the kernel matrix stops a whole test binary after
    // 8, and a hung peer should fail its own test first, with its state.
    scaled(Duration::from_secs(90)).min(Duration::from_secs(240))
}

/// Waits for `child` at most [`peer_limit`]; on expiry reports the state
/// of it and its descendants, kills them all and fails the test.
pub fn wait_bounded(child: &mut Child, what: &str) -> ExitStatus {
    let end = Instant::now() + peer_limit();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return st,
            Ok(None) => {}
            Err(e) => panic!("waiting for {what}: {e}"),
        }
        if Instant::now() >= end {
            let state = process_tree_state(child.id());
            kill_tree(child.id());
            // SAFETY: kill has no memory preconditions. The group, if the
            // child leads one (`status_bounded` makes it): orphans too.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {} s; its processes when it was stopped:\n{state}",
                peer_limit().as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `Command::status`, bounded as [`wait_bounded`].
pub fn status_bounded(cmd: &mut Command, what: &str) -> ExitStatus {
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    wait_bounded(&mut child, what)
}

/// Guards a blocking call on a child (a read of its stdout): if the call
/// has not returned within [`peer_limit`], the child's tree is recorded and
/// killed, so the call returns (end of file, exit) and [`Watchdog::check`]
/// fails the test with the record.
pub struct Watchdog {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Option<String>>>,
    what: String,
    limit: Duration,
}

impl Watchdog {
    /// Watches `pid` for [`peer_limit`].
    pub fn new(pid: u32, what: &str) -> Self {
        Self::with_limit(pid, what, peer_limit())
    }

    /// Watches `pid` for `limit`.
    pub fn with_limit(pid: u32, what: &str, limit: Duration) -> Self {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || match stopped.recv_timeout(limit) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let state = process_tree_state(pid);
                kill_tree(pid);
                // SAFETY: kill has no memory preconditions.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                Some(state)
            }
            _ => None,
        });
        Watchdog {
            stop: Some(stop),
            thread: Some(thread),
            what: what.to_string(),
            limit,
        }
    }

    /// Ends the watch; fails the test if it fired.
    pub fn check(mut self) {
        if let Some(state) = self.finish() {
            panic!(
                "{} did not finish within {} s; its processes when it was stopped:\n{state}",
                self.what,
                self.limit.as_secs()
            );
        }
    }

    fn finish(&mut self) -> Option<String> {
        drop(self.stop.take());
        self.thread.take().and_then(|t| t.join().ok()).flatten()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// `Child::wait_with_output` for a child whose stdout (and stderr, when
/// piped) are read to the end in threads, bounded as [`wait_bounded`].
pub fn output_bounded(mut child: Child, what: &str) -> Output {
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let status = wait_bounded(&mut child, what);
    // A grandchild may still hold the pipes open: wait a little, not forever.
    let join = |t: std::thread::JoinHandle<Vec<u8>>| {
        let end = Instant::now() + Duration::from_secs(10);
        while !t.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        if t.is_finished() {
            t.join().unwrap_or_default()
        } else {
            Vec::new()
        }
    };
    Output {
        status,
        stdout: join(out),
        stderr: join(err),
    }
}

/// `Command::output`, bounded as [`wait_bounded`].
pub fn command_output_bounded(cmd: &mut Command, what: &str) -> Output {
    use std::os::unix::process::CommandExt;
    let child = cmd
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    output_bounded(child, what)
}

/// `pid` and its descendants, from /proc: (pid, parent).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(pp) = parent_of(p) {
                parents.push((p, pp));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let cur = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    tree
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

/// One paragraph per process: command line, state, wait channel and
/// kernel stack (root reads it), so a hang says where it hung.
fn process_tree_state(pid: u32) -> String {
    let mut s = String::new();
    for p in descendants(pid) {
        let read = |f: &str| std::fs::read_to_string(format!("/proc/{p}/{f}")).unwrap_or_default();
        let cmdline = read("cmdline").replace('\0', " ");
        let state = read("status")
            .lines()
            .find(|l| l.starts_with("State:"))
            .unwrap_or("")
            .to_string();
        s.push_str(&format!(
            "pid {p}: {}\n  {state}; wchan {}\n",
            cmdline.trim(),
            read("wchan")
        ));
        // Each thread's kernel stack: a process stuck in the kernel shows
        // where; one spinning in user space shows an empty or short stack.
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten().take(16) {
                let stack = std::fs::read_to_string(t.path().join("stack")).unwrap_or_default();
                let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                let stack: Vec<&str> = stack.lines().take(12).collect();
                s.push_str(&format!(
                    "  thread {} ({}): {}\n",
                    t.file_name().to_string_lossy(),
                    comm.trim(),
                    stack.join(" < ")
                ));
            }
        }
    }
    s
}

/// SIGKILL to `pid`'s descendants (deepest first is not needed: SIGKILL
/// cannot be caught, and orphans are reparented, not spared).
fn kill_tree(pid: u32) {
    for p in descendants(pid).into_iter().skip(1) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_child_is_waited_for() {
        let st = status_bounded(Command::new("true").stdout(Stdio::null()), "true");
        assert!(st.success());
        let out = command_output_bounded(Command::new("sh").args(["-c", "echo out; echo err >&2"]), "sh");
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn a_watchdog_unblocks_a_read_and_names_the_hung_process() {
        let mut child = Command::new("sleep").arg("600").stdout(Stdio::piped()).spawn().unwrap();
        let dog = Watchdog::with_limit(child.id(), "sleep", Duration::from_secs(1));
        let mut out = String::new();
        // Blocks until the watchdog kills the child, then reads EOF.
        let _ = child.stdout.take().unwrap().read_to_string(&mut out);
        let _ = child.wait();
        let failure = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dog.check()));
        let msg = failure.expect_err("the watchdog fired");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("sleep did not finish") && msg.contains("sleep 600"),
            "{msg}"
        );
    }

    #[test]
    fn the_tree_of_a_shell_holds_its_child() {
        let mut sh = Command::new("sh").args(["-c", "sleep 30 & wait"]).spawn().unwrap();
        let found = crate::wait_until(Duration::from_secs(5), || descendants(sh.id()).len() >= 2);
        let state = process_tree_state(sh.id());
        kill_tree(sh.id());
        let _ = sh.kill();
        let _ = sh.wait();
        assert!(found, "{state}");
        // The sleep's own line, not the shell's (`sh -c sleep 30 & wait`).
        assert!(state.contains(": sleep 30\n"), "{state}");
    }
}
