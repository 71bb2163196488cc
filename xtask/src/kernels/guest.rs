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
const GUEST_TIMEOUT: Duration = Duration::from_secs(25 * 60);

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
    let _ = writeln!(s, "cd '{}'", root().display());
    let _ = writeln!(
        s,
        "T0=$(date +%s); '{}' check --json > $O/check.json 2> $O/check.log; echo $? > $O/check.rc; \
         echo $(( $(date +%s) - T0 )) > $O/check.seconds",
        plan.monitor.display()
    );
    let _ = writeln!(s, "echo \"matrix: check exit $(cat $O/check.rc)\"");
    for (bin, path) in &plan.test_bins {
        let names: Vec<&str> = GUEST_TESTS.iter().filter(|(b, _)| b == bin).map(|(_, n)| *n).collect();
        let _ = writeln!(
            s,
            "'{}' --exact --test-threads=1 {} > $O/{bin}.log 2>&1; echo $? > $O/{bin}.rc; \
             echo \"matrix: {bin} tests exit $(cat $O/{bin}.rc)\"",
            path.display(),
            names.join(" ")
        );
    }
    s.push_str("sync\n/bin/busybox poweroff -f\n");
    s
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
        failures.push(format!("the guest did not finish within {} s", GUEST_TIMEOUT.as_secs()));
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
    for (bin, _) in &plan.test_bins {
        match read(&format!("{bin}.rc")).as_deref() {
            Some("0") => {}
            Some(rc) => failures.push(format!(
                "{bin} tests failed (exit {rc}); log: {}\n{}",
                out.join(format!("{bin}.log")).display(),
                tail(&read(&format!("{bin}.log")).unwrap_or_default(), 40)
            )),
            None if !release.is_empty() => failures.push(format!("{bin} tests did not finish")),
            None => {}
        }
    }
    if let Some(c) = &check {
        failures.extend(report_failures(c));
    }
    Ok(Outcome {
        version: k.version,
        release,
        seconds,
        check_seconds: read("check.seconds").and_then(|s| s.parse().ok()),
        check,
        failures,
    })
}
