//! The guest: an initramfs whose init mounts this machine's root read-only
//! (9p) under an overlay and runs the plan, and the qemu run that boots it.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::*;
use crate::{root, step};

/// Longest a guest may run before it is stopped and counted as failed.
const GUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Longest one test may run in a guest (a guest runs its five in about 6
/// to 12 minutes in all under TCG, depending on the machine and kernel);
/// `XTASK_GUEST_BIN_TIMEOUT` (seconds) overrides it, to try the watchdog.
fn bin_timeout() -> Duration {
    let secs = std::env::var("XTASK_GUEST_BIN_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8 * 60);
    Duration::from_secs(secs)
}

/// The initramfs' init: loads the modules, mounts the host's root (9p,
/// read-only) under a tmpfs overlay, mounts the run's output folder and
/// switches into the guest script. Nothing else is mounted over the host's
/// folders: the checkout under test may live anywhere, /tmp included (the
/// overlay already makes every folder writable).
const INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mkdir -p /proc /sys /dev /lower /rw /newroot
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in $($B cat /modules/order); do
  $B insmod /modules/$m.ko || echo "matrix: insmod $m failed"
done
fail() { echo "matrix: $1"; $B poweroff -f; }
$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 root /lower || fail "mounting the host root failed"
$B mount -t tmpfs -o size=75% tmpfs /rw
$B mkdir -p /rw/upper /rw/work
$B mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || fail "overlay failed"
$B mkdir -p /newroot/matrix-out
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out /newroot/matrix-out || fail "mounting the output folder failed"
$B umount /proc /sys
$B umount /dev
exec $B switch_root /newroot /bin/busybox sh /matrix-out/guest.sh
"#;

fn build_initramfs(k: &Kernel) -> Result<PathBuf> {
    let img = k.dir.join("initramfs.cpio");
    let stage = k.dir.join("initramfs");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(stage.join("bin"))?;
    std::fs::create_dir_all(stage.join("modules"))?;
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        bail!("/bin/busybox is missing: apt-get install busybox-static");
    }
    std::fs::copy(busybox, stage.join("bin/busybox"))?;
    for e in std::fs::read_dir(k.dir.join("modules"))?.flatten() {
        std::fs::copy(e.path(), stage.join("modules").join(e.file_name()))?;
    }
    let init = stage.join("init");
    std::fs::write(&init, INIT)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    let out = std::fs::File::create(&img)?;
    let st = Command::new("sh")
        .args(["-c", "find . | cpio -o -H newc --quiet"])
        .current_dir(&stage)
        .stdout(out)
        .status()
        .context("cpio (apt-get install cpio)")?;
    if !st.success() {
        bail!("building the initramfs with cpio failed");
    }
    std::fs::remove_dir_all(&stage)?;
    Ok(img)
}

/// Paths the guest script needs, resolved on the host (the guest sees the
/// same file system).
pub struct GuestPlan {
    pub monitor: PathBuf,
    /// (binary name, path of the compiled test binary).
    pub test_bins: Vec<(String, PathBuf)>,
    pub env: Vec<(String, String)>,
}

/// The guest's runs, one per test of [`GUEST_TESTS`] whose binary was
/// built: (run name, binary, test). Each test runs alone under its own
/// watchdog, so a slow guest gives every test the whole limit (the three
/// HTTP tests in one binary outgrew 8 minutes on 6.12 under TCG) and a
/// hang stops and reruns only the test that hung.
///
/// To chase a failure of one test on one kernel, `XTASK_GUEST_TESTS`
/// (`bin.test`, comma-separated) runs only those, and `XTASK_GUEST_REPEAT`
/// runs each that many times (runs named `bin.test.N`).
fn guest_runs(plan: &GuestPlan) -> Vec<(String, &Path, &'static str)> {
    let only = std::env::var("XTASK_GUEST_TESTS").ok();
    let only: Option<Vec<&str>> = only.as_deref().map(|s| s.split(',').map(str::trim).collect());
    let repeat: usize = std::env::var("XTASK_GUEST_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let mut runs = Vec::new();
    for (bin, test) in GUEST_TESTS {
        let name = format!("{bin}.{test}");
        if only.as_ref().is_some_and(|o| !o.contains(&name.as_str())) {
            continue;
        }
        let Some((_, path)) = plan.test_bins.iter().find(|(b, _)| b == bin) else {
            continue;
        };
        for i in 1..=repeat {
            let run = if repeat == 1 {
                name.clone()
            } else {
                format!("{name}.{i}")
            };
            runs.push((run, path.as_path(), *test));
        }
    }
    runs
}

/// The guest's script. The capture tests check that the agent hooks system
/// calls with fexit (`MCP_TEST_EXPECT_SYSCALL_HOOK`).
fn guest_script(plan: &GuestPlan) -> String {
    let mut s = String::from(
        "set -u\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root\n\
         O=/matrix-out\n\
         B=/bin/busybox\n\
         $B mount -t proc proc /proc\n\
         $B mount -t sysfs sys /sys\n\
         $B mount -t devtmpfs dev /dev\n\
         $B mkdir -p /dev/pts /dev/shm\n\
         $B mount -t devpts devpts /dev/pts\n\
         $B mount -t tmpfs tmpfs /dev/shm\n\
         $B mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || $B mount -t debugfs nodev /sys/kernel/debug\n\
         $B mount -t cgroup2 none /sys/fs/cgroup\n\
         $B mount -t bpf bpf /sys/fs/bpf\n\
         /bin/busybox ip link set lo up\n\
         /bin/busybox hostname kernel-matrix\n\
         uname -r > $O/release\n\
         echo \"matrix: guest up on $(uname -r)\"\n",
    );
    for (k, v) in &plan.env {
        let _ = writeln!(s, "export {k}='{v}'");
    }
    // Every kernel of the matrix allows fexit.
    let _ = writeln!(s, "export MCP_TEST_EXPECT_SYSCALL_HOOK=fexit");
    let _ = writeln!(s, "cd '{}'", root().display());
    let _ = writeln!(
        s,
        "T0=$(date +%s); '{}' check --json > $O/check.json 2> $O/check.log; echo $? > $O/check.rc; \
         echo $(( $(date +%s) - T0 )) > $O/check.seconds",
        plan.monitor.display()
    );
    let _ = writeln!(s, "echo \"matrix: check exit $(cat $O/check.rc)\"");
    // Each test binary runs in its own session under a watchdog: one that
    // hangs is stopped after bin_timeout(), and before that the tasks' kernel
    // stacks go to <bin>.hang, the kernel dumps blocked tasks and every
    // CPU's backtrace (sysrq w and l) into <bin>.dmesg, and the binary is
    // run once more (its first run kept as <bin>.first-*; the host reports
    // the hang either way). TCG guests have stalled before on this
    // machine's kind (a soft lockup on 5.10): one stall must not hide
    // whether the capture works, nor go unreported.
    s.push_str(&run_bin_function(bin_timeout().as_secs(), "/proc/sysrq-trigger"));
    for (run, path, test) in guest_runs(plan) {
        let cmd = format!("run_bin {run} '{}' --exact --test-threads=1 {test}", path.display());
        let _ = writeln!(
            s,
            "{cmd}\n\
             if [ -e $O/{run}.hang ]; then for f in log rc hang dmesg; do $B mv $O/{run}.$f $O/{run}.first-$f 2>/dev/null; done; \
             echo \"matrix: {run} hung: running it again\"; {cmd}; fi\n\
             echo \"matrix: {run} exit $(cat $O/{run}.rc)\""
        );
    }
    s.push_str("sync\n/bin/busybox poweroff -f\n");
    s
}

/// The guest script's `run_bin NAME COMMAND...`: runs the command in its
/// own session with output to $O/NAME.log and exit status to $O/NAME.rc;
/// after `limit` seconds still running, records NAME.hang (processes, each
/// user task's kernel stack), asks the kernel (through `sysrq`) for blocked
/// tasks and CPU backtraces, saves NAME.dmesg and kills the session.
fn run_bin_function(limit: u64, sysrq: &str) -> String {
    format!(
        "run_bin() {{\n\
         n=$1; shift\n\
         $B setsid \"$@\" > $O/$n.log 2>&1 &\n\
         P=$!\n\
         ( $B sleep {limit}; if $B kill -0 $P 2>/dev/null; then \
         echo \"matrix: $n still running after {limit} s: stopping it\"; \
         $B ps -o pid,ppid,stat,args > $O/$n.hang 2>&1; \
         for t in /proc/[0-9]*/task/[0-9]*; do c=$($B tr '\\0' ' ' < ${{t%/task/*}}/cmdline 2>/dev/null); [ -n \"$c\" ] || continue; \
         echo \"$t $(cat $t/comm) wchan $(cat $t/wchan): $c\"; cat $t/stack; done >> $O/$n.hang 2>&1; \
         echo w > {sysrq}; echo l > {sysrq}; \
         $B dmesg > $O/$n.dmesg 2>&1; $B kill -9 -$P; fi ) &\n\
         W=$!\n\
         wait $P; echo $? > $O/$n.rc; $B kill $W 2>/dev/null || true\n\
         }}\n"
    )
}

/// qemu's accelerator: KVM where the host has a real one, else TCG (the
/// nested `kvm_pvm` of these machines cannot run stock kernels).
fn accel() -> &'static str {
    if Path::new("/dev/kvm").exists()
        && (Path::new("/sys/module/kvm_intel").exists() || Path::new("/sys/module/kvm_amd").exists())
    {
        "kvm"
    } else {
        "tcg,thread=multi"
    }
}

/// What one guest run found.
pub struct Outcome {
    pub version: &'static str,
    pub release: String,
    pub seconds: u64,
    pub check_seconds: Option<u64>,
    /// `mcp-monitor check --json` output, when it ran.
    pub check: Option<Value>,
    pub failures: Vec<String>,
    /// Test runs the guest made (one per test, unless narrowed or repeated:
    /// see [`guest_runs`]).
    pub runs: usize,
    /// Stalls that a second run got past: reported, not failed.
    pub warnings: Vec<String>,
    /// The guest as a whole did not finish within GUEST_TIMEOUT.
    pub timed_out: bool,
}

/// Keeps a stalled guest's output folder (as `<version>-stalled`) before the
/// kernel is booted again.
pub fn set_aside(version: &str) -> PathBuf {
    let from = out_dir().join(version);
    let to = out_dir().join(format!("{version}-stalled"));
    let _ = std::fs::remove_dir_all(&to);
    let _ = std::fs::rename(&from, &to);
    to
}

/// Boots `k` and runs the guest script; reads the results back.
pub fn boot(k: &Kernel, plan: &GuestPlan) -> Result<Outcome> {
    let initramfs = build_initramfs(k)?;
    let out = out_dir().join(k.version);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("guest.sh"), guest_script(plan))?;
    let console = std::fs::File::create(out.join("console.log"))?;
    step(&format!(
        "kernel {} ({}, {}): booting in qemu ({}) and running the agent and the capture tests",
        k.version,
        k.package,
        k.release,
        accel()
    ));
    let t0 = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", accel(), "-cpu", "max", "-m", "3072", "-smp", "2"])
        .args([
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(k.dir.join("vmlinuz"))
        .arg("-initrd")
        .arg(&initramfs)
        // loglevel 5 and all-CPU backtraces: a soft lockup (seen once on
        // 5.10 under TCG) prints where every CPU was, not only its first line.
        .args([
            "-append",
            "console=ttyS0 panic=-1 random.trust_cpu=on quiet loglevel=5 softlockup_all_cpu_backtrace=1",
        ])
        .args([
            "-virtfs",
            "local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap",
        ])
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=out,security_model=none,multidevs=remap",
            out.display()
        ))
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        .spawn()
        .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let mut timed_out = false;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if t0.elapsed() > GUEST_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let seconds = t0.elapsed().as_secs();
    let read = |f: &str| std::fs::read_to_string(out.join(f)).ok().map(|s| s.trim().to_string());
    let mut failures = Vec::new();
    if timed_out {
        failures.push(format!(
            "the guest did not finish within {} s; the end of its console:\n{}",
            GUEST_TIMEOUT.as_secs(),
            tail(&read("console.log").unwrap_or_default(), 60)
        ));
    }
    let release = read("release").unwrap_or_default();
    if release.is_empty() {
        failures.push(format!(
            "the guest never reached its script: see {}",
            out.join("console.log").display()
        ));
    }
    let check = read("check.json").and_then(|s| serde_json::from_str::<Value>(&s).ok());
    match read("check.rc").as_deref() {
        Some("0") => {}
        Some(rc) => failures.push(format!(
            "the agent did not start (exit {rc}):\n{}",
            read("check.log").unwrap_or_default()
        )),
        None if !release.is_empty() => failures.push("mcp-monitor check did not finish".into()),
        None => {}
    }
    for (run, _, _) in guest_runs(plan) {
        let bin = &run;
        match read(&format!("{bin}.rc")).as_deref() {
            Some("0") => {}
            Some(rc) => {
                let mut f = format!(
                    "{bin} failed (exit {rc}); log: {}\n{}",
                    out.join(format!("{bin}.log")).display(),
                    tail(&read(&format!("{bin}.log")).unwrap_or_default(), 40)
                );
                f.push_str(&hang_report(&out, &format!("{bin}.")));
                failures.push(f)
            }
            None if !release.is_empty() => failures.push(format!(
                "{bin} did not finish; the end of its log:\n{}",
                tail(&read(&format!("{bin}.log")).unwrap_or_default(), 40)
            )),
            None => {}
        }
    }
    // A first run stopped by the guest's watchdog, then run again.
    let mut warnings = Vec::new();
    for (run, _, _) in guest_runs(plan) {
        let bin = &run;
        if read(&format!("{bin}.first-hang")).is_some() {
            warnings.push(format!(
                "{bin} hung in its first run (the second run's result counts); the end of the first run's log:\n{}{}",
                tail(&read(&format!("{bin}.first-log")).unwrap_or_default(), 40),
                hang_report(&out, &format!("{bin}.first-"))
            ));
        }
    }
    if let Some(c) = &check {
        failures.extend(report_failures(c));
        let by_helper = MATRIX
            .iter()
            .find(|s| s.version == k.version)
            .is_some_and(|s| s.net_regs_by_helper);
        failures.extend(hook_failures(c, by_helper));
    }
    Ok(Outcome {
        version: k.version,
        release,
        seconds,
        check_seconds: read("check.seconds").and_then(|s| s.parse().ok()),
        check,
        failures,
        runs: guest_runs(plan).len(),
        warnings,
        timed_out,
    })
}

/// What the guest's watchdog recorded about a stopped run whose files in
/// `out` start with `prefix` (`http.` or `http.first-`): each task's kernel stack, and
/// the kernel's log with its blocked-task and CPU backtraces.
fn hang_report(out: &Path, prefix: &str) -> String {
    let read = |f: &str| std::fs::read_to_string(out.join(format!("{prefix}{f}"))).ok();
    match read("hang") {
        None => String::new(),
        Some(hang) => format!(
            "\nstopped after {} s; its tasks then:\n{}\nthe kernel's log then:\n{}",
            bin_timeout().as_secs(),
            tail(&hang, 200),
            tail(&read("dmesg").unwrap_or_default(), 60)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::run_bin_function;

    /// The watchdog under busybox, as in the guests: a command that ends
    /// leaves its status and no hang record; one that hangs is killed
    /// with its whole session after the limit and leaves a record naming it.
    #[test]
    fn run_bin_stops_a_hung_command_and_records_it() {
        if !std::path::Path::new("/bin/busybox").exists() {
            panic!("/bin/busybox is missing: apt-get install busybox-static");
        }
        let dir = std::env::temp_dir().join(format!("xtask-run-bin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sysrq = dir.join("sysrq");
        let script = format!(
            "O={o}\nB=/bin/busybox\n{f}run_bin quick sh -c 'echo hi; exit 3'\n\
             run_bin stuck sh -c 'sleep 300 & sleep 301'\n",
            o = dir.display(),
            f = run_bin_function(2, &sysrq.display().to_string())
        );
        let t0 = std::time::Instant::now();
        let st = std::process::Command::new("/bin/busybox")
            .args(["sh", "-c", &script])
            .status()
            .unwrap();
        assert!(st.success());
        assert!(t0.elapsed() < std::time::Duration::from_secs(60));
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        assert_eq!(read("quick.rc").trim(), "3");
        assert_eq!(read("quick.log").trim(), "hi");
        assert!(!dir.join("quick.hang").exists());
        assert_eq!(read("stuck.rc").trim(), "137");
        // The stuck command's own task line (`...: sleep 301`), not the
        // outer shell's, whose command line holds the script.
        assert!(read("stuck.hang").contains(": sleep 301 \n"), "{}", read("stuck.hang"));
        assert_eq!(read("sysrq"), "l\n", "the sysrq requests were made");
        // The session went with it: no `sleep 300` left behind.
        let ps = std::process::Command::new("pgrep")
            .args(["-f", "sleep 300"])
            .output()
            .unwrap();
        assert!(
            ps.stdout.is_empty(),
            "left behind: {}",
            String::from_utf8_lossy(&ps.stdout)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
