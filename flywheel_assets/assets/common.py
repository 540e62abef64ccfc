"""What every stage asset does the same way: write its rows and figures to the warehouse in
one transaction, and report the figures as materialisation metadata (numbers as Dagster
int/float metadata, so the UI plots them by partition)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue

from flywheel_assets.resources import WarehouseResource

ROUND_GROUP = "flywheel_round"
ROUND_POOL = "flywheel_rounds"
"""The pool of size 1 (run granularity, see dagster.yaml) that keeps whole-round runs in round
order. Only the asset that reads the previous round joins it, so a backfill of any other
single stage over past rounds still runs in parallel."""

Figures = Mapping[str, int | float]


def write_stage(context: AssetExecutionContext, warehouse: WarehouseResource, table: str, round: str,
                rows: Sequence[Mapping[str, Any]], figures: Figures, started: float,
                extra_metadata: Mapping[str, Any] | None = None) -> MaterializeResult:
    """Replace ``round`` of ``table`` with ``rows`` and ``figures`` (plus the stage duration)
    and return the materialisation with the same figures as metadata."""
    figures = {**figures, "duration_s": round_to(time.perf_counter() - started)}
    store = warehouse.warehouse()
    written = store.replace_round(table, round, rows, metrics=figures)
    context.log.info(f"{table} {round}: wrote {written} rows to {store.path} — "
                     + ", ".join(f"{k}={v}" for k, v in figures.items()))
    metadata: dict[str, Any] = {"rows": MetadataValue.int(written)}
    for name, value in figures.items():
        metadata[name] = MetadataValue.int(value) if isinstance(value, int) else MetadataValue.float(float(value))
    metadata["warehouse"] = MetadataValue.path(str(store.path))
    metadata.update(extra_metadata or {})
    return MaterializeResult(metadata=metadata)


def round_to(value: float, digits: int = 4) -> float:
    return float(round(value, digits))


def progress_logger(context: AssetExecutionContext, what: str, every_s: float = 5.0
                    ) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback that logs at most every ``every_s`` seconds and
    at the end, so a long step shows it is moving without flooding the log."""
    last = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= every_s:
            last[0] = now
            context.log.info(f"{what}: {done}/{total}")

    return progress


def summary_figures(summary: Mapping[str, Any], keys: Sequence[str], prefix: str = "") -> dict[str, int | float]:
    """The numeric figures of ``metrics.batch_summary`` to record, ``prefix``ed."""
    return {prefix + k: (round_to(summary[k]) if isinstance(summary[k], float) else int(summary[k])) for k in keys}


@contextmanager
def endpoint_failures_name(round_key: str) -> Iterator[None]:
    """An endpoint that failed for good fails the step with a message naming the round as
    well as the endpoint; nothing of the round has been written yet."""
    from flywheel_training.policies.openai_compat import EndpointError

    try:
        yield
    except EndpointError as exc:
        raise Failure(description=f"round {round_key}: {exc}; nothing of round {round_key} was written") from exc
