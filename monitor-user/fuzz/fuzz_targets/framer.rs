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
            })
        });
        assert!(f.buffered() <= max);
    }
    out
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
    assert_eq!(whole, frames(&pieces, max));
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
