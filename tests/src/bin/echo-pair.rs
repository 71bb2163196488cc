//! A minimal MCP stdio client/server pair for benchmarks and load tests.
//!
//! `echo-pair client --size BYTES --count N [--rate MSGS_PER_S] [--sessions K --hold-secs S]`
//! spawns `echo-pair server` children over pipes, performs the MCP
//! handshake, then sends `tools/call` requests of exactly BYTES bytes per
//! line and waits for each echo (ping-pong). It prints one JSON object with
//! the achieved rate. Native code, so the numbers measure the pipes and the
//! monitor, not an interpreter.
//!
//! With `--first-write-pad BYTES --pause-ms MS`, the server writes its
//! initialize answer and a `notifications/message` of BYTES bytes in one
//! `write` (larger than the pipe, it ends only once the client has read
//! nearly all of it), and the client, having read the answer, pauses MS
//! before it reads on: the server's first write is still in progress while
//! the client holds its answer, so the kernel's writer notice for that
//! pipe, sent when the write ends, comes well after the answer's bytes.
//!
//! `echo-pair logs --size BYTES --count N [--text]` writes N JSON log lines
//! (not JSON-RPC; plain text lines with `--text`) of BYTES bytes, one write
//! each, to an `echo-pair log-reader` child over a pipe, and prints the
//! rate: what a structured-log pipe costs.
//!
//! `echo-pair failing-calls --count N` makes N reads of an empty
//! non-blocking pipe (EAGAIN) and N `close(-1)` (EBADF): the failed and
//! empty calls an event loop makes, which a probe on every system call's
//! exit sees too.
//!
//! `echo-pair burst --size BYTES --count N` performs the handshake, then
//! writes N `notifications/progress` lines of exactly BYTES bytes as fast as
//! the pipe takes them (a flood to overflow the monitor's ring buffer),
//! then one ping-pong call so that the server has read everything. With
//! `--hold`, it prints `{"server_pid": …}` after the handshake and waits for
//! a line on its stdin before the flood (so that a test can stop the agent
//! first). With `--notice-fill N`, after the flood it writes one byte into
//! each of N new pipes: a writer notice each and nothing else, so that a
//! stopped agent's ring is left with no room for even a notice.
//!
//! `echo-pair leak --count N --interval-ms MS` performs the handshake, then
//! makes N echo calls, MS apart, each carrying a different planted (fake)
//! GitHub token: at least one credential alert per call. It prints the
//! server pid as soon as the handshake is done.

use std::{
    io::{BufRead, BufReader, BufWriter, Write},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("server") => server(&args),
        Some("client") => client(&args),
        Some("logs") => logs(&args),
        Some("failing-calls") => failing_calls(&args),
        Some("burst") => burst(&args),
        Some("leak") => leak(&args),
        Some("log-reader") => {
            let mut sink = Vec::new();
            let mut input = BufReader::new(std::io::stdin().lock());
            let mut line = String::new();
            while input.read_line(&mut line).unwrap_or(0) > 0 {
                sink.push(line.len());
                line.clear();
            }
            println!("{}", sink.len());
        }
        _ => {
            eprintln!("usage: echo-pair client --size BYTES (--count N | --seconds S) [--rate R] [--sessions K --hold-secs S] | echo-pair server");
            std::process::exit(2);
        }
    }
}

fn burst(args: &[String]) {
    let size: usize = arg(args, "--size").map_or(20_000, |v| v.parse().unwrap());
    let count: u64 = arg(args, "--count").map_or(400, |v| v.parse().unwrap());
    let hold = args.iter().any(|a| a == "--hold");
    let notice_fill: usize = arg(args, "--notice-fill").map_or(0, |v| v.parse().unwrap());
    let mut c = Conn::spawn();
    c.handshake();
    if hold {
        println!("{}", serde_json::json!({"server_pid": c.child.id()}));
        std::io::stdout().flush().unwrap();
        let mut go = String::new();
        std::io::stdin().read_line(&mut go).unwrap();
    }
    for i in 0..count {
        let head = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":"burst","progress":{i},"message":""#
        );
        let tail = r#""}}"#;
        let mut line = String::with_capacity(size);
        line.push_str(&head);
        line.extend(std::iter::repeat_n('b', size.saturating_sub(head.len() + tail.len())));
        line.push_str(tail);
        assert_eq!(line.len(), size);
        c.tx.write_all(line.as_bytes()).unwrap();
        c.tx.write_all(b"\n").unwrap();
    }
    c.tx.flush().unwrap();
    c.send(&request(count + 1, 200));
    c.recv();
    for _ in 0..notice_fill {
        // A new pipe, one byte written, both ends closed: a writer notice
        // each (a new channel), whatever the limit on open files.
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors pipe writes; a
        // one-byte write from a static buffer; each end closed once.
        unsafe {
            assert_eq!(
                libc::pipe(fds.as_mut_ptr()),
                0,
                "pipe: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(libc::write(fds[1], b"x".as_ptr().cast(), 1), 1);
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
    println!(
        "{}",
        serde_json::json!({"size": size, "count": count, "client_pid": std::process::id(), "server_pid": c.child.id()})
    );
    drop(c.tx);
    let _ = c.child.wait();
}

fn leak(args: &[String]) {
    let count: u64 = arg(args, "--count").map_or(50, |v| v.parse().unwrap());
    let interval = Duration::from_millis(arg(args, "--interval-ms").map_or(100, |v| v.parse().unwrap()));
    let mut c = Conn::spawn();
    c.handshake();
    println!("{}", serde_json::json!({"server_pid": c.child.id()}));
    std::io::stdout().flush().unwrap();
    for i in 0..count {
        let token = mcp_monitor_tests::fake::github_token();
        c.send(&format!(
            r#"{{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"export GITHUB_TOKEN={token}"}}}}}}"#,
            i + 1
        ));
        c.recv();
        std::thread::sleep(interval);
    }
    drop(c.tx);
    let _ = c.child.wait();
}

fn logs(args: &[String]) {
    let size: usize = arg(args, "--size").map_or(200, |v| v.parse().unwrap());
    let count: u64 = arg(args, "--count").map_or(100_000, |v| v.parse().unwrap());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("log-reader")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn log-reader");
    let mut tx = child.stdin.take().unwrap();
    let (head, tail) = if args.iter().any(|a| a == "--text") {
        ("2026-11-30T12:00:00Z info ", "\n")
    } else {
        (r#"{"level":"info","ts":"2026-11-30T12:00:00Z","msg":""#, "\"}\n")
    };
    let mut line = String::with_capacity(size);
    line.push_str(head);
    line.extend(std::iter::repeat_n('l', size.saturating_sub(head.len() + tail.len())));
    line.push_str(tail);
    let started = Instant::now();
    for _ in 0..count {
        tx.write_all(line.as_bytes()).unwrap();
    }
    drop(tx);
    let out = child.wait_with_output().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let read: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    assert_eq!(read, count, "the reader got every line");
    println!(
        "{}",
        serde_json::json!({"size": size, "lines": count, "elapsed_s": elapsed, "lines_per_s": count as f64 / elapsed})
    );
}

fn failing_calls(args: &[String]) {
    let count: u64 = arg(args, "--count").map_or(1_000_000, |v| v.parse().unwrap());
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) }, 0, "pipe2");
    let mut buf = [0u8; 64];
    let started = Instant::now();
    for _ in 0..count {
        // SAFETY: a read into a local buffer of its length; close of an
        // invalid descriptor, which only fails.
        unsafe {
            let n = libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
            assert!(n < 0, "the pipe has no writer data: the read must fail with EAGAIN");
            libc::close(-1);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"calls": 2 * count, "elapsed_s": elapsed, "calls_per_s": 2.0 * count as f64 / elapsed})
    );
}

/// Answers initialize and tools/call; echoes the text argument back. With
/// `--first-write-pad BYTES`, a `notifications/message` of BYTES bytes
/// follows the initialize answer in the same write.
fn server(args: &[String]) {
    let pad: Option<usize> = arg(args, "--first-write-pad").map(|v| v.parse().unwrap());
    let stdin = std::io::stdin();
    let mut input = BufReader::with_capacity(1 << 20, stdin.lock());
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let Some(id) = v.get("id") else { continue }; // notification
        let result = match v["method"].as_str() {
            Some("initialize") => serde_json::json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "echo-pair", "version": "1"}
            }),
            _ => serde_json::json!({"content": [{"type": "text", "text": v["params"]["arguments"]["text"]}]}),
        };
        let initialize = v["method"] == "initialize";
        let resp = serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result});
        serde_json::to_writer(&mut out, &resp).unwrap();
        out.write_all(b"\n").unwrap();
        if let (true, Some(pad)) = (initialize, pad) {
            let note = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/message",
                "params": {"level": "info", "data": "p".repeat(pad)}});
            serde_json::to_writer(&mut out, &note).unwrap();
            out.write_all(b"\n").unwrap();
        }
        out.flush().unwrap();
    }
}

struct Conn {
    child: Child,
    tx: BufWriter<ChildStdin>,
    rx: BufReader<ChildStdout>,
    line: String,
}

impl Conn {
    fn spawn() -> Conn {
        Conn::spawn_with(&[])
    }

    fn spawn_with(server_args: &[&str]) -> Conn {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("server")
            .args(server_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let tx = BufWriter::with_capacity(1 << 20, child.stdin.take().unwrap());
        let rx = BufReader::with_capacity(1 << 20, child.stdout.take().unwrap());
        Conn {
            child,
            tx,
            rx,
            line: String::new(),
        }
    }

    fn send(&mut self, line: &str) {
        self.tx.write_all(line.as_bytes()).unwrap();
        self.tx.write_all(b"\n").unwrap();
        self.tx.flush().unwrap();
    }

    fn recv(&mut self) -> usize {
        self.line.clear();
        let n = self.rx.read_line(&mut self.line).unwrap();
        assert!(n > 0, "server closed");
        n
    }

    fn handshake(&mut self) {
        self.send(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"echo-pair-client","version":"1"}}}"#);
        self.recv();
        self.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    }
}

/// A tools/call request line of exactly `size` bytes (at least ~90).
fn request(id: u64, size: usize) -> String {
    let head =
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":""#);
    let tail = r#""}}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut s = String::with_capacity(size);
    s.push_str(&head);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str(tail);
    s
}

fn client(args: &[String]) {
    let size: usize = arg(args, "--size").map_or(4096, |v| v.parse().unwrap());
    let count: u64 = arg(args, "--count").map_or(10_000, |v| v.parse().unwrap());
    let rate: Option<f64> = arg(args, "--rate").map(|v| v.parse().unwrap());
    // With --seconds, calls go on for that long, whatever --count says.
    let seconds: Option<f64> = arg(args, "--seconds").map(|v| v.parse().unwrap());
    let sessions: usize = arg(args, "--sessions").map_or(1, |v| v.parse().unwrap());
    let hold = Duration::from_secs_f64(arg(args, "--hold-secs").map_or(0.0, |v| v.parse().unwrap()));

    if sessions > 1 {
        // Many concurrent idle sessions (memory measurements).
        let mut conns: Vec<Conn> = (0..sessions).map(|_| Conn::spawn()).collect();
        for (i, c) in conns.iter_mut().enumerate() {
            c.handshake();
            c.send(&request(i as u64 + 1, size));
            c.recv();
        }
        println!("READY {sessions}");
        std::io::stdout().flush().unwrap();
        std::thread::sleep(hold);
        for mut c in conns {
            drop(c.tx);
            let _ = c.child.wait();
        }
        return;
    }

    let mut c = match arg(args, "--first-write-pad") {
        Some(pad) => {
            let pause = Duration::from_millis(arg(args, "--pause-ms").map_or(200, |v| v.parse().unwrap()));
            let mut c = Conn::spawn_with(&["--first-write-pad", &pad]);
            c.send(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"echo-pair-client","version":"1"}}}"#);
            c.recv();
            std::thread::sleep(pause);
            c.recv(); // the notification that shared the server's first write
            c.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
            c
        }
        None => {
            let mut c = Conn::spawn();
            c.handshake();
            c
        }
    };
    let started = Instant::now();
    let mut received = 0u64;
    let mut sent = 0u64;
    for i in 1.. {
        let done = match seconds {
            Some(s) => started.elapsed().as_secs_f64() >= s,
            None => i > count,
        };
        if done {
            break;
        }
        sent += 1;
        if let Some(r) = rate {
            // Pace against the schedule, not the previous message, so
            // scheduling noise does not lower the average rate.
            let due = started + Duration::from_secs_f64(i as f64 / r);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        c.send(&request(i, size));
        received += c.recv() as u64;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "size": size, "messages": sent, "elapsed_s": elapsed,
            "msgs_per_s": sent as f64 / elapsed, "received_bytes": received,
            "client_pid": std::process::id(), "server_pid": c.child.id(),
        })
    );
    drop(c.tx);
    let _ = c.child.wait();
}
