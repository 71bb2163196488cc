//! Lifecycle and bounds: pid reuse, exits, ticks, bounded tables, kernel
//! counters, chunking invariance, workload identity, scrubbed command lines.

use super::*;

#[test]
fn pid_reuse_never_mixes_sessions() {
    let mut s = Sim::new();
    s.handshake();
    s.exit(SERVER);
    assert_eq!(s.metric("mcp_monitor_sessions_active", &[]), 0.0);
    // Same pid, another process.
    let reborn = ProcKey {
        pid: SERVER.pid,
        start_ns: 9_999,
    };
    s.feed(info(reborn, "/usr/bin/other-server"));
    s.server = reborn;
    s.c2s = 21;
    s.s2c = 22;
    s.handshake();
    let first = &s.out.events[0];
    let later = s.out.events.last().unwrap();
    assert_ne!(first.session, later.session);
    assert_eq!(later.server.process.as_ref().unwrap().exe, "/usr/bin/other-server");
    assert_eq!(first.server.process.as_ref().unwrap().exe, "/usr/bin/server");
}

#[test]
fn exits_end_sessions_and_count_forgotten_requests() {
    let mut s = Sim::new();
    s.handshake();
    s.c(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}));
    s.exit(SERVER);
    assert_eq!(
        s.metric(
            "mcp_monitor_pending_requests_evicted_total",
            &[("reason", "session_end")]
        ),
        1.0
    );
    assert_eq!(s.pipeline.session_count(), 0);
}

#[test]
fn ticks_expire_requests_and_idle_sessions() {
    let mut s = Sim::with(PipelineConfig {
        request_timeout_ns: 10,
        session_idle_ns: 1_000_000_000,
        ..PipelineConfig::default()
    });
    s.handshake();
    s.c(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}));
    s.feed(Observation::Tick { ts_ns: s.ts + 1_000 });
    assert_eq!(
        s.metric("mcp_monitor_pending_requests_evicted_total", &[("reason", "timeout")]),
        1.0
    );
    s.s(json!({"jsonrpc":"2.0","id":1,"result":{}}));
    assert_eq!(s.metric("mcp_monitor_unpaired_responses_total", &[]), 1.0);
    s.feed(Observation::Tick {
        ts_ns: s.ts + 2_000_000_000,
    });
    assert_eq!(s.pipeline.session_count(), 0);
}

#[test]
fn unknown_methods_fold_into_other_in_metrics_only() {
    let mut s = Sim::new();
    s.handshake();
    s.c(json!({"jsonrpc":"2.0","id":1,"method":"x-vendor/secret-sauce","params":{}}));
    assert_eq!(
        s.out.events.last().unwrap().method.as_deref(),
        Some("x-vendor/secret-sauce")
    );
    assert_eq!(s.metric("mcp_monitor_messages_total", &[("method", "other")]), 1.0);
    assert!(!s.metrics.render().contains("secret-sauce"));
}

#[test]
fn state_tables_are_bounded() {
    let mut s = Sim::with(PipelineConfig {
        max_streams: 16,
        max_sessions: 16,
        ..PipelineConfig::default()
    });
    for i in 0..200u32 {
        let server = ProcKey {
            pid: 1000 + i,
            start_ns: 1,
        };
        let line = format!(
            "{}\n",
            json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{}})
        );
        let c = chunk(
            End {
                proc: server,
                fd: 0,
                kind: FdKind::Pipe,
                channel: 5000 + i as u64,
            },
            Direction::Ingress,
            line.as_bytes(),
            i as u64,
            chunk_flags::NEW_STREAM,
        );
        s.feed(Observation::Chunk(c));
    }
    assert!(s.pipeline.stdio.streams.len() <= 16);
    assert!(s.pipeline.session_count() <= 16);
    assert!(s.metric("mcp_monitor_state_evictions_total", &[("kind", "stream")]) > 0.0);
    assert!(s.metric("mcp_monitor_state_evictions_total", &[("kind", "session")]) > 0.0);
    // No writer notice came: each stream's message waited for one, and an
    // evicted stream's went on at its eviction.
    assert!(s.pipeline.stdio.waits.len() <= 16);
    assert!(s.metric("mcp_monitor_writer_waits_total", &[("outcome", "evicted")]) > 0.0);
    s.pipeline.finish(&mut s.out);
    assert_eq!(s.out.events.len(), 200, "evictions drop state, not messages");
}

#[test]
fn kernel_counters_become_metric_increments() {
    let mut s = Sim::new();
    let stats = |ring, trunc| {
        Observation::CaptureStats(CaptureStats {
            counters: vec![
                (CaptureCounter::Kernel(monitor_common::Counter::DropRingFull), ring),
                (CaptureCounter::Kernel(monitor_common::Counter::Truncated), trunc),
                (CaptureCounter::Kernel(monitor_common::Counter::Records), 99),
            ],
            programs: vec![("sys_exit_ingress".into(), ring * 10, trunc * 1_000_000_000)],
        })
    };
    s.feed(stats(2, 1));
    s.feed(stats(5, 1));
    assert_eq!(
        s.metric("mcp_monitor_bpf_program_runs_total", &[("program", "sys_exit_ingress")]),
        50.0
    );
    assert_eq!(
        s.metric(
            "mcp_monitor_bpf_program_run_seconds_total",
            &[("program", "sys_exit_ingress")]
        ),
        1.0
    );
    assert_eq!(
        s.metric("mcp_monitor_capture_dropped_total", &[("reason", "ring_full")]),
        5.0
    );
    assert_eq!(s.metric("mcp_monitor_capture_truncated_total", &[]), 1.0);
}

proptest! {
    /// However the kernel cuts the byte streams into reads, and with CRLF
    /// or blank lines in between, the events are the same.
    #[test]
    fn chunking_does_not_change_events(cuts in proptest::collection::vec(1usize..512, 1..40), crlf in any::<bool>(), blank in any::<bool>()) {
        let reference = {
            let mut s = Sim::new();
            for (c2s, m) in conversation() {
                if c2s { s.c(serde_json::from_str(&m).unwrap()) } else { s.s(serde_json::from_str(&m).unwrap()) }
            }
            s.rows()
        };
        let mut s = Sim::new();
        let mut cut = cuts.iter().cycle();
        for (c2s, m) in conversation() {
            let mut bytes = m.into_bytes();
            if crlf { bytes.push(b'\r'); }
            bytes.push(b'\n');
            if blank { bytes.extend_from_slice(b"\n  \n"); }
            let mut pieces: Vec<&[u8]> = Vec::new();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = (*cut.next().unwrap()).min(rest.len());
                pieces.push(&rest[..n]);
                rest = &rest[n..];
            }
            if c2s { s.client_sends(&pieces) } else { s.server_sends(&pieces) }
        }
        prop_assert_eq!(s.rows(), reference);
        prop_assert_eq!(s.metric("mcp_monitor_frame_errors_total", &[]), 0.0);
    }

    /// Garbage never panics and never grows state without bound.
    #[test]
    fn garbage_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..30)) {
        let mut s = Sim::with(PipelineConfig { max_frame: 256, max_pending_stream_bytes: 512, ..PipelineConfig::default() });
        for c in &chunks {
            s.client_sends(&[c]);
            s.server_sends(&[c]);
        }
        prop_assert!(s.pipeline.stdio.streams.values().all(|st| st.framer.buffered() <= 256));
    }

    /// Garbage and MCP lines, with or without the kernel's RESUMED flag, in
    /// any order: no panic, buffers bounded, and the re-judgements of the
    /// one stream never exceed its budget for the minute.
    #[test]
    fn relooks_stay_bounded(chunks in proptest::collection::vec((0u8..4, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..120)), 0..40)) {
        let max = 3;
        let mut s = Sim::with(PipelineConfig { max_frame: 256, max_relooks_per_minute: max, ..PipelineConfig::default() });
        for (what, resumed, noise) in &chunks {
            let data: Vec<u8> = match what {
                0 => noise.clone(),
                1 => b"{\"level\":\"info\"}\n".to_vec(),
                2 => b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}\n".to_vec(),
                _ => [noise.as_slice(), b"\n{\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n"].concat(),
            };
            let flags = chunk_flags::NEW_STREAM | if *resumed { chunk_flags::RESUMED } else { 0 };
            s.server_reads(&data, flags);
        }
        prop_assert!(s.pipeline.stdio.streams.values().all(|st| st.framer.buffered() <= 256));
        prop_assert!(s.metric("mcp_monitor_stream_relooks_total", &[("result", "resumed")]) <= max as f64);
    }
}

#[test]
fn pods_name_the_workload_even_when_they_appear_after_the_process() {
    use crate::identity::kubernetes::{ContainerInfo, PodInfo, WorkloadRef, WorkloadUpdate};
    use crate::observation::WorkloadChange;
    const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "7b4d6e7e-1f1c-4a0e-9a36-0c3c0b1f9d11";
    let metrics = Metrics::with_config(&crate::metrics::MetricsConfig {
        workload_labels: true,
        max_workload_label_values: 2,
    });
    let mut s = Sim::with_metrics(PipelineConfig::default(), metrics);
    s.feed(Observation::Process(Box::new(ProcessInfo {
        pid: SERVER.pid,
        start_ns: SERVER.start_ns,
        exe: "/usr/bin/server".into(),
        container_id: Some(CID.into()),
        pod_uid: Some(UID.into()),
        complete: true,
        ..Default::default()
    })));
    s.handshake();
    let first = serde_json::to_value(&s.out.events[0]).unwrap();
    assert!(first["server"].get("kubernetes").is_none(), "{first}");
    let pod = |workload: &str| PodInfo {
        uid: UID.into(),
        namespace: "team-a".into(),
        name: format!("{workload}-5d9c7b-x2x4z"),
        node: "node-1".into(),
        service_account: "mcp".into(),
        labels: [("app".to_owned(), workload.to_owned())].into(),
        workload: Some(WorkloadRef {
            kind: "Deployment".into(),
            name: workload.into(),
            inferred: false,
        }),
        containers: vec![ContainerInfo {
            id: CID.into(),
            name: "server".into(),
            image: "ghcr.io/x/server:1".into(),
            image_id: String::new(),
        }],
    };
    let ts = s.ts;
    s.feed(Observation::Workload(WorkloadChange {
        ts_ns: ts,
        update: WorkloadUpdate::Pod(pod("web")),
    }));
    assert_eq!(s.metric("mcp_monitor_kubernetes_pods", &[]), 1.0);
    s.c(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}));
    let v = serde_json::to_value(s.out.events.last().unwrap()).unwrap();
    let k = &v["server"]["kubernetes"];
    assert_eq!(k["namespace"], "team-a");
    assert_eq!(k["pod"], "web-5d9c7b-x2x4z");
    assert_eq!(k["workload"], json!({"kind": "Deployment", "name": "web"}));
    assert_eq!(
        (k["container"].as_str(), k["image"].as_str()),
        (Some("server"), Some("ghcr.io/x/server:1"))
    );
    assert_eq!(k["labels"]["app"], "web");
    assert_eq!(v["server"]["spiffe_id"], "spiffe://cluster.local/ns/team-a/sa/mcp");
    // The client (no container) has no Kubernetes identity.
    assert!(v["client"].get("kubernetes").is_none());
    assert_eq!(
        s.metric(
            "mcp_monitor_messages_total",
            &[("namespace", "team-a"), ("workload", "web")]
        ),
        1.0
    );
    assert_eq!(
        s.metric("mcp_monitor_messages_total", &[("namespace", ""), ("workload", "")]),
        3.0
    );
    // A third (namespace, workload) pair is past the cap of two.
    s.feed(Observation::Workload(WorkloadChange {
        ts_ns: ts,
        update: WorkloadUpdate::Pod(pod("api")),
    }));
    s.c(json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}));
    assert_eq!(s.metric("mcp_monitor_messages_total", &[("workload", "other")]), 1.0);
    assert_eq!(s.metric("mcp_monitor_workload_labels_folded_total", &[]), 1.0);
    let v = serde_json::to_value(s.out.events.last().unwrap()).unwrap();
    assert_eq!(v["server"]["kubernetes"]["workload"]["name"], "api");
    // Deleted: still named during the grace period, then forgotten.
    s.feed(Observation::Workload(WorkloadChange {
        ts_ns: ts,
        update: WorkloadUpdate::PodDeleted { uid: UID.into() },
    }));
    s.c(json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}));
    let v = serde_json::to_value(s.out.events.last().unwrap()).unwrap();
    assert_eq!(v["server"]["kubernetes"]["namespace"], "team-a");
    s.feed(Observation::Tick {
        ts_ns: ts + crate::identity::kubernetes::DELETED_POD_GRACE_NS,
    });
    s.ts = ts + crate::identity::kubernetes::DELETED_POD_GRACE_NS;
    s.c(json!({"jsonrpc":"2.0","id":4,"method":"tools/list"}));
    let v = serde_json::to_value(s.out.events.last().unwrap()).unwrap();
    assert!(v["server"].get("kubernetes").is_none(), "{v}");
    assert_eq!(s.metric("mcp_monitor_kubernetes_pods", &[]), 0.0);
}

#[test]
fn command_lines_are_scrubbed_with_the_credential_rules_when_detection_is_on() {
    // A SendGrid key as a positional argument: no secret-named flag and no
    // shape the sensor's basic scrub knows.
    let key = [
        "SG.",
        "ONesajBJC_gEf7IvCeABMK",
        ".",
        "1iWv-N5QWGQm-GEjt72S5u_IO1feYt3eRakWhHhODIJ",
    ]
    .concat();
    let args = vec!["/usr/bin/mailer".to_owned(), "send".to_owned(), key.clone()];
    assert!(redact::scrub_args(&args).contains(&key), "the basic scrub leaves it");
    let mut s = Sim::with_detector();
    s.feed(Observation::Process(Box::new(ProcessInfo {
        pid: SERVER.pid,
        start_ns: SERVER.start_ns,
        exe: "/usr/bin/mailer".into(),
        cmdline: args,
        complete: true,
        ..Default::default()
    })));
    s.handshake();
    let text = serde_json::to_string(&s.out.events[0]).unwrap();
    assert!(!text.contains(&key[3..]), "{text}");
    assert!(text.contains("[REDACTED]"), "{text}");
}
