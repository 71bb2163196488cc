//! A bounded on-disk queue of encoded alerts, so that alerts survive a
//! receiver outage and an agent restart.
//!
//! Layout of the spool directory (mode 0700):
//!
//! - `seg-<16 digits>.jsonl`: segments, one record per line, appended to in
//!   order; a new segment starts when the current one passes
//!   [`Spool::segment_bytes`].
//! - `cursor`: `<segment number> <byte offset>` of the first record not yet
//!   delivered, replaced atomically (write, fsync, rename) after each
//!   delivered batch.
//!
//! When the spool would exceed its size, the oldest segment is deleted and
//! its undelivered records are counted as dropped: the caller turns that into
//! `mcp_monitor_sink_dropped_total{reason="spool_full"}`. A record torn by a
//! crash in the middle of a write (a last line without its newline) is cut
//! off when the spool is opened.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

/// Position of a record: segment number and byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Segment number (the `<n>` of `seg-<n>.jsonl`).
    pub segment: u64,
    /// Byte offset within that segment.
    pub offset: u64,
}

/// Records read for delivery, where they start, and where the spool
/// continues after them.
#[derive(Debug, Default)]
pub struct Batch {
    /// Encoded alerts, one per record (the line without its newline).
    pub records: Vec<Vec<u8>>,
    /// Position of the first record (the cursor when the batch was read).
    pub start: Position,
    /// Position just after the last record; `None` when the batch is empty.
    pub next: Option<Position>,
}

/// The spool of one sink.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// Segments present, oldest first, with their sizes.
    segments: Vec<(u64, u64)>,
    /// First undelivered record.
    cursor: Position,
    /// Records appended but not yet delivered (exact after open: counted).
    pending: u64,
    writer: Option<File>,
}

fn segment_name(n: u64) -> String {
    format!("seg-{n:016}.jsonl")
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, holding at most `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let mut segments: Vec<(u64, u64)> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|s| s.strip_prefix("seg-"))
                .and_then(|s| s.strip_suffix(".jsonl"))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            segments.push((n, entry.metadata()?.len()));
        }
        segments.sort_unstable();
        // A torn last record (crash mid-write) is cut off.
        if let Some(last) = segments.last_mut() {
            let path = dir.join(segment_name(last.0));
            let mut f = OpenOptions::new().read(true).write(true).open(&path)?;
            let keep = complete_prefix(&mut f, last.1)?;
            if keep != last.1 {
                f.set_len(keep)?;
                last.1 = keep;
            }
        }
        let cursor = match fs::read_to_string(dir.join("cursor")) {
            Ok(s) => {
                let mut it = s.split_whitespace().map(|x| x.parse::<u64>());
                match (it.next(), it.next()) {
                    (Some(Ok(segment)), Some(Ok(offset))) => Position { segment, offset },
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "{} is damaged; remove it to redeliver the whole spool",
                                dir.join("cursor").display()
                            ),
                        ))
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Position {
                segment: segments.first().map_or(0, |s| s.0),
                offset: 0,
            },
            Err(e) => return Err(e),
        };
        let mut spool = Spool {
            dir: dir.to_owned(),
            max_bytes: max_bytes.max(4096),
            segments,
            cursor,
            pending: 0,
            writer: None,
        };
        // Segments entirely before the cursor were delivered.
        while spool.segments.len() > 1 && spool.segments[0].0 < spool.cursor.segment {
            let (n, _) = spool.segments.remove(0);
            let _ = fs::remove_file(spool.dir.join(segment_name(n)));
        }
        if spool.segments.first().is_some_and(|s| s.0 > spool.cursor.segment) {
            spool.cursor = Position {
                segment: spool.segments[0].0,
                offset: 0,
            };
        }
        spool.pending = spool.count_from(spool.cursor)?;
        Ok(spool)
    }

    /// Size at which a new segment starts: an eighth of the spool, so that
    /// dropping the oldest frees a bounded share.
    pub fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 8).clamp(1024, 16 << 20)
    }

    /// Records waiting for delivery.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.1).sum()
    }

    /// Appends one record (which must not contain a newline). Returns how
    /// many undelivered records were dropped to make room.
    pub fn append(&mut self, record: &[u8]) -> io::Result<u64> {
        debug_assert!(!record.contains(&b'\n'));
        let len = record.len() as u64 + 1;
        let need_new = match self.segments.last() {
            None => true,
            Some(&(_, size)) => size > 0 && size + len > self.segment_bytes(),
        };
        if need_new {
            // What the sink already synced is on disk; the rest of the
            // segment being closed is synced now, since later syncs only
            // see the new one.
            if let Some(w) = &self.writer {
                w.sync_data()?;
            }
            let n = self.segments.last().map_or(self.cursor.segment, |s| s.0 + 1);
            self.segments.push((n, 0));
            self.writer = None;
        }
        let &(n, _) = self.segments.last().expect("a segment");
        if self.writer.is_none() {
            self.writer = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(self.dir.join(segment_name(n)))?,
            );
        }
        let mut line = Vec::with_capacity(record.len() + 1);
        line.extend_from_slice(record);
        line.push(b'\n');
        let writer = self.writer.as_mut().expect("writer");
        if let Err(e) = writer.write_all(&line) {
            // Cut off what part of the record was written (disk full), so
            // that the next record starts on a line of its own.
            let size = self.segments.last().expect("a segment").1;
            if let Err(e2) = writer.set_len(size) {
                log::error!("spool: cannot cut off a partly written record ({e2}); it is skipped when read");
            }
            return Err(e);
        }
        self.segments.last_mut().expect("a segment").1 += len;
        self.pending += 1;
        let mut dropped = 0;
        while self.bytes() > self.max_bytes && self.segments.len() > 1 {
            match self.drop_oldest() {
                Ok(n) => dropped += n,
                Err(e) => {
                    // The record is written; the spool is only over size.
                    log::error!("spool: cannot delete the oldest segment: {e}");
                    break;
                }
            }
        }
        Ok(dropped)
    }

    /// Counts the records waiting afresh (after a write that failed).
    pub fn recount(&mut self) -> io::Result<()> {
        self.pending = self.count_from(self.cursor)?;
        Ok(())
    }

    /// Flushes appended records to the disk.
    pub fn sync(&mut self) -> io::Result<()> {
        match &self.writer {
            Some(w) => w.sync_data(),
            None => Ok(()),
        }
    }

    /// A handle on the segment being written, to sync it without holding
    /// the spool (appends go on meanwhile).
    pub fn sync_handle(&self) -> Option<File> {
        self.writer.as_ref().and_then(|w| w.try_clone().ok())
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Up to `max_records` (and about `max_bytes`) undelivered records, from
    /// the cursor on.
    pub fn peek(&self, max_records: usize, max_bytes: usize) -> io::Result<Batch> {
        let mut batch = Batch {
            start: self.cursor,
            ..Batch::default()
        };
        let mut pos = self.cursor;
        let mut bytes = 0;
        for &(n, size) in self.segments.iter().filter(|s| s.0 >= self.cursor.segment) {
            let start = if n == pos.segment { pos.offset } else { 0 };
            if start >= size {
                continue;
            }
            let mut f = File::open(self.dir.join(segment_name(n)))?;
            f.seek(SeekFrom::Start(start))?;
            let mut r = BufReader::new(f.take(size - start));
            let mut offset = start;
            loop {
                if batch.records.len() >= max_records || (bytes >= max_bytes && !batch.records.is_empty()) {
                    batch.next = Some(Position { segment: n, offset });
                    return Ok(batch);
                }
                let mut line = Vec::new();
                let got = r.read_until(b'\n', &mut line)?;
                if got == 0 || line.last() != Some(&b'\n') {
                    break;
                }
                offset += got as u64;
                line.pop();
                bytes += line.len();
                batch.records.push(line);
            }
            pos = Position { segment: n, offset };
        }
        if !batch.records.is_empty() {
            batch.next = Some(pos);
        }
        Ok(batch)
    }

    /// Marks everything before `next` delivered (`records` of them, read
    /// from the cursor on).
    pub fn commit(&mut self, next: Position, records: u64) -> io::Result<()> {
        save_cursor(&self.dir, next)?;
        let start = self.cursor;
        self.advance(start, next, records).map(|_| ())
    }

    /// Moves the cursor to `next` after a batch read from `start` (`records`
    /// of them) was delivered and [`save_cursor`] recorded it. Returns how
    /// many records this settled: fewer than `records` when a full spool
    /// dropped some of them meanwhile (they were counted as dropped then).
    pub fn advance(&mut self, start: Position, next: Position, records: u64) -> io::Result<u64> {
        if next <= self.cursor {
            return Ok(0);
        }
        let settled = if start >= self.cursor {
            records
        } else {
            self.count_between(self.cursor, next)?
        };
        self.cursor = next;
        self.pending = self.pending.saturating_sub(settled);
        // Delivered segments other than the one being written go.
        while self.segments.len() > 1 && self.segments[0].0 < self.cursor.segment {
            let (n, _) = self.segments.remove(0);
            fs::remove_file(self.dir.join(segment_name(n)))?;
        }
        if let Some(&(n, size)) = self.segments.first() {
            if self.segments.len() > 1 && n == self.cursor.segment && self.cursor.offset >= size {
                self.segments.remove(0);
                fs::remove_file(self.dir.join(segment_name(n)))?;
                self.cursor = Position {
                    segment: self.segments[0].0,
                    offset: 0,
                };
            }
        }
        Ok(settled)
    }

    /// Deletes the oldest segment; returns its undelivered records.
    fn drop_oldest(&mut self) -> io::Result<u64> {
        let (n, size) = self.segments.remove(0);
        let from = if n == self.cursor.segment {
            self.cursor.offset
        } else {
            0
        };
        let lost = if n >= self.cursor.segment {
            count_lines(&self.dir.join(segment_name(n)), from, size)?
        } else {
            0
        };
        fs::remove_file(self.dir.join(segment_name(n)))?;
        if self.cursor.segment <= n {
            self.cursor = Position {
                segment: self.segments[0].0,
                offset: 0,
            };
        }
        self.pending = self.pending.saturating_sub(lost);
        Ok(lost)
    }

    fn count_from(&self, from: Position) -> io::Result<u64> {
        self.count_between(
            from,
            Position {
                segment: u64::MAX,
                offset: 0,
            },
        )
    }

    /// Records from `from` up to (not including) `to`.
    fn count_between(&self, from: Position, to: Position) -> io::Result<u64> {
        let mut total = 0;
        for &(n, size) in self
            .segments
            .iter()
            .filter(|s| s.0 >= from.segment && s.0 <= to.segment)
        {
            let start = if n == from.segment { from.offset } else { 0 };
            let end = if n == to.segment { to.offset.min(size) } else { size };
            total += count_lines(&self.dir.join(segment_name(n)), start, end)?;
        }
        Ok(total)
    }
}

/// Records durably that everything before `next` was delivered (write,
/// fsync, rename). Only the sink's sender calls it, so it needs no lock.
pub fn save_cursor(dir: &Path, next: Position) -> io::Result<()> {
    let tmp = dir.join("cursor.tmp");
    {
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(f, "{} {}", next.segment, next.offset)?;
        f.sync_data()?;
    }
    fs::rename(&tmp, dir.join("cursor"))
}

fn count_lines(path: &Path, from: u64, size: u64) -> io::Result<u64> {
    if from >= size {
        return Ok(0);
    }
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = size - from;
    let mut n = 0;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let got = f.read(&mut buf[..want])?;
        if got == 0 {
            break;
        }
        n += memchr::memchr_iter(b'\n', &buf[..got]).count() as u64;
        left -= got as u64;
    }
    Ok(n)
}

/// Length of the longest prefix of `f` (of `size` bytes) ending in a newline.
fn complete_prefix(f: &mut File, size: u64) -> io::Result<u64> {
    let mut end = size;
    let mut buf = vec![0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        f.seek(SeekFrom::Start(start))?;
        let chunk = &mut buf[..(end - start) as usize];
        f.read_exact(chunk)?;
        if let Some(i) = memchr::memrchr(b'\n', chunk) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mcp-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn drain(s: &mut Spool) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let b = s.peek(7, 1 << 20).unwrap();
            let Some(next) = b.next else { break };
            out.extend(b.records.iter().map(|r| String::from_utf8(r.clone()).unwrap()));
            s.commit(next, b.records.len() as u64).unwrap();
        }
        out
    }

    #[test]
    fn delivers_in_order_across_segments_and_reopens() {
        let d = tmp("order");
        let mut s = Spool::open(&d, 64 * 1024).unwrap();
        for i in 0..500 {
            assert_eq!(s.append(format!("{{\"n\":{i}}}").as_bytes()).unwrap(), 0);
        }
        assert_eq!(s.pending(), 500);
        // Deliver part, then "restart".
        let b = s.peek(120, 1 << 20).unwrap();
        s.commit(b.next.unwrap(), 120).unwrap();
        drop(s);
        let mut s = Spool::open(&d, 64 * 1024).unwrap();
        assert_eq!(s.pending(), 380);
        let got = drain(&mut s);
        let want: Vec<String> = (120..500).map(|i| format!("{{\"n\":{i}}}")).collect();
        assert_eq!(got, want);
        assert_eq!(s.pending(), 0);
        // Delivered segments are gone but the one being written.
        assert!(
            fs::read_dir(&d)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("seg-"))
                .count()
                <= 1
        );
        s.append(b"after").unwrap();
        assert_eq!(drain(&mut s), ["after"]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn full_spool_drops_the_oldest_and_counts_them() {
        let d = tmp("full");
        let mut s = Spool::open(&d, 8 * 1024).unwrap();
        let rec = vec![b'x'; 99];
        let mut dropped = 0;
        for _ in 0..1000 {
            dropped += s.append(&rec).unwrap();
        }
        assert!(s.bytes() <= 8 * 1024, "{} bytes", s.bytes());
        assert!(dropped > 0);
        assert_eq!(dropped + s.pending(), 1000, "every record is delivered or counted");
        let left = drain(&mut s).len() as u64;
        assert_eq!(left + dropped, 1000);
        fs::remove_dir_all(&d).unwrap();
    }

    /// A batch in flight while a full spool drops the segment it came
    /// from: its commit settles only what was not already counted as
    /// dropped, and never moves the cursor back.
    #[test]
    fn commit_after_a_drop_settles_only_what_is_left() {
        let d = tmp("race");
        let mut s = Spool::open(&d, 8 * 1024).unwrap();
        let rec = vec![b'y'; 99];
        for _ in 0..10 {
            s.append(&rec).unwrap();
        }
        let batch = s.peek(5, 1 << 20).unwrap();
        let next = batch.next.unwrap();
        let (mut dropped, mut appended) = (0, 10);
        while dropped == 0 {
            dropped += s.append(&rec).unwrap();
            appended += 1;
        }
        let pending = s.pending();
        save_cursor(&d, next).unwrap();
        let settled = s.advance(batch.start, next, 5).unwrap();
        assert!(settled <= 5);
        assert_eq!(s.pending(), pending - settled);
        let left = drain(&mut s).len() as u64;
        assert_eq!(left + settled + dropped, appended, "every record settled once");
        assert!(settled < 5, "the dropped segment held part of the batch");
        fs::remove_dir_all(&d).unwrap();
    }

    /// Records counted but no longer in the files (a write that failed
    /// half-way, a file changed behind the spool's back): a read finds
    /// nothing, and a recount brings the count back to what is there.
    #[test]
    fn recount_matches_the_files() {
        let d = tmp("recount");
        let mut s = Spool::open(&d, 64 * 1024).unwrap();
        for r in ["one", "two", "three"] {
            s.append(r.as_bytes()).unwrap();
        }
        let seg = d.join(segment_name(0));
        OpenOptions::new().write(true).open(&seg).unwrap().set_len(4).unwrap();
        s.segments[0].1 = 4;
        assert_eq!(s.pending(), 3);
        s.recount().unwrap();
        assert_eq!(s.pending(), 1);
        assert_eq!(drain(&mut s), ["one"]);
        assert_eq!(s.pending(), 0);
        fs::remove_dir_all(&d).unwrap();
    }

    /// Name of the test below, which runs itself again in a child process:
    /// a file size limit is process-wide and must not reach other tests.
    const HALF_WAY: &str = "deliver::spool::tests::a_record_written_half_way_is_cut_off_and_the_next_is_whole";

    #[test]
    fn a_record_written_half_way_is_cut_off_and_the_next_is_whole() {
        let Some(dir) = std::env::var_os("MCP_SPOOL_HALF_WAY_DIR") else {
            let d = tmp("half-way");
            fs::create_dir_all(&d).unwrap();
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", HALF_WAY, "--test-threads=1", "--nocapture"])
                .env("MCP_SPOOL_HALF_WAY_DIR", &d)
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{log}");
            assert!(log.contains("1 passed"), "the child ran the test: {log}");
            // What the child left behaves after a restart too.
            let mut s = Spool::open(&d, 1 << 20).unwrap();
            assert_eq!(s.pending(), 2);
            assert_eq!(drain(&mut s), ["first", "third"]);
            fs::remove_dir_all(&d).unwrap();
            return;
        };
        // The child: writes past RLIMIT_FSIZE stop at the limit (a short
        // write), then fail with EFBIG, as a full disk does half-way.
        // SAFETY: ignoring SIGXFSZ in this child process only.
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
        let d = PathBuf::from(dir);
        let mut s = Spool::open(&d, 1 << 20).unwrap();
        s.append(b"first").unwrap();
        let seg = d.join(segment_name(0));
        let size = fs::metadata(&seg).unwrap().len();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit on a struct we own.
        unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim) };
        let saved = lim.rlim_cur;
        lim.rlim_cur = size + 40;
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &lim) }, 0);
        let err = s.append(&[b'x'; 200]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EFBIG), "{err}");
        // The 40 bytes that reached the file are gone again.
        assert_eq!(fs::metadata(&seg).unwrap().len(), size);
        assert_eq!(s.pending(), 1);
        lim.rlim_cur = saved;
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &lim) }, 0);
        s.append(b"third").unwrap();
        assert_eq!(s.pending(), 2);
        let b = s.peek(10, 1 << 20).unwrap();
        let got: Vec<&[u8]> = b.records.iter().map(|r| r.as_slice()).collect();
        assert_eq!(got, [b"first".as_slice(), b"third".as_slice()]);
    }

    #[test]
    fn torn_record_is_cut_off() {
        let d = tmp("torn");
        let mut s = Spool::open(&d, 64 * 1024).unwrap();
        s.append(b"one").unwrap();
        s.append(b"two").unwrap();
        drop(s);
        let seg = d.join(segment_name(0));
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"{\"half").unwrap();
        let mut s = Spool::open(&d, 64 * 1024).unwrap();
        assert_eq!(s.pending(), 2);
        s.append(b"three").unwrap();
        assert_eq!(drain(&mut s), ["one", "two", "three"]);
        fs::remove_dir_all(&d).unwrap();
    }
}
