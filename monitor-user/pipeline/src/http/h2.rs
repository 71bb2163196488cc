//! HTTP/2 (RFC 9113): one direction of a connection, from frames to the
//! same heads, bodies and ends as HTTP/1.1.
//!
//! ```text
//! bytes ──► frames ──► HEADERS (+CONTINUATION) ──► hpack::Decoder ──► head of stream N
//!                  └─► DATA ──► the body of stream N (JSON, or SSE events)
//! ```
//!
//! Each stream is one message in this direction: a request or its
//! response, paired by stream id ([`HttpMeta::stream`]). The header
//! decoder is stateful per direction (a stateless one loses every header
//! after the first request). Capture that joins a connection in progress,
//! or loses bytes, knows neither frame boundaries nor the header table: it
//! looks for the next DATA frame header whose payload starts like JSON or
//! an event, and takes bodies without their heads.
//!
//! Memory is bounded: frames are buffered only up to a small limit (DATA
//! payloads are streamed), header blocks up to `MAX_HEAD`, open streams up
//! to `MAX_STREAMS`, each body up to `max_body`.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::{
    h1::{Head, Side},
    hpack, starts_like_events, HttpMeta, HttpOutput, HttpVersion, Message,
};

/// The client's connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes of a header block (HEADERS and its CONTINUATIONs) kept.
const MAX_HEAD: usize = 64 * 1024;
/// Open streams per direction; beyond, the oldest is dropped.
const MAX_STREAMS: usize = 256;
/// Payload of a control frame (SETTINGS, PING, GOAWAY...) kept; larger
/// ones are skipped.
const MAX_CONTROL: usize = 16 * 1024;
/// The largest DATA frame taken as one when looking for frames after a
/// gap (the protocol's default SETTINGS_MAX_FRAME_SIZE is 16 KiB; servers
/// raise it, rarely past 1 MiB).
const MAX_RESYNC_FRAME: usize = 1 << 20;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// A frame's 9-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length.
    pub len: usize,
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream id (the reserved bit cleared).
    pub stream: u32,
}

impl FrameHeader {
    /// Reads a frame header from the first 9 bytes of `b`.
    pub fn parse(b: &[u8]) -> Option<FrameHeader> {
        let b: &[u8; 9] = b.get(..9)?.try_into().ok()?;
        Some(FrameHeader {
            len: (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize,
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        })
    }
}

/// Which side of HTTP/2 `data` (the first bytes of a direction) starts,
/// if it does: the client preface, or the SETTINGS frame a server sends
/// first.
pub fn sniff(data: &[u8]) -> Option<Side> {
    if data.starts_with(PREFACE) || (data.len() < PREFACE.len() && PREFACE.starts_with(data) && data.len() >= 8) {
        return Some(Side::Requests);
    }
    let h = FrameHeader::parse(data)?;
    // A server's first SETTINGS is never an acknowledgement.
    (h.kind == SETTINGS && h.stream == 0 && h.len % 6 == 0 && h.len <= 6 * 16 && h.flags == 0)
        .then_some(Side::Responses)
}

/// True when `data`, the first bytes seen of a direction joined in
/// progress, is a run of plausible HTTP/2 frames, the last of which may
/// go on in the next read (TLS libraries are handed whole frames, so a
/// captured write or read starts at one).
pub fn looks_like_frames(data: &[u8]) -> bool {
    let mut rest = data;
    let mut frames = 0;
    while rest.len() >= 9 {
        let h = FrameHeader::parse(rest).expect("nine bytes");
        if !plausible(&h) {
            return false;
        }
        frames += 1;
        if rest.len() < 9 + h.len {
            return true;
        }
        rest = &rest[9 + h.len..];
    }
    frames > 0
}

/// True when `data` holds nothing but frames that either side sends
/// (SETTINGS, PING, GOAWAY, WINDOW_UPDATE, RST_STREAM, PRIORITY), each
/// whole: a lone SETTINGS acknowledgement or window update, which can reach
/// the agent before the first request of a just-discovered process (its
/// other thread's chunk wins the race into the ring), says nothing of the
/// side its direction carries.
pub fn tells_nothing(data: &[u8]) -> bool {
    let mut rest = data;
    while let Some(h) = FrameHeader::parse(rest) {
        if !plausible(&h) || !matches!(h.kind, SETTINGS | 0x6 | 0x7 | 0x8 | RST_STREAM | 0x2) || rest.len() < 9 + h.len
        {
            return false;
        }
        rest = &rest[9 + h.len..];
    }
    rest.is_empty() && !data.is_empty()
}

/// The side a direction joined in progress carries, from its first
/// frames: a HEADERS block opening with `:status` is a response's, with
/// `:method` a request's; a DATA payload of events is a response's. `None`
/// when these frames do not tell.
pub fn side_of_frames(data: &[u8]) -> Option<Side> {
    let mut rest = data;
    while let Some(h) = FrameHeader::parse(rest) {
        let payload = &rest[9..rest.len().min(9 + h.len)];
        match h.kind {
            HEADERS => {
                let fragment = header_fragment(&h, payload).or(Some(payload))?;
                let first = *fragment.iter().find(|b| **b & 0xe0 != 0x20)?;
                // Indexed :status (8..=14), or a literal with the name
                // :status (index 8): a response; :method (2, 3): a request.
                return match first {
                    0x88..=0x8e => Some(Side::Responses),
                    0x48 | 0x08 | 0x18 => Some(Side::Responses),
                    0x82 | 0x83 | 0x42 | 0x02 | 0x12 => Some(Side::Requests),
                    _ => None,
                };
            }
            DATA if starts_like_events(payload) => return Some(Side::Responses),
            _ => {}
        }
        if rest.len() < 9 + h.len {
            return None;
        }
        rest = &rest[9 + h.len..];
    }
    None
}

/// A frame header that a real peer could send.
fn plausible(h: &FrameHeader) -> bool {
    let on_stream = h.stream != 0;
    match h.kind {
        DATA | HEADERS | RST_STREAM | PUSH_PROMISE | CONTINUATION => on_stream && h.len <= MAX_RESYNC_FRAME,
        0x2 => on_stream && h.len == 5,                                // PRIORITY
        SETTINGS | 0x6 | 0x7 => h.stream == 0 && h.len <= MAX_CONTROL, // PING, GOAWAY
        0x8 => h.len == 4,                                             // WINDOW_UPDATE
        _ => false,
    }
}

/// Where the parser is in the byte stream.
#[derive(Debug)]
enum State {
    /// Before a frame header: the bytes of it seen so far.
    Header,
    /// Inside a DATA frame: payload bytes still to pass on, then padding.
    Data {
        stream: u32,
        left: usize,
        pad: usize,
        end: bool,
        padded_first: bool,
    },
    /// Inside a frame whose payload is kept whole.
    Keep { header: FrameHeader },
    /// Inside a frame that is skipped.
    Skip { left: usize },
    /// After a gap: looking for a DATA frame that carries JSON or events.
    Resync,
}

/// Where capture of a direction begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H2Start {
    /// At the start: the client preface, or the server's first SETTINGS.
    Fresh,
    /// In progress, at a frame header (a TLS library is handed whole frames).
    AtFrame,
    /// In progress, anywhere (bytes were lost): frames are looked for.
    Anywhere,
}

/// One direction of an HTTP/2 connection.
pub struct H2Half {
    side: Side,
    state: State,
    /// Bytes of a frame header, a kept payload, or (resync) a look-ahead.
    buf: Vec<u8>,
    /// Bytes of the client preface still expected.
    preface_left: usize,
    hpack: hpack::Decoder,
    /// A header block waiting for its CONTINUATIONs: stream, flags of its
    /// HEADERS frame (or `None` for PUSH_PROMISE), and the block.
    block: Option<(u32, Option<u8>, Vec<u8>)>,
    /// Open messages by stream, with the order they opened.
    streams: FxHashMap<u32, (u64, Message)>,
    opened: u64,
    max_body: usize,
    /// Seen from the preface or first SETTINGS on: every frame header
    /// is trusted.
    fresh: bool,
}

impl H2Half {
    /// A direction that sends `side` (requests: the client's).
    pub fn new(side: Side, max_body: usize, start: H2Start) -> Self {
        H2Half {
            side,
            state: if start == H2Start::Anywhere {
                State::Resync
            } else {
                State::Header
            },
            buf: Vec::new(),
            preface_left: if side == Side::Requests && start == H2Start::Fresh {
                PREFACE.len()
            } else {
                0
            },
            hpack: if start == H2Start::Fresh {
                hpack::Decoder::new()
            } else {
                hpack::Decoder::joined_mid_stream()
            },
            block: None,
            streams: FxHashMap::default(),
            opened: 0,
            max_body,
            fresh: start == H2Start::Fresh,
        }
    }

    /// Bytes held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
            + self.block.as_ref().map_or(0, |b| b.2.len())
            + self.hpack.table_size()
            + self.streams.values().map(|(_, m)| m.buffered()).sum::<usize>()
    }

    /// Bytes of frames and messages in progress: [`H2Half::buffered`] without
    /// the header table, which every connection keeps between messages.
    pub fn in_progress(&self) -> usize {
        self.buffered() - self.hpack.table_size()
    }

    /// Bytes allocated.
    pub fn allocated(&self) -> usize {
        self.buf.capacity()
            + self.block.as_ref().map_or(0, |b| b.2.capacity())
            + self.hpack.table_size()
            + self.streams.values().map(|(_, m)| m.allocated()).sum::<usize>()
    }

    /// Bytes were lost: open messages are dropped, the header table is no
    /// longer known, and frames are looked for afresh.
    pub fn gap(&mut self, out: &mut impl FnMut(HttpOutput)) {
        if !self.streams.is_empty() || !matches!(self.state, State::Header | State::Resync) {
            out(HttpOutput::Error("h2_gap"));
        }
        self.streams.clear();
        self.block = None;
        self.buf = Vec::new();
        self.preface_left = 0;
        self.hpack = hpack::Decoder::joined_mid_stream();
        self.state = State::Resync;
        self.fresh = false;
    }

    /// The connection closed: messages still open end here.
    pub fn close(&mut self, out: &mut impl FnMut(HttpOutput)) {
        let mut open: Vec<_> = self.streams.drain().map(|(_, m)| m).collect();
        open.sort_by_key(|(n, _)| *n);
        for (_, m) in open {
            m.end(self.max_body, out);
        }
    }

    /// The next captured bytes of this direction.
    pub fn feed(&mut self, mut data: &[u8], out: &mut impl FnMut(HttpOutput)) {
        if self.preface_left > 0 {
            let seen = PREFACE.len() - self.preface_left;
            let n = self.preface_left.min(data.len());
            if data[..n] != PREFACE[seen..seen + n] {
                // Not the preface after all: take the bytes as frames.
                out(HttpOutput::Error("h2_bad_preface"));
                self.preface_left = 0;
            } else {
                self.preface_left -= n;
                data = &data[n..];
            }
        }
        while !data.is_empty() {
            data = self.step(data, out);
        }
    }

    /// Consumes some of `data` (at least one byte), returns the rest.
    fn step<'a>(&mut self, data: &'a [u8], out: &mut impl FnMut(HttpOutput)) -> &'a [u8] {
        match &mut self.state {
            State::Header => {
                let n = (9 - self.buf.len()).min(data.len());
                self.buf.extend_from_slice(&data[..n]);
                if self.buf.len() == 9 {
                    let h = FrameHeader::parse(&self.buf).expect("nine bytes");
                    self.buf.clear();
                    self.start_frame(h, out);
                }
                &data[n..]
            }
            State::Data {
                stream,
                left,
                pad,
                end,
                padded_first,
            } => {
                if *padded_first {
                    // The pad length byte of a padded DATA frame.
                    let p = data[0] as usize;
                    *padded_first = false;
                    if p > *left {
                        out(HttpOutput::Error("h2_bad_padding"));
                        let skip = *left;
                        self.streams.remove(stream);
                        self.state = State::Skip { left: skip };
                    } else {
                        *left -= p;
                        *pad = p;
                        if *left == 0 {
                            let (stream, end, pad) = (*stream, *end, *pad);
                            self.finish_data(stream, pad, end, out);
                        }
                    }
                    return &data[1..];
                }
                let n = (*left).min(data.len());
                let (stream, end) = (*stream, *end);
                *left -= n;
                let done = *left == 0;
                let pad = *pad;
                if n > 0 {
                    self.body(stream, &data[..n], out);
                }
                if done {
                    self.finish_data(stream, pad, end, out);
                }
                &data[n..]
            }
            State::Keep { header } => {
                let header = *header;
                let n = (header.len - self.buf.len()).min(data.len());
                self.buf.extend_from_slice(&data[..n]);
                if self.buf.len() == header.len {
                    let payload = std::mem::take(&mut self.buf);
                    self.state = State::Header;
                    self.on_frame(header, &payload, out);
                }
                &data[n..]
            }
            State::Skip { left } => {
                let n = (*left).min(data.len());
                *left -= n;
                if *left == 0 {
                    self.state = State::Header;
                }
                &data[n..]
            }
            State::Resync => self.resync(data, out),
        }
    }

    /// The payload of a DATA frame is through: padding is skipped next.
    fn finish_data(&mut self, stream: u32, pad: usize, end: bool, out: &mut impl FnMut(HttpOutput)) {
        self.state = if pad > 0 {
            State::Skip { left: pad }
        } else {
            State::Header
        };
        if end {
            self.end_stream(stream, out);
        }
    }

    fn start_frame(&mut self, h: FrameHeader, out: &mut impl FnMut(HttpOutput)) {
        if !self.fresh && !plausible(&h) {
            // Taken up in progress at what only looked like a frame: look
            // again, rather than skip whatever length this header claims.
            out(HttpOutput::Error("h2_gap"));
            self.streams.clear();
            self.block = None;
            self.hpack = hpack::Decoder::joined_mid_stream();
            self.state = State::Resync;
            return;
        }
        if self.block.is_some() && h.kind != CONTINUATION {
            // A header block must be followed by its CONTINUATIONs.
            out(HttpOutput::Error("h2_bad_frame"));
            self.block = None;
            self.hpack = hpack::Decoder::joined_mid_stream();
        }
        self.state = match h.kind {
            DATA if h.stream != 0 && h.flags & PADDED != 0 && h.len == 0 => {
                out(HttpOutput::Error("h2_bad_padding"));
                State::Header
            }
            DATA if h.stream != 0 => {
                if h.len == 0 {
                    if h.flags & END_STREAM != 0 {
                        self.end_stream(h.stream, out);
                    }
                    State::Header
                } else {
                    State::Data {
                        stream: h.stream,
                        left: h.len - usize::from(h.flags & PADDED != 0),
                        pad: 0,
                        end: h.flags & END_STREAM != 0,
                        padded_first: h.flags & PADDED != 0,
                    }
                }
            }
            HEADERS | PUSH_PROMISE | CONTINUATION if h.stream != 0 => {
                if h.len > MAX_HEAD {
                    out(HttpOutput::Error("http_head_too_large"));
                    // The table now differs from the encoder's.
                    self.hpack = hpack::Decoder::joined_mid_stream();
                    self.block = None;
                    State::Skip { left: h.len }
                } else if h.len == 0 {
                    self.on_frame(h, &[], out);
                    State::Header
                } else {
                    State::Keep { header: h }
                }
            }
            RST_STREAM if h.stream != 0 && h.len <= MAX_CONTROL => State::Keep { header: h },
            _ if h.len == 0 => State::Header,
            _ => State::Skip { left: h.len },
        };
    }

    fn on_frame(&mut self, h: FrameHeader, payload: &[u8], out: &mut impl FnMut(HttpOutput)) {
        match h.kind {
            HEADERS | PUSH_PROMISE => {
                let Some(fragment) = header_fragment(&h, payload) else {
                    out(HttpOutput::Error("h2_bad_frame"));
                    self.hpack = hpack::Decoder::joined_mid_stream();
                    return;
                };
                let flags = (h.kind == HEADERS).then_some(h.flags);
                if h.flags & END_HEADERS != 0 {
                    self.header_block(h.stream, flags, fragment, out);
                } else {
                    self.block = Some((h.stream, flags, fragment.to_vec()));
                }
            }
            CONTINUATION => {
                let Some((stream, flags, mut block)) = self.block.take() else {
                    // The HEADERS before it was not seen: what its block
                    // added to the table is unknown.
                    out(HttpOutput::Error("h2_bad_frame"));
                    self.hpack = hpack::Decoder::joined_mid_stream();
                    return;
                };
                if stream != h.stream || block.len() + payload.len() > MAX_HEAD {
                    out(HttpOutput::Error(if stream != h.stream {
                        "h2_bad_frame"
                    } else {
                        "http_head_too_large"
                    }));
                    self.hpack = hpack::Decoder::joined_mid_stream();
                    return;
                }
                block.extend_from_slice(payload);
                if h.flags & END_HEADERS != 0 {
                    self.header_block(stream, flags, &block, out);
                } else {
                    self.block = Some((stream, flags, block));
                }
            }
            RST_STREAM => {
                // The stream was abandoned: what it carried so far is no message.
                self.streams.remove(&h.stream);
            }
            _ => {}
        }
    }

    /// A complete header block of `stream`; `flags` of its HEADERS frame,
    /// `None` for a PUSH_PROMISE (decoded only to keep the table in step).
    fn header_block(&mut self, stream: u32, flags: Option<u8>, block: &[u8], out: &mut impl FnMut(HttpOutput)) {
        let was_synced = !self.hpack.desynced();
        let fields = match self.hpack.decode(block, MAX_HEAD) {
            Ok(f) => Some(f),
            Err(e) => {
                out(HttpOutput::Error(e.as_str()));
                None
            }
        };
        let Some(flags) = flags else { return };
        // Headers decoded with a table that may differ from the encoder's
        // are not trusted: the message goes on without them.
        let head = fields.filter(|_| was_synced).map(|f| head_of(self.side, f));
        if let Some(open) = self.streams.get(&stream) {
            // Trailers, or the final head after an informational one.
            let informational = open.1.meta().status.is_some_and(|s| (100..200).contains(&s));
            if informational {
                self.streams.remove(&stream);
            }
        }
        if !self.streams.contains_key(&stream) {
            if let Some(head) = head.as_ref() {
                if head.status.is_some_and(|s| (100..200).contains(&s)) {
                    // 100 Continue and 103 Early Hints: the final head follows.
                    return;
                }
            }
            self.open(stream, head, out);
        }
        if flags & END_STREAM != 0 {
            self.end_stream(stream, out);
        }
    }

    /// Opens the message of `stream` with its head (`None`: unknown).
    fn open(&mut self, stream: u32, head: Option<Head>, out: &mut impl FnMut(HttpOutput)) {
        self.make_room(out);
        let (meta, encoding) = match head {
            Some(h) => {
                let mut meta = HttpMeta::from_head(&h);
                meta.version = HttpVersion::H2;
                meta.stream = Some(stream);
                let meta = Arc::new(meta);
                out(HttpOutput::Head(meta.clone()));
                (meta, h.header("content-encoding").map(str::to_owned))
            }
            None => (
                Arc::new(HttpMeta {
                    version: HttpVersion::H2,
                    stream: Some(stream),
                    ..HttpMeta::default()
                }),
                None,
            ),
        };
        self.opened += 1;
        let m = Message::start(meta, encoding.as_deref(), self.max_body);
        self.streams.insert(stream, (self.opened, m));
    }

    /// At most `MAX_STREAMS` open messages: the oldest goes.
    fn make_room(&mut self, out: &mut impl FnMut(HttpOutput)) {
        if self.streams.len() >= MAX_STREAMS {
            let oldest = self.streams.iter().min_by_key(|(_, (n, _))| *n).map(|(s, _)| *s);
            if let Some(s) = oldest {
                self.streams.remove(&s);
                out(HttpOutput::Error("h2_too_many_streams"));
            }
        }
    }

    fn body(&mut self, stream: u32, b: &[u8], out: &mut impl FnMut(HttpOutput)) {
        if !self.streams.contains_key(&stream) {
            // DATA on a stream whose head was not seen (joined in progress,
            // or its head could not be decoded): a body without a head, an
            // event stream if its first bytes say so (see `Message`).
            let meta = HttpMeta {
                version: HttpVersion::H2,
                stream: Some(stream),
                ..HttpMeta::default()
            };
            self.make_room(out);
            self.opened += 1;
            let m = Message::start(Arc::new(meta), None, self.max_body);
            self.streams.insert(stream, (self.opened, m));
        }
        if let Some((_, m)) = self.streams.get_mut(&stream) {
            m.body(b, self.max_body, out);
        }
        // Many streams of one connection must not hold many bodies' worth:
        // past four, the oldest open message goes (counted).
        while self.streams.len() > 1
            && self.streams.values().map(|(_, m)| m.buffered()).sum::<usize>() > 4 * self.max_body
        {
            let oldest = self.streams.iter().min_by_key(|(_, (n, _))| *n).map(|(s, _)| *s);
            if let Some(s) = oldest {
                self.streams.remove(&s);
                out(HttpOutput::Error("h2_streams_over_budget"));
            }
        }
    }

    fn end_stream(&mut self, stream: u32, out: &mut impl FnMut(HttpOutput)) {
        if let Some((_, m)) = self.streams.remove(&stream) {
            m.end(self.max_body, out);
        }
    }

    /// After a gap or a mid-stream join: finds the next DATA frame whose
    /// payload starts like JSON or an event, and resumes framing there.
    fn resync<'a>(&mut self, data: &'a [u8], out: &mut impl FnMut(HttpOutput)) -> &'a [u8] {
        // The last bytes kept from before (a header may straddle feeds), then these.
        let mut look = std::mem::take(&mut self.buf);
        look.extend_from_slice(data);
        match (0..look.len()).find(|&i| look.get(i..i + 10).is_some_and(data_frame_start)) {
            Some(i) => {
                self.state = State::Header;
                let mut r = &look[i..];
                while !r.is_empty() {
                    r = self.step(r, out);
                }
            }
            None => {
                let keep = look.len().saturating_sub(9);
                look.drain(..keep);
                self.buf = look;
            }
        }
        &[]
    }
}

/// A DATA frame header followed by the first byte of JSON or an event.
fn data_frame_start(w: &[u8]) -> bool {
    let Some(h) = FrameHeader::parse(w) else { return false };
    h.kind == DATA
        && h.stream != 0
        && h.flags & !(END_STREAM | PADDED) == 0
        && h.flags & PADDED == 0
        && h.len > 0
        && h.len <= MAX_RESYNC_FRAME
        && matches!(w[9], b'{' | b'[' | b'd' | b'e' | b'i' | b':')
}

/// The header block fragment of a HEADERS or PUSH_PROMISE payload
/// (padding, priority and the promised stream removed).
fn header_fragment<'a>(h: &FrameHeader, p: &'a [u8]) -> Option<&'a [u8]> {
    let mut start = 0;
    let mut end = p.len();
    if h.flags & PADDED != 0 {
        let pad = *p.first()? as usize;
        start = 1;
        end = end.checked_sub(pad)?;
    }
    if h.kind == HEADERS && h.flags & PRIORITY != 0 {
        start += 5;
    }
    if h.kind == PUSH_PROMISE {
        start += 4;
    }
    p.get(start..end)
}

/// The head of a message from its decoded fields: pseudo-headers give the
/// method, path and status; the rest keep their order, names lowercase.
fn head_of(side: Side, fields: Vec<hpack::Field>) -> Head {
    let mut head = Head {
        method: None,
        path: None,
        status: None,
        headers: Vec::with_capacity(fields.len()),
    };
    for (n, v) in fields {
        let v = String::from_utf8_lossy(&v).trim().to_owned();
        match (side, n.as_slice()) {
            (Side::Requests, b":method") => head.method = Some(v),
            (Side::Requests, b":path") => head.path = Some(v),
            (Side::Responses, b":status") => head.status = v.parse().ok(),
            (_, n) if n.first() == Some(&b':') => {}
            (_, n) => head.headers.push((String::from_utf8_lossy(n).to_ascii_lowercase(), v)),
        }
    }
    head
}

#[cfg(test)]
pub(crate) mod frames {
    //! Building frames for tests.
    use super::super::hpack::encode;

    /// A frame.
    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// The header fields of a Streamable HTTP POST to /mcp, with the
    /// session id when given.
    pub fn mcp_post(session: Option<&str>) -> Vec<(&str, &str)> {
        let mut fields = vec![
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "127.0.0.1:8443"),
            (":path", "/mcp"),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        if let Some(s) = session {
            fields.push(("mcp-session-id", s));
        }
        fields
    }

    /// A header block as encoders write one: a field in the static table
    /// by its index, one sent before from the dynamic table, a new one as a
    /// literal with incremental indexing (its name indexed when the static
    /// table has it), tracked in `table` (newest first).
    pub fn block(table: &mut Vec<(String, String)>, fields: &[(&str, &str)], huffman: bool) -> Vec<u8> {
        use super::super::hpack::STATIC;
        let mut b = Vec::new();
        for (n, v) in fields {
            if let Some(i) = STATIC.iter().position(|(sn, sv)| sn == n && sv == v) {
                encode::integer(&mut b, 0x80, 7, 1 + i);
            } else if let Some(i) = table.iter().position(|(tn, tv)| tn == n && tv == v) {
                encode::integer(&mut b, 0x80, 7, 62 + i);
            } else {
                match STATIC.iter().position(|(sn, _)| sn == n) {
                    Some(i) => {
                        encode::integer(&mut b, 0x40, 6, 1 + i);
                        encode::string(&mut b, v.as_bytes(), huffman);
                    }
                    None => encode::indexed_literal(&mut b, n.as_bytes(), v.as_bytes(), huffman),
                }
                table.insert(0, (n.to_string(), v.to_string()));
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::{frames::*, *};
    use proptest::prelude::*;

    /// A payload: its stream, its head's path and status, its data.
    type Payload = (Option<u32>, Option<String>, Option<u16>, String);

    /// What a direction reported: payloads, heads, ends and errors.
    #[derive(Debug, Default, PartialEq)]
    struct Seen {
        payloads: Vec<Payload>,
        heads: usize,
        ends: usize,
        errors: Vec<&'static str>,
    }

    fn run(half: &mut H2Half, pieces: &[&[u8]]) -> Seen {
        let mut s = Seen::default();
        for p in pieces {
            half.feed(p, &mut |o| match o {
                HttpOutput::Head(_) => s.heads += 1,
                HttpOutput::Payload { meta, data, .. } => s.payloads.push((
                    meta.stream,
                    meta.path.clone(),
                    meta.status,
                    String::from_utf8_lossy(&data).into_owned(),
                )),
                HttpOutput::End(_) => s.ends += 1,
                HttpOutput::Error(e) => s.errors.push(e),
            });
        }
        s
    }

    /// A client's bytes: preface, SETTINGS, then per call a HEADERS frame
    /// (POST /mcp, with a session id after the first) and the body in
    /// DATA frames of `chunk` bytes, the last with END_STREAM.
    fn client_bytes(bodies: &[String], chunk: usize, huffman: bool, padded: bool) -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]));
        out.extend(frame(0x8, 0, 0, &[0, 0, 0x10, 0]));
        let mut table = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            let stream = 1 + 2 * i as u32;
            let fields = mcp_post((i > 0).then_some("abc123"));
            let b = block(&mut table, &fields, huffman);
            // Split the block over HEADERS and a CONTINUATION.
            let cut = b.len() / 2;
            out.extend(frame(HEADERS, 0, stream, &b[..cut]));
            out.extend(frame(CONTINUATION, END_HEADERS, stream, &b[cut..]));
            let parts: Vec<&[u8]> = body.as_bytes().chunks(chunk.max(1)).collect();
            for (k, part) in parts.iter().enumerate() {
                let last = k + 1 == parts.len();
                let flags = if last { END_STREAM } else { 0 };
                if padded {
                    let mut p = vec![3];
                    p.extend_from_slice(part);
                    p.extend_from_slice(&[0, 0, 0]);
                    out.extend(frame(DATA, flags | PADDED, stream, &p));
                } else {
                    out.extend(frame(DATA, flags, stream, part));
                }
            }
        }
        out
    }

    fn bodies(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"m{i}"}}}}}}"#))
            .collect()
    }

    #[test]
    fn requests_with_continuations_padding_and_a_stateful_table() {
        let b = bodies(3);
        let bytes = client_bytes(&b, 17, true, true);
        let mut half = H2Half::new(Side::Requests, 1 << 20, H2Start::Fresh);
        let seen = run(&mut half, &[&bytes]);
        assert!(seen.errors.is_empty(), "{:?}", seen.errors);
        assert_eq!(seen.heads, 3);
        assert_eq!(seen.ends, 3);
        for (i, (stream, path, _, body)) in seen.payloads.iter().enumerate() {
            assert_eq!(*stream, Some(1 + 2 * i as u32));
            assert_eq!(
                path.as_deref(),
                Some("/mcp"),
                "the later requests' path comes from the table"
            );
            assert_eq!(body, &b[i]);
        }
    }

    #[test]
    fn interleaved_responses_json_and_events_pair_by_stream() {
        let mut table = Vec::new();
        let mut out = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
        out.extend(frame(SETTINGS, 1, 0, &[]));
        let h1 = block(
            &mut table,
            &[(":status", "200"), ("content-type", "text/event-stream")],
            true,
        );
        let h3 = block(
            &mut table,
            &[(":status", "200"), ("content-type", "application/json")],
            true,
        );
        out.extend(frame(HEADERS, END_HEADERS, 1, &h1));
        out.extend(frame(HEADERS, END_HEADERS, 3, &h3));
        out.extend(frame(
            DATA,
            0,
            1,
            b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n",
        ));
        out.extend(frame(DATA, 0, 3, b"{\"jsonrpc\":\"2.0\","));
        out.extend(frame(DATA, END_STREAM, 3, b"\"id\":3,\"result\":{}}"));
        out.extend(frame(
            DATA,
            0,
            1,
            b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n",
        ));
        out.extend(frame(DATA, END_STREAM, 1, b""));
        out.extend(frame(0x7, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 0]));
        // One byte at a time: every state resumes.
        let pieces: Vec<&[u8]> = out.chunks(1).collect();
        let mut half = H2Half::new(Side::Responses, 1 << 20, H2Start::Fresh);
        let seen = run(&mut half, &pieces);
        assert!(seen.errors.is_empty(), "{:?}", seen.errors);
        let got: Vec<(Option<u32>, Option<u16>, &str)> = seen
            .payloads
            .iter()
            .map(|(s, _, st, b)| (*s, *st, b.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    Some(1),
                    Some(200),
                    r#"{"jsonrpc":"2.0","method":"notifications/progress"}"#
                ),
                (Some(3), Some(200), r#"{"jsonrpc":"2.0","id":3,"result":{}}"#),
                (Some(1), Some(200), r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            ]
        );
        assert_eq!(seen.ends, 2);
    }

    #[test]
    fn joined_in_progress_bodies_are_found_without_heads() {
        let b = bodies(4);
        let bytes = client_bytes(&b, 1000, true, false);
        // Start in the middle of the second request's HEADERS.
        let second = bytes.windows(4).position(|w| w == b"m1\"}").unwrap() - 100;
        let mut half = H2Half::new(Side::Requests, 1 << 20, H2Start::Anywhere);
        let seen = run(&mut half, &[&bytes[second..]]);
        let got: Vec<&str> = seen.payloads.iter().map(|p| p.3.as_str()).collect();
        assert_eq!(got, [&b[2], &b[3]], "the two whole bodies after the join");
        assert!(
            seen.payloads.iter().all(|p| p.1.is_none()),
            "heads decoded against an unknown table are not trusted"
        );
        assert!(sniff(&bytes[second..]).is_none());
        assert!(looks_like_frames(&frame(DATA, END_STREAM, 5, b"{}")));
        assert!(!looks_like_frames(b"GET / HTTP/1.1\r\n\r\n"));
    }

    #[test]
    fn a_gap_drops_open_messages_and_finds_the_next_body() {
        let b = bodies(3);
        let bytes = client_bytes(&b, 1000, false, false);
        let mut half = H2Half::new(Side::Requests, 1 << 20, H2Start::Fresh);
        let cut = bytes.windows(4).position(|w| w == b"m0\"}").unwrap();
        let mut seen = run(&mut half, &[&bytes[..cut]]);
        half.gap(&mut |o| {
            if let HttpOutput::Error(e) = o {
                seen.errors.push(e)
            }
        });
        let after = bytes.windows(4).position(|w| w == b"m1\"}").unwrap();
        let rest = run(&mut half, &[&bytes[after..]]);
        assert_eq!(seen.errors, ["h2_gap"]);
        assert!(seen.payloads.is_empty());
        assert_eq!(rest.payloads.len(), 1);
        assert_eq!(rest.payloads[0].3, b[2]);
    }

    #[test]
    fn sniffing_the_first_bytes() {
        assert_eq!(sniff(PREFACE), Some(Side::Requests));
        assert_eq!(
            sniff(&frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])),
            Some(Side::Responses)
        );
        assert_eq!(sniff(b"POST /mcp HTTP/1.1\r\n"), None);
        assert_eq!(sniff(&frame(DATA, 0, 1, b"{}")), None);
    }

    /// Joined in progress, the side comes from the frames, not the stream
    /// id (a response travels on its request's odd stream); a read that
    /// ends inside a frame still counts as frames; an acknowledgement of
    /// SETTINGS is not a server's first frame.
    #[test]
    fn joined_directions_are_told_by_their_frames() {
        let mut table = Vec::new();
        let resp = frame(HEADERS, END_HEADERS, 3, &block(&mut table, &[(":status", "200")], true));
        assert_eq!(side_of_frames(&resp), Some(Side::Responses));
        let req = frame(
            HEADERS,
            END_HEADERS,
            3,
            &block(&mut Vec::new(), &frames::mcp_post(None), true),
        );
        assert_eq!(side_of_frames(&req), Some(Side::Requests));
        let events = frame(DATA, 0, 5, b"event: message\ndata: {}\n\n");
        assert_eq!(side_of_frames(&events), Some(Side::Responses));
        assert_eq!(side_of_frames(&frame(DATA, 0, 5, b"{}")), None);
        let long = frame(DATA, 0, 5, &[b'{'; 4000]);
        assert!(looks_like_frames(&long[..1000]), "a frame cut by the read");
        assert!(!looks_like_frames(&[0xff; 1000]));
        assert_eq!(sniff(&frame(SETTINGS, 1, 0, &[])), None);
    }

    /// One connection's open streams hold at most a few bodies' worth.
    #[test]
    fn many_open_streams_hold_a_bounded_total() {
        let mut half = H2Half::new(Side::Requests, 4096, H2Start::AtFrame);
        let mut errors = Vec::new();
        for stream in (1..200u32).step_by(2) {
            half.feed(&frame(DATA, 0, stream, &[b'{'; 3000]), &mut |o| {
                if let HttpOutput::Error(e) = o {
                    errors.push(e)
                }
            });
        }
        assert!(half.buffered() <= 5 * 4096, "{}", half.buffered());
        assert!(errors.contains(&"h2_streams_over_budget"), "{errors:?}");
    }

    #[test]
    fn connection_frames_alone_tell_nothing() {
        let ack = frame(SETTINGS, 1, 0, &[]);
        let mut two = ack.clone();
        two.extend(frame(0x8, 0, 0, &[0, 0, 0, 200]));
        assert!(tells_nothing(&ack) && tells_nothing(&two));
        let mut with_data = two.clone();
        with_data.extend(frame(DATA, END_STREAM, 1, b"{}"));
        assert!(!tells_nothing(&with_data), "a DATA frame tells");
        assert!(
            !tells_nothing(&two[..two.len() - 1]),
            "a frame cut short may go on into anything"
        );
        assert!(!tells_nothing(b""));
    }

    proptest! {
        /// Any bytes: no panic, and what tells nothing is frames.
        #[test]
        fn tells_nothing_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if tells_nothing(&data) {
                prop_assert!(looks_like_frames(&data));
            }
        }

        /// Requests cut anywhere, Huffman or not, padded or not: every body
        /// is reported once, whole, with its stream and path.
        #[test]
        fn any_cut_gives_the_same_messages(n in 1usize..5, chunk in 1usize..200, huffman: bool, padded: bool, cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8)) {
            let b = bodies(n);
            let bytes = client_bytes(&b, chunk, huffman, padded);
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len())).collect();
            at.sort();
            let mut pieces = Vec::new();
            let mut prev = 0;
            for c in at {
                pieces.push(&bytes[prev..c]);
                prev = c;
            }
            pieces.push(&bytes[prev..]);
            let mut half = H2Half::new(Side::Requests, 1 << 20, H2Start::Fresh);
            let seen = run(&mut half, &pieces);
            prop_assert!(seen.errors.is_empty());
            let got: Vec<String> = seen.payloads.iter().map(|p| p.3.clone()).collect();
            prop_assert_eq!(got, b);
            prop_assert!(seen.payloads.iter().all(|p| p.1.as_deref() == Some("/mcp")));
            prop_assert_eq!(half.buffered(), half.hpack.table_size());
        }

        /// Garbage never panics and what is held stays bounded.
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096), joined: bool, side_requests: bool) {
            let side = if side_requests { Side::Requests } else { Side::Responses };
            let start = if joined { H2Start::Anywhere } else { H2Start::Fresh };
            let mut half = H2Half::new(side, 2048, start);
            half.feed(&data, &mut |_| {});
            prop_assert!(half.buffered() <= MAX_STREAMS * 2 * 2048 + MAX_HEAD + hpack::MAX_TABLE_SIZE + MAX_RESYNC_FRAME);
        }
    }
}
