"""A small FastMCP server (Python, stdio) used by the integration tests.

Tools: echo (returns its input), add, and big (returns N bytes of text).
"""
from fastmcp import FastMCP

mcp = FastMCP("pyserver")


@mcp.tool
def echo(message: str) -> str:
    """Returns the message unchanged."""
    return message


@mcp.tool
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@mcp.tool
def big(size: int) -> str:
    """Returns `size` bytes of text."""
    return "z" * size


@mcp.resource("notes://readme")
def readme() -> str:
    """A static note."""
    return "hello from pyserver"


if __name__ == "__main__":
    mcp.run(show_banner=False)
