//! The `[[sinks]]` settings: one table per sink, of type `file`, `syslog`
//! or `webhook`, with the defaults the README lists.

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::{http, syslog};
use crate::detect::alert::Severity;

/// How an alert is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The alert as documented in the README (one JSON object).
    #[default]
    Json,
    /// OCSF 1.8: Detection Finding (2004) or Data Security Finding (2006).
    Ocsf,
    /// ArcSight Common Event Format (syslog sinks).
    Cef,
}

/// When a file sink forces its data to disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// Never explicitly: the kernel writes back (within ~30 s); a host crash
    /// can lose the last alerts, an agent crash cannot.
    Never,
    /// At most once a second, when something was written.
    #[default]
    Interval,
    /// After every alert (slowest; for low-volume, high-value outputs).
    Always,
}

fn default_max_bytes() -> u64 {
    100 << 20
}
fn default_max_files() -> u32 {
    5
}

/// `type = "file"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSink {
    /// Sink name, the `sink` label of its metrics; default `<type>-<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// File the alerts are appended to (created with mode 0640).
    pub path: PathBuf,
    /// `json` (default) or `ocsf`.
    #[serde(default)]
    pub format: Format,
    /// Deliver only alerts at least this severe; `None` (default): all alerts.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// Rotate when the file would pass this size (0: never).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept (`path.1` newest ... `path.N`).
    #[serde(default = "default_max_files")]
    pub max_files: u32,
    /// When the file is forced to disk (default `interval`).
    #[serde(default)]
    pub fsync: Fsync,
}

/// Syslog transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyslogProtocol {
    /// One RFC 5424 message per UDP datagram.
    Udp,
    /// TCP with octet-counting framing (RFC 6587); the default.
    #[default]
    Tcp,
    /// TLS (RFC 5425), verified against `ca_file` or the system CA bundle.
    Tls,
}

fn default_facility() -> String {
    "local0".into()
}
fn default_app_name() -> String {
    "mcp-monitor".into()
}
fn default_queue() -> usize {
    10_000
}

/// `type = "syslog"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSink {
    /// Sink name, the `sink` label of its metrics; default `<type>-<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// `host:port` (514 for UDP/TCP, 6514 for TLS by convention).
    pub address: String,
    /// Transport: `udp`, `tcp` (default) or `tls`.
    #[serde(default)]
    pub protocol: SyslogProtocol,
    /// `json` or `cef`.
    #[serde(default)]
    pub format: Format,
    /// Deliver only alerts at least this severe; `None` (default): all alerts.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// Syslog facility name, combined with the alert severity into PRI (default `local0`).
    #[serde(default = "default_facility")]
    pub facility: String,
    /// APP-NAME field of each message (default `mcp-monitor`).
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// CA bundle (PEM) for TLS; default: the system bundle.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name the TLS certificate must carry; default: the host of `address`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Alerts held in memory while the receiver is unreachable.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

/// Body layout of a webhook batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    /// A JSON array of alerts.
    #[default]
    Generic,
    /// Splunk HTTP Event Collector (`/services/collector/event`): one
    /// `{"time","sourcetype","event"}` object per alert.
    SplunkHec,
    /// Elasticsearch `_bulk`: an `index` action (document id = alert id, so
    /// a redelivery overwrites instead of duplicating) and the document.
    ElasticBulk,
}

fn default_batch() -> usize {
    500
}
fn default_timeout() -> u64 {
    10
}
fn default_spool_bytes() -> u64 {
    256 << 20
}
fn default_index() -> String {
    "mcp-monitor-alerts".into()
}

/// `type = "webhook"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSink {
    /// Sink name, the `sink` label of its metrics; default `<type>-<index>`. Also names the default spool directory.
    #[serde(default)]
    pub name: Option<String>,
    /// `http://` or `https://` URL.
    pub url: String,
    /// `json` (default) or `ocsf`.
    #[serde(default)]
    pub format: Format,
    /// Body layout of a batch (default `generic`, a JSON array).
    #[serde(default)]
    pub flavor: Flavor,
    /// Deliver only alerts at least this severe; `None` (default): all alerts.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// Extra request headers (`Authorization = "Splunk ${HEC_TOKEN}"`);
    /// `${VAR}` is replaced from the environment. Printed masked.
    #[serde(default, serialize_with = "mask_values")]
    pub headers: BTreeMap<String, String>,
    /// Most alerts per POST (default 500; at least 1).
    #[serde(default = "default_batch")]
    pub batch_max: usize,
    /// Bound in seconds on each connect, read and write of a request (default 10, at least 1).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Default: `<detection.state_dir>/spool/<name>`.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// Size cap of the on-disk spool in bytes (default 256 MiB); when full the oldest segment is dropped.
    #[serde(default = "default_spool_bytes")]
    pub spool_max_bytes: u64,
    /// When spooled alerts are forced to disk (an agent crash loses none of
    /// them whatever this says; a host crash loses up to the last second
    /// with `interval`, none with `always`).
    #[serde(default)]
    pub fsync: Fsync,
    /// CA bundle (PEM) for an `https` URL; default: the system bundle.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Index for `elastic_bulk`.
    #[serde(default = "default_index")]
    pub index: String,
}

fn mask_values<S: serde::Serializer>(m: &BTreeMap<String, String>, s: S) -> Result<S::Ok, S::Error> {
    let masked: BTreeMap<&String, &str> = m.keys().map(|k| (k, "<hidden>")).collect();
    masked.serialize(s)
}

/// One `[[sinks]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    /// `type = "file"`: JSON or OCSF lines to a rotated file.
    File(FileSink),
    /// `type = "syslog"`: RFC 5424 messages over UDP, TCP or TLS.
    Syslog(SyslogSink),
    /// `type = "webhook"`: HTTP(S) POST of batches read from an on-disk spool.
    Webhook(WebhookSink),
}

impl SinkConfig {
    /// The configured name, or `<type>-<index>`.
    pub fn name(&self, index: usize) -> String {
        let (n, t) = match self {
            SinkConfig::File(s) => (&s.name, "file"),
            SinkConfig::Syslog(s) => (&s.name, "syslog"),
            SinkConfig::Webhook(s) => (&s.name, "webhook"),
        };
        n.clone().unwrap_or_else(|| format!("{t}-{index}"))
    }

    pub(crate) fn min_severity(&self) -> Option<Severity> {
        match self {
            SinkConfig::File(s) => s.min_severity,
            SinkConfig::Syslog(s) => s.min_severity,
            SinkConfig::Webhook(s) => s.min_severity,
        }
    }

    /// Checks what can be checked without connecting.
    pub fn validate(&self, index: usize) -> anyhow::Result<()> {
        let name = self.name(index);
        anyhow::ensure!(
            !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "sink name {name:?}: use 1-64 letters, digits, '-', '_' or '.'"
        );
        match self {
            SinkConfig::File(s) => {
                anyhow::ensure!(s.format != Format::Cef, "sink {name}: file sinks write json or ocsf");
            }
            SinkConfig::Syslog(s) => {
                anyhow::ensure!(s.format != Format::Ocsf, "sink {name}: syslog sinks write json or cef");
                syslog::facility_code(&s.facility)
                    .ok_or_else(|| anyhow::anyhow!("sink {name}: unknown syslog facility {:?} (kern, user, daemon, auth, authpriv, local0..local7...)", s.facility))?;
                anyhow::ensure!(
                    s.address
                        .rsplit_once(':')
                        .is_some_and(|(_, p)| p.parse::<u16>().is_ok()),
                    "sink {name}: address {:?} must be host:port",
                    s.address
                );
            }
            SinkConfig::Webhook(s) => {
                anyhow::ensure!(s.format != Format::Cef, "sink {name}: webhook sinks write json or ocsf");
                http::Url::parse(&s.url).map_err(|e| anyhow::anyhow!("sink {name}: {e}"))?;
                anyhow::ensure!(s.batch_max >= 1, "sink {name}: batch_max must be at least 1");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_config_parses_and_validates() {
        #[derive(Deserialize)]
        struct F {
            sinks: Vec<SinkConfig>,
        }
        let f: F = toml::from_str(
            r#"
            [[sinks]]
            type = "webhook"
            name = "siem"
            url = "https://hec.example:8088/services/collector/event"
            flavor = "splunk_hec"
            headers = { Authorization = "Splunk ${HEC_TOKEN}" }

            [[sinks]]
            type = "syslog"
            address = "127.0.0.1:6514"
            protocol = "tls"
            format = "cef"

            [[sinks]]
            type = "file"
            path = "/var/log/mcp-monitor/alerts.ocsf.jsonl"
            format = "ocsf"
            min_severity = "high"
            "#,
        )
        .unwrap();
        assert_eq!(f.sinks.len(), 3);
        for (i, s) in f.sinks.iter().enumerate() {
            s.validate(i).unwrap();
        }
        assert_eq!(f.sinks[1].name(1), "syslog-1");
        // Header values never print.
        let shown = toml::to_string(&f.sinks[0]).unwrap();
        assert!(shown.contains("<hidden>") && !shown.contains("HEC_TOKEN"), "{shown}");
        // Typos are errors.
        assert!(toml::from_str::<F>("[[sinks]]\ntype = \"file\"\npath = \"/x\"\nrotate = 1\n").is_err());
        assert!(toml::from_str::<F>("[[sinks]]\ntype = \"kafka\"\n").is_err());
        let bad = SinkConfig::Syslog(SyslogSink {
            facility: "local9".into(),
            ..toml::from_str("address = \"h:514\"").unwrap()
        });
        assert!(bad.validate(0).unwrap_err().to_string().contains("facility"));
    }
}
