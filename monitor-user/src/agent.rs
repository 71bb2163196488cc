//! Running the agent: live capture (`run`) and offline analysis (`replay`).

use std::{fs::File, io::BufWriter, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    clock,
    config::Config,
    event::Event,
    metrics::{self, Metrics},
    observation::Observation,
    output::EventWriter,
    pipeline::{Control, Pipeline, Sink},
    record::{Reader, Recorder, RecordingHeader},
    sensor::Sensor,
};

/// Sink of the agent: events to the writer, controls queued for the kernel.
struct AgentSink<'a> {
    events: &'a mut EventWriter,
    controls: Vec<Control>,
}

impl Sink for AgentSink<'_> {
    fn event(&mut self, event: Event) {
        self.events.write(&event);
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

/// Runs live capture until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    // Bind first: a taken port should fail before probes are loaded.
    let listener = std::net::TcpListener::bind(cfg.output.metrics_addr).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for metrics on {}: {e}.\nFix: pick a free address with --metrics-addr (or output.metrics_addr)",
            cfg.output.metrics_addr
        )
    })?;
    drop(listener);
    let metrics_task = tokio::spawn(metrics::serve(cfg.output.metrics_addr, metrics.clone()));

    let boot_offset = clock::boot_to_unix_offset_ns();
    let mut sensor = Sensor::start(&cfg.capture, boot_offset)?;
    // Loading parsed the kernel's BTF (megabytes) twice, aya's copy and
    // ours; hand the freed heap back to the system.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    let mut events = EventWriter::open(&cfg.output.events_file, metrics.clone())?;
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
                started_unix_ns: clock::boot_now_ns() as i128 + boot_offset,
            };
            Some(Recorder::new(BufWriter::with_capacity(1 << 20, f), &header)?)
        }
        None => None,
    };
    let mut pipeline = Pipeline::new(cfg.pipeline_config(boot_offset), metrics.clone());
    metrics.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    log::info!(
        "ready: writing events to {}",
        if cfg.output.events_file == "-" {
            "stdout"
        } else {
            &cfg.output.events_file
        }
    );

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let poll = Duration::from_millis(cfg.capture.poll_interval_ms);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut record_failed = false;
    let mut feed = |obs: Observation,
                    pipeline: &mut Pipeline,
                    sink: &mut AgentSink<'_>,
                    rec: &mut Option<Recorder<BufWriter<File>>>| {
        if let Some(r) = rec.as_mut() {
            if let Err(e) = r.write(&obs) {
                if !record_failed {
                    log::error!("writing the recording failed, recording stops: {e}");
                    record_failed = true;
                }
                metrics.output_errors.with_label_values(&["record"]).inc();
            }
        }
        pipeline.handle(obs, sink);
    };

    loop {
        let mut sink = AgentSink {
            events: &mut events,
            controls: Vec::new(),
        };
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = tick.tick() => {
                match sensor.stats() {
                    Ok(s) => feed(Observation::CaptureStats(s), &mut pipeline, &mut sink, &mut recorder),
                    Err(e) => log::warn!("reading capture counters failed: {e}"),
                }
                feed(Observation::Tick { ts_ns: clock::boot_now_ns() }, &mut pipeline, &mut sink, &mut recorder);
            }
            r = sensor.wait(poll) => {
                r?;
                // Drain everything waiting, a budget at a time.
                loop {
                    let mut batch = Vec::new();
                    let n = sensor.drain(|o| batch.push(o));
                    for obs in batch {
                        feed(obs, &mut pipeline, &mut sink, &mut recorder);
                    }
                    if n < crate::sensor::DRAIN_BUDGET {
                        break;
                    }
                }
            }
        }
        let controls = std::mem::take(&mut sink.controls);
        drop(sink);
        for c in &controls {
            sensor.apply(c);
        }
        events.flush();
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
        let mut sink = AgentSink {
            events: &mut events,
            controls: Vec::new(),
        };
        feed(Observation::CaptureStats(s), &mut pipeline, &mut sink, &mut recorder);
    }
    events.flush();
    if let Some(mut r) = recorder {
        r.flush().context("flushing the recording")?;
    }
    Ok(())
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct ReplaySummary {
    pub observations: u64,
    pub events: u64,
    pub truncated_tail: bool,
}

/// Runs the pipeline over a recording. No privileges needed.
pub fn replay(
    path: &std::path::Path,
    cfg: &Config,
    metrics: Arc<Metrics>,
    sink_events: &mut EventWriter,
) -> anyhow::Result<ReplaySummary> {
    let f = File::open(path).with_context(|| format!("opening recording {}", path.display()))?;
    let mut reader = Reader::new(std::io::BufReader::with_capacity(1 << 20, f))?;
    let mut pipeline = Pipeline::new(cfg.pipeline_config(reader.header().boot_offset_ns), metrics.clone());
    let mut summary = ReplaySummary::default();
    let before = metrics.events_written.get();
    let mut sink = AgentSink {
        events: sink_events,
        controls: Vec::new(),
    };
    while let Some(obs) = reader.next_observation()? {
        summary.observations += 1;
        pipeline.handle(obs, &mut sink);
        sink.controls.clear();
    }
    pipeline.finish();
    sink.events.flush();
    summary.truncated_tail = reader.truncated_tail;
    if reader.truncated_tail {
        log::warn!("the recording ends inside a record (the agent was probably killed while writing); replayed what was complete");
    }
    summary.events = metrics.events_written.get() - before;
    Ok(summary)
}
