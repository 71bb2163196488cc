//! mcp-monitor: a host-level monitor for MCP (Model Context Protocol)
//! traffic, captured from the kernel with eBPF.
//!
//! Two crates, and Cargo keeps the direction between them:
//!
//! - **`mcp-monitor-pipeline`** (`monitor-user/pipeline`) is the pure part:
//!   observations in; events, alerts and metrics out, with no I/O, so
//!   recordings of a live run replay through it without root and give the
//!   same events and alerts. Its modules are re-exported here under their
//!   own names ([`pipeline`], [`framing`], [`detect`], ...).
//! - **this crate** is the agent, everything that touches the system:
//!   [`sensor`] loads the kernel programs (`monitor-ebpf`), reads their ring
//!   buffer and produces observations, adding process identity from `/proc`
//!   ([`sensor::procfs`]); [`pod_watch`] follows the node's pods; [`agent`]
//!   wires them to the pipeline and sends what comes out to [`output`] and
//!   [`deliver`]y, serves [`metrics_endpoint`], keeps [`state_dir`], and
//!   reads [`config`].
pub mod agent;
pub mod boot_clock;
pub mod config;
pub mod deliver;
pub mod metrics_endpoint;
pub mod output;
pub mod pod_watch;
pub mod sensor;
pub mod state_dir;

pub use mcp_monitor_pipeline::{
    btf, buffer_budget, clock, control, detect, event, framing, glob, http, identity, jsonrpc, mcp, metrics,
    observation, pipeline, record, redact, relook, ring_record, session,
};
