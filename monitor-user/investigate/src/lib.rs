//! What an agent did, for people: `mcp-monitor top` (a live terminal view)
//! and `mcp-monitor report` (one self-contained HTML file).
//!
//! Both read the agent's own outputs, the events and alerts JSON lines, so
//! they work the same on a live agent, on files copied off a node, and on
//! the output of `mcp-monitor replay` over a recording.
//!
//! - [`model`]: the lines folded into sessions, tools and alerts, bounded,
//!   every kept string scrubbed of credentials once more;
//! - [`input`]: reading and following the files (`tail -F`);
//! - [`report`]: the HTML report, with its [`graph`];
//! - [`top`]: the terminal view, and its plain-text form.

pub mod graph;
pub mod input;
pub mod model;
pub mod report;
pub mod top;
