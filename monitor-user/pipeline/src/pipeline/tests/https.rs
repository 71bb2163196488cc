//! HTTPS seen at the TLS library: both local ends paired, SSL objects
//! reused, TLS records without a socket yet, and the two ends' records in
//! either order.

use super::*;

/// The first `SSL_write` of a client that was not tracked during its
/// handshake has no socket (the kernel names it from a later read): the
/// server's view of that connection still names the client, paired through
/// the request body both ends carry.
#[test]
fn https_server_side_names_a_client_whose_first_writes_had_no_socket() {
    let mut s = Sim::new();
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1.0"}}}"#;
    let result = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"srv","version":"2.0"}}}"#;
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: sid-9\r\nContent-Length: {}\r\n\r\n{result}",
        result.len()
    );
    let server_end = loopback(8443, 40010);
    // Another client's request just before, with a different body.
    let other = init.replace("\"agent\"", "\"other\"");
    TlsEnd::unbound(OTHER_CLIENT, 0xb1).writes(&mut s, &post(&other, None));
    TlsEnd::unbound(CLIENT, 0xc1).writes(&mut s, &post(init, None));
    TlsEnd::new(SERVER, 0x51, 7, server_end).reads(&mut s, &post(init, None));
    TlsEnd::new(SERVER, 0x51, 7, server_end).writes(&mut s, resp.as_bytes());
    let ev = s.events_json();
    let server_side: Vec<&Value> = ev.iter().filter(|e| e["server"]["pid"] == SERVER.pid).collect();
    assert_eq!(server_side.len(), 2, "{ev:?}");
    for e in &server_side {
        assert_eq!(e["client"]["pid"], CLIENT.pid, "{e}");
    }
    // Neither end named: the server's socket unknown too (a server not
    // tracked before this connection).
    let init2 = init.replace("\"1.0\"", "\"1.1\"");
    TlsEnd::unbound(CLIENT, 0xc2).writes(&mut s, &post(&init2, None));
    TlsEnd::unbound(SERVER, 0x53).reads(&mut s, &post(&init2, None));
    TlsEnd::unbound(SERVER, 0x53).writes(&mut s, resp.as_bytes());
    let n = s.out.events.len();
    for e in &s.out.events[n - 2..] {
        let e = serde_json::to_value(e).unwrap();
        assert_eq!(e["client"]["pid"], CLIENT.pid, "{e}");
    }
    // A body no client wrote names nobody.
    let lone = init.replace("\"agent\"", "\"lone\"");
    let third = loopback(8443, 40012);
    TlsEnd::new(SERVER, 0x52, 8, third).reads(&mut s, &post(&lone, None));
    let last = serde_json::to_value(s.out.events.last().unwrap()).unwrap();
    assert_eq!(last["client"]["pid"], Value::Null, "{last}");
}

#[test]
fn https_both_local_ends_are_paired_and_ssl_objects_reused() {
    let mut s = Sim::new();
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1.0"}}}"#;
    let result = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"srv","version":"2.0"}}}"#;
    let resp = |body: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: sid-7\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // Client 127.0.0.1:40000 -> server 127.0.0.1:8443; the client's SSL
    // object is 0xc1 on fd 5, the server's 0x51 on fd 7.
    let (client_end, server_end) = (loopback(40000, 8443), loopback(8443, 40000));
    TlsEnd::new(CLIENT, 0xc1, 5, client_end).writes(&mut s, &post(init, None));
    TlsEnd::new(SERVER, 0x51, 7, server_end).reads(&mut s, &post(init, None));
    TlsEnd::new(SERVER, 0x51, 7, server_end).writes(&mut s, resp(result).as_bytes());
    TlsEnd::new(CLIENT, 0xc1, 5, client_end).reads(&mut s, resp(result).as_bytes());
    let ev = s.events_json();
    assert_eq!(ev.len(), 4, "{:?}", s.rows());
    assert!(ev.iter().all(|e| e["transport"] == "https"), "{ev:?}");
    // The server's view names the local client process at the other end.
    let server_side: Vec<&Value> = ev.iter().filter(|e| e["server"]["pid"] == SERVER.pid).collect();
    assert_eq!(server_side.len(), 2);
    for e in &server_side {
        assert_eq!(e["client"]["pid"], CLIENT.pid, "{e}");
        assert_eq!(e["http"]["local"], "127.0.0.1:8443");
        assert_eq!(e["http"]["remote"], "127.0.0.1:40000");
    }
    let client_side: Vec<&Value> = ev.iter().filter(|e| e["server"]["pid"].is_null()).collect();
    assert_eq!(client_side[1]["http"]["remote"], "127.0.0.1:8443");
    assert!(client_side[0]["session"].as_str().unwrap().starts_with("https:remote"));

    // The client frees the SSL object and the next connection (port 40002)
    // gets the same address: the kernel marks the stream new again, and the
    // pipeline starts a new connection rather than continuing the old one.
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
    let body = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#;
    let second = loopback(40002, 8443);
    // A half-read response on the old connection must not disturb it.
    tls(
        &mut s,
        TlsEnd::new(CLIENT, 0xc1, 5, client_end),
        Direction::Ingress,
        b"HTTP/1.1 200 OK\r\nContent-Le",
        0,
    );
    TlsEnd::new(CLIENT, 0xc1, 6, second).writes(&mut s, &post(call, Some("sid-7")));
    TlsEnd::new(CLIENT, 0xc1, 6, second).reads(&mut s, resp(body).as_bytes());
    let rows = s.rows();
    assert_eq!(rows.len(), 6, "{rows:?}");
    assert_eq!(
        rows[5],
        row(S2C, Kind::Response, Some("tools/call"), Some("1"), Some("echo"))
    );
    let last = serde_json::to_value(s.out.events.last().unwrap()).unwrap();
    assert_eq!(last["http"]["local"], "127.0.0.1:40002");
    // The old connection's half-read response ended there, counted.
    assert_eq!(
        s.metric("mcp_monitor_frame_errors_total", &[("reason", "connection_replaced")]),
        1.0
    );
    // A response the client is in the middle of when it exits is counted
    // too; the server's connection, between messages, is not.
    tls(
        &mut s,
        TlsEnd::new(CLIENT, 0xc1, 6, second),
        Direction::Ingress,
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 90\r\n\r\n{\"jsonrpc\"",
        0,
    );
    s.exit(CLIENT);
    s.exit(SERVER);
    assert_eq!(
        s.metric("mcp_monitor_frame_errors_total", &[("reason", "process_exited")]),
        1.0
    );

    // Ciphertext on the TCP socket (the process is tracked) leaves capture
    // with its first chunk.
    tcp(
        &mut s,
        CLIENT,
        5,
        Direction::Ingress,
        &[0x17, 0x03, 0x03, 0x00, 0x20, 0xaa],
    );
    assert!(s
        .out
        .controls
        .iter()
        .any(|c| matches!(c, Control::IgnoreStream(k) if k.fd == 5 && k.inode == 905)));
    assert_eq!(s.metric("mcp_monitor_messages_total", &[("transport", "https")]), 6.0);
}

/// Two CPUs, one ring: the server's `SSL_read` of a request can reach the
/// agent before the client's `SSL_write` of it. That request is reported
/// without its client; once the client's write comes, the server's view of
/// the connection names the client from the response on.
#[test]
fn https_server_read_before_the_client_write_names_the_client_from_then_on() {
    let mut s = Sim::new();
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1.0"}}}"#;
    let result = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"srv","version":"2.0"}}}"#;
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: sid-5\r\nContent-Length: {}\r\n\r\n{result}",
        result.len()
    );
    let server = TlsEnd::new(SERVER, 0x55, 7, loopback(8443, 40020));
    // The client's socket is not named yet (it was not tracked during its
    // handshake), so the tuple cannot pair the two ends either.
    let client = TlsEnd::unbound(CLIENT, 0xc5);
    server.reads(&mut s, &post(init, None));
    client.writes(&mut s, &post(init, None));
    server.writes(&mut s, resp.as_bytes());
    client.reads(&mut s, resp.as_bytes());
    let ev = s.events_json();
    let server_side: Vec<&Value> = ev.iter().filter(|e| e["server"]["pid"] == SERVER.pid).collect();
    assert_eq!(server_side.len(), 2, "{ev:?}");
    assert_eq!(server_side[0]["client"]["pid"], Value::Null, "{}", server_side[0]);
    assert_eq!(server_side[1]["client"]["pid"], CLIENT.pid, "{}", server_side[1]);
    // The pairing is used up: a second server reading the same body names
    // nobody (no client wrote it twice).
    let other = ProcKey {
        pid: 400,
        start_ns: 4_000,
    };
    TlsEnd::new(other, 0x56, 9, loopback(9443, 40021)).reads(&mut s, &post(init, None));
    let last = serde_json::to_value(s.out.events.last().unwrap()).unwrap();
    assert_eq!(last["client"]["pid"], Value::Null, "{last}");
}

/// Reads paired with a later write by body are only those that may come
/// from a client on this host, and only when one server read it: identical
/// bodies (`notifications/initialized`) from several clients pair nobody
/// rather than the wrong one, and a read from a remote client never waits.
#[test]
fn https_a_read_is_paired_with_a_later_write_only_when_unambiguous() {
    let mut s = Sim::new();
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#;
    let mut remote = loopback(8443, 40030);
    remote.remote_addr[..4].copy_from_slice(&[10, 0, 0, 5]);
    // A remote client's read, then two local servers' reads of the same body.
    TlsEnd::new(SERVER, 0x60, 7, remote).reads(&mut s, &post(body, None));
    let other_server = ProcKey {
        pid: 400,
        start_ns: 4_000,
    };
    TlsEnd::new(SERVER, 0x61, 8, loopback(8443, 40031)).reads(&mut s, &post(body, None));
    TlsEnd::new(other_server, 0x62, 9, loopback(9443, 40032)).reads(&mut s, &post(body, None));
    // One local client writes it (its socket not named yet): which of the
    // two it went to cannot be told, so neither is named.
    TlsEnd::unbound(CLIENT, 0xc6).writes(&mut s, &post(body, None));
    let answer = |id: u32| {
        let b = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tools":[]}}}}"#);
        json_response(&b)
    };
    TlsEnd::new(SERVER, 0x60, 7, remote).writes(&mut s, &answer(7));
    TlsEnd::new(SERVER, 0x61, 8, loopback(8443, 40031)).writes(&mut s, &answer(7));
    TlsEnd::new(other_server, 0x62, 9, loopback(9443, 40032)).writes(&mut s, &answer(7));
    let ev = s.events_json();
    let responses: Vec<&Value> = ev.iter().filter(|e| e["type"] == "response").collect();
    assert_eq!(responses.len(), 3, "{ev:?}");
    for r in &responses {
        assert_eq!(r["client"]["pid"], Value::Null, "{r}");
    }
}

/// Every TLS request of a client is offered for pairing by body (its socket
/// may not be named yet). One whose server named the client by the
/// connection's ends must not stay offered: two clients send the same body
/// (`tools/list`, same id), the first on a connection whose ends pair, the
/// second to a server that cannot name it by ends; each server's view names
/// its own client, whichever of the first connection's write and read
/// reaches the agent first.
#[test]
fn https_a_request_paired_by_its_ends_pairs_no_other_read_by_body() {
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1.0"}}}"#;
    let result = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"srv","version":"2.0"}}}"#;
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let other_server = ProcKey {
        pid: 400,
        start_ns: 4_000,
    };
    for server_first in [false, true] {
        let mut s = Sim::new();
        let a_client = TlsEnd::new(OTHER_CLIENT, 0xa1, 5, loopback(40040, 8443));
        let a_server = TlsEnd::new(SERVER, 0x5a, 7, loopback(8443, 40040));
        a_client.writes(&mut s, &post(init, None));
        a_server.reads(&mut s, &post(init, None));
        a_server.writes(&mut s, &json_response(result));
        a_client.reads(&mut s, &json_response(result));
        let (a_write, a_read) = (post(list, Some("sid-a")), post(list, Some("sid-a")));
        if server_first {
            tls(&mut s, a_server, Direction::Ingress, &a_read, 0);
            tls(&mut s, a_client, Direction::Egress, &a_write, 0);
        } else {
            tls(&mut s, a_client, Direction::Egress, &a_write, 0);
            tls(&mut s, a_server, Direction::Ingress, &a_read, 0);
        }
        // The second client and its server: neither socket named yet.
        TlsEnd::unbound(CLIENT, 0xc7).writes(&mut s, &post(list, None));
        TlsEnd::unbound(other_server, 0x57).reads(&mut s, &post(list, None));
        let ev = s.events_json();
        let at = |server: ProcKey| -> Vec<&Value> { ev.iter().filter(|e| e["server"]["pid"] == server.pid).collect() };
        assert_eq!(at(SERVER).len(), 3, "server first: {server_first}: {ev:?}");
        for e in at(SERVER) {
            assert_eq!(
                e["client"]["pid"], OTHER_CLIENT.pid,
                "server first: {server_first}: {e}"
            );
        }
        let second = at(other_server);
        assert_eq!(second.len(), 1, "server first: {server_first}: {ev:?}");
        assert_eq!(
            second[0]["client"]["pid"], CLIENT.pid,
            "server first: {server_first}: {}",
            second[0]
        );
    }
}
