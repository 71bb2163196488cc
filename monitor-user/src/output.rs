//! Event output: JSON lines to stdout or a file.

use std::{
    fs::OpenOptions,
    io::{self, BufWriter, Write},
    sync::Arc,
};

use crate::{event::Event, metrics::Metrics};

/// Writes one JSON object per line. Write failures are counted in
/// `mcp_monitor_output_errors_total{output="events"}` and logged (at most
/// once per minute), never fatal: capture goes on.
pub struct EventWriter {
    out: Box<dyn Write + Send>,
    metrics: Arc<Metrics>,
    line: Vec<u8>,
    last_error_log: Option<std::time::Instant>,
}

impl EventWriter {
    /// `-` is stdout; anything else a file, appended to.
    pub fn open(target: &str, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let out: Box<dyn Write + Send> = if target == "-" {
            Box::new(BufWriter::with_capacity(64 * 1024, io::stdout()))
        } else {
            use std::os::unix::fs::OpenOptionsExt;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(target)
                .map_err(|e| anyhow::anyhow!("cannot open events file {target}: {e}"))?;
            Box::new(BufWriter::with_capacity(64 * 1024, f))
        };
        Ok(Self::new(out, metrics))
    }

    /// A writer over any byte sink.
    pub fn new(out: Box<dyn Write + Send>, metrics: Arc<Metrics>) -> Self {
        Self {
            out,
            metrics,
            line: Vec::with_capacity(1024),
            last_error_log: None,
        }
    }

    /// Serialises and writes one event.
    pub fn write(&mut self, event: &Event) {
        self.line.clear();
        if let Err(e) = serde_json::to_writer(&mut self.line, event) {
            self.failed(&format!("serialising an event failed: {e}"));
            return;
        }
        self.line.push(b'\n');
        match self.out.write_all(&self.line) {
            Ok(()) => self.metrics.events_written.inc(),
            Err(e) => self.failed(&format!("writing an event failed: {e}")),
        }
    }

    /// Flushes buffered events.
    pub fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.failed(&format!("flushing events failed: {e}"));
        }
    }

    fn failed(&mut self, msg: &str) {
        self.metrics.output_errors.with_label_values(&["events"]).inc();
        let now = std::time::Instant::now();
        if self
            .last_error_log
            .is_none_or(|t| now.duration_since(t).as_secs() >= 60)
        {
            self.last_error_log = Some(now);
            log::error!("{msg} (further errors counted in mcp_monitor_output_errors_total)");
        }
    }
}
