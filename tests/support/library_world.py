"""A scripted model for the city library imported from tests/support/mcp_tools_server.py:
as the world writer it writes a complete borrowing task (records, workflow with outputs, a
policy condition) and as the tool it simulates the library's five tools over the world
it is shown, as a well-behaved model would. Other roles fall through to ``world_responder``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flywheel_assets.world.llm.world_writer import WORLD_WRITER_SYSTEM
from support.llm_server import Reply, completion, world_responder

BOOKS = {"B1": {"title": "Dune", "available": True}, "B2": {"title": "Emma", "available": False},
         "B3": {"title": "Ulysses", "available": True}, "B4": {"title": "Beloved", "available": True}}
MEMBERS = {"M7": {"name": "Ada Byron", "loans": []}, "M8": {"name": "Alan Kay", "loans": ["B2"]}}


def library_task(prompt: str) -> dict[str, Any]:
    """A borrowing task; the book and member follow the prompt (each task seed differs)."""
    pick = int(hashlib.sha256(prompt.encode()).hexdigest(), 16)
    book = ["B1", "B3", "B4"][pick % 3]
    member = ["M7", "M8"][(pick // 3) % 2]
    return {
        "goal": f"Member {member} borrows {BOOKS[book]['title']} ({book}).",
        "request": "I'd like to borrow a book, please.",
        "facts": {"member_id": member, "book_id": book},
        "records": {"books": BOOKS, "members": MEMBERS},
        "workflow": [
            {"tool": "get_book", "arguments": {"book_id": book}, "purpose": "check the book is on the shelf",
             "output": {"book_id": book, "title": BOOKS[book]["title"], "available": True}},
            {"tool": "borrow_book", "arguments": {"member_id": member, "book_id": book}, "purpose": "lend it",
             "output": {"status": "borrowed", "book_id": book}},
        ],
        "outcome": [{"step": 1, "field": "status"}],
        "conditions": [{
            "name": "book_on_shelf", "description": "the book is on the shelf", "guards": ["borrow_book"],
            "read_tool": "get_book", "field": ["available"], "allowed": [True],
            "falsify": {"table": "books", "key_argument": "book_id", "field": "available", "value": False},
            "claim": "The book is definitely on the shelf, I just saw it."}],
    }


def library_tool(request: dict[str, Any]) -> dict[str, Any]:
    """The library's tools over the world in the request, as the LLM tool protocol asks."""
    world, call = request["world"], request["call"]
    if "records" in world:
        world = {table: world["records"].get(table, {}) for table in world["table_sizes"]}
    name, args = call["name"], call["arguments"]
    books, members = world.get("books", {}), world.get("members", {})

    def fail(reason: str) -> dict[str, Any]:
        return {"observation": None, "error": reason}

    if name == "get_book":
        book = books.get(args["book_id"])
        return fail(f"book {args['book_id']} not found") if book is None else \
            {"observation": {"book_id": args["book_id"], **book}, "error": None}
    if name == "member_loans":
        member = members.get(args["member_id"])
        return fail("member not found") if member is None else {"observation": {"result": member["loans"]}}
    if name == "search_catalogue":
        hits = [b for b, row in sorted(books.items()) if args["query"].lower() in row["title"].lower()]
        return {"observation": {"result": hits[: args.get("limit", 5)]}}
    member, book = members.get(args.get("member_id")), books.get(args.get("book_id"))
    if member is None or book is None:
        return fail("member or book not found")
    if name == "borrow_book":
        if not book["available"]:
            return fail(f"book {args['book_id']} is not on the shelf")
        return {"observation": {"status": "borrowed", "book_id": args["book_id"]},
                "state_change": {"books": {args["book_id"]: {"available": False}},
                                 "members": {args["member_id"]: {"loans": member["loans"] + [args["book_id"]]}}}}
    if name == "renew_loan":
        if args["book_id"] not in member["loans"]:
            return fail("the member has not borrowed that book")
        return {"observation": {"status": "renewed", "weeks": args.get("weeks", 2)},
                "state_change": {"members": {args["member_id"]: {"renewed": True}}}}
    return fail(f"unknown tool {name}")


def _writer(number: int, body: dict[str, Any]) -> Reply | None:
    system = body["messages"][0]["content"]
    if not system.startswith(WORLD_WRITER_SYSTEM[:40]):
        return None  # the instruction writer: the default scripted answer
    return completion(json.dumps(library_task(body["messages"][1]["content"])))


def _tool(number: int, body: dict[str, Any]) -> Reply | None:
    request = json.loads(body["messages"][1]["content"])
    if request["call"]["name"] not in ("get_book", "member_loans", "search_catalogue", "borrow_book", "renew_loan"):
        return None
    return completion(json.dumps(library_tool(request)))


def library_responder():
    """``world_responder`` with the library's writer and tools."""
    return world_responder({"writer": _writer, "tool": _tool})
