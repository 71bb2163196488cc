"""Drives an MCP server with the official Python SDK client in the stateless
2026-07-28 revision (`server/discover` probe, then requests that carry
`Mcp-Method` / `Mcp-Name` headers, no session id) and writes what it did.

usage: python py_stateless_session.py <transcript.json> <url> [big_result_bytes]
"""
import asyncio
import json
import os
import sys

from mcp.client.client import Client


async def main():
    out, url = sys.argv[1], sys.argv[2]
    big = int(sys.argv[3]) if len(sys.argv) > 3 else 3 * 1024 * 1024
    steps = []
    # "auto" probes server/discover and adopts the stateless revision when
    # the server offers it.
    async with Client(url, mode="auto") as client:
        tools = await client.list_tools()
        steps.append({"method": "tools/list", "tools": len(tools.tools)})
        r = await client.call_tool("echo", {"message": "hello, stateless"})
        steps.append({"method": "tools/call", "tool": "echo", "bytes": len(r.content[0].text)})
        r = await client.call_tool("big", {"size": big})
        steps.append({"method": "tools/call", "tool": "big", "bytes": len(r.content[0].text)})
    with open(out, "w") as f:
        json.dump({"client_pid": os.getpid(), "steps": steps}, f)


asyncio.run(main())
