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

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{root, sh, step};

/// One kernel of the matrix: a Debian suite whose `linux-image-amd64`
/// names the kernel.
pub struct Spec {
    /// What `cargo xtask test kernels VERSION` takes.
    pub version: &'static str,
    suite: &'static str,
}

/// The kernels production nodes run, oldest first (the machine's own
/// kernel is covered by the ordinary integration tests).
pub const MATRIX: &[Spec] = &[
    Spec {
        version: "5.10",
        suite: "bullseye",
    },
    Spec {
        version: "6.1",
        suite: "bookworm",
    },
    Spec {
        version: "6.12",
        suite: "trixie",
    },
];

/// Modules the guest loads from its initramfs (with their dependencies):
/// virtio PCI transport, 9p over virtio, overlayfs.
const GUEST_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// Integration tests run in each guest: (test binary, exact test name).
pub const GUEST_TESTS: &[(&str, &str)] = &[
    ("stdio", "everything_server_with_typescript_client"),
    ("http", "streamable_http_seen_from_both_ends"),
    ("http", "https_seen_from_both_ends_at_the_tls_library"),
];

/// How much slower than native the guests are allowed to be (TCG): the
/// tests' own waits are multiplied by this.
pub const TIME_SCALE: u32 = 6;

/// Longest a guest may run before it is stopped and counted as failed.
const GUEST_TIMEOUT: Duration = Duration::from_secs(25 * 60);

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

// ------------------------------------------------------------------ fetch

/// The Debian archive and security URIs this machine's apt uses: the
/// kernels come from the same mirrors, other suites.
fn mirrors() -> Result<(String, String)> {
    let mut texts: Vec<String> = std::fs::read_to_string("/etc/apt/sources.list").into_iter().collect();
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in rd.flatten() {
            let p = e.path();
            let name = p.file_name().unwrap_or_default().to_string_lossy().to_string();
            if name.ends_with(".list") || name.ends_with(".sources") {
                if let Ok(t) = std::fs::read_to_string(&p) {
                    texts.push(t);
                }
            }
        }
    }
    let (mut archive, mut security) = (None, None);
    for t in &texts {
        for (uri, suite) in source_entries(t) {
            let uri = uri.trim_end_matches('/').to_string();
            if suite.ends_with("-security") || uri.ends_with("-security") {
                security.get_or_insert(uri);
            } else if !suite.contains('-') && uri.ends_with("/debian") {
                archive.get_or_insert(uri);
            }
        }
    }
    match (archive, security) {
        (Some(a), Some(s)) => Ok((a, s)),
        (Some(a), None) => {
            let s = a.trim_end_matches("/debian").to_string() + "/debian-security";
            Ok((a, s))
        }
        _ => bail!(
            "no Debian archive found in /etc/apt/sources.list(.d): the kernel matrix fetches Debian's kernels \
             from the mirror apt already uses.\nFix: add a Debian source (URIs ending in /debian) to apt's configuration."
        ),
    }
}

/// (URI, suite) pairs of one-line (`deb URI SUITE ...`) and deb822
/// (`URIs:` / `Suites:`) sources files.
fn source_entries(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push((uri.to_string(), suite.to_string()));
        }
    }
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
            })
        };
        let is_deb = field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        if let (true, Some(uris), Some(suites)) = (is_deb, field("URIs"), field("Suites")) {
            for u in uris.split_whitespace() {
                for s in suites.split_whitespace() {
                    out.push((u.to_string(), s.to_string()));
                }
            }
        }
    }
    out
}

/// A kernel ready to boot: image, release, initramfs.
pub struct Kernel {
    pub version: &'static str,
    pub release: String,
    pub package: String,
    dir: PathBuf,
}

/// apt with a private configuration rooted in `dir`.
fn apt(dir: &Path, tool: &str) -> Command {
    let mut c = Command::new(tool);
    for o in [
        format!("Dir::Etc::sourcelist={}", dir.join("sources.list").display()),
        "Dir::Etc::sourceparts=/nonexistent".to_string(),
        format!("Dir::State={}", dir.join("state").display()),
        format!("Dir::State::status={}", dir.join("state/status").display()),
        format!("Dir::Cache={}", dir.join("cache").display()),
        "APT::Architecture=amd64".to_string(),
        "Acquire::Languages=none".to_string(),
        "APT::Sandbox::User=root".to_string(),
    ] {
        c.arg("-o").arg(o);
    }
    c
}

/// Fetches (or finds in the cache) the kernel of `spec`.
pub fn fetch(spec: &Spec) -> Result<Kernel> {
    let dir = cache_dir().join(spec.version);
    let ready = dir.join("ready");
    if ready.exists() {
        let text = std::fs::read_to_string(&ready)?;
        let mut it = text.lines();
        if let (Some(package), Some(release)) = (it.next(), it.next()) {
            return Ok(Kernel {
                version: spec.version,
                release: release.to_string(),
                package: package.to_string(),
                dir,
            });
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let aptdir = cache_dir().join(format!("apt-{}", spec.suite));
    for d in ["state/lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(aptdir.join(d))?;
    }
    std::fs::write(aptdir.join("state/status"), "")?;
    let (archive, security) = mirrors()?;
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    std::fs::write(
        aptdir.join("sources.list"),
        format!(
            "deb [signed-by={keyring}] {archive} {s} main\ndeb [signed-by={keyring}] {security} {s}-security main\n",
            s = spec.suite
        ),
    )?;
    step(&format!(
        "kernel {}: reading Debian {} package lists",
        spec.version, spec.suite
    ));
    sh(apt(&aptdir, "apt-get").args(["-q", "update"]).stdout(Stdio::null())).with_context(|| {
        format!(
            "apt-get update for Debian {} (private configuration in {})",
            spec.suite,
            aptdir.display()
        )
    })?;
    let deps = apt(&aptdir, "apt-cache")
        .args(["depends", "linux-image-amd64"])
        .output()?;
    let deps = String::from_utf8_lossy(&deps.stdout);
    let package = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && !p.contains("unsigned"))
        .with_context(|| {
            format!(
                "linux-image-amd64 of Debian {} names no kernel package:\n{deps}",
                spec.suite
            )
        })?
        .to_string();
    step(&format!(
        "kernel {}: downloading {package} (Debian {})",
        spec.version, spec.suite
    ));
    let tmp = cache_dir().join(format!("tmp-{}", spec.version));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    sh(apt(&aptdir, "apt-get")
        .args(["-q", "download", &package])
        .current_dir(&tmp)
        .stdout(Stdio::null()))?;
    let deb = std::fs::read_dir(&tmp)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let x = tmp.join("x");
    sh(Command::new("dpkg").arg("-x").arg(&deb).arg(&x))?;
    let modroot = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| x.join(d))
        .find(|d| d.is_dir())
        .context("the kernel package has no lib/modules")?;
    let release = std::fs::read_dir(&modroot)?
        .flatten()
        .next()
        .context("no kernel release under lib/modules")?
        .file_name()
        .to_string_lossy()
        .to_string();
    let mods = modroot.join(&release);
    std::fs::create_dir_all(dir.join("modules"))?;
    std::fs::copy(x.join(format!("boot/vmlinuz-{release}")), dir.join("vmlinuz"))?;
    std::fs::copy(x.join(format!("boot/config-{release}")), dir.join("config"))?;
    let order = collect_modules(&mods, &dir.join("modules"))?;
    std::fs::write(dir.join("modules/order"), order.join("\n") + "\n")?;
    std::fs::remove_dir_all(&tmp)?;
    std::fs::write(&ready, format!("{package}\n{release}\n"))?;
    Ok(Kernel {
        version: spec.version,
        release,
        package,
        dir,
    })
}

fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// Copies the guest's modules and their dependencies (read from each
/// module's `.modinfo`: the packages carry no modules.dep) into `dst`,
/// decompressed; returns their names in load order. Built-in ones are
/// skipped.
fn collect_modules(mods: &Path, dst: &Path) -> Result<Vec<String>> {
    let builtin = std::fs::read_to_string(mods.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin
        .lines()
        .filter_map(|l| Path::new(l).file_name())
        .map(|f| norm(f.to_string_lossy().trim_end_matches(".ko")))
        .collect();
    let mut files = BTreeMap::new();
    index_modules(&mods.join("kernel"), &mut files)?;
    let mut order = Vec::new();
    fn visit(
        name: &str,
        files: &BTreeMap<String, PathBuf>,
        builtin: &[String],
        dst: &Path,
        order: &mut Vec<String>,
        depth: usize,
    ) -> Result<()> {
        let name = norm(name);
        if order.contains(&name) || builtin.contains(&name) || depth > 16 {
            return Ok(());
        }
        let Some(src) = files.get(&name) else {
            bail!("kernel module {name} is neither built in nor shipped in the package")
        };
        let bytes = if src.extension().is_some_and(|e| e == "xz") {
            let o = Command::new("xz")
                .arg("-dc")
                .arg(src)
                .output()
                .context("xz (apt-get install xz-utils)")?;
            if !o.status.success() {
                bail!("xz -dc {} failed", src.display());
            }
            o.stdout
        } else {
            std::fs::read(src)?
        };
        for dep in modinfo_depends(&bytes) {
            visit(&dep, files, builtin, dst, order, depth + 1)?;
        }
        std::fs::write(dst.join(format!("{name}.ko")), &bytes)?;
        order.push(name);
        Ok(())
    }
    for m in GUEST_MODULES {
        visit(m, &files, &builtin, dst, &mut order, 0)?;
    }
    Ok(order)
}

fn index_modules(dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        if p.is_dir() {
            index_modules(&p, out)?;
        } else {
            let f = p.file_name().unwrap_or_default().to_string_lossy().to_string();
            for ext in [".ko", ".ko.xz"] {
                if let Some(stem) = f.strip_suffix(ext) {
                    out.insert(norm(stem), p.clone());
                }
            }
        }
    }
    Ok(())
}

/// The `depends=` entry of a module's `.modinfo` (NUL-separated
/// `key=value` strings).
fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    ko.split(|b| *b == 0)
        .find_map(|s| s.strip_prefix(key))
        .map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

// ------------------------------------------------------------------ guest

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
        .args(["-append", "console=ttyS0 panic=-1 random.trust_cpu=on quiet loglevel=3"])
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
        failures.extend(over_budget(c));
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

/// Programs of a `mcp-monitor check --json` report that cost the verifier
/// more than the report's budget, or whose cost could not be measured.
pub fn over_budget(report: &Value) -> Vec<String> {
    let budget = report["verifier_budget"].as_u64().unwrap_or(0);
    let mut out = Vec::new();
    for p in report["programs"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("?");
        match p["processed_insns"].as_u64() {
            Some(n) if n > budget => out.push(format!(
                "program {name} made the verifier process {n} instructions, over the budget of {budget} \
                 (limit {})",
                report["verifier_limit"]
            )),
            Some(_) => {}
            None => out.push(format!(
                "the verifier cost of program {name} could not be measured: {}",
                p["error"]
            )),
        }
    }
    out
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
    use super::*;

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
        let r = serde_json::json!({"verifier_budget": 100, "verifier_limit": 1000, "programs": [
            {"name": "a", "processed_insns": 100},
            {"name": "b", "processed_insns": 101},
            {"name": "c", "processed_insns": null, "error": "EINVAL"},
        ]});
        let f = over_budget(&r);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f[0].contains("program b") && f[0].contains("101"), "{f:?}");
        assert!(f[1].contains("program c") && f[1].contains("EINVAL"), "{f:?}");
    }

    #[test]
    fn thousands() {
        assert_eq!(group(618155), "618,155");
        assert_eq!(group(12), "12");
        assert_eq!(group(1000000), "1,000,000");
    }
}
