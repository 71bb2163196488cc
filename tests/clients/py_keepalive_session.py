"""A Streamable HTTP MCP session on one keep-alive connection, after N
throwaway requests on that same connection (a client trying to get the
connection judged not MCP before its MCP traffic, like the OAuth discovery
requests of mcp-remote but more of them). Writes a transcript of every
JSON-RPC message, with its exact size, in the format of transcript.mjs.

usage: python py_keepalive_session.py <url> <transcript.json> <N> [pause_s] [reconnect]
pause_s: seconds to wait between the throwaway requests and the MCP ones
(long enough for the monitor to have told its kernel programs to ignore
the connection). Standard library only: the point is the one connection.
An https URL is called over TLS (Python's libssl; the certificate is not
checked). `reconnect`: the MCP requests go on a new connection, opened
at once after the throwaway one is closed (its TLS object freed, whose
address the new connection's often takes).
"""
import http.client
import json
import os
import ssl
import sys
import time
import urllib.parse

from transcript import summarize

url, path, throwaway = sys.argv[1], sys.argv[2], int(sys.argv[3])
pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
reconnect = len(sys.argv) > 5 and sys.argv[5] == "reconnect"
u = urllib.parse.urlsplit(url)


def connect():
    if u.scheme == "https":
        return http.client.HTTPSConnection(u.hostname, u.port, timeout=30, context=ssl._create_unverified_context())
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30)


conn = connect()
transcript = []


def record(direction, text):
    transcript.append({"dir": direction, "bytes": len(text.encode()), "msg": summarize(json.loads(text)), "after_resume": True})


for i in range(throwaway):
    conn.request("GET", f"/not-mcp/{i}")
    r = conn.getresponse()
    r.read()
    assert r.status == 404, r.status

time.sleep(pause)
if reconnect:
    conn.close()
    conn = connect()
session = None


def post(message):
    body = json.dumps(message, separators=(",", ":"))
    record("c2s", body)
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if session:
        headers["Mcp-Session-Id"] = session
    conn.request("POST", u.path, body=body.encode(), headers=headers)
    r = conn.getresponse()
    raw = r.read().decode()
    assert r.status in (200, 202), (r.status, raw)
    if r.getheader("Content-Type", "").startswith("text/event-stream"):
        for line in raw.splitlines():
            if line.startswith("data: "):
                record("s2c", line[len("data: "):])
    elif raw.strip():
        record("s2c", raw)
    return r


r = post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "keepalive-client", "version": "1.0"}}})
session = r.getheader("Mcp-Session-Id")
post({"jsonrpc": "2.0", "method": "notifications/initialized"})
post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
post({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "after the throwaway requests"}}})
conn.close()
with open(path, "w") as f:
    json.dump({"client_pid": os.getpid(), "transcript": transcript}, f)
