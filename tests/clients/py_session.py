"""Drives an MCP server over stdio with the official Python SDK client and
writes a transcript of every message on the wire, with its exact size.

usage: python py_session.py <transcript.json> <server command...>
MCP_TEST_PY_SCENARIO: list stops after tools/list; time, git and fetch
drive the PyPI reference servers (git: the repository in MCP_TEST_REPO;
fetch: the page at MCP_TEST_FETCH_URL); otherwise the FastMCP test server.
"""
import asyncio
import json
import os
import sys

import mcp.client.stdio as stdio_mod
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from transcript import summarize

transcript = []


def record(direction, line):
    transcript.append({"dir": direction, "bytes": len(line.encode()), "msg": summarize(json.loads(line)), "after_resume": True})


# Received: the transport hands each raw line to _parse_line.
_parse_line = stdio_mod._parse_line


def parse_line(line):
    record("s2c", line.rstrip("\r"))
    return _parse_line(line)


stdio_mod._parse_line = parse_line


class RecordingWriter:
    """Wraps the write stream: the transport serialises each message with
    model_dump_json(by_alias=True, exclude_unset=True)."""

    def __init__(self, inner):
        self._inner = inner

    async def send(self, session_message):
        record("c2s", session_message.message.model_dump_json(by_alias=True, exclude_unset=True))
        await self._inner.send(session_message)

    async def __aenter__(self):
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc):
        return await self._inner.__aexit__(*exc)

    def __getattr__(self, name):
        return getattr(self._inner, name)


async def drive_time(session):
    await session.call_tool("get_current_time", {"timezone": "UTC"})
    await session.call_tool("convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"})
    await session.send_ping()


async def drive_git(session):
    repo = os.environ["MCP_TEST_REPO"]
    await session.call_tool("git_status", {"repo_path": repo})
    await session.call_tool("git_log", {"repo_path": repo, "max_count": 5})


async def drive_fetch(session):
    url = os.environ["MCP_TEST_FETCH_URL"]
    page = await session.call_tool("fetch", {"url": url})
    assert not page.is_error, page.content
    await session.call_tool("fetch", {"url": url, "max_length": 200, "start_index": 10})


REFERENCE_SERVERS = {"time": drive_time, "git": drive_git, "fetch": drive_fetch}


async def main():
    out = sys.argv[1]
    # The SDK passes servers only a safe subset of the environment: hand the
    # test variant over explicitly.
    env = {"MCP_TEST_VARIANT": os.environ["MCP_TEST_VARIANT"]} if "MCP_TEST_VARIANT" in os.environ else None
    params = StdioServerParameters(command=sys.argv[2], args=sys.argv[3:], env=env)
    server_pid = None
    orig_create = stdio_mod._create_platform_compatible_process

    async def create(*a, **kw):
        nonlocal server_pid
        p = await orig_create(*a, **kw)
        server_pid = p.pid
        return p

    stdio_mod._create_platform_compatible_process = create
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, RecordingWriter(write)) as session:
            await session.initialize()
            await session.list_tools()
            scenario = os.environ.get("MCP_TEST_PY_SCENARIO", "")
            if scenario == "list":
                return await done(out, server_pid)
            if scenario in REFERENCE_SERVERS:
                await REFERENCE_SERVERS[scenario](session)
                return await done(out, server_pid)
            await session.call_tool("echo", {"message": "hi from python"})
            await session.call_tool("add", {"a": 2, "b": 40})
            await session.call_tool("echo", {"message": "p" * (1 << 20)})
            await session.call_tool("big", {"size": 3 << 20})
            await session.list_resources()
            await session.read_resource("notes://readme")
            await session.send_ping()
    await done(out, server_pid)


async def done(out, server_pid):
    with open(out, "w") as f:
        json.dump({"client_pid": os.getpid(), "server_pid": server_pid, "transcript": transcript}, f)


asyncio.run(main())
