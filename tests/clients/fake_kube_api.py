"""A stand-in for the Kubernetes API server, enough for mcp-monitor's pod watch.

It speaks the list/watch protocol of the real API for pods (with field
selectors), and answers GETs of ReplicaSets, so the monitor's kube-rs watcher
can be tested on a machine where no API server runs:

- GET /api/v1/pods                 list (PodList with metadata.resourceVersion)
- GET /api/v1/pods?watch=true      watch: chunked JSON lines of ADDED/MODIFIED/
                                   DELETED events after `resourceVersion`; the
                                   stream ends after WATCH_SECONDS (as real
                                   watches end at timeoutSeconds); a too old
                                   resourceVersion gets an ERROR event with a
                                   410 Status, as the real API sends.
- GET /apis/apps/v1/namespaces/<ns>/replicasets/<name>

Test controls (not part of the Kubernetes API):
- POST /_test/pods                 add or replace a pod (body: Pod JSON)
- POST /_test/delete?uid=U         delete a pod with a DELETED event
- POST /_test/forget?uid=U         delete a pod without any event (as if the
                                   deletion happened while the watch was down)
- POST /_test/expire               every resourceVersion handed out so far
                                   becomes too old (410 Gone)
- POST /_test/replicasets          add a ReplicaSet (body: ReplicaSet JSON)
- GET  /_test/stats                request counts and the field selectors seen

usage: python3 fake_kube_api.py <port-file>   (writes the chosen port there)
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

WATCH_SECONDS = 2.0

lock = threading.Condition()
state = {
    "rv": 100,
    "pods": {},  # uid -> pod
    "replicasets": {},  # (ns, name) -> rs
    "events": [],  # (rv, type, object)
    "expired_below": 0,
    "stats": {"lists": 0, "watches": 0, "gone": 0, "replicaset_gets": 0, "field_selectors": []},
}


def node_of(selector):
    for part in (selector or "").split(","):
        k, _, v = part.partition("=")
        if k == "spec.nodeName":
            return v
    return None


def on_node(pod, node):
    return node is None or pod.get("spec", {}).get("nodeName") == node


def bump(kind, obj):
    state["rv"] += 1
    obj = json.loads(json.dumps(obj))
    obj.setdefault("metadata", {})["resourceVersion"] = str(state["rv"])
    state["events"].append((state["rv"], kind, obj))
    lock.notify_all()
    return obj


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length", "0"))
        return json.loads(self.rfile.read(n) or b"{}")

    def chunk(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/_test/stats":
            with lock:
                return self.send_json(200, state["stats"])
        if url.path == "/api/v1/pods":
            node = node_of(q.get("fieldSelector"))
            with lock:
                state["stats"]["field_selectors"].append(q.get("fieldSelector", ""))
            if q.get("watch") in ("true", "1"):
                return self.watch(node, int(q.get("resourceVersion") or 0))
            with lock:
                state["stats"]["lists"] += 1
                items = [p for p in state["pods"].values() if on_node(p, node)]
                rv = str(state["rv"])
            return self.send_json(200, {"kind": "PodList", "apiVersion": "v1",
                                        "metadata": {"resourceVersion": rv}, "items": items})
        parts = url.path.strip("/").split("/")
        # /apis/apps/v1/namespaces/<ns>/replicasets/<name>
        if len(parts) == 7 and parts[:4] == ["apis", "apps", "v1", "namespaces"] and parts[5] == "replicasets":
            with lock:
                state["stats"]["replicaset_gets"] += 1
                rs = state["replicasets"].get((parts[4], parts[6]))
            if rs is None:
                return self.send_json(404, status(404, "NotFound", f"replicasets \"{parts[6]}\" not found"))
            return self.send_json(200, rs)
        self.send_json(404, status(404, "NotFound", "the server could not find the requested resource"))

    def watch(self, node, since):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + WATCH_SECONDS
        with lock:
            state["stats"]["watches"] += 1
        try:
            while True:
                with lock:
                    if since < state["expired_below"]:
                        state["stats"]["gone"] += 1
                        out = [{"type": "ERROR", "object": status(
                            410, "Expired", f"too old resource version: {since} ({state['expired_below']})")}]
                        done = True
                    else:
                        out = []
                        for rv, kind, obj in state["events"]:
                            if rv > since and on_node(obj, node):
                                out.append({"type": kind, "object": obj})
                        since = max([since] + [rv for rv, _, _ in state["events"]])
                        done = time.monotonic() >= deadline
                        if not out and not done:
                            lock.wait(timeout=0.1)
                for e in out:
                    self.chunk(e)
                if done:
                    break
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def do_POST(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        with lock:
            if url.path == "/_test/pods":
                pod = self.body()
                stored = bump("MODIFIED" if pod["metadata"]["uid"] in state["pods"] else "ADDED", pod)
                state["pods"][pod["metadata"]["uid"]] = stored
            elif url.path == "/_test/delete":
                pod = state["pods"].pop(q["uid"])
                bump("DELETED", pod)
            elif url.path == "/_test/forget":
                state["pods"].pop(q["uid"])
                state["rv"] += 1
            elif url.path == "/_test/expire":
                state["rv"] += 1
                state["expired_below"] = state["rv"]
                lock.notify_all()
            elif url.path == "/_test/replicasets":
                rs = self.body()
                state["replicasets"][(rs["metadata"]["namespace"], rs["metadata"]["name"])] = rs
            else:
                return self.send_json(404, {})
        self.send_json(200, {"ok": True})


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
