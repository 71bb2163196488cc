//! Drawing the view with ratatui. Fits 80x24; wider terminals get wider
//! columns.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use super::app::{App, Screen};
use super::text::{bytes, clock, session_line};
use crate::model::{Direction, Severity};

/// The colour of a severity: the same in every pane.
pub fn severity_style(s: Severity) -> Style {
    match s {
        Severity::Critical => Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD),
        Severity::High => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Severity::Medium => Style::new().fg(Color::Yellow),
        Severity::Low => Style::new().fg(Color::Blue),
        Severity::Info => Style::new().fg(Color::Gray),
    }
}

const KEYS: &str = "↑↓ select  ⏎ open  esc back  s severity  f server  ? help  q quit";

/// Draws the current screen.
pub fn draw(f: &mut Frame, app: &App) {
    let [head, body, foot] =
        Layout::vertical([Constraint::Length(2), Constraint::Min(5), Constraint::Length(1)]).areas(f.area());
    header(f, app, head);
    match &app.screen {
        Screen::Overview => overview(f, app, body),
        Screen::Session(key) => session(f, app, key, body),
        Screen::Help => help(f, body),
    }
    f.render_widget(Paragraph::new(KEYS).style(Style::new().fg(Color::DarkGray)), foot);
}

fn header(f: &mut Frame, app: &App, area: Rect) {
    let m = &app.model;
    let mut spans = vec![
        Span::styled("mcp-monitor top", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!("  {} sessions · {} msgs ·", m.sessions.len(), m.counts.events)),
    ];
    for s in crate::model::SEVERITIES.iter().rev() {
        let n = m.alerts.iter().filter(|a| a.severity == *s).count();
        spans.push(Span::raw(" "));
        let short = match s {
            Severity::Critical => "crit",
            Severity::Medium => "med",
            other => other.as_str(),
        };
        spans.push(Span::styled(format!("{n} {short}"), severity_style(*s)));
    }
    let second = Line::from(vec![
        Span::styled(app.filter_text(), Style::new().fg(Color::Cyan)),
        Span::styled(format!("  {}", app.sources), Style::new().fg(Color::DarkGray)),
    ]);
    f.render_widget(Paragraph::new(vec![Line::from(spans), second]), area);
}

fn overview(f: &mut Frame, app: &App, area: Rect) {
    let alerts_h = (area.height / 3).clamp(4, 10);
    let [top, bottom] = Layout::vertical([Constraint::Min(3), Constraint::Length(alerts_h)]).areas(area);
    let sessions = app.sessions();
    let rows: Vec<Row> = sessions
        .iter()
        .map(|s| {
            let calls: u64 = s.tools.values().filter(|t| t.kind != "method").map(|t| t.calls).sum();
            let alert = match s.worst {
                Some(w) => Cell::from(Span::styled(
                    format!("{} {}", s.alerts.len(), w.as_str()),
                    severity_style(w),
                )),
                None => Cell::from(""),
            };
            // Two lines: who talks to whom, then under which identity.
            let who = Text::from(vec![
                Line::from(format!("{} → {}", s.client.label(), s.server.label())),
                Line::from(Span::styled(
                    format!("  {}", s.client.identity()),
                    Style::new().fg(Color::Cyan),
                )),
            ]);
            Row::new(vec![
                Cell::from(who),
                Cell::from(s.transport.clone()),
                Cell::from(calls.to_string()),
                Cell::from(bytes(s.bytes_to_server + s.bytes_to_client)),
                alert,
            ])
            .height(2)
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Fill(1),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(6),
            Constraint::Length(11),
        ],
    )
    .header(
        Row::new(["CLIENT → SERVER / CLIENT IDENTITY", "VIA", "CALLS", "BYTES", "ALERTS"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .block(
        Block::new()
            .borders(Borders::TOP)
            .title(format!(" Sessions ({}) ", sessions.len())),
    );
    let mut state = TableState::new().with_selected((!sessions.is_empty()).then_some(app.selected));
    f.render_stateful_widget(table, top, &mut state);

    let alerts = app.alerts();
    let lines: Vec<Line> = alerts
        .iter()
        .take(bottom.height.saturating_sub(1) as usize)
        .map(|a| {
            Line::from(vec![
                Span::raw(format!("{} ", clock(&a.time))),
                Span::styled(format!("{:<8} ", a.severity.as_str()), severity_style(a.severity)),
                Span::styled(format!("{} ", a.rule), Style::new().add_modifier(Modifier::BOLD)),
                Span::raw(a.summary.clone()),
            ])
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(
            Block::new()
                .borders(Borders::TOP)
                .title(format!(" Alerts ({}) ", alerts.len())),
        ),
        bottom,
    );
}

fn session(f: &mut Frame, app: &App, key: &str, area: Rect) {
    let Some(s) = app.model.sessions.get(key) else {
        f.render_widget(
            Paragraph::new("This session is no longer held (see --help: limits)."),
            area,
        );
        return;
    };
    let tools: Vec<_> = s.tools.iter().filter(|(_, t)| t.calls > 0 || t.answered > 0).collect();
    let tools_h = (tools.len() as u16 + 2).min(area.height / 3).max(3);
    let [who, tools_area, calls_area] =
        Layout::vertical([Constraint::Length(5), Constraint::Length(tools_h), Constraint::Min(3)]).areas(area);
    let party = |role: &str, p: &crate::model::Party| {
        Line::from(vec![
            Span::styled(format!("{role:<7}"), Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!("{}  ", p.label())),
            Span::styled(p.identity(), Style::new().fg(Color::Cyan)),
        ])
    };
    let mut lines = vec![
        Line::from(Span::styled(session_line(s), Style::new().add_modifier(Modifier::BOLD))),
        party("client", &s.client),
        party("server", &s.server),
    ];
    if let Some(c) = s.server.cmdline.as_deref() {
        lines.push(Line::from(Span::styled(
            format!("        {c}"),
            Style::new().fg(Color::DarkGray),
        )));
    }
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), who);

    let rows: Vec<Row> = tools
        .iter()
        .map(|(name, t)| {
            Row::new(vec![
                name.to_string(),
                t.calls.to_string(),
                t.errors.to_string(),
                t.latency_mean_ms().map(|l| format!("{l:.1}ms")).unwrap_or_default(),
                if t.answered > 0 {
                    format!("{:.1}ms", t.latency_max_ms)
                } else {
                    String::new()
                },
                bytes(t.bytes),
            ])
        })
        .collect();
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Length(6),
                Constraint::Length(4),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(7),
            ],
        )
        .header(
            Row::new(["TOOL", "CALLS", "ERR", "MEAN", "MAX", "BYTES"]).style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .block(Block::new().borders(Borders::TOP).title(" Tools ")),
        tools_area,
    );

    let n = calls_area.height.saturating_sub(1) as usize;
    let lines: Vec<Line> = s
        .messages
        .iter()
        .rev()
        .take(n)
        .map(|m| {
            let mut spans = vec![
                Span::raw(format!("{} ", clock(&m.time))),
                Span::styled(
                    format!("{} ", m.direction.arrow()),
                    Style::new().fg(if m.direction == Direction::ClientToServer {
                        Color::Blue
                    } else {
                        Color::Green
                    }),
                ),
                Span::raw(format!(
                    "{:<12} {} {}",
                    m.kind,
                    m.method.as_deref().unwrap_or(""),
                    m.tool.as_deref().unwrap_or("")
                )),
            ];
            if let Some(l) = m.latency_ms {
                spans.push(Span::styled(format!("  {l:.1}ms"), Style::new().fg(Color::DarkGray)));
            }
            for a in m.alerts.iter().filter_map(|&i| app.model.alert(i)) {
                spans.push(Span::styled(format!("  ▲ {}", a.rule), severity_style(a.severity)));
            }
            Line::from(spans)
        })
        .collect();
    let title = format!(
        " Calls, newest first ({} messages, {} alerts) ",
        s.message_count,
        s.alerts.len()
    );
    let mut alert_lines: Vec<Line> = s
        .alerts
        .iter()
        .rev()
        .filter_map(|&i| app.model.alert(i))
        .filter(|a| app.min_severity.is_none_or(|m| a.severity >= m))
        .take(3)
        .map(|a| {
            Line::from(vec![
                Span::styled(format!("▲ {:<8} ", a.severity.as_str()), severity_style(a.severity)),
                Span::raw(format!("{} {}", a.rule, a.summary)),
            ])
        })
        .collect();
    alert_lines.extend(lines);
    f.render_widget(
        Paragraph::new(alert_lines).block(Block::new().borders(Borders::TOP).title(title)),
        calls_area,
    );
}

fn help(f: &mut Frame, area: Rect) {
    let text = "\
↑/k ↓/j   move the selection
Enter     open the selected session: identity, tools, calls, alerts
Esc       back to the overview
s         minimum severity: all → low → medium → high → critical → all
          (sessions without such an alert are hidden too)
f         server: all → each server in turn → all
?         this help
q         quit

Sessions are listed most recently active first. The view reads the
agent's events and alerts files as they grow (rotation included).";
    f.render_widget(
        Paragraph::new(text).block(Block::new().borders(Borders::TOP).title(" Keys ")),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Investigation, Limits};
    use crate::top::app::Key;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use serde_json::json;

    fn screen(app: &App) -> String {
        let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
        t.draw(|f| draw(f, app)).unwrap();
        let buf = t.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn fits_80x24_and_drills_into_a_session() {
        let mut m = Investigation::new(Limits::LIVE, false);
        for (i, t) in ["2026-01-01T10:00:01.000Z", "2026-01-01T10:00:01.004Z"]
            .iter()
            .enumerate()
        {
            m.ingest(
                json!({"time": t, "direction": if i == 0 {"client_to_server"} else {"server_to_client"},
                "type": if i == 0 {"request"} else {"response"}, "transport": "stdio",
                "method": "tools/call", "tool": "read_text_file", "id": 1, "session": "s1", "bytes": 120,
                "latency_ms": if i == 1 { json!(4.0) } else { json!(null) },
                "server": {"pid": 20, "name": "secure-filesystem-server", "cmdline": ["node", "fs.js", "/srv"]},
                "client": {"pid": 10, "name": "claude-code", "user": "alice"}}),
            );
        }
        m.ingest(
            json!({"id": "a", "time": "2026-01-01T10:00:01.004Z", "rule": "credential.exposure",
            "severity": "high", "summary": "1 credential (github-pat) returned", "session": "s1"}),
        );
        let mut app = App::new(m, "events.jsonl".into());
        let s = screen(&app);
        assert!(s.contains("claude-code [10] → secure-filesystem-server [20]"), "{s}");
        assert!(s.contains("user alice"), "{s}");
        assert!(s.contains("10:00:01 high     credential.exposure"), "{s}");
        assert!(s.contains("0 crit 1 high 0 med 0 low 0 info"), "{s}");
        app.key(Key::Enter);
        let s = screen(&app);
        assert!(s.contains("read_text_file     "), "{s}");
        assert!(s.contains("4.0ms"), "{s}");
        assert!(s.contains("node fs.js /srv"), "{s}");
        assert!(s.contains("▲ high"), "{s}");
    }
}
