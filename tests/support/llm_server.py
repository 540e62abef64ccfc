"""A scripted OpenAI-compatible server on a loopback port, for the LLM layer's tests and
benchmark: ``/v1/chat/completions`` answered by a Python callable, every request counted,
the most requests in flight at once measured, an optional artificial latency per call.

``world_responder`` answers each world role deterministically from its prompt alone, the
way a well-behaved model would: the tool role runs the domain's real tool on the world in
the prompt and reports the state change, the user role reveals a fact when asked for it
and stops once the agent reports, the judge says yes, the writer leaves out a fact.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, Any]  # (HTTP status, JSON-able body or raw bytes)
Responder = Callable[[int, dict[str, Any]], Reply]


def completion(content: str | None, tool_calls: list[dict[str, Any]] | None = None, *,
               prompt_tokens: int = 10, completion_tokens: int = 5) -> Reply:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return 200, {"id": "chatcmpl-scripted", "object": "chat.completion", "created": 0, "model": "scripted",
                 "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                           "total_tokens": prompt_tokens + completion_tokens}}


class ScriptedServer:
    """``respond(request_number, body)`` answers each request (numbered from 1)."""

    def __init__(self, respond: Responder, latency_s: float = 0.0):
        self.respond = respond
        self.latency_s = latency_s
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw)
                with outer._lock:
                    outer.bodies.append(body)
                    outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                    number = len(outer.bodies)
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    if outer.latency_s:
                        time.sleep(outer.latency_s)
                    status, payload = outer.respond(number, body)
                finally:
                    with outer._lock:
                        outer.in_flight -= 1
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (a timeout test)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def hits(self) -> int:
        return len(self.bodies)

    def reset_counts(self) -> None:
        with self._lock:
            self.bodies.clear()
            self.headers.clear()
            self.max_in_flight = 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


# --- a deterministic world --------------------------------------------------------------

def role_of(body: dict[str, Any]) -> str:
    system = next((m.get("content") or "" for m in body["messages"] if m["role"] == "system"), "")
    if system.startswith("You are role-playing a customer"):
        return "user"
    if system.startswith("You simulate the tool"):
        return "tool"
    if system.startswith("You grade"):
        return "judge"
    if system.startswith("You write"):  # the opening message, or a whole task (the world writer)
        return "writer"
    return "policy"


def scripted_user(body: dict[str, Any]) -> str:
    system = body["messages"][0]["content"]
    facts = dict(re.findall(r"^- your (.+?): (.+)$", system, re.M))
    agent = next((m["content"] or "" for m in reversed(body["messages"]) if m["role"] == "user"), "")
    asked = [f"My {phrase} is {value}." for phrase, value in facts.items() if phrase.lower() in agent.lower()]
    if asked and "?" in agent:
        return " ".join(asked)
    if "?" in agent:
        return "I don't know, sorry."
    return "Thank you, that's all. ###STOP###"


def scripted_tool(body: dict[str, Any]) -> str:
    from flywheel_assets.world.domains import DOMAINS, get_domain
    from flywheel_assets.world.tools import ProceduralToolBackend

    system = body["messages"][0]["content"]
    request = json.loads(body["messages"][1]["content"])
    domain = next(get_domain(d) for d in sorted(DOMAINS) if get_domain(d).description in system)
    world = request["world"]
    if "records" in world:  # a large world comes filtered to the records the call mentions
        world = {table: world["records"].get(table, {}) for table in world["table_sizes"]}
    before = json.loads(json.dumps(world))
    call = request["call"]
    result = ProceduralToolBackend(domain).call(world, call["name"], call["arguments"])
    if not result.ok:
        return json.dumps({"observation": None, "error": result.content.removeprefix("Error: ")})
    change: dict[str, Any] = {}
    for table, records in world.items():
        for key, record in records.items():
            old = before.get(table, {}).get(key)
            fields = record if old is None else {k: v for k, v in record.items() if old.get(k) != v}
            if fields:
                change.setdefault(table, {})[key] = fields
    return json.dumps({"observation": json.loads(result.content), "error": None, "state_change": change})


def scripted_writer(body: dict[str, Any]) -> str:
    prompt = body["messages"][1]["content"]
    goal = re.search(r"The customer's goal: (.+)", prompt).group(1)  # type: ignore[union-attr]
    return json.dumps({"instruction": f"Hello, I need help: {goal}.",
                       "persona_phrasing": f"Hi! Please help me, {goal}."})


def world_responder(overrides: dict[str, Callable[[int, dict[str, Any]], Reply | None]] | None = None
                    ) -> Responder:
    """Answers user, tool, judge and writer requests as a well-behaved model would;
    ``overrides[role](n, body)`` may answer instead (return None to fall through)."""
    overrides = overrides or {}

    def respond(number: int, body: dict[str, Any]) -> Reply:
        role = role_of(body)
        if role in overrides:
            reply = overrides[role](number, body)
            if reply is not None:
                return reply
        if role == "user":
            return completion(scripted_user(body))
        if role == "tool":
            return completion(scripted_tool(body))
        if role == "judge":
            return completion(json.dumps({"met": True, "reason": "the agent told the outcome"}))
        if role == "writer":
            return completion(scripted_writer(body))
        return 400, {"error": {"message": f"the scripted world has no policy; got role {role}"}}

    return respond
