//! Reading the agent's JSON lines: whole files for a report, followed
//! files (rotation and truncation included) or stdin for `top`. All three
//! go through one [`Lines`] assembler, so a line is bounded the same way
//! everywhere.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use anyhow::Context;
use mcp_monitor_pipeline::framing::memchr;

/// Longest line kept. The agent never writes longer ones (its payload cap
/// is lower); a longer line is skipped and counted, never held whole.
pub const MAX_LINE: usize = 16 << 20;

/// Assembles lines from a reader across calls: a partial line waits for
/// the rest; one longer than [`MAX_LINE`] is dropped as it streams past.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
    too_long: bool,
    /// Lines skipped (too long, not UTF-8).
    skipped: u64,
}

impl Lines {
    /// Hands every complete line `r` has now to `each`, reading at most
    /// about `budget` bytes. Returns the bytes read and whether `r` is at
    /// its end.
    fn drain(&mut self, r: &mut impl BufRead, budget: usize, each: &mut impl FnMut(&str)) -> (usize, bool) {
        let mut read = 0;
        while read < budget {
            let chunk = match r.fill_buf() {
                Ok(c) if !c.is_empty() => c,
                _ => return (read, true),
            };
            let (take, done) = match memchr(b'\n', chunk) {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            if !self.too_long {
                if self.partial.len() + take > MAX_LINE {
                    self.too_long = true;
                    self.partial.clear();
                } else {
                    self.partial.extend_from_slice(&chunk[..take]);
                }
            }
            r.consume(take);
            read += take;
            if done {
                self.end_line(each);
            }
        }
        (read, false)
    }

    /// Ends the line in progress (its newline, or the end of the input).
    fn end_line(&mut self, each: &mut impl FnMut(&str)) {
        if self.too_long {
            self.skipped += 1;
        } else if !self.partial.is_empty() {
            if self.partial.last() == Some(&b'\n') {
                self.partial.pop();
            }
            match std::str::from_utf8(&self.partial) {
                Ok(s) => each(s),
                Err(_) => self.skipped += 1,
            }
        }
        self.partial.clear();
        self.too_long = false;
    }
}

/// Reads `path` (or stdin for `-`) line by line into `each`. Returns the
/// number of lines skipped for being longer than [`MAX_LINE`] or not UTF-8.
pub fn read_lines(path: &Path, mut each: impl FnMut(&str)) -> anyhow::Result<u64> {
    let input: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
    };
    let mut r = BufReader::with_capacity(1 << 16, input);
    let mut lines = Lines::default();
    while !lines.drain(&mut r, usize::MAX, &mut each).1 {}
    // The last line, without its newline.
    lines.end_line(&mut each);
    Ok(lines.skipped)
}

/// Follows a file the agent appends to, like `tail -F`: new complete
/// lines on each [`Follower::poll`]; a file that was truncated or replaced
/// (log rotation) is read again from its start.
pub struct Follower {
    path: PathBuf,
    file: Option<BufReader<File>>,
    inode: u64,
    pos: u64,
    lines: Lines,
    /// Times the file was found truncated or replaced.
    pub reopened: u64,
}

impl Follower {
    /// Follows `path`; `from_end`: skip what is already in it.
    pub fn new(path: &Path, from_end: bool) -> Follower {
        let mut f = Follower {
            path: path.to_owned(),
            file: None,
            inode: 0,
            pos: 0,
            lines: Lines::default(),
            reopened: 0,
        };
        if f.open() && from_end {
            if let Some(file) = &mut f.file {
                f.pos = file.seek(SeekFrom::End(0)).unwrap_or(0);
            }
        }
        f
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines skipped (too long, not UTF-8).
    pub fn skipped(&self) -> u64 {
        self.lines.skipped
    }

    fn open(&mut self) -> bool {
        match File::open(&self.path) {
            Ok(file) => {
                self.inode = file.metadata().map(|m| m.ino()).unwrap_or(0);
                self.file = Some(BufReader::with_capacity(1 << 16, file));
                self.pos = 0;
                self.lines = Lines {
                    skipped: self.lines.skipped,
                    ..Lines::default()
                };
                true
            }
            Err(_) => false,
        }
    }

    /// Whether the file exists (it may appear later).
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Hands every new complete line to `each`, at most `budget` bytes per
    /// call so a huge backlog does not freeze the screen. A file replaced
    /// under the same name (rotation) is read to its end first.
    pub fn poll(&mut self, budget: usize, mut each: impl FnMut(&str)) {
        match std::fs::metadata(&self.path) {
            Ok(_) if self.file.is_none() => {
                self.open();
            }
            Ok(m) if m.ino() != self.inode => {
                // What the agent wrote before it moved to the new file.
                if self.drain(budget, &mut each) >= budget {
                    return;
                }
                self.reopened += 1;
                self.open();
            }
            Ok(m) if m.len() < self.pos => {
                self.reopened += 1;
                self.open();
            }
            Ok(_) => {}
            Err(_) => return,
        }
        self.drain(budget, &mut each);
    }

    fn drain(&mut self, budget: usize, each: &mut impl FnMut(&str)) -> usize {
        let Some(file) = &mut self.file else { return 0 };
        let (read, _) = self.lines.drain(file, budget, each);
        self.pos += read as u64;
        read
    }
}

/// Bytes of stdin lines read ahead of the view: the reader waits past it.
const STDIN_AHEAD: usize = 64 << 20;

/// Lines of standard input, read on a thread of their own (the terminal
/// view reads its keys from /dev/tty meanwhile).
pub struct StdinLines {
    rx: mpsc::Receiver<String>,
    queued: Arc<AtomicUsize>,
    skipped: Arc<AtomicU64>,
}

impl StdinLines {
    /// The next line if one is ready; `Err(Disconnected)` once stdin ended.
    pub fn try_recv(&self) -> Result<String, mpsc::TryRecvError> {
        let l = self.rx.try_recv()?;
        self.queued.fetch_sub(l.len(), Ordering::Relaxed);
        Ok(l)
    }
    /// Lines skipped (longer than [`MAX_LINE`], or not UTF-8).
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}

/// Starts reading standard input.
pub fn stdin_lines() -> StdinLines {
    let (tx, rx) = mpsc::channel::<String>();
    let queued = Arc::new(AtomicUsize::new(0));
    let skipped = Arc::new(AtomicU64::new(0));
    let (q, sk) = (queued.clone(), skipped.clone());
    std::thread::spawn(move || {
        let mut r = BufReader::new(std::io::stdin());
        let mut lines = Lines::default();
        // The view has gone: stop reading.
        let gone = std::cell::Cell::new(false);
        let mut send = |s: &str| {
            while q.load(Ordering::Relaxed) > STDIN_AHEAD {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            q.fetch_add(s.len(), Ordering::Relaxed);
            if tx.send(s.to_owned()).is_err() {
                gone.set(true);
            }
        };
        loop {
            let (_, end) = lines.drain(&mut r, 1 << 16, &mut send);
            sk.store(lines.skipped, Ordering::Relaxed);
            if gone.get() {
                return;
            }
            if end {
                lines.end_line(&mut send);
                sk.store(lines.skipped, Ordering::Relaxed);
                return;
            }
        }
    });
    StdinLines { rx, queued, skipped }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn follower_sees_appends_partial_lines_rotation_and_truncation() {
        let dir = std::env::temp_dir().join(format!("mcpm-follow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("events.jsonl");
        std::fs::write(&p, "a\nb\n").unwrap();
        let mut f = Follower::new(&p, false);
        let mut got = Vec::new();
        f.poll(usize::MAX, |l| got.push(l.to_owned()));
        assert_eq!(got, ["a", "b"]);
        let mut w = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        w.write_all(b"c\npart").unwrap();
        f.poll(usize::MAX, |l| got.push(l.to_owned()));
        assert_eq!(got, ["a", "b", "c"]);
        w.write_all(b"ial\n").unwrap();
        f.poll(usize::MAX, |l| got.push(l.to_owned()));
        assert_eq!(got.last().unwrap(), "partial");
        // Rotation: a new file under the same name.
        std::fs::rename(&p, dir.join("events.jsonl.1")).unwrap();
        std::fs::write(&p, "new\n").unwrap();
        f.poll(usize::MAX, |l| got.push(l.to_owned()));
        assert_eq!(got.last().unwrap(), "new");
        // Truncation in place.
        std::fs::write(&p, "").unwrap();
        f.poll(usize::MAX, |l| got.push(l.to_owned()));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"again\n")
            .unwrap();
        f.poll(usize::MAX, |l| got.push(l.to_owned()));
        assert_eq!(got.last().unwrap(), "again");
        assert_eq!(f.reopened, 2);
        // Lines written to the old file after the last read, before the
        // rotation, are not lost.
        let mut old = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        old.write_all(b"late\n").unwrap();
        std::fs::rename(&p, dir.join("events.jsonl.2")).unwrap();
        std::fs::write(&p, "fresh\n").unwrap();
        f.poll(usize::MAX, |l| got.push(l.to_owned()));
        assert_eq!(got[got.len() - 2..], ["late", "fresh"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn overlong_and_invalid_lines_are_skipped_and_counted() {
        let dir = std::env::temp_dir().join(format!("mcpm-lines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("e");
        let mut data = b"ok\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        data.extend_from_slice(b"\n\xff\xfe\nlast");
        std::fs::write(&p, &data).unwrap();
        let mut got = Vec::new();
        let skipped = read_lines(&p, |l| got.push(l.len())).unwrap();
        assert_eq!(got, [2, 4]);
        assert_eq!(skipped, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
