//! Incremental HTTP/1.1 message parser for one direction of a connection.
//!
//! Bytes arrive in arbitrary pieces (one captured read or write each); the
//! parser reports message heads, body bytes with the transfer coding removed
//! (Content-Length, chunked, or until the connection closes) and message
//! ends. It keeps at most one head (`max_head` bytes) and one chunk-size
//! line; body bytes are passed through, never buffered. After an error, or
//! when capture starts in the middle of a message, it skips ahead to the
//! next line that starts like a request or status line.

/// What kind of messages this direction carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Client to server: request lines, headers and bodies.
    Requests,
    /// Server to client: status lines, headers and bodies, in request order.
    Responses,
}

impl Side {
    /// What the other direction of the connection carries.
    pub fn other(self) -> Side {
        match self {
            Side::Requests => Side::Responses,
            Side::Responses => Side::Requests,
        }
    }
}

/// A request line or status line with its headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// Requests: method and request target.
    pub method: Option<String>,
    /// Requests: the request target (path and query) as sent, not redacted.
    pub path: Option<String>,
    /// Responses: the status code.
    pub status: Option<u16>,
    /// Header names in lowercase, values trimmed, in order.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of a header (`name` in lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Why a message could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H1Error {
    /// The head outgrew `max_head` or had too many header lines.
    HeadTooLarge,
    /// Not a request/status line, or a malformed header.
    BadHead,
    /// Content-Length or chunk size unreadable or contradictory.
    BadFraming,
}

impl H1Error {
    /// Metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            H1Error::HeadTooLarge => "http_head_too_large",
            H1Error::BadHead => "http_bad_head",
            H1Error::BadFraming => "http_bad_framing",
        }
    }
}

/// One parser output.
#[derive(Debug, PartialEq, Eq)]
pub enum H1Event<'a> {
    /// A complete request or status line with its headers.
    Head(Head),
    /// Body bytes, transfer coding removed (content coding, e.g. gzip, is
    /// not: see `Content-Encoding`).
    Body(&'a [u8]),
    /// The message ended (its body is complete).
    End,
    /// Bytes were skipped: an error, or a stream joined mid-message.
    Error(H1Error),
    /// The connection switched protocols (101) or started a CONNECT tunnel:
    /// nothing after this is HTTP/1.1.
    Upgraded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for (or reading) a head.
    Head,
    Fixed(u64),
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkDataEnd,
    Trailers,
    UntilClose,
    /// Skipping to the next line that starts a message.
    Resync,
    /// Not HTTP/1.1 any more.
    Upgraded,
}

/// Methods recognised at the start of a request line when resynchronising.
const METHODS: &[&[u8]] = &[b"GET ", b"POST ", b"DELETE ", b"PUT ", b"HEAD ", b"OPTIONS ", b"PATCH "];

/// The parser.
#[derive(Debug)]
pub struct H1Parser {
    side: Side,
    max_head: usize,
    state: State,
    buf: Vec<u8>,
    /// Requests whose responses have no body (HEAD), in order; responses
    /// consult it.
    no_body_next: std::collections::VecDeque<bool>,
}

/// Most header lines in one head.
const MAX_HEADERS: usize = 128;
/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 4096;

impl H1Parser {
    /// A parser at the start of a stream of `side` messages; heads over `max_head` bytes (at least 256) are errors.
    pub fn new(side: Side, max_head: usize) -> Self {
        Self {
            side,
            max_head: max_head.max(256),
            state: State::Head,
            buf: Vec::new(),
            no_body_next: Default::default(),
        }
    }

    /// A parser for a stream joined at an unknown position: it waits for a
    /// line that starts a message.
    pub fn new_resync(side: Side, max_head: usize) -> Self {
        let mut p = Self::new(side, max_head);
        p.state = State::Resync;
        p
    }

    /// Bytes held (an incomplete head or line).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True between messages (nothing partial held).
    pub fn idle(&self) -> bool {
        self.state == State::Head && self.buf.is_empty()
    }

    /// The response parser of the same connection learns that a request
    /// was `HEAD` (its response has no body whatever its headers say).
    pub fn expect_response(&mut self, head_request: bool) {
        if self.no_body_next.len() < 1024 {
            self.no_body_next.push_back(head_request);
        }
    }

    /// Bytes are missing at this point of the stream (capture gap).
    pub fn gap(&mut self, out: &mut impl FnMut(H1Event<'_>)) {
        if self.state != State::Upgraded {
            if !(self.state == State::Head && self.buf.is_empty()) {
                out(H1Event::Error(H1Error::BadFraming));
            }
            self.buf.clear();
            self.state = State::Resync;
        }
    }

    /// The connection closed: a body delimited by the close ends here.
    pub fn close(&mut self, out: &mut impl FnMut(H1Event<'_>)) {
        match self.state {
            State::UntilClose => out(H1Event::End),
            State::Head | State::Resync | State::Upgraded if self.buf.is_empty() => {}
            State::Upgraded => {}
            _ => out(H1Event::Error(H1Error::BadFraming)),
        }
        self.buf.clear();
        self.state = State::Head;
    }

    /// Parses `data`, reporting through `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut impl FnMut(H1Event<'_>)) {
        // A resynchronisation hands back the bytes from the start line on;
        // iterate rather than recurse (every round consumes a head or line).
        let mut next = self.run(data, out);
        while let Some(held) = next {
            next = self.run(&held, out);
        }
    }

    fn run(&mut self, mut data: &[u8], out: &mut impl FnMut(H1Event<'_>)) -> Option<Vec<u8>> {
        while !data.is_empty() {
            match self.state {
                State::Upgraded => return None,
                State::Resync => {
                    self.buf.extend_from_slice(data);
                    match self.find_start() {
                        Some(at) => {
                            let held = self.buf.split_off(at);
                            self.buf.clear();
                            self.state = State::Head;
                            return Some(held);
                        }
                        None => {
                            // Keep only a tail that could begin a start line.
                            let keep = self.buf.len().saturating_sub(16);
                            self.buf.drain(..keep);
                            return None;
                        }
                    }
                }
                State::Head => {
                    // Blank lines before a request are allowed (RFC 9112 2.2).
                    if self.buf.is_empty() {
                        let skip = data.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
                        data = &data[skip..];
                        if data.is_empty() {
                            return None;
                        }
                    }
                    let old = self.buf.len();
                    self.buf.extend_from_slice(data);
                    // Search from a little before the new bytes: the end of
                    // the head may straddle two pieces.
                    let from = old.saturating_sub(3);
                    match find_head_end(&self.buf[from..]) {
                        Some((end, len)) => {
                            let head_len = from + end;
                            let consumed = head_len + len - old;
                            data = &data[consumed..];
                            let head = std::mem::take(&mut self.buf);
                            self.on_head(&head[..head_len], out);
                        }
                        None => {
                            if self.buf.len() > self.max_head {
                                self.fail(H1Error::HeadTooLarge, out);
                            }
                            return None;
                        }
                    }
                }
                State::Fixed(n) => {
                    let take = (n.min(data.len() as u64)) as usize;
                    out(H1Event::Body(&data[..take]));
                    data = &data[take..];
                    if n == take as u64 {
                        out(H1Event::End);
                        self.state = State::Head;
                    } else {
                        self.state = State::Fixed(n - take as u64);
                    }
                }
                State::UntilClose => {
                    out(H1Event::Body(data));
                    return None;
                }
                State::ChunkData(n) => {
                    let take = (n.min(data.len() as u64)) as usize;
                    out(H1Event::Body(&data[..take]));
                    data = &data[take..];
                    self.state = if n == take as u64 {
                        State::ChunkDataEnd
                    } else {
                        State::ChunkData(n - take as u64)
                    };
                }
                State::ChunkSize | State::ChunkDataEnd | State::Trailers => {
                    let Some(line) = self.take_line(&mut data) else {
                        if self.buf.len() > MAX_LINE {
                            self.fail(H1Error::BadFraming, out);
                        }
                        return None;
                    };
                    match self.state {
                        State::ChunkDataEnd => {
                            if line.is_empty() {
                                self.state = State::ChunkSize;
                            } else {
                                self.fail(H1Error::BadFraming, out);
                            }
                        }
                        State::ChunkSize => match chunk_size(&line) {
                            Some(0) => self.state = State::Trailers,
                            Some(n) => self.state = State::ChunkData(n),
                            None => self.fail(H1Error::BadFraming, out),
                        },
                        _ => {
                            if line.is_empty() {
                                out(H1Event::End);
                                self.state = State::Head;
                            }
                        }
                    }
                }
            }
        }
        None
    }

    /// Takes one line (without its terminator) from `buf` + `data`.
    fn take_line(&mut self, data: &mut &[u8]) -> Option<Vec<u8>> {
        match memchr::memchr(b'\n', data) {
            Some(i) => {
                self.buf.extend_from_slice(&data[..i]);
                *data = &data[i + 1..];
                let mut line = std::mem::take(&mut self.buf);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Some(line)
            }
            None => {
                self.buf.extend_from_slice(data);
                *data = &[];
                None
            }
        }
    }

    fn fail(&mut self, e: H1Error, out: &mut impl FnMut(H1Event<'_>)) {
        out(H1Event::Error(e));
        self.buf.clear();
        self.state = State::Resync;
    }

    /// Offset in `buf` of a line that starts a message of this side.
    fn find_start(&self) -> Option<usize> {
        let b = &self.buf;
        let starts = std::iter::once(0).chain(memchr::memchr_iter(b'\n', b).map(|i| i + 1));
        starts.take_while(|&i| i < b.len()).find(|&i| {
            let rest = &b[i..];
            match self.side {
                Side::Responses => rest.starts_with(b"HTTP/1."),
                Side::Requests => METHODS.iter().any(|m| rest.starts_with(m)),
            }
        })
    }

    fn on_head(&mut self, raw: &[u8], out: &mut impl FnMut(H1Event<'_>)) {
        let Some(head) = parse_head(raw, self.side) else {
            return self.fail(H1Error::BadHead, out);
        };
        if head.headers.len() > MAX_HEADERS {
            return self.fail(H1Error::HeadTooLarge, out);
        }
        let chunked = head.header("transfer-encoding").is_some_and(|te| {
            te.rsplit(',')
                .next()
                .is_some_and(|l| l.trim().eq_ignore_ascii_case("chunked"))
        });
        let lengths: Vec<&str> = head
            .headers
            .iter()
            .filter(|(n, _)| n == "content-length")
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .collect();
        let length = match lengths.first() {
            None => None,
            Some(first) if lengths.iter().all(|l| l == first) => match first.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => return self.fail(H1Error::BadFraming, out),
            },
            Some(_) => return self.fail(H1Error::BadFraming, out),
        };
        let mut next = if chunked {
            State::ChunkSize
        } else {
            match length {
                Some(0) => State::Head,
                Some(n) => State::Fixed(n),
                None if self.side == Side::Requests => State::Head,
                None => State::UntilClose,
            }
        };
        let mut upgraded = false;
        if self.side == Side::Responses {
            let status = head.status.unwrap_or(0);
            let head_request = if (100..200).contains(&status) {
                false
            } else {
                self.no_body_next.pop_front().unwrap_or(false)
            };
            if status == 101 {
                upgraded = true;
            } else if (100..200).contains(&status) || status == 204 || status == 304 || head_request {
                next = State::Head;
            }
        } else if head.method.as_deref() == Some("CONNECT") {
            upgraded = true;
        }
        out(H1Event::Head(head));
        if upgraded {
            out(H1Event::Upgraded);
            self.state = State::Upgraded;
            return;
        }
        if next == State::Head {
            out(H1Event::End);
        }
        self.state = next;
    }
}

/// End of the head (`\r\n\r\n` or `\n\n`): (offset of the terminator, its
/// length).
fn find_head_end(b: &[u8]) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &b[from..]) {
        let i = from + i;
        let rest = &b[i + 1..];
        if rest.starts_with(b"\n") {
            let start = if i > 0 && b[i - 1] == b'\r' { i - 1 } else { i };
            return Some((start, i + 2 - start));
        }
        if rest.starts_with(b"\r\n") {
            let start = if i > 0 && b[i - 1] == b'\r' { i - 1 } else { i };
            return Some((start, i + 3 - start));
        }
        from = i + 1;
    }
    None
}

fn chunk_size(line: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(line).ok()?;
    let hex = s.split(';').next()?.trim();
    if hex.is_empty() || hex.len() > 15 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn parse_head(raw: &[u8], side: Side) -> Option<Head> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next()?;
    let mut head = Head::default();
    match side {
        Side::Requests => {
            let mut parts = first.split(' ');
            let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some()
                || !version.starts_with("HTTP/1.")
                || method.is_empty()
                || !method.bytes().all(|b| b.is_ascii_uppercase())
                || target.is_empty()
            {
                return None;
            }
            head.method = Some(method.to_owned());
            head.path = Some(target.to_owned());
        }
        Side::Responses => {
            let mut parts = first.splitn(3, ' ');
            let (version, code) = (parts.next()?, parts.next()?);
            if !version.starts_with("HTTP/1.") || code.len() != 3 {
                return None;
            }
            head.status = Some(code.parse().ok()?);
        }
    }
    for line in lines {
        // Obsolete line folding is refused (RFC 9112 5.2).
        if line.starts_with(' ') || line.starts_with('\t') {
            return None;
        }
        let (name, value) = line.split_once(':')?;
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return None;
        }
        head.headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        if head.headers.len() > MAX_HEADERS {
            break;
        }
    }
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Events as owned values, body bytes joined per message.
    #[derive(Debug, PartialEq, Eq, Clone)]
    pub enum Ev {
        Head(Head),
        Body(Vec<u8>),
        End,
        Error(H1Error),
        Upgraded,
    }

    pub fn run(p: &mut H1Parser, pieces: &[&[u8]]) -> Vec<Ev> {
        let mut evs: Vec<Ev> = Vec::new();
        for piece in pieces {
            p.feed(piece, &mut |e| {
                let e = match e {
                    H1Event::Head(h) => Ev::Head(h),
                    H1Event::Body(b) => {
                        if let Some(Ev::Body(prev)) = evs.last_mut() {
                            prev.extend_from_slice(b);
                            return;
                        }
                        Ev::Body(b.to_vec())
                    }
                    H1Event::End => Ev::End,
                    H1Event::Error(e) => Ev::Error(e),
                    H1Event::Upgraded => Ev::Upgraded,
                };
                evs.push(e);
            });
        }
        evs.retain(|e| !matches!(e, Ev::Body(b) if b.is_empty()));
        evs
    }

    const REQ: &[u8] = b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nMcp-Session-Id: abc\r\nContent-Length: 17\r\n\r\n{\"jsonrpc\":\"2.0\"}GET /mcp HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n";

    #[test]
    fn keep_alive_requests_with_and_without_bodies() {
        let evs = run(&mut H1Parser::new(Side::Requests, 8192), &[REQ]);
        assert_eq!(evs.len(), 5, "{evs:?}");
        let Ev::Head(h) = &evs[0] else { panic!() };
        assert_eq!((h.method.as_deref(), h.path.as_deref()), (Some("POST"), Some("/mcp")));
        assert_eq!(h.header("mcp-session-id"), Some("abc"));
        assert_eq!(evs[1], Ev::Body(b"{\"jsonrpc\":\"2.0\"}".to_vec()));
        assert_eq!(evs[2], Ev::End);
        let Ev::Head(h) = &evs[3] else { panic!() };
        assert_eq!(h.method.as_deref(), Some("GET"));
        assert_eq!(evs[4], Ev::End);
    }

    #[test]
    fn chunked_responses_with_extensions_and_trailers() {
        let resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n";
        let evs = run(&mut H1Parser::new(Side::Responses, 8192), &[resp]);
        assert_eq!(evs[1], Ev::Body(b"hello world".to_vec()), "{evs:?}");
        assert_eq!(evs[2], Ev::End);
        let Ev::Head(h) = &evs[3] else { panic!() };
        assert_eq!(h.status, Some(202));
        assert_eq!(evs[4], Ev::End);
        assert_eq!(evs.len(), 5);
    }

    #[test]
    fn bodies_without_length_run_until_close_and_no_body_statuses() {
        let mut p = H1Parser::new(Side::Responses, 8192);
        let evs = run(
            &mut p,
            &[b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n\r\nstream", b"ing"],
        );
        assert_eq!(evs[1], Ev::End);
        assert_eq!(evs[3], Ev::Body(b"streaming".to_vec()));
        let mut end = Vec::new();
        p.close(&mut |e| end.push(format!("{e:?}")));
        assert_eq!(end, ["End"]);
        // A HEAD request's response has no body despite Content-Length.
        let mut p = H1Parser::new(Side::Responses, 8192);
        p.expect_response(true);
        let evs = run(
            &mut p,
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"],
        );
        assert_eq!(evs.len(), 5, "{evs:?}");
    }

    #[test]
    fn errors_resync_on_the_next_message() {
        let mut p = H1Parser::new(Side::Requests, 8192);
        let evs = run(
            &mut p,
            &[b"garbage line\r\n\r\nmore garbage\nPOST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"],
        );
        assert_eq!(evs[0], Ev::Error(H1Error::BadHead), "{evs:?}");
        let Ev::Head(h) = &evs[1] else { panic!("{evs:?}") };
        assert_eq!(h.path.as_deref(), Some("/a"));
        assert_eq!(evs[2], Ev::Body(b"{}".to_vec()));
        // Contradictory lengths, bad chunk sizes, a head that never ends.
        let evs = run(
            &mut H1Parser::new(Side::Requests, 8192),
            &[b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n"],
        );
        assert_eq!(evs, [Ev::Error(H1Error::BadFraming)]);
        let evs = run(
            &mut H1Parser::new(Side::Responses, 8192),
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
        );
        assert_eq!(evs.last(), Some(&Ev::Error(H1Error::BadFraming)));
        let mut p = H1Parser::new(Side::Requests, 1024);
        let evs = run(&mut p, &[b"POST / HTTP/1.1\r\n", &[b'a'; 4096]]);
        assert_eq!(evs, [Ev::Error(H1Error::HeadTooLarge)]);
        assert!(p.buffered() <= 1024);
    }

    #[test]
    fn joined_mid_stream_and_upgrades() {
        let mut p = H1Parser::new_resync(Side::Responses, 8192);
        let evs = run(
            &mut p,
            &[b"tail of an earlier body\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"],
        );
        assert!(matches!(evs[0], Ev::Head(_)), "{evs:?}");
        let mut p = H1Parser::new(Side::Responses, 8192);
        let evs = run(
            &mut p,
            &[b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"],
        );
        assert_eq!(evs.last(), Some(&Ev::Upgraded));
    }

    proptest! {
        /// However the bytes are cut into reads, the events are the same.
        #[test]
        fn split_invariance(cuts in proptest::collection::vec(0usize..400, 0..12)) {
            let resp: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
            for (side, input) in [(Side::Requests, REQ), (Side::Responses, resp)] {
                let whole = run(&mut H1Parser::new(side, 8192), &[input]);
                let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
                cuts.sort();
                let mut pieces = Vec::new();
                let mut last = 0;
                for c in cuts {
                    pieces.push(&input[last..c]);
                    last = c;
                }
                pieces.push(&input[last..]);
                prop_assert_eq!(&run(&mut H1Parser::new(side, 8192), &pieces), &whole);
            }
        }

        /// Arbitrary bytes: no panic, memory bounded.
        #[test]
        fn garbage_is_bounded(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            for side in [Side::Requests, Side::Responses] {
                let mut p = H1Parser::new(side, 512);
                p.feed(&data, &mut |_| {});
                prop_assert!(p.buffered() <= 512 + 4096);
            }
        }
    }
}
