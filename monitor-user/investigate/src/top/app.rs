//! The state of the terminal view and what each key does: no terminal
//! here, so the keys are tested without one.

use crate::model::{AlertView, Investigation, Session, Severity};

/// Which screen is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Screen {
    /// Sessions and the latest alerts.
    Overview,
    /// One session's identity, tools, calls and alerts.
    Session(String),
    /// The key reference.
    Help,
}

/// A key, as the view understands it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// Move the selection up.
    Up,
    /// Move the selection down.
    Down,
    /// Open the selected session.
    Enter,
    /// Back to the overview.
    Back,
    /// Cycle the minimum alert severity shown.
    Severity,
    /// Cycle the server filter.
    Server,
    /// Show or hide the key reference.
    Help,
    /// Leave.
    Quit,
}

impl Key {
    /// The key a character stands for.
    pub fn from_char(c: char) -> Option<Key> {
        Some(match c {
            'k' => Key::Up,
            'j' => Key::Down,
            's' => Key::Severity,
            'f' => Key::Server,
            '?' | 'h' => Key::Help,
            'q' => Key::Quit,
            _ => return None,
        })
    }
}

/// The view's state over the model.
pub struct App {
    /// What the agent's output says.
    pub model: Investigation,
    /// Screen shown.
    pub screen: Screen,
    /// Selected row of the sessions table.
    pub selected: usize,
    /// Show only alerts (and sessions with alerts) at or above this.
    pub min_severity: Option<Severity>,
    /// Show only sessions with this server (its label).
    pub server: Option<String>,
    /// Where the lines come from, for the header.
    pub sources: String,
}

impl App {
    /// A view over `model`.
    pub fn new(model: Investigation, sources: String) -> App {
        App {
            model,
            screen: Screen::Overview,
            selected: 0,
            min_severity: None,
            server: None,
            sources,
        }
    }

    /// Sessions the filters let through, most recently active first.
    pub fn sessions(&self) -> Vec<&Session> {
        self.model
            .sessions_by_activity()
            .into_iter()
            .filter(|s| self.server.as_ref().is_none_or(|v| &s.server.label() == v))
            .filter(|s| self.min_severity.is_none_or(|min| s.worst.is_some_and(|w| w >= min)))
            .collect()
    }

    /// Alerts the filters let through, newest first.
    pub fn alerts(&self) -> Vec<&AlertView> {
        let server_sessions: Option<Vec<&str>> = self.server.as_ref().map(|v| {
            self.model
                .sessions
                .values()
                .filter(|s| &s.server.label() == v)
                .map(|s| s.key.as_str())
                .collect()
        });
        self.model
            .alerts
            .iter()
            .rev()
            .filter(|a| self.min_severity.is_none_or(|m| a.severity >= m))
            .filter(|a| {
                server_sessions.as_ref().is_none_or(|keys| {
                    a.session.as_deref().is_some_and(|s| keys.contains(&s))
                        || a.messages.iter().any(|r| keys.contains(&r.session.as_str()))
                })
            })
            .collect()
    }

    /// Server labels, sorted: what the server filter cycles through.
    pub fn servers(&self) -> Vec<String> {
        let mut v: Vec<String> = self.model.sessions.values().map(|s| s.server.label()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// The session the overview's selection points at.
    pub fn selected_session(&self) -> Option<&Session> {
        self.sessions().get(self.selected).copied()
    }

    /// Applies a key; false when the view should end.
    pub fn key(&mut self, k: Key) -> bool {
        match k {
            Key::Quit => return false,
            Key::Up => self.selected = self.selected.saturating_sub(1),
            Key::Down => self.selected += 1,
            Key::Enter => {
                if self.screen == Screen::Overview {
                    if let Some(s) = self.selected_session() {
                        self.screen = Screen::Session(s.key.clone());
                    }
                }
            }
            Key::Back => self.screen = Screen::Overview,
            Key::Help => {
                self.screen = if self.screen == Screen::Help {
                    Screen::Overview
                } else {
                    Screen::Help
                }
            }
            Key::Severity => {
                self.min_severity = match self.min_severity {
                    None => Some(Severity::Low),
                    Some(Severity::Critical) => None,
                    Some(s) => crate::model::SEVERITIES.iter().copied().find(|x| *x > s),
                };
                self.selected = 0;
            }
            Key::Server => {
                let servers = self.servers();
                self.server = match &self.server {
                    None => servers.first().cloned(),
                    Some(cur) => servers
                        .iter()
                        .position(|s| s == cur)
                        .and_then(|i| servers.get(i + 1))
                        .cloned(),
                };
                self.selected = 0;
            }
        }
        self.clamp();
        true
    }

    /// Keeps the selection on a row that exists.
    pub fn clamp(&mut self) {
        let n = self.sessions().len();
        if self.selected >= n {
            self.selected = n.saturating_sub(1);
        }
    }

    /// The filters in words, for the header.
    pub fn filter_text(&self) -> String {
        let sev = self
            .min_severity
            .map(|s| format!("severity ≥ {}", s.as_str()))
            .unwrap_or_else(|| "all severities".into());
        let server = self
            .server
            .as_ref()
            .map(|s| format!("server {s}"))
            .unwrap_or_else(|| "all servers".into());
        format!("{sev} · {server}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Limits;
    use serde_json::json;

    fn app() -> App {
        let mut m = Investigation::new(Limits::LIVE, false);
        for (session, server, sev) in [("a", "fs", "high"), ("b", "web", "low"), ("c", "fs", "")] {
            m.ingest(json!({"time": "T", "direction": "client_to_server", "type": "request",
                "method": "tools/call", "tool": "t", "id": 1, "session": session,
                "server": {"name": server}, "client": {"name": "agent"}}));
            if !sev.is_empty() {
                m.ingest(json!({"id": session, "rule": "r", "severity": sev, "session": session}));
            }
        }
        App::new(m, String::new())
    }

    #[test]
    fn severity_and_server_filters_cycle_and_narrow_both_panes() {
        let mut a = app();
        assert_eq!(a.sessions().len(), 3);
        assert!(a.key(Key::Severity));
        assert_eq!(a.min_severity, Some(Severity::Low));
        assert_eq!(a.sessions().len(), 2);
        a.key(Key::Severity);
        a.key(Key::Severity);
        assert_eq!(a.min_severity, Some(Severity::High));
        assert_eq!(a.sessions().iter().map(|s| s.key.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(a.alerts().len(), 1);
        a.key(Key::Severity);
        a.key(Key::Severity);
        assert_eq!(a.min_severity, None);
        a.key(Key::Server);
        assert_eq!(a.server.as_deref(), Some("fs"));
        assert_eq!(a.sessions().len(), 2);
        assert_eq!(a.alerts().len(), 1);
        a.key(Key::Server);
        assert_eq!(a.server.as_deref(), Some("web"));
        a.key(Key::Server);
        assert_eq!(a.server, None);
    }

    #[test]
    fn plain_text_never_carries_control_characters_from_the_input() {
        let mut a = app();
        a.model
            .ingest(json!({"time": "T", "direction": "client_to_server", "type": "request",
            "method": "tools/call", "tool": "x\u{1b}[2J\u{7}", "id": 1, "session": "evil",
            "server": {"name": "s\u{1b}]52;c;Zm9v\u{7}"}, "client": {"name": "agent"}}));
        a.model
            .ingest(json!({"id": "e", "rule": "r", "severity": "high", "summary": "\u{1b}[1A", "session": "evil"}));
        let text = crate::top::text::snapshot(&a);
        assert!(text.contains("x\u{FFFD}[2J"), "{text}");
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
    }

    #[test]
    fn enter_drills_into_the_selected_session_and_back_returns() {
        let mut a = app();
        // Most recent first: c, b, a.
        a.key(Key::Down);
        a.key(Key::Down);
        a.key(Key::Down);
        assert_eq!(a.selected, 2, "the selection stops at the last row");
        a.key(Key::Enter);
        assert_eq!(a.screen, Screen::Session("a".into()));
        a.key(Key::Back);
        assert_eq!(a.screen, Screen::Overview);
        assert!(!a.key(Key::Quit));
    }
}
