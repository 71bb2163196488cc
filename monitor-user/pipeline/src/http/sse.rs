//! Incremental Server-Sent Events parser (the `text/event-stream` format of
//! the HTML standard): `data:` lines (joined with `\n`), `event:`, `id:`,
//! `retry:`, comments, and CRLF, LF or CR line ends, in arbitrary pieces.
//! One event's data is bounded; a larger event is skipped and reported.

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` (absent means "message").
    pub event: Option<String>,
    /// `id:` of this event (the last event id as of this event).
    pub id: Option<String>,
    /// `retry:` (reconnection delay in milliseconds) given within this event, if any.
    pub retry_ms: Option<u64>,
    /// The `data:` lines joined with `\n`.
    pub data: Vec<u8>,
}

/// Parser output.
#[derive(Debug, PartialEq, Eq)]
pub enum SseItem {
    /// An event with data, dispatched by a blank line.
    Event(SseEvent),
    /// An event whose data outgrew the limit was skipped (bytes seen).
    Oversized(u64),
}

/// The parser.
#[derive(Debug)]
pub struct SseParser {
    max_event: usize,
    line: Vec<u8>,
    /// The previous piece ended with `\r`: a `\n` first in the next piece
    /// belongs to it.
    after_cr: bool,
    cur: SseEvent,
    has_data: bool,
    oversized: Option<u64>,
    /// Last event id seen on the stream (persists across events).
    last_id: Option<String>,
    first_line: bool,
}

/// Longest field name or non-data field value kept.
const MAX_FIELD: usize = 4096;

impl SseParser {
    /// A parser that skips (and reports) events whose data exceeds `max_event` bytes (at least 64).
    pub fn new(max_event: usize) -> Self {
        Self {
            max_event: max_event.max(64),
            line: Vec::new(),
            after_cr: false,
            cur: SseEvent::default(),
            has_data: false,
            oversized: None,
            last_id: None,
            first_line: true,
        }
    }

    /// Bytes held.
    pub fn buffered(&self) -> usize {
        self.line.len() + self.cur.data.len()
    }

    /// Bytes allocated (what the memory budget is charged).
    pub fn allocated(&self) -> usize {
        self.line.capacity() + self.cur.data.capacity()
    }

    /// The last event id of the stream (for `Last-Event-ID` resumption).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Parses the next piece of the stream, reporting each dispatched or oversized event to `out`.
    pub fn feed(&mut self, mut data: &[u8], out: &mut impl FnMut(SseItem)) {
        if data.is_empty() {
            return;
        }
        if self.after_cr {
            if data[0] == b'\n' {
                data = &data[1..];
            }
            self.after_cr = false;
        }
        while !data.is_empty() {
            let Some(i) = memchr::memchr2(b'\n', b'\r', data) else {
                self.push_line_bytes(data);
                return;
            };
            self.push_line_bytes(&data[..i]);
            let crlf = data[i] == b'\r' && data.get(i + 1) == Some(&b'\n');
            if data[i] == b'\r' && i + 1 == data.len() {
                self.after_cr = true;
            }
            data = &data[i + if crlf { 2 } else { 1 }..];
            self.end_line(out);
        }
    }

    fn push_line_bytes(&mut self, b: &[u8]) {
        // A data line may be as long as an event; other lines are short.
        let room = self.max_event.saturating_sub(self.cur.data.len()) + MAX_FIELD;
        if self.line.len() + b.len() > room {
            let seen = self.oversized.unwrap_or(self.cur.data.len() as u64);
            self.oversized = Some(seen + (self.line.len() + b.len()) as u64);
            self.line = Vec::new();
            self.cur.data = Vec::new();
            return;
        }
        self.line.extend_from_slice(b);
    }

    fn end_line(&mut self, out: &mut impl FnMut(SseItem)) {
        let mut line = std::mem::take(&mut self.line);
        if self.first_line {
            self.first_line = false;
            if line.starts_with("\u{feff}".as_bytes()) {
                line.drain(..3);
            }
        }
        if line.is_empty() {
            return self.dispatch(out);
        }
        if self.oversized.is_some() {
            return;
        }
        if line[0] == b':' {
            return; // comment
        }
        let (name, value) = match memchr::memchr(b':', &line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (&line[..], &b""[..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.cur.data.push(b'\n');
                }
                self.cur.data.extend_from_slice(value);
                self.has_data = true;
                if self.cur.data.len() > self.max_event {
                    self.oversized = Some(self.cur.data.len() as u64);
                    self.cur.data = Vec::new();
                }
            }
            b"event" if value.len() <= MAX_FIELD => self.cur.event = Some(String::from_utf8_lossy(value).into_owned()),
            // An id containing NUL is ignored (HTML standard).
            b"id" if !value.contains(&0) && value.len() <= MAX_FIELD => {
                self.last_id = Some(String::from_utf8_lossy(value).into_owned());
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.cur.retry_ms = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            _ => {}
        }
        // Keep a small line buffer; a long-lived stream must not pin the
        // allocation of its largest event.
        if line.capacity() <= 4096 {
            self.line = line;
            self.line.clear();
        }
    }

    fn dispatch(&mut self, out: &mut impl FnMut(SseItem)) {
        if let Some(n) = self.oversized.take() {
            out(SseItem::Oversized(n));
            self.cur = SseEvent::default();
            self.has_data = false;
            return;
        }
        let mut ev = std::mem::take(&mut self.cur);
        let had_data = std::mem::replace(&mut self.has_data, false);
        if !had_data {
            // No data: nothing is dispatched (retry still applies).
            return;
        }
        ev.id = self.last_id.clone();
        out(SseItem::Event(ev));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn run(p: &mut SseParser, pieces: &[&[u8]]) -> Vec<SseItem> {
        let mut v = Vec::new();
        for piece in pieces {
            p.feed(piece, &mut |i| v.push(i));
        }
        v
    }

    const STREAM: &[u8] = b"\xef\xbb\xbf: keep-alive\r\nevent: message\r\nid: 7\r\nretry: 3000\r\ndata: {\"jsonrpc\":\"2.0\",\r\ndata: \"id\":1}\r\n\r\ndata:{\"a\":1}\n\nevent: endpoint\rdata: /messages?session_id=x\r\r";

    #[test]
    fn fields_multiline_data_and_line_ends() {
        let items = run(&mut SseParser::new(1 << 20), &[STREAM]);
        assert_eq!(items.len(), 3, "{items:?}");
        let SseItem::Event(e) = &items[0] else { panic!() };
        assert_eq!(e.event.as_deref(), Some("message"));
        assert_eq!(e.id.as_deref(), Some("7"));
        assert_eq!(e.retry_ms, Some(3000));
        assert_eq!(e.data, b"{\"jsonrpc\":\"2.0\",\n\"id\":1}");
        let SseItem::Event(e) = &items[1] else { panic!() };
        assert_eq!((e.data.as_slice(), e.id.as_deref()), (&b"{\"a\":1}"[..], Some("7")));
        let SseItem::Event(e) = &items[2] else { panic!() };
        assert_eq!(e.event.as_deref(), Some("endpoint"));
        assert_eq!(e.data, b"/messages?session_id=x");
    }

    #[test]
    fn oversized_events_are_skipped_and_the_next_one_is_kept() {
        let mut p = SseParser::new(64);
        let big = format!("data: {}\n\ndata: ok\n\n", "x".repeat(1000));
        let items = run(&mut p, &[big.as_bytes()]);
        assert!(matches!(items[0], SseItem::Oversized(n) if n >= 1000), "{items:?}");
        assert_eq!(
            items[1],
            SseItem::Event(SseEvent {
                data: b"ok".to_vec(),
                ..Default::default()
            })
        );
        assert!(p.buffered() < 64 + MAX_FIELD);
    }

    proptest! {
        #[test]
        fn split_invariance(cuts in proptest::collection::vec(0usize..200, 0..10)) {
            let whole = run(&mut SseParser::new(1 << 20), &[STREAM]);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (STREAM.len() + 1)).collect();
            cuts.sort();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts {
                pieces.push(&STREAM[last..c]);
                last = c;
            }
            pieces.push(&STREAM[last..]);
            prop_assert_eq!(run(&mut SseParser::new(1 << 20), &pieces), whole);
        }

        #[test]
        fn garbage_is_bounded(data in proptest::collection::vec(any::<u8>(), 0..8192)) {
            let mut p = SseParser::new(256);
            p.feed(&data, &mut |_| {});
            prop_assert!(p.buffered() <= 256 + MAX_FIELD + 1);
        }
    }
}
