//! Output of events and alerts: JSON lines to stdout or a file (rotated by
//! size, synced per policy).

use std::{
    io::{self, BufWriter, Write},
    path::Path,
    time::{Duration, Instant},
};

use prometheus::IntCounter;

use crate::deliver::{file::RotatingFile, Fsync};
use serde::Serialize;

/// How a file output rotates and syncs (`[output]` settings).
#[derive(Clone, Copy, Debug)]
pub struct FilePolicy {
    /// Rotate before the file passes this size (0: never).
    pub rotate_bytes: u64,
    /// Rotated files kept (`file.1` newest).
    pub rotate_files: u32,
    /// When the file is forced to disk (`output.fsync`, default `interval`).
    pub fsync: Fsync,
}

enum Target {
    Stdout(Stdout),
    File {
        file: RotatingFile,
        fsync: Fsync,
        dirty: bool,
        last_sync: Instant,
    },
}

/// Writes one JSON object per line. Write failures are counted in
/// `mcp_monitor_output_errors_total{output=...}` and logged (at most once
/// per minute), never fatal: capture goes on.
pub struct JsonLines {
    out: Target,
    written: IntCounter,
    errors: IntCounter,
    name: &'static str,
    line: Vec<u8>,
    last_error_log: Option<Instant>,
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
    /// created), rotated and synced per `policy`. `name` labels metrics and
    /// logs (`events`, `alerts`).
    pub fn open(
        target: &str,
        name: &'static str,
        policy: FilePolicy,
        written: IntCounter,
        errors: IntCounter,
    ) -> anyhow::Result<Self> {
        let out = if target == "-" {
            Target::Stdout(Stdout)
        } else {
            let file = RotatingFile::open(Path::new(target), policy.rotate_bytes, policy.rotate_files)
                .map_err(|e| anyhow::anyhow!("cannot open {name} file {target}: {e}"))?;
            Target::File {
                file,
                fsync: policy.fsync,
                dirty: false,
                last_sync: Instant::now(),
            }
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
        let r = match &mut self.out {
            Target::Stdout(s) => {
                self.line.push(b'\n');
                s.write_all(&self.line)
            }
            Target::File { file, fsync, dirty, .. } => {
                *dirty = true;
                file.write_line(&self.line)
                    .and_then(|()| if *fsync == Fsync::Always { file.sync() } else { Ok(()) })
            }
        };
        match r {
            Ok(()) => self.written.inc(),
            Err(e) => self.failed(&format!("writing {} failed: {e}", self.name)),
        }
    }

    /// Flushes buffered records; with `fsync = "interval"`, syncs a file
    /// written to at most once a second.
    pub fn flush(&mut self) {
        let r = match &mut self.out {
            Target::Stdout(s) => s.flush(),
            Target::File {
                file,
                fsync,
                dirty,
                last_sync,
            } => {
                if *fsync == Fsync::Interval && *dirty && last_sync.elapsed() >= Duration::from_secs(1) {
                    *dirty = false;
                    *last_sync = Instant::now();
                    file.sync()
                } else {
                    file.flush()
                }
            }
        };
        if let Err(e) = r {
            self.failed(&format!("flushing {} failed: {e}", self.name));
        }
    }

    /// Flushes, and syncs a file unless `fsync = "never"` (at exit).
    pub fn close(&mut self) {
        self.flush();
        if let Target::File { file, fsync, .. } = &mut self.out {
            if *fsync != Fsync::Never {
                if let Err(e) = file.sync() {
                    self.failed(&format!("syncing {} failed: {e}", self.name));
                }
            }
        }
    }

    fn failed(&mut self, msg: &str) {
        self.errors.inc();
        let now = Instant::now();
        if self
            .last_error_log
            .is_none_or(|t| now.duration_since(t).as_secs() >= 60)
        {
            self.last_error_log = Some(now);
            log::error!("{msg} (further errors counted in mcp_monitor_output_errors_total)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_output_rotates_whole_lines() {
        let dir = std::env::temp_dir().join(format!("mcp-output-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let policy = FilePolicy {
            rotate_bytes: 2048,
            rotate_files: 3,
            fsync: Fsync::Interval,
        };
        let c = || IntCounter::new("c", "c").unwrap();
        let (written, errors) = (c(), c());
        let mut out = JsonLines::open(
            path.to_str().unwrap(),
            "events",
            policy,
            written.clone(),
            errors.clone(),
        )
        .unwrap();
        for i in 0..200 {
            out.write(&serde_json::json!({"n": i, "pad": "x".repeat(50)}));
            out.flush();
        }
        out.close();
        assert_eq!((written.get(), errors.get()), (200, 0));
        let mut seen = Vec::new();
        for f in ["events.jsonl", "events.jsonl.1", "events.jsonl.2", "events.jsonl.3"] {
            let text = std::fs::read_to_string(dir.join(f)).unwrap();
            assert!(text.len() <= 2048);
            for l in text.lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                seen.push(v["n"].as_u64().unwrap());
            }
        }
        assert!(!dir.join("events.jsonl.4").exists());
        // The newest records survive, in order across the files.
        seen.sort_unstable();
        assert_eq!(*seen.last().unwrap(), 199);
        assert!(seen.windows(2).all(|w| w[1] == w[0] + 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
