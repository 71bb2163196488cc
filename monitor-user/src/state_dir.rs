//! The agent's state directory (`detection.state_dir`): the key for secret
//! fingerprints and the remembered tool definitions (`tools.json`), which
//! the detector hands over after each change and a thread of this module
//! writes, so the capture path never waits for a disk.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
};

use crate::{
    detect::integrity::{PersistedTools, ToolStateSink, STATE_FILE},
    metrics::Metrics,
};

/// Reads the tool definitions the previous run saved in `dir` and starts
/// the thread that saves this run's.
pub fn open_tool_state(dir: &Path, metrics: &Arc<Metrics>) -> anyhow::Result<PersistedTools> {
    std::fs::create_dir_all(dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the state directory {}: {e}.\nFix: create it writable by the agent, or set detection.state_dir",
            dir.display()
        )
    })?;
    let path = dir.join(STATE_FILE);
    let saved = match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    };
    Ok(PersistedTools {
        saved,
        sink: Arc::new(ToolStateFile::start(path, metrics.clone())?),
    })
}

/// Writes the latest tool state to `tools.json` (temp file, fsync, rename).
/// Only the newest state waits: one that arrives while a write is under way
/// replaces an older one that has not been written yet.
struct ToolStateFile {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    slot: Mutex<Slot>,
    wake: Condvar,
    path: PathBuf,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Slot {
    pending: Option<Vec<u8>>,
    closing: bool,
}

impl ToolStateFile {
    fn start(path: PathBuf, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            slot: Mutex::default(),
            wake: Condvar::new(),
            path,
            metrics,
        });
        let s = shared.clone();
        let writer = std::thread::Builder::new()
            .name("tool-state".into())
            .spawn(move || s.run())?;
        Ok(Self {
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }
}

impl ToolStateSink for ToolStateFile {
    fn save(&self, state: Vec<u8>) {
        let mut slot = self.shared.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.pending = Some(state);
        self.shared.wake.notify_one();
    }
}

impl Drop for ToolStateFile {
    /// Writes what is still pending before the agent exits.
    fn drop(&mut self) {
        self.shared.slot.lock().unwrap_or_else(|e| e.into_inner()).closing = true;
        self.shared.wake.notify_one();
        if let Some(w) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = w.join();
        }
    }
}

impl Shared {
    fn run(&self) {
        loop {
            let state = {
                let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
                while slot.pending.is_none() && !slot.closing {
                    slot = self.wake.wait(slot).unwrap_or_else(|e| e.into_inner());
                }
                match slot.pending.take() {
                    Some(s) => s,
                    None => return, // closing, nothing left
                }
            };
            if let Err(e) = write_atomically(&self.path, &state) {
                log::warn!(
                    "could not save the tool definitions to {}: {e}; rug pulls across restarts are missed until it can be written",
                    self.path.display()
                );
                self.metrics.output.errors.with_label_values(&["tool_state"]).inc();
            }
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Loads or creates the fingerprint key in `dir` (`fingerprint.key`, 32
/// random bytes, mode 0600).
pub fn load_or_create_key(dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let path = dir.join("fingerprint.key");
    match std::fs::read(&path) {
        Ok(k) if k.len() >= 16 => return Ok(k),
        Ok(_) => anyhow::bail!(
            "{} is too short to be a key; remove it to generate a new one",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    }
    std::fs::create_dir_all(dir)?;
    let mut key = vec![0u8; 32];
    getrandom_fill(&mut key)?;
    {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(&key)?;
        f.sync_all()?;
    }
    log::info!("created the fingerprint key {}", path.display());
    Ok(key)
}

fn getrandom_fill(buf: &mut [u8]) -> anyhow::Result<()> {
    // SAFETY: valid buffer pointer and length.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    anyhow::ensure!(
        n == buf.len() as isize,
        "getrandom failed: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_state_saved_is_on_disk_when_the_sink_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let first = open_tool_state(dir.path(), &metrics).unwrap();
        assert!(first.saved.is_none(), "nothing saved before the first run");
        for i in 0..100 {
            first.sink.save(format!("{{\"version\":1,\"n\":{i}}}").into_bytes());
        }
        drop(first);
        let second = open_tool_state(dir.path(), &metrics).unwrap();
        assert_eq!(second.saved.as_deref(), Some(&b"{\"version\":1,\"n\":99}"[..]));
        assert!(!dir.path().join("tools.json.tmp").exists());
    }

    #[test]
    fn a_failed_write_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let persisted = open_tool_state(dir.path(), &metrics).unwrap();
        // A directory where the file should be: the rename fails.
        std::fs::create_dir(dir.path().join(STATE_FILE)).unwrap();
        std::fs::write(dir.path().join(STATE_FILE).join("x"), b"").unwrap();
        persisted.sink.save(b"{}".to_vec());
        drop(persisted);
        assert_eq!(metrics.output.errors.with_label_values(&["tool_state"]).get(), 1);
    }

    #[test]
    fn the_fingerprint_key_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let k = load_or_create_key(dir.path()).unwrap();
        assert_eq!(k.len(), 32);
        assert_eq!(load_or_create_key(dir.path()).unwrap(), k);
    }
}
