//! What the agent costs the rest of the host: echo-pair and JSON-log pipes
//! with and without the agent, interleaved rounds, and the kernel programs' own run time.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::*;

/// Most bytes of a read the copy floor puts in the ring
/// (`monitor_common::FLOOR_COPY_BYTES`).
const FLOOR_COPY_BYTES: usize = 4096;

/// Rounds per overhead case; this class of machine varies by tens of
/// percent from minute to minute, so medians of interleaved rounds.
const ROUNDS: u64 = 5;

pub(super) fn overhead(port: u16) -> Result<Value> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut rows = Vec::new();
    for (size, count) in [(200usize, 60_000u64), (4096, 30_000), (65536, 3_000)] {
        // Unpinned: as users run it. Pinned (pair on CPU 0, agent on CPU 1):
        // isolates what the kernel programs cost the traced processes.
        for pin in [false, true] {
            if pin && cores < 2 {
                continue;
            }
            let (pair_cpu, agent_cpu) = if pin { (Some(0), Some(1)) } else { (None, None) };
            // The copy floor where its records fit the messages (4 KiB:
            // smaller ones would leave most of each record's ring space
            // unused, larger ones be cut; of the 4 KiB requests it cuts
            // the newline, the line's 4,097th byte), and pinned, as it
            // reads on CPU 1.
            let with_copy_floor = pin && size == FLOOR_COPY_BYTES;
            step(&format!(
                "overhead at {size} B{}: {ROUNDS} interleaved rounds of nothing / floor{} / agent",
                if pin {
                    ", pair pinned to CPU 0 and agent to CPU 1"
                } else {
                    ""
                },
                if with_copy_floor { " / copy floor" } else { "" }
            ));
            let (mut without, mut floor, mut copy, mut with) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let (mut drops, mut agent_cpu_s, mut wakeups) = (0.0, 0.0, 0);
            for _ in 0..ROUNDS {
                without.push(pair_on(size, count, None, pair_cpu)?["msgs_per_s"].as_f64().unwrap());
                // The floor: do-nothing programs on the agent's hooks, what
                // any sensor on them costs the pair before doing anything.
                let f = super::host::start_floor()?;
                floor.push(pair_on(size, count, None, pair_cpu)?["msgs_per_s"].as_f64().unwrap());
                super::host::stop_floor(f);
                if with_copy_floor {
                    let c = super::host::start_copy_floor()?;
                    let run = pair_on(size, count, None, pair_cpu);
                    let report = super::host::stop_copy_floor(c);
                    copy.push(run?["msgs_per_s"].as_f64().unwrap());
                    copy_floor_whole(report?, count)?;
                }
                let agent = Agent::start_on(port, agent_cpu)?;
                let cpu0 = agent.cpu_seconds();
                let irq_work = irq_work_interrupts();
                with.push(pair_on(size, count, None, pair_cpu)?["msgs_per_s"].as_f64().unwrap());
                wakeups += irq_work_interrupts().saturating_sub(irq_work);
                std::thread::sleep(Duration::from_millis(500));
                agent_cpu_s += agent.cpu_seconds() - cpu0;
                drops += agent.metric("mcp_monitor_capture_dropped_total", "");
                agent.stop();
            }
            let (w, fl, m) = (median(without.clone()), median(floor.clone()), median(with.clone()));
            let copy_floor = (!copy.is_empty()).then(|| {
                json!({
                    "msgs_per_s": copy,
                    "median": median(copy.clone()),
                    "ratio": median(copy.clone()) / w,
                })
            });
            rows.push(json!({
                "message_bytes": size,
                "pinned": pin,
                "messages_per_run": count,
                "without_msgs_per_s": without,
                "with_msgs_per_s": with,
                "median_without": w,
                "median_with": m,
                "ratio": m / w,
                "floor_msgs_per_s": floor,
                "median_floor": fl,
                "ratio_floor": fl / w,
                // Each read's bytes put in the ring and read back, nothing
                // else: what any sensor that ships them pays (`pair_cpu`).
                "copy_floor": copy_floor,
                "agent_cpu_us_per_message": agent_cpu_s * 1e6 / (ROUNDS * count) as f64,
                "drops_with_monitor": drops,
                // The kernel's ring wake-ups of the agent (an IPI each, an
                // exit to the hypervisor in a VM), with the host's other
                // IRQ work (rare: none in rounds without the agent).
                "irq_work_per_1000_messages": wakeups as f64 * 1000.0 / (ROUNDS * count) as f64,
            }));
        }
    }
    Ok(Value::Array(rows))
}

/// Round trips per second of [`pair_cpu`]: below what the agent keeps up
/// with on one CPU (~75,000 of 4 KiB here), so no chunk is dropped and
/// the comparison is of the same work.
const PAIR_CPU_RATE: u64 = 30_000;

/// Round trips per run of [`pair_cpu`] (two seconds at its rate).
const PAIR_CPU_COUNT: u64 = 60_000;

/// What a traced round trip costs the pair in CPU, not in rate: the
/// pinned 4 KiB pair paced at [`PAIR_CPU_RATE`], its CPU time per round
/// trip with nothing, the floor, the copy floor and the agent, in
/// interleaved rounds; then one run each of the copy floor and the agent
/// with `kernel.bpf_stats_enabled` for the time spent inside their programs
/// per round trip. The rate ratio of `overhead` moves with the agent's own
/// CPU (once it saturates, dropped chunks cost the pair less); at a pace
/// the agent keeps up with, the CPU added per round trip beside the
/// programs' time says how much of the price is the programs' work. The
/// copy floor (`mcp-monitor floor --copy-reads`: each read's bytes put in
/// the ring in one copy and read back, nothing else) is what any sensor
/// that ships the bytes to userspace pays; the agent's distance from it is
/// its design's.
pub(super) fn pair_cpu(port: u16) -> Result<Value> {
    const SIZE: usize = 4096;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if cores < 2 {
        return Ok(json!({"skipped": "needs two CPUs (pair on one, agent on the other)"}));
    }
    step(&format!(
        "the pinned {SIZE} B pair's CPU per round trip at {PAIR_CPU_RATE}/s: {ROUNDS} interleaved rounds of nothing / floor / copy floor / agent"
    ));
    let rate = Some(PAIR_CPU_RATE as f64);
    let per_round_trip_us = || -> Result<f64> {
        let before = super::host::children_usage().cpu_s;
        pair_on(SIZE, PAIR_CPU_COUNT, rate, Some(0))?;
        Ok((super::host::children_usage().cpu_s - before) * 1e6 / PAIR_CPU_COUNT as f64)
    };
    let (mut without, mut floor, mut copy, mut with) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut drops, mut copied) = (0.0, 0);
    for _ in 0..ROUNDS {
        without.push(per_round_trip_us()?);
        let f = super::host::start_floor()?;
        floor.push(per_round_trip_us()?);
        super::host::stop_floor(f);
        let c = super::host::start_copy_floor()?;
        let cpu = per_round_trip_us();
        let report = super::host::stop_copy_floor(c);
        copy.push(cpu?);
        let report = copy_floor_whole(report?, PAIR_CPU_COUNT)?;
        copied += report["records"].as_u64().unwrap_or(0);
        let agent = Agent::start_on(port, Some(1))?;
        with.push(per_round_trip_us()?);
        std::thread::sleep(Duration::from_millis(500));
        drops += agent.metric("mcp_monitor_capture_dropped_total", "");
        agent.stop();
    }
    // The programs' own time: every program the copy floor or the agent
    // loaded, statistics on only for these runs (they add two clock reads
    // to each program run).
    let sysctl = Path::new("/proc/sys/kernel/bpf_stats_enabled");
    let stats_before = std::fs::read_to_string(sysctl).unwrap_or_default();
    std::fs::write(sysctl, "1").context("enabling kernel.bpf_stats_enabled")?;
    // `attach` starts one and returns what stops it (and checks its run).
    let programs_ns = |attach: &dyn Fn() -> Result<Box<dyn FnOnce() -> Result<()>>>| -> Result<f64> {
        let others = program_times()?;
        let detach = attach()?;
        let at = |t: &std::collections::HashMap<u64, u64>| {
            t.iter()
                .filter(|(id, _)| !others.contains_key(id))
                .map(|(_, ns)| *ns as f64)
                .sum::<f64>()
        };
        let t0 = at(&program_times()?);
        let run = pair_on(SIZE, PAIR_CPU_COUNT, rate, Some(0));
        let t1 = at(&program_times()?);
        let stopped = detach();
        run?;
        stopped?;
        Ok(t1 - t0)
    };
    let copy_ns = programs_ns(&|| {
        let c = super::host::start_copy_floor()?;
        Ok(Box::new(move || {
            copy_floor_whole(super::host::stop_copy_floor(c)?, PAIR_CPU_COUNT).map(drop)
        }))
    });
    let agent_ns = programs_ns(&|| {
        let agent = Agent::start_on(port, Some(1))?;
        Ok(Box::new(move || {
            agent.stop();
            Ok(())
        }))
    });
    let _ = std::fs::write(sysctl, stats_before.trim());
    let (copy_ns, agent_ns) = (copy_ns?, agent_ns?);
    let (w, fl, c, m) = (
        median(without.clone()),
        median(floor.clone()),
        median(copy.clone()),
        median(with.clone()),
    );
    Ok(json!({
        "message_bytes": SIZE,
        "round_trips_per_s": PAIR_CPU_RATE,
        "round_trips_per_run": PAIR_CPU_COUNT,
        "nothing_cpu_us_per_round_trip": without,
        "floor_cpu_us_per_round_trip": floor,
        "copy_floor_cpu_us_per_round_trip": copy,
        "agent_cpu_us_per_round_trip": with,
        "median_nothing": w,
        "median_floor": fl,
        "median_copy_floor": c,
        "median_agent": m,
        // The pair's work per CPU second with the agent, as a share of
        // its work alone: what the rate ratio would be were the pair
        // CPU-bound and the agent never behind.
        "ratio_agent": w / m,
        "ratio_floor": w / fl,
        "ratio_copy_floor": w / c,
        "drops_with_agent": drops,
        "copy_floor_reads": copied,
        "programs_us_per_round_trip": agent_ns / 1e3 / PAIR_CPU_COUNT as f64,
        "copy_floor_programs_us_per_round_trip": copy_ns / 1e3 / PAIR_CPU_COUNT as f64,
    }))
}

/// The copy floor's report, if it copied and read back every read: none
/// refused by the ring or failed to copy, every record its program put in
/// the ring read, and at least the two reads of each of `round_trips`
/// (the pair's start-up and handshake add a few). A floor that copied
/// less would flatter itself.
fn copy_floor_whole(report: Value, round_trips: u64) -> Result<Value> {
    let n = |k: &str| report[k].as_u64().unwrap_or(0);
    let (records, submitted) = (n("records"), n("submitted"));
    if n("ring_full") + n("copy_failed") > 0 || records != submitted || records < 2 * round_trips {
        bail!(
            "the copy floor did not copy and read back every read of {round_trips} round trips \
             (its report: {report}): its figures would be those of a lesser copy"
        );
    }
    Ok(report)
}

/// Run time so far (`kernel.bpf_stats_enabled`) of every BPF program
/// loaded on the host, by id.
fn program_times() -> Result<std::collections::HashMap<u64, u64>> {
    Ok(bpf_programs()?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_u64()?, p["run_time_ns"].as_u64().unwrap_or(0))))
        .collect())
}

/// IRQ-work interrupts taken so far on every CPU (`/proc/interrupts`,
/// `IWI`): how the kernel's ring wakes the agent. 0 where not shown.
fn irq_work_interrupts() -> u64 {
    std::fs::read_to_string("/proc/interrupts")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("IWI:"))
        .map(|counts| counts.split_whitespace().map_while(|c| c.parse::<u64>().ok()).sum())
        .unwrap_or(0)
}

/// A JSON-log pipe (not MCP) through `echo-pair logs`, in interleaved
/// rounds: without the agent; with it, the reader untracked (discovery
/// judges every read that starts with `{`); and with the reader tracked
/// (`--exe echo-pair`): its stream is judged not MCP at the first line,
/// then every later read that starts like MCP is looked at again. The
/// price of not judging a stream for good.
pub(super) fn log_pipe(port: u16) -> Result<Value> {
    const LINES: u64 = 200_000;
    step(&format!(
        "JSON-log pipe, {ROUNDS} interleaved rounds: no agent / agent / agent tracking the reader"
    ));
    let run = || -> Result<f64> {
        let out = Command::new(echo_pair())
            .args(["logs", "--size", "200", "--count", &LINES.to_string()])
            .output()
            .context("running echo-pair logs")?;
        if !out.status.success() {
            bail!("echo-pair logs failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        Ok(v["lines_per_s"].as_f64().unwrap_or(0.0))
    };
    let (mut without, mut untracked, mut tracked) = (Vec::new(), Vec::new(), Vec::new());
    let (mut looked, mut found) = (0.0, 0.0);
    for _ in 0..ROUNDS {
        without.push(run()?);
        let agent = Agent::start(port)?;
        untracked.push(run()?);
        agent.stop();
        let agent = Agent::start_with(port, None, &["--exe", "echo-pair"])?;
        tracked.push(run()?);
        std::thread::sleep(Duration::from_millis(1500));
        looked += agent.metric("mcp_monitor_stream_relooks_total", "kernel_looked");
        found += agent.metric("mcp_monitor_stream_relooks_total", "kernel_found");
        agent.stop();
    }
    let w = median(without.clone());
    Ok(json!({
        "line_bytes": 200,
        "lines_per_run": LINES,
        "without_lines_per_s": without,
        "untracked_lines_per_s": untracked,
        "tracked_lines_per_s": tracked,
        "ratio_untracked": median(untracked) / w,
        "ratio_tracked": median(tracked) / w,
        "relooks_per_round": looked / ROUNDS as f64,
        "relook_hits": found,
    }))
}

/// Average kernel time per run of each capture program, from the kernel's
/// BPF statistics (enabled for the measurement), while a pinned 4 KiB
/// ping-pong runs.
pub(super) fn kernel_cost(port: u16) -> Result<Value> {
    step("kernel cost per traced syscall (kernel.bpf_stats_enabled, bpftool)");
    let sysctl = Path::new("/proc/sys/kernel/bpf_stats_enabled");
    let before = std::fs::read_to_string(sysctl).unwrap_or_default();
    std::fs::write(sysctl, "1").context("enabling kernel.bpf_stats_enabled")?;
    let mut out = serde_json::Map::new();
    for size in [200usize, 4096] {
        // A fresh agent per size: the kernel's counters start at load.
        let agent = Agent::start(port)?;
        let r = pair_on(size, 50_000, None, Some(0))?;
        let per = program_run_costs(|name| name.starts_with("sys_") || name.starts_with("sched_"))?;
        out.insert(
            format!("{size}"),
            json!({"pair_msgs_per_s": r["msgs_per_s"], "programs": per}),
        );
        agent.stop();
    }
    let _ = std::fs::write(sysctl, before.trim());
    Ok(Value::Object(out))
}
