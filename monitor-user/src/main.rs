//! The `mcp-monitor` command.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use mcp_monitor::{agent, config::Config, metrics::Metrics};

/// Host-level monitor for MCP (Model Context Protocol) traffic, captured
/// from the kernel with eBPF. Run `mcp-monitor run` as root.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Capture MCP traffic on this host and write events (needs root).
    Run(RunArgs),
    /// Run the pipeline over a recording made with `run --record` (no root).
    Replay(ReplayArgs),
    /// Check that the agent loads and attaches on this kernel, and print
    /// what each eBPF program costs the verifier (needs root).
    Check(CheckArgs),
    /// Attach programs that do nothing to the syscall tracepoint `run`
    /// uses and to OpenSSL's functions in the host's libssl files, until
    /// interrupted: the price of the hooks alone, which
    /// `cargo xtask bench host` compares the agent with; with
    /// `--copy-reads`, the price of the least a capture does (needs root).
    #[command(hide = true)]
    Floor(FloorArgs),
    /// Live terminal view of sessions, tools and alerts, from the agent's
    /// events and alerts files (or `-`: a pipe from `mcp-monitor run`).
    Top(TopArgs),
    /// Write one self-contained HTML investigation report (graph of agents,
    /// servers and tools; timeline per session; alerts linked to their
    /// messages; tool definitions) from events and alerts files or a recording.
    Report(ReportArgs),
    /// Inspect configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect detection rules.
    #[command(subcommand)]
    Rules(RulesCommand),
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Print the built-in rules file (chaining rules, thresholds, examples).
    Default,
    /// List the credential rules.
    Credentials,
    /// Validate a rules file and print the effective chaining rules; or,
    /// for a gitleaks configuration, the credential rules it adds.
    Check { file: PathBuf },
}

#[derive(Args, Clone)]
struct CommonArgs {
    /// Configuration file (TOML). Built-in defaults apply without one.
    #[arg(long, env = "MCP_MONITOR_CONFIG")]
    config: Option<PathBuf>,
    /// Where to write events (JSON lines): a file, or - for stdout.
    #[arg(long, env = "MCP_MONITOR_EVENTS_FILE")]
    events_file: Option<String>,
    /// Include each message, secrets redacted, in its event.
    #[arg(long)]
    payloads: bool,
    /// Where to write alerts (JSON lines): a file, or - for stdout.
    #[arg(long, env = "MCP_MONITOR_ALERTS_FILE")]
    alerts_file: Option<String>,
    /// Detection state directory (tool definitions, fingerprint key).
    #[arg(long, env = "MCP_MONITOR_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Detection rules file merged over the built-in rules.
    #[arg(long = "rules", env = "MCP_MONITOR_RULES")]
    rules_file: Option<PathBuf>,
    /// Turn detection off (events only).
    #[arg(long)]
    no_detection: bool,
}

#[derive(Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address of the Prometheus endpoint (/metrics, /healthz, /readyz).
    #[arg(long, env = "MCP_MONITOR_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Also write everything captured to FILE, for `mcp-monitor replay`.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Capture this process and its children (repeatable).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Never report this process's end of any session (repeatable); see
    /// `capture.exclude`.
    #[arg(long = "exclude-pid")]
    exclude_pids: Vec<u32>,
    /// Capture processes with this executable name, and their children (repeatable).
    #[arg(long = "exe")]
    executables: Vec<String>,
    /// Capture processes in this cgroup v2 directory (repeatable).
    #[arg(long = "cgroup")]
    cgroups: Vec<String>,
    /// Capture processes that listen on or connect to this TCP port (repeatable).
    #[arg(long = "port")]
    ports: Vec<u16>,
    /// Capture only selected processes: no zero-configuration discovery.
    #[arg(long)]
    no_discovery: bool,
}

#[derive(Args)]
struct ReplayArgs {
    /// A recording written by `mcp-monitor run --record FILE`.
    file: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
struct TopArgs {
    /// Files to follow: the agent's events and alerts files (one file with
    /// both works too), or - for standard input. Default: the files of the
    /// configuration (`output.events_file`, `output.alerts_file`).
    files: Vec<PathBuf>,
    /// Configuration whose output files to follow when none are given.
    #[arg(long, env = "MCP_MONITOR_CONFIG")]
    config: Option<PathBuf>,
    /// Show only what happens from now on (skip what the files hold).
    #[arg(long)]
    from_end: bool,
    /// Print plain-text snapshots even on a terminal (the default when
    /// standard output is not one).
    #[arg(long, short = 'b')]
    batch: bool,
    /// Seconds between plain-text snapshots.
    #[arg(long, short = 'd', default_value_t = 2.0)]
    interval: f64,
    /// Plain-text snapshots to print before leaving (0: until interrupted).
    #[arg(long, short = 'n', default_value_t = 1)]
    iterations: u64,
    /// Start with this minimum alert severity (info, low, medium, high, critical).
    #[arg(long)]
    severity: Option<String>,
}

#[derive(Args)]
struct ReportArgs {
    /// The agent's events and alerts files (JSON lines; one file with both
    /// works too; - for standard input).
    files: Vec<PathBuf>,
    /// Report on a recording instead: the pipeline runs over it (as
    /// `replay --payloads` does) and the report is made of what it finds.
    #[arg(long, conflicts_with = "files")]
    recording: Option<PathBuf>,
    /// The agent's state directory: its pinned tool definitions are listed;
    /// with --recording, its fingerprint key is used, so fingerprints match
    /// the live alerts (nothing in it is changed).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Configuration for --recording (detection rules, labels).
    #[arg(long, env = "MCP_MONITOR_CONFIG")]
    config: Option<PathBuf>,
    /// Where to write the report.
    #[arg(long, short = 'o', default_value = "report.html")]
    output: PathBuf,
}

#[derive(Args)]
struct CheckArgs {
    /// Configuration file (TOML); its `[capture]` section decides what is loaded.
    #[arg(long, env = "MCP_MONITOR_CONFIG")]
    config: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct FloorArgs {
    /// Configuration file (TOML); its `[capture]` section decides where the agent would hook.
    #[arg(long, env = "MCP_MONITOR_CONFIG")]
    config: Option<PathBuf>,
    /// The copy floor instead: put every `read` of the processes of this
    /// name (comm) in the ring, one copy and nothing else, and read every
    /// byte back; print what was read as JSON on exit.
    #[arg(long, value_name = "NAME")]
    copy_reads: Option<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and print the effective configuration.
    Check { file: PathBuf },
    /// Print the built-in default configuration.
    Default,
}

/// The configuration of `run`: file, common flags, then run's own flags.
fn run_config(a: &RunArgs) -> anyhow::Result<Config> {
    let mut cfg = load(&a.common)?;
    if let Some(m) = a.metrics_addr {
        cfg.output.metrics_addr = m;
    }
    if let Some(r) = &a.record {
        cfg.output.record_file = Some(r.clone());
    }
    cfg.capture.selectors.pids.extend(&a.pids);
    cfg.capture.exclude.pids.extend(&a.exclude_pids);
    cfg.capture.selectors.executables.extend(a.executables.iter().cloned());
    cfg.capture.selectors.cgroups.extend(a.cgroups.iter().cloned());
    cfg.capture.selectors.ports.extend(&a.ports);
    if a.no_discovery {
        cfg.capture.discovery = false;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn load(common: &CommonArgs) -> anyhow::Result<Config> {
    let mut cfg = match &common.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(e) = &common.events_file {
        cfg.output.events_file = e.clone();
    }
    if common.payloads {
        cfg.output.payloads = true;
    }
    if let Some(a) = &common.alerts_file {
        cfg.output.alerts_file = a.clone();
    }
    if let Some(d) = &common.state_dir {
        cfg.detection.state_dir = d.clone();
    }
    if let Some(r) = &common.rules_file {
        cfg.detection.rules_file = Some(r.clone());
    }
    if common.no_detection {
        cfg.detection.enabled = false;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn print_check(r: &agent::CheckReport) {
    println!(
        "kernel {}: every program loaded and attached in {:.1} s",
        r.kernel, r.load_seconds
    );
    println!("{}", r.paths);
    println!("TLS library files probed: {}", r.tls_targets);
    println!();
    println!(
        "{:<24} {:<15} {:>8} {:>12} {:>9}",
        "program", "type", "insns", "processed", "of limit"
    );
    for p in &r.programs {
        let (processed, share) = match p.processed_insns {
            Some(n) => (
                n.to_string(),
                format!("{:.1}%", n as f64 * 100.0 / r.verifier_limit as f64),
            ),
            None => ("?".into(), "?".into()),
        };
        println!(
            "{:<24} {:<15} {:>8} {:>12} {:>9}",
            p.name, p.kind, p.insns, processed, share
        );
        if let Some(e) = &p.error {
            println!("    statistics load failed: {e}");
        }
        if let Some(why) = &p.skipped {
            println!("    not loaded on this kernel: {why}");
        }
    }
}

fn top(a: TopArgs) -> anyhow::Result<()> {
    use mcp_monitor_investigate::{model::Severity, top};
    let mut files = a.files;
    if files.is_empty() {
        let cfg = match &a.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        for f in [&cfg.output.events_file, &cfg.output.alerts_file] {
            if f != "-" && !files.iter().any(|x| x.as_os_str() == f.as_str()) {
                files.push(PathBuf::from(f));
            }
        }
    }
    let min_severity = match a.severity.as_deref() {
        None => None,
        Some(s) => Some(
            Severity::parse(s)
                .ok_or_else(|| anyhow::anyhow!("unknown severity {s:?}: use info, low, medium, high or critical"))?,
        ),
    };
    if !(a.interval.is_finite() && a.interval > 0.0) {
        anyhow::bail!("--interval must be a positive number of seconds");
    }
    top::run(top::Options {
        files,
        from_end: a.from_end,
        batch: a.batch,
        interval: std::time::Duration::from_secs_f64(a.interval),
        iterations: a.iterations,
        min_severity,
    })
}

fn report(a: ReportArgs) -> anyhow::Result<()> {
    use mcp_monitor_investigate::{input, model, report};
    let mut m = model::Investigation::new(model::Limits::REPORT, true);
    let mut names: Vec<String> = a.files.iter().map(|p| p.display().to_string()).collect();
    let mut skipped = 0;
    if let Some(rec) = &a.recording {
        // Private (0700) and removed when dropped: events with payloads.
        let dir = tempfile::Builder::new()
            .prefix("mcp-monitor-report-")
            .tempdir()
            .context("cannot create a directory under the temporary directory (TMPDIR)")?;
        let mut cfg = match &a.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        let events = dir.path().join("events.jsonl");
        let alerts = dir.path().join("alerts.jsonl");
        cfg.output.events_file = events.display().to_string();
        cfg.output.alerts_file = alerts.display().to_string();
        cfg.output.payloads = true;
        // A replay only reads the fingerprint key there, so its
        // fingerprints match the live alerts'; it changes nothing.
        if let Some(d) = &a.state_dir {
            cfg.detection.state_dir = d.clone();
        }
        let metrics = Metrics::with_config(&cfg.metrics);
        let mut outputs = agent::Outputs::open(&cfg, &metrics)?;
        agent::replay(rec, &cfg, metrics, &mut outputs)?;
        drop(outputs);
        for f in [&events, &alerts] {
            skipped += input::read_lines(f, |l| m.ingest_line(l))?;
        }
        names = vec![format!("recording {}", rec.display())];
    } else {
        if a.files.is_empty() {
            anyhow::bail!(
                "report needs the agent's events and alerts files (or --recording FILE): \
                 mcp-monitor report events.jsonl alerts.jsonl -o report.html"
            );
        }
        for f in &a.files {
            skipped += input::read_lines(f, |l| m.ingest_line(l))?;
        }
    }
    if let Some(dir) = &a.state_dir {
        let p = dir.join("tools.json");
        match std::fs::read_to_string(&p) {
            Ok(t) => {
                m.pinned =
                    Some(model::Pinned::parse(&t, m.scrubber()).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?)
            }
            Err(e) => log::warn!("no pinned tool definitions: cannot read {}: {e}", p.display()),
        }
    }
    if skipped > 0 {
        log::warn!(
            "{skipped} lines skipped: longer than {} bytes or not UTF-8",
            input::MAX_LINE
        );
    }
    if m.counts.unreadable > 0 {
        log::warn!("{} lines were neither events nor alerts", m.counts.unreadable);
    }
    let html = report::render(
        &m,
        &report::Sources {
            files: names,
            generated: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        },
    );
    std::fs::write(&a.output, html).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", a.output.display()))?;
    eprintln!(
        "wrote {}: {} sessions, {} events, {} alerts",
        a.output.display(),
        m.sessions.len(),
        m.counts.events,
        m.counts.alerts
    );
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        // Printing commands end quietly when their reader goes away
        // (`mcp-monitor rules credentials | head`). `run` keeps the default
        // (ignored) so a closed stdout is a counted output error instead.
        // SAFETY: restoring the default disposition of a signal.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Run(a) => {
            let cfg = run_config(&a)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            // SIGHUP reads the file again, with the same flags on top.
            rt.block_on(agent::run(cfg, move || run_config(&a)))
        }
        Command::Replay(a) => {
            let cfg = load(&a.common)?;
            let metrics = Metrics::with_config(&cfg.metrics);
            let mut out = agent::Outputs::open(&cfg, &metrics)?;
            let s = agent::replay(&a.file, &cfg, metrics, &mut out)?;
            log::info!(
                "replayed {} observations: {} events, {} alerts",
                s.observations,
                s.events,
                s.alerts
            );
            Ok(())
        }
        Command::Top(a) => top(a),
        Command::Report(a) => report(a),
        Command::Check(a) => {
            let cfg = match &a.config {
                Some(p) => Config::load(p)?,
                None => Config::default(),
            };
            // The sensor registers its ring with tokio, as in `run`.
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let r = rt.block_on(async { agent::check(&cfg) })?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_check(&r);
            }
            Ok(())
        }
        Command::Floor(a) => {
            let cfg = match &a.config {
                Some(p) => Config::load(p)?,
                None => Config::default(),
            };
            // The handlers before the start-up line, which the bench and
            // the tests wait for before they signal: a signal in between
            // would end the process without its report.
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (mut term, mut int) = {
                let _in_runtime = rt.enter();
                use tokio::signal::unix::{signal, SignalKind};
                (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?)
            };
            let mut interrupted = || {
                rt.block_on(async {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                })
            };
            if let Some(name) = &a.copy_reads {
                let floor = mcp_monitor::sensor::CopyFloor::attach(&cfg.capture, name)?;
                eprintln!(
                    "floor: the copy floor on a BTF tracepoint on sys_exit, every read of the processes named {name:?}; interrupt to detach"
                );
                interrupted();
                let r = floor.finish()?;
                println!(
                    "{}",
                    serde_json::json!({
                        "records": r.tally.records,
                        "bytes": r.tally.bytes,
                        "newlines": r.tally.newlines,
                        "submitted": r.submitted,
                        "ring_full": r.ring_full,
                        "copy_failed": r.copy_failed,
                    })
                );
                return Ok(());
            }
            let floor = mcp_monitor::sensor::Floor::attach(&cfg.capture)?;
            eprintln!(
                "floor: a do-nothing program where the agent hooks system calls here ({}) and at OpenSSL's entries and returns in {} files ({}); interrupt to detach",
                floor.syscall_hook.describe(),
                floor.tls_files.len(),
                floor.tls_files.join(" ")
            );
            interrupted();
            drop(floor);
            Ok(())
        }
        Command::Rules(RulesCommand::Default) => {
            print!("{}", mcp_monitor::detect::rules::DEFAULT_RULES_TOML);
            Ok(())
        }
        Command::Rules(RulesCommand::Credentials) => {
            let off = mcp_monitor::detect::rules::Rules::builtin().disabled_credential_rules;
            for r in mcp_monitor::detect::secrets::builtin::RULES {
                println!(
                    "{:<36} {:<17} {:<7} {}{}",
                    r.id,
                    r.category,
                    format!("{:?}", r.confidence).to_lowercase(),
                    r.name,
                    if off.iter().any(|id| id == r.id) {
                        " (off by default: enabled_credential_rules turns it on)"
                    } else {
                        ""
                    }
                );
            }
            println!(
                "{:<36} {:<17} {:<7} Secret-named JSON key with a high-entropy value",
                mcp_monitor::detect::secrets::GENERIC_KEY_RULE,
                "generic",
                "low"
            );
            Ok(())
        }
        Command::Rules(RulesCommand::Check { file }) => {
            let text =
                std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            if is_gitleaks_config(&text) {
                return check_gitleaks(&text, &file);
            }
            let rules = mcp_monitor::detect::rules::Rules::with_file(&text, &file.display().to_string())?;
            let name = |v: serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
            println!(
                "{:<50} {:<8} {:<58} {:>8} severity",
                "chain rule", "scope", "labels", "window"
            );
            for c in &rules.chain_rules {
                let labels: Vec<String> = c
                    .sequence
                    .iter()
                    .chain(&c.all_of)
                    .map(|l| name(serde_json::to_value(l).unwrap_or_default()))
                    .collect();
                let labels = if c.sequence.is_empty() {
                    format!("all of {}", labels.join(", "))
                } else {
                    labels.join(" -> ")
                };
                println!(
                    "{:<50} {:<8} {:<58} {:>6} s {}",
                    c.id,
                    name(serde_json::to_value(c.scope).unwrap_or_default()),
                    labels,
                    c.window_seconds,
                    c.severity.as_str()
                );
            }
            eprintln!(
                "{}: valid ({} labels, {} silences)",
                file.display(),
                rules.labels.len(),
                rules.silence.len()
            );
            Ok(())
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let cfg = Config::load(&file)?;
            print!("{}", toml::to_string_pretty(&cfg)?);
            eprintln!("{}: valid", file.display());
            Ok(())
        }
        Command::Config(ConfigCommand::Default) => {
            print!("{}", toml::to_string_pretty(&Config::default())?);
            Ok(())
        }
    }
}

/// A gitleaks configuration has a top-level `[[rules]]` array; the rules
/// file of this tool has none.
fn is_gitleaks_config(text: &str) -> bool {
    toml::from_str::<toml::Table>(text).is_ok_and(|t| t.get("rules").is_some_and(toml::Value::is_array))
}

/// `rules check` of a gitleaks file: every rule compiled, the ones kept
/// listed, what was left out said.
fn check_gitleaks(text: &str, file: &std::path::Path) -> anyhow::Result<()> {
    let origin = file.display().to_string();
    let rules = mcp_monitor::detect::rules::Rules::builtin()
        .with_extra_credential_rules(&[(origin.clone(), text.to_owned())])?;
    let extra = &rules.extra_credential_rules;
    println!(
        "{:<36} {:<40} {:>7} {:>10} description",
        "credential rule (gitleaks)", "keywords", "entropy", "allowlists"
    );
    for r in &extra.rules {
        let keywords = if r.keywords.is_empty() {
            "(none: runs on every message)".to_owned()
        } else {
            r.keywords.join(",")
        };
        println!(
            "{:<36} {:<40} {:>7} {:>10} {}",
            r.id,
            keywords,
            r.entropy.map(|e| format!("{e}")).unwrap_or_else(|| "-".into()),
            r.allowlists.len(),
            r.name
        );
    }
    for w in &extra.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "{origin}: valid gitleaks configuration ({} credential rules added to the built-in ones; load it with [detection] extra_rules)",
        extra.rules.len()
    );
    Ok(())
}
