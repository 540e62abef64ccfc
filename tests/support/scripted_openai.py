"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 (a free port), for
tests that drive real HTTP clients (the openai SDK, litellm) against answers written in
Python.

``answer(request_json)`` returns either an assistant message dict (wrapped into a full
chat.completion response with usage) or ``(status, body)`` sent as it is (``body``: a
JSON-able object or bytes). The server counts requests and the largest number in flight at
once, and keeps every request body.

    with ScriptedOpenAI(lambda req: {"role": "assistant", "content": "hi"}) as server:
        client = OpenAI(base_url=server.url, api_key="x")
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from support.llm_server import ScriptedServer

Answer = Callable[[dict[str, Any]], "dict[str, Any] | tuple[int, Any]"]


def chat_completion(message: dict[str, Any], model: str = "scripted") -> dict[str, Any]:
    """A complete chat.completion body around one assistant message."""
    message = {"role": "assistant", "content": None, **message}
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def tool_call(call_id: str, name: str, arguments: dict[str, Any] | str) -> dict[str, Any]:
    """One OpenAI tool call (arguments given as a dict are JSON-encoded)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


class ScriptedOpenAI(ScriptedServer):
    """``ScriptedServer`` (support/llm_server.py) answering from ``answer(request)``: an
    assistant message dict becomes a full chat.completion; ``(status, body)`` is sent as is;
    a broken script shows up as a 500 the test can read."""

    def __init__(self, answer: Answer):
        def respond(number: int, body: dict[str, Any]) -> tuple[int, Any]:
            try:
                reply = answer(body)
            except Exception as exc:
                return 500, {"error": {"message": f"{type(exc).__name__}: {exc}"}}
            return reply if isinstance(reply, tuple) else (200, chat_completion(reply, str(body.get("model",
                                                                                                    "scripted"))))

        super().__init__(respond)
        self.port = self.server.server_address[1]

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.bodies

    @property
    def count(self) -> int:
        return self.hits

    def __enter__(self) -> "ScriptedOpenAI":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
