//! The detector's first pass on untrusted bytes: the four-lane literal walk
//! agrees with the library's search, the SIMD encoded-run search with a
//! plain byte-by-byte one, and the one-pass scan with the plain one.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcp_monitor_pipeline::detect::{
    lexicon,
    prefilter::{has_encoded_run, Prefilter, MIN_ENCODED_RUN},
    secrets::SecretScanner,
    SECRET_NAME_FRAGMENTS,
};

fn prefilter() -> &'static Prefilter {
    static P: OnceLock<Prefilter> = OnceLock::new();
    P.get_or_init(|| {
        let s = SecretScanner::new(b"k");
        Prefilter::new(&s.keyword_rules(), SECRET_NAME_FRAGMENTS, &lexicon::phrases())
    })
}

fn naive_encoded_run(raw: &[u8]) -> bool {
    raw.split(|&c| !(c.is_ascii_alphanumeric() || b"+/=-_".contains(&c)))
        .any(|w| {
            w.len() >= MIN_ENCODED_RUN
                && w.iter().any(u8::is_ascii_uppercase)
                && w.iter().any(u8::is_ascii_lowercase)
                && w.iter().any(u8::is_ascii_digit)
        })
}

fuzz_target!(|data: &[u8]| {
    let p = prefilter();
    assert_eq!(has_encoded_run(data), naive_encoded_run(data));
    assert_eq!(p.scan(data), p.scan_reference(data));
});
