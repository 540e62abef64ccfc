"""The per-round LLM call log and the figures computed from it.

Every logical call a role makes (one ``LLMClient.complete``; its transport retries are one
call) becomes one row with the columns of the warehouse's ``llm_calls`` table, minus
``round``, which the store fills. Calls finish in whatever order the threads do, so rows
are sorted by content (stage, role, request hash, error) before ``call_index`` is given:
the same seed and settings give the same rows in the same order.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from typing import Any

ROLES = ("user", "tool", "teacher", "judge", "writer", "policy")
CALL_FIELDS = ("stage", "call_index", "role", "model", "request_hash", "cached", "prompt_tokens",
               "completion_tokens", "latency_ms", "error")


class CallLog:
    """Collects call rows from many threads; ``rows()`` gives them in a deterministic order."""

    def __init__(self, stage: str = "") -> None:
        self.stage = stage
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(self, *, role: str, model: str, request_hash: str, cached: bool, prompt_tokens: int = 0,
               completion_tokens: int = 0, latency_ms: float = 0.0, error: str | None = None) -> None:
        row = {"stage": self.stage, "role": role, "model": model, "request_hash": request_hash, "cached": cached,
               "prompt_tokens": int(prompt_tokens), "completion_tokens": int(completion_tokens),
               "latency_ms": float(latency_ms), "error": error}
        with self._lock:
            self._rows.append(row)

    def rows(self) -> list[dict[str, Any]]:
        """The rows so far, in content order, numbered by ``call_index``."""
        with self._lock:
            rows = sorted(self._rows, key=lambda r: (r["stage"], r["role"], r["request_hash"], r["error"] or "",
                                                     r["cached"]))
        return [{**{k: r[k] for k in CALL_FIELDS if k != "call_index"}, "call_index": i} for i, r in enumerate(rows)]

    def __len__(self) -> int:
        return len(self._rows)


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def call_figures(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per role: calls, cache_hit_rate, prompt_tokens, completion_tokens, latency_p50_ms,
    latency_p95_ms (over calls that reached the endpoint and succeeded: a cache hit costs
    no endpoint time) and failures."""
    by_role: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_role.setdefault(row["role"], []).append(row)
    figures = {}
    for role in sorted(by_role):
        group = by_role[role]
        latencies = [float(r["latency_ms"]) for r in group if not r["cached"] and not r["error"]]
        figures[role] = {
            "calls": len(group),
            "cache_hit_rate": round(sum(1 for r in group if r["cached"]) / len(group), 6),
            "prompt_tokens": sum(int(r["prompt_tokens"] or 0) for r in group),
            "completion_tokens": sum(int(r["completion_tokens"] or 0) for r in group),
            "latency_p50_ms": round(_percentile(latencies, 50), 3),
            "latency_p95_ms": round(_percentile(latencies, 95), 3),
            "failures": sum(1 for r in group if r["error"]),
        }
    return figures


def flat_call_figures(rows: Iterable[Mapping[str, Any]], prefix: str = "llm_") -> dict[str, float]:
    """``call_figures`` as one flat dict (``llm_user_calls``, ``llm_tool_cache_hit_rate``, ...)
    for ``round_metrics`` and Dagster metadata."""
    return {f"{prefix}{role}_{name}": value for role, figures in call_figures(rows).items()
            for name, value in figures.items()}
