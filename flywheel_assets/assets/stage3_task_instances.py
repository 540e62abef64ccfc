"""Stage 3: this round's task instances, plus the previous round's hard samples.

Dagster cannot declare "round r depends on round r-1" between partitions of dynamic
partitions (it would be a cycle), so the previous round is read explicitly from the
warehouse, and a missing previous round fails the step at once with a message naming it.
"""

import time
from collections import Counter

from dagster import AssetExecutionContext, Failure, MaterializeResult, asset

from flywheel_assets.assets.common import ROUND_GROUP, ROUND_POOL, write_stage
from flywheel_assets.partitions import previous_round, rounds_partitions
from flywheel_assets.assets.world_llm import stage_world
from flywheel_assets.resources import RoundConfigResource, WarehouseResource, WorldResource
from flywheel_assets.store import Warehouse
from flywheel_assets.store.rows import instance_rows, instances_from_rows, seed_batch_from_rows, trees_from_rows
from flywheel_assets.world import pipeline
from flywheel_assets.world.tasks import TaskInstance


def previous_hard_samples(store: Warehouse, round_key: str) -> list[TaskInstance]:
    """The kept hard samples of the round before ``round_key`` ([] for the first round)."""
    previous = previous_round(round_key)
    if previous is None:
        return []
    if not store.is_written("hard_samples", previous):
        raise Failure(
            description=(f"round {round_key} starts from round {previous}'s hard samples, but partition "
                         f"{previous} of hard_samples has not been materialised in {store.path}. "
                         f"Materialise round {previous} first."),
        )
    return instances_from_rows(r for r in store.read_round("hard_samples", previous) if r["kept"])


@asset(partitions_def=rounds_partitions, group_name=ROUND_GROUP, deps=["seed_tasks", "behavior_trees"],
       pool=ROUND_POOL, kinds={"python", "duckdb"})
def task_instances(context: AssetExecutionContext, warehouse: WarehouseResource,
                   round_config: RoundConfigResource, world: WorldResource) -> MaterializeResult:
    """Task instances: seed rewrites, back-translated tree branches, adversarial-user
    variants, and round r-1's hard samples carried in (``carried_from``)."""
    started = time.perf_counter()
    round_key = context.partition_key
    store = warehouse.warehouse()
    carried = previous_hard_samples(store, round_key)
    config = round_config.round_config()
    if previous_round(round_key) is not None:
        context.log.info(f"{round_key}: {len(carried)} kept hard samples in {previous_round(round_key)}; carrying in "
                         f"{min(len(carried), config.max_carried or len(carried))} (max_carried {config.max_carried})")
    batch = seed_batch_from_rows(store.read_round("seed_tasks", round_key))
    trees = trees_from_rows(store.read_round("behavior_trees", round_key))
    # back-translation replays workflows: a domain file's simulated tools need the LLM tool
    with stage_world(warehouse, world, round_key, "task_instances", ("tool",)) as llm:
        instances = pipeline.task_instances(config, round_key, batch, trees, carried)
    phases = Counter("carried" if i.meta.get("carried_from") else i.phase for i in instances)
    figures = {"instances": len(instances), "carried_in": phases.get("carried", 0), "carried_available": len(carried),
               "adversarial": sum(i.adversarial is not None for i in instances),
               **{f"phase_{p}": n for p, n in sorted(phases.items())}}
    figures.update(llm.figures())
    return write_stage(context, warehouse, "task_instances", round_key, instance_rows(instances), figures, started,
                       extra={"llm_calls": llm.call_rows()})
