"""The content-addressed LLM call cache.

A request is hashed from everything that decides its answer: model, messages, tools,
sampling parameters (temperature, top_p, max_tokens, seed, response format) and the sample
and attempt index. The same seed and settings therefore give the same keys, and a round
materialised again answers every call from the cache. ``CallCache`` is what the client
needs; ``InMemoryCallCache`` serves tests and single processes, and the warehouse-backed
adapter (``flywheel_assets.llm_cache.WarehouseCallCache``) persists entries across runs.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from flywheel_assets.world.tasks import canonical_json

ENTRY_FIELDS = ("request_hash", "role", "model", "response", "prompt_tokens", "completion_tokens", "latency_ms",
                "first_round")
"""One cache entry: the columns of the warehouse's ``llm_cache`` table; ``response`` is the
assistant message as a dict."""


def request_hash(request: Mapping[str, Any], *, sample: int = 0, attempt: int = 0) -> str:
    """The cache key of a chat-completions request body (without the API key or URL)."""
    return hashlib.sha256(canonical_json({"request": request, "sample": sample, "attempt": attempt}).encode()
                          ).hexdigest()


class CallCache(Protocol):
    def get_many(self, hashes: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored entries among ``hashes``, by hash; missing ones are left out."""
        ...

    def put_many(self, entries: Sequence[Mapping[str, Any]]) -> int:
        """Store entries (``ENTRY_FIELDS``); an existing hash keeps its first entry. The count written."""
        ...


class InMemoryCallCache:
    """A thread-safe dict of entries; counts lookups so tests can see what was asked."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.lookups = 0

    def get_many(self, hashes: Sequence[str]) -> dict[str, dict[str, Any]]:
        with self._lock:
            self.lookups += len(hashes)
            return {h: dict(self._entries[h]) for h in hashes if h in self._entries}

    def put_many(self, entries: Sequence[Mapping[str, Any]]) -> int:
        written = 0
        with self._lock:
            for entry in entries:
                missing = [f for f in ENTRY_FIELDS if f not in entry]
                if missing:
                    raise ValueError(f"a cache entry needs {', '.join(missing)}")
                if entry["request_hash"] not in self._entries:
                    self._entries[entry["request_hash"]] = {f: entry[f] for f in ENTRY_FIELDS}
                    written += 1
        return written

    def __len__(self) -> int:
        return len(self._entries)
