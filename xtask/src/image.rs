//! `cargo xtask image`: the container image, built with Podman from a Debian
//! base made here from Debian's packages.
//!
//! Two ways, one Dockerfile:
//! - full (`cargo xtask image`): the Dockerfile's whole multi-stage build,
//!   the toolchain recipe included (15-25 minutes on 2 cores the first time);
//! - prebuilt (`cargo xtask image --prebuilt`, and the test suite): only the
//!   runtime stage, around the release binary already built and tested here,
//!   with its debug info stripped as the full build strips it.
//!
//! No registry is needed: the base image is a `debootstrap --variant=minbase`
//! of bookworm, trimmed and configured as Debian's official slim image is,
//! and imported into Podman's store. The Dockerfile's defaults still name
//! the public `debian:bookworm` images for builds elsewhere.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context, Result};

use crate::{root, sh, step};

/// The image the DaemonSet names (deploy/kubernetes/daemonset.yaml).
pub const RELEASE_TAG: &str = concat!("ghcr.io/mcp-monitor/mcp-monitor:", env!("CARGO_PKG_VERSION"));
/// The image the test suite assembles around the binary it tested.
pub const TEST_TAG: &str = "localhost/mcp-monitor:test";
/// The locally made Debian 12 base.
const BASE_TAG: &str = "localhost/mcp-monitor-base:bookworm";
/// A base older than this is made again, to pick up security updates.
const BASE_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// What the Dockerfile's runtime stage gets its binary from.
#[derive(Clone, Copy, PartialEq)]
pub enum Binary {
    /// The Dockerfile's own build stage.
    FullBuild,
    /// `target/release/mcp-monitor`, stripped.
    Prebuilt,
}

/// Builds the image and returns its tag.
pub fn build(binary: Binary) -> Result<&'static str> {
    ensure_podman()?;
    base_image()?;
    let root = root();
    let (tag, context) = match binary {
        Binary::FullBuild => (RELEASE_TAG, root.clone()),
        Binary::Prebuilt => (TEST_TAG, prebuilt_context()?),
    };
    step(&format!(
        "building the image {tag} ({})",
        match binary {
            Binary::FullBuild => "full multi-stage build: the toolchain, bpf-linker and the agent are built inside",
            Binary::Prebuilt => "runtime stage around the binary built here",
        }
    ));
    let mut cmd = Command::new("podman");
    cmd.arg("build").args(ulimit_args());
    if binary == Binary::FullBuild {
        if let Some(ca) = build_ca()? {
            step(&format!(
                "trusting the extra CA certificates of this host for the build's downloads ({}; build secret only, not in the image)",
                ca.display()
            ));
            cmd.arg("--secret").arg(format!("id=build-ca,src={}", ca.display()));
        }
    }
    cmd.args(["--build-arg", &format!("BUILD_BASE={BASE_TAG}")])
        .args(["--build-arg", &format!("RUNTIME_BASE={BASE_TAG}")])
        .args([
            "--build-arg",
            if binary == Binary::Prebuilt {
                "BINARY_FROM=prebuilt"
            } else {
                "BINARY_FROM=build"
            },
        ])
        .args(["-t", tag, "-f"])
        .arg(root.join("Dockerfile"))
        .arg(&context);
    sh(&mut cmd).context(
        "the image build failed (see above).\n\
         If a RUN step fails with \"error setting rlimit\", the host lacks CAP_SYS_RESOURCE; \
         if apt-get cannot reach the archive, check the network to deb.debian.org",
    )?;
    let size = image_size(tag)?;
    step(&format!(
        "image {tag}: {:.1} MB (binary {:.1} MB)",
        size as f64 / 1e6,
        binary_size_in(tag).unwrap_or(0) as f64 / 1e6
    ));
    Ok(tag)
}

/// The CA certificates this host trusts beyond Debian's (a TLS-inspecting
/// proxy's, typically): `MCP_MONITOR_BUILD_CA` (a PEM file), or every
/// `*.crt` of /usr/local/share/ca-certificates, joined in
/// target/image/build-ca.pem. The build trusts them for downloads only.
fn build_ca() -> Result<Option<PathBuf>> {
    if let Some(p) = std::env::var_os("MCP_MONITOR_BUILD_CA") {
        return Ok(Some(PathBuf::from(p)));
    }
    let Ok(dir) = std::fs::read_dir("/usr/local/share/ca-certificates") else {
        return Ok(None);
    };
    let mut pem = Vec::new();
    let mut files: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    files.sort();
    for f in files {
        pem.extend(std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?);
        pem.push(b'\n');
    }
    if pem.is_empty() {
        return Ok(None);
    }
    let out = root().join("target/image/build-ca.pem");
    std::fs::create_dir_all(out.parent().unwrap())?;
    std::fs::write(&out, pem)?;
    Ok(Some(out))
}

/// Installs Podman (with the CNI plugins of its bridge network), debootstrap
/// and objcopy when missing.
fn ensure_podman() -> Result<()> {
    let missing: Vec<&str> = ["podman", "containernetworking-plugins", "debootstrap", "binutils"]
        .into_iter()
        .filter(|p| !crate::dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::is_root() {
        bail!(
            "{} missing: run `sudo cargo xtask image` (or apt-get install {})",
            missing.join(" and "),
            missing.join(" ")
        );
    }
    step(&format!("installing {}", missing.join(" ")));
    sh(Command::new("apt-get").args(["update", "-q"]))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Extra `--ulimit` flags for `podman build`/`run`. Rootful Podman raises
/// the open files and processes limits of containers to their maximum,
/// which needs CAP_SYS_RESOURCE: where the host withholds it (sandboxes,
/// some CI runners) every container fails to start with "error setting
/// rlimit". There the runtime keeps limits it may set.
pub fn ulimit_args() -> Vec<String> {
    const CAP_SYS_RESOURCE: u32 = 24;
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    if caps & (1 << CAP_SYS_RESOURCE) != 0 {
        return Vec::new();
    }
    let mut lim = libc_rlimit { cur: 0, max: 0 };
    // SAFETY: getrlimit writes the struct it is given.
    let nofile = if unsafe { getrlimit(7, &mut lim) } == 0 {
        format!("nofile={}:{}", lim.cur, lim.max)
    } else {
        "nofile=1024:4096".into()
    };
    // Within the hard limit but not at it: runc in such sandboxes was seen
    // to be refused the host's own hard limit of processes.
    vec!["--ulimit".into(), nofile, "--ulimit".into(), "nproc=32768:32768".into()]
}

#[repr(C)]
#[allow(non_camel_case_types)]
struct libc_rlimit {
    cur: u64,
    max: u64,
}

extern "C" {
    fn getrlimit(resource: i32, rlim: *mut libc_rlimit) -> i32;
}

/// Makes the Debian 12 base image with debootstrap unless a recent one is
/// in Podman's store.
fn base_image() -> Result<()> {
    if let Some(age) = image_age(BASE_TAG) {
        if age < BASE_MAX_AGE {
            return Ok(());
        }
    }
    let dir = root().join("target/image");
    let rootfs = dir.join("rootfs");
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs).with_context(|| format!("cannot remove {}", rootfs.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let mirror = std::env::var("MCP_MONITOR_DEBIAN_MIRROR").unwrap_or_else(|_| DEBIAN_MIRROR.into());
    step(&format!(
        "making the Debian 12 base image from {mirror} (debootstrap --variant=minbase, half a minute)"
    ));
    sh(Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&rootfs)
        .arg(&mirror))
    .with_context(|| {
        format!("debootstrap failed: is {mirror} reachable? (MCP_MONITOR_DEBIAN_MIRROR names another mirror)")
    })?;
    configure_like_official_image(&rootfs, &mirror)?;
    step(&format!("importing the base as {BASE_TAG}"));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar --numeric-owner -C '{}' -c . | podman import --change 'CMD [\"bash\"]' - {BASE_TAG}",
            rootfs.display()
        ))
        .status()?;
    if !status.success() {
        bail!("podman import of the base image failed ({status})");
    }
    std::fs::remove_dir_all(&rootfs).ok();
    Ok(())
}

/// What Debian's official container images add to a minbase: all three
/// suites, apt that keeps no caches and no translations, dpkg that installs
/// no documentation (the slim variant), and no package archives.
fn configure_like_official_image(rootfs: &Path, mirror: &str) -> Result<()> {
    let security = if mirror == DEBIAN_MIRROR {
        "http://deb.debian.org/debian-security".to_string()
    } else {
        format!("{}-security", mirror.trim_end_matches('/'))
    };
    let files: [(&str, String); 5] = [
        (
            "etc/apt/sources.list.d/debian.sources",
            format!(
                "Types: deb\nURIs: {mirror}\nSuites: bookworm bookworm-updates\nComponents: main\n\
                 Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                 Types: deb\nURIs: {security}\nSuites: bookworm-security\nComponents: main\n\
                 Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            ),
        ),
        (
            "etc/apt/apt.conf.d/docker-clean",
            "DPkg::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\"; };\n\
             APT::Update::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\"; };\n\
             Dir::Cache::pkgcache \"\";\nDir::Cache::srcpkgcache \"\";\n"
                .into(),
        ),
        ("etc/apt/apt.conf.d/docker-no-languages", "Acquire::Languages \"none\";\n".into()),
        ("etc/apt/apt.conf.d/docker-gzip-indexes", "Acquire::GzipIndexes \"true\";\n".into()),
        (
            "etc/dpkg/dpkg.cfg.d/docker",
            "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n\
             path-exclude /usr/share/man/*\npath-exclude /usr/share/groff/*\npath-exclude /usr/share/info/*\n\
             path-exclude /usr/share/lintian/*\npath-exclude /usr/share/linda/*\npath-exclude /usr/share/locale/*\n"
                .into(),
        ),
    ];
    for (path, text) in files {
        let p = rootfs.join(path);
        std::fs::create_dir_all(p.parent().unwrap())?;
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    let _ = std::fs::remove_file(rootfs.join("etc/apt/sources.list"));
    // Documentation a slim image does not carry, and the downloaded
    // packages; copyright files stay.
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(
        "cd \"$1\" && rm -rf var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* \
         usr/share/man/* usr/share/info/* usr/share/locale/* usr/share/groff/* usr/share/lintian/* \
         && find usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete",
    );
    cmd.arg("sh").arg(rootfs);
    sh(&mut cmd)
}

/// A build context holding only the stripped release binary.
fn prebuilt_context() -> Result<PathBuf> {
    let bin = root().join("target/release/mcp-monitor");
    if !bin.exists() {
        bail!("{} is missing: run `cargo xtask build` first", bin.display());
    }
    let ctx = root().join("target/image/prebuilt");
    std::fs::create_dir_all(&ctx)?;
    let out = ctx.join("mcp-monitor");
    // The same stripping as the full build: debug info out, symbols kept.
    sh(Command::new("objcopy").arg("--strip-debug").arg(&bin).arg(&out))
        .context("objcopy (binutils) failed: apt-get install binutils")?;
    Ok(ctx)
}

fn image_age(tag: &str) -> Option<Duration> {
    let o = Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Created.Unix}}", tag])
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    let created: u64 = String::from_utf8_lossy(&o.stdout).trim().parse().ok()?;
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(now.saturating_sub(created)))
}

/// Uncompressed size of the image, in bytes.
pub fn image_size(tag: &str) -> Result<u64> {
    let o = Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Size}}", tag])
        .output()?;
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .with_context(|| format!("podman image inspect {tag} gave no size"))
}

/// Size of /usr/local/bin/mcp-monitor inside the image.
fn binary_size_in(tag: &str) -> Option<u64> {
    let o = Command::new("podman")
        .arg("run")
        .args(ulimit_args())
        .args([
            "--rm",
            "--entrypoint",
            "stat",
            tag,
            "-c",
            "%s",
            "/usr/local/bin/mcp-monitor",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&o.stdout).trim().parse().ok()
}
