//! HPACK (RFC 7541): the header compression of HTTP/2, decoding only.
//!
//! The decoder is stateful: header blocks add entries to a dynamic table
//! that later blocks of the same direction refer to by index, so one
//! decoder lives per connection and direction. A block that cannot be
//! decoded (bytes lost) leaves the table unknown: [`Decoder::desynced`]
//! then says every later block is suspect, and the caller falls back to
//! what needs no headers.
//!
//! Capture that joins a connection in progress knows only the entries
//! added since ([`Decoder::joined_mid_stream`]): indices count from the
//! newest entry, so those resolve, and fields that refer to older entries
//! are left out of the block rather than guessed.
//!
//! Memory is bounded: the dynamic table by the size the peer may set, capped
//! at [`MAX_TABLE_SIZE`]; a decoded header list by the caller's limit.

use std::{collections::VecDeque, sync::OnceLock};

use super::huffman_table::CODES;

/// The largest dynamic table this decoder keeps, whatever the peer
/// announces (4 KiB is the protocol's default; servers rarely raise it).
pub const MAX_TABLE_SIZE: usize = 64 * 1024;

/// Why a header block could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HpackError {
    /// The block ended inside a field.
    Truncated,
    /// An index beyond the static and dynamic tables (or index 0).
    BadIndex,
    /// A Huffman string with bad padding or an EOS symbol.
    BadHuffman,
    /// An integer longer than any legitimate one.
    IntegerOverflow,
    /// A table size update above the limit.
    TableTooLarge,
    /// The decoded headers outgrew the caller's limit.
    ListTooLarge,
}

impl HpackError {
    /// Metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            HpackError::Truncated => "hpack_truncated",
            HpackError::BadIndex => "hpack_bad_index",
            HpackError::BadHuffman => "hpack_bad_huffman",
            HpackError::IntegerOverflow => "hpack_integer_overflow",
            HpackError::TableTooLarge => "hpack_table_too_large",
            HpackError::ListTooLarge => "hpack_list_too_large",
        }
    }
}

/// RFC 7541 Appendix A.
pub(crate) const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Each entry costs its name and value plus 32 bytes (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// A header field as decoded: name and value bytes.
pub type Field = (Vec<u8>, Vec<u8>);

/// The decoder of one direction of one connection.
#[derive(Debug)]
pub struct Decoder {
    /// Newest first.
    dynamic: VecDeque<Field>,
    size: usize,
    max_size: usize,
    /// A block failed: the table may now differ from the encoder's.
    desynced: bool,
    /// Joined in progress: only the newest entries are known, and the
    /// table's true size is not (entries are kept until memory says).
    partial: bool,
    /// Fields left out because they referred to entries added before the join.
    unknown: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with the protocol's initial table size (4 KiB).
    pub fn new() -> Self {
        Decoder {
            dynamic: VecDeque::new(),
            size: 0,
            max_size: 4096,
            desynced: false,
            partial: false,
            unknown: 0,
        }
    }

    /// A decoder for a connection already in progress: entries added from
    /// now on are known, older ones are not.
    pub fn joined_mid_stream() -> Self {
        Decoder {
            partial: true,
            max_size: MAX_TABLE_SIZE,
            ..Self::new()
        }
    }

    /// True once a block could not be decoded: headers decoded from now on
    /// may be wrong, since the encoder's table is not known.
    pub fn desynced(&self) -> bool {
        self.desynced
    }

    /// Fields left out so far because they referred to entries added
    /// before a mid-stream join.
    pub fn unknown_fields(&self) -> u64 {
        self.unknown
    }

    /// Bytes the dynamic table holds (its RFC size).
    pub fn table_size(&self) -> usize {
        self.size
    }

    /// Decodes one complete header block (HEADERS plus CONTINUATION
    /// payloads). `max_list`: the most bytes of names and values returned.
    /// On error the table is marked desynced; the fields decoded so far are lost.
    pub fn decode(&mut self, mut block: &[u8], max_list: usize) -> Result<Vec<Field>, HpackError> {
        let r = self.decode_inner(&mut block, max_list);
        if r.is_err() {
            self.desynced = true;
        }
        r
    }

    fn decode_inner(&mut self, block: &mut &[u8], max_list: usize) -> Result<Vec<Field>, HpackError> {
        let mut out = Vec::new();
        let mut listed = 0usize;
        let mut push = |out: &mut Vec<Field>, f: Field| {
            listed += f.0.len() + f.1.len();
            if listed > max_list {
                return Err(HpackError::ListTooLarge);
            }
            out.push(f);
            Ok(())
        };
        while let Some(&b) = block.first() {
            // `None`: a field that refers to an entry older than a join.
            if b & 0x80 != 0 {
                // Indexed field.
                let i = integer(block, 7)?;
                match self.get(i)? {
                    Some(f) => push(&mut out, f)?,
                    None => self.unknown += 1,
                }
            } else if b & 0xc0 == 0x40 {
                // Literal with incremental indexing: added even when its
                // name is unknown, so the indices of later entries hold.
                let f = self.literal(block, 6)?;
                self.insert(f.clone().unwrap_or_default());
                match f {
                    Some(f) => push(&mut out, f)?,
                    None => self.unknown += 1,
                }
            } else if b & 0xe0 == 0x20 {
                // Dynamic table size update.
                let n = integer(block, 5)?;
                if n > MAX_TABLE_SIZE {
                    return Err(HpackError::TableTooLarge);
                }
                if !self.partial {
                    self.max_size = n;
                    self.evict(0);
                }
            } else {
                // Literal without indexing (0000) or never indexed (0001).
                match self.literal(block, 4)? {
                    Some(f) => push(&mut out, f)?,
                    None => self.unknown += 1,
                }
            }
        }
        Ok(out)
    }

    /// A literal field; `None` when its name is an entry older than a join.
    fn literal(&self, block: &mut &[u8], prefix: u8) -> Result<Option<Field>, HpackError> {
        let i = integer(block, prefix)?;
        let name = if i == 0 {
            Some(string(block)?)
        } else {
            self.get(i)?.map(|f| f.0)
        };
        let value = string(block)?;
        Ok(name.map(|n| (n, value)))
    }

    /// Entry `i`; `None` for an entry older than a join (an entry whose
    /// name was unknown when it was added counts as one).
    fn get(&self, i: usize) -> Result<Option<Field>, HpackError> {
        match i {
            0 => Err(HpackError::BadIndex),
            1..=61 => {
                let (n, v) = STATIC[i - 1];
                Ok(Some((n.as_bytes().to_vec(), v.as_bytes().to_vec())))
            }
            _ => match self.dynamic.get(i - 62) {
                Some(f) if !f.0.is_empty() => Ok(Some(f.clone())),
                Some(_) => Ok(None),
                None if self.partial => Ok(None),
                None => Err(HpackError::BadIndex),
            },
        }
    }

    fn insert(&mut self, f: Field) {
        let cost = f.0.len() + f.1.len() + ENTRY_OVERHEAD;
        if cost > self.max_size {
            // An entry larger than the table empties it (RFC 7541 §4.4).
            self.dynamic.clear();
            self.size = 0;
            return;
        }
        self.evict(cost);
        self.size += cost;
        self.dynamic.push_front(f);
    }

    /// Evicts the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            let Some((n, v)) = self.dynamic.pop_back() else { break };
            self.size -= n.len() + v.len() + ENTRY_OVERHEAD;
        }
    }
}

/// An integer with an `n`-bit prefix (RFC 7541 §5.1), consumed from `block`.
fn integer(block: &mut &[u8], n: u8) -> Result<usize, HpackError> {
    let (&first, mut rest) = block.split_first().ok_or(HpackError::Truncated)?;
    let max = (1usize << n) - 1;
    let mut v = (first as usize) & max;
    if v == max {
        let mut shift = 0u32;
        loop {
            let (&b, r) = rest.split_first().ok_or(HpackError::Truncated)?;
            rest = r;
            // No legitimate integer (lengths, indices, sizes) needs more
            // than 28 bits; stop before the shift can overflow.
            if shift > 21 {
                return Err(HpackError::IntegerOverflow);
            }
            v += ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    *block = rest;
    Ok(v)
}

/// A string literal (RFC 7541 §5.2), Huffman-coded or not.
fn string(block: &mut &[u8]) -> Result<Vec<u8>, HpackError> {
    let huffman = block.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(block, 7)?;
    if block.len() < len {
        return Err(HpackError::Truncated);
    }
    let (s, rest) = block.split_at(len);
    *block = rest;
    if huffman {
        huffman_decode(s)
    } else {
        Ok(s.to_vec())
    }
}

/// The decoding tree of the Huffman code: node `i` has children
/// `tree[i][0]`/`tree[i][1]`; a child `>= LEAF` is the symbol `child - LEAF`.
struct Tree {
    nodes: Vec<[u16; 2]>,
}

const LEAF: u16 = 0x8000;
const EMPTY: u16 = 0;

fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut nodes = vec![[EMPTY; 2]];
        for (sym, &(code, bits)) in CODES.iter().enumerate() {
            let mut at = 0usize;
            for k in (0..bits).rev() {
                let bit = ((code >> k) & 1) as usize;
                if k == 0 {
                    nodes[at][bit] = LEAF | sym as u16;
                } else {
                    if nodes[at][bit] == EMPTY {
                        nodes.push([EMPTY; 2]);
                        nodes[at][bit] = (nodes.len() - 1) as u16;
                    }
                    at = nodes[at][bit] as usize;
                }
            }
        }
        Tree { nodes }
    })
}

/// Decodes a Huffman-coded string. Padding must be the most significant
/// bits of EOS (all ones) and shorter than 8 bits; EOS itself is an error.
pub fn huffman_decode(s: &[u8]) -> Result<Vec<u8>, HpackError> {
    let t = tree();
    let mut out = Vec::with_capacity(s.len() * 8 / 5 + 1);
    let mut at = 0usize;
    // Bits read since the last symbol, and whether all were ones.
    let mut pending = 0u32;
    let mut all_ones = true;
    for &byte in s {
        for k in (0..8).rev() {
            let bit = (byte >> k) & 1;
            let next = t.nodes[at][bit as usize];
            pending += 1;
            all_ones &= bit == 1;
            if next & LEAF != 0 {
                let sym = next & !LEAF;
                if sym == 256 {
                    return Err(HpackError::BadHuffman);
                }
                out.push(sym as u8);
                at = 0;
                pending = 0;
                all_ones = true;
            } else if next == EMPTY {
                return Err(HpackError::BadHuffman);
            } else {
                at = next as usize;
            }
        }
    }
    if pending > 7 || !all_ones {
        return Err(HpackError::BadHuffman);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod encode {
    //! A small HPACK encoder for tests: literals with or without indexing,
    //! Huffman or not, and indexed fields, to check the decoder against.
    use super::CODES;

    /// Appends an integer with an `n`-bit prefix, its first byte or-ed with `flags`.
    pub fn integer(out: &mut Vec<u8>, flags: u8, n: u8, v: usize) {
        let max = (1usize << n) - 1;
        if v < max {
            out.push(flags | v as u8);
            return;
        }
        out.push(flags | max as u8);
        let mut v = v - max;
        while v >= 128 {
            out.push((v % 128) as u8 | 0x80);
            v /= 128;
        }
        out.push(v as u8);
    }

    /// Appends a string literal.
    pub fn string(out: &mut Vec<u8>, s: &[u8], huffman: bool) {
        if !huffman {
            integer(out, 0, 7, s.len());
            out.extend_from_slice(s);
            return;
        }
        let mut bits = Vec::new();
        let (mut acc, mut n) = (0u64, 0u32);
        for &b in s {
            let (code, len) = CODES[b as usize];
            acc = (acc << len) | code as u64;
            n += len as u32;
            while n >= 8 {
                bits.push((acc >> (n - 8)) as u8);
                n -= 8;
                acc &= (1 << n) - 1;
            }
        }
        if n > 0 {
            bits.push(((acc << (8 - n)) | ((1 << (8 - n)) - 1)) as u8);
        }
        integer(out, 0x80, 7, bits.len());
        out.extend_from_slice(&bits);
    }

    /// A literal field with incremental indexing and a literal name.
    pub fn indexed_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8], huffman: bool) {
        out.push(0x40);
        string(out, name, huffman);
        string(out, value, huffman);
    }

    /// A literal field without indexing, with a literal name.
    pub fn plain_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8], huffman: bool) {
        out.push(0x00);
        string(out, name, huffman);
        string(out, value, huffman);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn strs(fields: &[Field]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    /// RFC 7541 C.4: three requests with Huffman coding on one connection;
    /// the second and third refer to the table the first filled.
    #[test]
    fn rfc_requests_with_huffman_share_the_dynamic_table() {
        let mut d = Decoder::new();
        let first = d
            .decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"), 1 << 16)
            .unwrap();
        assert_eq!(
            strs(&first),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(d.table_size(), 57);
        let second = d.decode(&hex("8286 84be 5886 a8eb 1064 9cbf"), 1 << 16).unwrap();
        assert_eq!(
            strs(&second),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        let third = d
            .decode(
                &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
                1 << 16,
            )
            .unwrap();
        assert_eq!(
            strs(&third),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(d.table_size(), 164);
        assert!(!d.desynced());
    }

    /// RFC 7541 C.6: responses with a 256-byte table, so entries are evicted.
    #[test]
    fn rfc_responses_evict_from_a_small_table() {
        let mut d = Decoder::new();
        // A size update to 256 first, as the RFC's setting does.
        let mut update = Vec::new();
        encode::integer(&mut update, 0x20, 5, 256);
        d.decode(&update, 1 << 16).unwrap();
        let first = d
            .decode(
                &hex(
                    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                ),
                1 << 16,
            )
            .unwrap();
        assert_eq!(
            strs(&first),
            pairs(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com")
            ])
        );
        assert_eq!(d.table_size(), 222);
        let second = d.decode(&hex("4883 640e ffc1 c0bf"), 1 << 16).unwrap();
        assert_eq!(
            strs(&second),
            pairs(&[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com")
            ])
        );
        assert_eq!(d.table_size(), 222, "\":status: 302\" was evicted for \":status: 307\"");
    }

    /// Joined in progress: entries added since the join resolve, fields
    /// that refer to older ones are left out (and counted), and a later
    /// entry's index is right even when an unknown one was added before it.
    #[test]
    fn a_joined_decoder_knows_the_entries_added_since() {
        // Before the join the encoder added ":path: /mcp" (now index 62).
        let mut d = Decoder::joined_mid_stream();
        let mut b = Vec::new();
        encode::integer(&mut b, 0x80, 7, 3); // :method POST (static)
        encode::integer(&mut b, 0x80, 7, 62); // :path /mcp (before the join)
        encode::indexed_literal(&mut b, b"mcp-session-id", b"s-1", true);
        // A literal with an unknown name, added to the table.
        encode::integer(&mut b, 0x40, 6, 63);
        encode::string(&mut b, b"v", false);
        let f = d.decode(&b, 1 << 16).unwrap();
        assert_eq!(strs(&f), pairs(&[(":method", "POST"), ("mcp-session-id", "s-1")]));
        assert_eq!(d.unknown_fields(), 2);
        // Now: 62 = the unknown-named entry, 63 = mcp-session-id.
        let mut b = Vec::new();
        encode::integer(&mut b, 0x80, 7, 63);
        encode::integer(&mut b, 0x80, 7, 62);
        encode::integer(&mut b, 0x80, 7, 70);
        let f = d.decode(&b, 1 << 16).unwrap();
        assert_eq!(strs(&f), pairs(&[("mcp-session-id", "s-1")]));
        assert_eq!(d.unknown_fields(), 4);
        assert!(!d.desynced());
    }

    #[test]
    fn bad_blocks_are_errors_and_desync_the_table() {
        for (block, e) in [
            (vec![0x80], HpackError::BadIndex),
            (vec![0xbe], HpackError::BadIndex),
            (vec![0x40, 0x05, b'a'], HpackError::Truncated),
            (
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                HpackError::IntegerOverflow,
            ),
            // "a" is 00011; padding 000 is not EOS's ones.
            (vec![0x40, 0x81, 0x18, 0x00], HpackError::BadHuffman),
        ] {
            let mut d = Decoder::new();
            assert_eq!(d.decode(&block, 1 << 16), Err(e), "{block:x?}");
            assert!(d.desynced());
        }
        let mut big = Vec::new();
        encode::integer(&mut big, 0x20, 5, MAX_TABLE_SIZE + 1);
        assert_eq!(Decoder::new().decode(&big, 1 << 16), Err(HpackError::TableTooLarge));
        let mut long = Vec::new();
        encode::plain_literal(&mut long, b"x", &[b'y'; 100], false);
        assert_eq!(Decoder::new().decode(&long, 50), Err(HpackError::ListTooLarge));
    }

    proptest! {
        /// Whatever an encoder sends (indexed literals that fill and evict
        /// the table, references to earlier entries, Huffman or not), the
        /// decoder returns it, and its table stays within its size.
        #[test]
        fn decodes_what_an_encoder_sends(
            blocks in proptest::collection::vec(
                proptest::collection::vec((0u8..4, "[a-z-]{1,12}", proptest::collection::vec(any::<u8>(), 0..40), any::<bool>(), 0usize..8), 1..8),
                1..10),
        ) {
            let mut d = Decoder::new();
            // The encoder's own model of the table: newest first.
            let mut table: VecDeque<Field> = VecDeque::new();
            let mut size = 0usize;
            for block in blocks {
                let mut bytes = Vec::new();
                let mut want = Vec::new();
                for (kind, name, value, huffman, pick) in block {
                    match kind {
                        0 if !table.is_empty() => {
                            let i = pick % table.len();
                            encode::integer(&mut bytes, 0x80, 7, 62 + i);
                            want.push(table[i].clone());
                        }
                        1 => {
                            let i = 1 + pick * 7 % 61;
                            encode::integer(&mut bytes, 0x80, 7, i);
                            want.push((STATIC[i - 1].0.as_bytes().to_vec(), STATIC[i - 1].1.as_bytes().to_vec()));
                        }
                        2 => {
                            encode::plain_literal(&mut bytes, name.as_bytes(), &value, huffman);
                            want.push((name.into_bytes(), value));
                        }
                        _ => {
                            encode::indexed_literal(&mut bytes, name.as_bytes(), &value, huffman);
                            let f: Field = (name.into_bytes(), value);
                            let cost = f.0.len() + f.1.len() + 32;
                            while size + cost > 4096 {
                                let (n, v) = table.pop_back().unwrap();
                                size -= n.len() + v.len() + 32;
                            }
                            size += cost;
                            table.push_front(f.clone());
                            want.push(f);
                        }
                    }
                }
                prop_assert_eq!(d.decode(&bytes, 1 << 20).unwrap(), want);
                prop_assert_eq!(d.table_size(), size);
                prop_assert!(d.table_size() <= 4096);
            }
        }

        /// Huffman coding round-trips any bytes.
        #[test]
        fn huffman_round_trips(s in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut enc = Vec::new();
            encode::string(&mut enc, &s, true);
            let mut b = enc.as_slice();
            prop_assert_eq!(string(&mut b).unwrap(), s);
            prop_assert!(b.is_empty());
        }

        /// Garbage never panics, and the table stays bounded.
        #[test]
        fn garbage_never_panics(blocks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6)) {
            let mut d = Decoder::new();
            for b in blocks {
                let _ = d.decode(&b, 4096);
                prop_assert!(d.table_size() <= MAX_TABLE_SIZE);
            }
        }
    }
}
