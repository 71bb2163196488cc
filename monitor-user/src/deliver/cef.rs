//! Alerts in ArcSight Common Event Format (CEF:0), for syslog receivers.
//!
//! `CEF:0|mcp-monitor|mcp-monitor|<version>|<rule>|<summary>|<0-10>|<extension>`
//! with header fields escaping `\` and `|`, extension values escaping `\`,
//! `=` and line breaks. Extension keys: `rt` (ms since the epoch),
//! `externalId` (alert id), `cat` (category), `cnt` (repeats),
//! `sproc`/`spid`/`suser` (the MCP client), `dproc`/`dpid`/`duser` (the
//! server), `cs1` session, `cs2` server name, `cs3` client name, `cs4` tool,
//! `cs5` credential rule ids and fingerprints (never the secrets), `cs6` the
//! redacted evidence as JSON, each with its `csNLabel`.

use crate::{
    detect::alert::{Alert, Severity},
    event::Party,
};

fn header(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|").replace(['\r', '\n'], " ")
}

fn value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\r', "\\r")
        .replace('\n', "\\n")
}

/// CEF severity (0-10).
fn severity(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

fn party(ext: &mut Vec<(&'static str, String)>, p: &Party, keys: [&'static str; 3]) {
    if let Some(info) = &p.process {
        ext.push((keys[0], info.exe.clone()));
        ext.push((keys[1], info.pid.to_string()));
        ext.push((keys[2], info.user.clone().unwrap_or_else(|| info.uid.to_string())));
    } else if let Some(pid) = p.pid {
        ext.push((keys[1], pid.to_string()));
    }
}

/// The alert as one CEF line.
pub fn encode(a: &Alert) -> String {
    let mut ext: Vec<(&'static str, String)> = vec![
        ("rt", ((a.time / 1_000_000) as i64).to_string()),
        ("externalId", a.id.clone()),
        ("cat", a.category.as_str().to_owned()),
        ("cnt", a.count.to_string()),
    ];
    party(&mut ext, &a.client, ["sproc", "spid", "suser"]);
    party(&mut ext, &a.server, ["dproc", "dpid", "duser"]);
    let mut custom = |n: u8, label: &'static str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            let (k, l) = match n {
                1 => ("cs1", "cs1Label"),
                2 => ("cs2", "cs2Label"),
                3 => ("cs3", "cs3Label"),
                4 => ("cs4", "cs4Label"),
                5 => ("cs5", "cs5Label"),
                _ => ("cs6", "cs6Label"),
            };
            ext.push((k, v));
            ext.push((l, label.to_owned()));
        }
    };
    custom(1, "session", Some(a.session.to_string()));
    custom(2, "serverName", a.server.name.as_deref().map(str::to_owned));
    custom(3, "clientName", a.client.name.as_deref().map(str::to_owned));
    custom(4, "tool", a.evidence["tool"].as_str().map(str::to_owned));
    let findings: Vec<String> = a.evidence["findings"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter_map(|f| Some(format!("{}:{}", f["rule"].as_str()?, f["fingerprint"].as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    custom(5, "credentials", Some(findings.join(",")));
    custom(6, "evidence", Some(a.evidence.to_string()));
    let mut out = format!(
        "CEF:0|mcp-monitor|mcp-monitor|{}|{}|{}|{}|",
        header(env!("CARGO_PKG_VERSION")),
        header(&a.rule),
        header(&a.summary),
        severity(a.severity)
    );
    for (i, (k, v)) in ext.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(&value(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::testing;

    /// Splits a CEF line into its 7 header fields and extension pairs,
    /// honouring the escapes (the way a receiver parses it).
    fn parse(line: &str) -> (Vec<String>, Vec<(String, String)>) {
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while fields.len() < 7 {
            match chars.next().unwrap() {
                '\\' => cur.push(chars.next().unwrap()),
                '|' => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        let rest: String = chars.collect();
        // Keys are the words before an unescaped '='.
        let mut pairs = Vec::new();
        let mut key = String::new();
        let mut val = String::new();
        let mut in_key = true;
        let mut it = rest.chars().peekable();
        while let Some(c) = it.next() {
            match (in_key, c) {
                (true, '=') => in_key = false,
                (true, c) => key.push(c),
                (false, '\\') => match it.next().unwrap() {
                    'n' => val.push('\n'),
                    'r' => val.push('\r'),
                    c => val.push(c),
                },
                (false, ' ') => {
                    // A space ends the value only when a key= follows.
                    let ahead: String = it.clone().take_while(|c| *c != ' ' && *c != '=').collect();
                    let next_is_key = it.clone().nth(ahead.chars().count()) == Some('=') && !ahead.is_empty();
                    if next_is_key {
                        pairs.push((std::mem::take(&mut key), std::mem::take(&mut val)));
                        in_key = true;
                    } else {
                        val.push(' ');
                    }
                }
                (false, c) => val.push(c),
            }
        }
        pairs.push((key, val));
        (fields, pairs)
    }

    #[test]
    fn escapes_and_fields() {
        let mut a = testing::alert(3, Severity::High);
        a.summary = "pipe | and back\\slash = equals\nnewline".into();
        let line = encode(&a);
        assert!(!line.contains('\n'));
        let (h, ext) = parse(&line);
        assert_eq!(h[0], "CEF:0");
        assert_eq!(h[4], "credential.exposure");
        assert_eq!(h[5], "pipe | and back\\slash = equals newline");
        assert_eq!(h[6], "8");
        let get = |k: &str| ext.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
        assert_eq!(get("externalId").unwrap(), "alert-000003");
        assert_eq!(
            get("cs5").unwrap(),
            "github-pat-classic:hmac-sha256:00112233445566778899aabbccddeeff"
        );
        let evidence: serde_json::Value = serde_json::from_str(&get("cs6").unwrap()).unwrap();
        assert_eq!(evidence, a.evidence);
    }
}
