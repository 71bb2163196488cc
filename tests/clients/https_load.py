"""Load for `cargo xtask bench https`: one MCP session over Streamable HTTP
(HTTPS when MCP_TEST_CA names the CA to trust), then `echo` tool calls
from CONCURRENCY tasks for SECONDS; prints {"requests", "seconds", "rps"}.

usage: python https_load.py <url> <seconds> <concurrency>
"""
import asyncio
import json
import os
import ssl
import sys
import time

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


async def main():
    url, seconds, conc = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    client = None
    if os.environ.get("MCP_TEST_CA"):
        client = httpx2.AsyncClient(
            verify=ssl.create_default_context(cafile=os.environ["MCP_TEST_CA"]),
            timeout=httpx2.Timeout(30, read=300),
            limits=httpx2.Limits(max_connections=conc + 2, max_keepalive_connections=conc + 2),
        )
    done = 0
    async with streamable_http_client(url, http_client=client) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            deadline = time.monotonic() + seconds
            start = time.monotonic()

            async def worker(i):
                nonlocal done
                n = 0
                while time.monotonic() < deadline:
                    await session.call_tool("echo", {"message": f"load {i} {n}"})
                    n += 1
                    done += 1

            await asyncio.gather(*(worker(i) for i in range(conc)))
            elapsed = time.monotonic() - start
    print(json.dumps({"requests": done, "seconds": elapsed, "rps": done / elapsed}))


asyncio.run(main())
