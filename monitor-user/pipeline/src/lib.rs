//! The pure part of mcp-monitor: observations in; events, alerts and
//! metrics out. Nothing here reads a file, a socket or a clock, so a
//! recording of a live run replays through it without root and gives the
//! same events and alerts.
//!
//! - [`observation`]: what the sensor hands over (byte chunks with their
//!   stream and process, process lifecycle, workload changes, ticks);
//!   [`ring_record`] decodes the kernel's ring records into them, and
//!   [`record`] reads and writes recordings of them.
//! - [`pipeline`] turns observations into [`event::Event`]s (and tells the
//!   sensor which streams to stop capturing: [`control`]): per-stream
//!   [`framing`] of stdio, [`http`] for HTTP/1.1 and SSE, [`jsonrpc`]
//!   decoding, [`mcp`] method knowledge, [`session`]s and [`identity`];
//!   [`relook`] and [`buffer_budget`] bound what it keeps.
//! - [`detect`]ion (credential leaks, tool integrity, prompt injection, tool
//!   chaining) turns messages into alerts; [`redact`] keeps secrets out of
//!   everything that leaves.
//! - [`metrics`] counts all of it.
//! - [`btf`] reads the kernel's type information for the sensor (struct
//!   member offsets the kernel programs need): a parser of bytes like the
//!   others, so it lives here; [`go_binary`] and [`boringssl_binary`] find
//!   where Go programs and Bun executables hand TLS plaintext over, for the
//!   same reason, and [`probe_check`] judges whether probes placed from
//!   such a search hand over plaintext.
pub mod boringssl_binary;
pub mod btf;
pub mod buffer_budget;
pub mod clock;
pub mod control;
pub mod detect;
mod elf;
pub mod event;
pub mod framing;
pub mod glob;
pub mod go_binary;
pub mod http;
pub mod identity;
pub mod jsonrpc;
pub mod mcp;
pub mod metrics;
pub mod observation;
pub mod pipeline;
pub mod probe_check;
pub mod record;
pub mod redact;
pub mod relook;
pub mod ring_record;
pub mod session;
