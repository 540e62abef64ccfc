"""A small stdio MCP server for the import tests: a library's five tools, written with the
`mcp` SDK. Two carry readOnlyHint=true, one readOnlyHint=false, and two carry no hint (one
read by its name, one write), so every rule of the import's read/write decision is used.

Run: python tests/support/mcp_tools_server.py
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("City Library", instructions="Members may borrow at most three books at a time.\n")
READ_ONLY = ToolAnnotations(readOnlyHint=True)
BOOKS = {"B1": {"title": "Dune", "available": True}, "B2": {"title": "Emma", "available": False}}


@server.tool(annotations=READ_ONLY)
def get_book(book_id: str) -> dict:
    """A book's title and whether it is on the shelf."""
    return BOOKS.get(book_id, {})


@server.tool(annotations=READ_ONLY)
def member_loans(member_id: str) -> list[str]:
    """The ids of the books a member has borrowed."""
    return []


@server.tool()
def search_catalogue(query: str, limit: int = 5) -> list[str]:
    """Book ids whose title contains the query."""
    return [b for b, row in BOOKS.items() if query.lower() in row["title"].lower()][:limit]


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False))
def borrow_book(member_id: str, book_id: str) -> str:
    """Lend a book to a member."""
    return "borrowed"


@server.tool()
def renew_loan(member_id: str, book_id: str, weeks: int = 2) -> str:
    """Extend a loan by some weeks."""
    return "renewed"


if __name__ == "__main__":
    server.run()
