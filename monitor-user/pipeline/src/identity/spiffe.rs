//! SPIFFE IDs for the processes the monitor sees.
//!
//! Pods get the ID that SPIRE's Kubernetes workload registrar and Istio
//! give them, `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//! Processes outside Kubernetes get one from the first matching entry of a
//! configured mapping (by systemd unit, uid, user name or executable).
//! IDs are built from validated templates, so every emitted ID satisfies
//! the SPIFFE ID grammar.

use serde::{Deserialize, Serialize};

use super::ProcessInfo;
use crate::glob::glob;

/// One entry of the non-Kubernetes mapping. Every condition given must
/// hold; an entry with none matches every process.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SpiffeMapping {
    /// Glob on the systemd unit (`mcp-*.service`).
    pub systemd_unit: Option<String>,
    /// Exact uid of the process.
    pub uid: Option<u32>,
    /// Glob on the user name.
    pub user: Option<String>,
    /// Glob on the executable path (`/usr/bin/node`, `*/python3*`).
    pub exe: Option<String>,
    /// Template of the ID: `spiffe://{trust_domain}/host/{hostname}/unit/{systemd_unit}`.
    /// Placeholders: `{trust_domain}`, `{hostname}`, `{systemd_unit}`,
    /// `{uid}`, `{user}`, `{exe_name}`. Substituted values keep only
    /// letters, digits, `.`, `-` and `_` (others become `_`).
    pub id: String,
}

/// Identity settings (`[identity]` in the configuration).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Trust domain of the SPIFFE IDs; empty turns SPIFFE IDs off.
    pub trust_domain: String,
    /// SPIFFE IDs for pods (`spiffe://<td>/ns/<ns>/sa/<sa>`).
    pub kubernetes_spiffe_ids: bool,
    /// SPIFFE IDs for processes outside Kubernetes; first match wins.
    pub spiffe: Vec<SpiffeMapping>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".into(),
            kubernetes_spiffe_ids: true,
            spiffe: Vec::new(),
        }
    }
}

const PLACEHOLDERS: &[&str] = &["trust_domain", "hostname", "systemd_unit", "uid", "user", "exe_name"];

/// Checks a trust domain against the SPIFFE grammar.
pub fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td.len() <= 255
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
}

/// Checks a whole SPIFFE ID: scheme, trust domain, and a path of non-empty
/// segments other than `.` and `..` made of letters, digits, `.`, `-`, `_`.
pub fn valid_spiffe_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("spiffe://") else {
        return false;
    };
    if id.len() > 2048 {
        return false;
    }
    let (td, path) = rest.split_once('/').map_or((rest, None), |(t, p)| (t, Some(p)));
    if !valid_trust_domain(td) {
        return false;
    }
    match path {
        None => true,
        Some(p) => p.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        }),
    }
}

/// A value made safe for a path segment.
fn segment(v: &str) -> String {
    let s: String = v
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.as_str() {
        "" => "_".into(),
        "." | ".." => s.replace('.', "_"),
        _ => s,
    }
}

fn fill(template: &str, value: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in {template:?}"))?;
        let name = &rest[open + 1..open + close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}} in {template:?} (known: {})",
                PLACEHOLDERS.join(", ")
            ));
        }
        match value(name) {
            Some(v) => out.push_str(&v),
            None => return Ok(String::new()),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Builds SPIFFE IDs from the configuration.
#[derive(Clone, Debug)]
pub struct SpiffeMapper {
    cfg: IdentityConfig,
    hostname: String,
}

impl SpiffeMapper {
    /// Checks the configuration; errors name the entry and the fix.
    pub fn new(cfg: IdentityConfig, hostname: &str) -> anyhow::Result<Self> {
        if !cfg.trust_domain.is_empty() {
            anyhow::ensure!(
                valid_trust_domain(&cfg.trust_domain),
                "identity.trust_domain {:?} is not a SPIFFE trust domain: use lowercase letters, digits, '.', '-' and '_'",
                cfg.trust_domain
            );
        }
        let m = Self {
            cfg,
            hostname: segment(hostname),
        };
        for (i, e) in m.cfg.spiffe.iter().enumerate() {
            fill(&e.id, |_| Some("x".into())).map_err(|err| anyhow::anyhow!("identity.spiffe[{i}].id: {err}"))?;
            // A literal trust domain is checked as written; the configured
            // one (or a stand-in when it is empty) replaces the placeholder.
            let td = if m.cfg.trust_domain.is_empty() {
                "example.org"
            } else {
                &m.cfg.trust_domain
            };
            let sample = e.id.replace("{trust_domain}", td);
            let sample = fill(&sample, |_| Some("x".into())).unwrap_or(sample);
            anyhow::ensure!(
                e.id.starts_with("spiffe://") && valid_spiffe_id(&sample),
                "identity.spiffe[{i}].id {:?} does not make a valid SPIFFE ID: spiffe://<trust domain>/<segments of letters, digits, '.', '-', '_'>",
                e.id
            );
        }
        Ok(m)
    }

    /// The ID of a pod's service account.
    pub fn for_service_account(&self, namespace: &str, service_account: &str) -> Option<String> {
        if self.cfg.trust_domain.is_empty() || !self.cfg.kubernetes_spiffe_ids {
            return None;
        }
        let id = format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.cfg.trust_domain,
            segment(namespace),
            segment(service_account)
        );
        valid_spiffe_id(&id).then_some(id)
    }

    /// The ID of a process outside Kubernetes, from the first entry whose
    /// conditions hold and whose placeholders all have values.
    pub fn for_process(&self, p: &ProcessInfo) -> Option<String> {
        let exe_name = p.exe.rsplit('/').next().unwrap_or("");
        for e in &self.cfg.spiffe {
            let unit_ok = match (&e.systemd_unit, &p.systemd_unit) {
                (None, _) => true,
                (Some(g), Some(u)) => glob(g, u),
                (Some(_), None) => false,
            };
            let user_ok = match (&e.user, &p.user) {
                (None, _) => true,
                (Some(g), Some(u)) => glob(g, u),
                (Some(_), None) => false,
            };
            let ok = unit_ok
                && user_ok
                && e.uid.is_none_or(|u| u == p.uid)
                && e.exe.as_ref().is_none_or(|g| glob(g, &p.exe));
            if !ok {
                continue;
            }
            let id = fill(&e.id, |name| match name {
                "trust_domain" => (!self.cfg.trust_domain.is_empty()).then(|| self.cfg.trust_domain.clone()),
                "hostname" => Some(self.hostname.clone()),
                "systemd_unit" => p.systemd_unit.as_deref().map(segment),
                "uid" => Some(p.uid.to_string()),
                "user" => p.user.as_deref().map(segment),
                "exe_name" => (!exe_name.is_empty()).then(|| segment(exe_name)),
                _ => None,
            })
            .ok()?;
            if valid_spiffe_id(&id) {
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(unit: Option<&str>, uid: u32, user: Option<&str>, exe: &str) -> ProcessInfo {
        ProcessInfo {
            uid,
            user: user.map(str::to_owned),
            exe: exe.into(),
            systemd_unit: unit.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn grammar() {
        assert!(valid_spiffe_id("spiffe://example.org/ns/a/sa/b"));
        assert!(valid_spiffe_id("spiffe://example.org"));
        for bad in [
            "spiffe://Example.org/x",
            "spiffe://example.org/",
            "spiffe://example.org//x",
            "spiffe://example.org/./x",
            "spiffe://example.org/a%20b",
            "spiffe://example.org/a@b",
            "https://example.org/x",
            "spiffe:///x",
        ] {
            assert!(!valid_spiffe_id(bad), "{bad}");
        }
    }

    #[test]
    fn service_accounts_and_trust_domain() {
        let m = SpiffeMapper::new(IdentityConfig::default(), "node-1").unwrap();
        assert_eq!(
            m.for_service_account("team-a", "mcp-agent").as_deref(),
            Some("spiffe://cluster.local/ns/team-a/sa/mcp-agent")
        );
        let off = SpiffeMapper::new(
            IdentityConfig {
                trust_domain: String::new(),
                ..Default::default()
            },
            "n",
        )
        .unwrap();
        assert_eq!(off.for_service_account("a", "b"), None);
        let e = SpiffeMapper::new(
            IdentityConfig {
                trust_domain: "Bad Domain".into(),
                ..Default::default()
            },
            "n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("trust_domain"), "{e}");
    }

    #[test]
    fn host_mapping_first_match_wins_and_values_are_sanitised() {
        let cfg = IdentityConfig {
            trust_domain: "example.org".into(),
            spiffe: vec![
                SpiffeMapping {
                    systemd_unit: Some("mcp-*.service".into()),
                    id: "spiffe://{trust_domain}/host/{hostname}/unit/{systemd_unit}".into(),
                    ..Default::default()
                },
                SpiffeMapping {
                    uid: Some(1000),
                    id: "spiffe://{trust_domain}/user/{user}".into(),
                    ..Default::default()
                },
                SpiffeMapping {
                    exe: Some("*/python3*".into()),
                    id: "spiffe://{trust_domain}/exe/{exe_name}".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let m = SpiffeMapper::new(cfg, "node 1").unwrap();
        let p = proc(Some("mcp-files@x.service"), 1000, Some("alice"), "/usr/bin/node");
        assert_eq!(
            m.for_process(&p).as_deref(),
            Some("spiffe://example.org/host/node_1/unit/mcp-files_x.service")
        );
        let p = proc(None, 1000, Some("alice"), "/usr/bin/node");
        assert_eq!(m.for_process(&p).as_deref(), Some("spiffe://example.org/user/alice"));
        // uid matches but the user name is unknown: the entry cannot fill
        // {user}, so the next one is tried.
        let p = proc(None, 1000, None, "/usr/bin/python3.11");
        assert_eq!(
            m.for_process(&p).as_deref(),
            Some("spiffe://example.org/exe/python3.11")
        );
        let p = proc(None, 0, Some("root"), "/usr/bin/node");
        assert_eq!(m.for_process(&p), None);
    }

    #[test]
    fn bad_templates_are_refused_with_the_entry_named() {
        for (id, needle) in [
            ("spiffe://{trust_domain}/x/{nope}", "unknown placeholder"),
            ("spiffe://{trust_domain}/x/{uid", "unclosed"),
            ("https://{trust_domain}/x", "valid SPIFFE ID"),
            ("spiffe://{trust_domain}/a b/{uid}", "valid SPIFFE ID"),
        ] {
            let cfg = IdentityConfig {
                spiffe: vec![SpiffeMapping {
                    id: id.into(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let e = SpiffeMapper::new(cfg, "n").unwrap_err().to_string();
            assert!(e.contains("identity.spiffe[0]") && e.contains(needle), "{id}: {e}");
        }
    }
}
