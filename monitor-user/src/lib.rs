//! mcp-monitor: a host-level monitor for MCP (Model Context Protocol)
//! traffic, captured from the kernel with eBPF.
//!
//! The crate splits into a privileged **sensor** and a pure **pipeline**:
//!
//! - [`sensor`] loads the kernel programs (`monitor-ebpf`), reads their ring
//!   buffer and produces [`observation::Observation`]s, adding process
//!   identity from `/proc` ([`identity`]).
//! - [`pipeline`] turns observations into [`event::Event`]s: per-stream
//!   [`framing`], [`jsonrpc`] decoding, [`mcp`] method knowledge and
//!   [`session`]s, and [`detect`]ion (credential leaks, tool integrity,
//!   prompt injection, tool chaining) turning messages into alerts. It does
//!   no I/O, so [`record`]ings of a live run replay through it without root
//!   and give the same events and alerts.
//! - [`agent`] wires them together with [`metrics`] and [`output`].
pub mod agent;
pub mod buffer_budget;
pub mod clock;
pub mod config;
pub mod deliver;
pub mod detect;
pub mod event;
pub mod framing;
pub mod glob;
pub mod http;
pub mod identity;
pub mod jsonrpc;
pub mod mcp;
pub mod metrics;
pub mod observation;
pub mod output;
pub mod pipeline;
pub mod record;
pub mod redact;
pub mod relook;
pub mod sensor;
pub mod session;
pub mod state_dir;
