//! The view as plain text: what `top` prints when its output is not a
//! terminal (a pipe, a file, `kubectl logs`), like `top -b`.

use std::fmt::Write as _;

use super::app::App;
use crate::model::Session;

/// `HH:MM:SS` of an RFC 3339 time (UTC, as the agent writes it).
pub fn clock(time: &str) -> &str {
    time.get(11..19).unwrap_or(time)
}

/// A byte count in short form.
pub fn bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n}"),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

/// One line naming a session.
pub fn session_line(s: &Session) -> String {
    format!(
        "{} → {}  ({}, {}, since {})",
        s.client.label(),
        s.server.label(),
        s.transport,
        s.key,
        clock(&s.first)
    )
}

/// A snapshot of what the overview shows, with each session's tools.
/// Control characters from the input (a tool named with an escape
/// sequence) are replaced: they would drive the reader's terminal.
pub fn snapshot(app: &App) -> String {
    snapshot_raw(app)
        .chars()
        .map(|c| if c.is_control() && c != '\n' { '\u{FFFD}' } else { c })
        .collect()
}

fn snapshot_raw(app: &App) -> String {
    let m = &app.model;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mcp-monitor top  {} sessions · {} messages · {} alerts · {} · {}",
        m.sessions.len(),
        m.counts.events,
        m.alerts.len(),
        app.filter_text(),
        app.sources
    );
    let sessions = app.sessions();
    let _ = writeln!(out, "\nSESSIONS ({})", sessions.len());
    for s in &sessions {
        let _ = writeln!(out, "  {}", session_line(s));
        for (role, p) in [("client", &s.client), ("server", &s.server)] {
            let id = p.identity();
            if !id.is_empty() {
                let _ = writeln!(out, "    {role}: {id}");
            }
        }
        let tools: Vec<String> = s
            .tools
            .iter()
            .filter(|(_, t)| t.calls > 0 && t.kind != "method")
            .map(|(name, t)| {
                let lat = t.latency_mean_ms().map(|l| format!(", {l:.1}ms")).unwrap_or_default();
                let err = if t.errors > 0 {
                    format!(", {} errors", t.errors)
                } else {
                    String::new()
                };
                format!("{name} ×{}{lat}{err}", t.calls)
            })
            .collect();
        let _ = writeln!(
            out,
            "    {} messages, {} bytes{}{}",
            s.message_count,
            bytes(s.bytes_to_server + s.bytes_to_client),
            if tools.is_empty() {
                String::new()
            } else {
                format!("; tools: {}", tools.join("; "))
            },
            match s.worst {
                Some(w) => format!("; {} alerts, worst {}", s.alerts.len(), w.as_str()),
                None => String::new(),
            }
        );
    }
    let alerts = app.alerts();
    let _ = writeln!(out, "\nALERTS ({}), newest first", alerts.len());
    for a in alerts {
        let _ = writeln!(
            out,
            "  {} {:<8} {} {}",
            clock(&a.time),
            a.severity.as_str(),
            a.rule,
            a.summary
        );
    }
    out
}
