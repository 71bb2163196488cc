//! The line framer: any split of a stream gives the same frames as the
//! whole stream, and memory stays within the frame limit; framers sharing a
//! memory budget never hold more than it together.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_monitor_pipeline::{
    buffer_budget::Budget,
    framing::{Frame, LineFramer},
};

fn frames(pieces: &[&[u8]], max: usize) -> Vec<(u8, Vec<u8>, u64)> {
    let mut f = LineFramer::new(max);
    let mut out = Vec::new();
    for p in pieces {
        f.push(p, |fr| {
            out.push(match fr {
                Frame::Line(l) => (0, l.to_vec(), 0),
                Frame::Oversized(n) => (1, Vec::new(), n),
                Frame::Damaged(n) => (2, Vec::new(), n),
                Frame::OverBudget(n) => (3, Vec::new(), n),
                Frame::NotJson => (4, Vec::new(), 0),
                Frame::Binary => (5, Vec::new(), 0),
            })
        });
        assert!(f.buffered() <= max);
    }
    out
}

fn json_lines(frames: &[(u8, Vec<u8>, u64)]) -> Vec<&[u8]> {
    frames
        .iter()
        .filter(|f| f.0 == 0)
        .map(|f| f.1.as_slice())
        .filter(|l| {
            matches!(l.iter().find(|b| !b.is_ascii_whitespace()), Some(b'{' | b'['))
                && !l.iter().any(|&b| b < 0x20 && b != b'\t' && b != b'\r')
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = 1 + data[0] as usize;
    let stride = 1 + data[1] as usize;
    let body = &data[2..];
    let whole = frames(&[body], max);
    let pieces: Vec<&[u8]> = body.chunks(stride).collect();
    // Lines that can be JSON come out the same however the bytes are
    // split; the others are reported per piece (or parsed, when whole).
    assert_eq!(json_lines(&whole), json_lines(&frames(&pieces, max)));
    // Two streams sharing a budget of `max` bytes, fed alternately.
    let budget = Budget::new(max);
    let mut pair = [
        LineFramer::new(1 << 20).with_budget(&budget),
        LineFramer::new(1 << 20).with_budget(&budget),
    ];
    for (i, p) in pieces.iter().enumerate() {
        pair[i % 2].push(p, |_| {});
        assert!(budget.used() <= max);
    }
    drop(pair);
    assert_eq!(budget.used(), 0);
});
