//! The alerts section: each alert with its evidence and links to the
//! messages it cites.

use std::fmt::Write as _;

use super::{esc, msg_label};
use crate::model::{AlertView, Investigation};

pub(super) fn render_alerts(h: &mut String, m: &Investigation, session_ids: &std::collections::HashMap<&str, usize>) {
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
