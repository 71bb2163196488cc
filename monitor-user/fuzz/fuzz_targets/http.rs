//! HTTP/1.1 + SSE reassembly: arbitrary bytes never panic and stay within
//! the body limit; when a stream parses without error, any split of it into
//! reads gives the same payloads as the whole.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_monitor_pipeline::http::{h1::Side, HttpHalf, HttpOutput};

const MAX_BODY: usize = 4096;

fn run(side: Side, pieces: &[&[u8]]) -> (Vec<(Option<String>, Vec<u8>)>, usize) {
    let mut half = HttpHalf::new(side, MAX_BODY, false);
    let mut payloads = Vec::new();
    let mut errors = 0;
    for p in pieces {
        half.feed(p, &mut |o| match o {
            HttpOutput::Payload { data, sse_event, .. } => payloads.push((sse_event, data)),
            HttpOutput::Error(_) => errors += 1,
            _ => {}
        });
        assert!(
            half.buffered() <= 2 * MAX_BODY + 64 * 1024 + 8192,
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
    let stride = 1 + data[1] as usize;
    let body = &data[2..];
    let (whole, errors) = run(side, &[body]);
    let pieces: Vec<&[u8]> = body.chunks(stride).collect();
    let (split, split_errors) = run(side, &pieces);
    if errors == 0 && split_errors == 0 {
        assert_eq!(whole, split);
    }
});
