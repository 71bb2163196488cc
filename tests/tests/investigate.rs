//! The investigation views over a recorded real session: `mcp-monitor
//! report` rendered by a real browser (Debian's Chromium, with the network
//! off) and `mcp-monitor top` driven in a real terminal (tmux), both
//! checked against the events and alerts they were made from, and neither
//! showing the planted keys.
//!
//! The session: a Python SDK client lists a FastMCP server's tools twice,
//! the second time changed (a rug pull); then the node SDK client reads a
//! file of keys through server-filesystem and sends them to another
//! server's sink tool (exposure, exfiltration, relay, chain). The live run
//! is recorded; the views are made from its replay, as an investigator
//! would from a recording taken off a node.
//!
//! Screenshots of both go to `$MCP_SCREENSHOTS` (default
//! target/screenshots); the README's come from here.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mcp_monitor_tests::*;
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(20);

fn jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn python_list_session(variant: &str) {
    let dir = TempDir::new("py");
    let st = Command::new(python())
        .arg(clients_dir().join("py_session.py"))
        .arg(dir.path().join("t.json"))
        .arg(python())
        .arg(clients_dir().join("fastmcp_server.py"))
        .env("MCP_TEST_VARIANT", variant)
        .env("MCP_TEST_PY_SCENARIO", "list")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

/// What the test made: the recording's replay, and the keys to look for.
struct Recorded {
    dir: TempDir,
    recording: PathBuf,
    live_state: TempDir,
    events: PathBuf,
    alerts: PathBuf,
    secrets: Vec<String>,
}

fn record_session() -> Recorded {
    let fsdir = TempDir::new("inv-fs");
    let (file, secrets) = fake::env_file(fsdir.path());
    let dir = TempDir::new("inv");
    let recording = dir.path().join("session.rec");
    let live_state = TempDir::new("inv-state");
    let mut m = Monitor::start(&[
        "--record",
        recording.to_str().unwrap(),
        "--state-dir",
        live_state.path().to_str().unwrap(),
    ]);
    // The live view, fed by the running agent's files from the start.
    let live = Tmux::start(
        "live",
        &format!(
            "{} top {} {}",
            monitor_bin().display(),
            m.events_path.display(),
            m.alerts_path.display()
        ),
    );
    python_list_session("");
    python_list_session("v2");
    Driver::node_with_env(
        "leak",
        &[fsdir.path().to_str().unwrap(), file.to_str().unwrap()],
        &[("MCP_TEST_PYTHON", python().to_str().unwrap())],
    )
    .finish();
    m.wait_alerts(SETTLE, |a| {
        let rules: Vec<&str> = a.iter().filter_map(|x| x["rule"].as_str()).collect();
        rules.contains(&"credential.relay") && rules.contains(&"tool_integrity.rug_pull")
    });
    // What the agent wrote reached the screen while it ran.
    let screen = live.wait("the live session and its alerts", |s| {
        s.contains("monitor-test-client") && s.contains("credential.relay") && s.contains("Sessions (4)")
    });
    assert_no_secret("live screen", &screen, &secrets);
    live.send(&["q"]);
    drop(live);
    m.stop();

    let events = dir.path().join("events.jsonl");
    let alerts = dir.path().join("alerts.jsonl");
    let replay_state = TempDir::new("inv-replay-state");
    let st = Command::new(monitor_bin())
        .args(["replay", recording.to_str().unwrap(), "--payloads", "--events-file"])
        .arg(&events)
        .arg("--alerts-file")
        .arg(&alerts)
        .arg("--state-dir")
        .arg(replay_state.path())
        .status()
        .unwrap();
    assert!(st.success());
    Recorded {
        dir,
        recording,
        live_state,
        events,
        alerts,
        secrets: secrets.to_vec(),
    }
}

/// No 12-character piece of any planted key.
fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        for i in 0..=s.len() - 12 {
            assert!(!text.contains(&s[i..i + 12]), "part of a planted key is in the {what}");
        }
    }
}

fn screenshots_dir() -> PathBuf {
    let d = std::env::var_os("MCP_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/screenshots"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Debian's Chromium, headless, in a network namespace of its own (no
/// network at all), with `args`; its standard output.
fn chromium_offline(args: &[&str]) -> String {
    let profile = TempDir::new("chromium");
    let out = Command::new("unshare")
        .args(["--net", "--", "chromium", "--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--no-first-run", "--hide-scrollbars"])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("chromium (cargo xtask setup installs it)");
    assert!(out.status.success(), "chromium failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Attribute values of every element with `attr` in serialized HTML.
fn attr_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let pat = format!(" {attr}=\"");
    html.split(pat.as_str())
        .skip(1)
        .map(|s| &s[..s.find('"').unwrap()])
        .collect()
}

/// The opening tag of the element with `id`.
fn element<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!(" id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id}"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    &dom[start..=end]
}

fn attr<'a>(tag: &'a str, name: &str) -> &'a str {
    attr_values(tag, name).first().copied().unwrap_or("")
}

/// Label of a graph node: the text of its `<title>`'s first line.
fn node_label<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom.find(&format!(" id=\"{id}\"")).unwrap();
    let rest = &dom[at..];
    let t = rest.find("<title>").unwrap() + 7;
    let end = rest[t..].find(['\n', '<']).unwrap();
    &rest[t..t + end]
}

#[test]
fn report_and_top_show_the_recorded_session_and_never_the_keys() {
    require_root();
    let r = record_session();
    let events = jsonl(&r.events);
    let alerts = jsonl(&r.alerts);
    assert!(!events.is_empty() && !alerts.is_empty());
    check_report(&r, &events, &alerts);
    check_top(&r, &events, &alerts);
}

fn check_report(r: &Recorded, events: &[Value], alerts: &[Value]) {
    let html_path = r.dir.path().join("report.html");
    let st = Command::new(monitor_bin())
        .arg("report")
        .arg(&r.events)
        .arg(&r.alerts)
        .arg("--state-dir")
        .arg(r.live_state.path())
        .arg("-o")
        .arg(&html_path)
        .status()
        .unwrap();
    assert!(st.success());
    let html = std::fs::read_to_string(&html_path).unwrap();
    let _ = std::fs::copy(&html_path, workspace().join("target/report-under-test.html"));
    assert_no_secret("report", &html, &r.secrets);
    // Nothing to fetch: a policy that forbids it, and no address to fetch.
    assert!(html.contains("content=\"default-src 'none'; style-src 'unsafe-inline'\""));
    assert!(attr_values(&html, "src").is_empty());
    assert!(attr_values(&html, "href").iter().all(|h| h.starts_with('#')));

    // What the browser built, with no network at all.
    let url = format!("file://{}", html_path.display());
    let dom = chromium_offline(&["--dump-dom", &url]);
    assert!(
        dom.contains("MCP investigation report"),
        "the page did not load: {dom:.500}"
    );
    assert_no_secret("report's DOM", &dom, &r.secrets);

    // Every in-page link lands on an element.
    let ids: std::collections::HashSet<&str> = attr_values(&dom, "id").into_iter().collect();
    let hrefs = attr_values(&dom, "href");
    assert!(hrefs.len() > 20);
    for h in &hrefs {
        assert!(ids.contains(&h[1..]), "link {h} has no target");
    }

    // Nodes: one per distinct client and server process of the events; a
    // tool node with its call count per server and tool called.
    let key = |p: &Value| format!("{}:{}", p["pid"], p["start_time"]);
    let mut sessions: BTreeMap<&str, (&Value, &Value)> = BTreeMap::new();
    let mut calls: HashMap<(String, String), u64> = HashMap::new();
    for e in events {
        sessions
            .entry(e["session"].as_str().unwrap())
            .or_insert((&e["client"], &e["server"]));
        if e["type"] == "request" && e["method"] == "tools/call" {
            *calls
                .entry((key(&e["server"]), e["tool"].as_str().unwrap().to_owned()))
                .or_default() += 1;
        }
    }
    let agents: std::collections::BTreeSet<String> = sessions.values().map(|(c, _)| key(c)).collect();
    let servers: std::collections::BTreeSet<String> = sessions.values().map(|(_, s)| key(s)).collect();
    let kinds = attr_values(&dom, "data-kind");
    assert_eq!(kinds.iter().filter(|k| **k == "agent").count(), agents.len());
    assert_eq!(kinds.iter().filter(|k| **k == "server").count(), servers.len());
    assert_eq!(kinds.iter().filter(|k| **k == "tool").count(), calls.len());
    assert!(calls.len() >= 2, "{calls:?}");
    // Edges into tool nodes carry the calls the events hold.
    let mut edge_calls: Vec<(String, u64)> = Vec::new();
    for piece in dom.split("<path class=\"edge\"").skip(1) {
        let tag = &piece[..piece.find('>').unwrap()];
        let to = attr(tag, "data-to");
        if element(&dom, to).contains("data-kind=\"tool\"") {
            edge_calls.push((
                node_label(&dom, to).to_owned(),
                attr(tag, "data-calls").parse().unwrap(),
            ));
        }
    }
    edge_calls.sort();
    let mut want: Vec<(String, u64)> = calls.iter().map(|((_, t), n)| (t.clone(), *n)).collect();
    want.sort();
    assert_eq!(edge_calls, want);

    // Every alert is an article; its message links land on message rows.
    let articles = attr_values(&dom, "data-alert");
    for a in alerts {
        let id = a["id"].as_str().unwrap();
        assert!(
            articles.contains(&id),
            "alert {} ({id}) is not in the report",
            a["rule"]
        );
    }
    let relay = alerts.iter().find(|a| a["rule"] == "credential.relay").unwrap();
    let relay_id = relay["id"].as_str().unwrap();
    let article = {
        let at = dom.find(&format!("data-alert=\"{relay_id}\" data-rule")).unwrap();
        &dom[at..at + dom[at..].find("</article>").unwrap()]
    };
    let links = attr_values(article, "href");
    let msg_links: Vec<&&str> = links.iter().filter(|h| h.starts_with("#msg-")).collect();
    assert_eq!(msg_links.len(), 2, "the relay cites the response and the later request"); // Each lands on the row of the message the alert names: the server's
                                                                                          // response that held the key, then the client's request that sent it.
    for (l, m) in msg_links.iter().zip(relay["messages"].as_array().unwrap()) {
        assert!(element(&dom, &l[1..]).starts_with("<tr"), "{l} is not a message row");
        let at = dom.find(&format!(" id=\"{}\"", &l[1..])).unwrap();
        let row = &dom[at..at + dom[at..].find("</tr>").unwrap()];
        let arrow = if m["direction"] == "server_to_client" {
            "←"
        } else {
            "→"
        };
        let id = m["id"].to_string();
        for c in [arrow, m["type"].as_str().unwrap(), m["tool"].as_str().unwrap(), &id] {
            assert!(row.contains(&format!(">{c}</td>")), "{l}: {c} not in {row}");
        }
    }
    // The relay is drawn from the tool that returned the key to the sink.
    let edge = dom
        .split("<a class=\"alert-edge")
        .skip(1)
        .map(|p| &p[..p.find('>').unwrap()])
        .find(|t| attr(t, "data-alert") == relay_id)
        .expect("the relay has an edge in the graph");
    assert_eq!(node_label(&dom, attr(edge, "data-from")), "read_text_file");
    assert_eq!(node_label(&dom, attr(edge, "data-to")), "send_message");

    // The rug pull: the agent's change record, and both definitions with
    // the words that were added marked.
    let rug = alerts.iter().find(|a| a["rule"] == "tool_integrity.rug_pull").unwrap();
    let tool = rug["evidence"]["change"]["tool"].as_str().unwrap();
    assert!(dom.contains("<tr class=\"rug-pull\">"));
    let defs: Vec<&str> = dom
        .split("<tr class=\"definition")
        .skip(1)
        .filter(|p| p.contains(&format!("data-tool=\"{tool}\"")))
        .collect();
    assert!(defs.len() >= 2, "both definitions of {tool} are listed");
    assert!(defs.iter().any(|d| d.starts_with(" changed") && d.contains("<ins>")));
    let hash_after = rug["evidence"]["change"]["hash_after"].as_str().unwrap();
    assert!(
        defs.iter().any(|d| d.contains(&format!("data-hash=\"{hash_after}\""))),
        "the changed definition's hash is the one the agent pinned"
    ); // The state directory's pinned hashes are listed.
    let pinned: Value =
        serde_json::from_str(&std::fs::read_to_string(r.live_state.path().join("tools.json")).unwrap()).unwrap();
    let pinned_table = &dom[dom.find("id=\"pinned\"").expect("the pinned table")..];
    let mut hashes = 0;
    for server in pinned["servers"].as_object().unwrap().values() {
        for t in server["tools"].as_object().unwrap().values() {
            assert!(pinned_table.contains(t["hash"].as_str().unwrap()));
            hashes += 1;
        }
    }
    assert!(hashes >= 3, "{pinned}");

    // The same report straight from the recording.
    let from_rec = r.dir.path().join("from-recording.html");
    let st = Command::new(monitor_bin())
        .arg("report")
        .arg("--recording")
        .arg(&r.recording)
        .arg("-o")
        .arg(&from_rec)
        .status()
        .unwrap();
    assert!(st.success());
    let html2 = std::fs::read_to_string(&from_rec).unwrap();
    assert_no_secret("report from the recording", &html2, &r.secrets);
    assert_eq!(
        attr_values(&html2, "data-alert").len(),
        attr_values(&html, "data-alert").len()
    );
    assert_eq!(
        attr_values(&html2, "data-session").len(),
        attr_values(&html, "data-session").len()
    );

    let png = screenshots_dir().join("report.png");
    chromium_offline(&[
        "--window-size=1400,1600",
        &format!("--screenshot={}", png.display()),
        &url,
    ]);
    assert!(std::fs::metadata(&png).unwrap().len() > 10_000);
}

/// A tmux server of its own, ended with the test.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(tag: &str, cmd: &str) -> Tmux {
        let t = Tmux {
            socket: format!("mcpmon-top-{tag}-{}", std::process::id()),
        };
        let st = Command::new("tmux")
            .args([
                "-L",
                &t.socket,
                "new-session",
                "-d",
                "-s",
                "top",
                "-x",
                "80",
                "-y",
                "24",
                cmd,
            ])
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux (cargo xtask setup installs it)");
        assert!(st.success());
        t
    }
    fn send(&self, keys: &[&str]) {
        let st = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "top"])
            .args(keys)
            .status()
            .unwrap();
        assert!(st.success());
    }
    fn capture(&self, escapes: bool) -> String {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "capture-pane", "-p", "-t", "top"]);
        if escapes {
            c.arg("-e");
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    }
    /// The screen once `pred` holds on it.
    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.capture(false);
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "the screen never showed {what}:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["-L", &self.socket, "has-session", "-t", "top"])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

fn check_top(r: &Recorded, events: &[Value], alerts: &[Value]) {
    let count = |sev: &str| alerts.iter().filter(|a| a["severity"] == sev).count();
    let cmd = format!(
        "{} top {} {}",
        monitor_bin().display(),
        r.events.display(),
        r.alerts.display()
    );
    let t = Tmux::start("replay", &cmd);
    let mut screens = Vec::new();
    let s = t.wait("the overview", |s| s.contains("Sessions ("));
    let sessions: std::collections::BTreeSet<&str> = events.iter().filter_map(|e| e["session"].as_str()).collect();
    assert!(s.contains(&format!("{} sessions", sessions.len())), "{s}");
    assert!(
        s.contains(&format!("{} crit {} high", count("critical"), count("high"))),
        "{s}"
    );
    assert!(s.contains("monitor-test-client"), "{s}");
    assert!(s.contains("user root"), "identity is shown: {s}");
    assert!(s.lines().all(|l| l.chars().count() <= 80));
    // The newest alerts first; the rug pull (high) is older than the
    // critical ones but still on an 80x24 screen.    assert!(s.contains("credential.relay") || s.contains("tool_chain."), "{s}");
    assert!(s.contains(" high     tool_integrity.rug_pull"), "{s}");
    let color = t.capture(true);
    screens.push(s);

    // Severity filter: s cycles low → medium → high → critical.
    t.send(&["s", "s", "s", "s"]);
    let s = t.wait("the critical filter", |s| s.contains("severity ≥ critical"));
    assert!(
        !s.contains(" high     tool_integrity"),
        "a high alert passed the critical filter: {s}"
    );
    let alert_lines: Vec<&str> = s
        .lines()
        .filter(|l| l.len() > 9 && l.as_bytes()[2] == b':' && l.as_bytes()[5] == b':')
        .collect();
    assert!(!alert_lines.is_empty(), "{s}");
    assert!(alert_lines.iter().all(|l| l[9..].starts_with("critical ")), "{s}");
    screens.push(s.clone());
    // Only sessions with a critical alert remain: the node client's two.
    let critical_sessions: std::collections::BTreeSet<&str> = alerts
        .iter()
        .filter(|a| a["severity"] == "critical")
        .flat_map(|a| {
            a["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|m| m["session"].as_str())
        })
        .collect();
    assert!(s.contains(&format!("Sessions ({})", critical_sessions.len())), "{s}");

    // Drill into the selected (most recent) session: its tools and calls.
    t.send(&["Enter"]);
    let s = t.wait("a session", |s| s.contains(" Tools "));
    assert!(s.contains("send_message") || s.contains("read_text_file"), "{s}");
    assert!(s.contains("▲ critical"), "{s}");
    screens.push(s);
    t.send(&["Escape"]);
    t.wait("the overview again", |s| s.contains("Sessions ("));
    t.send(&["s"]);
    t.wait("no severity filter", |s| s.contains("all severities"));
    // Server filter.
    t.send(&["f"]);
    let s = t.wait("a server filter", |s| s.contains("· server "));
    screens.push(s);
    t.send(&["q"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.alive() {
        assert!(Instant::now() < deadline, "q did not end top");
        std::thread::sleep(Duration::from_millis(50));
    }
    for s in &screens {
        assert_no_secret("terminal view", s, &r.secrets);
    }

    // Not a terminal: plain text.
    let out = Command::new(monitor_bin())
        .arg("top")
        .arg(&r.events)
        .arg(&r.alerts)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("SESSIONS ({})", sessions.len())), "{text}");
    assert!(text.contains(&format!("ALERTS ({})", alerts.len())), "{text}");
    assert!(text.contains("tools: ") && text.contains("read_text_file ×"), "{text}");
    assert!(!text.contains('\x1b'), "escape codes in plain text");
    assert_no_secret("plain-text view", &text, &r.secrets);

    // The screenshot: the coloured screen as HTML, photographed.
    let html = r.dir.path().join("top.html");
    std::fs::write(&html, ansi_to_html(&color)).unwrap();
    let png = screenshots_dir().join("top.png");
    chromium_offline(&[
        "--window-size=820,540",
        &format!("--screenshot={}", png.display()),
        &format!("file://{}", html.display()),
    ]);
    assert!(std::fs::metadata(&png).unwrap().len() > 5_000);
}

/// A terminal screen captured with `capture-pane -e` as an HTML page (the
/// SGR colours and bold/reverse that tmux writes).
fn ansi_to_html(screen: &str) -> String {
    const PALETTE: [&str; 16] = [
        "#1e1e1e", "#e05252", "#4fb35b", "#d9b340", "#5b8fd9", "#c05bd9", "#4fc0c0", "#cccccc", "#6b6b6b", "#ff6e6e",
        "#6fe07a", "#ffd75f", "#7fb0ff", "#e07fff", "#7fe0e0", "#ffffff",
    ];
    let mut out = String::from(
        "<!doctype html><meta charset=\"utf-8\"><body style=\"margin:0;background:#1e1e1e\">\
         <pre style=\"margin:10px;font:14px/1.2 'DejaVu Sans Mono',monospace;color:#cccccc\">",
    );
    let (mut fg, mut bg, mut bold, mut rev) = (None::<usize>, None::<usize>, false, false);
    let mut open = false;
    let mut chars = screen.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            let mut code = String::new();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    if d != 'm' {
                        code.clear();
                    }
                    break;
                }
                code.push(d);
            }
            let parts: Vec<usize> = code.split(';').map(|p| p.parse().unwrap_or(0)).collect();
            let mut i = 0;
            while i < parts.len() {
                match parts[i] {
                    0 => (fg, bg, bold, rev) = (None, None, false, false),
                    1 => bold = true,
                    22 => bold = false,
                    7 => rev = true,
                    27 => rev = false,
                    n @ 30..=37 => fg = Some(n - 30),
                    n @ 90..=97 => fg = Some(n - 90 + 8),
                    39 => fg = None,
                    n @ 40..=47 => bg = Some(n - 40),
                    49 => bg = None,
                    38 | 48 if parts.get(i + 1) == Some(&5) => {
                        let v = parts.get(i + 2).copied().filter(|v| *v < 16);
                        if parts[i] == 38 {
                            fg = v;
                        } else {
                            bg = v;
                        }
                        i += 2;
                    }
                    _ => {}
                }
                i += 1;
            }
            if open {
                out.push_str("</span>");
            }
            let (mut f, mut b) = (
                fg.map_or("#cccccc", |i| PALETTE[i]),
                bg.map_or("#1e1e1e", |i| PALETTE[i]),
            );
            if rev {
                std::mem::swap(&mut f, &mut b);
            }
            out.push_str(&format!(
                "<span style=\"color:{f};background:{b};font-weight:{}\">",
                if bold { 700 } else { 400 }
            ));
            open = true;
            continue;
        }
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            _ => out.push(c),
        }
    }
    if open {
        out.push_str("</span>");
    }
    out.push_str("</pre></body>");
    out
}
