//! `mcp-monitor report`: one self-contained HTML file of an investigation.
//!
//! No script, no font, no image, no address outside the file: a
//! Content-Security-Policy of `default-src 'none'` makes the browser refuse
//! any fetch, so the report opens the same on an air-gapped laptop and
//! cannot call home. Every string in it comes from the [`Investigation`]
//! (scrubbed) and is HTML-escaped here.

use std::fmt::Write as _;

use crate::graph::Graph;
use crate::model::{Investigation, Severity};

mod alerts;
mod definitions;
mod sessions;
mod svg;
#[cfg(test)]
mod tests;

pub use definitions::word_diff;
use sessions::Budget;

/// Longest payload shown per message; the rest is cut and said so.
const PAYLOAD_SHOWN: usize = 4096;
/// Payload text per report: past it, rows say the payload was left out, so
/// a day of traffic still makes a file a browser opens.
const PAYLOAD_BUDGET: usize = 16 << 20;

/// What the report says about where its input came from.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// Input files, as given.
    pub files: Vec<String>,
    /// When the report was made (RFC 3339).
    pub generated: String,
}

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

pub(super) fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

pub(super) fn sev_class(s: Option<Severity>) -> String {
    s.map(|s| format!(" sev-{}", s.as_str())).unwrap_or_default()
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header,section{max-width:1280px;margin:0 auto;padding:8px 24px}
h1{font-size:22px;margin:16px 0 4px}h2{font-size:18px;border-bottom:1px solid #d5d9e0;padding-bottom:4px;margin-top:28px}
h3{font-size:15px;margin:0 0 4px}
code,pre,.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}
pre{background:#fff;border:1px solid #e1e4ea;padding:8px;overflow:auto;max-height:360px;white-space:pre-wrap;word-break:break-all}
table{border-collapse:collapse;width:100%;background:#fff}td,th{border-bottom:1px solid #eceef2;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#eef0f4;font-weight:600}
.badge{display:inline-block;border-radius:3px;padding:0 6px;font-size:12px;font-weight:600;color:#fff;background:#7a8494}
.badge.sev-critical{background:#8e1b9c}.badge.sev-high{background:#c62828}.badge.sev-medium{background:#d98200}.badge.sev-low{background:#2f6fb5}.badge.sev-info{background:#7a8494}
.counts span{margin-right:14px}
article.alert{background:#fff;border:1px solid #e1e4ea;border-left:5px solid #7a8494;padding:8px 12px;margin:10px 0}
article.alert.sev-critical{border-left-color:#8e1b9c}article.alert.sev-high{border-left-color:#c62828}article.alert.sev-medium{border-left-color:#d98200}article.alert.sev-low{border-left-color:#2f6fb5}
article.alert:target,tr:target{outline:3px solid #ffb300}
.session{background:#fff;border:1px solid #e1e4ea;padding:8px 12px;margin:14px 0}
.muted{color:#6b7280}.c2s td.dir{color:#2f6fb5}.s2c td.dir{color:#2e7d32}tr.err td{background:#fff3f3}
svg text{font:12px system-ui,sans-serif;fill:#1d2430}svg text.detail{fill:#6b7280;font-size:11px}
.node rect{fill:#fff;stroke:#9aa3b2;stroke-width:1.2}.node.agent rect{fill:#eef4ff}.node.server rect{fill:#f1f8f1}
.node.sev-critical rect{stroke:#8e1b9c;stroke-width:3}.node.sev-high rect{stroke:#c62828;stroke-width:3}.node.sev-medium rect{stroke:#d98200;stroke-width:2.5}
.edge{fill:none;stroke:#9aa3b2;stroke-opacity:.75}.alert-edge path{fill:none;stroke:#c62828;stroke-width:2.5;stroke-dasharray:6 3}
.alert-edge.sev-critical path{stroke:#8e1b9c}.alert-edge:hover path{stroke-width:4}
del{background:#ffe0e0;text-decoration:line-through}ins{background:#dcf5dc;text-decoration:none}
.strip .c2s{fill:#2f6fb5}.strip .s2c{fill:#2e7d32}.strip .hit{fill:#c62828}
"#;

/// Renders the report.
pub fn render(m: &Investigation, src: &Sources) -> String {
    let mut h = String::with_capacity(1 << 16);
    let graph = Graph::of(m);
    let sessions = m.sessions_in_order();
    let session_ids: std::collections::HashMap<&str, usize> =
        sessions.iter().enumerate().map(|(i, s)| (s.key.as_str(), i)).collect();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>MCP investigation report</title><style>{STYLE}</style></head><body>\n"
    );
    // Header and counts.
    let _ = write!(
        h,
        "<header><h1>MCP investigation report</h1><p class=\"muted\">Made by mcp-monitor {} on {} from {}: \
         {} events, {} alerts, {} sessions{}.</p><p class=\"counts\" id=\"counts\">",
        env!("CARGO_PKG_VERSION"),
        esc(&src.generated),
        esc(&src.files.join(", ")),
        m.counts.events,
        m.counts.alerts,
        m.sessions.len(),
        if m.counts.unreadable > 0 {
            format!(", {} unreadable lines skipped", m.counts.unreadable)
        } else {
            String::new()
        }
    );
    for s in crate::model::SEVERITIES.iter().rev() {
        let n = m.alerts.iter().filter(|a| a.severity == *s).count();
        let _ = write!(
            h,
            "<span><span class=\"badge sev-{0}\">{0}</span> {n}</span>",
            s.as_str()
        );
    }
    h.push_str("</p><p><a href=\"#graph\">Graph</a> · <a href=\"#alerts\">Alerts</a> · <a href=\"#sessions\">Sessions</a> · <a href=\"#tools\">Tool definitions</a></p></header>\n");

    svg::render_graph(&mut h, &graph, m);
    alerts::render_alerts(&mut h, m, &session_ids);
    h.push_str("<section id=\"sessions\"><h2>Sessions</h2>\n");
    if sessions.is_empty() {
        h.push_str("<p class=\"muted\">No events in the input.</p>");
    }
    let mut budget = Budget {
        left: PAYLOAD_BUDGET,
        noted: false,
    };
    for (i, s) in sessions.iter().enumerate() {
        sessions::render_session(&mut h, m, s, i, &mut budget);
    }
    h.push_str("</section>\n");
    definitions::render_definitions(&mut h, m);
    h.push_str("</body></html>\n");
    h
}

/// "request tools/call read_file (id 3)": a message as a link names it.
pub(super) fn msg_label(kind: &str, method: Option<&str>, tool: Option<&str>, id: Option<&str>) -> String {
    let mut s = kind.to_owned();
    if let Some(m) = method {
        s.push(' ');
        s.push_str(m);
    }
    if let Some(t) = tool {
        s.push(' ');
        s.push_str(t);
    }
    if let Some(i) = id {
        let _ = write!(s, " (id {i})");
    }
    s
}
