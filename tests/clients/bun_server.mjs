// An MCP server on Bun.serve over HTTPS (Bun's own server and its
// BoringSSL): the official TypeScript SDK's web-standard Streamable HTTP
// transport, with the tools of fastmcp_server.py that the Python SDK
// client calls (echo, big).
//
// usage: bun bun_server.mjs
// env: MCP_TEST_HTTP_PORT, MCP_TEST_TLS_CERT, MCP_TEST_TLS_KEY (PEM files).
// Stateful (a session id per client), JSON responses.
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import * as z from "zod";

function newServer() {
  const server = new McpServer({ name: "bunserver", version: "1.0.0" });
  server.registerTool(
    "echo",
    { description: "Echo a message back.", inputSchema: { message: z.string() } },
    async ({ message }) => ({ content: [{ type: "text", text: message }] }),
  );
  server.registerTool(
    "big",
    { description: "A text result of the given size.", inputSchema: { size: z.number().int() } },
    async ({ size }) => ({ content: [{ type: "text", text: "x".repeat(size) }] }),
  );
  return server;
}

const sessions = new Map();

Bun.serve({
  port: Number(process.env.MCP_TEST_HTTP_PORT),
  hostname: "127.0.0.1",
  tls: {
    cert: Bun.file(process.env.MCP_TEST_TLS_CERT),
    key: Bun.file(process.env.MCP_TEST_TLS_KEY),
  },
  async fetch(req) {
    if (new URL(req.url).pathname !== "/mcp") {
      return new Response("not found", { status: 404 });
    }
    const id = req.headers.get("mcp-session-id");
    let transport = id ? sessions.get(id) : undefined;
    if (!transport) {
      const body = req.method === "POST" ? await req.clone().json().catch(() => null) : null;
      if (id || !body || !isInitializeRequest(body)) {
        return new Response("no such session", { status: 400 });
      }
      transport = new WebStandardStreamableHTTPServerTransport({
        sessionIdGenerator: () => crypto.randomUUID(),
        enableJsonResponse: true,
        onsessioninitialized: (sid) => sessions.set(sid, transport),
      });
      await newServer().connect(transport);
    }
    return transport.handleRequest(req);
  },
});
