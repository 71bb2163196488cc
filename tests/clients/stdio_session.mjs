// Drives a real MCP server over stdio with the official TypeScript SDK client
// and writes a transcript of every message that crossed the pipes, with its
// exact size on the wire. The integration tests compare the monitor's events
// with this transcript.
//
// usage: node stdio_session.mjs <scenario> <transcript.json> [--pause] [server args...]
//   scenario: everything | filesystem | echo-loop | leak | time | git
//   time: mcp-server-time from PyPI (MCP_TEST_PYTHON's virtualenv).
//   git:  [repo] mcp-server-git from PyPI on an existing repository.
//   fetch: <url> mcp-server-fetch from PyPI, fetching url (a local page).
//   remote: <url> mcp-remote (npm), the stdio-to-HTTP bridge, to an MCP
//         server at url (the FastMCP test server: echo, add).
//   leak: [dir] [file]: read `file` through server-filesystem, then pass its
//         content to the send_message tool of the FastMCP test server
//         (MCP_TEST_PYTHON), from the same client process
//         (MCP_TEST_SEND_VALUE_OF=NAME: only the value of its NAME= line).
//   --noise=N: before the first message, and again after tools/list, write N
//             lines that are not JSON-RPC to the server's stdin, one write
//             each (a client trying to get the stream judged not MCP; the
//             SDK servers skip such lines).
//   --pause:  after the first steps print "PAUSED" and wait for a line on stdin
//             (the test starts the monitor meanwhile); later messages are marked
//             after_resume.
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { createRequire } from "node:module";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport, getDefaultEnvironment } from "@modelcontextprotocol/sdk/client/stdio.js";
import { ReadBuffer } from "@modelcontextprotocol/sdk/shared/stdio.js";
import { summarize } from "./transcript.mjs";
import {
  CreateMessageRequestSchema,
  ListRootsRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";

const [scenario, transcriptPath, ...rest] = process.argv.slice(2);
const pause = rest.includes("--pause");
const require = createRequire(import.meta.url);

const transcript = [];
let resumed = !pause;
function record(dir, line) {
  const msg = JSON.parse(line);
  transcript.push({ dir, bytes: Buffer.byteLength(line, "utf8"), msg: summarize(msg), after_resume: resumed });
}

// Received lines: ReadBuffer.readMessage is where the transport cuts a line.
const readMessage = ReadBuffer.prototype.readMessage;
ReadBuffer.prototype.readMessage = function () {
  if (this._buffer) {
    const i = this._buffer.indexOf("\n");
    if (i !== -1) record("s2c", this._buffer.toString("utf8", 0, i).replace(/\r$/, ""));
  }
  return readMessage.call(this);
};

// A console script of the Python test virtualenv (PyPI reference servers).
function venvScript(name) {
  return join(process.env.MCP_TEST_PYTHON, "..", name);
}

function serverCommand() {
  if (scenario === "time") {
    return { command: venvScript("mcp-server-time"), args: [] };
  }
  if (scenario === "remote") {
    const url = rest.find((a) => !a.startsWith("--"));
    const proxy = new URL("./node_modules/mcp-remote/dist/proxy.js", import.meta.url).pathname;
    // The SDK hands servers a safe subset of the environment: pass on the
    // CA of an HTTPS test server.
    const ca = process.env.NODE_EXTRA_CA_CERTS;
    const env = ca ? { ...getDefaultEnvironment(), NODE_EXTRA_CA_CERTS: ca } : undefined;
    return { args: [proxy, url], env };
  }
  if (scenario === "fetch") {
    return { command: venvScript("mcp-server-fetch"), args: ["--ignore-robots-txt", "--allow-private-ips"] };
  }
  if (scenario === "git") {
    const dir = rest.find((a) => !a.startsWith("--"));
    return { dir, command: venvScript("mcp-server-git"), args: ["--repository", dir] };
  }
  if (scenario === "filesystem" || scenario === "leak") {
    const dir = rest.find((a) => !a.startsWith("--")) ?? mkdtempSync(join(tmpdir(), "mcpfs-"));
    return { dir, args: [require.resolve("@modelcontextprotocol/server-filesystem/dist/index.js"), dir] };
  }
  return { args: [require.resolve("@modelcontextprotocol/server-everything/dist/index.js"), "stdio"] };
}

const { dir, args, command, env } = serverCommand();
const transport = new StdioClientTransport({ command: command ?? process.execPath, args, env, stderr: "ignore" });
// Sent messages: the transport writes JSON.stringify(message) + "\n".
const noise = Number(rest.find((a) => a.startsWith("--noise="))?.slice(8) ?? 0);
let noiseDue = noise > 0;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const send = transport.send.bind(transport);
transport.send = async (message) => {
  if (noiseDue) {
    noiseDue = false;
    // Give the server time to start reading, so the noise reaches it line
    // by line rather than all at once with the first message in one read.
    await sleep(1000);
    for (let i = 0; i < noise; i++) {
      transport._process.stdin.write(`not json-rpc, line ${i}\n`);
      await sleep(15);
    }
  }
  record("c2s", JSON.stringify(message));
  return send(message);
};

const client = new Client(
  { name: "monitor-test-client", version: "1.0.0" },
  { capabilities: { sampling: {}, roots: { listChanged: true } } },
);
client.setRequestHandler(CreateMessageRequestSchema, async () => ({
  model: "test-model",
  role: "assistant",
  content: { type: "text", text: "sampled answer" },
}));
client.setRequestHandler(ListRootsRequestSchema, async () => ({
  roots: dir ? [{ uri: `file://${dir}`, name: "test" }] : [],
}));

async function waitForResume() {
  if (!pause) return;
  process.stdout.write("PAUSED\n");
  const rl = createInterface({ input: process.stdin });
  await new Promise((resolve) => rl.once("line", resolve));
  rl.close();
  resumed = true;
}

const big = "x".repeat(1 << 20);
await client.connect(transport);
const info = { client_pid: process.pid, server_pid: transport.pid };

if (scenario === "everything") {
  await client.listTools();
  noiseDue = noise > 0;
  await client.callTool({ name: "echo", arguments: { message: "hello" } });
  await waitForResume();
  await client.callTool({ name: "echo", arguments: { message: big } });
  await client.callTool({ name: "get-sum", arguments: { a: 1, b: 2 } });
  await client.callTool(
    { name: "trigger-long-running-operation", arguments: { duration: 1, steps: 3 } },
    undefined,
    { onprogress: () => {} },
  );
  await client.listResources();
  await client.readResource({ uri: "demo://resource/dynamic/text/1" });
  await client.listPrompts();
  await client.getPrompt({ name: "simple-prompt" });
  await client.getPrompt({ name: "args-prompt", arguments: { city: "Paris" } });
  await client.ping();
  await client.setLoggingLevel("error");
  await client.callTool({ name: "trigger-sampling-request", arguments: { prompt: "hi", maxTokens: 5 } });
  await client.sendRootsListChanged();
  await client.callTool({ name: "get-sum", arguments: { a: 5, b: 8 } });
} else if (scenario === "filesystem") {
  await client.listTools();
  await waitForResume();
  const file = join(dir, "big.txt");
  await client.callTool({ name: "write_file", arguments: { path: file, content: big } });
  await client.callTool({ name: "read_text_file", arguments: { path: file } });
  await client.callTool({ name: "list_directory", arguments: { path: dir } });
  await client.callTool({ name: "get_file_info", arguments: { path: file } });
  await client.callTool({ name: "create_directory", arguments: { path: join(dir, "sub") } });
  await client.callTool({ name: "search_files", arguments: { path: dir, pattern: "big" } });
  await client.callTool({ name: "list_allowed_directories", arguments: {} });
  await client.callTool({ name: "read_text_file", arguments: { path: "/etc/shadow" } });
} else if (scenario === "time") {
  await client.listTools();
  await client.callTool({ name: "get_current_time", arguments: { timezone: "UTC" } });
  await client.callTool({
    name: "convert_time",
    arguments: { source_timezone: "UTC", time: "12:00", target_timezone: "Europe/Paris" },
  });
  await client.ping();
} else if (scenario === "git") {
  await client.listTools();
  await client.callTool({ name: "git_status", arguments: { repo_path: dir } });
  await client.callTool({ name: "git_log", arguments: { repo_path: dir, max_count: 5 } });
  await client.callTool({ name: "git_branch", arguments: { repo_path: dir, branch_type: "local" } });
} else if (scenario === "fetch") {
  const url = rest.find((a) => !a.startsWith("--"));
  await client.listTools();
  const page = await client.callTool({ name: "fetch", arguments: { url } });
  if (page.isError) throw new Error(`fetch failed: ${JSON.stringify(page.content)}`);
  await client.callTool({ name: "fetch", arguments: { url, max_length: 200, start_index: 10 } });
} else if (scenario === "remote") {
  await client.listTools();
  await client.callTool({ name: "echo", arguments: { message: "through the bridge" } });
  await client.callTool({ name: "add", arguments: { a: 2, b: 3 } });
} else if (scenario === "echo-loop") {
  // For benchmarks: n echo calls of a given size.
  const n = Number(process.env.ECHO_COUNT ?? 100);
  const msg = "y".repeat(Number(process.env.ECHO_BYTES ?? 200));
  await waitForResume();
  for (let i = 0; i < n; i++) await client.callTool({ name: "echo", arguments: { message: msg } });
} else if (scenario === "leak") {
  const file = rest.filter((a) => !a.startsWith("--"))[1];
  await client.listTools();
  const read = await client.callTool({ name: "read_text_file", arguments: { path: file } });
  const text = read.content.map((c) => c.text ?? "").join("\n");
  const py = new StdioClientTransport({
    command: process.env.MCP_TEST_PYTHON,
    args: [new URL("./fastmcp_server.py", import.meta.url).pathname],
    stderr: "ignore",
  });
  const pyClient = new Client({ name: "monitor-test-client", version: "1.0.0" });
  await pyClient.connect(py);
  info.server2_pid = py.pid;
  await pyClient.listTools();
  // MCP_TEST_SEND_VALUE_OF=NAME: send only the value of the file's
  // NAME=value line, alone in a sentence (an agent passing a credential on
  // without its context).
  const only = process.env.MCP_TEST_SEND_VALUE_OF;
  const value = only && text.split("\n").find((l) => l.startsWith(`${only}=`))?.slice(only.length + 1);
  const body = only ? `keep this safe for later: ${value} (from the ops box)` : text;
  await pyClient.callTool({ name: "send_message", arguments: { to: "ops@example.org", text: body } });
  await pyClient.close();
} else {
  throw new Error(`unknown scenario ${scenario}`);
}

// Optional extra call, e.g. to plant a fake secret for redaction tests.
if (process.env.MCP_TEST_ECHO_MESSAGE && scenario === "everything") {
  await client.callTool({ name: "echo", arguments: { message: process.env.MCP_TEST_ECHO_MESSAGE } });
}

// Let in-flight notifications land before closing.
await new Promise((r) => setTimeout(r, 200));
await client.close();
writeFileSync(transcriptPath, JSON.stringify({ ...info, transcript }, null, 1));
