"""Materialise flywheel rounds in order into a persistent Dagster instance (what
``flywheel run`` does), so the UI then shows every run, materialisation and partition.

Rounds run in-process, one after another: round r reads round r-1's hard samples, so a
failed round stops the sequence with the failing step's message.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import DagsterEventType, DagsterInstance, Definitions
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import create_execution_plan, execute_run
from dagster._core.execution.job_execution_result import JobExecutionResult
from dagster._core.storage.tags import PARTITION_NAME_TAG

from flywheel_assets.assets.common import CASCADE_TAG, REBUILDING_TAG, ROUND_POOL, intact_stages, mark_missing
from flywheel_assets.definitions import build_definitions, data_round_job, eval_tasks_job, round_job
from flywheel_assets.partitions import ROUNDS_PARTITIONS_NAME, round_key
from flywheel_assets.run_records import fail_orphaned_runs, process_tags, workspace_job_origin
from flywheel_assets.settings import GROUPS, dagster_home, warehouse_path
from flywheel_assets.store import Warehouse, WarehouseError
from flywheel_assets.store.schema import ASSET_TABLES
from flywheel_assets.world.metrics import FAILURE_TYPES

DEFINITIONS_MODULE = "flywheel_assets.definitions"
ASSET_TABLE_OF = {table.asset_name: name for name, table in ASSET_TABLES.items()}

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


def fail_orphaned_runs_of(home: Path, report: Report = print) -> list[str]:
    """Mark failed the runs a killed ``flywheel run`` left "in progress" in ``home``'s instance
    (``flywheel ui`` calls it at start, so rounds launched from the UI are not queued behind them)."""
    with open_instance(home) as instance:
        return fail_orphaned_runs(instance, report)


_LEGACY_KNOBS = {"warehouse": ("warehouse", "path"), "policy": ("policy", "name"),
                 "fail_share": ("policy", "fail_share")}


def resource_config(definitions: Definitions, key: str) -> dict[str, Any]:
    """The whole config of resource ``key`` as the definitions hold it now: values read from
    ``FLYWHEEL_*`` variables stay (EnvVar fields as ``{"env": NAME}``, resolved by the run).
    Run config replaces a resource's config as a whole, so an override must carry the rest."""
    resource = definitions.resources[key]
    # Dagster's own conversion of a ConfigurableResource into run config (no public name)
    return dict(resource._convert_to_config_dictionary())


def run_config(*, overrides: Mapping[str, Mapping[str, Any]] | None = None, log_level: str = "INFO",
               training: Mapping[str, Any] | None = None, **knobs: Any) -> dict[str, Any]:
    """Run config with every resource's whole config, and ``overrides`` ({resource key: {field:
    value}}) over it: a flag overrides only the field it names, never the rest of the resource
    (which keeps its FLYWHEEL_* settings). ``training`` and the keyword knobs (warehouse,
    policy, fail_share, round_config fields; None = not given) are shorthands for overrides."""
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (overrides or {}).items()}
    if training:
        merged.setdefault("training", {}).update(training)
    for name, value in knobs.items():
        if value is None:
            continue
        key, field_name = _LEGACY_KNOBS.get(name, ("round_config", name))
        merged.setdefault(key, {})[field_name] = str(value) if name == "warehouse" else value
    definitions = build_definitions()
    unknown = sorted(set(merged) - set(definitions.resources))
    if unknown:
        raise ValueError(f"unknown resources {unknown} in overrides; the resources are {sorted(definitions.resources)}")
    resources = {key: {"config": {**resource_config(definitions, key), **merged.get(key, {})}}
                 for key in definitions.resources}
    return {"resources": resources, "loggers": {"console": {"config": {"log_level": log_level}}}}


def execute(instance: DagsterInstance, job_name: str, config: Mapping[str, Any],
            partition_key: str | None = None, tags: Mapping[str, str] | None = None) -> JobExecutionResult:
    """Run ``job_name`` in this process as a run of the workspace's code location (the origin
    a UI launch gives it), tagged with this process so a later run can tell if it died."""
    recon_job = ReconstructableRepository.for_module(DEFINITIONS_MODULE, "defs").get_reconstructable_job(job_name)
    job_def = recon_job.get_definition()
    tags = {**job_def.run_tags, **(tags or {}), **process_tags()}
    if partition_key is not None:
        tags[PARTITION_NAME_TAG] = partition_key
    origin = workspace_job_origin(job_name)
    run = instance.create_run_for_job(
        job_def=job_def, run_config=dict(config), tags=tags, remote_job_origin=origin,
        job_code_origin=recon_job.get_python_origin(),
        execution_plan=create_execution_plan(recon_job, run_config=dict(config),
                                             instance_ref=instance.get_ref() if instance.is_persistent else None,
                                             tags=tags))
    return execute_run(recon_job, run, instance, raise_on_error=False)


def failure_message(result: Any) -> str:
    """The first failed step and its own error: the asset's exception, not Dagster's wrapper
    around it (nor the low-level cause the asset already put into words)."""
    for event in result.all_events:
        if event.event_type == DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            while error is not None and error.cause is not None and (error.cls_name or "").startswith("Dagster"):
                error = error.cause
            message = error.message.strip() if error else "no error recorded"
            kind, _, text = message.partition(": ")
            if error is not None and error.cls_name and kind.endswith("." + error.cls_name):  # no module path
                # a Failure carries the asset's own words; other errors keep their class name
                message = text if error.cls_name == "Failure" else f"{error.cls_name}: {text}"
            return f"{event.step_key} failed: {message}"
    return "the run failed (see the Dagster UI for its log)"


def failed_step(result: Any) -> str | None:
    return next((e.step_key for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE), None)


def _round_figures(store: Warehouse, key: str) -> dict[str, float]:
    frame = store.query("SELECT stage || '.' || metric AS name, value FROM round_metrics WHERE round = $round",
                        {"round": key})
    return dict(frame.iter_rows()) if frame.height else {}


def materialize_eval_tasks(instance: DagsterInstance, config: Mapping[str, Any], report: Report = print, *,
                           rebuilding: Sequence[str] = (), cascade: bool = False) -> bool:
    """The held-out set. A changed set clears every round's evaluation (measured on the old
    one): allowed for the rounds being ``rebuilding`` now, refused for others unless ``cascade``."""
    started = time.perf_counter()
    result = execute(instance, eval_tasks_job.name, config, tags=rerun_tags(rebuilding, cascade))
    report(f"eval_tasks: {'ok' if result.success else failure_message(result)} "
           f"in {time.perf_counter() - started:.1f}s")
    return result.success


def rerun_tags(rebuilding: Sequence[str], cascade: bool) -> dict[str, str]:
    """Run tags that let a run's writes clear partitions of ``rebuilding`` rounds (or any, with
    ``cascade``) derived from rows it changes."""
    return {REBUILDING_TAG: ",".join(rebuilding), **({CASCADE_TAG: "true"} if cascade else {})}


def materialize_rounds(instance: DagsterInstance, keys: list[str], config: Mapping[str, Any],
                       store: Warehouse, report: Report = print, *, train: bool = True,
                       cascade: bool = False) -> list[RoundOutcome]:
    """Add each round's partition if needed and materialise the round, in order; stop at
    the first failure (the next round would start from it). ``train``: complete rounds
    (checkpoint and evaluation); otherwise the data stages only.

    A rerun that changes a round's rows clears what was derived from them; when later rounds
    outside ``keys`` were built from them, the write is refused, naming those rounds, unless
    ``cascade``. So no round is left built from rows that no longer exist. Identical rows
    (same configuration) change nothing and are never refused."""
    job = (round_job if train else data_round_job).name
    try:
        store.check_readable()
    except WarehouseError as exc:
        report(f"round {keys[0]}: not started: {exc}")
        return [RoundOutcome(keys[0], False, 0.0, "", error=str(exc))]
    outcomes = []
    for index, key in enumerate(keys):
        if not instance.has_dynamic_partition(ROUNDS_PARTITIONS_NAME, key):
            instance.add_dynamic_partitions(ROUNDS_PARTITIONS_NAME, [key])
        report(f"round {key}: materialising")
        started = time.perf_counter()
        result = execute(instance, job, config, partition_key=key, tags=rerun_tags(keys[index + 1:], cascade))
        outcome = RoundOutcome(key, result.success, time.perf_counter() - started, result.run_id)
        if not result.success:
            stage = failed_step(result)
            outcome.error = failure_message(result) + (
                f"; {intact_stages(store, key, ASSET_TABLE_OF.get(stage, stage))}" if stage else "")
            report(f"round {key}: FAILED after {outcome.seconds:.1f}s: {outcome.error}")
            outcomes.append(outcome)
            # what this run cleared in the rounds it will not reach now: say so in Dagster too
            mark_missing(instance, store, keys[index + 1:], f"round {key} failed during a rerun that cleared them")
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
             ("evaluations.greedy_pass_1", "greedy", "{:.3f}"),
             ("evaluations.reward_mean", "held-out reward", "{:.3f}")]
    written = [f"{key.split('.', 2)[2]}: writer drafts valid {figures[key]:.2f}, teacher solved "
               f"{figures.get(key.replace('writer_valid_share', 'teacher_solve_rate'), 0.0):.2f}"
               for key in sorted(figures) if key.startswith("seed_tasks.writer_valid_share.")]
    parts = []
    for key, label, fmt in shown:
        if key in figures:
            interval = (f" [95% CI {figures[key + '_low']:.3f}–{figures[key + '_high']:.3f}]"
                        if key + "_low" in figures else "")
            parts.append(f"{label} {fmt.format(figures[key])}{interval}")
    failures = [f"{kind.replace('_', ' ')} {figures[f'rubric_scores.failures.{kind}']:.0f}" for kind in FAILURE_TYPES
                if f"rubric_scores.failures.{kind}" in figures]
    if failures:
        parts.append("policy failures: " + ", ".join(failures))
    return ", ".join(parts + written)


def run_rounds(home: Path, rounds: int, *, first: int = 0, report: Report = print,
               overrides: Mapping[str, Mapping[str, Any]] | None = None, cascade: bool = False
               ) -> list[RoundOutcome]:
    """``flywheel run``: the held-out set, then rounds ``first`` … ``rounds - 1`` in order.
    ``overrides``: {resource key: {field: value}} for exactly the flags given; every other
    setting keeps its FLYWHEEL_* value. ``cascade``: see ``materialize_rounds``."""
    if rounds <= first:
        raise ValueError(f"--rounds {rounds} leaves nothing to run from round {first}")
    overrides = {key: dict(values) for key, values in (overrides or {}).items()}
    # every group validated now (a bad flag or variable is one clear error before any run)
    settings = {key: group.from_env(**overrides.get(key, {})) for key, group in GROUPS.items()}
    with open_instance(home) as instance:
        fail_orphaned_runs(instance, report)
        config = run_config(overrides=overrides)
        path = settings["warehouse"].path
        store = Warehouse(Path(path).resolve() if path else warehouse_path(), on_lock_wait=report)
        report(f"home {home.resolve()}: instance {os.environ['DAGSTER_HOME']}, warehouse {store.path}")
        try:
            store.check_readable()
        except WarehouseError as exc:
            report(f"flywheel run: {exc}")
            return []
        keys = [round_key(i) for i in range(first, rounds)]
        if not materialize_eval_tasks(instance, config, report, rebuilding=keys, cascade=cascade):
            return []
        return materialize_rounds(instance, keys, config, store, report,
                                  train=settings["policy"].kind.trains, cascade=cascade)
