//! The graph of agents, servers and tools, drawn as SVG.

use std::fmt::Write as _;

use super::{cut, esc, sev_class};
use crate::graph::{Graph, Kind};
use crate::model::Investigation;

const NODE_W: f64 = 270.0;
const NODE_H: f64 = 40.0;
const ROW: f64 = 52.0;
const COL_X: [f64; 3] = [10.0, 380.0, 750.0];

pub(super) fn render_graph(h: &mut String, g: &Graph, m: &Investigation) {
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
