//! HTTP/2 frames and HPACK: arbitrary bytes never panic and what a
//! direction holds stays bounded, from any starting point (the preface, a
//! frame header, anywhere); a stream that parses without error gives the
//! same payloads however it is split into reads. The header decoder alone
//! takes arbitrary blocks in a row and keeps its table bounded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_monitor_pipeline::http::{
    h1::Side,
    h2::{H2Start, PREFACE},
    hpack, HttpHalf, HttpOutput,
};

const MAX_BODY: usize = 4096;

fn run(side: Side, start: H2Start, pieces: &[&[u8]]) -> (Vec<(Option<u32>, Vec<u8>)>, usize) {
    let mut half = HttpHalf::new_h2(side, MAX_BODY, start);
    let mut payloads = Vec::new();
    let mut errors = 0;
    for p in pieces {
        half.feed(p, &mut |o| match o {
            HttpOutput::Payload { meta, data, .. } => payloads.push((meta.stream, data)),
            HttpOutput::Error(_) => errors += 1,
            _ => {}
        });
        // 256 streams of at most two bodies' worth, a header block, a
        // table, and one frame's look-ahead.
        assert!(
            half.buffered() <= 256 * 2 * MAX_BODY + 64 * 1024 + hpack::MAX_TABLE_SIZE + (1 << 20) + 16,
            "{}",
            half.buffered()
        );
    }
    (payloads, errors)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let side = if data[0] & 1 == 0 {
        Side::Requests
    } else {
        Side::Responses
    };
    let start = match (data[0] >> 1) % 3 {
        0 => H2Start::Fresh,
        1 => H2Start::AtFrame,
        _ => H2Start::Anywhere,
    };
    let stride = 1 + data[1] as usize;
    let mut body = Vec::new();
    if start == H2Start::Fresh && side == Side::Requests {
        body.extend_from_slice(PREFACE);
    }
    body.extend_from_slice(&data[2..]);
    let (whole, errors) = run(side, start, &[&body]);
    let pieces: Vec<&[u8]> = body.chunks(stride).collect();
    let (split, split_errors) = run(side, start, &pieces);
    if errors == 0 && split_errors == 0 {
        assert_eq!(whole, split);
    }
    // The header decoder on its own: blocks cut at every 0xff byte.
    let mut d = hpack::Decoder::new();
    for block in data[2..].split(|b| *b == 0xff) {
        let _ = d.decode(block, 16 * 1024);
        assert!(d.table_size() <= hpack::MAX_TABLE_SIZE);
    }
});
