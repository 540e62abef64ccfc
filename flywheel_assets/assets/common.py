"""What every stage asset does the same way: write its rows and figures to the warehouse in
one transaction, and report the figures as materialisation metadata (numbers as Dagster
int/float metadata, so the UI plots them by partition)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from dagster import AssetExecutionContext, AssetKey, DagsterInstance, Failure, MaterializeResult, MetadataValue

from flywheel_assets.resources import WarehouseResource
from flywheel_assets.store import Warehouse
from flywheel_assets.store.invalidation import Partition, describe
from flywheel_assets.store.schema import ASSET_TABLES, ROUND_STAGES

ROUND_GROUP = "flywheel_round"
ROUND_POOL = "flywheel_rounds"
"""The pool of size 1 (run granularity, see dagster.yaml) that keeps whole-round runs in round
order. Only the asset that reads the previous round joins it, so a backfill of any other
single stage over past rounds still runs in parallel."""

CASCADE_TAG = "flywheel/cascade"
"""Run tag: "true" lets the run's writes clear what later rounds built from rows it changes
(``flywheel run --cascade``; from the UI, add the tag when launching)."""
REBUILDING_TAG = "flywheel/rebuilding"
"""Run tag: the later rounds (comma-separated) the same ``flywheel run`` rebuilds next, which
its writes may therefore clear."""

Figures = Mapping[str, int | float]


def write_stage(context: AssetExecutionContext, warehouse: WarehouseResource, table: str, round: str,
                rows: Sequence[Mapping[str, Any]], figures: Figures, started: float,
                extra_metadata: Mapping[str, Any] | None = None,
                extra: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> MaterializeResult:
    """Replace ``round`` of ``table`` with ``rows`` and ``figures`` (plus the stage duration)
    and return the materialisation with the same figures as metadata.

    ``duration_s`` is the stage's own work; a wait for another process's warehouse lock is
    logged when it starts (naming the process) and recorded apart, as ``lock_wait_s``. The
    partitions derived from this one (the round's later stages) are cleared in the same
    transaction; those this run will not rewrite are marked failed in Dagster too."""
    figures = {**figures, "duration_s": round_to(time.perf_counter() - started)}
    store = warehouse.warehouse()
    store.on_lock_wait = context.log.warning
    tags = context.run.tags
    rebuilding = [r for r in tags.get(REBUILDING_TAG, "").split(",") if r]
    written = store.replace_round(table, round, rows, metrics=figures, cascade=tags.get(CASCADE_TAG) == "true",
                                  rebuilding=rebuilding, extra=extra)
    if store.lock_wait_s:
        context.log.info(f"{table} {round}: waited {store.lock_wait_s:.1f}s for the warehouse lock")
    context.log.info(f"{table} {round}: wrote {written} rows to {store.path} — "
                     + ", ".join(f"{k}={v}" for k, v in figures.items()))
    if store.last_invalidated:
        context.log.info(f"{table} {round}: cleared the partitions derived from the rows replaced: "
                         f"{describe(store.last_invalidated)}")
        in_this_run = {k.to_user_string() for k in context.selected_asset_keys}
        left = [p for p in store.last_invalidated if p[1] not in rebuilding
                and not (p[1] == round and ASSET_TABLES[p[0]].asset_name in in_this_run)]
        mark_unmaterialised(context.instance, left, f"{table} of round {round} was rewritten with other rows")
    metadata: dict[str, Any] = {"rows": MetadataValue.int(written),
                                "lock_wait_s": MetadataValue.float(round_to(store.lock_wait_s))}
    for name, value in figures.items():
        metadata[name] = MetadataValue.int(value) if isinstance(value, int) else MetadataValue.float(float(value))
    metadata["warehouse"] = MetadataValue.path(str(store.path))
    metadata.update(extra_metadata or {})
    return MaterializeResult(metadata=metadata)


def round_to(value: float, digits: int = 6) -> float:
    # six digits, as the bootstrap intervals have: rounded to four, a rate of 151/432 = 0.34954
    # became 0.3495, which a round's log line then printed as 0.349 (0.3495 is just below half in
    # binary) where the held-out table prints 0.350
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


def intact_stages(store: Warehouse | None, round_key: str, failed_stage: str) -> str:
    """What of ``round_key`` a failure of ``failed_stage`` leaves, in words: the step itself
    wrote nothing (its write is one transaction), and the stages written before it stand."""
    if store is None:
        return f"{failed_stage} of round {round_key} wrote nothing"
    try:
        written = {t for t, r in store.written_partitions() if r == round_key}
    except Exception:  # the failure message must not fail: say what is certain
        return f"{failed_stage} of round {round_key} wrote nothing"
    intact = [s for s in ROUND_STAGES if s in written]
    if not intact:
        return f"nothing of round {round_key} is written"
    return (f"{failed_stage} wrote nothing; round {round_key} holds {', '.join(intact)}, consistent with "
            f"each other (writing a stage clears the stages derived from it)")


@contextmanager
def endpoint_failures_name(round_key: str, store: Warehouse | None = None,
                           stage: str = "this step") -> Iterator[None]:
    """An endpoint that failed for good fails the step with a message naming the round as
    well as the endpoint, and which stages of the round are intact."""
    from flywheel_training.policies.openai_compat import EndpointError

    try:
        yield
    except EndpointError as exc:
        raise Failure(description=f"round {round_key}: {exc}; {intact_stages(store, round_key, stage)}") from exc


def mark_missing(instance: DagsterInstance, store: Warehouse, rounds: Sequence[str], reason: str) -> None:
    """Mark as needing materialisation the partitions of ``rounds`` that Dagster records as
    materialised but the warehouse no longer holds (cleared for a rerun that stopped early)."""
    written = set(store.written_partitions())
    missing = [(table, round) for table in ROUND_STAGES for round in rounds
               if (table, round) not in written
               and round in instance.get_materialized_partitions(AssetKey(ASSET_TABLES[table].asset_name))]
    mark_unmaterialised(instance, missing, reason)


def mark_unmaterialised(instance: DagsterInstance, partitions: Sequence[Partition], reason: str) -> None:
    """Show cleared partitions as needing materialisation in Dagster: one failed run per
    round records a planned materialisation of each cleared asset partition (how the UI learns
    that a partition failed), with ``reason`` as the failure message. Dagster cannot wipe single
    partitions from a SQLite event log, so this is the honest record it offers."""
    from dagster._core.events import AssetMaterializationPlannedData, DagsterEvent

    from flywheel_assets.definitions import defs  # (definitions imports the assets, which import this)
    from flywheel_assets.run_records import workspace_job_origin
    from flywheel_assets.sensors import ROUND_JOB_NAME

    by_round: dict[str, list[str]] = {}
    for table, round in partitions:
        by_round.setdefault(round, []).append(ASSET_TABLES[table].asset_name)
    for round, assets in by_round.items():
        run = instance.create_run_for_job(
            defs.resolve_job_def(ROUND_JOB_NAME), tags={"dagster/partition": round, "flywheel/cleared": reason},
            asset_selection=frozenset(AssetKey(a) for a in assets),
            remote_job_origin=workspace_job_origin(ROUND_JOB_NAME))
        for asset in assets:
            instance.report_dagster_event(DagsterEvent.build_asset_materialization_planned_event(
                ROUND_JOB_NAME, None, AssetMaterializationPlannedData(AssetKey(asset), partition=round)),
                run_id=run.run_id)
        instance.report_run_failed(run, f"cleared: {reason}; {', '.join(assets)} of round {round} were derived "
                                        f"from the rows replaced and must be materialised again")
