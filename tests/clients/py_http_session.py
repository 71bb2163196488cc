"""Drives a Streamable HTTP MCP server with the official Python SDK client
and writes what it did: the tool calls in order and the size of each result.

usage: python py_http_session.py <transcript.json> <url> [big_result_bytes]

For an https URL, MCP_TEST_CA names the PEM file of the certificate
authority to trust (the tests make a self-signed one). MCP_TEST_HTTP2=1
speaks HTTP/2 only: h2 over TLS, or h2c with prior knowledge.
MCP_TEST_ECHO: the message of the echo call. MCP_TEST_BIG_TOOL: the tool
of the last call (default big).
"""
import asyncio
import json
import os
import ssl
import sys

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


async def main():
    out, url = sys.argv[1], sys.argv[2]
    big = int(sys.argv[3]) if len(sys.argv) > 3 else 3 * 1024 * 1024
    steps = []
    client = None
    # MCP_TEST_HTTP2=1: HTTP/2 only (h2 by ALPN over TLS; h2c with prior
    # knowledge for an http URL).
    h2 = bool(os.environ.get("MCP_TEST_HTTP2"))
    if os.environ.get("MCP_TEST_CA") or h2:
        verify = True
        if os.environ.get("MCP_TEST_CA"):
            verify = ssl.create_default_context(cafile=os.environ["MCP_TEST_CA"])
        client = httpx2.AsyncClient(
            verify=verify,
            http1=not h2,
            http2=h2,
            timeout=httpx2.Timeout(30, read=300),
        )
    async with streamable_http_client(url, http_client=client, max_sse_event_size=None) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            steps.append({"method": "initialize", "server": init.server_info.name})
            tools = await session.list_tools()
            steps.append({"method": "tools/list", "tools": len(tools.tools)})
            message = os.environ.get("MCP_TEST_ECHO") or "hello over http"
            r = await session.call_tool("echo", {"message": message})
            steps.append({"method": "tools/call", "tool": "echo", "bytes": len(r.content[0].text)})
            tool = os.environ.get("MCP_TEST_BIG_TOOL") or "big"
            r = await session.call_tool(tool, {"size": big})
            steps.append({"method": "tools/call", "tool": tool, "bytes": len(r.content[0].text)})
    with open(out, "w") as f:
        json.dump({"client_pid": os.getpid(), "steps": steps}, f)


asyncio.run(main())
