"""The LLM call cache in the warehouse: the ``CallCache`` the LLM world roles and the
OpenAI-compatible policy use in a round, over the ``llm_cache`` table.

Lookups read through to the warehouse; new entries are buffered and written in batches
(and by ``flush``, which the stage calls when its calls are done, also after a failure, so
the calls already paid for are kept). DuckDB allows one writing process and refuses two
connections of one process with different settings, so every warehouse access of this
object is serialised by one lock -- the threads of a rollout phase share it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from flywheel_assets.store.warehouse import Warehouse


class WarehouseCallCache:
    def __init__(self, warehouse: Warehouse, flush_every: int = 256):
        self.warehouse = warehouse
        self.flush_every = flush_every
        self._pending: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get_many(self, hashes: Sequence[str]) -> dict[str, dict[str, Any]]:
        with self._lock:
            found = {h: dict(self._pending[h]) for h in hashes if h in self._pending}
            rest = [h for h in hashes if h not in found]
            if rest:
                found.update(self.warehouse.llm_cache_get(rest))
        return found

    def put_many(self, entries: Sequence[Mapping[str, Any]]) -> int:
        with self._lock:
            added = 0
            for entry in entries:
                if entry["request_hash"] not in self._pending:
                    self._pending[entry["request_hash"]] = dict(entry)
                    added += 1
            if len(self._pending) >= self.flush_every:
                self._flush_locked()
        return added

    def flush(self) -> int:
        """Write the buffered entries; how many were new to the warehouse."""
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        if not self._pending:
            return 0
        written = self.warehouse.llm_cache_put(list(self._pending.values()))
        self._pending.clear()
        return written
