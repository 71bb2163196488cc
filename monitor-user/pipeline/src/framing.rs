//! Newline-delimited frames (the MCP stdio transport) from a byte stream that
//! arrives in arbitrary pieces.
//!
//! MCP stdio messages never contain a raw newline, so a newline is always a
//! frame boundary and the framer can resynchronise on the next one after
//! anything goes wrong: a line longer than the limit, bytes the kernel did
//! not capture (a gap), or a stream joined mid-message.
//!
//! Memory is bounded by `max_frame` per stream: a line that outgrows it is
//! dropped as it streams past and reported once as [`Frame::Oversized`];
//! and by the pipeline's [`Budget`] over all streams: a partial line that
//! would take it past its limit is dropped the same way and reported as
//! [`Frame::OverBudget`].

use crate::buffer_budget::{Budget, Charge};

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
    /// A line was skipped because holding it would have taken all streams
    /// together past the memory budget (total length given).
    OverBudget(u64),
    /// Bytes of a line that cannot be JSON (its first byte is neither `{`
    /// nor `[`) were skipped without being kept, up to the next newline:
    /// given once per piece, so a stream that never ends such a line is
    /// still judged, and holds no memory meanwhile.
    NotJson,
    /// Like [`Frame::NotJson`], for bytes JSON text never holds raw
    /// (control characters): a binary stream, such as libuv's signal pipe
    /// or the one-byte wake-ups of an asyncio event loop's socketpair.
    Binary,
}

/// Per-stream line framer.
#[derive(Debug)]
pub struct LineFramer {
    buf: Vec<u8>,
    max_frame: usize,
    /// Inside a line that is being skipped, and why.
    skipping: Option<Skip>,
    skipped: u64,
    /// What `buf` holds, charged to the shared budget.
    charge: Option<Charge>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Skip {
    Oversized,
    Damaged,
    OverBudget,
    NotJson,
    Binary,
}

impl Skip {
    /// The frame that ends a skipped line; `None` when every piece of it
    /// was reported already.
    fn frame(self, n: u64) -> Option<Frame<'static>> {
        match self {
            Skip::Oversized => Some(Frame::Oversized(n)),
            Skip::Damaged => Some(Frame::Damaged(n)),
            Skip::OverBudget => Some(Frame::OverBudget(n)),
            Skip::NotJson | Skip::Binary => None,
        }
    }
}

/// Partial lines up to this capacity keep their allocation between lines
/// (it is charged to the budget while kept: thousands of idle streams must
/// not use it up).
const KEEP_CAPACITY: usize = 4096;

impl LineFramer {
    /// A framer that keeps at most `max_frame` bytes of one line.
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_frame: max_frame.max(1),
            skipping: None,
            skipped: 0,
            charge: None,
        }
    }

    /// Charges what this framer holds to `budget`, and skips lines that
    /// would take it past its limit.
    pub fn with_budget(mut self, budget: &Budget) -> Self {
        self.charge = Some(Charge::new(budget));
        self
    }

    /// Empties the buffer, keeping a small allocation.
    fn reset_buf(&mut self) {
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        self.recharge();
    }

    fn recharge(&mut self) {
        if let Some(c) = &mut self.charge {
            c.set(self.buf.capacity());
        }
    }

    /// Makes room for `extra` more bytes if the budget allows, and says
    /// whether it did. The allocation doubles as usual, or grows exactly
    /// when doubling would not fit; what is allocated is what is charged.
    fn reserve(&mut self, extra: usize) -> bool {
        let (len, cap) = (self.buf.len(), self.buf.capacity());
        if cap - len >= extra {
            return true;
        }
        let Some(c) = &self.charge else { return true };
        let exact = len + extra;
        let doubled = (cap * 2).max(exact);
        let target = if c.fits(doubled) {
            doubled
        } else if c.fits(exact) {
            exact
        } else {
            return false;
        };
        self.buf.reserve_exact(target - len);
        self.recharge();
        true
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
        self.reset_buf();
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
            Some(why) => {
                if let Some(f) = why.frame(n) {
                    on_frame(f);
                }
            }
            None if n > 0 => on_frame(Frame::Damaged(n)),
            None => {}
        }
        self.skipped = 0;
        self.reset_buf();
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

            if let Some(mut why) = self.skipping {
                self.skipped += piece.len() as u64;
                if why == Skip::Damaged && !complete && has_control_bytes(piece) {
                    // Joined mid-line, but not a JSON one after all.
                    why = Skip::Binary;
                    self.skipping = Some(why);
                }
                if !piece.is_empty() {
                    match why {
                        Skip::NotJson => on_frame(Frame::NotJson),
                        Skip::Binary => on_frame(Frame::Binary),
                        _ => {}
                    }
                }
                if complete {
                    let n = std::mem::take(&mut self.skipped);
                    self.skipping = None;
                    if let Some(f) = why.frame(n) {
                        on_frame(f);
                    }
                }
                continue;
            }

            // A line that cannot be JSON is not kept while it grows: a
            // complete one goes to the parser (which says why), an
            // unfinished one is skipped to its newline.
            if !complete && (self.buf.iter().all(u8::is_ascii_whitespace) || has_control_bytes(piece)) {
                if let Some(b) = self.buf.iter().chain(piece).find(|b| !b.is_ascii_whitespace()) {
                    let binary = has_control_bytes(piece);
                    if !matches!(b, b'{' | b'[') || binary {
                        self.skipped = (self.buf.len() + piece.len()) as u64;
                        self.reset_buf();
                        if binary {
                            self.skipping = Some(Skip::Binary);
                            on_frame(Frame::Binary);
                        } else {
                            self.skipping = Some(Skip::NotJson);
                            on_frame(Frame::NotJson);
                        }
                        continue;
                    }
                }
            }

            let too_long = self.buf.len() + piece.len() > self.max_frame;
            // A line complete in this piece alone needs no buffer.
            let buffered = !complete || !self.buf.is_empty();
            if too_long || (buffered && !self.reserve(piece.len())) {
                let why = if too_long { Skip::Oversized } else { Skip::OverBudget };
                self.skipped = (self.buf.len() + piece.len()) as u64;
                self.reset_buf();
                if complete {
                    if let Some(f) = why.frame(std::mem::take(&mut self.skipped)) {
                        on_frame(f);
                    }
                } else {
                    self.skipping = Some(why);
                }
                continue;
            }

            if !complete {
                self.buf.extend_from_slice(piece);
                self.recharge();
                continue;
            }
            if self.buf.is_empty() {
                // Fast path: the whole line is in this piece, no copy.
                emit_line(piece, &mut on_frame);
            } else {
                self.buf.extend_from_slice(piece);
                self.recharge();
                let line = std::mem::take(&mut self.buf);
                emit_line(&line, &mut on_frame);
                // Keep the allocation for the next partial line, unless it
                // was large: idle streams should not pin megabytes.
                if line.capacity() <= KEEP_CAPACITY {
                    self.buf = line;
                    self.buf.clear();
                }
                self.recharge();
            }
        }
    }
}

/// True when the start of `piece` holds a byte JSON text never contains
/// raw (a control character other than tab, CR and LF): the line it belongs
/// to is not JSON, wherever it started. Binary protocols and an event
/// loop's wake-up bytes (NUL) show it in their first bytes; only those are
/// looked at, so large messages cost nothing more.
fn has_control_bytes(piece: &[u8]) -> bool {
    piece[..piece.len().min(64)]
        .iter()
        .any(|&b| b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n'))
}

fn emit_line(line: &[u8], on_frame: &mut impl FnMut(Frame<'_>)) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return; // blank lines are not frames
    }
    on_frame(Frame::Line(line));
}

/// Position of the first `needle` byte (the `memchr` crate's vectorised
/// search: the framer looks at every byte of every message).
pub fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
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
        Budget(u64),
        NotJson,
        Binary,
    }

    fn run(f: &mut LineFramer, pieces: &[&[u8]]) -> Vec<Out> {
        let mut out = Vec::new();
        for p in pieces {
            f.push(p, |fr| {
                out.push(match fr {
                    Frame::Line(l) => Out::L(l.to_vec()),
                    Frame::Oversized(n) => Out::Over(n),
                    Frame::Damaged(n) => Out::Dmg(n),
                    Frame::OverBudget(n) => Out::Budget(n),
                    Frame::NotJson => Out::NotJson,
                    Frame::Binary => Out::Binary,
                })
            });
        }
        out
    }

    #[test]
    fn event_loop_wakeups_are_reported_not_kept() {
        // asyncio's self-pipe: one NUL byte per wake-up, never a newline.
        let mut f = LineFramer::new(16 << 20);
        let mut out = Vec::new();
        for _ in 0..10_000 {
            out.extend(run(&mut f, &[b"\0"]));
        }
        assert_eq!(f.buffered(), 0);
        assert_eq!(out.len(), 10_000);
        assert!(out.iter().all(|o| *o == Out::Binary));
        // Joined mid-line (the framer resyncs): the NUL still tells.
        let mut f = LineFramer::new_resync(1024);
        assert_eq!(run(&mut f, &[b"\0", b"\0"]), [Out::Binary, Out::Binary]);
        // A message joined mid-way is skipped quietly, as before.
        let mut f = LineFramer::new_resync(1024);
        assert_eq!(
            run(&mut f, &[b"ent\":1}", b"\n{}\n"]),
            [Out::Dmg(7), Out::L(b"{}".to_vec())]
        );
        // A line that starts like JSON in a later piece is still whole.
        let mut f = LineFramer::new(1024);
        assert_eq!(
            run(&mut f, &[b"  ", b"{\"a\"", b":1}\n", b"banner ", b"text\n", b"{}\n"]),
            [
                Out::L(b"  {\"a\":1}".to_vec()),
                Out::NotJson,
                Out::NotJson,
                Out::L(b"{}".to_vec())
            ]
        );
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
        let mut out = run(&mut f, &[b"{"]);
        for _ in 0..1000 {
            out.extend(run(&mut f, &[&[b'x'; 1000]]));
            assert!(f.buffered() <= 10);
        }
        out.extend(run(&mut f, &[b"yy\nok\n"]));
        assert_eq!(out, vec![Out::Over(1_000_003), Out::L(b"ok".to_vec())]);
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
                    Frame::OverBudget(n) => Out::Budget(n),
                    Frame::NotJson => Out::NotJson,
                    Frame::Binary => Out::Binary,
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

    /// Two streams share a budget: the one whose partial line would pass
    /// it loses that line (reported once) and resyncs; the other keeps its
    /// line; the budget is given back as lines complete and framers go.
    #[test]
    fn streams_share_one_budget() {
        let budget = Budget::new(100);
        let mut a = LineFramer::new(1 << 20).with_budget(&budget);
        let mut b = LineFramer::new(1 << 20).with_budget(&budget);
        let partial = |c: u8, n: usize| [vec![b'['], vec![c; n - 1]].concat();
        assert!(run(&mut a, &[&partial(b'a', 80)]).is_empty());
        assert_eq!(budget.used(), a.buf.capacity());
        // b's partial line does not fit next to a's.
        assert!(run(&mut b, &[&partial(b'b', 30)]).is_empty());
        assert_eq!(
            run(&mut b, &[b"bb\n{\"ok\":1}\n"]),
            [Out::Budget(32), Out::L(b"{\"ok\":1}".to_vec())]
        );
        // A line complete in one piece needs no buffer, whatever the budget.
        let mut line = vec![b'c'; 50];
        line.push(b'\n');
        assert_eq!(run(&mut b, &[&line]), [Out::L(vec![b'c'; 50])]);
        assert_eq!(run(&mut a, &[b"a\n"]), [Out::L([vec![b'['], vec![b'a'; 80]].concat())]);
        assert!(budget.used() <= 100);
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    proptest! {
        /// Framers sharing a budget never hold more than it, and give all
        /// of it back.
        #[test]
        fn a_shared_budget_is_never_exceeded(
            pieces in proptest::collection::vec((0usize..4, proptest::collection::vec(prop_oneof![Just(b'{'), Just(b'x'), Just(b'\n')], 0..200)), 0..60),
            max in 1usize..600,
        ) {
            let budget = Budget::new(max);
            let mut framers: Vec<LineFramer> = (0..4).map(|_| LineFramer::new(10_000).with_budget(&budget)).collect();
            for (i, p) in &pieces {
                framers[*i].push(p, |_| {});
                prop_assert!(budget.used() <= max, "{} > {max}", budget.used());
                let held: usize = framers.iter().map(|f| f.buf.capacity()).sum();
                prop_assert_eq!(held, budget.used());
            }
            drop(framers);
            prop_assert_eq!(budget.used(), 0);
        }

        /// Any split of a stream of lines that start like JSON (and hold no
        /// control bytes, which JSON text never has) yields the same frames.
        #[test]
        fn arbitrary_splits_give_same_frames(
            lines in proptest::collection::vec(proptest::collection::vec(any::<u8>().prop_filter("no newline or control byte", |b| *b >= 0x20 || matches!(b, b'\t' | b'\r')), 0..40), 0..20),
            cuts in proptest::collection::vec(0usize..1000, 0..20),
            max in 1usize..64,
        ) {
            let mut stream = Vec::new();
            for l in &lines {
                if !l.is_empty() {
                    stream.push(b'{');
                }
                stream.extend_from_slice(l);
                stream.push(b'\n');
            }
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

        /// Bytes that cannot start JSON are never kept, however they come:
        /// an event loop's one-byte wake-ups, a log without newlines.
        #[test]
        fn lines_that_cannot_be_json_hold_no_memory(
            first in any::<u8>().prop_filter("not JSON, not blank", |b| !matches!(b, b'{' | b'[' | b'\n') && !b.is_ascii_whitespace()),
            pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 1..50), 0..50),
        ) {
            let mut f = LineFramer::new(1 << 20);
            let mut out = run(&mut f, &[&[first]]);
            for p in &pieces {
                out.extend(run(&mut f, &[p]));
                prop_assert_eq!(f.buffered(), 0);
            }
            prop_assert_eq!(out.len(), pieces.len() + 1);
            prop_assert!(out.iter().all(|o| matches!(o, Out::NotJson | Out::Binary)));
            // The next line is whole again.
            prop_assert_eq!(run(&mut f, &[b"\n{\"a\":1}\n"]), [Out::L(b"{\"a\":1}".to_vec())]);
        }
    }
}
