//! File sink: one alert per line, size-based rotation, fsync policy.
//!
//! Rotation renames `path` to `path.1` (and `path.1` to `path.2`...,
//! deleting the oldest beyond `max_files`) before the write that would make
//! the file pass `max_bytes`, so a reader tailing by name sees whole lines.
//! Only regular files rotate and sync: `/dev/null`, `/dev/stdout` or a named
//! pipe into `jq` are written to, never renamed, and cannot be synced.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::mpsc::Receiver,
    time::{Duration, Instant},
};

use super::{encode, next_alert, ErrorLog, FileSink, Format, Fsync, Queued, SinkMetrics};
use crate::detect::alert::Alert;

/// A JSON-lines file that rotates.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    out: BufWriter<File>,
    size: u64,
    /// A regular file (not a device, pipe or socket): rotated and synced.
    regular: bool,
}

impl RotatingFile {
    /// Opens `path` for appending (mode 0640 when created).
    pub fn open(path: &Path, max_bytes: u64, max_files: u32) -> io::Result<Self> {
        let f = Self::open_file(path)?;
        let meta = f.metadata()?;
        Ok(RotatingFile {
            path: path.to_owned(),
            max_bytes,
            max_files,
            out: BufWriter::with_capacity(64 * 1024, f),
            size: meta.len(),
            regular: meta.is_file(),
        })
    }

    fn open_file(path: &Path) -> io::Result<File> {
        OpenOptions::new().create(true).append(true).mode(0o640).open(path)
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        p.into()
    }

    /// Writes one line (a newline is added).
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.regular && self.max_bytes > 0 && self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(line)?;
        self.out.write_all(b"\n")?;
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        if self.max_files == 0 {
            fs::remove_file(&self.path)?;
        } else {
            let _ = fs::remove_file(self.rotated(self.max_files));
            for n in (1..self.max_files).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            fs::rename(&self.path, self.rotated(1))?;
        }
        self.out = BufWriter::with_capacity(64 * 1024, Self::open_file(&self.path)?);
        self.size = 0;
        Ok(())
    }

    /// Hands buffered lines to the kernel.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and forces the data to disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.out.flush()?;
        if !self.regular {
            return Ok(());
        }
        self.out.get_ref().sync_data()
    }
}

/// The thread behind a `type = "file"` sink.
pub struct FileWorker {
    file: RotatingFile,
    format: Format,
    fsync: Fsync,
    metrics: SinkMetrics,
    log: ErrorLog,
}

impl FileWorker {
    /// Opens the file now, so a bad path fails at start-up.
    pub fn open(cfg: &FileSink, name: &str, metrics: SinkMetrics) -> anyhow::Result<Self> {
        let file = RotatingFile::open(&cfg.path, cfg.max_bytes, cfg.max_files).map_err(|e| {
            anyhow::anyhow!(
                "sink {name}: cannot open {}: {e}.\nFix: create the directory, writable by the agent, or change the sink's path",
                cfg.path.display()
            )
        })?;
        Ok(FileWorker {
            file,
            format: cfg.format,
            fsync: cfg.fsync,
            metrics,
            log: ErrorLog::new(name),
        })
    }

    /// Writes alerts until the queue closes.
    pub fn run(mut self, rx: Receiver<Queued>) {
        let mut dirty = false;
        let mut last_sync = Instant::now();
        loop {
            let next = next_alert(&rx, Duration::from_millis(200));
            if let Ok(Some(alert)) = &next {
                self.write(alert);
                dirty = true;
                // Take what else is waiting before flushing.
                while let Ok(a) = rx.try_recv() {
                    self.write(&a);
                }
                if let Err(e) = self.file.flush() {
                    self.log.error(&format!("write failed: {e}"));
                }
                if self.fsync == Fsync::Always {
                    self.sync();
                    dirty = false;
                }
            }
            if dirty && self.fsync == Fsync::Interval && last_sync.elapsed() >= Duration::from_secs(1) {
                self.sync();
                dirty = false;
                last_sync = Instant::now();
            }
            if next.is_err() {
                break;
            }
        }
        if self.fsync != Fsync::Never {
            self.sync();
        } else if let Err(e) = self.file.flush() {
            self.log.error(&format!("write failed: {e}"));
        }
    }

    fn write(&mut self, alert: &Alert) {
        let line = match encode(alert, self.format) {
            Ok(l) => l,
            Err(e) => {
                self.metrics.gave_up("encode_error", 1);
                self.log.error(&format!("cannot encode an alert: {e}"));
                return;
            }
        };
        let t = Instant::now();
        match self.file.write_line(&line) {
            Ok(()) => {
                self.metrics.delivered(1);
                self.metrics.delivery.observe(t.elapsed().as_secs_f64());
            }
            Err(e) => {
                self.metrics.gave_up("write_error", 1);
                self.log.error(&format!("write failed: {e}"));
            }
        }
    }

    fn sync(&mut self) {
        if let Err(e) = self.file.sync() {
            self.log.error(&format!("fsync failed: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_is_written_to_but_never_rotated_nor_synced() {
        use std::os::unix::fs::FileTypeExt;
        let d = std::env::temp_dir().join(format!("mcp-fifo-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let p = d.join("events.pipe");
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = {
            let p = p.clone();
            std::thread::spawn(move || fs::read_to_string(p).unwrap())
        };
        let mut f = RotatingFile::open(&p, 100, 1).unwrap();
        for i in 0..20 {
            f.write_line(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(40)).as_bytes())
                .unwrap();
        }
        f.sync().expect("no fsync of a pipe");
        drop(f);
        assert_eq!(reader.join().unwrap().lines().count(), 20, "every line went through");
        assert!(
            fs::metadata(&p).unwrap().file_type().is_fifo(),
            "the pipe is still there"
        );
        assert!(!d.join("events.pipe.1").exists(), "a pipe is never renamed");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let d = std::env::temp_dir().join(format!("mcp-rotate-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let p = d.join("a.jsonl");
        let mut f = RotatingFile::open(&p, 1000, 2).unwrap();
        for i in 0..100 {
            f.write_line(format!("{{\"n\":\"{i:04}\",\"pad\":\"{}\"}}", "x".repeat(80)).as_bytes())
                .unwrap();
        }
        f.sync().unwrap();
        let names: Vec<String> = {
            let mut v: Vec<String> = fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names, ["a.jsonl", "a.jsonl.1", "a.jsonl.2"]);
        for n in &names {
            let text = fs::read_to_string(d.join(n)).unwrap();
            assert!(text.len() <= 1000, "{n} is {} bytes", text.len());
            for line in text.lines() {
                serde_json::from_str::<serde_json::Value>(line).expect("whole lines only");
            }
        }
        // The newest lines are in the live file, older ones in .1.
        assert!(fs::read_to_string(&p).unwrap().contains("\"n\":\"0099\""));
        fs::remove_dir_all(&d).unwrap();
    }
}
