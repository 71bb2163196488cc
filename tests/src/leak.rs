//! The leak scenario the delivery tests share: a planted fake GitHub token
//! read through server-filesystem and sent on through FastMCP, which raises
//! four alerts.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{fake, python, Driver, TempDir};

/// The four alerts of the leak scenario (see tests/detection.rs).
pub const LEAK_RULES: [&str; 4] = [
    "credential.exposure",
    "credential.exfiltration",
    "credential.relay",
    "tool_chain.exfiltration_cross_server",
];

/// Runs the leak scenario: a file with a planted GitHub token read through
/// server-filesystem, then passed to the FastMCP server's send_message.
/// Returns the token (to check it never appears).
pub fn leak_session() -> String {
    let fsdir = TempDir::new("leakfs");
    let token = fake::github_token();
    let file = fsdir.path().join("secrets.env");
    std::fs::write(&file, format!("GITHUB_TOKEN={token}\n")).unwrap();
    let d = Driver::node_with_env(
        "leak",
        &[fsdir.path().to_str().unwrap(), file.to_str().unwrap()],
        &[("MCP_TEST_PYTHON", python().to_str().unwrap())],
    );
    d.finish();
    token
}

/// The alerts hold every rule of the leak scenario.
pub fn has_all_rules(alerts: &[Value]) -> bool {
    LEAK_RULES.iter().all(|r| alerts.iter().any(|a| a["rule"] == *r))
}

/// Polls `f` every 200 ms until it holds or `timeout` passes; its last answer.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    f()
}
