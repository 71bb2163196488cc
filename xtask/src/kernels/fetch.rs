//! Fetching a kernel of the matrix: Debian's package through apt with a
//! private configuration, reduced to the image and the modules the guest
//! needs, cached under `.tools/kernels/`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use super::*;
use crate::{sh, step};

/// The Debian archive and security URIs this machine's apt uses: the
/// kernels come from the same mirrors, other suites.
pub(crate) fn mirrors() -> Result<(String, String)> {
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
pub(super) fn source_entries(text: &str) -> Vec<(String, String)> {
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
    pub(super) dir: PathBuf,
}

/// apt with a private configuration rooted in `dir`.
pub(crate) fn apt(dir: &Path, tool: &str) -> Command {
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
pub(super) fn modinfo_depends(ko: &[u8]) -> Vec<String> {
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
