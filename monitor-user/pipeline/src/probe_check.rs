//! Whether probes at offsets the agent found itself hand over plaintext.
//!
//! OpenSSL's functions are probed by symbol and Go's by the runtime's own
//! function table; BoringSSL in a Bun executable is found from its machine
//! code ([`crate::boringssl_binary`]), and that search, however strict,
//! is an inference. So the first captures through such probes are judged:
//! the probes of a file are **verified** at the first capture that reads
//! as what MCP over HTTPS carries (an HTTP/1.x start line, HTTP/2 frames,
//! text), and **wrong** when [`CHECKED_CAPTURES`] captures in a row did
//! not and at least half of them were TLS records: the probes sit below
//! the encryption. Binary data alone proves nothing (a tracked process's
//! database protocol over TLS, a download joined in the middle): the
//! probes stay, unverified.
//!
//! Only the first bytes of a capture are looked at, and nothing of them is
//! kept: the verdict names a kind, never content.

/// Captures judged before probes that handed over no plaintext, at least
/// half of it TLS records, are called wrong.
pub const CHECKED_CAPTURES: u32 = 16;

/// Bytes of a capture looked at.
const LOOK: usize = 64;

/// What a capture that reads as plaintext is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plaintext {
    /// An HTTP/1.x request line (`POST /mcp HTTP/1.1`).
    Http1Request,
    /// An HTTP/1.x status line.
    Http1Response,
    /// The HTTP/2 connection preface or a frame header.
    Http2,
    /// UTF-8 text without control characters other than tab, CR and LF:
    /// headers, JSON, server-sent events, a chunk-size line.
    Text,
}

impl Plaintext {
    /// For logs: "an HTTP/1.x request" and the like.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Http1Request => "an HTTP/1.x request",
            Self::Http1Response => "an HTTP/1.x response",
            Self::Http2 => "HTTP/2 frames",
            Self::Text => "text",
        }
    }
}

/// What a capture that does not read as plaintext is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotPlaintext {
    /// Nothing was captured (a call that moved no bytes): not judged.
    Empty,
    /// A TLS record header: the probes see ciphertext.
    TlsRecord,
    /// Anything else.
    Binary,
}

/// Judges the first bytes of one capture.
pub fn judge(bytes: &[u8]) -> Result<Plaintext, NotPlaintext> {
    let b = &bytes[..bytes.len().min(LOOK)];
    if b.is_empty() {
        return Err(NotPlaintext::Empty);
    }
    if b.starts_with(b"HTTP/1.") {
        return Ok(Plaintext::Http1Response);
    }
    // The preface would pass for a request line (method `PRI`).
    if b.starts_with(b"PRI * HTTP/2.0") || is_h2_frame_header(b) {
        return Ok(Plaintext::Http2);
    }
    if is_request_line(b) {
        return Ok(Plaintext::Http1Request);
    }
    if b.len() >= 3 && (20..=23).contains(&b[0]) && b[1] == 3 && b[2] <= 4 {
        return Err(NotPlaintext::TlsRecord);
    }
    if is_text(b) {
        return Ok(Plaintext::Text);
    }
    Err(NotPlaintext::Binary)
}

/// A method token (3 to 10 capital letters) and a space.
fn is_request_line(b: &[u8]) -> bool {
    let n = b.iter().take_while(|c| c.is_ascii_uppercase()).count();
    (3..=10).contains(&n) && b.get(n) == Some(&b' ')
}

/// A frame header of a known type whose length fits the default maximum
/// frame size (16 KiB) and whose reserved bit is clear; with the whole
/// header present.
fn is_h2_frame_header(b: &[u8]) -> bool {
    if b.len() < 9 {
        return false;
    }
    let len = u32::from_be_bytes([0, b[0], b[1], b[2]]);
    let kind = b[3];
    let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
    len <= 16_384 && kind <= 9 && stream & 0x8000_0000 == 0
        // SETTINGS, PING and GOAWAY belong to the connection (stream 0),
        // DATA and HEADERS to a stream.
        && match kind {
            4 => stream == 0 && len.is_multiple_of(6),
            6 => stream == 0 && len == 8,
            7 => stream == 0,
            0 | 1 => stream != 0,
            _ => true,
        }
}

/// UTF-8 (a character cut at the end allowed) without control characters
/// other than tab, CR and LF.
fn is_text(b: &[u8]) -> bool {
    let valid = match std::str::from_utf8(b) {
        Ok(s) => s,
        // A multi-byte character cut by the look-ahead is still text.
        Err(e) if e.error_len().is_none() => match std::str::from_utf8(&b[..e.valid_up_to()]) {
            Ok(s) => s,
            Err(_) => return false,
        },
        Err(_) => return false,
    };
    // A byte or two of text is too little to tell anything.
    valid.len() >= 4
        && valid
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\t' | '\r' | '\n'))
}

/// Where the check of one probed file stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided yet: more captures are needed (or, after
    /// [`CHECKED_CAPTURES`] binary ones, nothing can be decided).
    Pending,
    /// This capture reads as plaintext: the probes are right.
    Verified(Plaintext),
    /// [`CHECKED_CAPTURES`] captures in a row, none plaintext, at least
    /// half of them TLS records; how many were.
    Wrong {
        /// Of the captures judged, those that were TLS records.
        tls_records: u32,
    },
}

/// The check of the probes of one file, fed its captures in order.
#[derive(Clone, Debug, Default)]
pub struct ProbeCheck {
    judged: u32,
    tls_records: u32,
}

impl ProbeCheck {
    /// Judges one more capture. Empty captures are not counted; after a
    /// verdict other than `Pending` the check is over (its owner drops it).
    /// A window of [`CHECKED_CAPTURES`] with too few TLS records starts
    /// over.
    pub fn observe(&mut self, bytes: &[u8]) -> Verdict {
        match judge(bytes) {
            Ok(kind) => Verdict::Verified(kind),
            Err(NotPlaintext::Empty) => Verdict::Pending,
            Err(not) => {
                self.judged += 1;
                if not == NotPlaintext::TlsRecord {
                    self.tls_records += 1;
                }
                if self.judged < CHECKED_CAPTURES {
                    return Verdict::Pending;
                }
                let tls_records = self.tls_records;
                *self = ProbeCheck::default();
                if tls_records * 2 >= CHECKED_CAPTURES {
                    Verdict::Wrong { tls_records }
                } else {
                    Verdict::Pending
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn what_mcp_over_https_carries_is_plaintext() {
        let cases: [(&[u8], Plaintext); 9] = [
            (b"POST /mcp HTTP/1.1\r\nHost: x\r\n", Plaintext::Http1Request),
            (b"GET /sse HTTP/1.1\r\n", Plaintext::Http1Request),
            (b"DELETE /mcp HTTP/1.1\r\n", Plaintext::Http1Request),
            (
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n",
                Plaintext::Http1Response,
            ),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Plaintext::Http2),
            // SETTINGS with two settings, on stream 0.
            (&[0, 0, 12, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100], Plaintext::Http2),
            (b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}", Plaintext::Text),
            (b"event: message\ndata: {\"jsonrpc\"", Plaintext::Text),
            ("1a3\r\n{\"résumé\": \"é".as_bytes(), Plaintext::Text),
        ];
        for (bytes, kind) in cases {
            assert_eq!(judge(bytes), Ok(kind), "{:?}", String::from_utf8_lossy(bytes));
        }
        // A character cut by the look-ahead.
        let mut long = vec![b'a'; LOOK - 1];
        long.extend_from_slice("é".as_bytes());
        assert_eq!(judge(&long), Ok(Plaintext::Text));
    }

    #[test]
    fn ciphertext_and_binary_are_not() {
        assert_eq!(
            judge(&[0x17, 0x03, 0x03, 0x00, 0x40, 0xde, 0xad]),
            Err(NotPlaintext::TlsRecord)
        );
        assert_eq!(
            judge(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]),
            Err(NotPlaintext::TlsRecord)
        );
        assert_eq!(judge(&[0x1f, 0x8b, 0x08, 0x00, 0x00]), Err(NotPlaintext::Binary));
        assert_eq!(judge(b"ab\x00cd"), Err(NotPlaintext::Binary));
        assert_eq!(judge(b"\xff\xfe\xfd"), Err(NotPlaintext::Binary));
        assert_eq!(judge(b""), Err(NotPlaintext::Empty));
        // SETTINGS on a stream, DATA on stream 0, an oversized frame.
        assert_eq!(
            judge(&[0, 0, 6, 4, 0, 0, 0, 0, 1, 0, 3, 0, 0, 0, 100]),
            Err(NotPlaintext::Binary)
        );
        assert_eq!(
            judge(&[0, 0, 5, 0, 1, 0, 0, 0, 0, 0x88, 0x99]),
            Err(NotPlaintext::Binary)
        );
        assert_eq!(judge(&[0, 0x50, 0, 0, 0, 0, 0, 0, 1, 0x88]), Err(NotPlaintext::Binary));
        // Lower-case or overlong "methods".
        assert_eq!(judge(b"post /mcp"), Ok(Plaintext::Text));
        assert!(!is_request_line(b"ABCDEFGHIJKL /x"));
    }

    #[test]
    fn verified_at_the_first_plaintext_wrong_after_the_checked_captures() {
        let mut c = ProbeCheck::default();
        for _ in 0..CHECKED_CAPTURES - 1 {
            assert_eq!(c.observe(&[0x17, 3, 3, 0, 9]), Verdict::Pending);
            assert_eq!(c.observe(b""), Verdict::Pending, "empty captures are not judged");
        }
        assert_eq!(
            c.observe(b"HTTP/1.1 200 OK"),
            Verdict::Verified(Plaintext::Http1Response)
        );

        let mut c = ProbeCheck::default();
        for i in 0..CHECKED_CAPTURES - 1 {
            let bytes: &[u8] = if i % 2 == 0 { &[0x17, 3, 3, 0, 9] } else { &[0x80, 0x01] };
            assert_eq!(c.observe(bytes), Verdict::Pending);
        }
        assert_eq!(
            c.observe(&[0x80, 0x01]),
            Verdict::Wrong {
                tls_records: CHECKED_CAPTURES / 2
            }
        );
    }

    #[test]
    fn binary_alone_never_makes_probes_wrong() {
        // A database protocol over TLS, a compressed download: however
        // long, the probes stay (unverified) while TLS records are rare.
        let mut c = ProbeCheck::default();
        for i in 0..10 * CHECKED_CAPTURES {
            let bytes: &[u8] = if i % 4 == 0 { &[0x17, 3, 3, 0, 9] } else { &[0x80, 0x01] };
            assert_eq!(c.observe(bytes), Verdict::Pending, "capture {i}");
        }
        assert_eq!(
            c.observe(b"HTTP/1.1 200 OK"),
            Verdict::Verified(Plaintext::Http1Response)
        );
    }

    proptest! {
        #[test]
        fn any_bytes_are_judged_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let verdict = judge(&bytes);
            if bytes.is_empty() {
                prop_assert_eq!(verdict, Err(NotPlaintext::Empty));
            }
        }

        #[test]
        fn a_control_character_makes_it_binary(
            text in "[ -~]{0,40}",
            at in 0usize..40,
            control in prop_oneof![0u8..9, 11u8..13, 14u8..32, Just(0x7f)],
        ) {
            // Not starting like HTTP/2 or TLS (text cannot: its bytes are
            // printable), so only the text rule decides.
            let mut bytes = text.into_bytes();
            bytes.insert(at.min(bytes.len()), control);
            prop_assume!(bytes[0] >= 0x20 || !is_h2_frame_header(&bytes));
            prop_assert_ne!(judge(&bytes), Ok(Plaintext::Text));
        }
    }
}
