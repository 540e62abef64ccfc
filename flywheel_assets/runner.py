"""Materialise flywheel rounds in order into a persistent Dagster instance (what
``flywheel run`` does), so the UI then shows every run, materialisation and partition.

Rounds run in-process, one after another: round r reads round r-1's hard samples, so a
failed round stops the sequence with the failing step's message.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import DagsterEventType, DagsterInstance

from flywheel_assets.assets.common import ROUND_POOL
from flywheel_assets.definitions import data_round_job, defs, eval_tasks_job, round_job
from flywheel_assets.resources import EMBEDDED
from flywheel_assets.partitions import ROUNDS_PARTITIONS_NAME, round_key
from flywheel_assets.resources import dagster_home, warehouse_path
from flywheel_assets.store import Warehouse

INSTANCE_CONFIG = Path(__file__).resolve().parents[1] / "dagster.yaml"

Report = Callable[[str], None]


@dataclass
class RoundOutcome:
    round: str
    success: bool
    seconds: float
    run_id: str
    figures: dict[str, float] = field(default_factory=dict)
    error: str = ""


def use_home(home: Path) -> Path:
    """Point this process at ``home``: FLYWHEEL_HOME, and DAGSTER_HOME with the project's
    instance config (dagster.yaml). Returns DAGSTER_HOME."""
    home = home.resolve()
    instance_dir = dagster_home(home)
    instance_dir.mkdir(parents=True, exist_ok=True)
    if not INSTANCE_CONFIG.exists():
        raise FileNotFoundError(f"the instance config {INSTANCE_CONFIG} is missing: reinstall the project "
                                f"with `pip install -e .` from its repository")
    shutil.copyfile(INSTANCE_CONFIG, instance_dir / "dagster.yaml")
    os.environ["FLYWHEEL_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(instance_dir)
    return instance_dir


@contextmanager
def open_instance(home: Path) -> Iterator[DagsterInstance]:
    """The home's persistent instance, with the rounds pool registered at size 1."""
    use_home(home)
    with DagsterInstance.get() as instance:
        instance.event_log_storage.set_concurrency_slots(ROUND_POOL, 1)
        yield instance


def run_config(*, warehouse: str | None = None, policy: str | None = None, fail_share: float | None = None,
               log_level: str = "INFO", training: Mapping[str, Any] | None = None,
               **round_knobs: Any) -> dict[str, Any]:
    """Run config overriding only the knobs given (None = the resource's own setting)."""
    resources: dict[str, dict[str, Any]] = {}
    if training:
        resources["training"] = {"config": dict(training)}
    if warehouse is not None:
        resources["warehouse"] = {"config": {"path": str(warehouse)}}
    policy_config = {k: v for k, v in (("name", policy), ("fail_share", fail_share)) if v is not None}
    if policy_config:
        resources["policy"] = {"config": policy_config}
    knobs = {k: v for k, v in round_knobs.items() if v is not None}
    if knobs:
        resources["round_config"] = {"config": knobs}
    return {"resources": resources, "loggers": {"console": {"config": {"log_level": log_level}}}}


def failure_message(result: Any) -> str:
    """The first failed step and its own error: the asset's exception, not Dagster's wrapper
    around it (nor the low-level cause the asset already put into words)."""
    for event in result.all_events:
        if event.event_type == DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            while error is not None and error.cause is not None and (error.cls_name or "").startswith("Dagster"):
                error = error.cause
            return f"{event.step_key} failed: {error.message.strip() if error else 'no error recorded'}"
    return "the run failed (see the Dagster UI for its log)"


def _round_figures(store: Warehouse, key: str) -> dict[str, float]:
    frame = store.query("SELECT stage || '.' || metric AS name, value FROM round_metrics WHERE round = $round",
                        {"round": key})
    return dict(frame.iter_rows()) if frame.height else {}


def materialize_eval_tasks(instance: DagsterInstance, config: Mapping[str, Any], report: Report = print) -> bool:
    started = time.perf_counter()
    result = defs.resolve_job_def(eval_tasks_job.name).execute_in_process(
        instance=instance, run_config=dict(config), raise_on_error=False)
    report(f"eval_tasks: {'ok' if result.success else failure_message(result)} "
           f"in {time.perf_counter() - started:.1f}s")
    return result.success


def materialize_rounds(instance: DagsterInstance, keys: list[str], config: Mapping[str, Any],
                       store: Warehouse, report: Report = print, *, train: bool = True) -> list[RoundOutcome]:
    """Add each round's partition if needed and materialise the round, in order; stop at
    the first failure (the next round would start from it). ``train``: complete rounds
    (checkpoint and evaluation); otherwise the data stages only."""
    job = defs.resolve_job_def((round_job if train else data_round_job).name)
    outcomes = []
    for key in keys:
        if not instance.has_dynamic_partition(ROUNDS_PARTITIONS_NAME, key):
            instance.add_dynamic_partitions(ROUNDS_PARTITIONS_NAME, [key])
        report(f"round {key}: materialising")
        started = time.perf_counter()
        result = job.execute_in_process(partition_key=key, instance=instance, run_config=dict(config),
                                        raise_on_error=False)
        outcome = RoundOutcome(key, result.success, time.perf_counter() - started, result.run_id)
        if not result.success:
            outcome.error = failure_message(result)
            report(f"round {key}: FAILED after {outcome.seconds:.1f}s: {outcome.error}")
            outcomes.append(outcome)
            break
        outcome.figures = _round_figures(store, key)
        outcomes.append(outcome)
        report(f"round {key}: done in {outcome.seconds:.1f}s — " + summarize(outcome.figures))
    return outcomes


def summarize(figures: Mapping[str, float]) -> str:
    shown = [("task_instances.instances", "instances", "{:.0f}"),
             ("task_instances.carried_in", "carried in", "{:.0f}"),
             ("rollouts.episodes", "episodes", "{:.0f}"),
             ("rubric_scores.pass_rate", "policy pass rate", "{:.3f}"),
             ("rubric_scores.reward_mean", "reward mean", "{:.3f}"),
             ("hard_samples.kept", "hard samples kept", "{:.0f}"),
             ("policy_checkpoints.train_seconds", "training s", "{:.0f}"),
             ("evaluations.pass_1", "held-out pass^1", "{:.3f}"),
             ("evaluations.pass_k", "pass^k", "{:.3f}"),
             ("evaluations.reward_mean", "held-out reward", "{:.3f}")]
    return ", ".join(f"{label} {fmt.format(figures[key])}" for key, label, fmt in shown if key in figures)


def run_rounds(home: Path, rounds: int, *, first: int = 0, report: Report = print,
               **knobs: Any) -> list[RoundOutcome]:
    """``flywheel run``: the held-out set, then rounds ``first`` … ``rounds - 1`` in order."""
    if rounds <= first:
        raise ValueError(f"--rounds {rounds} leaves nothing to run from round {first}")
    with open_instance(home) as instance:
        store = Warehouse(warehouse_path())
        config = run_config(**knobs)
        report(f"home {home.resolve()}: instance {os.environ['DAGSTER_HOME']}, warehouse {store.path}")
        if not materialize_eval_tasks(instance, config, report):
            return []
        policy = config["resources"].get("policy", {}).get("config", {}).get("name") or os.environ.get(
            "FLYWHEEL_POLICY", EMBEDDED)
        return materialize_rounds(instance, [round_key(i) for i in range(first, rounds)], config, store, report,
                                  train=policy == EMBEDDED)
