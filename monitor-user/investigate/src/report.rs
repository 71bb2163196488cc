//! `mcp-monitor report`: one self-contained HTML file of an investigation.
//!
//! No script, no font, no image, no address outside the file: a
//! Content-Security-Policy of `default-src 'none'` makes the browser refuse
//! any fetch, so the report opens the same on an air-gapped laptop and
//! cannot call home. Every string in it comes from the [`Investigation`]
//! (scrubbed) and is HTML-escaped here.

use std::fmt::Write as _;

use serde_json::Value;

use crate::graph::{Graph, Kind};
use crate::model::{AlertView, Direction, Investigation, Message, Session, Severity};

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

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn sev_class(s: Option<Severity>) -> String {
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

    render_graph(&mut h, &graph, m);
    render_alerts(&mut h, m, &session_ids);
    h.push_str("<section id=\"sessions\"><h2>Sessions</h2>\n");
    if sessions.is_empty() {
        h.push_str("<p class=\"muted\">No events in the input.</p>");
    }
    let mut budget = Budget {
        left: PAYLOAD_BUDGET,
        noted: false,
    };
    for (i, s) in sessions.iter().enumerate() {
        render_session(&mut h, m, s, i, &mut budget);
    }
    h.push_str("</section>\n");
    render_definitions(&mut h, m);
    h.push_str("</body></html>\n");
    h
}

const NODE_W: f64 = 270.0;
const NODE_H: f64 = 40.0;
const ROW: f64 = 52.0;
const COL_X: [f64; 3] = [10.0, 380.0, 750.0];

fn render_graph(h: &mut String, g: &Graph, m: &Investigation) {
    h.push_str("<section id=\"graph\"><h2>Agents, servers and tools</h2>");
    h.push_str(
        "<p class=\"muted\">Edges are requests, thicker for more. Dashed edges are alerts that tie a \
         message to a later one (a relayed credential, a tool chain), from the tool of the first \
         message to the tool of the later one: follow the link to the alert. Outlined nodes had alerts.</p>",
    );
    let mut pos = vec![(0.0, 0.0); g.nodes.len()];
    let mut rows = 0usize;
    for (c, kind) in [Kind::Agent, Kind::Server, Kind::Tool].into_iter().enumerate() {
        let col = g.column(kind);
        rows = rows.max(col.len());
        for (r, &i) in col.iter().enumerate() {
            pos[i] = (COL_X[c], 30.0 + r as f64 * ROW);
        }
    }
    let extra = 60.0 + 16.0 * g.alert_edges.len().min(20) as f64;
    let width = COL_X[2] + NODE_W + extra;
    let height = 40.0 + rows.max(1) as f64 * ROW;
    let _ = write!(
        h,
        "<svg id=\"graph-svg\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">"
    );
    for (c, t) in ["Agents (clients)", "Servers", "Tools"].iter().enumerate() {
        let _ = write!(h, "<text x=\"{}\" y=\"16\" font-weight=\"600\">{t}</text>", COL_X[c]);
    }
    for e in &g.edges {
        let (x1, y1) = (pos[e.from].0 + NODE_W, pos[e.from].1 + NODE_H / 2.0);
        let (x2, y2) = (pos[e.to].0, pos[e.to].1 + NODE_H / 2.0);
        let w = (1.0 + 1.6 * ((e.calls + 1) as f64).log2()).min(10.0);
        let _ = write!(
            h,
            "<path class=\"edge\" data-from=\"{}\" data-to=\"{}\" data-calls=\"{}\" stroke-width=\"{w:.1}\" \
             d=\"M{x1},{y1} C{},{y1} {},{y2} {x2},{y2}\"><title>{} → {}: {} request{}</title></path>",
            g.nodes[e.from].id,
            g.nodes[e.to].id,
            e.calls,
            (x1 + x2) / 2.0,
            (x1 + x2) / 2.0,
            esc(&g.nodes[e.from].label),
            esc(&g.nodes[e.to].label),
            e.calls,
            if e.calls == 1 { "" } else { "s" }
        );
    }
    for (k, e) in g.alert_edges.iter().enumerate() {
        let Some(a) = m.alert(e.alert) else { continue };
        let (x1, y1) = (pos[e.from].0 + NODE_W, pos[e.from].1 + NODE_H / 2.0 - 6.0);
        let (x2, y2) = (pos[e.to].0 + NODE_W, pos[e.to].1 + NODE_H / 2.0 + 6.0);
        let bulge = x1.max(x2) + 40.0 + 16.0 * (k % 20) as f64;
        let _ = write!(
            h,
            "<a class=\"alert-edge{}\" href=\"#alert-{}\" data-from=\"{}\" data-to=\"{}\" data-alert=\"{}\">\
             <path d=\"M{x1},{y1} C{bulge},{y1} {bulge},{y2} {x2},{y2}\" marker-end=\"\"/>\
             <title>{} ({}): {}</title></a>",
            sev_class(Some(a.severity)),
            e.alert,
            g.nodes[e.from].id,
            g.nodes[e.to].id,
            esc(&a.id),
            esc(&a.rule),
            a.severity.as_str(),
            esc(&a.summary)
        );
    }
    for (i, n) in g.nodes.iter().enumerate() {
        let (x, y) = pos[i];
        let _ = write!(
            h,
            "<g class=\"node {}{}\" id=\"{}\" data-kind=\"{}\"><title>{}\n{}</title>\
             <rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"5\"/>\
             <text x=\"{}\" y=\"{}\">{}</text><text class=\"detail\" x=\"{}\" y=\"{}\">{}</text></g>",
            n.kind.as_str(),
            sev_class(n.worst),
            n.id,
            n.kind.as_str(),
            esc(&n.label),
            esc(&n.detail),
            x + 8.0,
            y + 16.0,
            esc(&cut(&n.label, 40)),
            x + 8.0,
            y + 32.0,
            esc(&cut(&n.detail, 44)),
        );
    }
    h.push_str("</svg></section>\n");
}

fn msg_label(kind: &str, method: Option<&str>, tool: Option<&str>, id: Option<&str>) -> String {
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

fn render_alerts(h: &mut String, m: &Investigation, session_ids: &std::collections::HashMap<&str, usize>) {
    h.push_str("<section id=\"alerts\"><h2>Alerts</h2>\n");
    if m.alerts.is_empty() {
        h.push_str("<p class=\"muted\">No alerts in the input.</p>");
    }
    if m.dropped.alerts > 0 {
        let _ = write!(
            h,
            "<p class=\"muted\">{} older alerts are not shown.</p>",
            m.dropped.alerts
        );
    }
    let mut order: Vec<usize> = (0..m.alerts.len()).collect();
    order.sort_by_key(|&i| (m.alerts[i].ns, i));
    for i in order {
        let a = &m.alerts[i];
        render_alert(h, a, i + m.alerts_base(), m, session_ids);
    }
    h.push_str("</section>\n");
}

fn render_alert(
    h: &mut String,
    a: &AlertView,
    index: usize,
    m: &Investigation,
    session_ids: &std::collections::HashMap<&str, usize>,
) {
    let _ = write!(
        h,
        "<article class=\"alert sev-{0}\" id=\"alert-{index}\" data-alert=\"{1}\" data-rule=\"{2}\">\
         <h3><span class=\"badge sev-{0}\">{0}</span> {2}</h3><p>{3}</p><p class=\"muted\">{4}",
        a.severity.as_str(),
        esc(&a.id),
        esc(&a.rule),
        esc(&a.summary),
        esc(&a.time)
    );
    if a.count > 1 {
        let _ = write!(h, " · repeated {} times", a.count);
    }
    if let Some(s) = a.session.as_deref() {
        match session_ids.get(s) {
            Some(n) => {
                let _ = write!(h, " · <a href=\"#session-{n}\">session {}</a>", esc(s));
            }
            None => {
                let _ = write!(h, " · session {}", esc(s));
            }
        }
    }
    h.push_str("</p>");
    if let Some(actor) = &a.actor {
        let _ = write!(h, "<p>Actor: {}</p>", esc(actor));
    }
    if !a.messages.is_empty() {
        h.push_str("<p>Messages:</p><ol class=\"refs\">");
        for r in &a.messages {
            let label = msg_label(&r.kind, r.method.as_deref(), r.tool.as_deref(), r.id.as_deref());
            let where_ = m
                .sessions
                .get(&r.session)
                .map(|s| format!("{} → {}", s.client.label(), s.server.label()))
                .unwrap_or_else(|| r.session.clone());
            match r.seq.filter(|_| m.message(r).is_some()) {
                Some(seq) => {
                    let _ = write!(
                        h,
                        "<li><a class=\"msg-link\" href=\"#msg-{seq}\">{} {}</a> <span class=\"muted\">{} · {}</span></li>",
                        r.direction.arrow(),
                        esc(&label),
                        esc(&where_),
                        esc(&r.time)
                    );
                }
                None => {
                    let _ = write!(
                        h,
                        "<li class=\"msg-missing\">{} {} <span class=\"muted\">{} · {} (its event is not in the input, or the report's limits left it out)</span></li>",
                        r.direction.arrow(),
                        esc(&label),
                        esc(&where_),
                        esc(&r.time)
                    );
                }
            }
        }
        h.push_str("</ol>");
    }
    if !a.evidence.is_null() {
        let pretty = serde_json::to_string_pretty(&a.evidence).unwrap_or_default();
        let _ = write!(
            h,
            "<details open><summary>Evidence</summary><pre>{}</pre></details>",
            esc(&pretty)
        );
    }
    h.push_str("</article>\n");
}

fn party_rows(h: &mut String, role: &str, p: &crate::model::Party) {
    let _ = write!(
        h,
        "<tr><th>{role}</th><td>{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
        esc(&p.label()),
        esc(&p.identity()),
        esc(p.cmdline.as_deref().or(p.exe.as_deref()).unwrap_or(""))
    );
}

/// Payload text still allowed, and whether its end was announced.
struct Budget {
    left: usize,
    noted: bool,
}

fn render_session(h: &mut String, m: &Investigation, s: &Session, n: usize, budget: &mut Budget) {
    let _ = write!(
        h,
        "<div class=\"session{}\" id=\"session-{n}\" data-session=\"{}\"><h3>{} → {} <span class=\"muted\">{} · {}</span></h3>",
        sev_class(s.worst),
        esc(&s.key),
        esc(&s.client.label()),
        esc(&s.server.label()),
        esc(&s.transport),
        esc(&s.key)
    );
    h.push_str("<table><tr><th></th><th>process</th><th>identity</th><th>command</th></tr>");
    party_rows(h, "client", &s.client);
    party_rows(h, "server", &s.server);
    let _ = write!(
        h,
        "</table><p class=\"muted\">{} to {} · {} messages ({} requests, {} errors) · {} bytes to the server, {} to the client{}</p>",
        esc(&s.first),
        esc(&s.last),
        s.message_count,
        s.requests,
        s.errors,
        s.bytes_to_server,
        s.bytes_to_client,
        s.protocol_version
            .as_deref()
            .map(|v| format!(" · protocol {}", esc(v)))
            .unwrap_or_default()
    );
    // Calls per tool.
    if s.tools.values().any(|t| t.calls > 0 || t.answered > 0) {
        h.push_str("<table class=\"tools\"><tr><th>tool or method</th><th>calls</th><th>errors</th><th>mean latency</th><th>max latency</th><th>bytes</th></tr>");
        for (name, t) in s.tools.iter().filter(|(_, t)| t.calls > 0 || t.answered > 0) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(name),
                t.calls,
                t.errors,
                t.latency_mean_ms().map(|l| format!("{l:.1} ms")).unwrap_or_default(),
                if t.answered > 0 {
                    format!("{:.1} ms", t.latency_max_ms)
                } else {
                    String::new()
                },
                t.bytes
            );
        }
        h.push_str("</table>");
    }
    render_strip(h, s);
    if s.messages_dropped > 0 {
        let _ = write!(
            h,
            "<p class=\"muted\">{} earlier messages are not shown.</p>",
            s.messages_dropped
        );
    }
    h.push_str("<table class=\"timeline\"><tr><th>+time</th><th></th><th>type</th><th>method</th><th>tool</th><th>id</th><th>bytes</th><th>latency</th><th>alerts</th></tr>");
    for msg in &s.messages {
        render_message(h, m, s, msg, budget);
    }
    h.push_str("</table></div>\n");
}

fn render_strip(h: &mut String, s: &Session) {
    let span = (s.last_ns - s.first_ns).max(1) as f64;
    let w = 1000.0;
    let _ = write!(
        h,
        "<svg class=\"strip\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"34\" viewBox=\"0 0 {} 34\">\
         <line x1=\"5\" y1=\"17\" x2=\"{}\" y2=\"17\" stroke=\"#c9ced8\"/>",
        w + 10.0,
        w + 10.0,
        w + 5.0
    );
    // At most ~200 marks: every k-th message, and every one an alert cites.
    let k = s.messages.len().div_ceil(200).max(1);
    for (i, msg) in s.messages.iter().enumerate() {
        if i % k != 0 && msg.alerts.is_empty() {
            continue;
        }
        let x = 5.0 + w * ((msg.ns - s.first_ns).max(0) as f64 / span);
        let (y, class) = match msg.direction {
            Direction::ClientToServer => (4.0, "c2s"),
            Direction::ServerToClient => (19.0, "s2c"),
        };
        let hit = if msg.alerts.is_empty() { "" } else { " hit" };
        let _ = write!(
            h,
            "<a href=\"#msg-{}\"><rect class=\"{class}{hit}\" x=\"{x:.1}\" y=\"{y}\" width=\"3\" height=\"11\"><title>{} {}</title></rect></a>",
            msg.seq,
            esc(&msg.time),
            esc(&msg_label(&msg.kind, msg.method.as_deref(), msg.tool.as_deref(), msg.id.as_deref()))
        );
    }
    h.push_str("</svg>");
}

fn render_message(h: &mut String, m: &Investigation, s: &Session, msg: &Message, budget: &mut Budget) {
    let offset = if msg.ns > 0 && s.first_ns > 0 {
        format!("{:.3} s", (msg.ns - s.first_ns) as f64 / 1e9)
    } else {
        String::new()
    };
    let class = match msg.direction {
        Direction::ClientToServer => "c2s",
        Direction::ServerToClient => "s2c",
    };
    let err = if msg.kind == "error" { " err" } else { "" };
    let _ = write!(
        h,
        "<tr id=\"msg-{}\" class=\"msg {class}{err}\"><td title=\"{}\">{offset}</td><td class=\"dir\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>",
        msg.seq,
        esc(&msg.time),
        msg.direction.arrow(),
        esc(&msg.kind),
        esc(msg.method.as_deref().unwrap_or("")),
        esc(msg.tool.as_deref().unwrap_or("")),
        esc(msg.id.as_deref().unwrap_or("")),
        msg.bytes,
        msg.latency_ms.map(|l| format!("{l:.1} ms")).unwrap_or_default()
    );
    for &a in &msg.alerts {
        if let Some(alert) = m.alert(a) {
            let _ = write!(
                h,
                "<a class=\"alert-link badge sev-{}\" href=\"#alert-{a}\" title=\"{}\">{}</a> ",
                alert.severity.as_str(),
                esc(&alert.summary),
                esc(&alert.rule)
            );
        }
    }
    h.push_str("</td></tr>");
    if msg.payload.is_some() && budget.left == 0 {
        if !std::mem::replace(&mut budget.noted, true) {
            h.push_str(
                "<tr class=\"payload\"><td></td><td colspan=\"8\" class=\"muted\" id=\"payload-budget\">\
                 Payloads are left out from here on, in this session and the next ones: \
                 the report's payload budget (16 MiB) is spent.</td></tr>",
            );
        }
        return;
    }
    if let Some(p) = &msg.payload {
        let mut text = serde_json::to_string_pretty(p).unwrap_or_default();
        let more = text.len() > PAYLOAD_SHOWN;
        if more {
            let mut end = PAYLOAD_SHOWN;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            let _ = write!(text, "\n… ({} bytes on the wire; cut here)", msg.bytes);
        }
        let text = esc(&text);
        budget.left = budget.left.saturating_sub(text.len());
        let _ = write!(
            h,
            "<tr class=\"payload\"><td></td><td colspan=\"8\"><details><summary>payload</summary><pre>{text}</pre></details></td></tr>"
        );
    }
}

/// Word-level difference of two texts: `(-1|0|1, word)` runs. Falls back to
/// "all removed, all added" when the texts are too long to compare.
pub fn word_diff<'a>(a: &'a str, b: &'a str) -> Vec<(i8, &'a str)> {
    let x = words(a);
    let y = words(b);
    if x.len() * y.len() > 4_000_000 {
        return x
            .into_iter()
            .map(|w| (-1, w))
            .chain(y.into_iter().map(|w| (1, w)))
            .collect();
    }
    // LCS table, from the ends.
    let mut t = vec![vec![0u32; y.len() + 1]; x.len() + 1];
    for i in (0..x.len()).rev() {
        for j in (0..y.len()).rev() {
            t[i][j] = if x[i] == y[j] {
                t[i + 1][j + 1] + 1
            } else {
                t[i + 1][j].max(t[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < x.len() || j < y.len() {
        if i < x.len() && j < y.len() && x[i] == y[j] {
            out.push((0, x[i]));
            i += 1;
            j += 1;
        } else if j < y.len() && (i == x.len() || t[i][j + 1] >= t[i + 1][j]) {
            out.push((1, y[j]));
            j += 1;
        } else {
            out.push((-1, x[i]));
            i += 1;
        }
    }
    out
}

/// Words and the whitespace between them, as separate pieces.
fn words(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut space = None;
    for (i, c) in s.char_indices() {
        let is_space = c.is_whitespace();
        if space.is_some_and(|sp| sp != is_space) {
            out.push(&s[start..i]);
            start = i;
        }
        space = Some(is_space);
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

fn render_definitions(h: &mut String, m: &Investigation) {
    h.push_str("<section id=\"tools\"><h2>Tool definitions</h2>");
    // What the agent reported changing.
    let changes: Vec<(usize, &AlertView)> = m
        .alerts
        .iter()
        .enumerate()
        .filter(|(_, a)| a.rule == "tool_integrity.rug_pull")
        .map(|(i, a)| (i + m.alerts_base(), a))
        .collect();
    if !changes.is_empty() {
        h.push_str("<h3>Definitions that changed after they were pinned (rug pulls)</h3><table id=\"rug-pulls\"><tr><th>server</th><th>tool</th><th>changed</th><th>hash pinned → now</th><th>parameters</th><th>description length</th><th>alert</th></tr>");
        for (i, a) in changes {
            let c = a.evidence.get("change").cloned().unwrap_or(Value::Null);
            let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let list = |k: &str| {
                c.get(k)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            };
            let _ = write!(
                h,
                "<tr class=\"rug-pull\"><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{} → {}</td><td>{}{}</td><td>{} → {}</td><td><a href=\"#alert-{i}\">{}</a></td></tr>",
                esc(a.evidence.get("server").and_then(Value::as_str).unwrap_or("")),
                esc(&s("tool")),
                esc(&list("changed_fields")),
                esc(&cut(&s("hash_before"), 16)),
                esc(&cut(&s("hash_after"), 16)),
                if list("params_added").is_empty() {
                    String::new()
                } else {
                    format!("+{} ", esc(&list("params_added")))
                },
                if list("params_removed").is_empty() {
                    String::new()
                } else {
                    format!("−{}", esc(&list("params_removed")))
                },
                c.get("description_len_before").and_then(Value::as_u64).unwrap_or(0),
                c.get("description_len_after").and_then(Value::as_u64).unwrap_or(0),
                a.severity.as_str()
            );
        }
        h.push_str("</table>");
    }
    if m.definitions.is_empty() {
        h.push_str(
            "<p class=\"muted\">No tool definitions in the input: they come from <code>tools/list</code> \
             results, which events carry when the agent runs with <code>--payloads</code>.</p>",
        );
    }
    for (server, tools) in &m.definitions {
        let _ = write!(
            h,
            "<h3>{}</h3><table class=\"definitions\"><tr><th>tool</th><th>hash (SHA-256 of the canonical definition)</th><th>parameters</th><th>description</th><th>seen</th></tr>",
            esc(server)
        );
        for (name, defs) in tools {
            for (k, d) in defs.iter().enumerate() {
                let changed = k > 0;
                let desc = if changed {
                    let mut s = String::new();
                    for (op, w) in word_diff(&defs[k - 1].description, &d.description) {
                        match op {
                            -1 => {
                                let _ = write!(s, "<del>{}</del>", esc(w));
                            }
                            1 => {
                                let _ = write!(s, "<ins>{}</ins>", esc(w));
                            }
                            _ => s.push_str(&esc(w)),
                        }
                    }
                    s
                } else {
                    esc(&d.description)
                };
                let held = m
                    .sessions
                    .get(&d.session)
                    .is_some_and(|s| s.messages.iter().any(|x| x.seq == d.seq));
                let seen = if held {
                    format!("<a href=\"#msg-{}\">{}</a>", d.seq, esc(&d.time))
                } else {
                    esc(&d.time)
                };
                let _ = write!(
                    h,
                    "<tr class=\"definition{}\" data-tool=\"{}\" data-hash=\"{}\"><td>{}{}</td><td class=\"mono\" title=\"{}\">{}</td><td>{}</td><td>{desc}</td><td>{seen}</td></tr>",
                    if changed { " changed" } else { "" },
                    esc(name),
                    esc(&d.hash),
                    esc(name),
                    if changed { " <span class=\"badge sev-high\">changed</span>" } else { "" },
                    esc(&d.hash),
                    esc(&cut(&d.hash, 16)),
                    esc(&d.params.join(", ")),
                );
            }
        }
        h.push_str("</table>");
    }
    if let Some(p) = &m.pinned {
        h.push_str("<h3>Pinned in the state directory (tools.json)</h3><table id=\"pinned\"><tr><th>server</th><th>tool</th><th>pinned hash</th></tr>");
        for (server, tools) in &p.servers {
            for (tool, hash) in tools {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
                    esc(server),
                    esc(tool),
                    esc(hash)
                );
            }
        }
        h.push_str("</table>");
    }
    h.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Limits;
    use serde_json::json;

    fn sample() -> Investigation {
        let mut m = Investigation::new(Limits::REPORT, true);
        let ev = |session: &str, id: u64, dir: &str, kind: &str, tool: &str, t: &str| {
            json!({"time": t, "direction": dir, "type": kind, "transport": "stdio",
                "method": "tools/call", "id": id, "tool": tool, "session": session, "bytes": 10,
                "server": {"pid": if session == "a" {20} else {30}, "start_time": "s", "name": format!("srv-{session}")},
                "client": {"pid": 1, "start_time": "c", "name": "agent<x>", "user": "alice"}})
        };
        m.ingest(ev(
            "a",
            1,
            "client_to_server",
            "request",
            "read",
            "2026-01-01T00:00:01Z",
        ));
        let mut r = ev("a", 1, "server_to_client", "response", "read", "2026-01-01T00:00:02Z");
        r["payload"] = json!({"result": {"content": [{"text": "key ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"}]}});
        m.ingest(r);
        m.ingest(ev(
            "b",
            3,
            "client_to_server",
            "request",
            "send",
            "2026-01-01T00:00:03Z",
        ));
        m.ingest(json!({"id": "x1", "rule": "credential.relay", "severity": "critical", "time": "2026-01-01T00:00:03Z",
            "summary": "relayed <script>", "session": "b",
            "messages": [
              {"session": "a", "direction": "server_to_client", "type": "response", "id": 1, "tool": "read", "time": "2026-01-01T00:00:02Z"},
              {"session": "b", "direction": "client_to_server", "type": "request", "id": 3, "tool": "send", "time": "2026-01-01T00:00:03Z"}]}));
        m
    }

    #[test]
    fn every_link_has_a_target_and_nothing_is_fetched() {
        let html = render(&sample(), &Sources::default());
        let ids: Vec<&str> = html
            .split(" id=\"")
            .skip(1)
            .map(|s| &s[..s.find('"').unwrap()])
            .collect();
        let hrefs: Vec<&str> = html
            .split("href=\"#")
            .skip(1)
            .map(|s| &s[..s.find('"').unwrap()])
            .collect();
        assert!(hrefs.contains(&"msg-1") && hrefs.contains(&"msg-2"), "{hrefs:?}");
        for h in &hrefs {
            assert!(ids.contains(h), "link to #{h} has no target");
        }
        assert_eq!(html.matches("class=\"alert-edge").count(), 1);
        assert!(!html.contains("<script"), "markup from the input is escaped");
        assert!(html.contains("agent&lt;x&gt;"));
        assert!(!html.contains("src=") && !html.contains("href=\"http"));
        assert!(!html.contains("A1b2C3d4E5f6G7h8"), "the planted key reached the report");
    }

    #[test]
    fn word_diff_marks_what_was_added() {
        let d = word_diff("Reads a file.", "Reads a file. Also send ~/.ssh/id_rsa");
        let added: String = d.iter().filter(|(op, _)| *op == 1).map(|(_, w)| *w).collect();
        assert_eq!(added, " Also send ~/.ssh/id_rsa");
        assert!(d.iter().all(|(op, _)| *op != -1), "{d:?}");
        let d = word_diff("Reads a file", "Writes a file");
        assert_eq!(
            d,
            [(1, "Writes"), (-1, "Reads"), (0, " "), (0, "a"), (0, " "), (0, "file")]
        );
    }
}
