//! Newline-delimited frames (the MCP stdio transport) from a byte stream that
//! arrives in arbitrary pieces.
//!
//! MCP stdio messages never contain a raw newline, so a newline is always a
//! frame boundary and the framer can resynchronise on the next one after
//! anything goes wrong: a line longer than the limit, bytes the kernel did
//! not capture (a gap), or a stream joined mid-message.
//!
//! Memory is bounded by `max_frame` per stream: a line that outgrows it is
//! dropped as it streams past and reported once as [`Frame::Oversized`].

/// What the framer found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// One complete line without its `\n` or `\r\n`; never empty or blank.
    Line(&'a [u8]),
    /// A line longer than `max_frame` bytes (total length given) was skipped.
    Oversized(u64),
    /// A line that lost bytes to a capture gap (or started before capture
    /// began) was skipped; `len` is the number of bytes seen of it.
    Damaged(u64),
}

/// Per-stream line framer.
#[derive(Debug)]
pub struct LineFramer {
    buf: Vec<u8>,
    max_frame: usize,
    /// Inside a line that is being skipped, and why.
    skipping: Option<Skip>,
    skipped: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Skip {
    Oversized,
    Damaged,
}

impl LineFramer {
    /// A framer that keeps at most `max_frame` bytes of one line.
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_frame: max_frame.max(1),
            skipping: None,
            skipped: 0,
        }
    }

    /// A framer for a stream joined at an unknown position: everything up
    /// to the first newline is skipped (and reported as damaged).
    pub fn new_resync(max_frame: usize) -> Self {
        let mut f = Self::new(max_frame);
        f.skipping = Some(Skip::Damaged);
        f
    }

    /// Bytes held for an incomplete line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True while discarding the rest of a line.
    pub fn is_skipping(&self) -> bool {
        self.skipping.is_some()
    }

    /// Declares that bytes are missing at this point of the stream: the
    /// line in progress (if any) cannot be trusted and is skipped up to the
    /// next newline.
    pub fn gap(&mut self) {
        if self.skipping.is_none() {
            self.skipped = self.buf.len() as u64;
            self.skipping = Some(Skip::Damaged);
        }
        self.buf.clear();
    }

    /// Declares that bytes were lost just before the next [`push`]: the line
    /// in progress is reported damaged, never joined to what follows. The
    /// next bytes are skipped to a newline, unless `aligned`: they start
    /// with a JSON value, taken as the start of a message (if they are not,
    /// they fail to parse; they are never joined to anything either).
    ///
    /// [`push`]: LineFramer::push
    pub fn hole(&mut self, aligned: bool, mut on_frame: impl FnMut(Frame<'_>)) {
        if !aligned {
            return self.gap();
        }
        let n = self.skipped + self.buf.len() as u64;
        match self.skipping.take() {
            Some(Skip::Oversized) => on_frame(Frame::Oversized(n)),
            Some(Skip::Damaged) => on_frame(Frame::Damaged(n)),
            None if n > 0 => on_frame(Frame::Damaged(n)),
            None => {}
        }
        self.skipped = 0;
        self.buf.clear();
    }

    /// Feeds bytes; calls `on_frame` for every frame they complete.
    pub fn push(&mut self, mut data: &[u8], mut on_frame: impl FnMut(Frame<'_>)) {
        while !data.is_empty() {
            let nl = memchr(b'\n', data);
            let (piece, rest, complete) = match nl {
                Some(i) => (&data[..i], &data[i + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            data = rest;

            if let Some(why) = self.skipping {
                self.skipped += piece.len() as u64;
                if complete {
                    let n = std::mem::take(&mut self.skipped);
                    self.skipping = None;
                    on_frame(match why {
                        Skip::Oversized => Frame::Oversized(n),
                        Skip::Damaged => Frame::Damaged(n),
                    });
                }
                continue;
            }

            if self.buf.len() + piece.len() > self.max_frame {
                self.skipped = (self.buf.len() + piece.len()) as u64;
                self.buf.clear();
                if complete {
                    on_frame(Frame::Oversized(std::mem::take(&mut self.skipped)));
                } else {
                    self.skipping = Some(Skip::Oversized);
                }
                continue;
            }

            if !complete {
                self.buf.extend_from_slice(piece);
                continue;
            }
            if self.buf.is_empty() {
                // Fast path: the whole line is in this piece, no copy.
                emit_line(piece, &mut on_frame);
            } else {
                self.buf.extend_from_slice(piece);
                let line = std::mem::take(&mut self.buf);
                emit_line(&line, &mut on_frame);
                // Keep the allocation for the next partial line, unless it
                // was large: idle streams should not pin megabytes.
                if line.capacity() <= 64 * 1024 {
                    self.buf = line;
                    self.buf.clear();
                }
            }
        }
    }
}

fn emit_line(line: &[u8], on_frame: &mut impl FnMut(Frame<'_>)) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return; // blank lines are not frames
    }
    on_frame(Frame::Line(line));
}

/// Position of the first `needle` byte. Eight bytes at a time: a simple
/// SWAR scan keeps the framer far above the JSON parser's speed without a
/// dependency.
pub fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * needle as u64;
    let mut i = 0;
    while i + 8 <= hay.len() {
        let w = u64::from_le_bytes(hay[i..i + 8].try_into().unwrap()) ^ pattern;
        if (w.wrapping_sub(LO) & !w & HI) != 0 {
            break;
        }
        i += 8;
    }
    hay[i..].iter().position(|&b| b == needle).map(|p| p + i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, PartialEq, Eq, Clone)]
    enum Out {
        L(Vec<u8>),
        Over(u64),
        Dmg(u64),
    }

    fn run(f: &mut LineFramer, pieces: &[&[u8]]) -> Vec<Out> {
        let mut out = Vec::new();
        for p in pieces {
            f.push(p, |fr| {
                out.push(match fr {
                    Frame::Line(l) => Out::L(l.to_vec()),
                    Frame::Oversized(n) => Out::Over(n),
                    Frame::Damaged(n) => Out::Dmg(n),
                })
            });
        }
        out
    }

    #[test]
    fn splits_joins_crlf_and_blank_lines() {
        let mut f = LineFramer::new(1024);
        let out = run(&mut f, &[b"{\"a\":1}\n{\"b\"", b":2}\r\n\n  \n{\"c\":3}", b"\n"]);
        assert_eq!(
            out,
            vec![
                Out::L(b"{\"a\":1}".to_vec()),
                Out::L(b"{\"b\":2}".to_vec()),
                Out::L(b"{\"c\":3}".to_vec())
            ]
        );
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn oversized_line_is_skipped_and_memory_stays_bounded() {
        let mut f = LineFramer::new(10);
        let mut out = Vec::new();
        for _ in 0..1000 {
            out.extend(run(&mut f, &[&[b'x'; 1000]]));
            assert!(f.buffered() <= 10);
        }
        out.extend(run(&mut f, &[b"yy\nok\n"]));
        assert_eq!(out, vec![Out::Over(1_000_002), Out::L(b"ok".to_vec())]);
    }

    #[test]
    fn oversized_complete_line_in_one_piece() {
        let mut f = LineFramer::new(4);
        assert_eq!(
            run(&mut f, &[b"abcdefg\nab\n"]),
            vec![Out::Over(7), Out::L(b"ab".to_vec())]
        );
    }

    #[test]
    fn a_hole_never_joins_the_bytes_around_it() {
        let hole = |f: &mut LineFramer, aligned: bool, out: &mut Vec<Out>| {
            f.hole(aligned, |fr| {
                out.push(match fr {
                    Frame::Line(l) => Out::L(l.to_vec()),
                    Frame::Oversized(n) => Out::Over(n),
                    Frame::Damaged(n) => Out::Dmg(n),
                })
            })
        };
        // Lost between `{"a":` and `2}`: neither half is a message.
        let mut f = LineFramer::new(100);
        let mut out = run(&mut f, &[b"{\"x\":0}\n{\"a\":"]);
        hole(&mut f, false, &mut out);
        out.extend(run(&mut f, &[b"2}\n{\"b\":3}\n"]));
        assert_eq!(
            out,
            vec![
                Out::L(b"{\"x\":0}".to_vec()),
                Out::Dmg(7),
                Out::L(b"{\"b\":3}".to_vec())
            ]
        );
        // The bytes after the hole start a message: kept; the partial line
        // before it reported damaged.
        let mut f = LineFramer::new(100);
        let mut out = run(&mut f, &[b"{\"a\":"]);
        hole(&mut f, true, &mut out);
        out.extend(run(&mut f, &[b"{\"b\":3}\n"]));
        assert_eq!(out, vec![Out::Dmg(5), Out::L(b"{\"b\":3}".to_vec())]);
        // At a boundary: nothing held, nothing reported.
        let mut f = LineFramer::new(100);
        let mut out = Vec::new();
        hole(&mut f, true, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn gap_skips_to_next_newline() {
        let mut f = LineFramer::new(100);
        let mut out = run(&mut f, &[b"{\"a\":1}\n{\"trunc"]);
        f.gap();
        out.extend(run(&mut f, &[b"ated\"}\n{\"b\":2}\n"]));
        assert_eq!(
            out,
            vec![
                Out::L(b"{\"a\":1}".to_vec()),
                Out::Dmg(13),
                Out::L(b"{\"b\":2}".to_vec())
            ]
        );
    }

    #[test]
    fn resync_drops_first_partial_line() {
        let mut f = LineFramer::new_resync(100);
        assert_eq!(
            run(&mut f, &[b"tail\"}\n{\"x\":1}\n"]),
            vec![Out::Dmg(6), Out::L(b"{\"x\":1}".to_vec())]
        );
    }

    #[test]
    fn memchr_matches_naive() {
        let hay: Vec<u8> = (0..200u8).collect();
        for n in [0u8, 7, 8, 9, 100, 199, 250] {
            assert_eq!(memchr(n, &hay), hay.iter().position(|&b| b == n));
        }
    }

    proptest! {
        /// Any split of a byte stream yields the same frames.
        #[test]
        fn arbitrary_splits_give_same_frames(
            lines in proptest::collection::vec(proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..40), 0..20),
            cuts in proptest::collection::vec(0usize..1000, 0..20),
            max in 1usize..64,
        ) {
            let mut stream = Vec::new();
            for l in &lines { stream.extend_from_slice(l); stream.push(b'\n'); }
            let whole = run(&mut LineFramer::new(max), &[&stream]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts { pieces.push(&stream[last..c]); last = c; }
            pieces.push(&stream[last..]);
            let mut f = LineFramer::new(max);
            let split = run(&mut f, &pieces);
            prop_assert_eq!(&whole, &split);
            prop_assert!(f.buffered() <= max);
            // Every frame is a non-blank input line no longer than max, or an oversize report.
            for o in &whole {
                if let Out::L(l) = o { prop_assert!(l.len() <= max); }
            }
        }

        #[test]
        fn memchr_agrees(hay in proptest::collection::vec(any::<u8>(), 0..100), n in any::<u8>()) {
            prop_assert_eq!(memchr(n, &hay), hay.iter().position(|&b| b == n));
        }
    }
}
