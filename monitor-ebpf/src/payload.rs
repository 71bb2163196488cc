//! What the first bytes of a payload look like, read from the process's
//! memory: the cheap first filter before the discovery stages.

use crate::emit::zero_words;
use aya_ebpf::helpers::generated::bpf_probe_read_user;
use core::ffi::c_void;

/// True when the buffer starts like an MCP message: the first
/// non-whitespace byte opens a JSON object or array (stdio), it starts an
/// HTTP POST or an HTTP/1.x response (MCP over HTTP), the HTTP/2 client
/// preface, an HTTP/2 DATA frame of JSON, or the HEADERS frame of an
/// HTTP/2 request with a body. The cheap first filter
/// for untracked processes; `discover` then looks for `"jsonrpc"`.
#[inline(always)]
pub(crate) fn starts_like_json(buf: u64, len: u64) -> bool {
    // 32 bytes of room for at most 16 read: the mask after `black_box`
    // bounds the register actually passed to the helper (LLVM otherwise
    // compares one copy of `len` and passes another, unbounded one).
    // Words, zeroed one store each: a byte array literal became a call
    // to the byte-at-a-time memset (160 instructions for 32 bytes).
    let mut words = core::mem::MaybeUninit::<[u64; 4]>::uninit();
    let w = words.as_mut_ptr() as *mut u64;
    // SAFETY: the four words of `words`, 8-aligned stack memory.
    unsafe { zero_words(w, 4) };
    // SAFETY: every byte of `words` was written just above; [u8; 32] has
    // its size and no alignment or validity requirement of its own.
    let head = unsafe { &mut *(w as *mut [u8; 32]) };
    let n = if len < 16 { len } else { 16 };
    let n = core::hint::black_box(n) as u32 & 0x1f;
    if n == 0 || n > 16 {
        return false;
    }
    // SAFETY: n is 1..=16 (checked above) into the 32-byte local `head`; the
    // helper checks `buf` and fails instead of faulting.
    let r = unsafe { bpf_probe_read_user(head.as_mut_ptr() as *mut c_void, n, buf as *const c_void) };
    if r != 0 {
        return false;
    }
    if n >= 8
        && ((head[0] == b'P' && head[1] == b'O' && head[2] == b'S' && head[3] == b'T' && head[4] == b' ')
            // The HTTP/2 client preface: once per connection; the window
            // scan then finds the first request when it came in the same
            // read (h2c, where the server reads it all at once).
            || (head[0] == b'P'
                && head[1] == b'R'
                && head[2] == b'I'
                && head[3] == b' '
                && head[4] == b'*'
                && head[5] == b' '
                && head[6] == b'H')
            || (head[0] == b'H'
                && head[1] == b'T'
                && head[2] == b'T'
                && head[3] == b'P'
                && head[4] == b'/'
                && head[5] == b'1'
                && head[6] == b'.'))
    {
        return true;
    }
    // An HTTP/2 DATA frame (type 0, flags at most END_STREAM, a stream
    // id) whose payload opens JSON: MCP over h2 and h2c, whose messages
    // start with a 9-byte frame header.
    if n >= 10
        && head[3] == 0
        && head[4] & !1 == 0
        && head[5] & 0x80 == 0
        && (head[5] | head[6] | head[7] | head[8]) != 0
        && (head[9] == b'{' || head[9] == b'[')
    {
        return true;
    }
    // An HTTP/2 HEADERS frame whose block is whole and whose stream goes on
    // (a request with a body): the discovery scan looks for its DATA in
    // the same read (h2c servers read head and body at once). Streams that
    // carry no MCP thin out their looks (`transfer::looked_at_recently`).
    if n >= 9
        && head[3] == 1
        && head[4] & 0x04 != 0
        && head[4] & !0x2c == 0
        && head[5] & 0x80 == 0
        && (head[5] | head[6] | head[7] | head[8]) != 0
    {
        return true;
    }
    let mut i = 0usize;
    while i < 16 {
        if i as u32 >= n {
            return false;
        }
        let c = head[i];
        if c == b'{' || c == b'[' {
            return true;
        }
        if !(c == b' ' || c == b'\n' || c == b'\r' || c == b'\t') {
            return false;
        }
        i += 1;
    }
    false
}
