//! `mcp-monitor top`: sessions, tools and alerts as they happen.
//!
//! It follows the agent's events and alerts files (or reads a pipe on
//! stdin: `mcp-monitor run | mcp-monitor top -`); keys come from the
//! terminal. When standard output is not a terminal it prints plain-text
//! snapshots instead ([`text`]).

pub mod app;
pub mod draw;
pub mod text;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use crate::input::Follower;
use crate::model::{Investigation, Limits, Severity};
use app::{App, Key};

/// How `top` runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Files to follow (events, alerts, or one file with both); `-` for stdin.
    pub files: Vec<PathBuf>,
    /// Start at the end of the files: show only what happens from now on.
    pub from_end: bool,
    /// Plain text even on a terminal.
    pub batch: bool,
    /// Time between screens (plain text) or between reads of the files.
    pub interval: Duration,
    /// Plain text: snapshots to print before leaving (0: until interrupted).
    pub iterations: u64,
    /// Initial severity filter.
    pub min_severity: Option<Severity>,
}

/// Bytes read per file per screen refresh, so a backlog never freezes keys.
const READ_BUDGET: usize = 8 << 20;

struct Sources {
    followers: Vec<Follower>,
    stdin: Option<crate::input::StdinLines>,
    stdin_open: bool,
}

impl Sources {
    fn new(o: &Options) -> Sources {
        let mut followers = Vec::new();
        let mut stdin = None;
        for f in &o.files {
            if f.as_os_str() == "-" {
                stdin = Some(crate::input::stdin_lines());
            } else {
                followers.push(Follower::new(f, o.from_end));
            }
        }
        Sources {
            followers,
            stdin_open: stdin.is_some(),
            stdin,
        }
    }

    /// Reads what is new into the model; true when anything was.
    fn pump(&mut self, m: &mut Investigation) -> bool {
        let before = m.counts.lines;
        for f in &mut self.followers {
            f.poll(READ_BUDGET, |l| m.ingest_line(l));
        }
        if let Some(rx) = &self.stdin {
            let deadline = Instant::now() + Duration::from_millis(50);
            while Instant::now() < deadline {
                match rx.try_recv() {
                    Ok(l) => m.ingest_line(&l),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.stdin_open = false;
                        break;
                    }
                }
            }
        }
        m.counts.lines != before
    }

    fn describe(&self, o: &Options) -> String {
        let mut names: Vec<String> = o.files.iter().map(|p| p.display().to_string()).collect();
        let skipped: u64 =
            self.followers.iter().map(|f| f.skipped()).sum::<u64>() + self.stdin.as_ref().map_or(0, |s| s.skipped());
        if skipped > 0 {
            names.push(format!("{skipped} unreadable lines skipped"));
        }
        let missing: Vec<String> = self
            .followers
            .iter()
            .filter(|f| !f.is_open())
            .map(|f| f.path().display().to_string())
            .collect();
        if missing.is_empty() {
            names.join(", ")
        } else {
            format!("{} (waiting for {})", names.join(", "), missing.join(", "))
        }
    }
}

/// Runs the view until `q` (terminal) or the last snapshot (plain text).
pub fn run(o: Options) -> anyhow::Result<()> {
    if o.files.is_empty() {
        anyhow::bail!(
            "top needs the agent's events (and alerts) as files: run the agent with \
             --events-file /var/log/mcp-monitor/events.jsonl --alerts-file /var/log/mcp-monitor/alerts.jsonl \
             and give top those paths, or pipe it: mcp-monitor run | mcp-monitor top -"
        );
    }
    let mut sources = Sources::new(&o);
    let mut app = App::new(Investigation::new(Limits::LIVE, true), String::new());
    app.min_severity = o.min_severity;
    if o.batch || !std::io::stdout().is_terminal() {
        return batch(&o, &mut sources, &mut app);
    }
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        let mut dirty = true;
        loop {
            if sources.pump(&mut app.model) {
                app.clamp();
                dirty = true;
            }
            app.sources = sources.describe(&o);
            if dirty {
                terminal.draw(|f| draw::draw(f, &app))?;
                dirty = false;
            }
            if event::poll(o.interval.min(Duration::from_millis(250)))? {
                match event::read()? {
                    Event::Key(k) if k.kind == KeyEventKind::Press => {
                        let key = match k.code {
                            KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Some(Key::Quit),
                            KeyCode::Up => Some(Key::Up),
                            KeyCode::Down => Some(Key::Down),
                            KeyCode::Enter => Some(Key::Enter),
                            KeyCode::Esc | KeyCode::Backspace | KeyCode::Left => Some(Key::Back),
                            KeyCode::Char(c) => Key::from_char(c),
                            _ => None,
                        };
                        if let Some(key) = key {
                            if !app.key(key) {
                                return Ok(());
                            }
                            dirty = true;
                        }
                    }
                    Event::Resize(..) => dirty = true,
                    _ => {}
                }
            }
        }
    })();
    ratatui::restore();
    result
}

fn batch(o: &Options, sources: &mut Sources, app: &mut App) -> anyhow::Result<()> {
    let iterations = if o.iterations == 0 { u64::MAX } else { o.iterations };
    for i in 0..iterations {
        if i > 0 {
            std::thread::sleep(o.interval);
        }
        // Read all that is there now (a file copied off a node, or a pipe
        // that has ended), then print.
        while sources.pump(&mut app.model) {}
        while sources.stdin_open && i == 0 && o.iterations == 1 && sources.stdin.is_some() {
            std::thread::sleep(Duration::from_millis(20));
            sources.pump(&mut app.model);
        }
        app.sources = sources.describe(o);
        print!("{}", text::snapshot(app));
        if i + 1 < iterations {
            println!();
        }
    }
    Ok(())
}
