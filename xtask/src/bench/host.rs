//! `cargo xtask bench host`: what the agent costs a node's other workloads,
//! which have nothing to do with MCP.
//!
//! The workloads: redis-benchmark; a Go HTTPS service that is not MCP
//! (tests/go/httpsload: Go's own TLS, which the agent probes only in
//! programs that can speak MCP); curl calling it over OpenSSL (whose
//! libssl the agent probes for every process); a JSON-log pipe, a text
//! pipe, `dd` of small blocks, failing calls.
//!
//! Each workload runs pinned to CPU 0 in three set-ups, interleaved round
//! by round: nothing attached; the floor (`mcp-monitor floor`: programs
//! that do nothing, where the agent hooks system calls on this kernel, the
//! raw syscall tracepoint or fexit on the calls' functions, which the bench
//! checks both use, and at the entries and returns of OpenSSL's functions
//! in the host's libssl); the
//! agent (default configuration, on CPU 1). Medians per set-up, and for the
//! CPU-time workloads the cost each adds per system call, so the agent's
//! own work reads as a multiple of the hooks' price. A last pass turns on
//! `kernel.bpf_stats_enabled` and reads each program's nanoseconds per run.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::*;

/// Interleaved rounds; medians over them.
const ROUNDS: usize = 5;

/// Port of the bench's own redis-server (not the packaged service's).
const REDIS_PORT: u16 = 16_379;

const PIPE_LINES: u64 = 1_000_000;

const DD_BLOCKS: u64 = 1_000_000;

const REDIS_REQUESTS: u64 = 200_000;

/// Seconds of each run of the Go HTTPS service (and its warm-up).
const GO_HTTPS_SECONDS: &str = "4";

/// Of each kind of failing call (an event loop's EAGAIN reads and the
/// like, which the agent's `sys_exit` sees too).
const FAILING_CALLS: u64 = 1_000_000;

/// What runs beside the workload.
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Nothing,
    Floor,
    Agent,
}

impl Setup {
    const ALL: [Setup; 3] = [Setup::Nothing, Setup::Floor, Setup::Agent];

    fn name(self) -> &'static str {
        match self {
            Setup::Nothing => "nothing",
            Setup::Floor => "floor",
            Setup::Agent => "agent",
        }
    }
}

/// How the floor hooks system calls (from its start-up line).
static FLOOR_HOOK: std::sync::OnceLock<&str> = std::sync::OnceLock::new();
/// How the first floor or agent started hooked them (`fexit`,
/// `tracepoint`); every later one must do the same.
static SYSCALL_HOOK: std::sync::OnceLock<&str> = std::sync::OnceLock::new();

/// The floor or the agent while it runs.
enum Attached {
    Nothing,
    Floor(Child),
    Agent(Agent),
}

impl Attached {
    fn start(setup: Setup, port: u16) -> Result<Attached> {
        let attached = match setup {
            Setup::Nothing => return Ok(Attached::Nothing),
            Setup::Floor => Attached::Floor(start_floor()?),
            Setup::Agent => Attached::Agent(Agent::start_on(port, Some(1))?),
        };
        let hook = match &attached {
            Attached::Floor(_) => FLOOR_HOOK.get().copied().unwrap_or("?"),
            Attached::Agent(a) if a.metric("mcp_monitor_syscall_hook", "hook=\"fexit\"") == 1.0 => "fexit",
            _ => "tracepoint",
        };
        // The floor and the agent must hook system calls the same way, or
        // the comparison is not like for like (the floor decides as the
        // agent does, but the agent also loads its real programs).
        let first = SYSCALL_HOOK.get_or_init(|| hook);
        if *first != hook {
            attached.stop();
            bail!("the floor and the agent hook system calls differently here ({first} and {hook}): see their start-up lines");
        }
        Ok(attached)
    }

    fn stop(self) {
        match self {
            Attached::Nothing => {}
            Attached::Floor(c) => stop_floor(c),
            Attached::Agent(a) => a.stop(),
        }
    }
}

/// `mcp-monitor floor` on CPU 1, returned once its programs are attached.
pub(super) fn start_floor() -> Result<Child> {
    let (child, line) = spawn_floor(&[])?;
    let hook = if line.contains("(fexit programs on") {
        "fexit"
    } else {
        "tracepoint"
    };
    let _ = FLOOR_HOOK.set(hook);
    // curl's floor would be that of the syscall hook alone.
    if !line.contains("libssl") {
        stop_floor(child);
        bail!("mcp-monitor floor probed no libssl file: {line}");
    }
    Ok(child)
}

/// The copy floor (`mcp-monitor floor --copy-reads echo-pair`) on CPU 1,
/// returned once its program is attached: every read of the echo pair put
/// in the ring and read back, and nothing else. Its stderr goes on to the
/// bench's, after the start-up line.
pub(super) fn start_copy_floor() -> Result<Child> {
    Ok(spawn_floor(&["--copy-reads", "echo-pair"])?.0)
}

/// Stops the copy floor; what its reader took (its JSON line: `records`,
/// `bytes`, `newlines`, `submitted`, `ring_full`, `copy_failed`).
pub(super) fn stop_copy_floor(c: Child) -> Result<Value> {
    // SAFETY: signalling our own child.
    unsafe { kill(c.id() as i32, 15) };
    let out = c.wait_with_output().context("waiting for the copy floor")?;
    if !out.status.success() {
        bail!(
            "mcp-monitor floor --copy-reads ended with {} (its errors are above)",
            out.status
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("the copy floor's report: {:?}", String::from_utf8_lossy(&out.stdout)))
}

/// `mcp-monitor floor ARGS` on CPU 1, and its start-up line, once it has
/// attached (its stdout piped, its stderr passed on to the bench's).
fn spawn_floor(args: &[&str]) -> Result<(Child, String)> {
    let mut child = pinned(Some(1), &monitor_bin())
        .arg("floor")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting mcp-monitor floor")?;
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line?;
        if line.starts_with("floor:") {
            // Keep draining its stderr so it never blocks on a full pipe,
            // onto the bench's: its warnings and errors show.
            std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| eprintln!("{l}")));
            return Ok((child, line));
        }
    }
    let _ = child.wait();
    bail!("mcp-monitor floor exited before attaching (run as root; see its output above)")
}

/// Stops `mcp-monitor floor`.
pub(super) fn stop_floor(mut c: Child) {
    // SAFETY: signalling our own child.
    unsafe { kill(c.id() as i32, 15) };
    let _ = c.wait();
}

/// What a workload cost: CPU time and context switches of its processes.
pub(super) struct Usage {
    pub(super) cpu_s: f64,
    pub(super) switches: f64,
}

/// Usage of every child (and its descendants) waited for so far.
pub(super) fn children_usage() -> Usage {
    // SAFETY: rusage is plain integers, valid zeroed; getrusage only
    // writes into it (and cannot fail for RUSAGE_CHILDREN and a valid
    // pointer).
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    Usage {
        cpu_s: secs(u.ru_utime) + secs(u.ru_stime),
        switches: (u.ru_nvcsw + u.ru_nivcsw) as f64,
    }
}

/// User + system CPU seconds and context switches of a shell command and
/// its children, pinned to CPU 0: the difference of this process's
/// children's usage around it (the agent and the floor, children too, are
/// only waited for between workloads). The switches show how a workload
/// reacts to slower calls: a pipe's reader is woken more often when each
/// write costs more, and the switches cost more than the hooks.
fn cpu_usage(script: &str) -> Result<Usage> {
    let before = children_usage();
    let out = Command::new("taskset")
        .args(["-c", "0", "sh", "-c"])
        .arg(format!("{script} >/dev/null"))
        .output()
        .context("running taskset")?;
    if !out.status.success() {
        bail!("`{script}` failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let after = children_usage();
    Ok(Usage {
        cpu_s: after.cpu_s - before.cpu_s,
        switches: after.switches - before.switches,
    })
}

/// CPU seconds of a workload (`cpu_usage`).
fn cpu_seconds(script: &str) -> Result<f64> {
    Ok(cpu_usage(script)?.cpu_s)
}

/// redis-benchmark SET and GET requests/s against the bench's server.
fn redis_rps() -> Result<(f64, f64)> {
    let out = Command::new("taskset")
        .args(["-c", "0", "redis-benchmark", "-p"])
        .arg(REDIS_PORT.to_string())
        .args(["-c", "50", "-n"])
        .arg(REDIS_REQUESTS.to_string())
        .args(["-t", "set,get", "--csv"])
        .output()
        .context("running redis-benchmark")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = |test: &str| -> Option<f64> {
        text.lines().find_map(|l| {
            let mut f = l.split(',').map(|c| c.trim_matches('"'));
            (f.next()? == test).then(|| f.next()?.parse().ok()).flatten()
        })
    };
    match (rate("SET"), rate("GET")) {
        (Some(s), Some(g)) => Ok((s, g)),
        _ => bail!("redis-benchmark printed no SET/GET rates: {text}"),
    }
}

/// One workload's figures per set-up.
struct Workload {
    name: &'static str,
    /// What one figure is: "requests/s" (higher is better) or "CPU s".
    unit: &'static str,
    /// System calls of the workload per run (read + write), for the cost
    /// per call; 0 where not counted.
    calls: u64,
    runs: [Vec<f64>; 3],
    /// Context switches per run ("CPU s" workloads).
    switches: [Vec<f64>; 3],
}

impl Workload {
    fn new(name: &'static str, unit: &'static str, calls: u64) -> Self {
        Self {
            name,
            unit,
            calls,
            runs: Default::default(),
            switches: Default::default(),
        }
    }

    /// `f(nothing, floor, agent)` of each round's runs, in round order.
    fn by_round(&self, f: impl Fn(f64, f64, f64) -> f64) -> Vec<f64> {
        let [none, floor, agent] = &self.runs;
        none.iter()
            .zip(floor)
            .zip(agent)
            .map(|((n, fl), a)| f(*n, *fl, *a))
            .collect()
    }

    fn report(&self) -> Value {
        let med: Vec<f64> = self.runs.iter().map(|r| median(r.clone())).collect();
        let (none, floor, agent) = (med[0], med[1], med[2]);
        let mut v = json!({
            "unit": self.unit,
            "nothing": self.runs[0],
            "floor": self.runs[1],
            "agent": self.runs[2],
            "median_nothing": none,
            "median_floor": floor,
            "median_agent": agent,
        });
        if self.unit == "CPU s" {
            let per_call = |x: f64| (x - none) * 1e9 / self.calls as f64;
            let (f, a) = (per_call(floor), per_call(agent));
            v["calls_per_run"] = json!(self.calls);
            v["floor_ns_per_call"] = json!(f);
            v["agent_ns_per_call"] = json!(a);
            v["agent_over_floor"] = json!(if f > 0.0 { a / f } else { f64::NAN });
            // The same ratio within each round: how far one run's figure
            // can be from another's on this machine.
            v["agent_over_floor_by_round"] = json!(self.by_round(|none, floor, agent| {
                let f = floor - none;
                if f > 0.0 {
                    (agent - none) / f
                } else {
                    f64::NAN
                }
            }));
            v["ratio_agent"] = json!(agent / none);
            let per_call: Vec<f64> = self
                .switches
                .iter()
                .map(|r| median(r.clone()) / self.calls as f64)
                .collect();
            v["context_switches_per_call"] = json!({
                "nothing": per_call[0], "floor": per_call[1], "agent": per_call[2],
            });
        } else {
            v["ratio_floor"] = json!(floor / none);
            v["ratio_agent"] = json!(agent / none);
            v["ratio_agent_by_round"] = json!(self.by_round(|none, _, agent| agent / none));
            // What each set-up adds to one request, in microseconds.
            let added = |rate: f64| 1e6 / rate - 1e6 / none;
            v["floor_us_per_request"] = json!(added(floor));
            v["agent_us_per_request"] = json!(added(agent));
        }
        v
    }
}

/// Installs redis (server and benchmark) and curl if missing: only this
/// bench needs them.
fn ensure_redis() -> Result<()> {
    let have = |bin: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if have("redis-server") && have("redis-benchmark") && have("curl") {
        return Ok(());
    }
    step("installing redis-server, redis-tools and curl (Debian) for the host bench");
    sh(Command::new("apt-get").arg("update").arg("-q"))?;
    sh(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "redis-server",
            "redis-tools",
            "curl",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn start_redis() -> Result<Child> {
    let child = Command::new("taskset")
        .args(["-c", "0", "redis-server", "--port"])
        .arg(REDIS_PORT.to_string())
        .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting redis-server")?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", REDIS_PORT)).is_ok() {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("redis-server did not listen on port {REDIS_PORT}")
}

pub(super) fn host(port: u16) -> Result<Value> {
    ensure_redis()?;
    let mut redis = start_redis()?;
    let result = measure(port);
    // SAFETY: signalling our own child.
    unsafe { kill(redis.id() as i32, 15) };
    let _ = redis.wait();
    result
}

/// `tests/go/httpsload` with its certificate, pinned to CPU 0.
fn httpsload(bin: &Path, cert: &Path, key: &Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"])
        .arg(bin)
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key);
    cmd
}

/// A Go HTTPS service that is not MCP, with its load client in the same
/// process (tests/go/httpsload: HTTP/1.1, 8 connections), pinned to CPU 0:
/// requests/s. Go programs carry their own TLS, which the agent probes in
/// the executable; one it leaves alone pays only the syscall hook.
fn go_https_rps(bin: &Path, cert: &Path, key: &Path, seconds: &str) -> Result<f64> {
    let out = httpsload(bin, cert, key)
        .args(["-conc", "8", "-seconds", seconds])
        .stderr(Stdio::inherit())
        .output()
        .context("running tests/go/httpsload")?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().parse() {
        Ok(rps) if out.status.success() => Ok(rps),
        _ => bail!("tests/go/httpsload failed or printed no rate: {text}"),
    }
}

/// Port of the Go HTTPS service curl calls.
const CURL_SERVICE_PORT: u16 = 18_555;

/// Requests of each curl run, on one connection.
const CURL_REQUESTS: u32 = 10_000;

/// curl (OpenSSL's libssl, which the agent probes for every process that
/// loads it) calling the Go HTTPS service `CURL_REQUESTS` times on one
/// connection, pinned to CPU 0: requests/s.
fn curl_rps() -> Result<f64> {
    let started = Instant::now();
    let out = Command::new("taskset")
        .args(["-c", "0", "curl", "-fsSk", "-o", "/dev/null"])
        .arg(format!(
            "https://127.0.0.1:{CURL_SERVICE_PORT}/api/items?[1-{CURL_REQUESTS}]"
        ))
        .output()
        .context("running curl")?;
    if !out.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(f64::from(CURL_REQUESTS) / started.elapsed().as_secs_f64())
}

/// The Go HTTPS service on `CURL_SERVICE_PORT`, pinned to CPU 0.
fn start_go_service(bin: &Path, cert: &Path, key: &Path) -> Result<Child> {
    let mut child = httpsload(bin, cert, key)
        .arg("-serve")
        .arg(format!("127.0.0.1:{CURL_SERVICE_PORT}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting tests/go/httpsload -serve")?;
    for _ in 0..100 {
        // Exited (the port taken by a service left over from an
        // interrupted run, say): not the one to measure.
        if let Some(status) = child.try_wait()? {
            bail!("tests/go/httpsload -serve exited ({status}): is port {CURL_SERVICE_PORT} taken?");
        }
        if std::net::TcpStream::connect(("127.0.0.1", CURL_SERVICE_PORT)).is_ok() {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the Go HTTPS service did not listen on port {CURL_SERVICE_PORT}")
}

fn measure(port: u16) -> Result<Value> {
    let peers = root().join("target/go-peers");
    crate::go_toolchain::build_peers(&peers)?;
    let https_bin = peers.join("1.24/httpsload");
    let (cert, key) = super::https::certificate()?;
    let mut service = start_go_service(&https_bin, &cert, &key)?;
    let result = measure_with(port, &https_bin, &cert, &key);
    let _ = service.kill();
    let _ = service.wait();
    result
}

fn measure_with(port: u16, https_bin: &Path, cert: &Path, key: &Path) -> Result<Value> {
    let pair = echo_pair();
    let pair = pair.display();
    let json_pipe = format!("{pair} logs --size 200 --count {PIPE_LINES}");
    let text_pipe = format!("{pair} logs --text --size 200 --count {PIPE_LINES}");
    let dd = format!("dd if=/dev/zero of=/dev/null bs=512 count={DD_BLOCKS} status=none");
    let failing = format!("{pair} failing-calls --count {FAILING_CALLS}");
    let mut set = Workload::new("redis SET", "requests/s", 0);
    let mut get = Workload::new("redis GET", "requests/s", 0);
    let mut go_https = Workload::new("Go HTTPS service, not MCP (HTTP/1.1, 8 connections)", "requests/s", 0);
    let mut curl = Workload::new(
        "curl over OpenSSL, not MCP (10,000 requests, one connection)",
        "requests/s",
        0,
    );
    // A write per line; the reader reads 8 KiB at a time (about 40 lines).
    let calls = PIPE_LINES + PIPE_LINES * 200 / 8192;
    let mut json_w = Workload::new("JSON-log pipe (1M lines of 200 B)", "CPU s", calls);
    let mut text_w = Workload::new("text pipe (1M lines of 200 B)", "CPU s", calls);
    let mut dd_w = Workload::new("dd 512 B /dev/zero -> /dev/null (1M blocks)", "CPU s", 2 * DD_BLOCKS);
    let mut failing_w = Workload::new(
        "failing calls (1M EAGAIN reads of an empty pipe, 1M close(-1))",
        "CPU s",
        2 * FAILING_CALLS,
    );
    for round in 0..ROUNDS {
        for (i, setup) in Setup::ALL.into_iter().enumerate() {
            step(&format!("host cost, round {} of {ROUNDS}: {}", round + 1, setup.name()));
            let attached = Attached::start(setup, port)?;
            let (s, g) = redis_rps()?;
            set.runs[i].push(s);
            get.runs[i].push(g);
            // A short first run: a new executable is looked at (and, if
            // it is to be, probed) within milliseconds of its start.
            go_https_rps(https_bin, cert, key, "0.5")?;
            go_https.runs[i].push(go_https_rps(https_bin, cert, key, GO_HTTPS_SECONDS)?);
            curl.runs[i].push(curl_rps()?);
            for (w, script) in [
                (&mut json_w, &json_pipe),
                (&mut text_w, &text_pipe),
                (&mut dd_w, &dd),
                (&mut failing_w, &failing),
            ] {
                let u = cpu_usage(script)?;
                w.runs[i].push(u.cpu_s);
                w.switches[i].push(u.switches);
            }
            attached.stop();
        }
    }
    let mut workloads = serde_json::Map::new();
    for w in [&set, &get, &go_https, &curl, &json_w, &text_w, &dd_w, &failing_w] {
        workloads.insert(w.name.to_owned(), w.report());
    }
    Ok(json!({
        "rounds": ROUNDS,
        "workloads": workloads,
        "program_ns": program_costs(port, &json_pipe)?,
    }))
}

/// Nanoseconds per run of each attached program (floor and agent), from
/// `kernel.bpf_stats_enabled`, over the JSON-log pipe, redis and curl (the
/// time in the programs only: a uprobe's trap is not in it).
fn program_costs(port: u16, json_pipe: &str) -> Result<Value> {
    step("host cost: nanoseconds per program run (kernel.bpf_stats_enabled)");
    let sysctl = Path::new("/proc/sys/kernel/bpf_stats_enabled");
    let before = std::fs::read_to_string(sysctl).unwrap_or_default();
    std::fs::write(sysctl, "1").context("enabling kernel.bpf_stats_enabled")?;
    let mut out = serde_json::Map::new();
    for setup in [Setup::Floor, Setup::Agent] {
        let attached = Attached::start(setup, port)?;
        let r = (|| -> Result<Value> {
            cpu_seconds(json_pipe)?;
            redis_rps()?;
            curl_rps()?;
            program_run_costs(|name| ["floor", "sys_", "fexit_", "ssl_"].iter().any(|p| name.starts_with(p)))
        })();
        attached.stop();
        out.insert(setup.name().to_owned(), r?);
    }
    let _ = std::fs::write(sysctl, before.trim());
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-round figures pair each round's own runs: a round whose
    /// floor and agent both ran slow gives the same ratio as a fast one,
    /// and the medians stay the medians of the runs.
    #[test]
    fn workload_reports_each_rounds_ratio_beside_the_medians() {
        let mut w = Workload::new("w", "CPU s", 1_000_000);
        for (none, floor, agent) in [(1.0, 1.02, 1.03), (2.0, 2.04, 2.06), (1.0, 1.02, 1.04)] {
            w.runs[0].push(none);
            w.runs[1].push(floor);
            w.runs[2].push(agent);
            for s in &mut w.switches {
                s.push(0.0);
            }
        }
        let r = w.report();
        let rounds: Vec<f64> = r["agent_over_floor_by_round"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(rounds.len(), 3);
        for (got, want) in rounds.iter().zip([1.5, 1.5, 2.0]) {
            assert!((got - want).abs() < 1e-9, "{rounds:?}");
        }
        // Medians of the runs: nothing 1.0, floor 1.02, agent 1.04.
        assert!((r["floor_ns_per_call"].as_f64().unwrap() - 20.0).abs() < 1e-6, "{r}");
        assert!((r["agent_ns_per_call"].as_f64().unwrap() - 40.0).abs() < 1e-6, "{r}");

        let mut rps = Workload::new("r", "requests/s", 0);
        for (none, floor, agent) in [(100.0, 99.0, 95.0), (200.0, 190.0, 196.0)] {
            rps.runs[0].push(none);
            rps.runs[1].push(floor);
            rps.runs[2].push(agent);
        }
        let r = rps.report();
        assert_eq!(r["ratio_agent_by_round"], json!([0.95, 0.98]), "{r}");
    }

    /// A shell that spins and then sleeps shows CPU time and at least the
    /// sleep's context switch, and a second, shorter run less CPU: the
    /// figures are this workload's, not the bench's other children's.
    #[test]
    fn children_usage_reads_cpu_and_context_switches() {
        let spin = |n: u32| format!("i=0; while [ $i -lt {n} ]; do i=$((i+1)); done; sleep 0.05");
        let long = cpu_usage(&spin(300_000)).unwrap();
        assert!(long.cpu_s > 0.05, "{} CPU s for a 300,000-step shell loop", long.cpu_s);
        assert!(long.cpu_s < 60.0, "{} CPU s: not seconds", long.cpu_s);
        assert!(
            long.switches >= 1.0,
            "{} context switches across a sleep",
            long.switches
        );
        let short = cpu_usage(&spin(1_000)).unwrap();
        assert!(
            short.cpu_s < long.cpu_s,
            "{} CPU s for 1,000 steps, {} for 300,000",
            short.cpu_s,
            long.cpu_s
        );
    }
}
