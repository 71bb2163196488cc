// What the client drivers record of each JSON-RPC message (the integration
// tests compare the monitor's events with it).

/// id, method, tool (tools/call), error code, and kind of a message.
export function summarize(m) {
  const s = { id: m.id, method: m.method };
  if (m.method === "tools/call") s.tool = m.params?.name;
  if (m.error) s.error = m.error.code;
  s.kind = m.method ? ("id" in m ? "request" : "notification") : m.error ? "error" : "response";
  return s;
}
