//! Reading the agent's JSON lines: whole files for a report, followed
//! files (rotation and truncation included) or stdin for `top`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::Context;

/// Longest line kept. The agent never writes longer ones (its payload cap
/// is lower); a longer line is skipped and counted, never held whole.
pub const MAX_LINE: usize = 16 << 20;

/// Reads `path` (or stdin for `-`) line by line into `each`. Returns the
/// number of lines skipped for being longer than [`MAX_LINE`] or not UTF-8.
pub fn read_lines(path: &Path, mut each: impl FnMut(&str)) -> anyhow::Result<u64> {
    let input: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
    };
    let mut r = BufReader::with_capacity(1 << 16, input);
    let mut skipped = 0;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match read_bounded_line(&mut r, &mut buf)? {
            Line::End => return Ok(skipped),
            Line::TooLong => skipped += 1,
            Line::Complete | Line::Partial => match std::str::from_utf8(&buf) {
                Ok(s) => each(s),
                Err(_) => skipped += 1,
            },
        }
    }
}

enum Line {
    Complete,
    /// The last line, without its newline.
    Partial,
    TooLong,
    End,
}

/// One line into `buf`, never more than [`MAX_LINE`] bytes of it.
fn read_bounded_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Line> {
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => Line::End,
                (true, true) => Line::TooLong,
                (true, false) => Line::Partial,
            });
        }
        any = true;
        let (take, done) = match memchr_newline(chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            if buf.len() + take > MAX_LINE {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        r.consume(take);
        if done {
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            return Ok(if too_long { Line::TooLong } else { Line::Complete });
        }
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// Follows a file the agent appends to, like `tail -F`: new complete
/// lines on each [`Follower::poll`]; a file that was truncated or replaced
/// (log rotation) is read again from its start.
pub struct Follower {
    path: PathBuf,
    file: Option<BufReader<File>>,
    inode: u64,
    pos: u64,
    partial: Vec<u8>,
    too_long: bool,
    /// Lines skipped (too long, not UTF-8).
    pub skipped: u64,
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
            partial: Vec::new(),
            too_long: false,
            skipped: 0,
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

    fn open(&mut self) -> bool {
        match File::open(&self.path) {
            Ok(file) => {
                self.inode = file.metadata().map(|m| m.ino()).unwrap_or(0);
                self.file = Some(BufReader::with_capacity(1 << 16, file));
                self.pos = 0;
                self.partial.clear();
                self.too_long = false;
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

    /// Reads complete lines from the open file; returns the bytes read.
    fn drain(&mut self, budget: usize, each: &mut impl FnMut(&str)) -> usize {
        let Some(file) = &mut self.file else { return 0 };
        let mut read = 0;
        while read < budget {
            let chunk = match file.fill_buf() {
                Ok(c) if !c.is_empty() => c,
                _ => break,
            };
            let (take, done) = match memchr_newline(chunk) {
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
            file.consume(take);
            self.pos += take as u64;
            read += take;
            if done {
                if self.too_long {
                    self.skipped += 1;
                } else {
                    self.partial.pop();
                    match std::str::from_utf8(&self.partial) {
                        Ok(s) => each(s),
                        Err(_) => self.skipped += 1,
                    }
                }
                self.partial.clear();
                self.too_long = false;
            }
        }
        read
    }
}

/// Bytes of stdin lines read ahead of the view: the reader waits past it.
const STDIN_AHEAD: usize = 64 << 20;

/// Lines of standard input, read on a thread of their own (the terminal
/// view reads its keys from /dev/tty meanwhile).
pub struct StdinLines {
    rx: mpsc::Receiver<String>,
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    skipped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl StdinLines {
    /// The next line if one is ready; `Err(Disconnected)` once stdin ended.
    pub fn try_recv(&self) -> Result<String, mpsc::TryRecvError> {
        let l = self.rx.try_recv()?;
        self.queued.fetch_sub(l.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(l)
    }
    /// Lines skipped (longer than [`MAX_LINE`], or not UTF-8).
    pub fn skipped(&self) -> u64 {
        self.skipped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Starts reading standard input.
pub fn stdin_lines() -> StdinLines {
    use std::sync::atomic::Ordering;
    let (tx, rx) = mpsc::channel::<String>();
    let queued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let skipped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (q, sk) = (queued.clone(), skipped.clone());
    std::thread::spawn(move || {
        let mut r = BufReader::new(std::io::stdin());
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match read_bounded_line(&mut r, &mut buf) {
                Ok(Line::End) | Err(_) => return,
                Ok(Line::TooLong) => {
                    sk.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => match std::str::from_utf8(&buf) {
                    Ok(s) => {
                        while q.load(Ordering::Relaxed) > STDIN_AHEAD {
                            std::thread::sleep(std::time::Duration::from_millis(20));
                        }
                        q.fetch_add(s.len(), Ordering::Relaxed);
                        if tx.send(s.to_owned()).is_err() {
                            return;
                        }
                    }
                    Err(_) => {
                        sk.fetch_add(1, Ordering::Relaxed);
                    }
                },
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
