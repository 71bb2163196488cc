//! Builds the kernel programs (`monitor-ebpf`) for `bpfel-unknown-none` and
//! leaves the object in `OUT_DIR/monitor.bpf.o` for `include_bytes!`.
//!
//! The recipe is the one recorded in `shared/docs/toolchain.md`: Debian's
//! rustc (which ships a prebuilt `core` for BPF), `RUSTC_BOOTSTRAP` for
//! aya-ebpf's `asm_experimental_arch`, bpf-linker built against LLVM 22, and
//! BTF in the output. `cargo xtask setup` installs all of it.
//!
//! Environment:
//! - `MCP_MONITOR_BPF_RUSTC`: rustc to build with (default `/usr/bin/rustc`).
//! - `MCP_MONITOR_BPF_LINKER`: bpf-linker (default: `.tools/bin/bpf-linker`
//!   in the repository, then `bpf-linker` on PATH).
//! - `MCP_MONITOR_SKIP_EBPF=1`: embed an empty object (for `cargo doc`,
//!   clippy or pure-logic tests on machines without the BPF toolchain);
//!   `mcp-monitor run` then refuses to start and says why.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let ebpf = root.join("monitor-ebpf");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let object = out.join("monitor.bpf.o");

    for p in ["src", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", ebpf.join(p).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("monitor-common/src").display());
    for v in [
        "MCP_MONITOR_BPF_RUSTC",
        "MCP_MONITOR_BPF_LINKER",
        "MCP_MONITOR_SKIP_EBPF",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }

    if env::var_os("MCP_MONITOR_SKIP_EBPF").is_some_and(|v| v == "1") {
        std::fs::write(&object, b"").unwrap();
        return;
    }

    let rustc = env::var("MCP_MONITOR_BPF_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());
    if !Path::new(&rustc).exists() {
        fail(&format!(
            "the BPF build needs Debian's rustc at {rustc} (package rustc-web with \
             libstd-rust-web-dev-bpf).\nFix: run `cargo xtask setup`, or set MCP_MONITOR_BPF_RUSTC."
        ));
    }
    let linker = env::var("MCP_MONITOR_BPF_LINKER")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let local = root.join(".tools/bin/bpf-linker");
            if local.exists() {
                local
            } else {
                PathBuf::from("bpf-linker")
            }
        });
    let llvm_bin = "/usr/lib/llvm-22/bin";
    let path = format!("{llvm_bin}:{}", env::var("PATH").unwrap_or_default());

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = out.join("ebpf-target");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ebpf)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "bpfel-unknown-none",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("RUSTC", &rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", &linker)
        .env("CARGO_ENCODED_RUSTFLAGS", "-Cdebuginfo=2\x1f-Clink-arg=--btf")
        .env("PATH", path);
    for v in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(v);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| fail(&format!("could not run cargo for the BPF build: {e}")));
    if !status.success() {
        fail(
            "building monitor-ebpf for bpfel-unknown-none failed (see the errors above).\n\
             If bpf-linker or Debian's rustc is missing, run `cargo xtask setup`.",
        );
    }
    let built = target_dir.join("bpfel-unknown-none/release/monitor");
    std::fs::copy(&built, &object).unwrap_or_else(|e| fail(&format!("copying {} failed: {e}", built.display())));
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}
