//! Tool definitions per server program, with word-level differences
//! between versions.

use std::fmt::Write as _;

use serde_json::Value;

use super::{cut, esc};
use crate::model::{AlertView, Investigation};

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

pub(super) fn render_definitions(h: &mut String, m: &Investigation) {
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
