//! `cargo xtask bench`: every performance figure the project quotes.
//!
//! 1. Pipeline throughput per core (criterion, replaying a realistic
//!    synthetic capture): MB/s and messages/s; the same with every detector
//!    on, the detector alone in MB/s, and the cost it adds per message.
//! 2. Capture overhead: a native stdio MCP echo pair (tests' `echo-pair`)
//!    exchanging 200 B, 4 KiB and 64 KiB messages, with nothing, with
//!    do-nothing programs on the agent's hooks (the floor) and with the
//!    monitor attached, interleaved rounds, median ratios; the pinned
//!    4 KiB pair also with the copy floor (`mcp-monitor floor
//!    --copy-reads`: each read's bytes put in the ring in one copy and read
//!    back, nothing else); and the pinned 4 KiB pair paced below the
//!    agent's limit, its CPU per round trip with each and the programs'
//!    share of it (`pair_cpu`).
//! 3. Drops: paced 4 KiB traffic at rising rates; the first rate with
//!    capture drops (or the highest rate reached without any).
//! 4. Agent memory: RSS idle and with 1,000 concurrent stdio sessions; the
//!    peak under a 60 s flood of 6 MB messages on 8 sessions at once,
//!    against the DaemonSet's 256 MiB limit.
//! 5. HTTPS: requests/s of a local HTTPS MCP server (FastMCP, self-signed
//!    certificate) driven by the Python SDK client at rising concurrency,
//!    with and without the monitor (TLS uprobes on libssl), interleaved
//!    rounds, median ratio; drops and captured messages at each rate.
//!
//! 6. Host cost (`host`): redis-benchmark, a JSON-log pipe, a text pipe
//!    and dd with nothing, with do-nothing programs on the same hooks (the
//!    floor) and with the agent; interleaved rounds, medians, ratios, cost
//!    per system call, nanoseconds per program run.
//!
//! Results go to target/bench-results.json and are printed as a table.
//! Timing never decides a test's outcome; it is only reported.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{cargo, is_root, root, sh, step};

mod host;
mod host_cost;
mod https;
mod memory;

use host::host;
use host_cost::{kernel_cost, log_pipe, overhead, pair_cpu};
use https::{https, https_bun, https_go};
use memory::{drops, memory};

fn echo_pair() -> PathBuf {
    root().join("target/release/echo-pair")
}

fn monitor_bin() -> PathBuf {
    root().join("target/release/mcp-monitor")
}

struct Agent {
    child: Child,
    port: u16,
}

/// `taskset -c CPU` prefix when pinning, else the program itself.
fn pinned(cpu: Option<u32>, program: &Path) -> Command {
    match cpu {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", &c.to_string()]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

impl Agent {
    fn start(port: u16) -> Result<Agent> {
        Self::start_on(port, None)
    }

    fn start_on(port: u16, cpu: Option<u32>) -> Result<Agent> {
        Self::start_with(port, cpu, &[])
    }

    fn start_with(port: u16, cpu: Option<u32>, extra: &[&str]) -> Result<Agent> {
        let child = pinned(cpu, &monitor_bin())
            .args(["run", "--events-file", "/dev/null", "--metrics-addr"])
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting mcp-monitor")?;
        let agent = Agent { child, port };
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if agent.get("/readyz").is_ok_and(|b| b.contains("ready")) {
                return Ok(agent);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("mcp-monitor did not become ready")
    }

    fn get(&self, path: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    fn metric(&self, name: &str, label_filter: &str) -> f64 {
        let text = self.get("/metrics").unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(name) && l.contains(label_filter))
            .filter(|l| l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |n: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(n))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// CPU seconds (user + system) the agent has used.
    fn cpu_seconds(&self) -> f64 {
        // With taskset the child is taskset, which execs the agent: same pid.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        ticks / 100.0
    }

    fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { kill(self.child.id() as i32, 2) };
        let _ = self.child.wait();
    }
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Runs and average nanoseconds per run of the loaded eBPF programs whose
/// name `wanted` accepts and that ran (`bpftool`; needs
/// `kernel.bpf_stats_enabled` on).
fn program_run_costs(wanted: impl Fn(&str) -> bool) -> Result<Value> {
    let progs = bpf_programs()?;
    let mut per: std::collections::BTreeMap<String, (u64, u64)> = std::collections::BTreeMap::new();
    for p in progs.as_array().into_iter().flatten() {
        let (Some(name), Some(cnt), Some(ns)) = (p["name"].as_str(), p["run_cnt"].as_u64(), p["run_time_ns"].as_u64())
        else {
            continue;
        };
        if cnt > 0 && wanted(name) {
            // One program loaded once per function (`floor_fexit`) shows
            // once per load: summed under its name.
            let e = per.entry(name.to_owned()).or_insert((0, 0));
            e.0 += cnt;
            e.1 += ns;
        }
    }
    Ok(Value::Object(
        per.into_iter()
            .map(|(name, (cnt, ns))| (name, json!({"runs": cnt, "avg_ns": ns as f64 / cnt as f64})))
            .collect(),
    ))
}

/// Every BPF program loaded on the host, as `bpftool -j prog show` lists
/// them (with `kernel.bpf_stats_enabled`, each with its `run_cnt` and
/// `run_time_ns`).
fn bpf_programs() -> Result<Value> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("running bpftool")?;
    serde_json::from_slice(&out.stdout).context("reading bpftool's JSON")
}

/// One echo-pair run; returns its JSON report.
fn pair(size: usize, count: u64, rate: Option<f64>) -> Result<Value> {
    pair_on(size, count, rate, None)
}

fn pair_on(size: usize, count: u64, rate: Option<f64>, cpu: Option<u32>) -> Result<Value> {
    let mut cmd = pinned(cpu, &echo_pair());
    cmd.args(["client", "--size", &size.to_string(), "--count", &count.to_string()]);
    if let Some(r) = rate {
        cmd.args(["--rate", &r.to_string()]);
    }
    let out = cmd.output().context("running echo-pair")?;
    if !out.status.success() {
        bail!("echo-pair failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// "lowest–highest" of a JSON array of figures, each with `unit` after it
/// ("1.21x–1.58x"); "?" without figures.
fn range(figures: &Value, unit: &str) -> String {
    let mut v: Vec<f64> = figures
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    v.sort_by(f64::total_cmp);
    match (v.first(), v.last()) {
        (Some(lo), Some(hi)) if unit.is_empty() => format!("{lo:.3}–{hi:.3}"),
        (Some(lo), Some(hi)) => format!("{lo:.2}{unit}–{hi:.2}{unit}"),
        _ => "?".into(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn pipeline_throughput() -> Result<Value> {
    step("pipeline throughput (criterion)");
    sh(cargo().args(["bench", "-p", "mcp-monitor-pipeline", "--bench", "pipeline"]))?;
    let mean_ns = |id: &str| -> Result<f64> {
        let path = root().join(format!("target/criterion/{id}/new/estimates.json"));
        let est: Value = serde_json::from_str(
            &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
        )?;
        est["mean"]["point_estimate"]
            .as_f64()
            .context("estimates.json without a mean")
    };
    let work: Value = serde_json::from_str(&std::fs::read_to_string(
        root().join("target/tmp/pipeline-workload.json"),
    )?)?;
    let ns = mean_ns("pipeline/replay")?;
    let with_detection_ns = mean_ns("pipeline/replay_with_detection")?;
    let detection_ns = mean_ns("detection/messages")?;
    let bytes = work["bytes"].as_f64().unwrap();
    let messages = work["messages"].as_f64().unwrap();
    Ok(json!({
        "workload_bytes": bytes,
        "workload_messages": messages,
        "mean_seconds": ns / 1e9,
        "mb_per_s_per_core": bytes / ns * 1e3,
        "messages_per_s_per_core": messages / ns * 1e9,
        "target_mb_per_s": 300,
        "detection": {
            // Every rule on, same workload: the detector alone, and the
            // pipeline with it.
            "mb_per_s_per_core": bytes / detection_ns * 1e3,
            "target_mb_per_s": 250,
            "pipeline_with_detection_mb_per_s_per_core": bytes / with_detection_ns * 1e3,
            "added_us_per_message": (with_detection_ns - ns) / messages / 1e3,
            "detector_us_per_message": detection_ns / messages / 1e3,
        },
    }))
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name\t: ").map(str::to_owned))
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    json!({"cpu": cpu, "cores": cores, "kernel": kernel})
}

/// Runs everything and writes target/bench-results.json.
pub fn run(args: &[String]) -> Result<()> {
    let only = args.first().map(String::as_str);
    sh(cargo().args([
        "build",
        "--release",
        "-p",
        "mcp-monitor",
        "-p",
        "mcp-monitor-tests",
        "--bins",
    ]))?;
    let path = root().join("target/bench-results.json");
    // Running one PART updates that part of an earlier full run.
    let mut results = match (only, std::fs::read_to_string(&path)) {
        (Some(_), Ok(text)) => serde_json::from_str(&text).unwrap_or_else(|_| json!({})),
        _ => json!({}),
    };
    results["machine"] = machine();
    results["when"] = json!(humantime_now());
    if only.is_none_or(|o| o == "pipeline") {
        results["pipeline"] = pipeline_throughput()?;
    }
    let live = only.is_none_or(|o| o != "pipeline");
    if live && !is_root() {
        bail!("the capture benchmarks load eBPF programs: run `sudo cargo xtask bench` (pipeline only: `cargo xtask bench pipeline`)");
    }
    let port = 19_464;
    if live && only.is_none_or(|o| o == "overhead") {
        results["overhead"] = overhead(port)?;
        results["pair_cpu"] = pair_cpu(port)?;
    }
    if live && only.is_none_or(|o| o == "kernel") {
        results["kernel_cost"] = kernel_cost(port)?;
    }
    if live && only.is_none_or(|o| o == "drops") {
        results["drops"] = drops(port)?;
    }
    if live && only.is_none_or(|o| o == "memory") {
        results["memory"] = memory(port)?;
    }
    if live && only.is_none_or(|o| o == "https") {
        results["https"] = https(port)?;
        results["https_bun"] = https_bun(port)?;
        results["https_go_h2"] = https_go(port)?;
    }
    if live && only.is_none_or(|o| o == "logs") {
        results["log_pipe"] = log_pipe(port)?;
    }
    if live && only.is_none_or(|o| o == "host") {
        results["host"] = host(port)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    print_summary(&results, &path);
    Ok(())
}

fn humantime_now() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn print_summary(r: &Value, path: &Path) {
    println!(
        "\nmcp-monitor benchmarks ({}, {} cores, kernel {})",
        r["machine"]["cpu"], r["machine"]["cores"], r["machine"]["kernel"]
    );
    if let Some(p) = r.get("pipeline") {
        println!(
            "  pipeline: {:.0} MB/s per core, {:.0} messages/s per core (target >= 300 MB/s)",
            p["mb_per_s_per_core"].as_f64().unwrap_or(0.0),
            p["messages_per_s_per_core"].as_f64().unwrap_or(0.0)
        );
        let d = &p["detection"];
        println!(
            "  detection (every rule on): {:.0} MB/s per core (target >= 400 MB/s); pipeline with detection {:.0} MB/s; \
             {:.1} us added per message",
            d["mb_per_s_per_core"].as_f64().unwrap_or(0.0),
            d["pipeline_with_detection_mb_per_s_per_core"].as_f64().unwrap_or(0.0),
            d["added_us_per_message"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(Value::Array(rows)) = r.get("overhead") {
        for o in rows {
            println!(
                "  overhead {:>6} B {}: {:>8.0} msg/s without, {:>8.0} with, ratio {:.3} (floor {:.3}), agent {:.1} us CPU/msg (drops {}, ring wake-ups {:.1} per 1000 msgs)",
                o["message_bytes"],
                if o["pinned"].as_bool().unwrap_or(false) { "pinned  " } else { "unpinned" },
                o["median_without"].as_f64().unwrap_or(0.0),
                o["median_with"].as_f64().unwrap_or(0.0),
                o["ratio"].as_f64().unwrap_or(0.0),
                o["ratio_floor"].as_f64().unwrap_or(0.0),
                o["agent_cpu_us_per_message"].as_f64().unwrap_or(0.0),
                o["drops_with_monitor"],
                o["irq_work_per_1000_messages"].as_f64().unwrap_or(0.0)
            );
            if let Some(c) = o["copy_floor"].as_object() {
                println!(
                    "           copy floor (each read's bytes to the ring and back, nothing else): {:.0} msg/s, ratio {:.3}",
                    c["median"].as_f64().unwrap_or(0.0),
                    c["ratio"].as_f64().unwrap_or(0.0)
                );
            }
        }
    }
    if let Some(p) = r.get("pair_cpu").filter(|p| p.get("median_agent").is_some()) {
        println!(
            "  pinned {} B pair at {}/s, CPU per round trip: {:.2} us alone, {:.2} floor, {:.2} copy floor, {:.2} agent \
             (ratio {:.3}, floor {:.3}, copy floor {:.3}; agent rounds {}); in the programs {:.2} us (agent), {:.2} us (copy floor); \
             drops {} (the copy floor's none: the bench stops otherwise)",
            p["message_bytes"],
            p["round_trips_per_s"],
            p["median_nothing"].as_f64().unwrap_or(0.0),
            p["median_floor"].as_f64().unwrap_or(0.0),
            p["median_copy_floor"].as_f64().unwrap_or(0.0),
            p["median_agent"].as_f64().unwrap_or(0.0),
            p["ratio_agent"].as_f64().unwrap_or(0.0),
            p["ratio_floor"].as_f64().unwrap_or(0.0),
            p["ratio_copy_floor"].as_f64().unwrap_or(0.0),
            range(&p["agent_cpu_us_per_round_trip"], " us"),
            p["programs_us_per_round_trip"].as_f64().unwrap_or(0.0),
            p["copy_floor_programs_us_per_round_trip"].as_f64().unwrap_or(0.0),
            p["drops_with_agent"]
        );
    }
    if let Some(Value::Object(k)) = r.get("kernel_cost") {
        for (size, v) in k {
            let progs = v["programs"].as_object().cloned().unwrap_or_default();
            let parts: Vec<String> = progs
                .iter()
                .filter(|(n, _)| n.starts_with("sys_"))
                .map(|(n, p)| format!("{n} {:.0} ns", p["avg_ns"].as_f64().unwrap_or(0.0)))
                .collect();
            println!("  kernel cost per traced syscall ({size} B): {}", parts.join(", "));
        }
    }
    if let Some(d) = r.get("drops") {
        println!(
            "  drops at 4 KiB: none up to {:.0} msg/s; first drops at {}",
            d["highest_clean_msgs_per_s"].as_f64().unwrap_or(0.0),
            if d["drops_start_at_msgs_per_s"].is_null() {
                "no rate reached".to_owned()
            } else {
                d["drops_start_at_msgs_per_s"].to_string()
            }
        );
    }
    if let Some(m) = r.get("memory") {
        println!(
            "  agent RSS: {:.1} MiB idle, {:.1} MiB with 1,000 sessions (peak {:.1} MiB; target idle < 64 MiB)",
            m["idle_rss_mib"].as_f64().unwrap_or(0.0),
            m["sessions_1000_rss_mib"].as_f64().unwrap_or(0.0),
            m["peak_rss_mib"].as_f64().unwrap_or(0.0)
        );
        let f = &m["flood"];
        println!(
            "  agent RSS under {} s of {} B messages on {} sessions: peak {:.1} MiB (limit {} MiB); \
             partial messages held at most {:.1} MiB; {} of {} calls seen, {} ring drops, {} over the memory budget",
            f["seconds"],
            f["message_bytes"],
            f["sessions"],
            f["peak_rss_mib"].as_f64().unwrap_or(0.0),
            f["limit_mib"],
            f["max_buffered_mib"].as_f64().unwrap_or(0.0),
            f["calls_seen"],
            f["calls_sent"],
            f["ring_full_drops"],
            f["memory_budget_drops"]
        );
    }
    for (key, what) in [
        ("https", "FastMCP + Python SDK"),
        ("https_bun", "Bun.serve + Python SDK"),
        ("https_go_h2", "Go, crypto/tls, HTTP/2"),
    ] {
        let Some(Value::Array(rows)) = r.get(key) else { continue };
        for h in rows {
            println!(
                "  https ({what}) concurrency {:>2}: {:>6.0} req/s without, {:>6.0} with, ratio {:.3} \
                 ({} messages captured, drops {})",
                h["concurrency"],
                h["median_without_rps"].as_f64().unwrap_or(0.0),
                h["median_with_rps"].as_f64().unwrap_or(0.0),
                h["ratio"].as_f64().unwrap_or(0.0),
                h["https_messages_captured"],
                h["drops_with_monitor"]
            );
        }
    }
    if let Some(l) = r.get("log_pipe") {
        println!(
            "  JSON-log pipe ({} B lines): {:.3} of the rate without the agent with the reader untracked, \
             {:.3} with it tracked (its stream judged not MCP, {:.0} re-looks per run, {} found MCP)",
            l["line_bytes"],
            l["ratio_untracked"].as_f64().unwrap_or(0.0),
            l["ratio_tracked"].as_f64().unwrap_or(0.0),
            l["relooks_per_round"].as_f64().unwrap_or(0.0),
            l["relook_hits"]
        );
    }
    if let Some(h) = r.get("host") {
        println!(
            "  what it costs a node (workload on CPU 0, medians of {} interleaved rounds):",
            h["rounds"]
        );
        for (name, w) in h["workloads"].as_object().into_iter().flatten() {
            if w["unit"] == "CPU s" {
                let cs = &w["context_switches_per_call"];
                println!(
                    "    {name}: {:.3} s CPU alone, floor +{:.0} ns/call, agent +{:.0} ns/call ({:.2}x the floor; \
                     rounds {}); context switches per call {:.3} alone, {:.3} floor, {:.3} agent",
                    w["median_nothing"].as_f64().unwrap_or(0.0),
                    w["floor_ns_per_call"].as_f64().unwrap_or(0.0),
                    w["agent_ns_per_call"].as_f64().unwrap_or(0.0),
                    w["agent_over_floor"].as_f64().unwrap_or(0.0),
                    range(&w["agent_over_floor_by_round"], "x"),
                    cs["nothing"].as_f64().unwrap_or(0.0),
                    cs["floor"].as_f64().unwrap_or(0.0),
                    cs["agent"].as_f64().unwrap_or(0.0)
                );
            } else {
                let target = if name.starts_with("redis") {
                    " (target >= 0.98)"
                } else {
                    ""
                };
                println!(
                    "    {name}: {:.0}/s alone, floor ratio {:.3} (+{:.1} µs per request), \
                     agent ratio {:.3} (+{:.1} µs; rounds {}){target}",
                    w["median_nothing"].as_f64().unwrap_or(0.0),
                    w["ratio_floor"].as_f64().unwrap_or(0.0),
                    w["floor_us_per_request"].as_f64().unwrap_or(0.0),
                    w["ratio_agent"].as_f64().unwrap_or(0.0),
                    w["agent_us_per_request"].as_f64().unwrap_or(0.0),
                    range(&w["ratio_agent_by_round"], "")
                );
            }
        }
        for (setup, progs) in h["program_ns"].as_object().into_iter().flatten() {
            let parts: Vec<String> = progs
                .as_object()
                .into_iter()
                .flatten()
                .map(|(n, p)| format!("{n} {:.0} ns", p["avg_ns"].as_f64().unwrap_or(0.0)))
                .collect();
            println!("    {setup} per program run: {}", parts.join(", "));
        }
    }
    println!("  full results: {}", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_gives_the_lowest_and_highest_round_and_skips_missing_figures() {
        assert_eq!(range(&json!([1.5, 1.21, f64::NAN, 1.58]), "x"), "1.21x–1.58x");
        assert_eq!(range(&json!([0.95, 0.981]), ""), "0.950–0.981");
        assert_eq!(range(&json!([]), "x"), "?");
        assert_eq!(range(&Value::Null, "x"), "?");
    }
}
