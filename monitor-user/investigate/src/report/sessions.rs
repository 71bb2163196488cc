//! A timeline per session: both ends, calls per tool, the time strip and
//! every message row.

use std::fmt::Write as _;

use super::{esc, msg_label, sev_class, PAYLOAD_SHOWN};
use crate::model::{Direction, Investigation, Message, Session};

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
pub(super) struct Budget {
    pub(super) left: usize,
    pub(super) noted: bool,
}

pub(super) fn render_session(h: &mut String, m: &Investigation, s: &Session, n: usize, budget: &mut Budget) {
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
