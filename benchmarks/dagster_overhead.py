"""One flywheel round through Dagster in-process vs the same stages as plain function calls.

Three ways to run round r000 with the same knobs:
  plain       the pipeline.py stage functions, data in memory
  +warehouse  the same, each stage writing its rows to DuckDB and the next reading them back
              (what the assets do, without Dagster)
  dagster     the `flywheel_round` job in-process (assets + their 19 checks), on an ephemeral
              instance and on a SQLite instance like `flywheel run` uses
Prints the median seconds of --repeats runs and each one's ratio to plain.

    python benchmarks/dagster_overhead.py [--tasks-per-domain 12] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from dagster import DagsterInstance

from flywheel_assets.resources import PolicyResource, RoundConfigResource
from flywheel_assets.runner import materialize_rounds, run_config
from flywheel_assets.store import Warehouse
from flywheel_assets.store import rows as R
from flywheel_assets.world import pipeline


def plain(knobs: dict, policy_name: str) -> None:
    config = RoundConfigResource(**knobs).round_config()
    policy = PolicyResource(name=policy_name)
    batch = pipeline.seed_tasks(config, "r000")
    trees = pipeline.behavior_trees(batch.tasks)
    instances = pipeline.task_instances(config, "r000", batch, trees)
    agent = policy.policy()
    trajectories = pipeline.rollouts(config, instances, agent, policy.teacher())
    scores = pipeline.rubric_scores(instances, trajectories)
    pipeline.hard_samples(config, "r000", instances, trajectories, scores, agent.name)


def plain_with_warehouse(knobs: dict, policy_name: str, store: Warehouse) -> None:
    config = RoundConfigResource(**knobs).round_config()
    policy = PolicyResource(name=policy_name)
    store.replace_round("seed_tasks", "r000", R.seed_task_rows(pipeline.seed_tasks(config, "r000")))
    batch = R.seed_batch_from_rows(store.read_round("seed_tasks", "r000"))
    store.replace_round("behavior_trees", "r000", R.tree_rows(pipeline.behavior_trees(batch.tasks)))
    trees = R.trees_from_rows(store.read_round("behavior_trees", "r000"))
    store.replace_round("task_instances", "r000",
                        R.instance_rows(pipeline.task_instances(config, "r000", batch, trees)))
    instances = R.instances_from_rows(store.read_round("task_instances", "r000"))
    agent = policy.policy()
    trajectories = pipeline.rollouts(config, instances, agent, policy.teacher())
    store.replace_round("rollouts", "r000", R.rollout_rows(trajectories, agent.name))
    trajectories = R.trajectories_from_rows(store.read_round("rollouts", "r000"))
    scores = pipeline.rubric_scores(instances, trajectories)
    store.replace_round("rubric_scores", "r000", R.score_rows(scores, trajectories, agent.name))
    scores = R.scores_from_rows(store.read_round("rubric_scores", "r000"))
    report = pipeline.hard_samples(config, "r000", instances, trajectories, scores, agent.name)
    store.replace_round("hard_samples", "r000", R.hard_sample_rows(report))


def through_dagster(knobs: dict, policy_name: str, store: Warehouse, instance: DagsterInstance) -> None:
    config = run_config(overrides={"warehouse": {"path": str(store.path)}, "policy": {"name": policy_name},
                         "round_config": knobs}, log_level="ERROR")
    [outcome] = materialize_rounds(instance, ["r000"], config, store, report=lambda _: None, train=False)
    if not outcome.success:
        raise RuntimeError(outcome.error)


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks-per-domain", type=int, default=12)
    parser.add_argument("--rollouts-per-instance", type=int, default=2)
    parser.add_argument("--policy", default="flaky-teacher")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    knobs = {"tasks_per_domain": args.tasks_per_domain, "rollouts_per_instance": args.rollouts_per_instance}
    through_dagster(knobs, args.policy, Warehouse(Path(tempfile.mkdtemp()) / "warmup.duckdb"),
                    DagsterInstance.ephemeral())  # imports and first-call costs out of the figures
    times: dict[str, list[float]] = {"plain": [], "+warehouse": [], "dagster (ephemeral instance)": [],
                                     "dagster (sqlite instance)": []}
    for _ in range(args.repeats):
        work = Path(tempfile.mkdtemp())
        times["plain"].append(timed(lambda: plain(knobs, args.policy)))
        times["+warehouse"].append(timed(lambda: plain_with_warehouse(knobs, args.policy,
                                                                      Warehouse(work / "plain.duckdb"))))
        times["dagster (ephemeral instance)"].append(timed(lambda: through_dagster(
            knobs, args.policy, Warehouse(work / "ephemeral.duckdb"), DagsterInstance.ephemeral())))
        (work / "dagster_home").mkdir()
        with DagsterInstance.local_temp(str(work / "dagster_home")) as sqlite_instance:
            times["dagster (sqlite instance)"].append(timed(lambda: through_dagster(
                knobs, args.policy, Warehouse(work / "sqlite.duckdb"), sqlite_instance)))
    base = statistics.median(times["plain"])
    print(f"one round, {args.tasks_per_domain} tasks per domain, {args.rollouts_per_instance} rollouts per "
          f"instance, policy {args.policy}; median of {args.repeats}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:30s} {median:7.2f} s   ratio to plain {median / base:5.2f}")


if __name__ == "__main__":
    main()
