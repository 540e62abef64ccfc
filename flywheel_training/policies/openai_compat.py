"""The policy behind any OpenAI-compatible chat-completions endpoint (``vllm serve``, hosted
APIs, ``python -m flywheel_training.serve``).

Each turn of a rollout batch is sent as concurrent requests with the domain's tools in the
request; the reply becomes an OpenAI assistant message with JSON-string arguments. Whatever
the model says, however malformed, is returned for the environment to judge. Only the
endpoint failing is an error: timeouts, connection errors, 5xx, 429 and unreadable responses
are retried with exponential backoff a bounded number of times, then a RuntimeError names
the endpoint and model. Client errors (4xx: bad key, unknown model) are not retried, since
repeating them cannot help. A 400 saying the conversation exceeds the model's context is not
an endpoint failure: that episode ends with ``ContextExhausted`` and the others go on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flywheel_assets.world.rollout import ContextExhausted, PolicyRequest

log = logging.getLogger(__name__)

PLACEHOLDER_KEY = "EMPTY"
"""Sent when the key's environment variable is unset: local servers (vLLM, ours) ignore it,
and the openai client refuses to start without some key."""


def request_seed(seed: int, sample: int, messages: Sequence[dict[str, Any]]) -> int:
    """A sampling seed for one request: fixed for the same policy seed, rollout index and
    conversation (reproducible reruns), different across rollout indices (the samples of
    one instance must differ for GRPO groups). Built from what the model sees, never from
    the privileged instance."""
    digest = hashlib.sha256(json.dumps([seed, sample, list(messages)], sort_keys=True, default=str).encode())
    return int.from_bytes(digest.digest()[:4], "big") & 0x7FFFFFFF


def chat_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as strict chat-completions messages: only the fields each role
    allows (hosted APIs reject unknown ones such as ``name`` on tool results), and string
    content where the API wants it."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        content = m.get("content")
        if role == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": content}
            calls = [{"id": c.get("id") or f"call_{i}", "type": "function",
                      "function": {"name": (c.get("function") or {}).get("name", ""),
                                   "arguments": _arguments_text((c.get("function") or {}).get("arguments"))}}
                     for i, c in enumerate(m.get("tool_calls") or []) if isinstance(c, dict)]
            if calls:
                msg["tool_calls"] = calls
            elif content is None:
                msg["content"] = ""  # an assistant turn needs content or tool calls
            out.append(msg)
        elif role == "tool":
            out.append({"role": "tool", "tool_call_id": m.get("tool_call_id", ""), "content": content or ""})
        else:
            out.append({"role": role, "content": content or ""})
    return out


def _arguments_text(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments if arguments is not None else {}, ensure_ascii=False, default=str)


def assistant_message(message: Any) -> dict[str, Any]:
    """An OpenAI assistant dict (content, tool_calls with JSON-string arguments) from the
    client's response message object."""
    data = message.model_dump() if hasattr(message, "model_dump") else dict(message)
    out: dict[str, Any] = {"role": "assistant", "content": data.get("content")}
    calls = []
    for i, call in enumerate(data.get("tool_calls") or []):
        function = call.get("function") or call.get("custom") or {}
        arguments = function.get("arguments", function.get("input"))
        calls.append({"id": call.get("id") or f"call_{i}", "type": "function",
                      "function": {"name": function.get("name") or "", "arguments": _arguments_text(arguments)}})
    if calls:
        out["tool_calls"] = calls
    return out


class EndpointError(RuntimeError):
    """The endpoint failed for good (after retries, or with a client error)."""


# How servers word a prompt over the context window: OpenAI's error code, vLLM's and
# llama.cpp's messages, and this project's own server.
_CONTEXT_OVERFLOW = re.compile(r"context_length_exceeded|maximum context length|maximum model length|"
                               r"exceeds the context|context window|prompt is too long|too many tokens", re.I)


def is_context_overflow(exc: Exception) -> bool:
    """Whether an HTTP 400 says the conversation is longer than the model's context."""
    body = getattr(exc, "body", None)
    code = body.get("code") if isinstance(body, dict) else None
    return getattr(exc, "status_code", None) == 400 and bool(
        code == "context_length_exceeded" or _CONTEXT_OVERFLOW.search(str(exc)))


class OpenAICompatiblePolicy:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.7,
        top_p: float | None = None,
        max_tokens: int = 512,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        concurrency: int = 8,
        seed: int = 0,
        name: str | None = None,
    ):
        from openai import OpenAI

        if concurrency < 1 or max_retries < 0:
            raise ValueError("concurrency must be at least 1 and max_retries at least 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.concurrency = concurrency
        self.seed = seed
        self.name = name or f"openai:{model}"
        # The key is read once and lives only inside the client; repr and errors never show it.
        self._client = OpenAI(base_url=self.base_url, api_key=os.environ.get(api_key_env) or PLACEHOLDER_KEY,
                              timeout=timeout, max_retries=0)  # our own retries: bounded, logged, one final error

    def __repr__(self) -> str:
        return (f"OpenAICompatiblePolicy(base_url={self.base_url!r}, model={self.model!r}, "
                f"api_key_env={self.api_key_env!r}, temperature={self.temperature}, max_tokens={self.max_tokens})")

    __str__ = __repr__

    @property
    def endpoint(self) -> str:
        return f"{self.base_url} (model {self.model})"

    def generate(self, requests: Sequence[PolicyRequest]) -> list[dict[str, Any] | ContextExhausted]:
        if not requests:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests)), thread_name_prefix="openai-policy")
        try:
            futures = [pool.submit(self.complete, r.messages, r.tools, request_seed(self.seed, r.sample, r.messages))
                       for r in requests]
            return [f.result() for f in futures]
        finally:
            # After the first failure the round is lost anyway: do not start the queued requests.
            pool.shutdown(wait=True, cancel_futures=True)

    def complete(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None,
                 seed: int | None = None) -> dict[str, Any] | ContextExhausted:
        """One chat completion with retries: the assistant message, ``ContextExhausted`` when
        the conversation no longer fits the model, or EndpointError."""
        import openai

        params: dict[str, Any] = {"model": self.model, "messages": chat_messages(messages),
                                  "temperature": self.temperature, "max_tokens": self.max_tokens}
        if tools:
            params["tools"] = list(tools)
            params["tool_choice"] = "auto"
        if self.top_p is not None:
            params["top_p"] = self.top_p
        if seed is not None:
            params["seed"] = seed
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                response = self._client.chat.completions.create(**params)
                choices = getattr(response, "choices", None)
                if not choices or getattr(choices[0], "message", None) is None:
                    raise _Garbage(f"a response without choices: {str(response)[:200]!r}")
                return assistant_message(choices[0].message)
            except openai.APIStatusError as exc:
                if is_context_overflow(exc):
                    log.info("endpoint %s: conversation over the context window; the episode ends", self.endpoint)
                    return ContextExhausted(_short(exc))
                if exc.status_code < 500 and exc.status_code not in (408, 409, 429):
                    raise EndpointError(f"endpoint {self.endpoint} refused the request with HTTP {exc.status_code}: "
                                        f"{_short(exc)}") from exc
                problem: Exception = exc
            except (openai.APITimeoutError, openai.APIConnectionError, openai.APIResponseValidationError,
                    _Garbage, ValueError, TypeError, AttributeError) as exc:
                # ValueError/TypeError/AttributeError: a body that is not the JSON it should be.
                problem = exc
            if attempt == attempts:
                raise EndpointError(f"endpoint {self.endpoint} failed after {attempts} attempts; last error: "
                                    f"{type(problem).__name__}: {_short(problem)}") from problem
            delay = self.backoff_s * 2 ** (attempt - 1) * (1 + 0.25 * random.random())  # jitter de-synchronises threads
            log.warning("endpoint %s: %s (attempt %d of %d); retrying in %.2fs", self.endpoint,
                        type(problem).__name__, attempt, attempts, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")


class _Garbage(Exception):
    """A response that parsed but is not a chat completion."""


def _short(exc: Exception, limit: int = 300) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
