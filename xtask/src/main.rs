//! Project tasks: `cargo xtask <setup|build|run|test|bench|fuzz|image>`.
//!
//! `run` and `test` call `setup` first; `setup` is idempotent and only
//! installs what is missing, so both work on a fresh Debian 12 machine:
//! - Debian packages: rustc-web + libstd-rust-web-dev-bpf (a rustc with a
//!   prebuilt `core` for BPF), llvm-22-dev (for bpf-linker), and the tools the
//!   tests drive;
//! - bpf-linker 0.13.0 built against LLVM 22, in `.tools/bin`;
//! - the MCP servers and SDK clients the tests use: npm packages in
//!   `tests/clients/node_modules`, PyPI packages in `.venv`.
//!
//! Everything installed lives in git-ignored folders of the repository.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context, Result};

mod bench;
mod go_toolchain;
mod image;
mod kernels;

const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    // bpftool: per-program kernel cost in `cargo xtask bench`.
    "bpftool",
    // taskset, setpriv: CPU pinning in the bench, privilege tests.
    "util-linux",
    "curl",
    "ca-certificates",
    // Real receivers in the delivery tests: syslog (UDP, TCP, TLS), a
    // Prometheus server, and certificates for the TLS test.
    "rsyslog",
    "rsyslog-gnutls",
    "prometheus",
    "openssl",
    // A real container (namespaces + cgroups) in the identity tests.
    "runc",
    // The kernel matrix: Debian's kernels booted in qemu, with a busybox
    // initramfs.
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "xz-utils",
    // The investigation views' tests: `top` driven in tmux, the report
    // rendered (and photographed) by headless Chromium.
    "tmux",
    "chromium",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn usage() -> &'static str {
    "usage: cargo xtask <task> [args]\n\
     tasks:\n  \
       setup           install the toolchain and test peers (idempotent)\n  \
       build           build mcp-monitor (release) with its eBPF programs\n  \
       run [ARGS]      run the monitor with the built-in defaults (ARGS go to `mcp-monitor run`)\n  \
       test            run every test: unit, property, fuzz smoke, the root-only integration tests and the kernel matrix\n  \
       test kernels [VERSION...]  only the kernel matrix (5.10, 6.1, 6.12 booted in qemu)\n  \
       bench [PART]    run the benchmarks (PART: pipeline|overhead|kernel|drops|memory|https|logs|host) and write target/bench-results.json\n  \
       fuzz [SECONDS]  run each fuzz target for SECONDS (default 60)\n  \
       image           build the container image with Podman: the Dockerfile's full multi-stage build\n  \
       image --prebuilt  the image's runtime stage around the release binary built here (what `test` runs)"
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("build") => setup().and_then(|_| build()),
        Some("run") => setup().and_then(|_| build()).and_then(|_| run(&args[1..])),
        Some("test") if args.get(1).map(String::as_str) == Some("kernels") => {
            setup().and_then(|_| build()).and_then(|_| kernel_matrix(&args[2..]))
        }
        Some("test") => setup().and_then(|_| test()),
        Some("bench") => setup().and_then(|_| bench(&args[1..])),
        Some("image") if args.get(1).map(String::as_str) == Some("--prebuilt") => setup()
            .and_then(|_| build())
            .and_then(|_| image::build(image::Binary::Prebuilt))
            .map(|_| ()),
        Some("image") => image::build(image::Binary::FullBuild).map(|_| ()),
        Some("fuzz") => setup().and_then(|_| fuzz(args.get(1).map(|s| s.parse().unwrap_or(60)).unwrap_or(60))),
        _ => {
            eprintln!("{}", usage());
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { geteuid() == 0 }
}

extern "C" {
    fn geteuid() -> u32;
}

pub(crate) fn step(msg: &str) {
    eprintln!("\x1b[1mxtask:\x1b[0m {msg}");
}

/// Runs a command, failing with its description if it fails.
pub(crate) fn sh(cmd: &mut Command) -> Result<()> {
    let desc = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot start {desc}"))?;
    if !status.success() {
        bail!("{desc} failed ({status})");
    }
    Ok(())
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

fn path_with(extra: &[&Path]) -> OsString {
    let mut parts: Vec<PathBuf> = extra.iter().map(|p| p.to_path_buf()).collect();
    parts.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    env::join_paths(parts).unwrap()
}

// ------------------------------------------------------------------ setup

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Content hash of files, to notice when a lockfile changed since install.
fn fingerprint(files: &[PathBuf]) -> String {
    // FNV-1a: no dependency, good enough to detect edits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in files {
        for b in std::fs::read(f).unwrap_or_default() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn stamp_ok(stamp: &Path, fp: &str) -> bool {
    std::fs::read_to_string(stamp).is_ok_and(|s| s.trim() == fp)
}

fn setup() -> Result<()> {
    let root = root();
    let tools = root.join(".tools");
    std::fs::create_dir_all(tools.join("bin"))?;

    // 1. Debian packages.
    let missing: Vec<&str> = APT_PACKAGES.iter().copied().filter(|p| !dpkg_installed(p)).collect();
    if !missing.is_empty() {
        if !is_root() {
            bail!(
                "Debian packages missing: {}. Run `sudo cargo xtask setup` (or install them with apt-get).",
                missing.join(" ")
            );
        }
        step(&format!("installing Debian packages: {}", missing.join(" ")));
        sh(Command::new("apt-get").arg("update").arg("-q"))?;
        sh(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }

    // 2. bpf-linker built against LLVM 22.
    let linker = tools.join("bin/bpf-linker");
    let linker_ok = Command::new(&linker)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION));
    if !linker_ok {
        step(&format!(
            "building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a minute or two)"
        ));
        sh(Command::new("cargo")
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--no-default-features",
            ])
            .args(["--features", "llvm-22", "--root"])
            .arg(&tools)
            .env("PATH", path_with(&[Path::new(LLVM_BIN)])))?;
    }

    // 3. npm: MCP servers and the TypeScript SDK client.
    let clients = root.join("tests/clients");
    let npm_files = [clients.join("package.json"), clients.join("package-lock.json")];
    let npm_stamp = clients.join("node_modules/.mcp-monitor-stamp");
    let npm_fp = fingerprint(&npm_files);
    if !stamp_ok(&npm_stamp, &npm_fp) {
        if !have("npm") {
            if !is_root() {
                bail!("npm is missing: install Node.js 20 and npm (apt-get install nodejs npm)");
            }
            step("installing nodejs and npm");
            sh(Command::new("apt-get")
                .args(["install", "-y", "-q", "nodejs", "npm"])
                .env("DEBIAN_FRONTEND", "noninteractive"))?;
        }
        step("installing MCP servers and the TypeScript SDK (npm ci)");
        sh(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&clients))?;
        std::fs::write(&npm_stamp, &npm_fp)?;
    }

    // 4. PyPI: the Python SDK and FastMCP in a virtualenv.
    let venv = root.join(".venv");
    let py_files = [clients.join("requirements.txt"), clients.join("requirements.lock")];
    let py_stamp = venv.join(".mcp-monitor-stamp");
    let py_fp = fingerprint(&py_files);
    if !stamp_ok(&py_stamp, &py_fp) {
        let python = if have("python3.11") { "python3.11" } else { "python3" };
        if !venv.join("bin/python").exists() {
            step("creating the Python virtualenv .venv");
            if Command::new(python)
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .map(|s| !s.success())
                .unwrap_or(true)
            {
                if !is_root() {
                    bail!("python3 -m venv failed: install python3-venv (apt-get install python3-venv)");
                }
                sh(Command::new("apt-get")
                    .args(["install", "-y", "-q", "python3-venv"])
                    .env("DEBIAN_FRONTEND", "noninteractive"))?;
                sh(Command::new(python).args(["-m", "venv"]).arg(&venv))?;
            }
        }
        step("installing the Python MCP SDK and FastMCP (pip)");
        sh(Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check", "-r"])
            .arg(&py_files[0])
            .arg("-c")
            .arg(&py_files[1]))?;
        // mcp-server-fetch extracts pages with readabilipy, which installs
        // its Readability.js dependencies with npm on first use: do it now,
        // not in the middle of a test.
        step("installing readabilipy's JavaScript dependencies (npm)");
        sh(Command::new(venv.join("bin/python"))
            .args(["-c", "from readabilipy.utils import run_npm_install; run_npm_install()"]))?;
        std::fs::write(&py_stamp, &py_fp)?;
    }

    // 5. Go: Debian's toolchains for the real Go peers (tests/go).
    go_toolchain::ensure()?;
    Ok(())
}

// ------------------------------------------------------------------ build

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn build() -> Result<()> {
    step("building mcp-monitor (release)");
    sh(cargo().args(["build", "--release", "-p", "mcp-monitor", "--bin", "mcp-monitor"]))
}

fn monitor_bin() -> PathBuf {
    root().join("target/release/mcp-monitor")
}

fn run(args: &[String]) -> Result<()> {
    let bin = monitor_bin();
    let mut cmd = if is_root() {
        Command::new(&bin)
    } else if have("sudo") {
        step("the monitor loads eBPF programs: running it with sudo");
        let mut c = Command::new("sudo");
        c.arg(&bin);
        c
    } else {
        bail!("the monitor must run as root (it loads eBPF programs): run `sudo cargo xtask run`");
    };
    cmd.arg("run").args(args);
    step(&format!("{cmd:?}"));
    sh(&mut cmd)
}

// ------------------------------------------------------------------- test

fn test_env(cmd: &mut Command) {
    let root = root();
    cmd.env("MCP_MONITOR_BIN", monitor_bin())
        .env("MCP_TEST_CLIENTS", root.join("tests/clients"))
        .env("MCP_TEST_PYTHON", root.join(".venv/bin/python"));
}

/// Installs rustfmt and clippy into the active toolchain when they are
/// missing (a minimal rustup profile has neither).
fn ensure_lint_tools() -> Result<()> {
    let have = |tool: &str| {
        cargo()
            .args([tool, "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if have("fmt") && have("clippy") {
        return Ok(());
    }
    step("installing rustfmt and clippy (rustup component add)");
    sh(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"])).context(
        "rustfmt and clippy are missing and rustup could not add them.\n\
         Fix: rustup component add rustfmt clippy",
    )
}

fn test() -> Result<()> {
    ensure_lint_tools()?;
    step("formatting (cargo fmt --check) and lints (clippy, warnings are errors)");
    sh(cargo().args(["fmt", "--all", "--check"]))
        .context("the code is not formatted as rustfmt.toml says.\nFix: cargo fmt --all")?;
    // The kernel programs and the fuzz targets are workspaces of their own.
    for manifest in ["monitor-ebpf/Cargo.toml", "monitor-user/fuzz/Cargo.toml"] {
        sh(cargo()
            .args(["fmt", "--check", "--manifest-path"])
            .arg(root().join(manifest)))
        .with_context(|| format!("{manifest}: not formatted.\nFix: cargo fmt --manifest-path {manifest}"))?;
    }
    sh(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
        .context("clippy or a lint of [workspace.lints] failed (see above); fix the code, or allow the lint where it is wrong, with a reason")?;
    step("unit and property tests");
    sh(cargo().args(["test", "--workspace", "--exclude", "mcp-monitor-tests"]))?;
    // A short fuzzing pass over every parser of untrusted bytes; long
    // campaigns: `cargo xtask fuzz 3600`.
    fuzz(20)?;
    build()?;
    if !is_root() {
        bail!(
            "the integration tests load real eBPF programs and need root: run `sudo cargo xtask test` \
             (the unit tests above passed)"
        );
    }
    // The container test runs the image as the DaemonSet does; the suite
    // assembles its runtime stage around the binary it just built (the full
    // build, `cargo xtask image`, would take most of CI's time).
    let image = image::build(image::Binary::Prebuilt)?;
    step("building the Go test peers (tests/go) with Debian's Go toolchains");
    let go_peers = root().join("target/go-peers");
    go_toolchain::build_peers(&go_peers)?;
    step("integration tests (real eBPF capture of real MCP servers and clients)");
    let mut cmd = cargo();
    cmd.args(["test", "-p", "mcp-monitor-tests", "--", "--test-threads=1"]);
    test_env(&mut cmd);
    cmd.env("MCP_TEST_IMAGE", image).env("MCP_TEST_GO_PEERS", &go_peers);
    sh(&mut cmd)?;
    kernel_matrix(&[])
}

/// Boots each kernel of the matrix (or those named) in qemu and runs the
/// agent and the capture tests inside; fails if any kernel fails.
fn kernel_matrix(versions: &[String]) -> Result<()> {
    if !is_root() {
        bail!("the kernel matrix runs the agent inside qemu guests as root: run `sudo cargo xtask test kernels`");
    }
    let specs = kernels::select(versions)?;
    let plan = guest_plan()?;
    let t0 = std::time::Instant::now();
    let mut outcomes = Vec::new();
    for spec in specs {
        let k = kernels::fetch(spec)?;
        let mut o = kernels::boot(&k, &plan)?;
        if o.timed_out {
            // The guest as a whole stalled (its console's end is in the
            // failure): boot it once more, and report the stall either way.
            step(&format!(
                "kernel {}: the guest stalled; booting it once more",
                o.version
            ));
            let first = o.failures.join("\n");
            let kept = kernels::set_aside(o.version);
            o = kernels::boot(&k, &plan)?;
            o.warnings.insert(
                0,
                format!("the first boot stalled (its files: {}):\n{first}", kept.display()),
            );
        }
        for w in &o.warnings {
            step(&format!("kernel {}: WARNING", o.version));
            eprintln!("  {w}");
        }
        if o.failures.is_empty() {
            step(&format!(
                "kernel {} ({}): agent started in {} s, {} capture tests passed ({} s in all)",
                o.version,
                o.release,
                o.check_seconds.unwrap_or(0),
                o.runs,
                o.seconds
            ));
        } else {
            step(&format!("kernel {} ({}): FAILED", o.version, o.release));
            for f in &o.failures {
                eprintln!("  {f}");
            }
        }
        outcomes.push(o);
    }
    let host = host_check();
    kernels::write_report(&outcomes, host)?;
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.failures.is_empty())
        .map(|o| o.version)
        .collect();
    let passed = outcomes.len() - failed.len();
    // The plain closing line CI reads.
    println!("kernels: {passed} passed, {} failed", failed.len());
    step(&format!(
        "kernel matrix took {} s; table in docs/KERNELS.md, details in target/kernel-matrix/",
        t0.elapsed().as_secs()
    ));
    if !failed.is_empty() {
        bail!("the agent failed on kernel(s) {}", failed.join(", "));
    }
    Ok(())
}

/// `mcp-monitor check --json` on this machine's own kernel, for the table.
fn host_check() -> Option<(String, serde_json::Value)> {
    let o = Command::new(monitor_bin()).args(["check", "--json"]).output().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    let rel = v["kernel"].as_str()?.to_string();
    Some((rel, v))
}

/// Builds the integration test binaries and names what the guests run.
fn guest_plan() -> Result<kernels::GuestPlan> {
    step("building the Go test peers for the guests");
    let go_peers = root().join("target/go-peers");
    go_toolchain::build_peers(&go_peers)?;
    step("building the integration test binaries for the guests");
    let o = cargo()
        .args(["test", "-p", "mcp-monitor-tests", "--no-run", "--message-format=json"])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !o.status.success() {
        bail!("building the integration tests failed");
    }
    let mut test_bins = Vec::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str()) else {
            continue;
        };
        if kernels::GUEST_TESTS.iter().any(|(b, _)| *b == name)
            && !test_bins.iter().any(|(b, _): &(String, PathBuf)| b == name)
        {
            test_bins.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    let root = root();
    Ok(kernels::GuestPlan {
        monitor: monitor_bin(),
        test_bins,
        env: vec![
            ("MCP_MONITOR_BIN".into(), monitor_bin().display().to_string()),
            (
                "MCP_TEST_CLIENTS".into(),
                root.join("tests/clients").display().to_string(),
            ),
            (
                "MCP_TEST_PYTHON".into(),
                root.join(".venv/bin/python").display().to_string(),
            ),
            ("MCP_TEST_GO_PEERS".into(), go_peers.display().to_string()),
            ("MCP_TEST_TIME_SCALE".into(), kernels::TIME_SCALE.to_string()),
        ],
    })
}

// ------------------------------------------------------------------ bench

fn bench(args: &[String]) -> Result<()> {
    bench::run(args)
}

// ------------------------------------------------------------------- fuzz

/// Fuzz targets in monitor-user/fuzz (one per parser of untrusted bytes).
const FUZZ_TARGETS: &[&str] = &[
    "jsonrpc",
    "framer",
    "http",
    "h2",
    "pipeline",
    "recording",
    "ring_record",
    "btf",
    "redact",
    "secrets",
    "prefilter",
    "rules",
    "go_binary",
    "boringssl_binary",
];

fn ensure_cargo_fuzz() -> Result<PathBuf> {
    let tools = root().join(".tools");
    let bin = tools.join("bin/cargo-fuzz");
    if !bin.exists() {
        step("installing cargo-fuzz (a minute or two)");
        sh(Command::new("cargo")
            .args(["install", "cargo-fuzz@0.13.2", "--locked", "--root"])
            .arg(&tools))?;
    }
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output();
    if !nightly.is_ok_and(|o| o.status.success()) {
        bail!(
            "fuzzing needs a nightly toolchain (for -Zsanitizer) and rustup has none.\n\
             Fix: rustup toolchain install nightly"
        );
    }
    Ok(bin)
}

/// Runs every fuzz target for `seconds`; a crash fails the task and leaves
/// the input in monitor-user/fuzz/artifacts/<target>/.
fn fuzz(seconds: u64) -> Result<()> {
    let cargo_fuzz = ensure_cargo_fuzz()?;
    let dir = root().join("monitor-user");
    let fuzz_dir = dir.join("fuzz");
    step("building fuzz targets (nightly, AddressSanitizer)");
    sh(Command::new(&cargo_fuzz)
        .args(["build", "-O"])
        .current_dir(&dir)
        .env("RUSTUP_TOOLCHAIN", "nightly")
        .env("MCP_MONITOR_SKIP_EBPF", "1"))?;
    for t in FUZZ_TARGETS {
        step(&format!("fuzzing {t} for {seconds} s"));
        let corpus = fuzz_dir.join("corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        let mut cmd = Command::new(&cargo_fuzz);
        cmd.args(["run", "-O", t])
            .arg(&corpus)
            .current_dir(&dir)
            .env("RUSTUP_TOOLCHAIN", "nightly")
            .env("MCP_MONITOR_SKIP_EBPF", "1");
        let seeds = fuzz_dir.join("seeds").join(t);
        if seeds.exists() {
            cmd.arg(&seeds);
        }
        cmd.args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-rss_limit_mb=2048",
            "-max_len=65536",
            "-print_final_stats=1",
        ]);
        sh(&mut cmd).with_context(|| format!("fuzz target {t} found a crash: see monitor-user/fuzz/artifacts/{t}/"))?;
    }
    Ok(())
}
