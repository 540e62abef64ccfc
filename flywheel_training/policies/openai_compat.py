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

The transport -- retries, errors naming role/endpoint/model/round, key redaction, the call
cache and the call log -- is the LLM layer's (``flywheel_assets.world.llm.client``), shared
with the LLM world roles.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flywheel_assets.world.llm.accounting import CallLog
from flywheel_assets.world.llm.cache import CallCache
from flywheel_assets.world.llm.client import (  # noqa: F401  (re-exported: callers import them from here)
    PLACEHOLDER_KEY,
    ContextOverflow,
    EndpointConfig,
    EndpointError,
    LLMClient,
    assistant_message,
    chat_messages,
    is_context_overflow,
    request_seed,
)
from flywheel_assets.world.rollout import ContextExhausted, PolicyRequest

__all__ = ["OpenAICompatiblePolicy", "EndpointError", "PLACEHOLDER_KEY", "assistant_message", "chat_messages",
           "is_context_overflow", "request_seed"]


class OpenAICompatiblePolicy:
    """``role`` is ``policy`` for the round's policy and ``teacher`` when it plays the
    teacher (rubric alignment, hard-sample solvers); it names the role in errors and in
    the call log. ``cache`` and ``calls`` share the LLM layer's call cache and log."""

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
        role: str = "policy",
        cache: CallCache | None = None,
        calls: CallLog | None = None,
        round_key: str = "",
        use_cache: bool = True,
    ):
        self.config = EndpointConfig(role=role, base_url=base_url.rstrip("/"), model=model, api_key_env=api_key_env,
                                     temperature=temperature, top_p=top_p, max_tokens=max_tokens, timeout=timeout,
                                     concurrency=concurrency, max_retries=max_retries, backoff_s=backoff_s,
                                     seed=seed, use_cache=use_cache)
        self.base_url = self.config.base_url
        self.model = model
        self.api_key_env = api_key_env
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.concurrency = concurrency
        self.seed = seed
        self.name = name or f"openai:{model}"
        self.client = LLMClient(self.config, cache=cache, calls=calls, round_key=round_key)

    @classmethod
    def from_config(cls, config: EndpointConfig, *, name: str | None = None, cache: CallCache | None = None,
                    calls: CallLog | None = None, round_key: str = "") -> "OpenAICompatiblePolicy":
        c = config
        return cls(c.base_url, c.model, api_key_env=c.api_key_env, temperature=c.temperature, top_p=c.top_p,
                   max_tokens=c.max_tokens, timeout=c.timeout, max_retries=c.max_retries, backoff_s=c.backoff_s,
                   concurrency=c.concurrency, seed=c.seed, name=name, role=c.role, cache=cache, calls=calls,
                   round_key=round_key, use_cache=c.use_cache)

    def bind(self, *, cache: CallCache | None, calls: CallLog | None, round_key: str) -> "OpenAICompatiblePolicy":
        """Point this policy's calls at a round's call cache and call log (a policy built
        once, from settings, plays in many rounds and stages)."""
        self.client.cache = cache if self.config.use_cache else None
        self.client.calls = calls
        self.client.round_key = round_key
        return self

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
            futures = [pool.submit(self.complete, r.messages, r.tools, request_seed(self.seed, r.sample, r.messages),
                                   r.sample)
                       for r in requests]
            return [f.result() for f in futures]
        finally:
            # After the first failure the round is lost anyway: do not start the queued requests.
            pool.shutdown(wait=True, cancel_futures=True)

    def complete(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None,
                 seed: int | None = None, sample: int = 0) -> dict[str, Any] | ContextExhausted:
        """One chat completion with retries: the assistant message, ``ContextExhausted`` when
        the conversation no longer fits the model, or EndpointError."""
        try:
            return self.client.complete(messages, tools=tools, seed=seed, sample=sample).message
        except ContextOverflow as exc:
            return ContextExhausted(str(exc))
