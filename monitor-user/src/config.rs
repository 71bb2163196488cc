//! Configuration: built-in defaults, overridden by a TOML file, overridden
//! by command-line flags.
//!
//! Every key is optional; `mcp-monitor config check FILE` prints the
//! effective configuration. Unknown keys are errors, so a typo cannot
//! silently leave a default in place.

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::pipeline::PipelineConfig;

/// The whole configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// What the kernel captures (`[capture]`).
    pub capture: CaptureConfig,
    /// Limits of the userspace pipeline (`[pipeline]`).
    pub pipeline: PipelineSettings,
    /// Detection settings (`[detection]`).
    pub detection: DetectionConfig,
    /// Where events, alerts, metrics and recordings go (`[output]`).
    pub output: OutputConfig,
    /// Alert sinks besides `output.alerts_file` (file, syslog, webhook);
    /// live runs only. Reloaded on SIGHUP.
    pub sinks: Vec<crate::deliver::SinkConfig>,
    /// SPIFFE trust domain and mappings for processes outside Kubernetes.
    pub identity: crate::identity::spiffe::IdentityConfig,
    /// The pod watch that names the pod and workload of each process.
    pub kubernetes: crate::pod_watch::KubernetesConfig,
    /// Optional metric labels.
    pub metrics: crate::metrics::MetricsConfig,
}

/// Detection settings (the rules themselves are in the rules file).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DetectionConfig {
    /// Run detection and report alerts (default true; `false` turns the detector off).
    pub enabled: bool,
    /// Remembered tool definitions (rug pulls across restarts) and the
    /// fingerprint key live here.
    pub state_dir: PathBuf,
    /// Operator rules merged over the built-ins (`mcp-monitor rules default`).
    pub rules_file: Option<PathBuf>,
    /// Credential rules in gitleaks' configuration format, added to the
    /// built-in ones (`mcp-monitor rules check FILE` validates one).
    pub extra_rules: Vec<PathBuf>,
    /// Key for secret fingerprints; default `<state_dir>/fingerprint.key`
    /// (created on first start). Share it between hosts to correlate.
    pub fingerprint_key_file: Option<PathBuf>,
    /// Bytes the scanners examine per message at most.
    pub scan_budget_bytes: usize,
    /// Repeats of an alert within this window are counted, then reported
    /// once as a summary.
    pub dedup_window_seconds: u64,
    /// Credentials a server returned are remembered by value (in memory
    /// only) for this long after they were last returned, to recognise
    /// them in later requests whatever surrounds them (`credential.relay`).
    pub relay_memory_seconds: u64,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            state_dir: PathBuf::from("/var/lib/mcp-monitor"),
            rules_file: None,
            extra_rules: Vec::new(),
            fingerprint_key_file: None,
            scan_budget_bytes: 4 << 20,
            dedup_window_seconds: 300,
            relay_memory_seconds: 3600,
        }
    }
}

/// What the kernel captures.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Payload bytes kept per read (larger reads are cut and flagged).
    /// At most 1048576.
    pub capture_cap_bytes: u32,
    /// Zero-configuration discovery of JSON-RPC streams.
    pub discovery: bool,
    /// Bytes at the start of a payload searched for `"jsonrpc"` (<= 1024).
    pub discovery_window_bytes: u32,
    /// Size of the kernel-to-agent ring buffer (power of two).
    pub ring_buffer_bytes: u32,
    /// TLS library reads and writes in flight that the kernel can follow
    /// from the call to its return (`TLS_ARGS`; a thread blocked in
    /// `SSL_read` counts). Until 2026-12-05 this sized the map of TCP
    /// writes marked at their entry, which capture at exit made needless.
    pub max_inflight_syscalls: u32,
    /// The agent drains the ring buffer at least this often; the kernel
    /// wakes it earlier only when `wakeup_bytes` are waiting. Events reach
    /// the output at most this late (their timestamps are the kernel's).
    pub poll_interval_ms: u64,
    /// The kernel wakes the agent at once each time the unread bytes in the
    /// ring cross a multiple of this (0: on every record, lowest latency,
    /// highest CPU). Each wake-up is an inter-processor interrupt on the
    /// traced process's CPU, dear in a VM (an exit to the hypervisor): the
    /// default, an eighth of the default ring, wakes a busy agent every
    /// 5 ms at 400 MB/s, about as often as `poll_interval_ms`, with seven
    /// eighths of the ring to spare.
    pub wakeup_bytes: u32,
    /// Turn on the kernel's run-time accounting of eBPF programs while the
    /// agent runs, for `mcp_monitor_bpf_program_*` metrics. It is global:
    /// every eBPF program on the host then pays ~20 ns per run for it.
    pub program_stats: bool,
    /// How system calls are hooked: `"auto"` (fexit programs on the calls
    /// of interest where the kernel allows them, else the raw `sys_exit`
    /// tracepoint), `"fexit"` (fail at start where the kernel refuses
    /// them) or `"tracepoint"`. The tracepoint puts every system call of
    /// every process on the kernel's slow syscall path and runs a program
    /// for each; the fexit hooks cost only the calls they watch.
    pub syscall_hook: SyscallHookChoice,
    /// Obsolete (the syscall hooks take every call's arguments from the
    /// saved registers): accepted so that configuration files written for
    /// earlier versions still load, warned about at load, never written.
    #[serde(skip_serializing)]
    pub arguments_from_registers: Option<bool>,
    /// Capture TCP connections (MCP over HTTP) of processes that speak MCP:
    /// both directions' payloads; connections that are not MCP over HTTP
    /// leave capture after their first message.
    pub tcp: bool,
    /// Capture TLS plaintext through uprobes on OpenSSL's `SSL_read`,
    /// `SSL_write` (and `_ex`) in every libssl processes load and in the
    /// executables named in `tls_executables`.
    pub tls: bool,
    /// File names of executables that link OpenSSL statically and export
    /// its symbols (`node` does).
    pub tls_executables: Vec<String>,
    /// Which Go programs with `crypto/tls` get probes: `"mcp"`, those whose
    /// strings hold one of MCP's names, `protocolVersion` or a method name (every Go MCP client and server does), or
    /// `"all"`. A probed Go program pays two breakpoint traps per TLS read,
    /// MCP or not; most Go programs on a node (kubelet, containerd, an API
    /// server) are not MCP.
    pub tls_go: TlsGo,
    /// How often processes are scanned for TLS libraries not probed yet
    /// (containers that started, libraries loaded with dlopen).
    pub tls_scan_interval_ms: u64,
    /// Processes captured whether or not their traffic looks like JSON-RPC (default: none).
    pub selectors: Selectors,
    /// Processes whose end of a session is never reported (default: none).
    pub exclude: Exclude,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            capture_cap_bytes: monitor_common::DEFAULT_CAPTURE_CAP,
            discovery: true,
            discovery_window_bytes: monitor_common::DEFAULT_DISCOVERY_WINDOW,
            ring_buffer_bytes: 16 << 20,
            max_inflight_syscalls: 32_768,
            poll_interval_ms: 10,
            wakeup_bytes: 2 << 20,
            program_stats: false,
            syscall_hook: SyscallHookChoice::Auto,
            arguments_from_registers: None,
            tcp: true,
            tls: true,
            tls_executables: vec!["node".into(), "nodejs".into()],
            tls_go: TlsGo::Mcp,
            tls_scan_interval_ms: 2000,
            selectors: Selectors::default(),
            exclude: Exclude::default(),
        }
    }
}

/// How system calls are hooked (`capture.syscall_hook`).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyscallHookChoice {
    /// fexit where the kernel allows it, else the tracepoint.
    #[default]
    Auto,
    /// fexit programs on the system call functions, or fail at start.
    Fexit,
    /// The raw `sys_exit` tracepoint.
    Tracepoint,
}

/// Which Go programs with `crypto/tls` the agent probes (`capture.tls_go`).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsGo {
    /// Only those whose strings hold one of MCP's names.
    #[default]
    Mcp,
    /// Every one.
    All,
}

/// Processes whose end of a session is never reported: their streams are
/// dropped from capture at their first chunk, and the session is seen, if
/// at all, from the other end only (as when that end is on another host).
/// For trusted or noisy local servers, and for testing what the client's
/// end alone shows. An exclusion wins over a selector.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Exclude {
    /// Process ids (in the host's pid namespace; not their children).
    pub pids: Vec<u32>,
    /// Executable names, matched against the kernel task name (the first
    /// 15 bytes of the executable's file name).
    pub executables: Vec<String>,
}

/// Processes captured whether or not their traffic looks like JSON-RPC;
/// their children are captured too.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Selectors {
    /// Process ids captured with their descendants (default empty; `--pid` adds to it).
    pub pids: Vec<u32>,
    /// Executable names, matched against the kernel task name (the first
    /// 15 bytes of the executable's file name).
    pub executables: Vec<String>,
    /// cgroup v2 directories, e.g. `/sys/fs/cgroup/unified/system.slice/mcp.service`
    /// or a path relative to the cgroup v2 mount.
    pub cgroups: Vec<String>,
    /// TCP ports: processes that listen on one (servers) or connect to one
    /// (clients), at `bind`/`connect` or, when already running at start,
    /// found through `/proc/<pid>/net/tcp`.
    pub ports: Vec<u16>,
}

/// Pipeline limits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineSettings {
    /// Longest message (line or HTTP body) in bytes; longer ones are skipped and counted (default 16 MiB).
    pub max_frame_bytes: usize,
    /// Bytes partial messages of all streams may hold together.
    pub max_buffered_bytes: usize,
    /// Deepest array/object nesting accepted in a JSON-RPC message (default 64).
    pub max_json_depth: usize,
    /// Most messages accepted in one JSON-RPC batch (default 256).
    pub max_batch: usize,
    /// Seconds after which an unanswered request is forgotten (default 300).
    pub request_timeout_seconds: u64,
    /// Seconds without traffic after which a session ends (default 1800).
    pub session_idle_seconds: u64,
    /// Streams and HTTP connections the pipeline keeps state for (default 65536); past it the
    /// least recently active are dropped.
    pub max_streams: usize,
    /// Sessions kept at once (default 16384); past it the least recently active end.
    pub max_sessions: usize,
    /// Requests awaiting a response kept per session and direction (default 1024).
    pub max_pending_requests: usize,
    /// Lines or HTTP bodies that are not JSON-RPC a stream or connection
    /// may carry before its first JSON-RPC message.
    pub max_prelude_frames: u32,
    /// Times per minute a stream judged not MCP may be judged afresh.
    pub max_relooks_per_minute: u32,
    /// Milliseconds the first messages of a stream whose session only its
    /// writer can name (a client's inbound pipe) wait for the writer's
    /// notice, which can come after the reader had the bytes (default
    /// 1000; 0 lets them go on at once, without a server).
    pub writer_wait_ms: u64,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        let d = PipelineConfig::default();
        Self {
            max_frame_bytes: d.max_frame,
            max_buffered_bytes: d.max_buffered,
            max_json_depth: d.limits.max_depth,
            max_batch: d.limits.max_batch,
            request_timeout_seconds: d.request_timeout_ns / 1_000_000_000,
            session_idle_seconds: d.session_idle_ns / 1_000_000_000,
            max_streams: d.max_streams,
            max_sessions: d.max_sessions,
            max_pending_requests: d.max_pending,
            max_prelude_frames: d.max_prelude_frames,
            max_relooks_per_minute: d.max_relooks_per_minute,
            writer_wait_ms: d.writer_wait_ns / 1_000_000,
        }
    }
}

/// Where results go.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    /// Events as JSON lines: a file path, or `-` for stdout.
    pub events_file: String,
    /// Alerts as JSON lines: a file path, or `-` for stdout.
    pub alerts_file: String,
    /// Include each message (secrets redacted) in its event.
    pub payloads: bool,
    /// Address of the Prometheus endpoint.
    pub metrics_addr: SocketAddr,
    /// Write raw observations to this file for `mcp-monitor replay`.
    pub record_file: Option<PathBuf>,
    /// Events and alerts files rotate before passing this size (0: never)...
    pub rotate_bytes: u64,
    /// ...keeping this many rotated files (`<file>.1` is the newest).
    pub rotate_files: u32,
    /// When events and alerts files are forced to disk: `never`,
    /// `interval` (at most once a second) or `always` (every line).
    pub fsync: crate::deliver::Fsync,
}

impl OutputConfig {
    /// Rotation and sync settings of the events and alerts files.
    pub fn file_policy(&self) -> crate::output::FilePolicy {
        crate::output::FilePolicy {
            rotate_bytes: self.rotate_bytes,
            rotate_files: self.rotate_files,
            fsync: self.fsync,
        }
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            events_file: "-".into(),
            alerts_file: "-".into(),
            payloads: false,
            metrics_addr: "127.0.0.1:9464".parse().unwrap(),
            record_file: None,
            rotate_bytes: 100 << 20,
            rotate_files: 5,
            fsync: crate::deliver::Fsync::Interval,
        }
    }
}

impl Config {
    /// Reads a TOML file; errors name the file and the offending key.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read configuration {}: {e}", path.display()))?;
        let cfg: Config =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("configuration {} is invalid: {e}", path.display()))?;
        cfg.validate()?;
        for w in cfg.obsolete_keys() {
            log::warn!("configuration {}: {w}", path.display());
        }
        Ok(cfg)
    }

    /// What the configuration sets that no longer has an effect.
    pub fn obsolete_keys(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.capture.arguments_from_registers.is_some() {
            out.push(
                "capture.arguments_from_registers has no effect any more (every call's arguments come from \
                 the saved registers the syscall hook is passed): remove it",
            );
        }
        out
    }

    /// Checks values that TOML types cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        let c = &self.capture;
        anyhow::ensure!(
            (1..=monitor_common::MAX_CAPTURE as u32).contains(&c.capture_cap_bytes),
            "capture.capture_cap_bytes must be between 1 and {} (got {})",
            monitor_common::MAX_CAPTURE,
            c.capture_cap_bytes
        );
        anyhow::ensure!(
            (16..=monitor_common::MAX_DISCOVERY_WINDOW as u32).contains(&c.discovery_window_bytes),
            "capture.discovery_window_bytes must be between 16 and {} (got {})",
            monitor_common::MAX_DISCOVERY_WINDOW,
            c.discovery_window_bytes
        );
        anyhow::ensure!(
            c.ring_buffer_bytes.is_power_of_two() && c.ring_buffer_bytes >= 1 << 16,
            "capture.ring_buffer_bytes must be a power of two of at least 65536 (got {})",
            c.ring_buffer_bytes
        );
        anyhow::ensure!(
            c.ring_buffer_bytes as usize > 2 * (monitor_common::SCRATCH_SIZE.min(c.capture_cap_bytes as usize + 256)),
            "capture.ring_buffer_bytes must hold at least two full chunks: raise it above {}",
            2 * (c.capture_cap_bytes as usize + 256)
        );
        anyhow::ensure!(
            (1..=1000).contains(&c.poll_interval_ms),
            "capture.poll_interval_ms must be between 1 and 1000 (got {})",
            c.poll_interval_ms
        );
        anyhow::ensure!(
            c.tls_scan_interval_ms >= 100,
            "capture.tls_scan_interval_ms must be at least 100 (got {}): each scan reads every process's memory map",
            c.tls_scan_interval_ms
        );
        for e in &c.tls_executables {
            anyhow::ensure!(
                !e.is_empty() && !e.contains('/'),
                "capture.tls_executables holds {e:?}: give file names (\"node\"), not paths"
            );
        }
        anyhow::ensure!(
            c.wakeup_bytes < c.ring_buffer_bytes / 2,
            "capture.wakeup_bytes ({}) must be below half of capture.ring_buffer_bytes ({}): set it to {} (an eighth of the ring)",
            c.wakeup_bytes,
            c.ring_buffer_bytes,
            c.ring_buffer_bytes / 8
        );
        if c.selectors.ports.contains(&0) {
            anyhow::bail!("capture.selectors.ports: 0 is not a port; list the TCP ports MCP servers listen on");
        }
        for e in &c.selectors.executables {
            anyhow::ensure!(
                !e.is_empty() && !e.contains('/'),
                "capture.selectors.executables: {e:?} must be a file name, not a path"
            );
        }
        anyhow::ensure!(
            self.detection.scan_budget_bytes >= 4096,
            "detection.scan_budget_bytes must be at least 4096"
        );
        let p = &self.pipeline;
        anyhow::ensure!(
            p.max_frame_bytes >= 1024,
            "pipeline.max_frame_bytes must be at least 1024"
        );
        anyhow::ensure!(
            p.max_buffered_bytes >= p.max_frame_bytes,
            "pipeline.max_buffered_bytes ({}) must be at least pipeline.max_frame_bytes ({}), or no message of the largest size could be held",
            p.max_buffered_bytes,
            p.max_frame_bytes
        );
        anyhow::ensure!(
            (2..=1000).contains(&p.max_json_depth),
            "pipeline.max_json_depth must be between 2 and 1000"
        );
        anyhow::ensure!(
            p.max_streams >= 16 && p.max_sessions >= 16,
            "pipeline.max_streams and max_sessions must be at least 16"
        );
        anyhow::ensure!(
            p.writer_wait_ms <= 60_000,
            "pipeline.writer_wait_ms must be at most 60000 (got {}): messages wait that long for a notice that normally comes within milliseconds",
            p.writer_wait_ms
        );
        anyhow::ensure!(
            p.session_idle_seconds.saturating_mul(1000) > p.writer_wait_ms,
            "pipeline.session_idle_seconds ({} s) must be longer than pipeline.writer_wait_ms ({} ms): streams idle that long are forgotten, with what waits on them",
            p.session_idle_seconds,
            p.writer_wait_ms
        );
        crate::identity::spiffe::SpiffeMapper::new(self.identity.clone(), "host")?;
        anyhow::ensure!(
            self.metrics.max_workload_label_values >= 1,
            "metrics.max_workload_label_values must be at least 1"
        );
        for l in &self.kubernetes.labels {
            anyhow::ensure!(!l.is_empty(), "kubernetes.labels: label keys must not be empty");
        }
        let mut names = Vec::new();
        for (i, s) in self.sinks.iter().enumerate() {
            s.validate(i).map_err(|e| anyhow::anyhow!("sinks[{i}]: {e}"))?;
            let n = s.name(i);
            anyhow::ensure!(!names.contains(&n), "sinks: two sinks are named {n:?}");
            names.push(n);
        }
        Ok(())
    }

    /// The effective detection rules: built-ins plus `rules_file`, plus
    /// the credential rules of the `extra_rules` files.
    pub fn rules(&self) -> anyhow::Result<crate::detect::rules::Rules> {
        let rules = match &self.detection.rules_file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read rules file {}: {e}", p.display()))?;
                crate::detect::rules::Rules::with_file(&text, &p.display().to_string())?
            }
            None => crate::detect::rules::Rules::builtin(),
        };
        let mut files = Vec::new();
        for p in &self.detection.extra_rules {
            let text = std::fs::read_to_string(p).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read extra rules file {} ([detection] extra_rules): {e}",
                    p.display()
                )
            })?;
            files.push((p.display().to_string(), text));
        }
        let rules = rules.with_extra_credential_rules(&files)?;
        for w in &rules.extra_credential_rules.warnings {
            log::warn!("{w}");
        }
        Ok(rules)
    }

    /// The detector's settings. `persistent`: a live run, with the
    /// fingerprint key in the state directory (the agent adds the tool
    /// state: [`crate::state_dir::open_tool_state`]). `None` when detection
    /// is off.
    pub fn detector_config(&self, persistent: bool) -> anyhow::Result<Option<crate::detect::DetectorConfig>> {
        let d = &self.detection;
        if !d.enabled {
            return Ok(None);
        }
        let fingerprint_key = match (&d.fingerprint_key_file, persistent) {
            (Some(f), _) => {
                std::fs::read(f).map_err(|e| anyhow::anyhow!("cannot read fingerprint key {}: {e}", f.display()))?
            }
            (None, true) => crate::state_dir::load_or_create_key(&d.state_dir)?,
            // Replays: the deployment's key if it can be read, else a random
            // one (fingerprints then differ from the live run's).
            (None, false) => match std::fs::read(d.state_dir.join("fingerprint.key")) {
                Ok(k) if k.len() >= 16 => k,
                _ => {
                    let mut k = vec![0u8; 32];
                    // SAFETY: valid buffer and length.
                    unsafe { libc::getrandom(k.as_mut_ptr().cast(), k.len(), 0) };
                    k
                }
            },
        };
        Ok(Some(crate::detect::DetectorConfig {
            rules: self.rules()?,
            fingerprint_key,
            persisted_tools: None,
            scan_budget_bytes: d.scan_budget_bytes,
            dedup_window_seconds: d.dedup_window_seconds,
            relay_memory_seconds: d.relay_memory_seconds,
        }))
    }

    /// Pipeline settings in the form the pipeline takes.
    pub fn pipeline_config(&self, boot_offset_ns: i128) -> PipelineConfig {
        let p = &self.pipeline;
        PipelineConfig {
            max_frame: p.max_frame_bytes,
            max_buffered: p.max_buffered_bytes,
            limits: crate::jsonrpc::Limits {
                max_depth: p.max_json_depth,
                max_batch: p.max_batch,
            },
            payloads: self.output.payloads,
            boot_offset_ns,
            max_streams: p.max_streams,
            max_sessions: p.max_sessions,
            max_pending: p.max_pending_requests,
            request_timeout_ns: p.request_timeout_seconds * 1_000_000_000,
            session_idle_ns: p.session_idle_seconds * 1_000_000_000,
            max_prelude_frames: p.max_prelude_frames,
            max_relooks_per_minute: p.max_relooks_per_minute,
            writer_wait_ns: p.writer_wait_ms * 1_000_000,
            discovery_window: self.capture.discovery_window_bytes as usize,
            identity: self.identity.clone(),
            exclude: crate::pipeline::Exclusions::new(&self.capture.exclude.pids, &self.capture.exclude.executables),
            ..PipelineConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_roundtrip() {
        let c = Config::default();
        c.validate().unwrap();
        let text = toml::to_string(&c).unwrap();
        assert_eq!(toml::from_str::<Config>(&text).unwrap(), c);
    }

    #[test]
    fn partial_files_keep_other_defaults() {
        let c: Config = toml::from_str("[capture.selectors]\nexecutables = [\"node\"]\n").unwrap();
        assert_eq!(c.capture.selectors.executables, ["node"]);
        assert_eq!(c.capture.capture_cap_bytes, monitor_common::DEFAULT_CAPTURE_CAP);
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let e = toml::from_str::<Config>("[capture]\ncapture_cap = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("capture_cap"), "{e}");
        let mut c = Config::default();
        c.capture.capture_cap_bytes = 2 << 20;
        assert!(c.validate().unwrap_err().to_string().contains("capture_cap_bytes"));
        let mut c = Config::default();
        c.capture.ring_buffer_bytes = 3 << 20;
        assert!(c.validate().unwrap_err().to_string().contains("power of two"));
        // A smaller ring with the default wake-up mark: the error gives
        // the value to set.
        let mut c = Config::default();
        c.capture.ring_buffer_bytes = 4 << 20;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("wakeup_bytes") && e.contains("set it to 524288"), "{e}");
        c.capture.wakeup_bytes = 524_288;
        c.validate().unwrap();
        let mut c = Config::default();
        c.pipeline.writer_wait_ms = 120_000;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("writer_wait_ms must be at most 60000"));
        c.pipeline.writer_wait_ms = 0;
        c.validate().unwrap();
        assert_eq!(c.pipeline_config(0).writer_wait_ns, 0);
        assert_eq!(Config::default().pipeline_config(0).writer_wait_ns, 1_000_000_000);
        let mut c = Config::default();
        c.pipeline.session_idle_seconds = 10;
        c.pipeline.writer_wait_ms = 10_000;
        assert!(c.validate().unwrap_err().to_string().contains("session_idle_seconds"));
    }

    #[test]
    fn obsolete_keys_load_with_a_warning_and_are_not_written() {
        let c: Config = toml::from_str("[capture]\narguments_from_registers = false\n").unwrap();
        c.validate().unwrap();
        let w = c.obsolete_keys();
        assert!(
            w.len() == 1 && w[0].contains("arguments_from_registers") && w[0].contains("remove it"),
            "{w:?}"
        );
        assert!(Config::default().obsolete_keys().is_empty());
        assert!(!toml::to_string(&c).unwrap().contains("arguments_from_registers"));
    }
}
