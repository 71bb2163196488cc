"""What the Python client drivers record of each JSON-RPC message (the
integration tests compare the monitor's events with it); the same summary
as transcript.mjs. Standard library only."""


def summarize(m):
    s = {"id": m.get("id"), "method": m.get("method")}
    if m.get("method") == "tools/call":
        s["tool"] = m.get("params", {}).get("name")
    if "error" in m:
        s["error"] = m["error"].get("code")
    s["kind"] = ("request" if "id" in m else "notification") if "method" in m else ("error" if "error" in m else "response")
    return s
