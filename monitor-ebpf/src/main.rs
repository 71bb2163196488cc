//! Kernel programs of the MCP monitor.
//!
//! They decide *what* to capture and copy it out; everything else (framing,
//! JSON-RPC, sessions, detection) happens in userspace.
//!
//! Capture model:
//! - Local IPC (pipes, unix stream sockets): payload is captured where it is
//!   **read** (the exit of read/readv/recvfrom/recvmsg). The reader sees
//!   exactly the bytes that crossed, in pipe-sized pieces, so each byte is
//!   captured once and a blocking 1 MiB write is not truncated. Writers only
//!   send a payload-less writer notice, at the write's exit; userspace
//!   uses it to name the peer (and takes each batch's notices before its
//!   chunks, as a reader can have taken the bytes before the writer's exit
//!   runs).
//! - Which processes: tracked ones (userspace selectors, inherited at fork,
//!   exe-name selector at exec, cgroup selector) and, without any
//!   configuration, any stream whose payload starts with a JSON object or
//!   array holding `"jsonrpc"` within the discovery window. A discovered
//!   process becomes tracked, so its other streams and its children are
//!   captured from their first byte. Userspace marks streams it rejects as
//!   ignored in `STREAMS`, after which they cost one map lookup.
#![no_std]
// `atomic_xadd` (maps.rs): the BPF target has no `fetch_add`.
#![feature(core_intrinsics)]
#![allow(internal_features)]
#![no_main]

mod capture;
mod discovery;
mod emit;
mod hooks;
mod kernel_read;
mod known_files;
mod maps;
mod payload;
mod threads;
mod tracking;
mod transfer;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// SAFETY: plain read-only bytes in the section the loader reads the license
// from; nothing executes or writes it.
#[unsafe(link_section = "license")]
// SAFETY: no other symbol of this object is named `LICENSE`, so the
// unmangled name cannot clash.
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
