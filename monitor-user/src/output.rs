//! Output of events and alerts: JSON lines to stdout or a file.

use std::{
    fs::OpenOptions,
    io::{self, BufWriter, Write},
};

use prometheus::IntCounter;
use serde::Serialize;

/// Writes one JSON object per line. Write failures are counted in
/// `mcp_monitor_output_errors_total{output=...}` and logged (at most once
/// per minute), never fatal: capture goes on.
pub struct JsonLines {
    out: Box<dyn Write + Send>,
    written: IntCounter,
    errors: IntCounter,
    name: &'static str,
    line: Vec<u8>,
    last_error_log: Option<std::time::Instant>,
}

/// Events and alerts may both go to stdout: they share one buffer, into
/// which every record goes whole, so lines never interleave.
static STDOUT: std::sync::LazyLock<std::sync::Mutex<BufWriter<io::Stdout>>> =
    std::sync::LazyLock::new(|| std::sync::Mutex::new(BufWriter::with_capacity(64 * 1024, io::stdout())));

struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        STDOUT.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        STDOUT.lock().unwrap_or_else(|e| e.into_inner()).write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        STDOUT.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

impl JsonLines {
    /// `-` is stdout; anything else a file, appended to (mode 0640 when
    /// created). `name` labels metrics and logs (`events`, `alerts`).
    pub fn open(target: &str, name: &'static str, written: IntCounter, errors: IntCounter) -> anyhow::Result<Self> {
        let out: Box<dyn Write + Send> = if target == "-" {
            Box::new(Stdout)
        } else {
            use std::os::unix::fs::OpenOptionsExt;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(target)
                .map_err(|e| anyhow::anyhow!("cannot open {name} file {target}: {e}"))?;
            Box::new(BufWriter::with_capacity(64 * 1024, f))
        };
        Ok(Self {
            out,
            written,
            errors,
            name,
            line: Vec::with_capacity(1024),
            last_error_log: None,
        })
    }

    /// Serialises and writes one record.
    pub fn write<T: Serialize>(&mut self, record: &T) {
        self.line.clear();
        if let Err(e) = serde_json::to_writer(&mut self.line, record) {
            self.failed(&format!("serialising {} failed: {e}", self.name));
            return;
        }
        self.line.push(b'\n');
        match self.out.write_all(&self.line) {
            Ok(()) => self.written.inc(),
            Err(e) => self.failed(&format!("writing {} failed: {e}", self.name)),
        }
    }

    /// Flushes buffered records.
    pub fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.failed(&format!("flushing {} failed: {e}", self.name));
        }
    }

    fn failed(&mut self, msg: &str) {
        self.errors.inc();
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
