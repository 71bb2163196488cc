//! The Go toolchain the real Go peers of the tests are built with: Debian
//! trixie's `golang-1.24-go` and `golang-1.24-src`, downloaded by package
//! name through apt with a private configuration (as the kernels of the
//! matrix are; nothing under /etc changes) and unpacked under
//! `.tools/go/`. The Go module proxy is not needed: the peers use the
//! standard library only.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result};

use crate::{kernels, root, sh, step};

/// The Debian suite and packages of the toolchain.
const SUITE: &str = "trixie";
const PACKAGES: &[&str] = &["golang-1.24-go", "golang-1.24-src"];

fn dir() -> PathBuf {
    root().join(".tools/go")
}

/// The `go` command, once [`ensure`] has run.
pub fn go_bin() -> PathBuf {
    dir().join("root/usr/lib/go-1.24/bin/go")
}

/// Fetches and unpacks the toolchain unless it is there.
pub fn ensure() -> Result<()> {
    let dir = dir();
    let ready = dir.join("ready");
    if ready.exists() && go_bin().exists() {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(&dir);
    let aptdir = dir.join("apt");
    for d in ["state/lists/partial", "cache/archives/partial", "debs"] {
        std::fs::create_dir_all(aptdir.join(d))?;
    }
    std::fs::write(aptdir.join("state/status"), "")?;
    let (archive, _) = kernels::mirrors()?;
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    std::fs::write(
        aptdir.join("sources.list"),
        format!("deb [signed-by={keyring}] {archive} {SUITE} main\n"),
    )?;
    step(&format!(
        "Go toolchain: downloading {} (Debian {SUITE})",
        PACKAGES.join(", ")
    ));
    sh(kernels::apt(&aptdir, "apt-get")
        .args(["-q", "update"])
        .stdout(Stdio::null()))
    .with_context(|| {
        format!(
            "apt-get update for Debian {SUITE} (private configuration in {})",
            aptdir.display()
        )
    })?;
    sh(kernels::apt(&aptdir, "apt-get")
        .args(["-q", "download"])
        .args(PACKAGES)
        .current_dir(aptdir.join("debs"))
        .stdout(Stdio::null()))?;
    for deb in std::fs::read_dir(aptdir.join("debs"))?.flatten() {
        sh(Command::new("dpkg").arg("-x").arg(deb.path()).arg(dir.join("root")))?;
    }
    std::fs::remove_dir_all(&aptdir)?;
    let out = Command::new(go_bin())
        .arg("version")
        .output()
        .context("running the unpacked go")?;
    anyhow::ensure!(
        out.status.success(),
        "the unpacked Go toolchain does not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&ready, &out.stdout)?;
    Ok(())
}

/// Builds the Go peers of the tests (tests/go: an MCP server and client
/// over HTTPS, standard library only) stripped (`-s -w`), as Go programs
/// ship, into `out`.
pub fn build_peers(out: &Path) -> Result<()> {
    let target = root().join("target");
    sh(Command::new(go_bin())
        .args(["build", "-trimpath", "-ldflags=-s -w", "-o"])
        .arg(format!("{}/", out.display()))
        .args(["./mcpserver", "./mcpclient"])
        .current_dir(root().join("tests/go"))
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", target.join("go-cache"))
        .env("GOPATH", target.join("go-path")))
    .context("building the Go test peers (tests/go)")
}
