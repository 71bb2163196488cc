// Drives a real MCP server over HTTP with the official TypeScript SDK client
// and writes a transcript of every JSON-RPC message it sent and received,
// with the size of its JSON text. The integration tests compare the
// monitor's events (seen from the server's and from the client's side) with
// this transcript.
//
// usage: node http_session.mjs <transport> <url> <transcript.json> [big_bytes]
//   transport: streamableHttp (Streamable HTTP: POSTs answered by JSON or an
//              SSE stream, the GET stream, DELETE at the end)
//            | sse (legacy HTTP+SSE: one GET /sse stream carries every
//              server message; POSTs to the `endpoint` it announced)
//   big_bytes: size of the large echo (default 3 MiB): a multi-megabyte
//              argument and tool result.
// The calls suit @modelcontextprotocol/server-everything; with
// MCP_TEST_TOOLS=fastmcp they suit tests/clients/fastmcp_server.py (echo,
// then `big` for the large result).
// For an https URL, NODE_EXTRA_CA_CERTS names the certificate to trust.
import { writeFileSync } from "node:fs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { CreateMessageRequestSchema } from "@modelcontextprotocol/sdk/types.js";
import { summarize } from "./transcript.mjs";

const [kind, url, transcriptPath, bigArg] = process.argv.slice(2);
const bigBytes = Number(bigArg ?? 3 * 1024 * 1024);

const transcript = [];
function record(dir, msg) {
  // Both SDK transports put JSON.stringify(message) on the wire (as a POST
  // body or an SSE `data:` line); received messages are re-serialised the
  // same way, which gives the sender's text back.
  transcript.push({ dir, bytes: Buffer.byteLength(JSON.stringify(msg), "utf8"), msg: summarize(msg) });
}

const transport =
  kind === "sse" ? new SSEClientTransport(new URL(url)) : new StreamableHTTPClientTransport(new URL(url));
const send = transport.send.bind(transport);
transport.send = (message, options) => {
  record("c2s", message);
  return send(message, options);
};
// The client installs its handler before the first message arrives; wrap
// whatever it installs.
let handler;
Object.defineProperty(transport, "onmessage", {
  configurable: true,
  get: () =>
    handler &&
    ((message, extra) => {
      record("s2c", message);
      return handler(message, extra);
    }),
  set: (fn) => {
    handler = fn;
  },
});

const client = new Client({ name: "monitor-test-client", version: "1.0.0" }, { capabilities: { sampling: {} } });
client.setRequestHandler(CreateMessageRequestSchema, async () => ({
  model: "test-model",
  role: "assistant",
  content: { type: "text", text: "sampled answer" },
}));

await client.connect(transport);
const tools = await client.listTools();
await client.callTool({ name: "echo", arguments: { message: "hello over http" } });
if (process.env.MCP_TEST_TOOLS === "fastmcp") {
  const big = await client.callTool({ name: "big", arguments: { size: bigBytes } });
  await finish(big);
  process.exit(0);
}
const big = await client.callTool({ name: "echo", arguments: { message: "z".repeat(bigBytes) } });
await client.callTool({ name: "get-sum", arguments: { a: 1, b: 2 } });
await client.callTool(
  { name: "trigger-long-running-operation", arguments: { duration: 1, steps: 3 } },
  undefined,
  { onprogress: () => {} },
);
await client.listResources();
await client.readResource({ uri: "demo://resource/dynamic/text/1" });
await client.getPrompt({ name: "args-prompt", arguments: { city: "Paris" } });
await client.ping();
await client.callTool({ name: "trigger-sampling-request", arguments: { prompt: "hi", maxTokens: 5 } });
await client.callTool({ name: "get-sum", arguments: { a: 5, b: 8 } });
await finish(big);

async function finish(big) {
  // Let in-flight notifications land before closing.
  await new Promise((r) => setTimeout(r, 200));
  if (kind !== "sse") await transport.terminateSession();
  await client.close();
  writeFileSync(
    transcriptPath,
    JSON.stringify(
      {
        client_pid: process.pid,
        tools: tools.tools.length,
        big_result_bytes: big.content[0].text.length,
        transcript,
      },
      null,
      1,
    ),
  );
}
