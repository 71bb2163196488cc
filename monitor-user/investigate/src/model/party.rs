//! One end of a session, as the agent's events name it.

use serde_json::Value;

use super::Scrubber;

/// One end of a session, as events name it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Party {
    /// Process id, when the end is a local process.
    pub pid: Option<u64>,
    /// Process start time (with `pid`, unique on the host).
    pub start_time: Option<String>,
    /// Executable path.
    pub exe: Option<String>,
    /// Command name.
    pub comm: Option<String>,
    /// Command line, already scrubbed by the agent and again here.
    pub cmdline: Option<String>,
    /// `serverInfo`/`clientInfo` name.
    pub name: Option<String>,
    /// `serverInfo`/`clientInfo` version.
    pub version: Option<String>,
    /// User name, or uid.
    pub user: Option<String>,
    /// Container id (short).
    pub container: Option<String>,
    /// Kubernetes `namespace/pod`.
    pub pod: Option<String>,
    /// Kubernetes `namespace/service account`.
    pub service_account: Option<String>,
    /// SPIFFE ID.
    pub spiffe_id: Option<String>,
    /// systemd unit.
    pub systemd_unit: Option<String>,
    /// For a remote end over HTTP: its address.
    pub remote: Option<String>,
}

impl Party {
    pub(super) fn from_json(v: Option<&Value>, remote: Option<&str>, scrub: &Scrubber) -> Party {
        let Some(v) = v.filter(|v| v.is_object()) else {
            return Party {
                remote: remote.map(str::to_owned),
                ..Party::default()
            };
        };
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(|x| scrub.name(x));
        let k8s = v.get("kubernetes");
        let ks = |k: &str| k8s.and_then(|o| o.get(k)).and_then(Value::as_str);
        let user = s("user").or_else(|| v.get("uid").and_then(Value::as_u64).map(|u| format!("uid {u}")));
        let cmdline = v.get("cmdline").and_then(Value::as_array).map(|a| {
            let words: Vec<String> = a.iter().filter_map(Value::as_str).map(str::to_owned).collect();
            scrub.command_line(&words)
        });
        Party {
            pid: v.get("pid").and_then(Value::as_u64),
            start_time: s("start_time"),
            exe: s("exe"),
            comm: s("comm"),
            cmdline,
            name: s("name"),
            version: s("version"),
            user,
            container: s("container_id").map(|c| c.chars().take(12).collect()),
            pod: ks("namespace").zip(ks("pod")).map(|(n, p)| format!("{n}/{p}")),
            service_account: ks("namespace")
                .zip(ks("service_account"))
                .map(|(n, a)| format!("{n}/{a}")),
            spiffe_id: s("spiffe_id"),
            systemd_unit: s("systemd_unit"),
            remote: remote.map(str::to_owned),
        }
    }

    /// What the end calls itself, else its command, else its address.
    pub fn label(&self) -> String {
        let base = match (&self.name, &self.comm, &self.exe) {
            (Some(n), _, _) => match &self.version {
                Some(v) => format!("{n} {v}"),
                None => n.clone(),
            },
            (None, Some(c), _) => c.clone(),
            (None, None, Some(e)) => e.rsplit('/').next().unwrap_or(e).to_owned(),
            _ => self.remote.clone().unwrap_or_else(|| "unknown".into()),
        };
        match self.pid {
            Some(p) => format!("{base} [{p}]"),
            None => base,
        }
    }

    /// Who it runs as, in one line: user, then the workload.
    pub fn identity(&self) -> String {
        let mut parts = Vec::new();
        if let Some(u) = &self.user {
            parts.push(format!("user {u}"));
        }
        if let Some(p) = &self.pod {
            parts.push(format!("pod {p}"));
        } else if let Some(c) = &self.container {
            parts.push(format!("container {c}"));
        } else if let Some(u) = &self.systemd_unit {
            parts.push(u.clone());
        }
        if let Some(s) = &self.spiffe_id {
            parts.push(s.clone());
        } else if let Some(sa) = &self.service_account {
            parts.push(format!("sa {sa}"));
        }
        if self.pid.is_none() {
            if let Some(r) = &self.remote {
                parts.push(format!("at {r}"));
            }
        }
        parts.join(" · ")
    }

    /// The same server across restarts, as the detector pins tool
    /// definitions: its command line (else executable, name, address),
    /// with its name in front for people.
    pub fn program(&self) -> String {
        let name = match (&self.name, &self.version) {
            (Some(n), Some(v)) => format!("{n} {v}"),
            (Some(n), None) => n.clone(),
            _ => String::new(),
        };
        let what = self
            .cmdline
            .clone()
            .or_else(|| self.exe.clone())
            .or_else(|| self.remote.clone())
            .unwrap_or_default();
        match (name.is_empty(), what.is_empty()) {
            (false, false) => format!("{name} — {what}"),
            (false, true) => name,
            (true, false) => what,
            (true, true) => "unknown".into(),
        }
    }

    /// Identifies the end across sessions: one node in the graph.
    pub fn key(&self) -> String {
        match (self.pid, &self.start_time) {
            (Some(p), Some(t)) => format!("pid:{p}:{t}"),
            (Some(p), None) => format!("pid:{p}"),
            _ => format!("remote:{}", self.remote.as_deref().unwrap_or("?")),
        }
    }
}
