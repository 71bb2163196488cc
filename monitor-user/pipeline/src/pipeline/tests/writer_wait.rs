//! Writer notices that come after the chunks they explain: the kernel sends
//! a notice when the writer's first write ends, which can be after the
//! reader had the bytes sent (and, across drains of the ring, after the
//! agent took them).

use super::*;

/// What matters of an event for these tests: when, which way, what, the
/// pairing, and both parties' pids and the session.
fn projection(events: &[Event]) -> Vec<Value> {
    let mut rows: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "time": e.time.to_string(), "direction": format!("{:?}", e.direction), "kind": format!("{:?}", e.kind),
                "method": e.method, "id": e.id.as_ref().map(|i| i.to_string()), "tool": e.tool,
                "paired": e.latency_ms.is_some(), "server": e.server.pid, "client": e.client.pid,
                "session": &*e.session,
            })
        })
        .collect();
    rows.sort_by_key(|r| {
        (
            r["time"].as_str().unwrap().parse::<i128>().unwrap(),
            r["direction"].to_string(),
        )
    });
    rows
}

/// A conversation as the kernel reports it, the writer notice of direction
/// `d` (0: client to server) before the chunk at `at[d]` in the whole
/// conversation, or after the last if past it. `socketpairs`: node's
/// socketpairs with a server reading and writing copies of stdin and
/// stdout (fds 6 and 7), else pipes on fds 0 and 1.
fn observations(socketpairs: bool, at: [usize; 2]) -> Vec<Observation> {
    let kind = if socketpairs { FdKind::UnixStream } else { FdKind::Pipe };
    // (writer end, reader end, the writer's own socket) of each direction.
    let (c2s_w, c2s_r, c2s_peer) = if socketpairs {
        (
            End {
                proc: CLIENT,
                fd: 19,
                kind,
                channel: 0x50,
            },
            End {
                proc: SERVER,
                fd: 6,
                kind,
                channel: 0x50,
            },
            0xc0,
        )
    } else {
        (
            End {
                proc: CLIENT,
                fd: 5,
                kind,
                channel: 11,
            },
            End {
                proc: SERVER,
                fd: 0,
                kind,
                channel: 11,
            },
            0,
        )
    };
    let (s2c_w, s2c_r, s2c_peer) = if socketpairs {
        (
            End {
                proc: SERVER,
                fd: 7,
                kind,
                channel: 0xc1,
            },
            End {
                proc: CLIENT,
                fd: 21,
                kind,
                channel: 0xc1,
            },
            0x51,
        )
    } else {
        (
            End {
                proc: SERVER,
                fd: 1,
                kind,
                channel: 12,
            },
            End {
                proc: CLIENT,
                fd: 6,
                kind,
                channel: 12,
            },
            0,
        )
    };
    let mut out = Vec::new();
    let mut ts = 1_000_000;
    let lines = conversation();
    for (i, (c2s, line)) in lines.iter().enumerate() {
        ts += 1_000;
        for (d, w) in [c2s_w, s2c_w].into_iter().enumerate() {
            if at[d] == i {
                out.push(writer_notice(w, ts));
            }
        }
        let (r, peer) = if *c2s { (c2s_r, c2s_peer) } else { (s2c_r, s2c_peer) };
        let first = !lines[..i].iter().any(|(d, _)| d == c2s);
        let mut c = chunk(
            r,
            Direction::Ingress,
            format!("{line}\n").as_bytes(),
            ts,
            if first { chunk_flags::NEW_STREAM } else { 0 },
        );
        c.peer = peer;
        out.push(Observation::Chunk(c));
    }
    for (d, w) in [c2s_w, s2c_w].into_iter().enumerate() {
        if at[d] >= lines.len() {
            out.push(writer_notice(w, ts));
        }
    }
    out
}

/// Where each direction's first chunk is in [`conversation`]: notices
/// there are on time.
fn on_time() -> [usize; 2] {
    let first = |c2s: bool| conversation().iter().position(|(d, _)| *d == c2s).unwrap();
    [first(true), first(false)]
}

fn run(obs: Vec<Observation>, metrics: Arc<Metrics>) -> Recorder {
    let mut p = Pipeline::new(PipelineConfig::default(), metrics);
    let mut out = Recorder::default();
    p.handle(info(CLIENT, "/usr/bin/node"), &mut out);
    p.handle(info(SERVER, "/usr/bin/server"), &mut out);
    for o in obs {
        p.handle(o, &mut out);
    }
    p.finish(&mut out);
    out
}

#[test]
fn messages_read_before_their_writer_notice_wait_for_it() {
    for socketpairs in [false, true] {
        let on_time = run(observations(socketpairs, on_time()), Metrics::new());
        let metrics = Metrics::new();
        let never = conversation().len();
        let late = run(observations(socketpairs, [never, never]), metrics.clone());
        let expected = projection(&on_time.events);
        assert_eq!(expected.len(), conversation().len());
        assert!(
            expected.iter().all(|e| e["server"] == SERVER.pid
                && e["client"] == CLIENT.pid
                && e["session"] == expected[0]["session"]),
            "socketpairs {socketpairs}: {expected:#?}"
        );
        assert!(expected
            .iter()
            .filter(|e| e["kind"] == "Response")
            .all(|e| e["paired"] == true));
        assert_eq!(projection(&late.events), expected, "socketpairs {socketpairs}");
        let named = metric(&metrics, "mcp_monitor_writer_waits_total", &[("outcome", "named")]);
        // Both directions' streams waited.
        assert_eq!(named, 2.0, "socketpairs {socketpairs}");
    }
}

proptest! {
    /// A notice comes before its writer reads again when it writes and
    /// reads on one thread: the client's before it reads the answer to its
    /// first request, the server's before it reads the next request.
    /// Wherever the two notices land within that, the events are those of
    /// notices that came first.
    #[test]
    fn wherever_one_thread_peers_notices_land_the_events_are_the_same(
        socketpairs in any::<bool>(),
        c2s_late in any::<bool>(),
        s2c_late in any::<bool>(),
    ) {
        // The conversation starts: request, answer, request.
        let [c2s, s2c] = on_time();
        prop_assert_eq!((c2s, s2c), (0, 1));
        let at = [c2s + usize::from(c2s_late), s2c + usize::from(s2c_late)];
        let expected = projection(&run(observations(socketpairs, on_time()), Metrics::new()).events);
        let late = projection(&run(observations(socketpairs, at), Metrics::new()).events);
        prop_assert_eq!(late, expected);
    }

    /// Peers that write and read on two threads can have a notice come
    /// later still. Wherever both land, every message is reported, with
    /// its server; over pipes every answer is paired with its request, in
    /// one session. A request that went on before its client was named
    /// lacks the client; over copies of two socketpairs its session cannot
    /// be joined with the answers' (the join needs the client).
    #[test]
    fn wherever_any_notices_land_every_message_is_reported_with_its_server(
        socketpairs in any::<bool>(),
        c2s in 0..=conversation().len(),
        s2c in 1..=conversation().len(),
    ) {
        let late = projection(&run(observations(socketpairs, [c2s, s2c]), Metrics::new()).events);
        prop_assert_eq!(late.len(), conversation().len());
        for e in &late {
            prop_assert_eq!(&e["server"], &json!(SERVER.pid));
            prop_assert!(e["client"] == json!(CLIENT.pid) || e["client"].is_null(), "{}", e);
            if e["kind"] == "Response" && !socketpairs {
                prop_assert_eq!(&e["paired"], &json!(true), "{}", e);
            }
        }
        if !socketpairs {
            prop_assert!(late.iter().all(|e| e["session"] == late[0]["session"]));
        }
    }
}

/// The server's first answer, read by the client before the server's
/// notice (no notice yet in `Sim`: marked sent without feeding it).
fn answer_before_the_notice(s: &mut Sim) {
    s.c(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1.0"}}}));
    s.notified.push((SERVER, s.s2c));
    s.s(json!({"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"srv","version":"2.0"}}}));
}

#[test]
fn without_its_writer_notice_a_stream_waits_once_then_goes_on() {
    let mut s = Sim::new();
    answer_before_the_notice(&mut s);
    assert_eq!(s.out.events.len(), 1, "the answer waits for its writer");
    assert_eq!(s.pipeline.stdio.waits.len(), 1);
    // A tick before the wait is over changes nothing.
    s.feed(Observation::Tick {
        ts_ns: s.ts + 999_999_999,
    });
    assert_eq!(s.pipeline.stdio.waits.len(), 1);
    s.feed(Observation::Tick {
        ts_ns: s.ts + 1_000_000_000,
    });
    assert_eq!(s.pipeline.stdio.waits.len(), 0, "the wait is over");
    assert_eq!(
        s.metric("mcp_monitor_writer_waits_total", &[("outcome", "timed_out")]),
        1.0
    );
    // It went on without a server, as messages did before there was any
    // waiting: to a session of its own, held until it shows MCP. The
    // stream waits no more: its next message goes on at once.
    s.s(json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}));
    assert_eq!(s.pipeline.stdio.waits.len(), 0);
    let rows = s.rows();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[1], row(S2C, Kind::Response, None, Some("0"), None));
    assert_eq!(s.out.events[1].server.pid, None);
    assert_eq!(s.out.events[1].client.pid, Some(CLIENT.pid));
}

#[test]
fn a_waiting_stream_goes_on_when_full_or_when_its_reader_exits() {
    let mut s = Sim::new();
    answer_before_the_notice(&mut s);
    for i in 1..crate::pipeline::writer_wait::MAX_WAITING_MESSAGES {
        s.s(json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":i}}));
    }
    assert_eq!(
        s.out.events.len(),
        1,
        "{} wait",
        crate::pipeline::writer_wait::MAX_WAITING_MESSAGES
    );
    s.s(json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":-1}}));
    assert_eq!(
        s.out.events.len(),
        2 + crate::pipeline::writer_wait::MAX_WAITING_MESSAGES
    );
    assert_eq!(s.metric("mcp_monitor_writer_waits_total", &[("outcome", "full")]), 1.0);
    assert_eq!(s.pipeline.stdio.waits.len(), 0);

    let mut s = Sim::new();
    answer_before_the_notice(&mut s);
    s.exit(CLIENT);
    assert_eq!(s.pipeline.stdio.waits.len(), 0, "the reader's exit ends the wait");
    assert_eq!(
        s.metric("mcp_monitor_writer_waits_total", &[("outcome", "reader_exited")]),
        1.0
    );
    // The answer went on to a session with no server, which the exit
    // ended before it showed MCP: its held message is counted.
    assert_eq!(
        s.metric("mcp_monitor_state_evictions_total", &[("kind", "held_event")]),
        1.0
    );
}

#[test]
fn a_waiting_stream_charges_the_partial_message_budget() {
    let mut s = Sim::with(PipelineConfig {
        max_buffered: 4096,
        ..PipelineConfig::default()
    });
    answer_before_the_notice(&mut s);
    assert!(s.pipeline.budget.used() > 0, "the waiting answer is charged");
    let big = "x".repeat(4096);
    s.s(json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":big}}));
    assert_eq!(s.pipeline.stdio.waits.len(), 0, "no room to wait: everything goes on");
    assert_eq!(s.out.events.len(), 3);
    assert_eq!(s.pipeline.budget.used(), 0);
    assert_eq!(s.metric("mcp_monitor_writer_waits_total", &[("outcome", "full")]), 1.0);
}

#[test]
fn a_notice_after_its_writers_exit_names_what_waited_and_is_forgotten() {
    let mut s = Sim::new();
    answer_before_the_notice(&mut s);
    // The server's leader exits while another of its threads is still in
    // the write; the write's notice comes after the exit, and the sensor
    // introduces the process again.
    s.exit(SERVER);
    let tracked = s.metric("mcp_monitor_processes_tracked", &[]);
    s.feed(info(SERVER, "/usr/bin/server"));
    assert_eq!(
        s.metric("mcp_monitor_processes_tracked", &[]),
        tracked,
        "an exited process is not brought back"
    );
    s.feed(writer_notice(
        End {
            proc: SERVER,
            fd: 1,
            kind: FdKind::Pipe,
            channel: s.s2c,
        },
        s.ts,
    ));
    assert_eq!(s.metric("mcp_monitor_writer_waits_total", &[("outcome", "named")]), 1.0);
    // The answer went on, named after its writer: into a session of that
    // server, a new one as the exit ended the first, which ends at once
    // too (nothing else would end it), its held answer counted.
    assert_eq!(s.pipeline.stdio.waits.len(), 0);
    assert_eq!(s.pipeline.session_count(), 0);
    assert_eq!(
        s.metric("mcp_monitor_state_evictions_total", &[("kind", "held_event")]),
        1.0
    );
    assert!(
        s.pipeline.stdio.writers.values().all(|w| w.proc != SERVER),
        "the dead writer is not kept"
    );
}

/// `printf '{...}' | server`: the writer's notice came, then its exit,
/// and only then does the server read the bytes left in the pipe. The
/// exit forgot the writer, but its notice was had: nothing is coming for
/// the stream to wait for.
#[test]
fn a_stream_whose_writer_exited_before_the_read_does_not_wait() {
    let mut s = Sim::new();
    s.notice(CLIENT, 5, s.c2s);
    s.exit(CLIENT);
    s.c(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1.0"}}}));
    assert_eq!(s.pipeline.stdio.waits.len(), 0, "nothing waits");
    assert_eq!(s.metric("mcp_monitor_writer_waits_total", &[]), 0.0);
    let rows = s.rows();
    assert_eq!(
        rows,
        vec![row(C2S, Kind::Request, Some("initialize"), Some("0"), None)],
        "the request goes on at once"
    );
    assert_eq!(s.out.events[0].server.pid, Some(SERVER.pid));
    assert_eq!(s.out.events[0].client.pid, None, "its writer is gone");
    // A live writer named later on the same pipe takes the mark away.
    assert!(s.pipeline.stdio.writer_gone.contains((true, s.c2s)));
    s.notice(OTHER_CLIENT, 5, s.c2s);
    assert!(!s.pipeline.stdio.writer_gone.contains((true, s.c2s)));
}

/// The same when the notice reaches the agent after the writer's exit (the
/// leader's exit can be reported while a thread is still in the write).
#[test]
fn a_stream_whose_writer_was_named_after_its_exit_does_not_wait() {
    let mut s = Sim::new();
    s.exit(CLIENT);
    s.notice(CLIENT, 5, s.c2s);
    s.c(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1.0"}}}));
    assert_eq!(s.pipeline.stdio.waits.len(), 0, "nothing waits");
    assert_eq!(s.rows().len(), 1, "the request goes on at once");
}

/// Only pipes: a unix socket's channel is its kernel address, which the
/// kernel hands to unrelated sockets at once, so the exit of one socket's
/// writer says nothing about the next socket at that address.
#[test]
fn a_socket_whose_writer_exited_is_still_waited_for() {
    let mut s = Sim::new();
    s.kind = FdKind::UnixStream;
    s.notice(CLIENT, 5, s.c2s);
    s.exit(CLIENT);
    s.c(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1.0"}}}));
    assert_eq!(s.pipeline.stdio.waits.len(), 1, "the request waits for a notice");
    assert!(s.out.events.is_empty());
}

/// G is a server to C and a client of its own child server K (a stdio
/// proxy). K's first answer to G waits for K's notice; G's answer to C,
/// routed meanwhile, must not let it go as if G read it as a server.
#[test]
fn a_proxy_s_wait_for_its_child_server_is_not_overtaken_by_its_own_answers() {
    const K: ProcKey = OTHER_CLIENT;
    let g = SERVER;
    let metrics = Metrics::new();
    let mut p = Pipeline::new(PipelineConfig::default(), metrics.clone());
    let mut out = Recorder::default();
    for (proc, exe) in [(CLIENT, "/usr/bin/agent"), (g, "/usr/bin/proxy"), (K, "/usr/bin/child")] {
        p.handle(info(proc, exe), &mut out);
    }
    let end = |proc, fd, channel| End {
        proc,
        fd,
        kind: FdKind::Pipe,
        channel,
    };
    let read = |reader: End, v: Value, ts: u64| {
        Observation::Chunk(chunk(
            reader,
            Direction::Ingress,
            format!("{v}\n").as_bytes(),
            ts,
            chunk_flags::NEW_STREAM,
        ))
    };
    let init = |id: u64, name: &str| json!({"jsonrpc":"2.0","id":id,"method":"initialize","params":{"clientInfo":{"name":name,"version":"1"}}});
    let answer = |id: u64, name: &str| json!({"jsonrpc":"2.0","id":id,"result":{"serverInfo":{"name":name,"version":"1"},"protocolVersion":"2025-06-18"}});
    for o in [
        // C asks G; G asks K; K's answer reaches G before K's notice.
        writer_notice(end(CLIENT, 5, 11), 1),
        read(end(g, 0, 11), init(0, "agent"), 1),
        writer_notice(end(g, 9, 21), 2),
        read(end(K, 0, 21), init(7, "proxy"), 2),
        read(end(g, 8, 22), answer(7, "child"), 3),
        // G answers C.
        writer_notice(end(g, 1, 12), 4),
        read(end(CLIENT, 6, 12), answer(0, "proxy"), 4),
        // K's notice, at last.
        writer_notice(end(K, 1, 22), 5),
    ] {
        p.handle(o, &mut out);
    }
    let k_answer = out
        .events
        .iter()
        .find(|e| e.kind == Kind::Response && e.server.pid == Some(K.pid))
        .unwrap_or_else(|| panic!("K's answer is missing: {:#?}", projection(&out.events)));
    assert_eq!(
        k_answer.method.as_deref(),
        Some("initialize"),
        "paired with G's request"
    );
    assert_eq!(k_answer.client.pid, Some(g.pid));
    assert_eq!(k_answer.direction, S2C);
    assert_eq!(out.events.len(), 4);
    let count = |outcome: &str| metric(&metrics, "mcp_monitor_writer_waits_total", &[("outcome", outcome)]);
    assert_eq!((count("named"), count("overtaken")), (1.0, 0.0));
}

#[test]
fn writers_of_channels_still_read_are_evicted_last() {
    let mut s = Sim::with(PipelineConfig {
        max_streams: 16,
        ..PipelineConfig::default()
    });
    // A session whose server's notice is the oldest of all.
    s.handshake();
    for i in 0..200u64 {
        s.feed(writer_notice(
            End {
                proc: CLIENT,
                fd: 5,
                kind: FdKind::Pipe,
                channel: 1_000 + i,
            },
            s.ts + i,
        ));
    }
    assert!(s.pipeline.stdio.writers.len() <= 16);
    assert!(s.metric("mcp_monitor_state_evictions_total", &[("kind", "writer")]) > 0.0);
    for channel in [s.c2s, s.s2c] {
        assert!(
            s.pipeline.stdio.writers.contains_key(&(true, channel)),
            "the writer of a channel still read is kept"
        );
    }
    assert!(
        s.pipeline.stdio.writers.contains_key(&(true, 1_199)),
        "the newest is kept"
    );
}
