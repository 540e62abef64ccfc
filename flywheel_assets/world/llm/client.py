"""One client for every LLM role: an OpenAI-compatible endpoint per role, bounded retries
with backoff, the content-addressed call cache, the call log, and errors that name the
role, the endpoint, the model and the round -- with keys and ``Bearer`` tokens redacted.

Only the endpoint failing is an error: timeouts, connection errors, 5xx, 408/409/429 and
unreadable responses (not JSON, no choices) are retried ``max_retries`` times, then
``EndpointError``. Other 4xx (bad key, unknown model) fail at once: repeating cannot help.
A 400 saying the prompt exceeds the model's context raises ``ContextOverflow`` instead,
which the policy turns into the end of that one episode. What the model *says*, however
malformed, is returned for the role to judge; only its text is repaired (``clean_text``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from flywheel_assets.world.llm.accounting import ROLES, CallLog
from flywheel_assets.world.llm.cache import CallCache, request_hash
from flywheel_assets.world.llm.text import clean_json, clean_text, redact, register_secret

log = logging.getLogger(__name__)

PLACEHOLDER_KEY = "EMPTY"
"""Sent when the key's environment variable is unset: local servers (vLLM, ours) ignore it,
and the openai client refuses to start without some key."""


class EndpointError(RuntimeError):
    """An endpoint failed for good (after retries, or with a client error)."""


class ContextOverflow(Exception):
    """The endpoint refused the conversation as longer than the model's context."""


@dataclass(frozen=True)
class EndpointConfig:
    """How one role reaches its model. The key itself is never stored: only the name of
    the environment variable that holds it."""

    role: str
    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    top_p: float | None = None
    max_tokens: int = 512
    timeout: float = 60.0
    concurrency: int = 8
    max_retries: int = 3
    backoff_s: float = 1.0
    seed: int = 0
    use_cache: bool = True  # False bypasses the call cache: neither read nor written

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown LLM role {self.role!r}; choose one of {', '.join(ROLES)}")
        if not self.base_url or not self.model:
            raise ValueError(f"the {self.role} endpoint needs a base URL and a model")
        if self.concurrency < 1 or self.max_retries < 0:
            raise ValueError(f"the {self.role} endpoint: concurrency must be at least 1 and max_retries at least 0")

    def describe(self) -> str:
        return f"{self.role} endpoint {self.base_url.rstrip('/')} (model {self.model})"


@dataclass(frozen=True)
class Completion:
    message: dict[str, Any]  # an OpenAI assistant message, text repaired
    request_hash: str
    cached: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0

    @property
    def content(self) -> str:
        return self.message.get("content") or ""


def request_seed(seed: int, sample: int, messages: Sequence[dict[str, Any]], attempt: int = 0) -> int:
    """A sampling seed for one request: fixed for the same seed, sample index and
    conversation (reproducible reruns, stable cache keys), different across samples (the
    rollouts of one instance must differ for GRPO groups) and across a role's retries."""
    parts: list[Any] = [seed, sample, list(messages)] + ([attempt] if attempt else [])
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    return int.from_bytes(digest.digest()[:4], "big") & 0x7FFFFFFF


def chat_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as strict chat-completions messages: only the fields each role
    allows (hosted APIs reject unknown ones such as ``name`` on tool results), string
    content where the API wants it, and text that can be encoded."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        content = m.get("content")
        content = clean_text(content) if isinstance(content, str) else content
        if role == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": content}
            calls = [{"id": c.get("id") or f"call_{i}", "type": "function",
                      "function": {"name": clean_text(str((c.get("function") or {}).get("name", ""))),
                                   "arguments": clean_text(_arguments_text((c.get("function") or {}).get("arguments")))}}
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
    client's response message object, its text repaired."""
    data = message.model_dump() if hasattr(message, "model_dump") else dict(message)
    content = data.get("content")
    out: dict[str, Any] = {"role": "assistant", "content": clean_text(content) if isinstance(content, str) else content}
    calls = []
    for i, call in enumerate(data.get("tool_calls") or []):
        function = call.get("function") or call.get("custom") or {}
        arguments = function.get("arguments", function.get("input"))
        calls.append({"id": call.get("id") or f"call_{i}", "type": "function",
                      "function": {"name": clean_text(function.get("name") or ""),
                                   "arguments": clean_text(_arguments_text(arguments))}})
    if calls:
        out["tool_calls"] = calls
    return out


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


class _Garbage(Exception):
    """A response that parsed but is not a chat completion."""


def short(text: Any, limit: int = 300) -> str:
    """One redacted line of at most ``limit`` characters, for messages and logs."""
    line = redact(str(text)).replace("\n", " ")
    return line if len(line) <= limit else line[:limit] + "..."


class LLMClient:
    """Chat completions for one role. Thread-safe; at most ``config.concurrency`` requests
    of this client are in flight at once, however many threads call it."""

    def __init__(self, config: EndpointConfig, *, cache: CallCache | None = None, calls: CallLog | None = None,
                 round_key: str = "") -> None:
        from openai import OpenAI

        self.config = config
        self.cache = cache if config.use_cache else None
        self.calls = calls
        self.round_key = round_key
        key = os.environ.get(config.api_key_env)
        register_secret(key)
        # The key lives only inside the openai client; repr and errors never show it.
        self._client = OpenAI(base_url=config.base_url.rstrip("/"), api_key=key or PLACEHOLDER_KEY,
                              timeout=config.timeout, max_retries=0)  # our own retries: bounded, logged, one error
        self._slots = threading.BoundedSemaphore(config.concurrency)
        self._in_flight: dict[str, Future[Completion]] = {}
        self._flight_lock = threading.Lock()

    def __repr__(self) -> str:
        c = self.config
        return f"LLMClient(role={c.role!r}, base_url={c.base_url!r}, model={c.model!r}, api_key_env={c.api_key_env!r})"

    __str__ = __repr__

    @property
    def where(self) -> str:
        """The role, endpoint, model and round, for messages."""
        return self.config.describe() + (f" in round {self.round_key}" if self.round_key else "")

    def request(self, messages: Sequence[dict[str, Any]], *, tools: Sequence[dict[str, Any]] | None = None,
                response_format: Mapping[str, Any] | None = None, seed: int | None = None, sample: int = 0,
                attempt: int = 0) -> dict[str, Any]:
        """The request body (what is hashed and sent)."""
        c = self.config
        sent = chat_messages(messages)
        body: dict[str, Any] = {"model": c.model, "messages": sent, "temperature": c.temperature,
                                "max_tokens": c.max_tokens,
                                "seed": seed if seed is not None else request_seed(c.seed, sample, sent, attempt)}
        if tools:
            body["tools"] = list(tools)
            body["tool_choice"] = "auto"
        if c.top_p is not None:
            body["top_p"] = c.top_p
        if response_format is not None:
            body["response_format"] = dict(response_format)
        return body

    def complete(self, messages: Sequence[dict[str, Any]], *, tools: Sequence[dict[str, Any]] | None = None,
                 response_format: Mapping[str, Any] | None = None, seed: int | None = None, sample: int = 0,
                 attempt: int = 0) -> Completion:
        """One chat completion, from the cache when it holds this exact request. ``attempt``
        is a role's own retry of an answer it could not use: a new request, a new key."""
        body = self.request(messages, tools=tools, response_format=response_format, seed=seed, sample=sample,
                            attempt=attempt)
        key = request_hash(body, sample=sample, attempt=attempt)
        if self.cache is None:
            return self._fetch(body, key)
        hit = self._cached(key)
        if hit is not None:
            return hit
        # Single flight: episodes that make the identical request at the same moment share
        # one call, as they would share its cache entry had they come one after another --
        # so the answers do not depend on timing.
        with self._flight_lock:
            leader = self._in_flight.get(key)
            if leader is None:
                mine: Future[Completion] = Future()
                self._in_flight[key] = mine
        if leader is not None:
            shared = leader.result()  # the leader's EndpointError is raised here too
            done = dataclasses.replace(shared, cached=True)
            self._record(done, cached=True)
            return done
        try:
            hit = self._cached(key)  # filled between our lookup and taking the lead
            done = hit if hit is not None else self._fetch(body, key)
            mine.set_result(done)
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        finally:
            with self._flight_lock:
                del self._in_flight[key]
        return done

    def _cached(self, key: str) -> Completion | None:
        entry = self.cache.get_many([key]).get(key) if self.cache is not None else None
        if entry is None:
            return None
        response = entry["response"]
        message = json.loads(response) if isinstance(response, str) else response
        done = Completion(clean_json(message), key, True, int(entry.get("prompt_tokens") or 0),
                          int(entry.get("completion_tokens") or 0), float(entry.get("latency_ms") or 0.0))
        self._record(done, cached=True)
        return done

    def _fetch(self, body: dict[str, Any], key: str) -> Completion:
        try:
            with self._slots:
                done = self._call_with_retries(body, key)
        except (EndpointError, ContextOverflow) as exc:
            self._record(Completion({}, key, False), cached=False, error=short(exc, 500))
            raise
        if self.cache is not None:
            self.cache.put_many([{"request_hash": key, "role": self.config.role, "model": self.config.model,
                                  "response": done.message, "prompt_tokens": done.prompt_tokens,
                                  "completion_tokens": done.completion_tokens, "latency_ms": done.latency_ms,
                                  "first_round": self.round_key}])
        self._record(done, cached=False)
        return done

    def _record(self, done: Completion, *, cached: bool, error: str | None = None) -> None:
        if self.calls is not None:
            # A hit's latency is the lookup's, not the endpoint's: recorded as 0.
            self.calls.record(role=self.config.role, model=self.config.model, request_hash=done.request_hash,
                              cached=cached, prompt_tokens=done.prompt_tokens,
                              completion_tokens=done.completion_tokens,
                              latency_ms=0.0 if cached else done.latency_ms, error=error)

    def _call_with_retries(self, body: dict[str, Any], key: str) -> Completion:
        import openai

        attempts = self.config.max_retries + 1
        for attempt in range(1, attempts + 1):
            started = time.perf_counter()  # latency is recorded, never used for a decision
            overflow = refusal = ""
            try:
                response = self._client.chat.completions.create(**body)
                choices = getattr(response, "choices", None)
                if not choices or getattr(choices[0], "message", None) is None:
                    raise _Garbage(f"a response without choices: {str(response)[:200]!r}")
                message = assistant_message(choices[0].message)
                usage = getattr(response, "usage", None)
                return Completion(message, key, False, int(getattr(usage, "prompt_tokens", 0) or 0),
                                  int(getattr(usage, "completion_tokens", 0) or 0),
                                  round((time.perf_counter() - started) * 1000, 3))
            except openai.APIStatusError as exc:
                problem: Exception = exc
                if is_context_overflow(exc):
                    overflow = short(exc)
                elif exc.status_code < 500 and exc.status_code not in (408, 409, 429):
                    refusal = f"{self.where} refused the request with HTTP {exc.status_code}: {short(exc)}"
            except (openai.APITimeoutError, openai.APIConnectionError, openai.APIResponseValidationError,
                    _Garbage, ValueError, TypeError, AttributeError) as exc:
                # ValueError/TypeError/AttributeError: a body that is not the JSON it should be.
                problem = exc
            # Raised outside the except blocks, so no exception chains to the original,
            # whose text may carry a key the server echoed.
            if overflow:
                log.info("%s: conversation over the context window", self.where)
                raise ContextOverflow(overflow)
            if refusal:
                raise EndpointError(refusal)
            if attempt == attempts:
                raise EndpointError(f"{self.where} failed after {attempts} attempts; last error: "
                                    f"{type(problem).__name__}: {short(problem)}")
            delay = self.config.backoff_s * 2 ** (attempt - 1) * (1 + 0.25 * random.random())  # de-synchronise threads
            log.warning("%s: %s (attempt %d of %d); retrying in %.2fs", self.where, type(problem).__name__,
                        attempt, attempts, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object a model answered, also inside a ```json fence; None when there is none."""
    stripped = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", stripped, re.S)
    if fenced:
        stripped = fenced.group(1)
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
