//! The discovery stages: does an untracked stream start like JSON-RPC, HTTP
//! carrying it, or an MCP method? Shared by the syscall hooks (`EXIT_JUMP`,
//! `FEXIT_JUMP`, `FEXIT_NET_JUMP`) and the TLS path (`TLS_JUMP`): each
//! stage is a BTF tracepoint, two fexit programs and a uprobe.

use crate::hooks::SyscallContext;
use crate::{
    emit::{scratch, Scratch, HDR},
    kernel_read::verifier_bound,
    maps::{config, count, Transfer, EXIT_JUMP, FEXIT_JUMP, FEXIT_NET_JUMP, METHOD_ROOTS, TLS_JUMP, TRANSFER},
    transfer::{copied_window_len, discovered},
};
use aya_ebpf::helpers::generated::bpf_probe_read_user;
use aya_ebpf::macros::{btf_tracepoint, fexit, uprobe};
use aya_ebpf::maps::ProgramArray;
use aya_ebpf::programs::{FExitContext, ProbeContext};
use aya_ebpf::EbpfContext;
use core::ffi::c_void;
use monitor_common::{jump_slot, Counter, KernelConfig, MAX_DISCOVERY_WINDOW, METHOD_ROOT_LEN};

/// Defines a discovery stage four times, each running `$stage`: a BTF
/// tracepoint for the syscall tracepoint hook (tail calls through
/// `EXIT_JUMP`), fexit programs for the syscall fexit hooks
/// (`FEXIT_JUMP`, `FEXIT_NET_JUMP`: a tail call stays between programs
/// loaded for the same prototype) and a uprobe for TLS plaintext
/// (`TLS_JUMP`): a program has one context type and is loaded for one
/// hook, so one function cannot serve them all.
macro_rules! stage_copies {
    ($(#[$doc:meta])* $exit:ident, $fexit:ident, $fexit_net:ident, $tls:ident => $stage:ident) => {
        $(#[$doc])*
        #[btf_tracepoint]
        pub fn $exit(ctx: SyscallContext) -> i32 {
            $stage(&ctx, &EXIT_JUMP) as i32
        }

        #[doc = concat!("[`", stringify!($exit), "`] for the syscall fexit hooks (an fexit program must return 0).")]
        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> i32 {
            $stage(&SyscallContext::new(ctx.as_ptr()), &FEXIT_JUMP);
            0
        }

        #[doc = concat!("[`", stringify!($exit), "`] for the network calls' fexit hooks.")]
        #[fexit]
        pub fn $fexit_net(ctx: FExitContext) -> i32 {
            $stage(&SyscallContext::new(ctx.as_ptr()), &FEXIT_NET_JUMP);
            0
        }

        #[doc = concat!("[`", stringify!($exit), "`] for TLS plaintext.")]
        #[uprobe]
        pub fn $tls(ctx: ProbeContext) -> u32 {
            $stage(&ctx, &TLS_JUMP)
        }
    };
}

/// Copies up to the discovery window of the buffer into the scratch payload
/// area; returns the number of bytes copied (0 if too short or unreadable).
#[inline(always)]
pub(crate) fn copy_window(cfg: &KernelConfig, scratch: Scratch, buf: u64, len: u64) -> usize {
    let scratch = scratch.ptr();
    let mut n = cfg.discovery_window as u64;
    if n > MAX_DISCOVERY_WINDOW as u64 {
        n = MAX_DISCOVERY_WINDOW as u64;
    }
    if len < n {
        n = len;
    }
    if n < 9 {
        return 0;
    }
    let n = verifier_bound(n, MAX_DISCOVERY_WINDOW as u64 * 2 - 1) as u32;
    if n as usize > MAX_DISCOVERY_WINDOW {
        return 0;
    }
    // SAFETY: scratch is this CPU's SCRATCH value (the caller passes
    // scratch()), and HDR < SCRATCH_SIZE.
    let dst = unsafe { scratch.add(HDR) };
    // SAFETY: n <= MAX_DISCOVERY_WINDOW <= MAX_CAPTURE (checked above) fits
    // the payload area; the helper checks `buf` and fails instead of faulting.
    if unsafe { bpf_probe_read_user(dst as *mut c_void, n, buf as *const c_void) } != 0 {
        return 0;
    }
    n as usize
}

/// Looks for the `"jsonrpc"` key in the `n` window bytes at the scratch
/// payload area. Keep this the last check before the tail call: every exit
/// of its loop is a separate verifier state, so little may follow it.
#[inline(always)]
pub(crate) fn window_has_jsonrpc(scratch: Scratch, n: usize) -> bool {
    window_has_key(scratch, n, u64::from_be_bytes(*b"jsonrpc\""), b'"')
}

/// Looks for `text/event-stream` (as `n` + `t-stream`) in the window: MCP
/// clients accept it on every POST (Streamable HTTP), and the head of the
/// first request is often written before its JSON body.
#[inline(always)]
pub(crate) fn window_has_event_stream(scratch: Scratch, n: usize) -> bool {
    window_has_key(scratch, n, u64::from_be_bytes(*b"t-stream"), b'n')
}

/// Looks for the nine bytes `first` + `key` in the window.
#[inline(always)]
pub(crate) fn window_has_key(scratch: Scratch, n: usize, key: u64, first: u8) -> bool {
    let scratch = scratch.ptr();
    // SAFETY: scratch is this CPU's SCRATCH value (all callers pass
    // scratch()), and HDR < SCRATCH_SIZE.
    let dst = unsafe { scratch.add(HDR) };
    // Rolling window over the last eight bytes; the ninth byte, the opening
    // quote, is the one shifted out. The loop body has no data-dependent
    // branch: a "found" branch per byte would give the verifier a new,
    // unprunable state per position (and the program would not load). The
    // match is accumulated arithmetically instead; `black_box` keeps LLVM
    // from turning the zero test back into a compare-and-branch.
    let mut window = 0u64;
    let mut found = 0u64;
    let mut i = 0usize;
    while i < MAX_DISCOVERY_WINDOW {
        if i >= n {
            break;
        }
        // SAFETY: i < MAX_DISCOVERY_WINDOW (loop bound, whatever `n` is)
        // <= MAX_CAPTURE, so dst + i is inside the payload area.
        let b = unsafe { *dst.add(i) };
        let out = window >> 56;
        window = (window << 8) | b as u64;
        let d = (window ^ key) | (out ^ first as u64);
        // Top bit of d | -d is set exactly when d != 0.
        let nonzero = core::hint::black_box(d | d.wrapping_neg()) >> 63;
        found |= nonzero ^ 1;
        i += 1;
    }
    found != 0
}

#[inline(always)]
pub(crate) fn is_ws(c: u8) -> bool {
    c == b' ' || c == b'\n' || c == b'\r' || c == b'\t'
}

/// Second discovery signature, for messages whose `"jsonrpc"` key comes
/// after a large `params` (the TypeScript SDK writes `{"method":...,
/// "params":...,"jsonrpc":"2.0"}`): an object whose first key is `"method"`
/// with a known MCP method root. Reads the window already copied to the
/// scratch area by `copy_window` (`n` valid bytes).
#[inline(always)]
pub(crate) fn starts_with_mcp_method(scratch: Scratch, n: usize) -> bool {
    let scratch = scratch.ptr();
    // SAFETY: scratch is this CPU's SCRATCH value (all callers pass
    // scratch()), and HDR < SCRATCH_SIZE.
    let p = unsafe { scratch.add(HDR) };
    let at = |i: usize| -> u8 {
        if i < n {
            // SAFETY: the index is masked below MAX_DISCOVERY_WINDOW <=
            // MAX_CAPTURE, so every read is inside the payload area.
            unsafe { *p.add(i & (MAX_DISCOVERY_WINDOW - 1)) }
        } else {
            0
        }
    };
    let mut i = 0usize;
    let mut k = 0;
    while k < 8 && is_ws(at(i)) {
        i += 1;
        k += 1;
    }
    if at(i) != b'{' {
        return false;
    }
    i += 1;
    k = 0;
    while k < 8 && is_ws(at(i)) {
        i += 1;
        k += 1;
    }
    let key = b"\"method\"";
    let mut j = 0;
    while j < key.len() {
        if at(i + j) != key[j] {
            return false;
        }
        j += 1;
    }
    i += key.len();
    k = 0;
    while k < 8 && is_ws(at(i)) {
        i += 1;
        k += 1;
    }
    if at(i) != b':' {
        return false;
    }
    i += 1;
    k = 0;
    while k < 8 && is_ws(at(i)) {
        i += 1;
        k += 1;
    }
    if at(i) != b'"' {
        return false;
    }
    i += 1;
    let mut root = [0u8; METHOD_ROOT_LEN];
    let mut j = 0;
    while j < METHOD_ROOT_LEN {
        let c = at(i + j);
        if c == b'/' || c == b'"' {
            break;
        }
        if c == 0 || c == b'\\' {
            return false;
        }
        root[j] = c;
        j += 1;
    }
    if j == 0 || j == METHOD_ROOT_LEN {
        return false;
    }
    // SAFETY: only presence is tested; the value is never read.
    unsafe { METHOD_ROOTS.get(&root) }.is_some()
}

stage_copies! {
    /// Tail-call target: does the payload start like an MCP message (a
    /// `"method"` with an MCP method root, or a `"jsonrpc"` key in the window)?
    exit_discover, fexit_discover, fexit_net_discover, tls_discover => discover_stage
}

#[inline(always)]
pub(crate) fn discover_stage<C: EbpfContext>(ctx: &C, jump: &ProgramArray) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let Some(t) = TRANSFER.get_ptr_mut(0) else { return 0 };
    let Some(scratch) = scratch() else { return 0 };
    // SAFETY: t is this CPU's TRANSFER slot from the lookup above, valid for
    // a Transfer (maps.rs NOTE).
    let (first_buf, first_len) = unsafe { ((*t).first_buf, (*t).first_len) };
    let n = copy_window(cfg, scratch, first_buf, first_len);
    if n == 0 {
        return 0;
    }
    // Cheap signature first; the 1 KiB scan must come last (see
    // window_has_jsonrpc).
    // SAFETY: reads reach scratch + HDR + 6 at most, inside the scratch
    // value; copy_window copied n >= 9 bytes there (it returns 0 below 9).
    let http_head = n >= 8
        && unsafe {
            let p = scratch.ptr().add(HDR);
            (*p == b'P' && *p.add(1) == b'O' && *p.add(2) == b'S' && *p.add(3) == b'T' && *p.add(4) == b' ')
                || (*p == b'H'
                    && *p.add(1) == b'T'
                    && *p.add(2) == b'T'
                    && *p.add(3) == b'P'
                    && *p.add(4) == b'/'
                    && *p.add(5) == b'1'
                    && *p.add(6) == b'.')
        };
    if http_head {
        // MCP clients accept text/event-stream on every POST, and the
        // legacy transport's GET stream is answered with it (its head
        // often written apart from the first event); that is looked for
        // in its own program (a second scan here would not verify).
        // SAFETY: tail_call never returns on success; on failure (empty slot,
        // chain limit) it returns and is counted below. No Drop values live.
        unsafe { jump.tail_call(ctx, jump_slot::DISCOVER_HTTP) };
        count(Counter::DropTailCall, 1);
        return 0;
    }
    if !starts_with_mcp_method(scratch, n) && !window_has_jsonrpc(scratch, n) {
        return 0;
    }
    discovered(ctx, jump, t)
}

stage_copies! {
    /// Tail-call target of `discover` for an HTTP POST or response: MCP if
    /// its head names `text/event-stream` (Streamable HTTP clients accept it on
    /// every POST; SSE streams, the legacy transport's included, answer with
    /// it). The window is already in the scratch area.
    exit_discover_http, fexit_discover_http, fexit_net_discover_http, tls_discover_http => discover_http_stage
}

#[inline(always)]
pub(crate) fn discover_http_stage<C: EbpfContext>(ctx: &C, jump: &ProgramArray) -> u32 {
    let Some((t, scratch, n)) = copied_window() else {
        return 0;
    };
    if !window_has_event_stream(scratch, n) {
        // A POST of JSON-RPC without the Streamable HTTP Accept header (the
        // legacy HTTP+SSE transport's messages), or a JSON response: look
        // for "jsonrpc".
        // SAFETY: tail_call never returns on success; on failure it returns
        // and is counted below. No Drop values live.
        unsafe { jump.tail_call(ctx, jump_slot::DISCOVER_JSONRPC) };
        count(Counter::DropTailCall, 1);
        return 0;
    }
    discovered(ctx, jump, t)
}

stage_copies! {
    /// Tail-call target of `discover_http`: an HTTP POST whose window holds
    /// `"jsonrpc"`.
    exit_discover_jsonrpc, fexit_discover_jsonrpc, fexit_net_discover_jsonrpc, tls_discover_jsonrpc => discover_jsonrpc_stage
}

#[inline(always)]
pub(crate) fn discover_jsonrpc_stage<C: EbpfContext>(ctx: &C, jump: &ProgramArray) -> u32 {
    let Some((t, scratch, n)) = copied_window() else {
        return 0;
    };
    if !window_has_jsonrpc(scratch, n) {
        return 0;
    }
    discovered(ctx, jump, t)
}

/// For the stages after `discover`: this CPU's transfer, the scratch area
/// and the length of the window `discover` copied there (`None` for an
/// empty window).
#[inline(always)]
fn copied_window() -> Option<(*mut Transfer, Scratch, usize)> {
    let cfg = config()?;
    let t = TRANSFER.get_ptr_mut(0)?;
    let scratch = scratch()?;
    // SAFETY: t is this CPU's TRANSFER slot from the lookup above, valid for
    // a Transfer.
    let n = copied_window_len(cfg, unsafe { (*t).first_len });
    if n == 0 || n > MAX_DISCOVERY_WINDOW {
        return None;
    }
    Some((t, scratch, n))
}
