//! The Go toolchains the real Go peers of the tests are built with:
//! Debian's own (`golang-X.Y-go` and `golang-X.Y-src` of trixie, bookworm
//! and bullseye), downloaded by package name through apt with a private
//! configuration (as the kernels of the matrix are; nothing under /etc
//! changes) and unpacked under `.tools/go/X.Y/`. The Go module proxy is not
//! needed: the peers use the standard library only.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result};

use crate::{kernels, root, sh, step};

/// (Go version, Debian suite): the newest Go Debian ships, bookworm's, and
/// bullseye's 1.15, which predates the register ABI (the agent must refuse
/// it).
pub const TOOLCHAINS: &[(&str, &str)] = &[("1.24", "trixie"), ("1.19", "bookworm"), ("1.15", "bullseye")];

fn dir(version: &str) -> PathBuf {
    root().join(".tools/go").join(version)
}

/// The `go` command of `version`, once [`ensure`] has run.
pub fn go_bin(version: &str) -> PathBuf {
    dir(version).join(format!("root/usr/lib/go-{version}/bin/go"))
}

/// Fetches and unpacks every toolchain that is not there.
pub fn ensure() -> Result<()> {
    for (version, suite) in TOOLCHAINS {
        ensure_one(version, suite)?;
    }
    Ok(())
}

fn ensure_one(version: &str, suite: &str) -> Result<()> {
    let dir = dir(version);
    let ready = dir.join("ready");
    if ready.exists() && go_bin(version).exists() {
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
        format!("deb [signed-by={keyring}] {archive} {suite} main\n"),
    )?;
    let packages = [format!("golang-{version}-go"), format!("golang-{version}-src")];
    step(&format!(
        "Go toolchain: downloading {} (Debian {suite})",
        packages.join(", ")
    ));
    sh(kernels::apt(&aptdir, "apt-get")
        .args(["-q", "update"])
        .stdout(Stdio::null()))
    .with_context(|| {
        format!(
            "apt-get update for Debian {suite} (private configuration in {})",
            aptdir.display()
        )
    })?;
    sh(kernels::apt(&aptdir, "apt-get")
        .args(["-q", "download"])
        .args(&packages)
        .current_dir(aptdir.join("debs"))
        .stdout(Stdio::null()))?;
    for deb in std::fs::read_dir(aptdir.join("debs"))?.flatten() {
        sh(Command::new("dpkg").arg("-x").arg(deb.path()).arg(dir.join("root")))?;
    }
    std::fs::remove_dir_all(&aptdir)?;
    let out = Command::new(go_bin(version))
        .arg("version")
        .output()
        .context("running the unpacked go")?;
    anyhow::ensure!(
        out.status.success(),
        "the unpacked Go {version} does not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&ready, &out.stdout)?;
    Ok(())
}

/// Builds the Go peers of the tests (tests/go: an MCP server and client
/// over HTTPS, and an HTTPS service that is not MCP with its load client;
/// standard library only) with each toolchain, stripped
/// (`-s -w`) as Go programs ship, into `out/X.Y/`.
pub fn build_peers(out: &Path) -> Result<()> {
    let target = root().join("target");
    for (version, _) in TOOLCHAINS {
        let dest = out.join(version);
        std::fs::create_dir_all(&dest)?;
        sh(Command::new(go_bin(version))
            .args(["build", "-trimpath", "-ldflags=-s -w", "-o"])
            .arg(format!("{}/", dest.display()))
            .args(["./mcpserver", "./mcpclient", "./httpsload"])
            .current_dir(root().join("tests/go"))
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .env("GOCACHE", target.join("go-cache").join(version))
            .env("GOPATH", target.join("go-path")))
        .with_context(|| {
            format!(
                "building the Go test peers (tests/go) with Go {version} (`cargo xtask setup` unpacks the toolchains)"
            )
        })?;
    }
    Ok(())
}
