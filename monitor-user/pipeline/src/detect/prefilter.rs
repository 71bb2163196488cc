//! The first look at every message: can any detector find something in it?
//!
//! Two linear passes over the raw bytes, whatever the number of rules: one
//! Aho-Corasick DFA over every literal the detectors key on (credential
//! keywords, secret-like key names, injection phrases), and one structural
//! pass for what literals cannot express (encoded runs, escapes, invisible
//! characters). Most messages stop here; the detector parses only those
//! with a hit (and, for credential keywords, only when a selected rule's
//! regex also matches the raw text).

use std::sync::{Arc, OnceLock};

use aho_corasick::{dfa::DFA, AhoCorasick, AhoCorasickBuilder, MatchKind, StartKind};

mod table;

const KIND_CREDENTIAL: u8 = 1;
const KIND_SECRET_NAME: u8 = 2;
const KIND_LEXICON: u8 = 4;

/// What the raw bytes may hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hits {
    /// Credential rules (indices, ascending) whose keywords occur.
    pub credential_rules: Vec<usize>,
    /// A secret-like key name (`password`, `token`...).
    pub secret_name: bool,
    /// An injection phrase.
    pub lexicon: bool,
    /// A long mixed-case run of base64 characters.
    pub encoded: bool,
    /// `%XX` escapes.
    pub percent: bool,
    /// JSON escapes that can hide text from a raw match: `\u00XX` of
    /// printable ASCII, or `\/`.
    pub escapes: bool,
    /// Invisible or bidirectional characters, raw or escaped.
    pub invisible: bool,
}

impl Hits {
    /// Signals that need the parsed message whatever the keywords say.
    pub fn must_parse_for_credentials(&self) -> bool {
        self.secret_name || self.encoded || self.percent || self.escapes
    }

    /// Worth an injection scan.
    pub fn injection(&self) -> bool {
        self.lexicon || self.invisible
    }
}

/// Encoded runs shorter than this are not worth decoding.
pub const MIN_ENCODED_RUN: usize = 24;

static B64: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=' || c == b'-' || c == b'_';
        b += 1;
    }
    t
};

/// The combined first pass.
#[derive(Clone)]
pub struct Prefilter {
    /// The patterns, for the reference search.
    patterns: Arc<[String]>,
    /// The library's search, the reference the hand walk is checked
    /// against: built on first use (tests and fuzzing), never by the agent.
    reference: OnceLock<AhoCorasick>,
    /// The automaton, copied into a table for the hand walk (see
    /// [`Prefilter::scan`]).
    table: Arc<table::Table>,
    max_pattern_len: usize,
    kinds: Vec<u8>,
    /// Credential rules selected by each pattern.
    rules: Vec<Vec<usize>>,
}

impl Prefilter {
    /// Builds the automaton over the three literal sets (matched ASCII
    /// case-insensitively). `credential` pairs each keyword with the rules
    /// it selects.
    pub fn new(credential: &[(String, Vec<usize>)], secret_names: &[&str], lexicon: &[&str]) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        let mut kinds: Vec<u8> = Vec::new();
        let mut rules: Vec<Vec<usize>> = Vec::new();
        let mut add = |p: &str, kind: u8, sel: &[usize]| {
            let i = match patterns.iter().position(|x| x.eq_ignore_ascii_case(p)) {
                Some(i) => i,
                None => {
                    patterns.push(p.to_owned());
                    kinds.push(0);
                    rules.push(Vec::new());
                    patterns.len() - 1
                }
            };
            kinds[i] |= kind;
            rules[i].extend_from_slice(sel);
        };
        for (p, sel) in credential {
            add(p, KIND_CREDENTIAL, sel);
        }
        for p in secret_names {
            add(p, KIND_SECRET_NAME, &[]);
        }
        for p in lexicon {
            add(p, KIND_LEXICON, &[]);
        }
        let dfa = DFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .start_kind(StartKind::Unanchored)
            .prefilter(false)
            .build(&patterns)
            .expect("prefilter automaton");
        let max_pattern_len = patterns.iter().map(String::len).max().unwrap_or(1);
        Self {
            patterns: patterns.into(),
            reference: OnceLock::new(),
            table: Arc::new(table::Table::new(&dfa)),
            max_pattern_len,
            kinds,
            rules,
        }
    }

    /// Every literal in `raw`, overlapping ones included: the rules they
    /// select and the kinds they are of.
    ///
    /// A hand walk of the automaton, copied into a flat table (see
    /// [`table`]): the library's overlapping iterator cost eight times as
    /// much per byte. A walk is bound by the latency of one table load per
    /// byte, each depending on the previous, so four lanes walk four parts
    /// of the input together (each reading on into the next part by the
    /// longest pattern's length, so no occurrence straddles unseen) and
    /// keep four independent loads in flight: about three times the
    /// single-lane speed (eight lanes were slower: too few registers). An
    /// occurrence in the overlap of two lanes is seen by both, which is
    /// harmless: hits are sets. One walk both answers whether anything
    /// occurs and attributes it (a message with a literal used to be walked
    /// a second time, one lane, and half of all messages have one: `pat`
    /// occurs in every `path`).
    fn literals(&self, raw: &[u8], h: &mut Hits) {
        const LANES: usize = 4;
        let t = &self.table;
        let mut seen = 0u8;
        let lane = |mut s, bytes: &[u8], seen: &mut u8, h: &mut Hits| {
            for &b in bytes {
                // SAFETY: every state here is `t`'s start or came from
                // `t.next` (the lanes below hand theirs on).
                s = unsafe { t.next(s, b) };
                if t.is_match(s) {
                    self.note(s, seen, h);
                }
            }
            s
        };
        if raw.len() < 64 * LANES {
            // Too short for the lanes to pay for their set-up.
            lane(t.start(), raw, &mut seen, h);
        } else {
            let part = raw.len().div_ceil(LANES);
            // Every part is `part` long except the last; walk them together
            // for the length of the last, then each to its end plus the
            // overlap.
            let common = raw.len() - (LANES - 1) * part;
            let (a, b, c, d) = (
                &raw[..common],
                &raw[part..part + common],
                &raw[2 * part..2 * part + common],
                &raw[3 * part..3 * part + common],
            );
            let mut s = [t.start(); LANES];
            for i in 0..common {
                // SAFETY: each lane's state is `t`'s start or came from
                // `t.next`.
                unsafe {
                    s[0] = t.next(s[0], a[i]);
                    s[1] = t.next(s[1], b[i]);
                    s[2] = t.next(s[2], c[i]);
                    s[3] = t.next(s[3], d[i]);
                }
                // Match states are numbered first: one comparison for four.
                if t.is_match(s[0].min(s[1]).min(s[2].min(s[3]))) {
                    for &q in &s {
                        if t.is_match(q) {
                            self.note(q, &mut seen, h);
                        }
                    }
                }
            }
            let overlap = self.max_pattern_len - 1;
            for (k, &q) in s.iter().enumerate() {
                let from = k * part + common;
                let to = ((k + 1) * part + overlap).min(raw.len());
                if from < to {
                    lane(q, &raw[from..to], &mut seen, h);
                }
            }
        }
        h.secret_name = seen & KIND_SECRET_NAME != 0;
        h.lexicon = seen & KIND_LEXICON != 0;
        h.credential_rules.sort_unstable();
    }

    /// Records the patterns that end at match state `s`.
    #[cold]
    #[inline(never)]
    fn note(&self, s: u32, seen: &mut u8, h: &mut Hits) {
        for &i in self.table.patterns_of(s) {
            *seen |= self.kinds[i];
            for &r in &self.rules[i] {
                if !h.credential_rules.contains(&r) {
                    h.credential_rules.push(r);
                }
            }
        }
    }

    /// Both passes over `raw`.
    pub fn scan(&self, raw: &[u8]) -> Hits {
        let mut h = Hits::default();
        self.literals(raw, &mut h);
        structural(raw, &mut h);
        h
    }

    /// [`Prefilter::scan`] the plain way: the library's overlapping search,
    /// and the structural checks one after the other (for tests and
    /// fuzzing, which check that both agree).
    #[doc(hidden)]
    pub fn scan_reference(&self, raw: &[u8]) -> Hits {
        let mut h = Hits::default();
        let mut seen = 0u8;
        let ac = self.reference.get_or_init(|| {
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .build(self.patterns.iter())
                .expect("prefilter automaton")
        });
        for m in ac.find_overlapping_iter(raw) {
            let i = m.pattern().as_usize();
            seen |= self.kinds[i];
            for &r in &self.rules[i] {
                if !h.credential_rules.contains(&r) {
                    h.credential_rules.push(r);
                }
            }
        }
        h.secret_name = seen & KIND_SECRET_NAME != 0;
        h.lexicon = seen & KIND_LEXICON != 0;
        h.credential_rules.sort_unstable();
        h.encoded = has_encoded_run(raw);
        for i in memchr::memchr3_iter(b'%', b'\\', 0xE2, raw).chain(memchr::memchr2_iter(0xEF, 0xF3, raw)) {
            special_at(raw, i, &mut h);
        }
        h
    }
}

/// The structural signals of `raw` (encoded runs, escapes, invisible
/// characters) in one pass of 64-byte blocks: the classes an encoded run is
/// judged by, and the bytes that can start an escape or an invisible
/// character, come from the same loads. With AVX2 where the CPU has it
/// (the classification was most of the pass).
fn structural(raw: &[u8], h: &mut Hits) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { structural_avx2(raw, h) };
        return;
    }
    structural_with(raw, h, Classes::of_block);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn structural_avx2(raw: &[u8], h: &mut Hits) {
    // SAFETY: this function only runs where the CPU has AVX2.
    structural_with(raw, h, |b| unsafe { Classes::of_block_avx2(b) });
}

#[inline(always)]
fn structural_with(raw: &[u8], h: &mut Hits, of_block: impl Fn(&[u8; 64]) -> Classes) {
    let mut runs = EncodedRuns::default();
    let mut o = 0usize;
    while o < raw.len() {
        let cur = if o + 64 <= raw.len() {
            of_block(raw[o..o + 64].try_into().expect("64 bytes"))
        } else {
            Classes::of_tail(&raw[o..])
        };
        let mut special = cur.special;
        while special != 0 {
            special_at(raw, o + special.trailing_zeros() as usize, h);
            special &= special - 1;
        }
        if !h.encoded {
            h.encoded = runs.next_block(o, cur);
        }
        o += 64;
    }
}

/// Is there a run of at least [`MIN_ENCODED_RUN`] base64 characters mixing
/// upper case, lower case and digits?
///
/// The bytes are classified 64 at a time into bit masks (SSE2 on x86-64):
/// base64, upper case, lower case, digit. Runs of 24 set bits are found with
/// shifts over the previous and current masks, and each candidate run (a
/// path, a UUID, a real encoding) is judged with a few more bit operations.
/// A run that goes on past a block is carried into the next one with the
/// classes it holds so far: no byte is looked at twice.
pub fn has_encoded_run(raw: &[u8]) -> bool {
    let mut runs = EncodedRuns::default();
    let mut o = 0usize;
    while o < raw.len() {
        if runs.next_block(o, Classes::at(raw, o)) {
            return true;
        }
        o += 64;
    }
    false
}

/// The search for encoded runs, block by block.
#[derive(Default)]
struct EncodedRuns {
    /// The classes of the previous block.
    prev: Classes,
    /// Bytes before this offset belong to runs already judged.
    checked_until: usize,
    /// A run at least [`MIN_ENCODED_RUN`] long that reaches the end of the
    /// previous block: the classes it holds so far ([`RunClasses`]). It is
    /// judged as the blocks that continue it come, so a long run (a hash, a
    /// padded field) costs each of its blocks a few bit operations, never a
    /// second walk of its bytes.
    open: Option<u8>,
}

/// The classes a run holds, as bits: upper case, lower case, digit.
struct RunClasses;

impl RunClasses {
    const ALL: u8 = 0b111;

    /// Which classes of `c` the bytes of `run` (a mask of the 128-bit
    /// window whose low half is `p`, high half `c`) hold.
    #[inline(always)]
    fn of(p: Classes, c: Classes, run: u128) -> u8 {
        let has = |lo: u64, hi: u64| ((lo as u128 | (hi as u128) << 64) & run != 0) as u8;
        has(p.upper, c.upper) | has(p.lower, c.lower) << 1 | has(p.digit, c.digit) << 2
    }
}

impl EncodedRuns {
    /// Takes the block at `o` (`cur`, its classes; blocks in order from 0):
    /// does a qualifying run end in it or the one before, or has an open
    /// run (see [`EncodedRuns::open`]) qualified by now?
    #[inline(always)]
    fn next_block(&mut self, o: usize, cur: Classes) -> bool {
        const _: () = assert!(MIN_ENCODED_RUN == 24, "the shift ladder below finds runs of 24");
        let prev = self.prev;
        self.prev = cur;
        if let Some(held) = self.open.take() {
            // The open run goes on from this block's first byte.
            let n = cur.base64.trailing_ones();
            let part = if n == 64 { u128::MAX >> 64 } else { (1u128 << n) - 1 };
            let held = held | RunClasses::of(Classes::default(), cur, part << 64);
            if held == RunClasses::ALL {
                return true;
            }
            if n == 64 {
                return self.carry(held, o);
            }
            self.checked_until = o + n as usize;
        }
        // Bit i of the window is byte o - 64 + i.
        let w = prev.base64 as u128 | (cur.base64 as u128) << 64;
        let r2 = w & w >> 1;
        let r4 = r2 & r2 >> 2;
        let r8 = r4 & r4 >> 4;
        let r16 = r8 & r8 >> 8;
        // Bit i set: bytes i .. i + 24 of the window are all base64.
        let mut r = r16 & r8 >> 16;
        r = self.unchecked(r, o);
        while r != 0 {
            let p = r.trailing_zeros();
            // The run around p: it starts after the last non-base64 byte
            // below p and ends at the first one above. It cannot start
            // before the window: such a run was open at the previous block
            // (it was at least 64 bytes long there), and the bytes of an
            // open run are checked.
            let below = !w & ((1u128 << p) - 1);
            let start = if below == 0 { 0 } else { 128 - below.leading_zeros() };
            let end = p + (w >> p).trailing_ones();
            let run = (u128::MAX >> (128 - end)) & !((1u128 << start) - 1);
            let held = RunClasses::of(prev, cur, run);
            if held == RunClasses::ALL {
                return true;
            }
            if end == 128 {
                // Every later candidate of this window is inside it.
                return self.carry(held, o);
            }
            self.checked_until = o + end as usize - 64;
            r = self.unchecked(r, o);
        }
        false
    }

    /// The candidates of the window at block `o` past the bytes judged.
    #[inline(always)]
    fn unchecked(&self, r: u128, o: usize) -> u128 {
        let skip = (self.checked_until + 64).saturating_sub(o);
        if skip >= 128 {
            0
        } else {
            r & !((1u128 << skip) - 1)
        }
    }

    /// A run that goes on past block `o` with the classes `held`: judged
    /// as the blocks that continue it come.
    #[inline(always)]
    fn carry(&mut self, held: u8, o: usize) -> bool {
        self.open = Some(held);
        self.checked_until = o + 64;
        false
    }
}

/// One bit per byte of a block of up to 64 bytes, for each class of
/// character an encoded run is judged by.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Classes {
    base64: u64,
    upper: u64,
    lower: u64,
    digit: u64,
    /// Bytes that can start an escape or an invisible character: `%`,
    /// `\`, and the UTF-8 lead bytes E2, EF, F3.
    special: u64,
}

/// Is `b` one of the bytes of [`Classes::special`]?
fn is_special(b: u8) -> bool {
    matches!(b, b'%' | b'\\' | 0xE2 | 0xEF | 0xF3)
}

impl Classes {
    /// The classes of the block of `raw` at `o` (64 bytes, fewer at the end).
    #[inline(always)]
    fn at(raw: &[u8], o: usize) -> Self {
        if o + 64 <= raw.len() {
            Self::of_block(raw[o..o + 64].try_into().expect("64 bytes"))
        } else {
            Self::of_tail(&raw[o..])
        }
    }

    fn of_tail(bytes: &[u8]) -> Self {
        let mut c = Self::default();
        for (i, &b) in bytes.iter().enumerate() {
            c.base64 |= (B64[b as usize] as u64) << i;
            c.upper |= (b.is_ascii_uppercase() as u64) << i;
            c.lower |= (b.is_ascii_lowercase() as u64) << i;
            c.digit |= (b.is_ascii_digit() as u64) << i;
            c.special |= (is_special(b) as u64) << i;
        }
        c
    }

    #[inline(always)]
    fn of_block(block: &[u8; 64]) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            // SSE2 is part of the x86-64 baseline: no runtime detection.
            use std::arch::x86_64::*;
            let mut c = Self::default();
            for (k, lane) in block.chunks_exact(16).enumerate() {
                // SAFETY: SSE2 is always available on x86-64, and the
                // unaligned load reads exactly the 16 bytes of `lane`.
                let [b64, up, low, dig, special] = unsafe {
                    let v = _mm_loadu_si128(lane.as_ptr().cast());
                    // Signed compares: bytes >= 0x80 are negative and fall
                    // outside every range, as they should.
                    let within = |lo: u8, hi: u8| {
                        _mm_and_si128(
                            _mm_cmpgt_epi8(v, _mm_set1_epi8(lo as i8 - 1)),
                            _mm_cmplt_epi8(v, _mm_set1_epi8(hi as i8 + 1)),
                        )
                    };
                    let eq = |c: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8));
                    let (up, low, dig) = (within(b'A', b'Z'), within(b'a', b'z'), within(b'0', b'9'));
                    let b64 = _mm_or_si128(
                        _mm_or_si128(_mm_or_si128(up, low), dig),
                        _mm_or_si128(
                            _mm_or_si128(eq(b'+'), eq(b'/')),
                            _mm_or_si128(_mm_or_si128(eq(b'='), eq(b'-')), eq(b'_')),
                        ),
                    );
                    let special = _mm_or_si128(
                        _mm_or_si128(eq(b'%'), eq(b'\\')),
                        _mm_or_si128(_mm_or_si128(eq(0xE2), eq(0xEF)), eq(0xF3)),
                    );
                    [b64, up, low, dig, special].map(|m| _mm_movemask_epi8(m) as u16 as u64)
                };
                c.base64 |= b64 << (16 * k);
                c.upper |= up << (16 * k);
                c.lower |= low << (16 * k);
                c.digit |= dig << (16 * k);
                c.special |= special << (16 * k);
            }
            c
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Self::of_tail(block)
        }
    }

    /// [`Classes::of_block`] 32 bytes at a time.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn of_block_avx2(block: &[u8; 64]) -> Self {
        use std::arch::x86_64::*;
        let mut c = Self::default();
        for (k, half) in block.chunks_exact(32).enumerate() {
            // SAFETY: the caller runs on a CPU with AVX2; the unaligned load
            // reads exactly the 32 bytes of `half`.
            let [b64, up, low, dig, special] = unsafe {
                let v = _mm256_loadu_si256(half.as_ptr().cast());
                // Signed compares, as in `of_block`.
                let within = |lo: u8, hi: u8| {
                    _mm256_and_si256(
                        _mm256_cmpgt_epi8(v, _mm256_set1_epi8(lo as i8 - 1)),
                        _mm256_cmpgt_epi8(_mm256_set1_epi8(hi as i8 + 1), v),
                    )
                };
                let eq = |c: u8| _mm256_cmpeq_epi8(v, _mm256_set1_epi8(c as i8));
                let (up, low, dig) = (within(b'A', b'Z'), within(b'a', b'z'), within(b'0', b'9'));
                let b64 = _mm256_or_si256(
                    _mm256_or_si256(_mm256_or_si256(up, low), dig),
                    _mm256_or_si256(
                        _mm256_or_si256(eq(b'+'), eq(b'/')),
                        _mm256_or_si256(_mm256_or_si256(eq(b'='), eq(b'-')), eq(b'_')),
                    ),
                );
                let special = _mm256_or_si256(
                    _mm256_or_si256(eq(b'%'), eq(b'\\')),
                    _mm256_or_si256(_mm256_or_si256(eq(0xE2), eq(0xEF)), eq(0xF3)),
                );
                [b64, up, low, dig, special].map(|m| _mm256_movemask_epi8(m) as u32 as u64)
            };
            c.base64 |= b64 << (32 * k);
            c.upper |= up << (32 * k);
            c.lower |= low << (32 * k);
            c.digit |= dig << (32 * k);
            c.special |= special << (32 * k);
        }
        c
    }
}

/// The escape or invisible character that may start at `raw[i]`, one of
/// the bytes of [`Classes::special`].
#[inline(always)]
fn special_at(raw: &[u8], i: usize, h: &mut Hits) {
    let n = raw.len();
    let c = raw[i];
    match c {
        b'%' => {
            if i + 2 < n && raw[i + 1].is_ascii_hexdigit() && raw[i + 2].is_ascii_hexdigit() {
                h.percent = true;
            }
        }
        b'\\' => {
            // "\\" is an escaped backslash, not the start of an escape.
            if i > 0 && raw[i - 1] == b'\\' && (i < 2 || raw[i - 2] != b'\\') {
                return;
            }
            if raw.get(i + 1) == Some(&b'/') {
                h.escapes = true;
            }
            if i + 5 < n && raw[i + 1] == b'u' {
                let hex = &raw[i + 2..i + 6];
                if hex[0] == b'0' && hex[1] == b'0' && (b'2'..=b'7').contains(&hex[2]) {
                    h.escapes = true;
                }
                if hex[..3].eq_ignore_ascii_case(b"200")
                    || hex[..3].eq_ignore_ascii_case(b"202")
                    || hex[..3].eq_ignore_ascii_case(b"206")
                    || hex.eq_ignore_ascii_case(b"feff")
                    || hex.eq_ignore_ascii_case(b"db40")
                {
                    h.invisible = true;
                }
            }
        }
        _ => {
            // E2 80 8B..8F / AA..AE, E2 81 A0..A9, EF BB BF, F3 A0 80..81.
            if i + 2 < n {
                let (b1, b2) = (raw[i + 1], raw[i + 2]);
                h.invisible |= (c == 0xE2 && b1 == 0x80 && matches!(b2, 0x8B..=0x8F | 0xAA..=0xAE))
                    || (c == 0xE2 && b1 == 0x81 && matches!(b2, 0xA0..=0xA9))
                    || (c == 0xEF && b1 == 0xBB && b2 == 0xBF)
                    || (c == 0xF3 && b1 == 0xA0 && matches!(b2, 0x80 | 0x81));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pf() -> Prefilter {
        Prefilter::new(
            &[("ghp_".to_owned(), vec![0]), ("akia".to_owned(), vec![1, 2])],
            &["password"],
            &["ignore previous instructions"],
        )
    }

    #[test]
    fn literal_kinds() {
        let h = pf().scan(br#"{"text":"GHP_abc AKIA","Password":"x"}"#);
        assert_eq!(h.credential_rules, [0, 1, 2]);
        assert!(h.secret_name && !h.lexicon);
        assert!(pf().scan(b"please IGNORE previous instructions").lexicon);
        assert_eq!(pf().scan(b"nothing to see here"), Hits::default());
    }

    #[test]
    fn structural_signals() {
        assert!(pf().scan(b"x QWxhZGRpbjpvcGVuIHNlc2FtZQ12345678 y").encoded);
        assert!(
            !pf()
                .scan(b"/home/user/project/src/main.rs and more-lower-case-words")
                .encoded
        );
        assert!(pf().scan(b"a%5Fb").percent);
        assert!(pf().scan(br#"\u0067hp_"#).escapes);
        assert!(pf().scan(br#"https:\/\/u:p@h"#).escapes);
        assert!(
            !pf().scan(br#"a\\u0067 b"#).escapes,
            "an escaped backslash is not an escape"
        );
        assert!(pf().scan("zero\u{200b}width".as_bytes()).invisible);
        assert!(pf().scan(br#"bidi \u202e here"#).invisible);
        assert!(pf().scan("tag \u{E0041}".as_bytes()).invisible);
    }

    proptest! {
        #[test]
        fn block_classes_match_the_bytewise_ones(bytes in proptest::collection::vec(any::<u8>(), 64)) {
            let block: &[u8; 64] = bytes.as_slice().try_into().unwrap();
            prop_assert_eq!(Classes::of_block(block), Classes::of_tail(&bytes));
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked just above).
                prop_assert_eq!(unsafe { Classes::of_block_avx2(block) }, Classes::of_tail(&bytes));
            }
        }

        /// The block-based search agrees with a plain run scan.
        #[test]
        fn encoded_runs_match_naive(s in "[A-Za-z0-9+/=_ .-]{0,160}") {
            let naive = s.split(|c: char| !(c.is_ascii_alphanumeric() || "+/=-_".contains(c))).any(|w| {
                w.len() >= MIN_ENCODED_RUN && w.bytes().any(|b| b.is_ascii_uppercase()) && w.bytes().any(|b| b.is_ascii_lowercase()) && w.bytes().any(|b| b.is_ascii_digit())
            });
            prop_assert_eq!(has_encoded_run(s.as_bytes()), naive);
        }

        /// Runs made of few distinct characters, long and short, around
        /// block boundaries.
        #[test]
        fn encoded_runs_match_naive_long(parts in proptest::collection::vec(("[aB3 ]", 1usize..200), 0..12)) {
            let s: String = parts.iter().map(|(c, n)| c.repeat(*n)).collect();
            let naive = s.split(' ').any(|w| {
                w.len() >= MIN_ENCODED_RUN && w.contains('a') && w.contains('B') && w.contains('3')
            });
            prop_assert_eq!(has_encoded_run(s.as_bytes()), naive);
        }

        /// The four-lane walk finds exactly what the library's search finds,
        /// wherever the literals fall relative to the lane boundaries.
        #[test]
        fn lanes_agree_with_the_library(len in 0usize..1200, at in 0usize..1200, which in 0usize..3, at2 in 0usize..1200) {
            let p = pf();
            let lits = ["ghp_", "PassWord", "ignore previous instructions"];
            let mut text = vec![b'x'; len];
            let mut placed = Vec::new();
            for (at, lit) in [(at, lits[which]), (at2, lits[(which + 1) % 3])] {
                if at + lit.len() <= len && !placed.iter().any(|&(a, l): &(usize, usize)| at < a + l && a < at + lit.len()) {
                    text[at..at + lit.len()].copy_from_slice(lit.as_bytes());
                    placed.push((at, lit.len()));
                }
            }
            let h = p.scan(&text);
            prop_assert_eq!(&h, &p.scan_reference(&text));
            let found = usize::from(h.secret_name) + usize::from(h.lexicon) + usize::from(!h.credential_rules.is_empty());
            prop_assert_eq!(found, placed.len());
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = pf().scan(&data);
        }

        /// The one-pass scan (hand attribution, fused structural pass)
        /// finds what the plain one finds: literals (overlapping ones
        /// too), encoded runs, escapes and invisible characters, wherever
        /// they fall relative to the 64-byte blocks.
        #[test]
        fn scan_agrees_with_the_reference(
            parts in proptest::collection::vec(prop_oneof![
                Just("ghp_".to_owned()), Just("aKiA".to_owned()), Just("password".to_owned()),
                Just("ignore previous instructions".to_owned()), Just("%5f".to_owned()), Just("\\\\".to_owned()),
                Just("\\u0067".to_owned()), Just("\\/".to_owned()), Just("\\u200b".to_owned()),
                Just("\u{200b}".to_owned()), Just("\u{feff}".to_owned()), Just("\u{E0041}".to_owned()),
                "[A-Za-z0-9+/]{1,40}", "[ x.\n]{1,70}",
            ], 0..24),
        ) {
            let p = pf();
            let text = parts.concat();
            prop_assert_eq!(p.scan(text.as_bytes()), p.scan_reference(text.as_bytes()));
        }

        #[test]
        fn scan_agrees_with_the_reference_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let p = pf();
            prop_assert_eq!(p.scan(&data), p.scan_reference(&data));
        }
    }
}
