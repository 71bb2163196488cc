//! Running the agent: live capture (`run`) and offline analysis (`replay`).

use std::{fs::File, io::BufWriter, path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    boot_clock,
    config::Config,
    control::Control,
    deliver::Deliveries,
    detect::{alert::Alert, Detector},
    event::Event,
    metrics::Metrics,
    observation::{Observation, WorkloadChange},
    output::JsonLines,
    pipeline::{Pipeline, Sink},
    record::{Reader, Recorder, RecordingHeader},
    sensor::Sensor,
};

/// Where results go: events and alerts to their writers, capture decisions
/// queued for the kernel.
pub struct Outputs {
    /// Writer of events as JSON lines (`output.events_file`).
    pub events: JsonLines,
    /// Writer of alerts as JSON lines (`output.alerts_file`).
    pub alerts: JsonLines,
    /// Alert sinks (`[[sinks]]`); live runs only.
    pub deliveries: Deliveries,
    controls: Vec<Control>,
}

impl Outputs {
    /// Opens the configured events and alerts outputs.
    pub fn open(cfg: &Config, metrics: &Metrics) -> anyhow::Result<Outputs> {
        let err = |n| metrics.output.errors.with_label_values(&[n]);
        Ok(Outputs {
            events: JsonLines::open(
                &cfg.output.events_file,
                "events",
                cfg.output.file_policy(),
                metrics.output.events_written.clone(),
                err("events"),
            )?,
            alerts: JsonLines::open(
                &cfg.output.alerts_file,
                "alerts",
                cfg.output.file_policy(),
                metrics.output.alerts_written.clone(),
                err("alerts"),
            )?,
            deliveries: Deliveries::default(),
            controls: Vec::new(),
        })
    }

    fn flush(&mut self) {
        self.events.flush();
        self.alerts.flush();
    }

    /// Final flush (and sync, unless `fsync = "never"`).
    fn close(&mut self) {
        self.events.close();
        self.alerts.close();
    }
}

impl Sink for Outputs {
    fn event(&mut self, event: Event) {
        self.events.write(&event);
    }
    fn alert(&mut self, alert: Alert) {
        // Spooled first: an alert in the alerts file is always in the
        // webhook spools too, whenever the agent is killed.
        self.deliveries.send(&alert);
        self.alerts.write(&alert);
    }
    fn control(&mut self, control: Control) {
        self.controls.push(control);
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The pipeline with its detector (if detection is on).
/// `hostname`: this host's, or the recorded one in replays.
fn pipeline(
    cfg: &Config,
    boot_offset: i128,
    hostname: &str,
    metrics: Arc<Metrics>,
    live: bool,
) -> anyhow::Result<Pipeline> {
    let mut pc = cfg.pipeline_config(boot_offset);
    pc.hostname = hostname.to_owned();
    let mut p = Pipeline::new(pc, metrics.clone());
    if let Some(mut dcfg) = cfg.detector_config(live)? {
        // Without a usable state directory, rug pulls are still caught
        // within this run; say so loudly.
        const IN_MEMORY: &str = "tool definitions will only be remembered until the agent stops";
        if live {
            match crate::state_dir::open_tool_state(&cfg.detection.state_dir, &metrics) {
                Ok(p) => dcfg.persisted_tools = Some(p),
                Err(e) => log::warn!("{e:#}\n{IN_MEMORY}"),
            }
        }
        let d = match Detector::new(dcfg.clone(), metrics.clone()) {
            Ok(d) => d,
            Err(e) if dcfg.persisted_tools.is_some() => {
                let file = cfg.detection.state_dir.join(crate::detect::integrity::STATE_FILE);
                log::warn!("{}: {e:#}\n{IN_MEMORY}", file.display());
                Detector::new(
                    crate::detect::DetectorConfig {
                        persisted_tools: None,
                        ..dcfg
                    },
                    metrics.clone(),
                )?
            }
            Err(e) => return Err(e),
        };
        log::info!("detection on: {} credential rules", d.credential_rules());
        p = p.with_detector(d);
    }
    Ok(p)
}

/// Starts the configured sinks; on failure, says which setting to fix.
fn start_sinks(cfg: &Config, metrics: &Arc<Metrics>) -> anyhow::Result<Deliveries> {
    Deliveries::start(&cfg.sinks, &cfg.detection.state_dir, metrics).context("starting the alert sinks ([[sinks]])")
}

/// Applies a configuration re-read on SIGHUP: detection rules and alert
/// sinks change in place; other settings need a restart (logged).
fn reload(cfg: &mut Config, new: Config, pipeline: &mut Pipeline, outputs: &mut Outputs, metrics: &Arc<Metrics>) {
    match (pipeline.detector_mut(), new.rules()) {
        (Some(d), Ok(rules)) => {
            d.set_rules(rules);
            log::info!("reload: detection rules applied");
        }
        (Some(_), Err(e)) => log::error!("reload: keeping the current rules: {e:#}"),
        (None, _) => {}
    }
    if new.sinks != cfg.sinks {
        // The old sinks stop first: a webhook's spool has one writer.
        std::mem::take(&mut outputs.deliveries).shutdown(Duration::from_secs(5));
        outputs.deliveries = match start_sinks(&new, metrics) {
            Ok(d) => {
                log::info!("reload: {} alert sinks running", d.len());
                cfg.sinks = new.sinks.clone();
                d
            }
            Err(e) => {
                log::error!("reload: {e:#}; restarting the previous sinks");
                start_sinks(cfg, metrics).unwrap_or_default()
            }
        };
    }
    if new.capture != cfg.capture
        || new.pipeline != cfg.pipeline
        || new.output != cfg.output
        || new.detection.enabled != cfg.detection.enabled
        || new.detection.state_dir != cfg.detection.state_dir
        || new.identity != cfg.identity
        || new.kubernetes != cfg.kubernetes
        || new.metrics != cfg.metrics
    {
        log::warn!(
            "reload: capture, pipeline, output, detection state, identity, kubernetes and metrics settings change only on restart"
        );
    }
    cfg.detection.rules_file = new.detection.rules_file;
}

/// Starts the pod watch when `[kubernetes]` says so. With `mode = "on"` a
/// failure stops the start; with `auto` it is logged and capture goes on.
async fn start_pod_watch(
    k: &crate::pod_watch::KubernetesConfig,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<tokio::sync::mpsc::Receiver<crate::identity::kubernetes::WorkloadUpdate>>> {
    use crate::pod_watch::{self, KubernetesMode};
    if !k.active() {
        return Ok(None);
    }
    match pod_watch::start(k, metrics.clone()).await {
        Ok(rx) => Ok(Some(rx)),
        Err(e) if k.mode == KubernetesMode::On => Err(e),
        Err(e) => {
            log::error!("kubernetes: {e:#}\nEvents carry container ids and pod uids but no pod names.");
            Ok(None)
        }
    }
}

async fn next_pod_update(
    rx: &mut Option<tokio::sync::mpsc::Receiver<crate::identity::kubernetes::WorkloadUpdate>>,
) -> Option<crate::identity::kubernetes::WorkloadUpdate> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_tls_finding(
    rx: &mut Option<tokio::sync::mpsc::UnboundedReceiver<crate::sensor::tls::Finding>>,
) -> Option<crate::sensor::tls::Finding> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Probes the TLS libraries present now (host library directories and
/// every running process), then keeps scanning on a thread; new files
/// arrive on the returned channel.
/// What `mcp-monitor check` found: the agent's programs loaded and
/// attached on this kernel, and what each costs the verifier.
#[derive(Debug, serde::Serialize)]
pub struct CheckReport {
    /// `uname -r`.
    pub kernel: String,
    /// The paths chosen for this kernel (the start-up log line).
    pub paths: String,
    /// How system calls are hooked: `fexit` or `tracepoint`.
    pub syscall_hook: &'static str,
    /// Why the kernel refused fexit, when it did (`capture.syscall_hook = "auto"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fexit_refused: Option<String>,
    /// Whether the network calls' fexit hooks read the registers with a
    /// helper (5.10, whose BTF declares them without members); false on
    /// the tracepoint.
    pub net_regs_by_helper: bool,
    /// Seconds to load and attach everything.
    pub load_seconds: f64,
    /// TLS library files probed at start.
    pub tls_targets: u64,
    /// The verifier's limit of instructions processed per program.
    pub verifier_limit: u64,
    /// Our own budget per program (a quarter of the limit), which the test
    /// suite enforces.
    pub verifier_budget: u64,
    /// Verifier cost of each measured program of the eBPF object, by name.
    pub programs: Vec<crate::sensor::verifier::ProgramCost>,
}

/// Loads and attaches every program exactly as `run` does (TLS probes on
/// the libraries found at start included), detaches them, and measures
/// each program's verifier cost. Fails with `run`'s own start-up error.
pub fn check(cfg: &Config) -> anyhow::Result<CheckReport> {
    let t0 = std::time::Instant::now();
    let mut sensor = Sensor::start(&cfg.capture, boot_clock::boot_to_unix_offset_ns())?;
    let _ = start_tls_scan(&cfg.capture, &mut sensor)?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let tls_targets = sensor.tls_targets();
    let syscall_hook = sensor.syscall_hook().clone();
    drop(sensor);
    let fexit_refused = match &syscall_hook {
        crate::sensor::SyscallHook::Tracepoint { fexit_refused } => fexit_refused.clone(),
        crate::sensor::SyscallHook::Fexit { .. } => None,
    };
    Ok(CheckReport {
        kernel: crate::sensor::verifier::kernel_release(),
        paths: crate::sensor::preflight::kernel_paths(&syscall_hook),
        syscall_hook: syscall_hook.name(),
        fexit_refused: fexit_refused.clone(),
        net_regs_by_helper: matches!(
            syscall_hook,
            crate::sensor::SyscallHook::Fexit {
                net_regs_by_helper: true,
                ..
            }
        ),
        load_seconds,
        tls_targets,
        verifier_limit: crate::sensor::verifier::VERIFIER_LIMIT,
        verifier_budget: crate::sensor::verifier::VERIFIER_BUDGET,
        // Where the kernel refused fexit, the fexit programs are listed
        // as skipped, with the reason, not measured.
        programs: crate::sensor::verifier_costs(match &syscall_hook {
            crate::sensor::SyscallHook::Fexit { .. } => None,
            crate::sensor::SyscallHook::Tracepoint { fexit_refused } => Some(
                fexit_refused
                    .as_deref()
                    .unwrap_or("capture.syscall_hook = \"tracepoint\""),
            ),
        })?,
    })
}

/// Processes that ran a new executable waiting for the TLS scan, at most.
const EXEC_QUEUE: usize = 4096;

fn start_tls_scan(
    cfg: &crate::config::CaptureConfig,
    sensor: &mut Sensor,
) -> anyhow::Result<Option<tokio::sync::mpsc::UnboundedReceiver<crate::sensor::tls::Finding>>> {
    if !cfg.tls {
        return Ok(None);
    }
    let mut scanner = crate::sensor::tls::Scanner::new("/proc", cfg.tls_executables.clone())
        .probing_every_go_program(cfg.tls_go == crate::config::TlsGo::All);
    // The host's libraries, also from inside a container sharing the
    // host's pid namespace (the DaemonSet): probed before any process loads
    // them, so that their first TLS bytes are seen.
    let host_root = crate::sensor::tls::host_root(Path::new("/proc"));
    log::debug!("TLS: host libraries looked up under {}", host_root.display());
    let mut first = scanner.scan_host(&host_root);
    first.extend(scanner.scan_processes());
    for t in &first {
        sensor.attach_tls(t);
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let interval = Duration::from_millis(cfg.tls_scan_interval_ms);
    // Processes that ran a new executable, from the kernel's exec notices:
    // looked at at once, between the periodic scans.
    let (exec_tx, exec_rx) = std::sync::mpsc::sync_channel::<u32>(EXEC_QUEUE);
    sensor.watch_execs(exec_tx);
    std::thread::Builder::new()
        .name("tls-scan".into())
        .spawn(move || {
            let mut next_scan = std::time::Instant::now() + interval;
            loop {
                let wait = next_scan.saturating_duration_since(std::time::Instant::now());
                // A steady stream of execs must not postpone the periodic
                // scan, and a long scan must leave a pause after it.
                let exec = if wait.is_zero() {
                    None
                } else {
                    match exec_rx.recv_timeout(wait) {
                        Ok(pid) => Some(pid),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                            std::thread::sleep(wait);
                            None
                        }
                    }
                };
                use crate::sensor::tls::Finding;
                let found: Vec<Finding> = match exec {
                    Some(pid) => scanner.scan_executable(pid).into_iter().map(Finding::Probe).collect(),
                    None => {
                        let mut found: Vec<Finding> =
                            scanner.scan_processes().into_iter().map(Finding::Probe).collect();
                        found.extend(scanner.take_unused().into_iter().map(Finding::Unused));
                        next_scan = std::time::Instant::now() + interval;
                        found
                    }
                };
                for f in found {
                    if tx.send(f).is_err() {
                        return;
                    }
                }
            }
        })
        .context("starting the TLS library scan thread")?;
    Ok(Some(rx))
}

/// Runs live capture until SIGINT or SIGTERM; on SIGHUP, `reread` gives the
/// configuration again (file and flags) and rules and sinks are reloaded.
pub async fn run(mut cfg: Config, reread: impl Fn() -> anyhow::Result<Config>) -> anyhow::Result<()> {
    let metrics = Metrics::with_config(&cfg.metrics);
    metrics.set_build_info(&crate::sensor::verifier::kernel_release());
    // Bind first: a taken port should fail before probes are loaded.
    let listener = std::net::TcpListener::bind(cfg.output.metrics_addr).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for metrics on {}: {e}.\nFix: pick a free address with --metrics-addr (or output.metrics_addr)",
            cfg.output.metrics_addr
        )
    })?;
    drop(listener);
    let metrics_task = tokio::spawn(crate::metrics_endpoint::serve(cfg.output.metrics_addr, metrics.clone()));

    let boot_offset = boot_clock::boot_to_unix_offset_ns();
    let mut pipeline = pipeline(&cfg, boot_offset, &hostname(), metrics.clone(), true)?;
    // Before the probes: a watch that cannot start should fail fast.
    let mut pod_updates = start_pod_watch(&cfg.kubernetes, &metrics).await?;
    let mut sensor = Sensor::start(&cfg.capture, boot_offset)?;
    metrics
        .syscall_hook
        .with_label_values(&[sensor.syscall_hook().name()])
        .set(1);
    let mut tls_targets = start_tls_scan(&cfg.capture, &mut sensor)?;
    // Loading parsed the kernel's BTF (megabytes) two or three times,
    // aya's copy and ours (offsets; the fexit hooks' prototypes); hand the
    // freed heap back to the system.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    let mut outputs = Outputs::open(&cfg, &metrics)?;
    outputs.deliveries = start_sinks(&cfg, &metrics)?;
    let mut recorder = match &cfg.output.record_file {
        Some(path) => {
            // Recordings hold raw captured bytes, secrets included: owner only.
            let f = {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(path)
            }
            .with_context(|| format!("creating recording {}", path.display()))?;
            let header = RecordingHeader {
                agent_version: env!("CARGO_PKG_VERSION").into(),
                hostname: hostname(),
                boot_offset_ns: boot_offset,
                capture_cap: sensor.capture_cap,
                started_unix_ns: boot_clock::boot_now_ns() as i128 + boot_offset,
            };
            Some(Recorder::new(BufWriter::with_capacity(1 << 20, f), &header)?)
        }
        None => None,
    };
    metrics.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    log::info!(
        "ready: events to {}, alerts to {}",
        if cfg.output.events_file == "-" {
            "stdout"
        } else {
            &cfg.output.events_file
        },
        if cfg.output.alerts_file == "-" {
            "stdout"
        } else {
            &cfg.output.alerts_file
        }
    );

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let poll = Duration::from_millis(cfg.capture.poll_interval_ms);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut record_failed = false;
    let mut feed =
        |obs: Observation, pipeline: &mut Pipeline, sink: &mut Outputs, rec: &mut Option<Recorder<BufWriter<File>>>| {
            if let Some(r) = rec.as_mut() {
                if let Err(e) = r.write(&obs) {
                    if !record_failed {
                        log::error!("writing the recording failed, recording stops: {e}");
                        record_failed = true;
                    }
                    metrics.output.errors.with_label_values(&["record"]).inc();
                }
            }
            pipeline.handle(obs, sink);
        };

    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                log::info!("SIGHUP: reloading the configuration");
                match reread() {
                    Ok(new) => reload(&mut cfg, new, &mut pipeline, &mut outputs, &metrics),
                    Err(e) => log::error!("reload failed, keeping the running configuration: {e:#}"),
                }
            }
            u = next_pod_update(&mut pod_updates) => match u {
                Some(update) => {
                    let change = WorkloadChange { ts_ns: boot_clock::boot_now_ns(), update };
                    feed(Observation::Workload(change), &mut pipeline, &mut outputs, &mut recorder);
                }
                None => {
                    log::warn!("kubernetes: the pod watch stopped; events keep the identities known so far");
                    pod_updates = None;
                }
            },
            Some(finding) = next_tls_finding(&mut tls_targets) => match finding {
                crate::sensor::tls::Finding::Probe(target) => sensor.attach_tls(&target),
                crate::sensor::tls::Finding::Unused(unused) => sensor.unprobe(&unused),
            },
            _ = tick.tick() => {
                match sensor.stats() {
                    Ok(s) => feed(Observation::CaptureStats(s), &mut pipeline, &mut outputs, &mut recorder),
                    Err(e) => log::warn!("reading capture counters failed: {e}"),
                }
                feed(Observation::Tick { ts_ns: boot_clock::boot_now_ns() }, &mut pipeline, &mut outputs, &mut recorder);
                outputs.deliveries.refresh();
            }
            r = sensor.wait(poll) => {
                r?;
                // Drain everything waiting, a budget at a time.
                loop {
                    let mut batch = Vec::new();
                    let more = sensor.drain(|o| batch.push(o));
                    for obs in batch {
                        feed(obs, &mut pipeline, &mut outputs, &mut recorder);
                    }
                    // Rejected streams are ignored in the kernel at once, not
                    // after the ring is empty: a fast non-MCP writer must not
                    // keep the ring busy meanwhile.
                    for c in std::mem::take(&mut outputs.controls) {
                        sensor.apply(&c);
                    }
                    if !more {
                        break;
                    }
                }
            }
        }
        for c in std::mem::take(&mut outputs.controls) {
            sensor.apply(&c);
        }
        outputs.flush();
        if let Some(r) = recorder.as_mut() {
            let _ = r.flush();
        }
        if metrics_task.is_finished() {
            anyhow::bail!("the metrics endpoint stopped unexpectedly");
        }
    }
    log::info!("stopping");
    // A last look at the kernel counters so drops at the end are counted.
    if let Ok(s) = sensor.stats() {
        feed(Observation::CaptureStats(s), &mut pipeline, &mut outputs, &mut recorder);
    }
    pipeline.finish(&mut outputs);
    outputs.close();
    std::mem::take(&mut outputs.deliveries).shutdown(Duration::from_secs(10));
    if let Some(mut r) = recorder {
        r.flush().context("flushing the recording")?;
    }
    Ok(())
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct ReplaySummary {
    /// Observations read from the recording and fed to the pipeline.
    pub observations: u64,
    /// Events written during the replay.
    pub events: u64,
    /// Alerts written during the replay.
    pub alerts: u64,
    /// The recording ended inside a record (writer killed mid-write); the partial record was skipped.
    pub truncated_tail: bool,
}

/// Runs the pipeline, detection included, over a recording. No privileges
/// needed. Tool definitions are remembered in memory only, starting empty.
pub fn replay(
    path: &std::path::Path,
    cfg: &Config,
    metrics: Arc<Metrics>,
    outputs: &mut Outputs,
) -> anyhow::Result<ReplaySummary> {
    let f = File::open(path).with_context(|| format!("opening recording {}", path.display()))?;
    let mut reader = Reader::new(std::io::BufReader::with_capacity(1 << 20, f))?;
    let header = reader.header().clone();
    let mut pipeline = pipeline(cfg, header.boot_offset_ns, &header.hostname, metrics.clone(), false)?;
    let mut summary = ReplaySummary::default();
    let (events0, alerts0) = (metrics.output.events_written.get(), metrics.output.alerts_written.get());
    while let Some(obs) = reader.next_observation()? {
        summary.observations += 1;
        pipeline.handle(obs, outputs);
        outputs.controls.clear();
    }
    pipeline.finish(outputs);
    outputs.close();
    summary.truncated_tail = reader.truncated_tail;
    if reader.truncated_tail {
        log::warn!("the recording ends inside a record (the agent was probably killed while writing); replayed what was complete");
    }
    summary.events = metrics.output.events_written.get() - events0;
    summary.alerts = metrics.output.alerts_written.get() - alerts0;
    Ok(summary)
}
