//! Memory and loss: ring drops under a burst, the agent's RSS under steady
//! load and under a flood of large messages.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::*;

pub(super) fn drops(port: u16) -> Result<Value> {
    step("drops: paced 4 KiB traffic at rising rates");
    let agent = Agent::start(port)?;
    let mut steps = Vec::new();
    let mut first_drop = Value::Null;
    let mut best_clean = 0.0f64;
    for rate in [10_000.0, 20_000.0, 40_000.0, 80_000.0, 160_000.0] {
        let before_drops = agent.metric("mcp_monitor_capture_dropped_total", "");
        let before_msgs = agent.metric("mcp_monitor_messages_total", "method=\"tools/call\"");
        let count = (rate * 3.0) as u64;
        let r = pair(4096, count, Some(rate))?;
        std::thread::sleep(Duration::from_millis(500));
        let achieved = r["msgs_per_s"].as_f64().unwrap();
        let d = agent.metric("mcp_monitor_capture_dropped_total", "") - before_drops;
        let seen = agent.metric("mcp_monitor_messages_total", "method=\"tools/call\"") - before_msgs;
        steps.push(json!({
            "target_msgs_per_s": rate, "achieved_msgs_per_s": achieved, "messages": count,
            "events_seen": seen, "events_expected": 2 * count, "dropped": d,
        }));
        if d > 0.0 || seen < (2 * count) as f64 {
            first_drop = json!(achieved);
            break;
        }
        best_clean = best_clean.max(achieved);
        if achieved < rate * 0.9 {
            break; // the pair cannot go faster on this machine
        }
    }
    agent.stop();
    Ok(
        json!({"message_bytes": 4096, "steps": steps, "drops_start_at_msgs_per_s": first_drop, "highest_clean_msgs_per_s": best_clean}),
    )
}

pub(super) fn memory(port: u16) -> Result<Value> {
    step("agent memory: idle, then 1,000 concurrent stdio sessions");
    let agent = Agent::start(port)?;
    std::thread::sleep(Duration::from_secs(3));
    let (idle_rss, _) = agent.rss_kib();
    let mut child = Command::new(echo_pair())
        .args(["client", "--size", "1024", "--sessions", "1000", "--hold-secs", "8"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    if !line.starts_with("READY") {
        bail!("echo-pair sessions did not start: {line}");
    }
    std::thread::sleep(Duration::from_secs(3));
    let (busy_rss, _) = agent.rss_kib();
    let sessions = agent.metric("mcp_monitor_sessions_active", "");
    let dropped = agent.metric("mcp_monitor_capture_dropped_total", "");
    child.wait()?;
    let (_, peak) = agent.rss_kib();
    agent.stop();
    Ok(json!({
        "idle_rss_mib": idle_rss as f64 / 1024.0,
        "sessions_1000_rss_mib": busy_rss as f64 / 1024.0,
        "peak_rss_mib": peak as f64 / 1024.0,
        "sessions_active_seen": sessions,
        "dropped": dropped,
        "target_idle_mib": 64,
        "flood": memory_flood(port)?,
    }))
}

const FLOOD_SECONDS: u32 = 60;
const FLOOD_SESSIONS: usize = 8;
const FLOOD_MESSAGE_BYTES: usize = 6_000_000;

/// Peak RSS of a fresh agent while 8 stdio sessions exchange 6 MB
/// messages as fast as they can for 60 s.
pub(super) fn memory_flood(port: u16) -> Result<Value> {
    step("agent memory: 60 s flood of 6 MB messages on 8 sessions");
    let agent = Agent::start(port)?;
    std::thread::sleep(Duration::from_secs(2));
    let clients: Vec<Child> = (0..FLOOD_SESSIONS)
        .map(|_| {
            Command::new(echo_pair())
                .args(["client", "--size", &FLOOD_MESSAGE_BYTES.to_string()])
                .args(["--seconds", &FLOOD_SECONDS.to_string()])
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let mut max_rss = 0;
    let mut max_buffered: f64 = 0.0;
    let end = Instant::now() + Duration::from_secs(FLOOD_SECONDS as u64);
    while Instant::now() < end {
        max_rss = max_rss.max(agent.rss_kib().0);
        max_buffered = max_buffered.max(agent.metric("mcp_monitor_buffered_bytes", ""));
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut sent = 0.0;
    for c in clients {
        let out = c.wait_with_output()?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        sent += v["messages"].as_f64().unwrap_or(0.0);
    }
    std::thread::sleep(Duration::from_secs(2));
    let (_, peak) = agent.rss_kib();
    let seen = agent.metric(
        "mcp_monitor_messages_total",
        "method=\"tools/call\",transport=\"stdio\",type=\"request\"",
    );
    let ring_full = agent.metric("mcp_monitor_capture_dropped_total", "ring_full");
    let over_budget = agent.metric("mcp_monitor_frame_errors_total", "memory_budget");
    agent.stop();
    Ok(json!({
        "seconds": FLOOD_SECONDS,
        "sessions": FLOOD_SESSIONS,
        "message_bytes": FLOOD_MESSAGE_BYTES,
        "calls_sent": sent,
        "calls_seen": seen,
        "ring_full_drops": ring_full,
        "memory_budget_drops": over_budget,
        "max_buffered_mib": max_buffered / 1048576.0,
        "max_sampled_rss_mib": max_rss as f64 / 1024.0,
        "peak_rss_mib": peak as f64 / 1024.0,
        "limit_mib": 256,
    }))
}
